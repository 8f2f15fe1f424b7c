// Python str semantics used by filters and string methods.
#include <cmath>

#include "chat/interp.h"

namespace mlxcel::jinja {

namespace {
bool is_py_space(uint32_t c) {
  return (c >= 9 && c <= 13) || (c >= 28 && c <= 32) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
}  // namespace

std::string py_strip(const std::string& s, const Value* chars, bool left, bool right) {
  std::vector<uint32_t> cps = utf8_decode(s);
  std::vector<uint32_t> set;
  bool ws = !chars || chars->is_none() || chars->is_undefined();
  if (!ws) {
    if (!chars->is_string()) fail("strip arg must be None or str");
    set = utf8_decode(chars->as_string());
  }
  auto strip_it = [&](uint32_t c) {
    if (ws) return is_py_space(c);
    return std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_it(cps[b])) ++b;
  if (right)
    while (e > b && strip_it(cps[e - 1])) --e;
  return utf8_encode(std::vector<uint32_t>(cps.begin() + static_cast<std::ptrdiff_t>(b),
                                           cps.begin() + static_cast<std::ptrdiff_t>(e)));
}

std::vector<Value> py_split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right) {
  std::vector<Value> out;
  if (!sep || sep->is_none()) {
    // Whitespace split: runs of whitespace, no empty strings.
    std::vector<uint32_t> cps = utf8_decode(s);
    std::vector<std::pair<size_t, size_t>> words;
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && is_py_space(cps[i])) ++i;
      if (i >= cps.size()) break;
      size_t j = i;
      while (j < cps.size() && !is_py_space(cps[j])) ++j;
      words.emplace_back(i, j);
      i = j;
    }
    auto sub = [&](size_t a, size_t b) {
      return utf8_encode(std::vector<uint32_t>(cps.begin() + static_cast<std::ptrdiff_t>(a),
                                               cps.begin() + static_cast<std::ptrdiff_t>(b)));
    };
    if (maxsplit < 0 || static_cast<size_t>(maxsplit) + 1 >= words.size()) {
      for (auto [a, b] : words) out.emplace_back(sub(a, b));
      return out;
    }
    size_t m = static_cast<size_t>(maxsplit);
    if (!from_right) {
      for (size_t k = 0; k < m; ++k) out.emplace_back(sub(words[k].first, words[k].second));
      size_t end = cps.size();
      while (end > words[m].first && is_py_space(cps[end - 1])) --end;
      out.emplace_back(sub(words[m].first, end));
    } else {
      size_t n = words.size();
      size_t start = 0;
      while (start < words[n - m - 1].second && is_py_space(cps[start])) ++start;
      out.emplace_back(sub(start, words[n - m - 1].second));
      for (size_t k = n - m; k < n; ++k) out.emplace_back(sub(words[k].first, words[k].second));
    }
    return out;
  }
  if (!sep->is_string()) fail("must be str or None");
  const std::string& d = sep->as_string();
  if (d.empty()) fail("empty separator");
  std::vector<std::string> parts;
  if (!from_right) {
    size_t pos = 0;
    int64_t n = 0;
    while (maxsplit < 0 || n < maxsplit) {
      size_t f = s.find(d, pos);
      if (f == std::string::npos) break;
      parts.push_back(s.substr(pos, f - pos));
      pos = f + d.size();
      ++n;
    }
    parts.push_back(s.substr(pos));
  } else {
    size_t end = s.size();
    int64_t n = 0;
    std::vector<std::string> rev;
    while (maxsplit < 0 || n < maxsplit) {
      if (end < d.size()) break;
      size_t f = s.rfind(d, end - d.size());
      if (f == std::string::npos) break;
      rev.push_back(s.substr(f + d.size(), end - f - d.size()));
      end = f;
      ++n;
    }
    rev.push_back(s.substr(0, end));
    parts.assign(rev.rbegin(), rev.rend());
  }
  for (auto& p : parts) out.emplace_back(std::move(p));
  return out;
}

std::string py_lower(const std::string& s) {
  std::string o = s;
  for (char& c : o)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return o;
}

std::string py_upper(const std::string& s) {
  std::string o = s;
  for (char& c : o)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return o;
}

