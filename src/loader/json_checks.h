// Helpers for validating untrusted JSON (config.json, safetensors headers).
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

namespace mlxcel {

// Max nesting of [] / {} outside strings; stops at the first level past `limit`
// (so hostile input costs at most one pass and no recursion).
int json_nesting_depth(std::string_view text, int limit);

// "an object", "a string", ...: the kind of value, for error messages.
const char* json_type_name(const nlohmann::json& v);

}  // namespace mlxcel
