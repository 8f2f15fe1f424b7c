// The pipeline stages of a Hugging Face tokenizer.json, each built from its JSON object:
// normalizer -> pre-tokenizer -> model -> post-processor, and the decoder for the way back.
// Only token ids are tracked (no offsets), which is all generation needs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace mlxcel {

// One piece of pre-tokenized text. `at_start` is true when the piece begins at offset 0 of
// the original input (Metaspace's prepend_scheme "first" depends on it).
struct PreSplit {
  std::string text;
  bool at_start = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& s) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `splits` with the finer split; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<PreSplit>& splits) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Transforms the token strings; the caller concatenates the result.
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens of a single sequence (called only with add_special_tokens).
  virtual void process(std::vector<int32_t>& ids) const = 0;
};

// Builders: `j` is the component's JSON object (never null here). Unknown types and bad
// fields throw Error(invalid_request / unsupported) naming the component.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j);
// `token_to_id` resolves token strings named by the processor (Bert/Roberta give ids).
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j);

// Building blocks reused by the GGUF vocabulary path.
std::unique_ptr<PreTokenizer> make_regex_split(const std::string& pattern);  // Isolated
std::unique_ptr<PreTokenizer> make_byte_level(bool add_prefix_space, bool use_regex);
std::unique_ptr<PreTokenizer> make_pre_sequence(std::vector<std::unique_ptr<PreTokenizer>> parts);
std::unique_ptr<Normalizer> make_prepend(const std::string& prefix);
std::unique_ptr<Normalizer> make_replace(const std::string& from, const std::string& to);
std::unique_ptr<Normalizer> make_norm_sequence(std::vector<std::unique_ptr<Normalizer>> parts);
std::unique_ptr<Decoder> make_byte_level_decoder();
std::unique_ptr<Decoder> make_spm_decoder(bool strip_leading_space);

}  // namespace mlxcel
