#include "chat/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

namespace mlxcel::jinja {

Value Value::list(std::vector<Value> items, bool tuple) {
  auto l = std::make_shared<List>();
  l->items = std::move(items);
  l->tuple = tuple;
  return Value(std::move(l));
}

Value Value::generator(std::vector<Value> items) {
  auto l = std::make_shared<List>();
  l->items = std::move(items);
  l->generator = true;
  return Value(std::move(l));
}

bool Value::is_generator() const { return is_list() && as_list()->generator; }

Value Value::dict() { return Value(std::make_shared<Dict>()); }

namespace {
template <typename J>
Value json_to_value(const J& j, int depth) {
  if (depth > 512) fail("JSON input nested too deeply");
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value::none();
    case nlohmann::json::value_t::boolean: return Value(j.template get<bool>());
    case nlohmann::json::value_t::number_integer: return Value(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      uint64_t u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float: return Value(j.template get<double>());
    case nlohmann::json::value_t::string: return Value(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(json_to_value(e, depth + 1));
      return Value::list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Value d = Value::dict();
      for (auto it = j.begin(); it != j.end(); ++it) {
        d.as_dict()->set(Value(it.key()), json_to_value(it.value(), depth + 1));
      }
      return d;
    }
    default: return Value::none();
  }
}
}  // namespace

Value Value::from_json(const nlohmann::json& j) { return json_to_value(j, 0); }
Value Value::from_json(const nlohmann::ordered_json& j) { return json_to_value(j, 0); }

bool Value::is_tuple() const { return is_list() && as_list()->tuple; }

bool Value::is_callable() const { return is_object() && as_object()->callable(); }

int64_t Value::as_int() const {
  if (is_bool()) return as_bool() ? 1 : 0;
  return std::get<int64_t>(v_);
}

double Value::as_double() const {
  if (is_float()) return std::get<double>(v_);
  return static_cast<double>(as_int());
}

bool Value::truthy() const {
  switch (kind()) {
    case Kind::undefined:
    case Kind::none: return false;
    case Kind::boolean: return as_bool();
    case Kind::integer: return as_int() != 0;
    case Kind::floating: return as_double() != 0.0;
    case Kind::string: return !as_string().empty();
    case Kind::list: return as_list()->generator || !as_list()->items.empty();
    case Kind::dict: return as_dict()->size() != 0;
    case Kind::object: return true;
  }
  return false;
}

std::string Value::type_name() const {
  switch (kind()) {
    case Kind::undefined: return "Undefined";
    case Kind::none: return "NoneType";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::floating: return "float";
    case Kind::string: return "str";
    case Kind::list: return as_list()->generator ? "generator" : as_list()->tuple ? "tuple" : "list";
    case Kind::dict: return "dict";
    case Kind::object: return as_object()->type_name();
  }
  return "object";
}

std::string py_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  // sci: [-]D[.DDD]e[+-]XX
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  int exp = std::stoi(sci.substr(e + 1));
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out;
  if (exp >= -5 + 1 && exp < 16) {  // Python repr: fixed when -4 <= exp < 16
    int n = static_cast<int>(digits.size());
    if (exp >= 0) {
      if (n <= exp + 1) {
        out = digits + std::string(exp + 1 - n, '0') + ".0";
      } else {
        out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
      }
    } else {
      out = "0." + std::string(-exp - 1, '0') + digits;
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += 'e';
    out += exp < 0 ? '-' : '+';
    int a = std::abs(exp);
    if (a < 10) out += '0';
    out += std::to_string(a);
  }
  return neg ? "-" + out : out;
}

std::string py_str_repr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == static_cast<unsigned char>(q) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += q;
  return out;
}

std::string Value::repr() const {
  switch (kind()) {
    case Kind::string: return py_str_repr(as_string());
    case Kind::list: {
      const auto& l = *as_list();
      if (l.generator) return "<generator object>";
      std::string out = l.tuple ? "(" : "[";
      for (size_t i = 0; i < l.items.size(); ++i) {
        if (i) out += ", ";
        out += l.items[i].repr();
      }
      if (l.tuple && l.items.size() == 1) out += ",";
      out += l.tuple ? ")" : "]";
      return out;
    }
    case Kind::dict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : as_dict()->items) {
        if (!first) out += ", ";
        first = false;
        out += k.repr() + ": " + v.repr();
      }
      return out + "}";
    }
    case Kind::undefined: return "Undefined";
    default: return str();
  }
}

