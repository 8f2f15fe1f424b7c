// Values of the Jinja2 engine: a tagged variant with Python semantics (ordered dicts,
// shared mutable lists, Python-exact printing via repr/str, json.dumps-exact tojson).
//
//   Value v = Value::from_json(nlohmann::ordered_json::parse(R"({"a": [1, 2.0]})"));
//   v.str();   // "{'a': [1, 2.0]}"
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace mlxcel::jinja {

class Value;
class Object;
class Interpreter;
struct List;
struct Dict;
using ListPtr = std::shared_ptr<List>;
using DictPtr = std::shared_ptr<Dict>;
using ObjectPtr = std::shared_ptr<Object>;

// Jinja2's Undefined: `hint` is the message raised when it is used in a way that fails.
struct Undefined {
  std::string hint;
};
struct None {};

// Positional and keyword arguments of a call.
struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
};

class Value {
 public:
  enum class Kind { undefined, none, boolean, integer, floating, string, list, dict, object };

  Value() : v_(Undefined{}) {}
  Value(Undefined u) : v_(std::move(u)) {}
  Value(None) : v_(None{}) {}
  Value(bool b) : v_(b) {}
  Value(int i) : v_(static_cast<int64_t>(i)) {}
  Value(int64_t i) : v_(i) {}
  Value(double d) : v_(d) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(ListPtr l) : v_(std::move(l)) {}
  Value(DictPtr d) : v_(std::move(d)) {}
  Value(ObjectPtr o) : v_(std::move(o)) {}

  static Value undefined(std::string hint) { return Value(Undefined{std::move(hint)}); }
  static Value none() { return Value(None{}); }
  static Value list(std::vector<Value> items = {}, bool tuple = false);
  static Value dict();
  // A lazy Python iterable (generator, reverse iterator): iterates like a list but has
  // no len(), is always truthy and is not JSON serializable.
  static Value generator(std::vector<Value> items);
  // markupsafe.Markup: `Markup + str` HTML-escapes the str operand.
  static Value markup(std::string s) {
    Value v(std::move(s));
    v.markup_ = true;
    return v;
  }
  bool is_markup() const { return markup_ && is_string(); }
  bool is_generator() const;
  // JSON -> Value; objects keep the key order of the json type (use ordered_json for
  // transformers-exact key order).
  static Value from_json(const nlohmann::json& j);
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is_undefined() const { return kind() == Kind::undefined; }
  bool is_none() const { return kind() == Kind::none; }
  bool is_bool() const { return kind() == Kind::boolean; }
  bool is_int() const { return kind() == Kind::integer; }
  bool is_float() const { return kind() == Kind::floating; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return kind() == Kind::string; }
  bool is_list() const { return kind() == Kind::list; }
  bool is_tuple() const;
  bool is_dict() const { return kind() == Kind::dict; }
  bool is_object() const { return kind() == Kind::object; }
  bool is_callable() const;

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const;  // bool or int
  double as_double() const;  // bool, int or float
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const ListPtr& as_list() const { return std::get<ListPtr>(v_); }
  const DictPtr& as_dict() const { return std::get<DictPtr>(v_); }
  const ObjectPtr& as_object() const { return std::get<ObjectPtr>(v_); }
  const std::string& undefined_hint() const { return std::get<Undefined>(v_).hint; }

  // Python truthiness.
  bool truthy() const;
  // Python str() and repr().
  std::string str() const;
  std::string repr() const;
  // Python type name as used in error messages ("dict", "str", "NoneType", ...).
  std::string type_name() const;

 private:
  std::variant<Undefined, None, bool, int64_t, double, std::string, ListPtr, DictPtr, ObjectPtr>
      v_;
  bool markup_ = false;
};

struct List {
  std::vector<Value> items;
  bool tuple = false;
  bool generator = false;
};

// Insertion-ordered dict with Python key equality (1 == 1.0 == True).
struct Dict {
  std::vector<std::pair<Value, Value>> items;
  std::unordered_map<std::string, size_t> index;

  const Value* find(const Value& key) const;
  const Value* find(const std::string& key) const;
  void set(const Value& key, Value value);
  bool erase(const Value& key);
  size_t size() const { return items.size(); }
};

// Anything that is not plain data: macros, builtin callables, namespaces, loop objects.
class Object {
 public:
  virtual ~Object() = default;
  virtual std::string type_name() const = 0;
  // Attribute lookup; returns nullopt when missing.
  virtual std::optional<Value> get_attr(const std::string& name) const { return std::nullopt; }
  // Attribute store (namespaces only); returns false when not allowed.
  virtual bool set_attr(const std::string& name, Value value) { return false; }
  virtual bool callable() const { return false; }
  virtual Value call(Interpreter& interp, CallArgs& args);
  virtual std::string repr() const;
  // Drops references to other values (breaks shared_ptr cycles after a render).
  virtual void release() {}
};

// Thrown for runtime errors; the interpreter adds the template position.
class RenderError : public std::runtime_error {
 public:
  explicit RenderError(const std::string& msg) : std::runtime_error(msg) {}
};

[[noreturn]] void fail(const std::string& msg);
// Raises the Undefined's error when `v` is undefined.
void require_defined(const Value& v);

// Python semantics helpers.
bool py_equal(const Value& a, const Value& b);
int py_compare(const Value& a, const Value& b);  // <0, 0, >0; throws on unorderable
std::string py_float_repr(double d);
std::string py_str_repr(const std::string& s);
// Key used to hash dict keys; throws for unhashable values.
std::string hash_key(const Value& v);

// json.dumps(v, ensure_ascii=False, indent=indent, separators=..., sort_keys=...).
struct JsonDumpOptions {
  std::optional<std::string> indent;  // nullopt: single line
  std::optional<std::pair<std::string, std::string>> separators;
  bool sort_keys = false;
  bool ensure_ascii = false;
};
std::string json_dumps(const Value& v, const JsonDumpOptions& opts);
nlohmann::ordered_json to_json(const Value& v);

// UTF-8 helpers: Python strings index by code point.
std::vector<uint32_t> utf8_decode(const std::string& s);
std::string utf8_encode(const std::vector<uint32_t>& cps);
void utf8_append(std::string& out, uint32_t cp);
size_t utf8_length(const std::string& s);

}  // namespace mlxcel::jinja
