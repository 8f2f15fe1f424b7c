// Filters, tests and Python methods of the Jinja2 engine.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "chat/interp.h"

namespace mlxcel::jinja {

ArgParser::ArgParser(const char* fn, CallArgs& args, std::initializer_list<const char*> names)
    : slots_(names.size()), present_(names.size(), false) {
  if (args.args.size() > names.size()) {
    fail(fmt::format("{}() takes at most {} argument(s) ({} given)", fn, names.size(), args.args.size()));
  }
  for (size_t i = 0; i < args.args.size(); ++i) {
    slots_[i] = args.args[i];
    present_[i] = true;
  }
  for (auto& [k, v] : args.kwargs) {
    size_t i = 0;
    for (const char* n : names) {
      if (k == n) break;
      ++i;
    }
    if (i == names.size()) fail(fmt::format("{}() got an unexpected keyword argument '{}'", fn, k));
    if (present_[i]) fail(fmt::format("{}() got multiple values for argument '{}'", fn, k));
    slots_[i] = v;
    present_[i] = true;
  }
}

namespace {

using FilterFn = std::function<Value(Interpreter&, const Value&, CallArgs&)>;
using TestFn = std::function<bool(Interpreter&, const Value&, CallArgs&)>;

int64_t to_int_arg(const Value& v, const char* what) {
  if (!v.is_int() && !v.is_bool()) fail(fmt::format("{} must be an integer", what));
  return v.as_int();
}

}  // namespace

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&#34;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

namespace {

// Python's str.splitlines() on code points.
std::vector<std::string> splitlines(const std::string& s, bool keepends) {
  std::vector<uint32_t> cps = utf8_decode(s);
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < cps.size(); ++i) {
    uint32_t c = cps[i];
    bool brk = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e ||
               c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) {
      utf8_append(cur, c);
      continue;
    }
    if (keepends) utf8_append(cur, c);
    if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') {
      if (keepends) cur += '\n';
      ++i;
    }
    out.push_back(std::move(cur));
    cur.clear();
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

std::string capitalize(const std::string& s) {
  if (s.empty()) return s;
  return py_upper(s.substr(0, 1)) + py_lower(s.substr(1));
}

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || static_cast<unsigned char>(c) >= 0x80; }

// Python's str.title().
std::string py_title(const std::string& s) {
  std::string o;
  bool prev_cased = false;
  for (char c : s) {
    if (is_alpha(c)) {
      o += prev_cased ? py_lower(std::string(1, c)) : py_upper(std::string(1, c));
      prev_cased = true;
    } else {
      o += c;
      prev_cased = false;
    }
  }
  return o;
}

// Jinja's title filter: capitalize each chunk split on [-\s({\[<]+.
std::string jinja_title(const std::string& s) {
  auto is_sep = [](char c) {
    return c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == '(' ||
           c == '{' || c == '[' || c == '<';
  };
  std::string o;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    bool sep = is_sep(s[i]);
    while (j < s.size() && is_sep(s[j]) == sep) ++j;
    std::string chunk = s.substr(i, j - i);
    if (sep) {
      o += chunk;
    } else {
      // item[0].upper() + item[1:].lower() on code points.
      auto cps = utf8_decode(chunk);
      std::string first;
      utf8_append(first, cps[0]);
      std::vector<uint32_t> rest(cps.begin() + 1, cps.end());
      o += py_upper(first) + py_lower(utf8_encode(rest));
    }
    i = j;
  }
  return o;
}

Value ignore_case(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value(py_lower(v.as_string()));
  return v;
}

// jinja2 make_attrgetter: dotted path through getitem.
Value get_attribute_path(Interpreter& in, const Value& item, const Value& attribute) {
  if (!attribute.is_string()) return in.get_item(item, attribute);
  Value cur = item;
  const std::string& path = attribute.as_string();
  size_t pos = 0;
  while (true) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    cur = in.get_item(cur, digits ? Value(static_cast<int64_t>(std::stoll(part))) : Value(part));
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return cur;
}

std::vector<Value> sorted(Interpreter& in, std::vector<Value> items, bool reverse, bool case_sensitive,
                          const Value* attribute) {
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& v : items) {
    Value k = attribute && !attribute->is_none() ? get_attribute_path(in, v, *attribute) : v;
    keyed.emplace_back(ignore_case(k, case_sensitive), v);
  }
  in.step(keyed.size());
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    return reverse ? py_compare(b.first, a.first) < 0 : py_compare(a.first, b.first) < 0;
  });
  std::vector<Value> out;
  for (auto& kv : keyed) out.push_back(kv.second);
  return out;
}

Value py_round(const Value& v, int64_t precision, const std::string& method) {
  if (!v.is_number()) fail("round() requires a number");
  double d = v.as_double();
  if (method == "common") {
    if (!v.is_float()) return precision >= 0 ? Value(v.as_int()) : Value(v.as_int());
    if (std::isnan(d) || std::isinf(d)) return Value(d);
    if (precision == 0) return Value(std::nearbyint(d));
    if (precision > 0 && precision < 300) return Value(std::strtod(fmt::format("{:.{}f}", d, precision).c_str(), nullptr));
    double p = std::pow(10.0, static_cast<double>(-precision));
    return Value(std::nearbyint(d / p) * p);
  }
  double p = std::pow(10.0, static_cast<double>(precision));
  if (method == "ceil") return Value(std::ceil(d * p) / p);
  if (method == "floor") return Value(std::floor(d * p) / p);
  fail("method must be common, ceil or floor");
}

