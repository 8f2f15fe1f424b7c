#include "loader/json_checks.h"

namespace mlxcel {

int json_nesting_depth(std::string_view text, int limit) {
  int depth = 0, max_depth = 0;
  bool in_str = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_str) {
      if (c == '\\') ++i;
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == '"') {
      in_str = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) max_depth = depth;
      if (max_depth > limit) return max_depth;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

const char* json_type_name(const nlohmann::json& v) {
  using T = nlohmann::json::value_t;
  switch (v.type()) {
    case T::null: return "null";
    case T::object: return "an object";
    case T::array: return "an array";
    case T::string: return "a string";
    case T::boolean: return "a boolean";
    case T::number_integer:
    case T::number_unsigned: return "an integer";
    case T::number_float: return "a number";
    default: return "an unsupported value";
  }
}

}  // namespace mlxcel
