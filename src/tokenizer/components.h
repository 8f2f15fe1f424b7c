// The pipeline stages of a Hugging Face tokenizer.json, each built from its JSON object:
// normalizer -> pre-tokenizer -> model -> post-processor, and the decoder for the way back.
// Offsets are tracked only when asked for (NormText::track).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

#include <nlohmann/json_fwd.hpp>

namespace mlxcel {

// A byte range [b, e) of the original input.
struct Span {
  uint32_t b = 0, e = 0;
};

// Text on its way through the normalizer and pre-tokenizer. With `track` on, align[i] is the
// span of the original input that byte i of `text` came from (HF NormalizedString
// alignments: every byte of an output character carries its source character's span);
// with it off, `align` stays empty and costs nothing.
struct NormText {
  std::string text;
  std::vector<Span> align;
  bool track = false;

  // The original span of text bytes [b, e) (HF: start of byte b to end of byte e - 1).
  Span span(size_t b, size_t e) const {
    if (!track || align.empty()) return {};
    if (b >= align.size()) return {align.back().e, align.back().e};
    if (e <= b) return {align[b].b, align[b].b};
    return {align[b].b, align[std::min(e, align.size()) - 1].e};
  }
  // A copy of bytes [b, e).
  NormText slice(size_t b, size_t e) const {
    NormText t;
    t.track = track;
    t.text = text.substr(b, e - b);
    if (track) t.align.assign(align.begin() + static_cast<long>(b), align.begin() + static_cast<long>(e));
    return t;
  }
};

// Accumulates a new NormText piece by piece.
class NormBuilder {
 public:
  explicit NormBuilder(bool track, size_t reserve = 0) {
    out_.track = track;
    out_.text.reserve(reserve);
    if (track) out_.align.reserve(reserve);
  }
  void add(std::string_view piece, Span src) {
    out_.text.append(piece);
    if (out_.track) out_.align.insert(out_.align.end(), piece.size(), src);
  }
  // Bytes [b, e) of `t`, alignment kept.
  void copy(const NormText& t, size_t b, size_t e) {
    out_.text.append(t.text, b, e - b);
    if (out_.track) out_.align.insert(out_.align.end(), t.align.begin() + static_cast<long>(b), t.align.begin() + static_cast<long>(e));
  }
  NormText finish() { return std::move(out_); }

 private:
  NormText out_;
};

// One piece of pre-tokenized text. `at_start` is true when the piece begins at offset 0 of
// the original input (Metaspace's prepend_scheme "first" depends on it).
struct PreSplit : NormText {
  bool at_start = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(NormText& t) const = 0;
  // Plain-string convenience (added-token contents).
  std::string normalize_str(std::string s) const {
    NormText t;
    t.text = std::move(s);
    normalize(t);
    return std::move(t.text);
  }
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
  // HF process_encodings: `encs` holds one encoding per input sequence (ids, tokens,
  // offsets when tracked, type_ids 0, sequence_ids i); the processor rewrites the list
  // (adding special tokens only with add_special_tokens), which is then concatenated.
  virtual void process(std::vector<Encoding>& encs, bool add_special_tokens) const = 0;
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