// int(value) as jinja's do_int: int(), then int(float()), else default.
Value to_int(const Value& v, const Value& def, int64_t base) {
  if (v.is_int() || v.is_bool()) return Value(v.as_int());
  if (v.is_float()) {
    double d = v.as_double();
    if (std::isnan(d) || std::isinf(d) || std::fabs(d) > 9.2e18) return def;
    return Value(static_cast<int64_t>(std::trunc(d)));
  }
  if (v.is_string()) {
    std::string s = py_strip(v.as_string(), nullptr, true, true);
    std::string t;
    for (char c : s)
      if (c != '_') t += c;
    if (t.empty()) return def;
    char* end = nullptr;
    errno = 0;
    long long n = std::strtoll(t.c_str(), &end, static_cast<int>(base));
    if (end && *end == '\0' && errno == 0) return Value(static_cast<int64_t>(n));
    if (base == 10) {
      double d = std::strtod(t.c_str(), &end);
      if (end && *end == '\0' && !std::isnan(d) && !std::isinf(d) && std::fabs(d) < 9.2e18) {
        return Value(static_cast<int64_t>(std::trunc(d)));
      }
    }
  }
  return def;
}

Value to_float(const Value& v, const Value& def) {
  if (v.is_number()) return Value(v.as_double());
  if (v.is_string()) {
    std::string s = py_strip(v.as_string(), nullptr, true, true);
    std::string l = py_lower(s);
    if (l == "nan" || l == "+nan" || l == "-nan") return Value(std::nan(""));
    if (l == "inf" || l == "+inf" || l == "infinity" || l == "+infinity") return Value(HUGE_VAL);
    if (l == "-inf" || l == "-infinity") return Value(-HUGE_VAL);
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == '\0' && l.find('x') == std::string::npos) return Value(d);
  }
  return def;
}

Value length_of(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined: return Value(static_cast<int64_t>(0));
    case Value::Kind::string: return Value(static_cast<int64_t>(utf8_length(v.as_string())));
    case Value::Kind::list:
      if (v.is_generator()) fail("object of type 'generator' has no len()");
      return Value(static_cast<int64_t>(v.as_list()->items.size()));
    case Value::Kind::dict: return Value(static_cast<int64_t>(v.as_dict()->size()));
    default: fail(fmt::format("object of type '{}' has no len()", v.type_name()));
  }
}

Value tojson(Interpreter& in, const Value& v, CallArgs& a) {
  ArgParser p("tojson", a, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonDumpOptions o;
  o.ensure_ascii = p.get_or(0, Value(false)).truthy();
  Value indent = p.get_or(1, Value::none());
  if (indent.is_int() || indent.is_bool()) o.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, indent.as_int())), ' ');
  else if (indent.is_string()) o.indent = indent.as_string();
  else if (!indent.is_none()) fail("indent must be an int or a string");
  Value seps = p.get_or(2, Value::none());
  if (seps.is_list()) {
    const auto& s = seps.as_list()->items;
    if (s.size() != 2 || !s[0].is_string() || !s[1].is_string()) fail("separators must be a pair of strings");
    o.separators = std::make_pair(s[0].as_string(), s[1].as_string());
  } else if (!seps.is_none()) {
    fail("separators must be a pair of strings");
  }
  o.sort_keys = p.get_or(3, Value(false)).truthy();
  std::string out = json_dumps(v, o);
  in.check_size(out.size());
  return Value(std::move(out));
}

// select/reject and selectattr/rejectattr.
Value select_impl(Interpreter& in, const Value& seq, CallArgs& a, bool attr, bool want) {
  std::vector<Value> args = a.args;
  Value attribute;
  if (attr) {
    if (args.empty()) fail("Missing parameter for attribute name");
    attribute = args[0];
    args.erase(args.begin());
  }
  std::string test;
  if (!args.empty()) {
    if (!args[0].is_string()) fail("test name must be a string");
    test = args[0].as_string();
    args.erase(args.begin());
  }
  std::vector<Value> out;
  if (!seq.truthy()) return Value::generator({});
  for (auto& item : in.iterate(seq)) {
    in.step();
    Value subject = attr ? get_attribute_path(in, item, attribute) : item;
    bool r;
    if (test.empty()) {
      r = subject.truthy();
    } else {
      CallArgs ta;
      ta.args = args;
      ta.kwargs = a.kwargs;
      r = in.apply_test(test, subject, ta);
    }
    if (r == want) out.push_back(item);
  }
  return Value::generator(std::move(out));
}

Value minmax(Interpreter& in, const Value& v, CallArgs& a, bool want_max) {
  ArgParser p(want_max ? "max" : "min", a, {"case_sensitive", "attribute"});
  bool cs = p.get_or(0, Value(false)).truthy();
  Value attribute = p.get_or(1, Value::none());
  std::vector<Value> items = in.iterate(v);
  if (items.empty()) return Value::undefined(fmt::format("No aggregated item, sequence was empty."));
  Value best = items[0];
  Value best_key = ignore_case(attribute.is_none() ? best : get_attribute_path(in, best, attribute), cs);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = ignore_case(attribute.is_none() ? items[i] : get_attribute_path(in, items[i], attribute), cs);
    int c = py_compare(k, best_key);
    if (want_max ? c > 0 : c < 0) {
      best = items[i];
      best_key = k;
    }
  }
  return best;
}

