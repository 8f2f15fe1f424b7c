#include "chat/lexer.h"

#include <algorithm>
#include <cstring>

#include "base/error.h"
#include "chat/value.h"

namespace mlxcel::jinja {

std::string position_message(int line, int col, const std::string& msg) {
  return fmt::format("template line {}, column {}: {}", line, col, msg);
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || static_cast<unsigned char>(c) >= 0x80;
}
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

// Python's unicode-escape decoding of a string literal body.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c != '\\' || i + 1 >= s.size()) {
      out += c;
      continue;
    }
    char n = s[++i];
    auto hex = [&](size_t count) -> uint32_t {
      if (i + count >= s.size() + 0 && i + count > s.size() - 1 + 1) {}
      uint32_t v = 0;
      for (size_t k = 1; k <= count; ++k) {
        if (i + k >= s.size()) throw Error(ErrorKind::invalid_request, "truncated escape in string literal");
        char h = s[i + k];
        int d = is_digit(h) ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10 : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
        if (d < 0) throw Error(ErrorKind::invalid_request, "truncated escape in string literal");
        v = v * 16 + static_cast<uint32_t>(d);
      }
      i += count;
      return v;
    };
    switch (n) {
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case '\n': break;
      case 'x': utf8_append(out, hex(2)); break;
      case 'u': utf8_append(out, hex(4)); break;
      case 'U': {
        uint32_t v = hex(8);
        if (v > 0x10ffff) throw Error(ErrorKind::invalid_request, "illegal Unicode character");
        utf8_append(out, v);
        break;
      }
      default:
        if (n >= '0' && n <= '7') {
          uint32_t v = static_cast<uint32_t>(n - '0');
          for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++k) {
            v = v * 8 + static_cast<uint32_t>(s[++i] - '0');
          }
          utf8_append(out, v);
        } else {
          out += '\\';
          out += n;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(const std::string& raw) {
    // Normalize newlines (\r\n, \r -> \n) and drop one trailing newline.
    src_.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\r') {
        src_ += '\n';
        if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
      } else {
        src_ += raw[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      // Find the earliest tag start.
      size_t p = pos;
      size_t tag = std::string::npos;
      while ((p = src_.find('{', p)) != std::string::npos) {
        if (p + 1 < src_.size() && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#')) {
          tag = p;
          break;
        }
        ++p;
      }
      if (tag == std::string::npos) {
        emit(Tok::data, src_.substr(pos), pos);
        break;
      }
      char kind = src_[tag + 1];
      size_t after = tag + 2;
      char sign = 0;
      if (after < src_.size() && (src_[after] == '-' || src_[after] == '+')) sign = src_[after++];
      std::string text = src_.substr(pos, tag - pos);
      // Raw block?
      size_t raw_end = 0;
      bool is_raw = kind == '%' && match_raw_begin(after, raw_end);
      apply_lstrip(text, sign, kind != '{', line_starting);
      if (!text.empty()) emit(Tok::data, text, pos);
      if (is_raw) {
        line_starting = src_[raw_end - 1] == '\n';
        pos = lex_raw(raw_end, line_starting);
        line_starting = pos > 0 && src_[pos - 1] == '\n';
        continue;
      }
      if (kind == '#') {
        pos = lex_comment(after, tag);
      } else {
        emit(kind == '{' ? Tok::variable_begin : Tok::block_begin, kind == '{' ? "{{" : "{%", tag);
        pos = lex_tag(after, kind == '{');
      }
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    emit(Tok::eof, "", src_.size());
    return std::move(tokens_);
  }

 private:
  void apply_lstrip(std::string& text, char sign, bool lstrip_kind, bool line_starting) {
    if (sign == '-') {
      size_t e = text.size();
      while (e > 0 && is_space(text[e - 1])) --e;
      text.resize(e);
    } else if (sign != '+' && lstrip_kind) {
      size_t nl = text.rfind('\n');
      size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if (l_pos > 0 || line_starting) {
        bool all_ws = l_pos < text.size();
        for (size_t i = l_pos; i < text.size(); ++i)
          if (!is_space(text[i])) { all_ws = false; break; }
        if (all_ws) text.resize(l_pos);
      }
    }
  }

  // Matches `\s*raw\s*(-%}\s*|%})` at `p`; sets `end` past it.
  bool match_raw_begin(size_t p, size_t& end) {
    while (p < src_.size() && is_space(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    if (p < src_.size() && is_name_char(src_[p])) return false;
    while (p < src_.size() && is_space(src_[p])) ++p;
    if (src_.compare(p, 3, "-%}") == 0) {
      p += 3;
      while (p < src_.size() && is_space(src_[p])) ++p;
    } else if (src_.compare(p, 2, "%}") == 0) {
      p += 2;
    } else {
      return false;
    }
    end = p;
    return true;
  }

  // Block end at p: `+%}` | `-%}\s*` | `%}\n?`. Returns the end position or npos.
  size_t match_block_end(size_t p, char c1, char c2, bool trim) {
    if (p + 2 < src_.size() + 0 && src_[p] == '+' && src_[p + 1] == c1 && src_[p + 2] == c2) return p + 3;
    if (p + 2 < src_.size() && src_[p] == '-' && src_[p + 1] == c1 && src_[p + 2] == c2) {
      p += 3;
      while (p < src_.size() && is_space(src_[p])) ++p;
      return p;
    }
    if (p + 1 < src_.size() && src_[p] == c1 && src_[p + 1] == c2) {
      p += 2;
      if (trim && p < src_.size() && src_[p] == '\n') ++p;
      return p;
    }
    return std::string::npos;
  }

  size_t lex_raw(size_t p, bool line_starting) {
    size_t start = p;
    while (true) {
      size_t q = src_.find("{%", p);
      if (q == std::string::npos) fail_at(start, "Missing end of raw directive");
      size_t r = q + 2;
      char sign = 0;
      if (r < src_.size() && (src_[r] == '-' || src_[r] == '+')) sign = src_[r++];
      while (r < src_.size() && is_space(src_[r])) ++r;
      if (src_.compare(r, 6, "endraw") == 0) {
        r += 6;
        while (r < src_.size() && is_space(src_[r])) ++r;
        size_t e = match_block_end(r, '%', '}', true);
        if (e != std::string::npos) {
          std::string text = src_.substr(start, q - start);
          apply_lstrip(text, sign, true, line_starting);
          if (!text.empty()) emit(Tok::data, text, start);
          return e;
        }
      }
      p = q + 2;
    }
  }

  size_t lex_comment(size_t p, size_t tag) {
    for (size_t i = p; i + 1 < src_.size(); ++i) {
      if ((src_[i] == '+' || src_[i] == '-') && src_.compare(i + 1, 2, "#}") == 0) {
        return match_block_end(i, '#', '}', true);
      }
      if (src_[i] == '#' && src_[i + 1] == '}') return match_block_end(i, '#', '}', true);
    }
    fail_at(tag, "Missing end of comment tag");
  }

  size_t lex_tag(size_t p, bool variable) {
    std::vector<char> balance;
    while (true) {
      if (p >= src_.size()) fail_at(p, variable ? "unexpected end of template, expected '}}'" : "unexpected end of template, expected '%}'");
      if (balance.empty()) {
        size_t e = variable ? match_block_end(p, '}', '}', false) : match_block_end(p, '%', '}', true);
        if (e != std::string::npos && !(variable && src_[p] == '+')) {
          emit(variable ? Tok::variable_end : Tok::block_end, variable ? "}}" : "%}", p);
          return e;
        }
      }
      char c = src_[p];
      if (is_space(c)) {
        ++p;
        continue;
      }
      if (is_digit(c)) {
        p = lex_number(p);
        continue;
      }
      if (is_name_start(c)) {
        size_t s = p;
        while (p < src_.size() && is_name_char(src_[p])) ++p;
        emit(Tok::name, src_.substr(s, p - s), s);
        continue;
      }
      if (c == '\'' || c == '"') {
        size_t s = p++;
        std::string body;
        while (true) {
          if (p >= src_.size()) fail_at(s, "unexpected char '" + std::string(1, c) + "'");
          if (src_[p] == '\\' && p + 1 < src_.size()) {
            body += src_[p];
            body += src_[p + 1];
            p += 2;
            continue;
          }
          if (src_[p] == c) break;
          body += src_[p++];
        }
        ++p;
        try {
          emit(Tok::string, unescape(body), s);
        } catch (const Error& e) {
          fail_at(s, e.what());
        }
        continue;
      }
      static const char* two[] = {"//", "**", "==", "!=", ">=", "<="};
      std::string op;
      for (const char* t : two)
        if (src_.compare(p, 2, t) == 0) op = t;
      if (op.empty()) {
        if (std::strchr("+-/*%~[](){}<>=.:|,;", c) == nullptr) {
          fail_at(p, fmt::format("unexpected char '{}' at {}", c, p));
        }
        op = std::string(1, c);
      }
      if (op == "{" || op == "(" || op == "[") {
        balance.push_back(op == "{" ? '}' : op == "(" ? ')' : ']');
      } else if (op == "}" || op == ")" || op == "]") {
        if (balance.empty()) fail_at(p, "unexpected '" + op + "'");
        if (balance.back() != op[0]) fail_at(p, fmt::format("unexpected '{}', expected '{}'", op, balance.back()));
        balance.pop_back();
      }
      emit(Tok::op, op, p);
      p += op.size();
    }
  }

  size_t lex_number(size_t p) {
    size_t s = p;
    auto digits = [&](size_t q) {
      size_t st = q;
      while (q < src_.size() && (is_digit(src_[q]) || (src_[q] == '_' && q + 1 < src_.size() && is_digit(src_[q + 1]) && q > st))) ++q;
      return q;
    };
    p = digits(p);
    bool is_float = false;
    if (p + 1 < src_.size() && src_[p] == '.' && is_digit(src_[p + 1])) {
      is_float = true;
      p = digits(p + 1);
    }
    if (p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && is_digit(src_[q])) {
        is_float = true;
        p = digits(q);
      }
    }
    std::string text;
    for (size_t i = s; i < p; ++i)
      if (src_[i] != '_') text += src_[i];
    emit(is_float ? Tok::floating : Tok::integer, text, s);
    return p;
  }

  void emit(Tok t, std::string value, size_t offset) {
    auto [line, col] = position(offset);
    tokens_.push_back(Token{t, std::move(value), line, col});
  }

  std::pair<int, int> position(size_t offset) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    size_t line = static_cast<size_t>(it - line_starts_.begin());
    size_t col = offset - line_starts_[line - 1] + 1;
    return {static_cast<int>(line), static_cast<int>(col)};
  }

  [[noreturn]] void fail_at(size_t offset, const std::string& msg) const {
    auto [line, col] = position(offset);
    throw Error(ErrorKind::invalid_request, position_message(line, col, msg));
  }

  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(const std::string& source) { return Lexer(source).run(); }

}  // namespace mlxcel::jinja
