// UTF-8 and Unicode helpers for the tokenizer: decoding, lossy repair, normalization (ICU),
// case mapping and the character classes that Hugging Face `tokenizers` uses (Rust's char
// methods), plus the GPT-2 byte <-> unicode table.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mlxcel::unicode {

// Decodes the code point at s[i] and advances i. Invalid sequences yield U+FFFD and advance
// by the maximal invalid prefix, exactly like Rust's String::from_utf8_lossy.
char32_t next_cp(std::string_view s, size_t& i);
void append_utf8(std::string& out, char32_t cp);
std::string to_utf8(char32_t cp);
std::vector<char32_t> decode(std::string_view s);
// Length in bytes of the (valid) UTF-8 sequence starting with lead byte b; 1 for bad leads.
size_t utf8_len(uint8_t b);
bool is_valid_utf8(std::string_view s);
// Replaces every invalid sequence with U+FFFD (Rust from_utf8_lossy semantics).
std::string sanitize_utf8(std::string_view s);
size_t count_chars(std::string_view s);

enum class NormForm { nfc, nfd, nfkc, nfkd };
std::string normalize(std::string_view s, NormForm form);
// True when normalization never combines `c` with what precedes it (ICU hasBoundaryBefore):
// text can be normalized chunk by chunk between such characters.
bool norm_boundary_before(char32_t c, NormForm form);
// Rust char::to_lowercase applied char by char (no context-sensitive final sigma).
std::string lowercase(std::string_view s);

// Character classes with Rust / HF semantics.
bool is_whitespace(char32_t c);    // Unicode White_Space
bool is_alphanumeric(char32_t c);  // Alphabetic or numeric (Nd, Nl, No)
bool is_numeric(char32_t c);
bool is_punctuation(char32_t c);  // general category P*
bool is_bert_punctuation(char32_t c);  // ASCII punctuation or P*
bool is_other(char32_t c);        // general category C* (Cc, Cf, Cs, Co, Cn)
bool is_mark(char32_t c);         // general category M*
bool is_mark_nonspacing(char32_t c);  // Mn
bool is_chinese_char(char32_t c);  // BERT's CJK ideograph ranges
bool is_symbol(char32_t c);        // general category S*
char32_t simple_lower(char32_t c);  // one-to-one lowercase mapping

// Extended grapheme cluster boundaries of valid UTF-8 `s` (ICU character break rules, as
// Rust's unicode-segmentation graphemes(true)): byte offsets, starting with 0 and ending
// with s.size() (just {0} for an empty string).
std::vector<size_t> grapheme_breaks(std::string_view s);

// The script of `c` for the UnicodeScripts pre-tokenizer, as HF's table: ICU's script code
// (UScriptCode) with Hiragana, Katakana and U+30FC folded into Han, ' ' and characters
// unassigned in Unicode 9 (HF's table) mapped to -1 ("Any").
int hf_script(char32_t c);

// GPT-2 byte-level alphabet: every byte maps to one printable code point.
const std::string& byte_to_unicode(uint8_t b);  // UTF-8 of the mapped code point
// Inverse map; returns -1 when c is not in the alphabet.
int unicode_to_byte(char32_t c);

}  // namespace mlxcel::unicode