namespace {

// format(value, spec) for the common subset of Python's format-spec mini-language.
std::string format_spec(const Value& v, const std::string& spec) {
  if (spec.empty()) return v.str();
  size_t i = 0;
  char fill = ' ', align = 0, sign = '-';
  bool zero = false, comma = false;
  int width = -1, precision = -1;
  char type = 0;
  auto is_align = [](char c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  if (spec.size() >= 2 && is_align(spec[1])) {
    fill = spec[0];
    align = spec[1];
    i = 2;
  } else if (!spec.empty() && is_align(spec[0])) {
    align = spec[0];
    i = 1;
  }
  if (i < spec.size() && (spec[i] == '+' || spec[i] == '-' || spec[i] == ' ')) sign = spec[i++];
  if (i < spec.size() && spec[i] == '#') ++i;
  if (i < spec.size() && spec[i] == '0') {
    zero = true;
    ++i;
  }
  while (i < spec.size() && std::isdigit(static_cast<unsigned char>(spec[i]))) {
    width = (width < 0 ? 0 : width) * 10 + (spec[i++] - '0');
    if (width > 10000) fail("format width too large");
  }
  if (i < spec.size() && (spec[i] == ',' || spec[i] == '_')) {
    comma = true;
    ++i;
  }
  if (i < spec.size() && spec[i] == '.') {
    ++i;
    precision = 0;
    while (i < spec.size() && std::isdigit(static_cast<unsigned char>(spec[i]))) {
      precision = precision * 10 + (spec[i++] - '0');
      if (precision > 1000) fail("format precision too large");
    }
  }
  if (i < spec.size()) type = spec[i++];
  if (i != spec.size()) fail("Invalid format specifier");
  (void)comma;
  std::string body;
  bool numeric = v.is_number();
  if (v.is_string()) {
    if (type && type != 's') fail(fmt::format("Unknown format code '{}' for object of type 'str'", type));
    body = v.as_string();
    if (precision >= 0) {
      auto cps = utf8_decode(body);
      if (cps.size() > static_cast<size_t>(precision)) cps.resize(static_cast<size_t>(precision));
      body = utf8_encode(cps);
    }
  } else if (numeric) {
    double d = v.as_double();
    bool neg = false;
    if (type == 'f' || type == 'F' || type == 'e' || type == 'E' || type == 'g' || type == 'G' || type == '%' ||
        (v.is_float() && (type == 0 || precision >= 0))) {
      if (type == '%') d *= 100;
      neg = std::signbit(d) && !std::isnan(d);
      double a = std::fabs(d);
      int p = precision < 0 ? 6 : precision;
      if (type == 'f' || type == 'F' || type == '%') body = fmt::format("{:.{}f}", a, p);
      else if (type == 'e' || type == 'E') body = fmt::format("{:.{}e}", a, p);
      else if (type == 'g' || type == 'G') body = fmt::format("{:.{}g}", a, p);
      else if (precision >= 0) body = fmt::format("{:.{}g}", a, p);
      else body = py_float_repr(a);
      if (type == '%') body += '%';
    } else {
      int64_t n = v.as_int();
      neg = n < 0;
      uint64_t a = neg ? static_cast<uint64_t>(-(n + 1)) + 1 : static_cast<uint64_t>(n);
      if (type == 'x') body = fmt::format("{:x}", a);
      else if (type == 'X') body = fmt::format("{:X}", a);
      else if (type == 'o') body = fmt::format("{:o}", a);
      else if (type == 'b') body = fmt::format("{:b}", a);
      else if (type == 0 || type == 'd' || type == 'n') body = std::to_string(a);
      else fail(fmt::format("Unknown format code '{}' for object of type 'int'", type));
    }
    std::string sgn = neg ? "-" : (sign == '+' ? "+" : (sign == ' ' ? " " : ""));
    if (zero && !align) {
      while (static_cast<int>(sgn.size() + body.size()) < width) body = "0" + body;
    }
    body = sgn + body;
  } else {
    body = v.str();
  }
  int len = static_cast<int>(utf8_length(body));
  if (width > len) {
    int pad = width - len;
    char a = align ? align : (numeric ? '>' : '<');
    std::string f(1, fill);
    auto rep = [&](int k) {
      std::string o;
      for (int j = 0; j < k; ++j) o += f;
      return o;
    };
    if (a == '<') body += rep(pad);
    else if (a == '>' || a == '=') body = rep(pad) + body;
    else body = rep(pad / 2) + body + rep(pad - pad / 2);
  }
  return body;
}

}  // namespace

std::string py_format(Interpreter& in, const std::string& f, CallArgs& args) {
  std::string out;
  size_t auto_idx = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    char c = f[i];
    if (c == '}') {
      if (i + 1 < f.size() && f[i + 1] == '}') ++i;
      else fail("Single '}' encountered in format string");
      out += '}';
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < f.size() && f[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    size_t close = f.find('}', i);
    if (close == std::string::npos) fail("Single '{' encountered in format string");
    std::string field = f.substr(i + 1, close - i - 1);
    i = close;
    std::string spec, conv;
    size_t colon = field.find(':');
    if (colon != std::string::npos) {
      spec = field.substr(colon + 1);
      field = field.substr(0, colon);
    }
    size_t bang = field.find('!');
    if (bang != std::string::npos) {
      conv = field.substr(bang + 1);
      field = field.substr(0, bang);
    }
    // Split off .attr / [idx] accessors.
    size_t acc = field.find_first_of(".[");
    std::string head = field.substr(0, acc);
    Value v;
    if (head.empty()) {
      if (auto_idx >= args.args.size()) fail("Replacement index out of range for positional args tuple");
      v = args.args[auto_idx++];
    } else if (std::isdigit(static_cast<unsigned char>(head[0]))) {
      size_t k = std::stoul(head);
      if (k >= args.args.size()) fail("Replacement index out of range for positional args tuple");
      v = args.args[k];
    } else {
      bool found = false;
      for (auto& [k, x] : args.kwargs)
        if (k == head) {
          v = x;
          found = true;
        }
      if (!found) fail("KeyError: '" + head + "'");
    }
    while (acc != std::string::npos && acc < field.size()) {
      if (field[acc] == '.') {
        size_t e = field.find_first_of(".[", acc + 1);
        v = in.get_attr(v, field.substr(acc + 1, e == std::string::npos ? std::string::npos : e - acc - 1));
        acc = e;
      } else {
        size_t e = field.find(']', acc);
        if (e == std::string::npos) fail("Missing ']' in format string");
        std::string key = field.substr(acc + 1, e - acc - 1);
        bool digits = !key.empty() && std::all_of(key.begin(), key.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); });
        v = in.get_item(v, digits ? Value(static_cast<int64_t>(std::stoll(key))) : Value(key));
        acc = e + 1;
      }
    }
    if (conv == "r") v = Value(v.repr());
    else if (conv == "s") v = Value(v.str());
    out += format_spec(v, spec);
    in.check_size(out.size());
  }
  return out;
}

