#include "tokenizer/precompiled.h"

#include "base/error.h"
#include "tokenizer/unicode.h"

namespace mlxcel {

namespace u = unicode;

std::string base64_decode(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  size_t n = text.size();
  while (n > 0 && text[n - 1] == '=') --n;
  if (text.size() - n > 2) invalid("[tokenizer] base64: too much '=' padding");
  if (n % 4 == 1) invalid("[tokenizer] base64: truncated input ({} characters)", n);
  if (text.size() != n && text.size() % 4 != 0) invalid("[tokenizer] base64: bad padding");
  std::string out;
  out.reserve(n / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    int v = value(text[i]);
    if (v < 0) invalid("[tokenizer] base64: invalid character at offset {}", i);
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  // Leftover bits must be zero (canonical encoding, as Rust's base64 STANDARD engine).
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) invalid("[tokenizer] base64: non-zero trailing bits");
  return out;
}

namespace {

uint32_t read_u32le(std::string_view b, size_t off) {
  return static_cast<uint32_t>(static_cast<uint8_t>(b[off])) | static_cast<uint32_t>(static_cast<uint8_t>(b[off + 1])) << 8 |
         static_cast<uint32_t>(static_cast<uint8_t>(b[off + 2])) << 16 |
         static_cast<uint32_t>(static_cast<uint8_t>(b[off + 3])) << 24;
}

// Darts-clone unit fields.
bool unit_has_leaf(uint32_t u) { return (u >> 8) & 1; }
uint32_t unit_value(uint32_t u) { return u & ((1u << 31) - 1); }
uint32_t unit_label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
size_t unit_offset(uint32_t u) { return static_cast<size_t>(u >> 10) << ((u & (1u << 9)) >> 6); }

}  // namespace

PrecompiledCharsmap PrecompiledCharsmap::parse(std::string_view blob) {
  if (blob.size() < 4) invalid("[tokenizer] precompiled_charsmap: {} bytes, too short for its header", blob.size());
  uint32_t trie_bytes = read_u32le(blob, 0);
  size_t units = trie_bytes / 4;
  if (units > (blob.size() - 4) / 4) {
    invalid("[tokenizer] precompiled_charsmap: trie of {} bytes runs past the {}-byte blob", trie_bytes, blob.size());
  }
  PrecompiledCharsmap m;
  m.trie_.resize(units);
  for (size_t i = 0; i < units; ++i) m.trie_[i] = read_u32le(blob, 4 + 4 * i);
  m.pool_ = std::string(blob.substr(4 + 4 * units));
  if (!u::is_valid_utf8(m.pool_)) invalid("[tokenizer] precompiled_charsmap: normalized strings are not valid UTF-8");
  return m;
}

std::optional<std::string_view> PrecompiledCharsmap::transform(std::string_view chunk) const {
  if (trie_.empty()) return std::nullopt;
  size_t pos = unit_offset(trie_[0]);
  for (unsigned char c : chunk) {
    if (c == 0) break;
    pos ^= c;
    if (pos >= trie_.size()) return std::nullopt;
    uint32_t unit = trie_[pos];
    if (unit_label(unit) != c) return std::nullopt;
    pos ^= unit_offset(unit);
    if (unit_has_leaf(unit)) {
      if (pos >= trie_.size()) return std::nullopt;
      size_t idx = unit_value(trie_[pos]);
      // NOTE: the first (shortest) match wins, as in HF. A value that lies outside the pool
      // or inside a multi-byte character is treated as no match (HF would panic).
      if (idx > pool_.size()) return std::nullopt;
      if (idx < pool_.size() && (static_cast<uint8_t>(pool_[idx]) & 0xC0) == 0x80) return std::nullopt;
      size_t end = pool_.find('\0', idx);
      if (end == std::string::npos) end = pool_.size();
      return std::string_view(pool_).substr(idx, end - idx);
    }
  }
  return std::nullopt;
}

void PrecompiledCharsmap::normalize(std::string_view s,
                                    const std::function<void(std::string_view, size_t, size_t)>& emit) const {
  std::vector<size_t> breaks = u::grapheme_breaks(s);
  for (size_t g = 0; g + 1 < breaks.size(); ++g) {
    size_t b = breaks[g], e = breaks[g + 1];
    std::string_view grapheme = s.substr(b, e - b);
    if (grapheme.size() < 6) {
      if (auto norm = transform(grapheme)) {
        emit(*norm, b, e);
        continue;
      }
    }
    for (size_t i = b; i < e;) {
      size_t cb = i;
      u::next_cp(s, i);
      std::string_view part = s.substr(cb, i - cb);
      auto norm = transform(part);
      emit(norm ? *norm : part, cb, i);
    }
  }
}

std::string PrecompiledCharsmap::normalize(std::string_view s) const {
  std::string out;
  out.reserve(s.size());
  normalize(s, [&](std::string_view piece, size_t, size_t) { out.append(piece); });
  return out;
}

}  // namespace mlxcel
