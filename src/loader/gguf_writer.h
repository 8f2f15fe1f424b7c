// GGUF v3 writer, and safetensors checkpoint -> GGUF conversion in llama.cpp's layout
// (`mlxcel convert --to gguf --quant f16|q8_0|q4_0|q4_1|q5_0|q5_1`).
//
//   GgufWriter w;
//   w.add_string("general.architecture", "llama");
//   w.add_tensor("token_embd.weight", {dim, vocab}, gguf::kF16, bytes);   // dims fastest first
//   w.write("out.gguf");
//
//   convert_to_gguf("/models/qwen3-0.6b", "/tmp/qwen3-q8_0.gguf", {GgufQuant::q8_0});
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "loader/gguf.h"

namespace mlxcel {

class GgufWriter {
 public:
  void add_u32(const std::string& key, uint32_t v);
  void add_i32(const std::string& key, int32_t v);
  void add_u64(const std::string& key, uint64_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_string_array(const std::string& key, const std::vector<std::string>& v);
  void add_i32_array(const std::string& key, const std::vector<int32_t>& v);
  void add_f32_array(const std::string& key, const std::vector<float>& v);
  void add_bool_array(const std::string& key, const std::vector<bool>& v);
  // `shape` in GGUF order (shape[0] fastest); `data` must hold exactly the tensor's bytes.
  void add_tensor(const std::string& name, const std::vector<int64_t>& shape, uint32_t ggml_type, std::string data);
  // general.alignment (default 32); written as a key when not 32.
  void set_alignment(uint32_t alignment);

  bool has_key(const std::string& key) const;
  size_t n_tensors() const { return tensors_.size(); }

  std::string serialize() const;
  // Atomic: writes path.tmp.<pid> and renames it over path.
  void write(const std::string& path) const;

 private:
  void begin_kv(const std::string& key, GgufType type);
  struct T {
    std::string name;
    std::vector<int64_t> shape;
    uint32_t type;
    std::string data;
  };
  std::string kv_;  // serialized key/values
  uint64_t n_kv_ = 0;
  std::vector<std::string> keys_;
  std::vector<T> tensors_;
  uint32_t alignment_ = 32;
};

enum class GgufQuant { f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1 };
// "f16" -> GgufQuant::f16; throws Error(invalid_request) listing the choices.
GgufQuant parse_gguf_quant(const std::string& s);

struct GgufConvertOptions {
  GgufQuant quant = GgufQuant::f16;
  std::string name;  // general.name ("" = the folder name)
  // Embed config.json as mlxcel.hf_config (exact round trips through mlxcel; llama.cpp
  // ignores the key).
  bool embed_hf_config = true;
};

// Reads the safetensors checkpoint in src_dir (config.json, weights, and tokenizer.json /
// tokenizer_config.json when present) and writes a GGUF file llama.cpp can load.
// Norms, biases and 1-D tensors stay F32; matrices whose rows are not a multiple of 32
// fall back to F16. Throws Error(unsupported) for a family without a GGUF architecture.
void convert_to_gguf(const std::string& src_dir, const std::string& dst_path, const GgufConvertOptions& opts);

// tokenizer.ggml.* and tokenizer.chat_template keys from a tokenizer.json (+ optional
// tokenizer_config.json text; "" when absent). Byte-level BPE becomes "gpt2" with merges;
// BPE with byte fallback (SentencePiece-style) becomes "llama" with scores from merge ranks.
// The token list is padded with "[PAD<i>]" (type unused) up to `vocab_size` (the model's
// embedding rows; llama.cpp requires them to match), as convert_hf_to_gguf.py does.
void add_tokenizer_metadata(GgufWriter& w, const std::string& tokenizer_json, const std::string& tokenizer_config_json,
                            const std::string& model_type, int64_t vocab_size = 0);

}  // namespace mlxcel