std::string Value::str() const {
  switch (kind()) {
    case Kind::undefined: return "";
    case Kind::none: return "None";
    case Kind::boolean: return as_bool() ? "True" : "False";
    case Kind::integer: return std::to_string(as_int());
    case Kind::floating: return py_float_repr(as_double());
    case Kind::string: return as_string();
    case Kind::object: return as_object()->repr();
    default: return repr();
  }
}

Value Object::call(Interpreter&, CallArgs&) { fail(fmt::format("'{}' object is not callable", type_name())); }

std::string Object::repr() const { return fmt::format("<{} object>", type_name()); }

void fail(const std::string& msg) { throw RenderError(msg); }

void require_defined(const Value& v) {
  if (v.is_undefined()) fail(v.undefined_hint());
}

std::string hash_key(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::none: return "n";
    case Value::Kind::undefined: return "u";
    case Value::Kind::boolean:
    case Value::Kind::integer: return "i" + std::to_string(v.as_int());
    case Value::Kind::floating: {
      double d = v.as_double();
      if (std::floor(d) == d && std::fabs(d) < 9.2e18) return "i" + std::to_string(static_cast<int64_t>(d));
      return "f" + py_float_repr(d);
    }
    case Value::Kind::string: return "s" + v.as_string();
    case Value::Kind::list:
      if (v.is_tuple()) {
        std::string k = "t(";
        for (const auto& e : v.as_list()->items) k += hash_key(e) + "\x1f";
        return k + ")";
      }
      break;
    default: break;
  }
  fail(fmt::format("unhashable type: '{}'", v.type_name()));
}

const Value* Dict::find(const Value& key) const {
  auto it = index.find(hash_key(key));
  return it == index.end() ? nullptr : &items[it->second].second;
}

const Value* Dict::find(const std::string& key) const {
  auto it = index.find("s" + key);
  return it == index.end() ? nullptr : &items[it->second].second;
}

void Dict::set(const Value& key, Value value) {
  std::string h = hash_key(key);
  auto it = index.find(h);
  if (it != index.end()) {
    items[it->second].second = std::move(value);
    return;
  }
  index.emplace(std::move(h), items.size());
  items.emplace_back(key, std::move(value));
}

bool Dict::erase(const Value& key) {
  auto it = index.find(hash_key(key));
  if (it == index.end()) return false;
  items.erase(items.begin() + static_cast<std::ptrdiff_t>(it->second));
  index.clear();
  for (size_t i = 0; i < items.size(); ++i) index.emplace(hash_key(items[i].first), i);
  return true;
}

bool py_equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::undefined:
    case Value::Kind::none: return true;
    case Value::Kind::string: return a.as_string() == b.as_string();
    case Value::Kind::list: {
      const auto& x = *a.as_list();
      const auto& y = *b.as_list();
      if (x.generator || y.generator) return a.as_list() == b.as_list();
      if (x.tuple != y.tuple || x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i)
        if (!py_equal(x.items[i], y.items[i])) return false;
      return true;
    }
    case Value::Kind::dict: {
      const auto& x = *a.as_dict();
      const auto& y = *b.as_dict();
      if (x.size() != y.size()) return false;
      for (const auto& [k, v] : x.items) {
        const Value* o = y.find(k);
        if (!o || !py_equal(v, *o)) return false;
      }
      return true;
    }
    case Value::Kind::object: return a.as_object() == b.as_object();
    default: return false;
  }
}

int py_compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      double x = a.as_double(), y = b.as_double();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    int64_t x = a.as_int(), y = b.as_int();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    int c = a.as_string().compare(b.as_string());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
    const auto& x = a.as_list()->items;
    const auto& y = b.as_list()->items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!py_equal(x[i], y[i])) return py_compare(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  require_defined(a);
  require_defined(b);
  fail(fmt::format("'<' not supported between instances of '{}' and '{}'", a.type_name(), b.type_name()));
}

// ---- JSON ----

namespace {
void json_escape(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  if (!ensure_ascii) {
    for (unsigned char c : s) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20) out += fmt::format("\\u{:04x}", c);
          else out += static_cast<char>(c);
      }
    }
  } else {
    for (uint32_t c : utf8_decode(s)) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20 || c > 0x7e) {
            if (c >= 0x10000) {
              uint32_t v = c - 0x10000;
              out += fmt::format("\\u{:04x}\\u{:04x}", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
            } else {
              out += fmt::format("\\u{:04x}", c);
            }
          } else {
            out += static_cast<char>(c);
          }
      }
    }
  }
  out += '"';
}

std::string json_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return py_float_repr(d);
}

