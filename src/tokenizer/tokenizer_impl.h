// Internal: the shared state behind Tokenizer (used by tokenizer.cpp and gguf_vocab.cpp).
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "tokenizer/components.h"
#include "tokenizer/models.h"
#include "tokenizer/tokenizer.h"

namespace mlxcel {

// Leftmost-longest matcher over added-token contents (Aho-Corasick semantics of HF).
class AddedMatcher {
 public:
  void add(const std::string& content, int token_index);
  bool empty() const { return n_patterns_ == 0; }
  // Longest pattern starting at s[pos]; returns {token_index, length} or {-1, 0}.
  std::pair<int, size_t> longest_at(std::string_view s, size_t pos) const;

 private:
  std::unordered_map<uint64_t, int> edges_;  // (node << 8 | byte) -> node
  std::vector<int> terminal_{-1};            // node -> token index
  int n_nodes_ = 1;
  int n_patterns_ = 0;
};

struct TokenizerImpl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<Model> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;

  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_set<int32_t> special_ids;
  AddedMatcher raw_matcher;         // normalized == false
  AddedMatcher normalized_matcher;  // normalized == true (matched after normalization)
  AddedMatcher raw_matcher_plain;         // the same without special tokens (parse_special off)
  AddedMatcher normalized_matcher_plain;

  // Registers added tokens and rebuilds the matchers.
  void set_added(std::vector<AddedToken> tokens);
  static Tokenizer wrap(std::shared_ptr<TokenizerImpl> impl) { return Tokenizer(std::move(impl)); }
};

}  // namespace mlxcel
