#include "tokenizer/unicode.h"

#include <array>
#include <mutex>
#include <unordered_map>

#include <unicode/ubrk.h>
#include <unicode/uchar.h>
#include <unicode/uscript.h>
#include <unicode/utext.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utf8.h>

#include "base/error.h"

namespace mlxcel::unicode {

size_t utf8_len(uint8_t b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 1;
}

char32_t next_cp(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t n = s.size();
  uint8_t b0 = p[i];
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  // Follows the WHATWG / Rust "maximal subpart" rule for the replacement count.
  size_t need;
  char32_t cp;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    ++i;
    return 0xFFFD;
  }
  size_t j = i + 1;
  for (size_t k = 0; k < need; ++k, ++j) {
    if (j >= n) {
      i = j;
      return 0xFFFD;
    }
    uint8_t b = p[j];
    uint8_t l = k == 0 ? lo : 0x80, h = k == 0 ? hi : 0xBF;
    if (b < l || b > h) {
      i = j;
      return 0xFFFD;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  i = j;
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string to_utf8(char32_t cp) {
  std::string s;
  append_utf8(s, cp);
  return s;
}

std::vector<char32_t> decode(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out.push_back(next_cp(s, i));
  return out;
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t start = i;
    char32_t c = next_cp(s, i);
    if (c == 0xFFFD && !(i - start == 3 && static_cast<uint8_t>(s[start]) == 0xEF)) return false;
  }
  return true;
}

std::string sanitize_utf8(std::string_view s) {
  if (is_valid_utf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) append_utf8(out, next_cp(s, i));
  return out;
}

size_t count_chars(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size();) {
    next_cp(s, i);
    ++n;
  }
  return n;
}

namespace {

std::u16string to_u16(std::string_view s) {
  std::u16string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    char32_t c = next_cp(s, i);
    if (c >= 0x10000) {
      c -= 0x10000;
      out.push_back(static_cast<char16_t>(0xD800 + (c >> 10)));
      out.push_back(static_cast<char16_t>(0xDC00 + (c & 0x3FF)));
    } else {
      out.push_back(static_cast<char16_t>(c));
    }
  }
  return out;
}

std::string from_u16(const char16_t* s, size_t n) {
  std::string out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    char32_t c = s[i];
    if (c >= 0xD800 && c < 0xDC00 && i + 1 < n && s[i + 1] >= 0xDC00 && s[i + 1] < 0xE000) {
      c = 0x10000 + ((c - 0xD800) << 10) + (s[i + 1] - 0xDC00);
      ++i;
    }
    append_utf8(out, c);
  }
  return out;
}

}  // namespace

namespace {
const UNormalizer2* normalizer_for(NormForm form) {
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* n = nullptr;
  switch (form) {
    case NormForm::nfc: n = unorm2_getNFCInstance(&err); break;
    case NormForm::nfd: n = unorm2_getNFDInstance(&err); break;
    case NormForm::nfkc: n = unorm2_getNFKCInstance(&err); break;
    case NormForm::nfkd: n = unorm2_getNFKDInstance(&err); break;
  }
  if (U_FAILURE(err)) throw_error(ErrorKind::internal, "[tokenizer] ICU normalizer unavailable: {}", u_errorName(err));
  return n;
}
}  // namespace

bool norm_boundary_before(char32_t c, NormForm form) {
  return unorm2_hasBoundaryBefore(normalizer_for(form), static_cast<UChar32>(c));
}

std::string normalize(std::string_view s, NormForm form) {
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* n = nullptr;
  switch (form) {
    case NormForm::nfc: n = unorm2_getNFCInstance(&err); break;
    case NormForm::nfd: n = unorm2_getNFDInstance(&err); break;
    case NormForm::nfkc: n = unorm2_getNFKCInstance(&err); break;
    case NormForm::nfkd: n = unorm2_getNFKDInstance(&err); break;
  }
  if (U_FAILURE(err)) throw_error(ErrorKind::internal, "[tokenizer] ICU normalizer unavailable: {}", u_errorName(err));
  std::u16string in = to_u16(s);
  std::u16string out(in.size() * 3 + 16, u'\0');
  int32_t len = unorm2_normalize(n, reinterpret_cast<const UChar*>(in.data()), static_cast<int32_t>(in.size()),
                                 reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()), &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    err = U_ZERO_ERROR;
    out.assign(static_cast<size_t>(len) + 1, u'\0');
    len = unorm2_normalize(n, reinterpret_cast<const UChar*>(in.data()), static_cast<int32_t>(in.size()),
                           reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()), &err);
  }
  if (U_FAILURE(err)) throw_error(ErrorKind::internal, "[tokenizer] ICU normalization failed: {}", u_errorName(err));
  return from_u16(out.data(), static_cast<size_t>(len));
}

std::string lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    char32_t c = next_cp(s, i);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
      continue;
    }
    // Full (one-to-many) mapping of a lone character, as Rust's char::to_lowercase.
    std::u16string one = to_u16(to_utf8(c));
    char16_t buf[16];
    UErrorCode err = U_ZERO_ERROR;
    int32_t n = u_strToLower(reinterpret_cast<UChar*>(buf), 16, reinterpret_cast<const UChar*>(one.data()),
                             static_cast<int32_t>(one.size()), "", &err);
    if (U_FAILURE(err) || n > 16) {
      append_utf8(out, c);
    } else {
      out += from_u16(buf, static_cast<size_t>(n));
    }
  }
  return out;
}

bool is_whitespace(char32_t c) { return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE); }

bool is_numeric(char32_t c) {
  int t = u_charType(static_cast<UChar32>(c));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool is_alphanumeric(char32_t c) {
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_ALPHABETIC) || is_numeric(c);
}