const std::unordered_map<std::string, FilterFn>& filters() {
  static const std::unordered_map<std::string, FilterFn> table = [] {
    std::unordered_map<std::string, FilterFn> f;
    f["abs"] = [](Interpreter&, const Value& v, CallArgs&) -> Value {
      require_defined(v);
      if (v.is_float()) return Value(std::fabs(v.as_double()));
      if (v.is_int() || v.is_bool()) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
      fail(fmt::format("bad operand type for abs(): '{}'", v.type_name()));
    };
    f["attr"] = [](Interpreter& in, const Value& v, CallArgs& a) -> Value {
      ArgParser p("attr", a, {"name"});
      Value n = p.get_or(0, Value(""));
      return in.get_attr(v, n.str());
    };
    f["batch"] = [](Interpreter& in, const Value& v, CallArgs& a) -> Value {
      ArgParser p("batch", a, {"linecount", "fill_with"});
      int64_t n = to_int_arg(p.get_or(0, Value(1)), "linecount");
      if (n <= 0) fail("batch size must be positive");
      const Value* fill = p.get(1);
      std::vector<Value> out, cur;
      for (auto& x : in.iterate(v)) {
        cur.push_back(x);
        if (static_cast<int64_t>(cur.size()) == n) {
          out.push_back(Value::list(std::move(cur)));
          cur.clear();
        }
      }
      if (!cur.empty()) {
        if (fill && !fill->is_none())
          while (static_cast<int64_t>(cur.size()) < n) cur.push_back(*fill);
        out.push_back(Value::list(std::move(cur)));
      }
      return Value::generator(std::move(out));
    };
    f["capitalize"] = [](Interpreter&, const Value& v, CallArgs&) -> Value { return Value(capitalize(v.str())); };
    f["center"] = [](Interpreter& in, const Value& v, CallArgs& a) -> Value {
      ArgParser p("center", a, {"width"});
      int64_t w = to_int_arg(p.get_or(0, Value(80)), "width");
      std::string s = v.str();
      int64_t len = static_cast<int64_t>(utf8_length(s));
      if (w <= len) return Value(s);
      in.check_size(static_cast<size_t>(w));
      int64_t pad = w - len;
      int64_t left = pad / 2 + (pad & w & 1);
      return Value(std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(pad - left), ' '));
    };
    f["length"] = [](Interpreter&, const Value& v, CallArgs&) -> Value { return length_of(v); };
    f["count"] = f["length"];
    f["default"] = [](Interpreter&, const Value& v, CallArgs& a) -> Value {
      ArgParser p("default", a, {"default_value", "boolean"});
      bool boolean = p.get_or(1, Value(false)).truthy();
      if (v.is_undefined() || (boolean && !v.truthy())) return p.get_or(0, Value(""));
      return v;
    };
    f["d"] = f["default"];
    f["dictsort"] = [](Interpreter& in, const Value& v, CallArgs& a) -> Value {
      ArgParser p("dictsort", a, {"case_sensitive", "by", "reverse"});
      bool cs = p.get_or(0, Value(false)).truthy();
      std::string by = p.get_or(1, Value("key")).str();
      bool reverse = p.get_or(2, Value(false)).truthy();
      if (!v.is_dict()) {
        require_defined(v);
        fail(fmt::format("'{}' object has no attribute 'items'", v.type_name()));
      }
      if (by != "key" && by != "value") fail("You can only sort by either \"key\" or \"value\"");
      size_t pos = by == "key" ? 0 : 1;
      std::vector<std::pair<Value, Value>> items;
      for (auto& [k, x] : v.as_dict()->items) {
        Value pair = Value::list({k, x}, true);
        items.emplace_back(ignore_case(pos == 0 ? k : x, cs), pair);
      }
      std::stable_sort(items.begin(), items.end(), [&](const auto& l, const auto& r) {
        return reverse ? py_compare(r.first, l.first) < 0 : py_compare(l.first, r.first) < 0;
      });
      in.step(items.size());
      std::vector<Value> out;
      for (auto& kv : items) out.push_back(kv.second);
      return Value::list(std::move(out));
    };
    f["escape"] = [](Interpreter&, const Value& v, CallArgs&) -> Value {
      if (v.is_markup()) return v;
      return Value::markup(html_escape(v.str()));
    };
    f["e"] = f["escape"];
    f["forceescape"] = [](Interpreter&, const Value& v, CallArgs&) -> Value { return Value::markup(html_escape(v.str())); };
    f["first"] = [](Interpreter& in, const Value& v, CallArgs&) -> Value {
      auto items = in.iterate(v);
      if (items.empty()) return Value::undefined("No first item, sequence was empty.");
      return items[0];
    };
    f["last"] = [](Interpreter& in, const Value& v, CallArgs&) -> Value {
      if ((!v.is_list() && !v.is_string() && !v.is_undefined()) || v.is_generator()) fail(fmt::format("'{}' object is not reversible", v.type_name()));
      auto items = in.iterate(v);
      if (items.empty()) return Value::undefined("No last item, sequence was empty.");
      return items.back();
    };
    f["float"] = [](Interpreter&, const Value& v, CallArgs& a) -> Value {
      ArgParser p("float", a, {"default"});
      return to_float(v, p.get_or(0, Value(0.0)));
    };
    f["int"] = [](Interpreter&, const Value& v, CallArgs& a) -> Value {
      ArgParser p("int", a, {"default", "base"});
      return to_int(v, p.get_or(0, Value(0)), to_int_arg(p.get_or(1, Value(10)), "base"));
    };
    f["format"] = [](Interpreter& in, const Value& v, CallArgs& a) -> Value {
      if (!a.args.empty() && !a.kwargs.empty()) fail("can't handle positional and keyword arguments at the same time");
      if (!a.kwargs.empty()) {
        Value d = Value::dict();
        for (auto& [k, x] : a.kwargs) d.as_dict()->set(Value(k), x);
        return Value(py_percent_format(v.str(), d));
      }
      std::string s = py_percent_format(v.str(), Value::list(a.args, true));
      in.check_size(s.size());
      return Value(s);
    };
    f["indent"] = [](Interpreter& in, const Value& v, CallArgs& a) -> Value {
      ArgParser p("indent", a, {"width", "first", "blank"});
      Value w = p.get_or(0, Value(4));
      std::string ind = w.is_string() ? w.as_string() : std::string(static_cast<size_t>(std::max<int64_t>(0, to_int_arg(w, "width"))), ' ');
      bool first = p.get_or(1, Value(false)).truthy();
      bool blank = p.get_or(2, Value(false)).truthy();
      std::string s = v.str() + "\n";
      std::vector<std::string> lines = splitlines(s, false);
      std::string rv;
      if (blank) {
        for (size_t i = 0; i < lines.size(); ++i) {
          if (i) rv += "\n" + ind;
          rv += lines[i];
        }
      } else {
        rv = lines.empty() ? "" : lines[0];
        for (size_t i = 1; i < lines.size(); ++i) {
          rv += "\n";
          if (!lines[i].empty()) rv += ind + lines[i];
          in.check_size(rv.size());
        }
      }
      if (first) rv = ind + rv;
      in.check_size(rv.size());
      return Value(rv);
    };
    f["items"] = [](Interpreter&, const Value& v, CallArgs&) -> Value {
      if (v.is_undefined()) return Value::generator({});
      if (!v.is_dict()) fail("Can only get item pairs from a mapping.");
      std::vector<Value> out;
      for (auto& [k, x] : v.as_dict()->items) out.push_back(Value::list({k, x}, true));
      return Value::generator(std::move(out));
    };
    f["join"] = [](Interpreter& in, const Value& v, CallArgs& a) -> Value {
      ArgParser p("join", a, {"d", "attribute"});
      std::string d = p.get_or(0, Value("")).str();
      Value attribute = p.get_or(1, Value::none());
      std::string out;
      bool first = true;
      for (auto& x : in.iterate(v)) {
        if (!first) out += d;
        first = false;
        out += (attribute.is_none() ? x : get_attribute_path(in, x, attribute)).str();
        in.check_size(out.size());
      }
      return Value(out);
    };
    f["list"] = [](Interpreter& in, const Value& v, CallArgs&) -> Value { return Value::list(in.iterate(v)); };
    f["lower"] = [](Interpreter&, const Value& v, CallArgs&) -> Value {
      return v.is_markup() ? Value::markup(py_lower(v.str())) : Value(py_lower(v.str()));
    };
    f["upper"] = [](Interpreter&, const Value& v, CallArgs&) -> Value {
      return v.is_markup() ? Value::markup(py_upper(v.str())) : Value(py_upper(v.str()));
    };
    f["map"] = [](Interpreter& in, const Value& v, CallArgs& a) -> Value {
      std::vector<Value> out;
      Value attribute, def;
      bool by_attr = false, has_default = false;
      for (auto& [k, x] : a.kwargs) {
        if (k == "attribute") {
          attribute = x;
          by_attr = true;
        } else if (k == "default") {
          def = x;
          has_default = true;
        }
      }
      if (!v.truthy()) return Value::generator({});
      if (by_attr) {
        for (auto& item : in.iterate(v)) {
          in.step();
          Value r = get_attribute_path(in, item, attribute);
          if (has_default && r.is_undefined()) r = def;
          out.push_back(r);
        }
        return Value::generator(std::move(out));
      }
      if (a.args.empty()) fail("map requires a filter argument");
      std::string name = a.args[0].str();
      CallArgs rest;
      rest.args.assign(a.args.begin() + 1, a.args.end());
      rest.kwargs = a.kwargs;
      for (auto& item : in.iterate(v)) {
        CallArgs ca = rest;
        out.push_back(in.apply_filter(name, item, ca));
      }
      return Value::generator(std::move(out));
    };
    f["max"] = [](Interpreter& in, const Value& v, CallArgs& a) { return minmax(in, v, a, true); };
    f["min"] = [](Interpreter& in, const Value& v, CallArgs& a) { return minmax(in, v, a, false); };
    f["select"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, false, true); };
    f["reject"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, false, false); };
    f["selectattr"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, true, true); };
    f["rejectattr"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_impl(in, v, a, true, false); };
    f["replace"] = [](Interpreter& in, const Value& v, CallArgs& a) -> Value {
      ArgParser p("replace", a, {"old", "new", "count"});
      CallArgs ma;
      ma.args = {p.get_or(0, Value("")).str(), p.get_or(1, Value("")).str()};
      if (const Value* c = p.get(2); c && !c->is_none()) ma.args.push_back(*c);
      return in.call_method(Value(v.str()), "replace", ma);
    };
    f["reverse"] = [](Interpreter& in, const Value& v, CallArgs&) -> Value {
      if (v.is_string()) {
        auto cps = utf8_decode(v.as_string());
        std::reverse(cps.begin(), cps.end());
        return Value(utf8_encode(cps));
      }
      auto items = in.iterate(v);
      std::reverse(items.begin(), items.end());
      return Value::generator(std::move(items));
    };
    f["round"] = [](Interpreter&, const Value& v, CallArgs& a) -> Value {
      ArgParser p("round", a, {"precision", "method"});
      return py_round(v, to_int_arg(p.get_or(0, Value(0)), "precision"), p.get_or(1, Value("common")).str());
    };
    f["safe"] = [](Interpreter&, const Value& v, CallArgs&) -> Value { return Value::markup(v.str()); };
    f["sort"] = [](Interpreter& in, const Value& v, CallArgs& a) -> Value {
      ArgParser p("sort", a, {"reverse", "case_sensitive", "attribute"});
      Value attribute = p.get_or(2, Value::none());
      return Value::list(sorted(in, in.iterate(v), p.get_or(0, Value(false)).truthy(),
                                p.get_or(1, Value(false)).truthy(), &attribute));
    };
    f["string"] = [](Interpreter&, const Value& v, CallArgs&) -> Value { return v.is_string() ? v : Value(v.str()); };
    f["striptags"] = [](Interpreter&, const Value& v, CallArgs&) -> Value {
      std::string s = v.str(), o;
      size_t i = 0;
      while (i < s.size()) {
        if (s.compare(i, 4, "<!--") == 0) {
          size_t e = s.find("-->", i);
          if (e == std::string::npos) { o += s.substr(i); break; }
          i = e + 3;
        } else if (s[i] == '<') {
          size_t e = s.find('>', i);
          if (e == std::string::npos) { o += s.substr(i); break; }
          i = e + 1;
        } else {
          o += s[i++];
        }
      }
      std::vector<Value> words = py_split(o, nullptr, -1, false);
      std::string r;
      for (size_t k = 0; k < words.size(); ++k) r += (k ? " " : "") + words[k].as_string();
      return Value(r);
    };
    f["sum"] = [](Interpreter& in, const Value& v, CallArgs& a) -> Value {
      ArgParser p("sum", a, {"attribute", "start"});
      Value attribute = p.get_or(0, Value::none());
      Value acc = p.get_or(1, Value(0));
      for (auto& x : in.iterate(v)) {
        Value item = attribute.is_none() ? x : get_attribute_path(in, x, attribute);
        if (!acc.is_number() || !item.is_number()) fail("unsupported operand type(s) for +");
        if (acc.is_float() || item.is_float()) acc = Value(acc.as_double() + item.as_double());
        else acc = Value(acc.as_int() + item.as_int());
      }
      return acc;
    };
    f["title"] = [](Interpreter&, const Value& v, CallArgs&) -> Value { return Value(jinja_title(v.str())); };
    f["tojson"] = tojson;
    f["trim"] = [](Interpreter&, const Value& v, CallArgs& a) -> Value {
      ArgParser p("trim", a, {"chars"});
      std::string r = py_strip(v.str(), p.get(0), true, true);
      return v.is_markup() ? Value::markup(r) : Value(r);
    };
    f["truncate"] = [](Interpreter&, const Value& v, CallArgs& a) -> Value {
      ArgParser p("truncate", a, {"length", "killwords", "end", "leeway"});
      int64_t length = to_int_arg(p.get_or(0, Value(255)), "length");
      bool killwords = p.get_or(1, Value(false)).truthy();
      std::string end = p.get_or(2, Value("...")).str();
      int64_t leeway = p.get_or(3, Value(5)).is_none() ? 5 : to_int_arg(p.get_or(3, Value(5)), "leeway");
      auto cps = utf8_decode(v.str());
      int64_t n = static_cast<int64_t>(cps.size());
      int64_t end_len = static_cast<int64_t>(utf8_length(end));
      if (length < end_len) fail("expected length >= len(end)");
      if (n <= length + leeway) return Value(v.str());
      std::vector<uint32_t> head(cps.begin(), cps.begin() + static_cast<std::ptrdiff_t>(std::max<int64_t>(0, length - end_len)));
      std::string h = utf8_encode(head);
      if (killwords) return Value(h + end);
      size_t sp = h.rfind(' ');
      if (sp != std::string::npos) h = h.substr(0, sp);
      return Value(h + end);
    };
    f["unique"] = [](Interpreter& in, const Value& v, CallArgs& a) -> Value {
      ArgParser p("unique", a, {"case_sensitive", "attribute"});
      bool cs = p.get_or(0, Value(false)).truthy();
      Value attribute = p.get_or(1, Value::none());
      std::vector<Value> out;
      std::unordered_map<std::string, bool> seen;
      for (auto& x : in.iterate(v)) {
        Value k = ignore_case(attribute.is_none() ? x : get_attribute_path(in, x, attribute), cs);
        if (seen.emplace(hash_key(k), true).second) out.push_back(x);
      }
      return Value::generator(std::move(out));
    };
    f["wordcount"] = [](Interpreter&, const Value& v, CallArgs&) -> Value {
      std::string s = v.str();
      int64_t n = 0;
      bool in_word = false;
      for (char c : s) {
        bool w = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                 static_cast<unsigned char>(c) >= 0x80;
        if (w && !in_word) ++n;
        in_word = w;
      }
      return Value(n);
    };
    f["pprint"] = [](Interpreter&, const Value& v, CallArgs&) -> Value { return Value(v.repr()); };
    return f;
  }();
  return table;
}