std::string json_key(const Value& k) {
  switch (k.kind()) {
    case Value::Kind::string: return k.as_string();
    case Value::Kind::boolean: return k.as_bool() ? "true" : "false";
    case Value::Kind::integer: return std::to_string(k.as_int());
    case Value::Kind::floating: return json_float(k.as_double());
    case Value::Kind::none: return "null";
    default: fail(fmt::format("keys must be str, int, float, bool or None, not {}", k.type_name()));
  }
}

void dump(std::string& out, const Value& v, const JsonDumpOptions& o, int level) {
  if (level > 512) fail("tojson: value nested too deeply");
  const std::string item_sep = o.separators ? o.separators->first : (o.indent ? "," : ", ");
  const std::string key_sep = o.separators ? o.separators->second : ": ";
  auto newline = [&](int lvl) {
    if (!o.indent) return;
    out += '\n';
    for (int i = 0; i < lvl; ++i) out += *o.indent;
  };
  switch (v.kind()) {
    case Value::Kind::none: out += "null"; return;
    case Value::Kind::boolean: out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::integer: out += std::to_string(v.as_int()); return;
    case Value::Kind::floating: out += json_float(v.as_double()); return;
    case Value::Kind::string: json_escape(out, v.as_string(), o.ensure_ascii); return;
    case Value::Kind::list: {
      if (v.is_generator()) fail("Object of type generator is not JSON serializable");
      const auto& items = v.as_list()->items;
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      newline(level + 1);
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) {
          out += item_sep;
          newline(level + 1);
        }
        dump(out, items[i], o, level + 1);
      }
      newline(level);
      out += ']';
      return;
    }
    case Value::Kind::dict: {
      const auto& d = *v.as_dict();
      if (d.size() == 0) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<Value, Value>*> items;
      for (const auto& kv : d.items) items.push_back(&kv);
      if (o.sort_keys) {
        std::stable_sort(items.begin(), items.end(),
                         [](auto* a, auto* b) { return py_compare(a->first, b->first) < 0; });
      }
      out += '{';
      newline(level + 1);
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) {
          out += item_sep;
          newline(level + 1);
        }
        json_escape(out, json_key(items[i]->first), o.ensure_ascii);
        out += key_sep;
        dump(out, items[i]->second, o, level + 1);
      }
      newline(level);
      out += '}';
      return;
    }
    default:
      fail(fmt::format("Object of type {} is not JSON serializable", v.type_name()));
  }
}
}  // namespace

std::string json_dumps(const Value& v, const JsonDumpOptions& opts) {
  std::string out;
  dump(out, v, opts, 0);
  return out;
}

nlohmann::ordered_json to_json(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::none: return nullptr;
    case Value::Kind::boolean: return v.as_bool();
    case Value::Kind::integer: return v.as_int();
    case Value::Kind::floating: return v.as_double();
    case Value::Kind::string: return v.as_string();
    case Value::Kind::list: {
      if (v.is_generator()) fail("Object of type generator is not JSON serializable");
      auto a = nlohmann::ordered_json::array();
      for (const auto& e : v.as_list()->items) a.push_back(to_json(e));
      return a;
    }
    case Value::Kind::dict: {
      auto o = nlohmann::ordered_json::object();
      for (const auto& [k, e] : v.as_dict()->items) o[json_key(k)] = to_json(e);
      return o;
    }
    default: fail(fmt::format("Object of type {} is not JSON serializable", v.type_name()));
  }
}

// ---- UTF-8 ----

std::vector<uint32_t> utf8_decode(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    int n;
    if (c < 0x80) { cp = c; n = 1; }
    else if ((c >> 5) == 6) { cp = c & 0x1f; n = 2; }
    else if ((c >> 4) == 14) { cp = c & 0x0f; n = 3; }
    else if ((c >> 3) == 30) { cp = c & 0x07; n = 4; }
    else { out.push_back(0xfffd); ++i; continue; }
    if (i + static_cast<size_t>(n) > s.size()) { out.push_back(0xfffd); ++i; continue; }
    bool ok = true;
    for (int k = 1; k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((cc >> 6) != 2) { ok = false; break; }
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (!ok) { out.push_back(0xfffd); ++i; continue; }
    out.push_back(cp);
    i += static_cast<size_t>(n);
  }
  return out;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

std::string utf8_encode(const std::vector<uint32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) utf8_append(out, cp);
  return out;
}

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c >> 6) != 2) ++n;
  return n;
}

}  // namespace mlxcel::jinja