bool is_punctuation(char32_t c) {
  int t = u_charType(static_cast<UChar32>(c));
  return t == U_CONNECTOR_PUNCTUATION || t == U_DASH_PUNCTUATION || t == U_START_PUNCTUATION ||
         t == U_END_PUNCTUATION || t == U_INITIAL_PUNCTUATION || t == U_FINAL_PUNCTUATION ||
         t == U_OTHER_PUNCTUATION;
}

bool is_bert_punctuation(char32_t c) {
  bool ascii_punct = (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
  return ascii_punct || is_punctuation(c);
}

bool is_other(char32_t c) {
  int t = u_charType(static_cast<UChar32>(c));
  return t == U_CONTROL_CHAR || t == U_FORMAT_CHAR || t == U_SURROGATE || t == U_PRIVATE_USE_CHAR ||
         t == U_UNASSIGNED;
}

bool is_mark(char32_t c) {
  int t = u_charType(static_cast<UChar32>(c));
  return t == U_NON_SPACING_MARK || t == U_COMBINING_SPACING_MARK || t == U_ENCLOSING_MARK;
}

bool is_mark_nonspacing(char32_t c) { return u_charType(static_cast<UChar32>(c)) == U_NON_SPACING_MARK; }

bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool is_symbol(char32_t c) {
  int t = u_charType(static_cast<UChar32>(c));
  return t == U_MATH_SYMBOL || t == U_CURRENCY_SYMBOL || t == U_MODIFIER_SYMBOL || t == U_OTHER_SYMBOL;
}

char32_t simple_lower(char32_t c) { return static_cast<char32_t>(u_tolower(static_cast<UChar32>(c))); }

namespace {

struct ByteTables {
  std::array<std::string, 256> to_uni;
  std::unordered_map<char32_t, int> to_byte;
  ByteTables() {
    std::array<char32_t, 256> cps{};
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    int n = 0;
    for (int b = 0; b < 256; ++b) cps[b] = direct[b] ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
    for (int b = 0; b < 256; ++b) {
      to_uni[b] = to_utf8(cps[b]);
      to_byte[cps[b]] = b;
    }
  }
};

const ByteTables& tables() {
  static const ByteTables t;
  return t;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t b) { return tables().to_uni[b]; }

int unicode_to_byte(char32_t c) {
  const auto& m = tables().to_byte;
  auto it = m.find(c);
  return it == m.end() ? -1 : it->second;
}

namespace {

// ICU's character (extended grapheme cluster) breaks of `s`, appended to `out` offset by `base`
// (the break at 0 excluded).
void icu_grapheme_breaks(std::string_view s, size_t base, std::vector<size_t>& out) {
  // One break iterator per thread: ubrk_open loads the rules, which is slow.
  struct Iter {
    UBreakIterator* it = nullptr;
    ~Iter() {
      if (it) ubrk_close(it);
    }
  };
  thread_local Iter cache;
  UErrorCode err = U_ZERO_ERROR;
  if (!cache.it) {
    cache.it = ubrk_open(UBRK_CHARACTER, "", nullptr, 0, &err);
    if (U_FAILURE(err)) throw_error(ErrorKind::internal, "[tokenizer] ICU break iterator unavailable: {}", u_errorName(err));
  }
  UText* ut = utext_openUTF8(nullptr, s.data(), static_cast<int64_t>(s.size()), &err);
  if (U_FAILURE(err)) throw_error(ErrorKind::internal, "[tokenizer] ICU utext failed: {}", u_errorName(err));
  ubrk_setUText(cache.it, ut, &err);
  if (U_FAILURE(err)) {
    utext_close(ut);
    throw_error(ErrorKind::internal, "[tokenizer] ICU break iterator failed: {}", u_errorName(err));
  }
  // With a UTF-8 UText the iterator's indices are byte offsets.
  for (int32_t p = ubrk_next(cache.it); p != UBRK_DONE; p = ubrk_next(cache.it)) out.push_back(base + static_cast<size_t>(p));
  ubrk_setText(cache.it, nullptr, 0, &err);
  utext_close(ut);
  if (out.back() != base + s.size()) out.push_back(base + s.size());
}

}  // namespace

std::vector<size_t> grapheme_breaks(std::string_view s) {
  std::vector<size_t> out{0};
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t n = s.size();
  // Between two ASCII characters there is always a break (except CR LF), and no rule looks
  // across it: ASCII runs are split here, and only the stretches between such safe breaks
  // go through ICU.
  auto safe_break_at = [&](size_t j) { return p[j - 1] < 0x80 && p[j] < 0x80 && !(p[j - 1] == '\r' && p[j] == '\n'); };
  size_t i = 0;
  while (i < n) {
    if (i + 1 == n ? p[i] < 0x80 : safe_break_at(i + 1)) {
      out.push_back(++i);
      continue;
    }
    size_t j = i + 1;
    while (j < n && !safe_break_at(j)) ++j;
    icu_grapheme_breaks(s.substr(i, j - i), i, out);
    i = j;
  }
  return out;
}

int hf_script(char32_t c) {
  if (c == ' ') return -1;
  if (c == 0x30FC) return USCRIPT_HAN;
  UVersionInfo age;
  u_charAge(static_cast<UChar32>(c), age);
  // HF's table is generated from Unicode 9; later and unassigned characters are "Any".
  if (age[0] == 0 || age[0] > 9) return -1;
  UErrorCode err = U_ZERO_ERROR;
  UScriptCode sc = uscript_getScript(static_cast<UChar32>(c), &err);
  if (U_FAILURE(err) || sc == USCRIPT_UNKNOWN) return -1;
  if (sc == USCRIPT_HIRAGANA || sc == USCRIPT_KATAKANA) return USCRIPT_HAN;
  return static_cast<int>(sc);
}

}  // namespace mlxcel::unicode
