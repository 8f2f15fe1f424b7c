// Tokenization models: turn one pre-tokenized piece into token ids.
//   BPE (byte-level and SentencePiece-style with byte_fallback), WordPiece, WordLevel,
//   Unigram (Viterbi), and SpmScores (llama.cpp's score-driven SentencePiece BPE for GGUF
//   vocabularies that ship no merges).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace mlxcel {

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of `piece` (never empty) to `out`.
  virtual void tokenize(const std::string& piece, std::vector<int32_t>& out) const = 0;
  // The same, also appending each token's byte range within `piece` to `offs` (HF model
  // offsets). The default gives every token the whole piece.
  virtual void tokenize_offsets(const std::string& piece, std::vector<int32_t>& out,
                                std::vector<std::pair<uint32_t, uint32_t>>& offs) const {
    size_t n = out.size();
    tokenize(piece, out);
    offs.resize(offs.size() + (out.size() - n), {0u, static_cast<uint32_t>(piece.size())});
  }

  std::optional<int32_t> token_to_id(const std::string& token) const;
  // Byte fallback: the ids of the <0xXX> tokens of every byte of `text`, or nullopt when
  // the vocabulary lacks one of them.
  std::optional<std::vector<int32_t>> byte_fallback_ids(std::string_view text) const;
  // nullptr when the id has no token.
  const std::string* id_to_token(int32_t id) const;
  size_t vocab_size() const { return id_to_token_.size(); }
  // Registers a token (tokens may be sparse; later ids grow the table).
  void add_token(const std::string& token, int32_t id);
  void reserve(size_t n) {
    token_to_id_.reserve(n);
    id_to_token_.reserve(n);
    has_id_.reserve(n);
  }

 protected:
  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
};

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

class BpeModel : public Model {
 public:
  explicit BpeModel(BpeOptions opts) : opts_(std::move(opts)) {}
  // Merges in priority order. Merges that name unknown tokens are skipped.
  void set_merges(const std::vector<std::pair<std::string, std::string>>& merges);
  void tokenize(const std::string& piece, std::vector<int32_t>& out) const override { run(piece, out, nullptr); }
  void tokenize_offsets(const std::string& piece, std::vector<int32_t>& out,
                        std::vector<std::pair<uint32_t, uint32_t>>& offs) const override {
    run(piece, out, &offs);
  }

 private:
  void run(const std::string& piece, std::vector<int32_t>& out, std::vector<std::pair<uint32_t, uint32_t>>* offs) const;
  BpeOptions opts_;
  std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>> merges_;  // (a,b) -> (rank, new id)
};

class WordPieceModel : public Model {
 public:
  WordPieceModel(std::string unk, std::string prefix, size_t max_chars)
      : unk_(std::move(unk)), prefix_(std::move(prefix)), max_chars_(max_chars) {}
  void tokenize(const std::string& piece, std::vector<int32_t>& out) const override { run(piece, out, nullptr); }
  void tokenize_offsets(const std::string& piece, std::vector<int32_t>& out,
                        std::vector<std::pair<uint32_t, uint32_t>>& offs) const override {
    run(piece, out, &offs);
  }

 private:
  void run(const std::string& piece, std::vector<int32_t>& out, std::vector<std::pair<uint32_t, uint32_t>>* offs) const;
  std::string unk_, prefix_;
  size_t max_chars_;
};

class WordLevelModel : public Model {
 public:
  explicit WordLevelModel(std::string unk) : unk_(std::move(unk)) {}
  void tokenize(const std::string& piece, std::vector<int32_t>& out) const override;

 private:
  std::string unk_;
};

class UnigramModel : public Model {
 public:
  UnigramModel(std::vector<std::pair<std::string, double>> vocab, std::optional<int32_t> unk_id, bool byte_fallback);
  void tokenize(const std::string& piece, std::vector<int32_t>& out) const override { run(piece, out, nullptr); }
  void tokenize_offsets(const std::string& piece, std::vector<int32_t>& out,
                        std::vector<std::pair<uint32_t, uint32_t>>& offs) const override {
    run(piece, out, &offs);
  }

 private:
  void run(const std::string& piece, std::vector<int32_t>& out, std::vector<std::pair<uint32_t, uint32_t>>* offs) const;
  std::vector<double> scores_;
  std::optional<int32_t> unk_id_;
  bool byte_fallback_;
  double unk_score_ = 0;
  size_t max_piece_bytes_ = 0;
  // Byte trie over the pieces: (node << 8 | byte) -> child; trie_id_[node] = id or -1.
  std::unordered_map<uint64_t, uint32_t> trie_edges_;
  std::vector<int32_t> trie_id_;
};

class SpmScoresModel : public Model {
 public:
  // scores[i] belongs to token id i.
  explicit SpmScoresModel(std::vector<float> scores) : scores_(std::move(scores)) {}
  void tokenize(const std::string& piece, std::vector<int32_t>& out) const override;

 private:
  void resegment(const std::string& text, const std::unordered_map<std::string, std::pair<int, int>>& rev,
                 const std::vector<std::string>& sym_text, std::vector<int32_t>& out) const;
  std::vector<float> scores_;
};

// Builds the model of a tokenizer.json "model" object.
std::unique_ptr<Model> make_model(const nlohmann::json& j);

}  // namespace mlxcel