bool is_integer(const Value& v) { return v.is_int(); }

const std::unordered_map<std::string, TestFn>& tests() {
  static const std::unordered_map<std::string, TestFn> table = [] {
    std::unordered_map<std::string, TestFn> t;
    auto arg0 = [](CallArgs& a, const char* name) -> Value {
      if (!a.args.empty()) return a.args[0];
      for (auto& [k, v] : a.kwargs)
        if (k == "other" || k == "value" || k == "num" || k == "seq") return v;
      fail(fmt::format("{}() missing 1 required positional argument", name));
    };
    t["defined"] = [](Interpreter&, const Value& v, CallArgs&) { return !v.is_undefined(); };
    t["undefined"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_undefined(); };
    t["none"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_none(); };
    t["boolean"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool(); };
    t["false"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && !v.as_bool(); };
    t["true"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && v.as_bool(); };
    t["integer"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_int(); };
    t["float"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_float(); };
    t["number"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_number(); };
    t["string"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_string(); };
    t["mapping"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_dict(); };
    t["iterable"] = [](Interpreter&, const Value& v, CallArgs&) {
      return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
    };
    t["sequence"] = [](Interpreter&, const Value& v, CallArgs&) {
      return v.is_undefined() || v.is_string() || (v.is_list() && !v.is_generator()) || v.is_dict();
    };
    t["callable"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_callable(); };
    t["escaped"] = [](Interpreter&, const Value&, CallArgs&) { return false; };
    t["lower"] = [](Interpreter&, const Value& v, CallArgs&) {
      std::string s = v.str();
      return py_lower(s) == s && py_upper(s) != s;
    };
    t["upper"] = [](Interpreter&, const Value& v, CallArgs&) {
      std::string s = v.str();
      return py_upper(s) == s && py_lower(s) != s;
    };
    t["odd"] = [](Interpreter&, const Value& v, CallArgs&) {
      if (!v.is_int() && !v.is_bool()) { require_defined(v); fail("odd test requires an integer"); }
      return (v.as_int() % 2) != 0;
    };
    t["even"] = [](Interpreter&, const Value& v, CallArgs&) {
      if (!v.is_int() && !v.is_bool()) { require_defined(v); fail("even test requires an integer"); }
      return (v.as_int() % 2) == 0;
    };
    t["divisibleby"] = [arg0](Interpreter&, const Value& v, CallArgs& a) {
      Value n = arg0(a, "divisibleby");
      if (!v.is_number() || !n.is_number()) fail("divisibleby requires numbers");
      if (n.as_double() == 0) fail("integer division or modulo by zero");
      if (v.is_float() || n.is_float()) return std::fmod(v.as_double(), n.as_double()) == 0;
      return v.as_int() % n.as_int() == 0;
    };
    t["eq"] = [arg0](Interpreter&, const Value& v, CallArgs& a) { return py_equal(v, arg0(a, "eq")); };
    t["equalto"] = t["eq"];
    t["=="] = t["eq"];
    t["ne"] = [arg0](Interpreter&, const Value& v, CallArgs& a) { return !py_equal(v, arg0(a, "ne")); };
    t["!="] = t["ne"];
    t["lt"] = [arg0](Interpreter&, const Value& v, CallArgs& a) { return py_compare(v, arg0(a, "lt")) < 0; };
    t["lessthan"] = t["lt"];
    t["<"] = t["lt"];
    t["le"] = [arg0](Interpreter&, const Value& v, CallArgs& a) { return py_compare(v, arg0(a, "le")) <= 0; };
    t["<="] = t["le"];
    t["gt"] = [arg0](Interpreter&, const Value& v, CallArgs& a) { return py_compare(v, arg0(a, "gt")) > 0; };
    t["greaterthan"] = t["gt"];
    t[">"] = t["gt"];
    t["ge"] = [arg0](Interpreter&, const Value& v, CallArgs& a) { return py_compare(v, arg0(a, "ge")) >= 0; };
    t[">="] = t["ge"];
    t["sameas"] = [arg0](Interpreter&, const Value& v, CallArgs& a) {
      Value o = arg0(a, "sameas");
      if (v.kind() != o.kind()) return false;
      if (v.is_none() || v.is_undefined()) return true;
      if (v.is_bool()) return v.as_bool() == o.as_bool();
      if (v.is_list()) return v.as_list() == o.as_list();
      if (v.is_dict()) return v.as_dict() == o.as_dict();
      if (v.is_object()) return v.as_object() == o.as_object();
      return py_equal(v, o);
    };
    t["in"] = [arg0](Interpreter& in, const Value& v, CallArgs& a) {
      Value seq = arg0(a, "in");
      if (seq.is_string()) {
        if (!v.is_string()) fail("'in <string>' requires string as left operand");
        return seq.as_string().find(v.as_string()) != std::string::npos;
      }
      if (seq.is_dict()) return seq.as_dict()->find(v) != nullptr;
      for (auto& x : in.iterate(seq))
        if (py_equal(x, v)) return true;
      return false;
    };
    t["filter"] = [](Interpreter&, const Value& v, CallArgs&) {
      return v.is_string() && filters().count(v.as_string()) > 0;
    };
    t["test"] = [](Interpreter& in, const Value& v, CallArgs&) { return v.is_string() && in.has_test(v.as_string()); };
    return t;
  }();
  return table;
}

}  // namespace

