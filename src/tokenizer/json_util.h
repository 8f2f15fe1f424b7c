// Small helpers for reading tokenizer.json fields with clear errors.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace mlxcel {
class Regex;
// Reads j["pattern"] = {"String": s} | {"Regex": r}: returns the compiled regex, or nullptr
// with the literal in `literal`. Defined in normalizers.cpp.
std::unique_ptr<Regex> read_pattern(const nlohmann::json& j, std::string& literal, const char* what);
}  // namespace mlxcel

namespace mlxcel::tokjson {

inline const nlohmann::json* get(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

inline std::string str(const nlohmann::json& j, const char* key, const std::string& fallback) {
  const nlohmann::json* v = get(j, key);
  if (!v) return fallback;
  if (!v->is_string()) invalid("[tokenizer] field '{}' must be a string, got {}", key, v->dump());
  return v->get<std::string>();
}

inline std::string str_req(const nlohmann::json& j, const char* key, const char* what) {
  const nlohmann::json* v = get(j, key);
  if (!v || !v->is_string()) invalid("[tokenizer] {}: missing string field '{}'", what, key);
  return v->get<std::string>();
}

inline bool boolean(const nlohmann::json& j, const char* key, bool fallback) {
  const nlohmann::json* v = get(j, key);
  if (!v) return fallback;
  if (!v->is_boolean()) invalid("[tokenizer] field '{}' must be a bool, got {}", key, v->dump());
  return v->get<bool>();
}

inline int64_t integer(const nlohmann::json& j, const char* key, int64_t fallback) {
  const nlohmann::json* v = get(j, key);
  if (!v) return fallback;
  if (!v->is_number_integer()) invalid("[tokenizer] field '{}' must be an integer, got {}", key, v->dump());
  return v->get<int64_t>();
}

inline std::string type_of(const nlohmann::json& j, const char* what) {
  if (!j.is_object()) invalid("[tokenizer] {} must be an object, got {}", what, j.dump().substr(0, 200));
  return str_req(j, "type", what);
}

}  // namespace mlxcel::tokjson
