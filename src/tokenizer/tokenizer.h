// A Hugging Face tokenizer.json implementation whose ids match the `tokenizers` library.
//
//   Tokenizer tok = Tokenizer::from_file("model/tokenizer.json");
//   std::vector<int32_t> ids = tok.encode("Hello world", /*add_special_tokens=*/true);
//   std::string text = tok.decode(ids, /*skip_special_tokens=*/true);
//
//   StreamDecoder stream(tok);            // incremental detokenization for generation
//   for (int32_t id : generated) std::cout << stream.step(id);
//   std::cout << stream.flush();
//
// Input that is not valid UTF-8 never fails: every invalid sequence is replaced with U+FFFD
// first (Rust's String::from_utf8_lossy rules), then encoded. Malformed tokenizer.json
// throws Error(invalid_request) at load, naming the offending field.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mlxcel {

class GgufFile;

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool normalized = true;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

// The full result of encoding one sequence or a pair (HF tokenizers' Encoding). All vectors
// have one entry per token.
struct Encoding {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;      // segment ids from the post-processor (pair: 0 / 1)
  std::vector<std::string> tokens;    // vocabulary strings
  // Byte offsets [begin, end) into the input of the token's own sequence (after invalid
  // UTF-8 was replaced with U+FFFD, which does not move valid text); (0, 0) for special
  // tokens added by the post-processor. See char_offsets() for Python-style offsets.
  std::vector<std::pair<size_t, size_t>> offsets;
  std::vector<uint8_t> special_tokens_mask;  // 1 for tokens added by the post-processor
  std::vector<int32_t> sequence_ids;         // 0 or 1; -1 for post-processor special tokens
  size_t size() const { return ids.size(); }
};

// Byte offsets into `text` -> code point offsets (what Python's `tokenizers` reports).
std::vector<std::pair<size_t, size_t>> char_offsets(std::string_view text,
                                                    const std::vector<std::pair<size_t, size_t>>& byte_offsets);

struct TokenizerImpl;

class Tokenizer {
 public:
  // Parses tokenizer.json text / a tokenizer.json file.
  static Tokenizer from_json(std::string_view json_text);
  static Tokenizer from_file(const std::string& path);
  // Builds the tokenizer that llama.cpp would use for a GGUF vocabulary
  // (tokenizer.ggml.model "llama" or "gpt2"; see gguf_vocab.cpp for the pre-tokenizers).
  static Tokenizer from_gguf(const GgufFile& gguf);

  // parse_special = false treats special added tokens in `text` as plain text (HF's
  // encode_special_tokens, llama.cpp's parse_special = false); non-special added tokens
  // are still matched.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true, bool parse_special = true) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // encode() with offsets, tokens, type ids and the special-tokens mask.
  Encoding encode_full(std::string_view text, bool add_special_tokens = true, bool parse_special = true) const;
  // A pair (HF encode(a, b)): the post-processor's pair template (TemplateProcessing "pair",
  // Bert "[CLS] A [SEP] B [SEP]" with type ids 0/1, Roberta "<s> A </s></s> B </s>").
  // Offsets of B's tokens are relative to `b`.
  Encoding encode_pair(std::string_view a, std::string_view b, bool add_special_tokens = true,
                       bool parse_special = true) const;

  // The normalizer alone (HF tokenizer.normalizer.normalize_str); the input when there is none.
  std::string normalize(std::string_view text) const;

  std::optional<int32_t> token_to_id(const std::string& token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  size_t vocab_size() const;  // largest id + 1, added tokens included
  bool is_special(int32_t id) const;
  const std::vector<AddedToken>& added_tokens() const;

  // Adds tokens after load (HF add_tokens / add_special_tokens); ids are assigned when the
  // content is not in the vocabulary yet. Returns the ids.
  std::vector<int32_t> add_tokens(const std::vector<AddedToken>& tokens);

 private:
  explicit Tokenizer(std::shared_ptr<TokenizerImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<TokenizerImpl> impl_;
  friend struct TokenizerImpl;
};

// Incremental detokenizer: emits text only once it is complete UTF-8, so byte-fallback
// pieces (<0xE2><0x82><0xAC>) and byte-level fragments of one character come out together.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special_tokens = true)
      : tok_(tok), skip_special_(skip_special_tokens) {}
  // Feeds one id; returns the newly completed text (possibly empty).
  std::string step(int32_t id);
  // Returns whatever is still pending (incomplete bytes come out as U+FFFD).
  std::string flush();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  std::string prefix_;      // decode(ids_[0, prefix_index_))
  size_t prefix_index_ = 0;
};

// A tokenizer folder: tokenizer.json plus tokenizer_config.json, generation_config.json and
// chat_template.jinja when present.
struct TokenizerBundle {
  Tokenizer tokenizer;
  std::optional<std::string> bos_token, eos_token, pad_token, unk_token;
  std::optional<int32_t> bos_token_id, pad_token_id;
  std::vector<int32_t> eos_token_ids;  // generation_config eos ids, then the config's eos_token
  std::optional<bool> add_bos_token, add_eos_token;
  std::string chat_template;                              // the default template ("" if none)
  std::map<std::string, std::string> named_chat_templates;  // from a list of {name, template}
};

// Loads `dir`. Throws Error(not_found) without tokenizer.json.
TokenizerBundle load_tokenizer(const std::string& dir);

}  // namespace mlxcel