bool Interpreter::has_test(const std::string& name) const { return tests().count(name) > 0; }

Value Interpreter::apply_filter(const std::string& name, const Value& subject, CallArgs& args) {
  step();
  auto it = filters().find(name);
  if (it == filters().end()) fail(fmt::format("No filter named '{}'.", name));
  return it->second(*this, subject, args);
}

bool Interpreter::apply_test(const std::string& name, const Value& subject, CallArgs& args) {
  step();
  auto it = tests().find(name);
  if (it == tests().end()) fail(fmt::format("No test named '{}'.", name));
  return it->second(*this, subject, args);
}

Value Interpreter::call_method(const Value& obj, const std::string& name, CallArgs& a) {
  step();
  if (obj.is_dict()) {
    const Dict& d = *obj.as_dict();
    if (name == "items") {
      std::vector<Value> out;
      for (auto& [k, v] : d.items) out.push_back(Value::list({k, v}, true));
      return Value::list(std::move(out));
    }
    if (name == "keys" || name == "values") {
      std::vector<Value> out;
      for (auto& [k, v] : d.items) out.push_back(name == "keys" ? k : v);
      return Value::list(std::move(out));
    }
    if (name == "get") {
      if (a.args.empty() || a.args.size() > 2 || !a.kwargs.empty()) fail("get() takes 1 or 2 positional arguments");
      if (const Value* v = d.find(a.args[0])) return *v;
      return a.args.size() == 2 ? a.args[1] : Value::none();
    }
    if (name == "copy") {
      auto c = std::make_shared<Dict>(d);
      return Value(c);
    }
  }
 if (obj.is_list() && !obj.is_generator()) {
    const auto& items = obj.as_list()->items;
    if (name == "index" || name == "count") {
      if (a.args.empty()) fail(name + "() takes at least 1 argument");
      int64_t n = 0;
      for (size_t i = 0; i < items.size(); ++i) {
        if (py_equal(items[i], a.args[0])) {
          if (name == "index") return Value(static_cast<int64_t>(i));
          ++n;
        }
      }
      if (name == "index") fail("x not in list");
      return Value(n);
    }
    if (name == "copy") return Value::list(items, obj.is_tuple());
  }
  if (!obj.is_string()) fail(fmt::format("'{}' object has no attribute '{}'", obj.type_name(), name));
  const std::string& s = obj.as_string();
  auto arg = [&](size_t i) -> const Value* { return i < a.args.size() ? &a.args[i] : nullptr; };
  auto kw = [&](const char* k) -> const Value* {
    for (auto& [n, v] : a.kwargs)
      if (n == k) return &v;
    return nullptr;
  };
  if (name == "format") return Value(py_format(*this, s, a));
  if (name == "strip") return Value(py_strip(s, arg(0), true, true));
  if (name == "lstrip") return Value(py_strip(s, arg(0), true, false));
  if (name == "rstrip") return Value(py_strip(s, arg(0), false, true));
  if (name == "split" || name == "rsplit") {
    const Value* sep = arg(0) ? arg(0) : kw("sep");
    const Value* ms = arg(1) ? arg(1) : kw("maxsplit");
    int64_t maxsplit = ms ? to_int_arg(*ms, "maxsplit") : -1;
    return Value::list(py_split(s, sep, maxsplit, name == "rsplit"));
  }
  if (name == "upper") return Value(py_upper(s));
  if (name == "lower" || name == "casefold") return Value(py_lower(s));
  if (name == "title") return Value(py_title(s));
  if (name == "capitalize") return Value(capitalize(s));
  if (name == "swapcase") {
    std::string o = s;
    for (char& c : o) {
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
      else if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    }
    return Value(o);
  }
  if (name == "startswith" || name == "endswith") {
    if (!arg(0)) fail(name + "() takes at least 1 argument");
    std::vector<Value> cands = arg(0)->is_tuple() ? arg(0)->as_list()->items : std::vector<Value>{*arg(0)};
    for (auto& c : cands) {
      if (!c.is_string()) fail(name + " first arg must be str or a tuple of str");
      const std::string& p = c.as_string();
      if (p.size() > s.size()) continue;
      if (name == "startswith" ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0) return Value(true);
    }
    return Value(false);
  }
  if (name == "replace") {
    if (a.args.size() < 2 || !a.args[0].is_string() || !a.args[1].is_string()) fail("replace() takes 2 string arguments");
    const std::string& old = a.args[0].as_string();
    const std::string& rep = a.args[1].as_string();
    int64_t count = a.args.size() > 2 ? to_int_arg(a.args[2], "count") : -1;
    std::string out;
    if (old.empty()) {
      auto cps = utf8_decode(s);
      int64_t n = 0;
      for (size_t i = 0; i <= cps.size(); ++i) {
        if (count < 0 || n < count) {
          out += rep;
          ++n;
        }
        if (i < cps.size()) utf8_append(out, cps[i]);
        check_size(out.size());
      }
      return Value(out);
    }
    size_t pos = 0;
    int64_t n = 0;
    while (count < 0 || n < count) {
      size_t f = s.find(old, pos);
      if (f == std::string::npos) break;
      out.append(s, pos, f - pos);
      out += rep;
      check_size(out.size());
      pos = f + old.size();
      ++n;
    }
    out.append(s, pos, std::string::npos);
    return Value(out);
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    if (!arg(0) || !arg(0)->is_string()) fail(name + "() argument must be str");
    const std::string& sub = arg(0)->as_string();
    auto cps = utf8_decode(s);
    if (name == "count") {
      if (sub.empty()) return Value(static_cast<int64_t>(cps.size() + 1));
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value(n);
    }
    size_t p = (name == "find" || name == "index") ? s.find(sub) : s.rfind(sub);
    if (p == std::string::npos) {
      if (name == "index" || name == "rindex") fail("substring not found");
      return Value(static_cast<int64_t>(-1));
    }
    return Value(static_cast<int64_t>(utf8_length(s.substr(0, p))));
  }
  if (name == "join") {
    if (!arg(0)) fail("join() takes exactly one argument");
    std::string out;
    bool first = true;
    for (auto& x : iterate(*arg(0))) {
      if (!x.is_string()) fail(fmt::format("sequence item: expected str instance, {} found", x.type_name()));
      if (!first) out += s;
      first = false;
      out += x.as_string();
      check_size(out.size());
    }
    return Value(out);
  }
  if (name == "splitlines") {
    bool keep = arg(0) ? arg(0)->truthy() : (kw("keepends") ? kw("keepends")->truthy() : false);
    std::vector<Value> out;
    for (auto& l : splitlines(s, keep)) out.emplace_back(l);
    return Value::list(std::move(out));
  }
  auto all_of = [&](auto pred) {
    if (s.empty()) return Value(false);
    for (char c : s)
      if (!pred(static_cast<unsigned char>(c))) return Value(false);
    return Value(true);
  };
  if (name == "isdigit" || name == "isnumeric" || name == "isdecimal") return all_of([](unsigned char c) { return c >= '0' && c <= '9'; });
  if (name == "isalpha") return all_of([](unsigned char c) { return std::isalpha(c) != 0; });
  if (name == "isalnum") return all_of([](unsigned char c) { return std::isalnum(c) != 0; });
  if (name == "isspace") return all_of([](unsigned char c) { return c == ' ' || (c >= 9 && c <= 13); });
  if (name == "isascii") {
    for (char c : s)
      if (static_cast<unsigned char>(c) >= 0x80) return Value(false);
    return Value(true);
  }
  if (name == "islower" || name == "isupper") {
    bool cased = false;
    for (char c : s) {
      if (c >= 'a' && c <= 'z') {
        if (name == "isupper") return Value(false);
        cased = true;
      } else if (c >= 'A' && c <= 'Z') {
        if (name == "islower") return Value(false);
        cased = true;
      }
    }
    return Value(cased);
  }
  if (name == "center" || name == "ljust" || name == "rjust") {
    if (!arg(0)) fail(name + "() takes at least 1 argument");
    int64_t w = to_int_arg(*arg(0), "width");
    std::string fill = arg(1) ? arg(1)->str() : " ";
    int64_t len = static_cast<int64_t>(utf8_length(s));
    if (w <= len) return Value(s);
    check_size(static_cast<size_t>(w) * fill.size());
    int64_t pad = w - len;
    int64_t left = name == "ljust" ? 0 : name == "rjust" ? pad : pad / 2 + (pad & w & 1);
    std::string o;
    for (int64_t i = 0; i < left; ++i) o += fill;
    o += s;
    for (int64_t i = 0; i < pad - left; ++i) o += fill;
    return Value(o);
  }
  if (name == "zfill") {
    int64_t w = arg(0) ? to_int_arg(*arg(0), "width") : 0;
    int64_t len = static_cast<int64_t>(utf8_length(s));
    if (w <= len) return Value(s);
    check_size(static_cast<size_t>(w));
    size_t signpos = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    return Value(s.substr(0, signpos) + std::string(static_cast<size_t>(w - len), '0') + s.substr(signpos));
  }
  if (name == "removeprefix" || name == "removesuffix") {
    if (!arg(0) || !arg(0)->is_string()) fail(name + "() argument must be str");
    const std::string& p = arg(0)->as_string();
    if (name == "removeprefix" && s.compare(0, p.size(), p) == 0) return Value(s.substr(p.size()));
    if (name == "removesuffix" && !p.empty() && s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0) {
      return Value(s.substr(0, s.size() - p.size()));
    }
    return Value(s);
  }
  if (name == "partition" || name == "rpartition") {
    if (!arg(0) || !arg(0)->is_string() || arg(0)->as_string().empty()) fail("empty separator");
    const std::string& sep = arg(0)->as_string();
    size_t p = name == "partition" ? s.find(sep) : s.rfind(sep);
    if (p == std::string::npos) {
      return name == "partition" ? Value::list({Value(s), Value(""), Value("")}, true)
                                 : Value::list({Value(""), Value(""), Value(s)}, true);
    }
    return Value::list({Value(s.substr(0, p)), Value(sep), Value(s.substr(p + sep.size()))}, true);
  }
  fail(fmt::format("'str' object has no attribute '{}'", name));
}

}  // namespace mlxcel::jinja
