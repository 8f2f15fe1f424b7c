// grapheme_breaks (ASCII fast path + ICU in between) against ICU on the whole string, and
// the UnicodeScripts script classes.
#include <gtest/gtest.h>

#include <random>

#include <unicode/ubrk.h>
#include <unicode/uscript.h>
#include <unicode/utext.h>

#include "tokenizer/unicode.h"

namespace mlxcel {
namespace {

std::vector<size_t> icu_reference(const std::string& s) {
  std::vector<size_t> out{0};
  if (s.empty()) return out;
  UErrorCode err = U_ZERO_ERROR;
  UBreakIterator* it = ubrk_open(UBRK_CHARACTER, "", nullptr, 0, &err);
  UText* ut = utext_openUTF8(nullptr, s.data(), static_cast<int64_t>(s.size()), &err);
  ubrk_setUText(it, ut, &err);
  EXPECT_FALSE(U_FAILURE(err));
  for (int32_t p = ubrk_next(it); p != UBRK_DONE; p = ubrk_next(it)) out.push_back(static_cast<size_t>(p));
  utext_close(ut);
  ubrk_close(it);
  return out;
}

TEST(Graphemes, FastPathMatchesIcu) {
  const std::vector<std::string> palette = {
      "a", "Z", " ", "\r", "\n", "1", "#", "\xCC\x81" /* U+0301 */, "\xE2\x80\x8D" /* ZWJ */,
      "\xF0\x9F\x91\xA9" /* woman */, "\xF0\x9F\x92\xBB" /* laptop */, "\xF0\x9F\x87\xAF" /* RI J */,
      "\xF0\x9F\x87\xB5" /* RI P */, "\xE1\x84\x80" /* L jamo */, "\xE1\x85\xA1" /* V jamo */,
      "\xD8\x80" /* U+0600 prepend */, "\xE0\xA4\x95" /* KA */, "\xE0\xA5\x8D" /* virama */, "\xC3\xA9", "\xEF\xB8\x8F"};
  std::mt19937 rng(3);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s;
    int len = static_cast<int>(rng() % 12);
    for (int k = 0; k < len; ++k) s += palette[rng() % palette.size()];
    EXPECT_EQ(unicode::grapheme_breaks(s), icu_reference(s)) << s;
  }
  EXPECT_EQ(unicode::grapheme_breaks(""), (std::vector<size_t>{0}));
  EXPECT_EQ(unicode::grapheme_breaks("a\r\nb"), (std::vector<size_t>{0, 1, 3, 4}));
}

TEST(Scripts, HfClasses) {
  using unicode::hf_script;
  EXPECT_EQ(hf_script(' '), -1);
  EXPECT_EQ(hf_script('a'), USCRIPT_LATIN);
  EXPECT_EQ(hf_script('0'), USCRIPT_COMMON);
  EXPECT_EQ(hf_script(0x4EAC), USCRIPT_HAN);        // 京
  EXPECT_EQ(hf_script(0x3044), USCRIPT_HAN);        // い (Hiragana -> Han)
  EXPECT_EQ(hf_script(0x30B0), USCRIPT_HAN);        // グ (Katakana -> Han)
  EXPECT_EQ(hf_script(0x30FC), USCRIPT_HAN);        // ー
  EXPECT_EQ(hf_script(0x0430), USCRIPT_CYRILLIC);
  EXPECT_EQ(hf_script(0xFFFD), USCRIPT_COMMON);
  EXPECT_EQ(hf_script(0x1F976), -1);  // U+1F976 (Unicode 11): not in HF's Unicode 9 table
  EXPECT_EQ(hf_script(0x0378), -1);   // unassigned
}

}  // namespace
}  // namespace mlxcel