std::string py_percent_format(const std::string& f, const Value& arg) {
  std::vector<Value> items;
  if (arg.is_tuple()) items = arg.as_list()->items;
  else items.push_back(arg);
  size_t idx = 0;
  std::string out;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '%') {
      out += f[i];
      continue;
    }
    if (++i >= f.size()) fail("incomplete format");
    Value v;
    bool by_key = false;
    if (f[i] == '(') {
      size_t e = f.find(')', i);
      if (e == std::string::npos) fail("incomplete format key");
      if (!arg.is_dict()) fail("format requires a mapping");
      const Value* x = arg.as_dict()->find(f.substr(i + 1, e - i - 1));
      if (!x) fail("KeyError: '" + f.substr(i + 1, e - i - 1) + "'");
      v = *x;
      by_key = true;
      i = e + 1;
    }
    std::string spec;
    while (i < f.size() && std::strchr("-+ #0123456789.", f[i])) spec += f[i++];
    if (i >= f.size()) fail("incomplete format");
    char t = f[i];
    if (t == '%') {
      out += '%';
      continue;
    }
    if (!by_key) {
      if (idx >= items.size()) fail("not enough arguments for format string");
      v = items[idx++];
    }
    std::string pyspec;
    size_t k = 0;
    bool left = false;
    while (k < spec.size() && std::strchr("-+ #0", spec[k])) {
      if (spec[k] == '-') left = true;
      else if (spec[k] != '#') pyspec += spec[k];
      ++k;
    }
    std::string rest = spec.substr(k);
    if (left) pyspec = "<" + pyspec;
    if (t == 's') out += format_spec(Value(v.str()), pyspec + rest);
    else if (t == 'r') out += format_spec(Value(v.repr()), pyspec + rest);
    else if (t == 'd' || t == 'i' || t == 'u') {
      if (!v.is_number()) fail("%d format: a real number is required");
      Value n = v.is_float() ? Value(static_cast<int64_t>(std::trunc(v.as_double()))) : Value(v.as_int());
      out += format_spec(n, (left ? pyspec : (pyspec.empty() ? ">" : pyspec)) + rest + "d");
    } else if (std::strchr("fFeEgGxXo", t)) {
      if (!v.is_number()) fail("format: a real number is required");
      out += format_spec(v, pyspec + rest + t);
    } else {
      fail(fmt::format("unsupported format character '{}'", t));
    }
  }
  if (!arg.is_dict() && idx < items.size()) fail("not all arguments converted during string formatting");
  return out;
}

}  // namespace mlxcel::jinja
