// SentencePiece's precompiled_charsmap, as the `Precompiled` normalizer of tokenizer.json
// uses it (HF tokenizers / spm_precompiled semantics, which T5, XLM-R, ALBERT, mBART and
// Marian tokenizer.json files rely on).
//
// Blob layout: u32 little-endian trie size in bytes, then trie_size / 4 little-endian u32
// units of a Darts-clone double array, then the pool of normalized strings (each ended by
// '\0'). A trie value is a byte offset into the pool.
//
// Normalization walks the extended grapheme clusters of the input: a cluster shorter than 6
// bytes whose bytes start with a trie key is replaced by the pool string of the FIRST
// (shortest) key that prefixes it (HF takes results[0] of a common-prefix search, so the
// rest of the cluster is dropped); otherwise each character of the cluster is looked up on
// its own and replaced, or kept. Malformed tries never read out of bounds: a walk that
// leaves the array or a value outside the pool counts as no match.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mlxcel {

// Standard base64 (RFC 4648, '=' padding optional, no whitespace); throws
// Error(invalid_request) on anything else.
std::string base64_decode(std::string_view text);

class PrecompiledCharsmap {
 public:
  // Parses the raw blob (after base64). Throws Error(invalid_request) when the header is
  // truncated, the trie runs past the blob or the pool is not valid UTF-8.
  static PrecompiledCharsmap parse(std::string_view blob);

  // Pool string of the first (shortest) trie key that prefixes `chunk`; nullopt if none.
  std::optional<std::string_view> transform(std::string_view chunk) const;

  // Normalizes valid UTF-8 `s`, calling emit(out, begin, end) for every output piece with
  // the byte range of `s` it replaces (unchanged text comes out as itself). Pieces arrive
  // left to right and cover `s`.
  void normalize(std::string_view s, const std::function<void(std::string_view, size_t, size_t)>& emit) const;
  std::string normalize(std::string_view s) const;

  size_t trie_units() const { return trie_.size(); }
  size_t pool_size() const { return pool_.size(); }

 private:
  std::vector<uint32_t> trie_;
  std::string pool_;
};

}  // namespace mlxcel
