// GGUF checkpoints as mlxcel models: the metadata as a Hugging Face config (then the
// typed ModelConfig), the tensors under their Hugging Face names, in the layout the
// families expect.
//
//   GgufCheckpoint ck = load_gguf_checkpoint("/models/qwen3-0.6b-q8_0.gguf");
//   auto model = build_model(ck.config, ck.weights);   // models/model.h
//
// What differs between llama.cpp's layout and Hugging Face's, and is undone here:
//  - names: blk.N.attn_q -> model.layers.N.self_attn.q_proj, ... (per family:
//    gemma2/3 and olmo2 have post norms, phi3 keeps fused qkv/gate_up, starcoder2 c_fc);
//  - shapes: GGUF lists dims fastest first ([K, N]); tensors here are [N, K];
//  - the llama-arch Q/K row permutation (convert_hf_to_gguf.py LlamaModel.permute, used
//    for the llama, granite and smollm3 archs; mistral checkpoints convert to "llama"):
//    llama.cpp rotates interleaved pairs, mlxcel (like transformers) rotates halves;
//  - Gemma's norm weights, which the converter stores as w + 1;
//  - RoPE scaling that lives in tensors (rope_freqs for llama3, rope_factors_long/short
//    for phi3 longrope).
// Tensors whose format is F32/F16/BF16 are zero-copy views of the mapping; Q8_0, Q4_0, Q4_K,
// Q5_K and Q6_K linear weights stay packed when `keep_packed` (CPU kernels in
// backends/cpu/gguf_quants), and so do the linear weights of every other block format
// (Q4_1, Q5_0, Q5_1, Q2_K, Q3_K), after requantization to Q8_0 at load; without `keep_packed` (and for 1-D tensors and
// Gemma's shifted norms) they are dequantized (to `dequant_dtype`; vectors to f32).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "loader/config.h"
#include "loader/gguf.h"
#include "loader/weights.h"

namespace mlxcel {

struct GgufLoadOptions {
  // Keep the matrices of every block format packed (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K:
  // ops::qlinear with QuantFormat::gguf_*; with affine_4bit see there). Only the CPU backend
  // runs them; pass false to dequantize everything.
  bool keep_packed = true;
  // dtype of the dense copies of the block formats when not kept packed: f16 halves the memory of f32 and represents every
  // ggml block value to f16 precision (pass f32 for bit-exact dequantized values).
  DType dequant_dtype = DType::f16;
  // With keep_packed: Q4_1 and Q4_K matrices become MLX affine 4-bit weights in groups of 32
  // with f32 scales and biases (exactly the values ggml dequantizes: gguf::affine4_row)
  // instead of packed blocks (CUDA: load_model sets it for devices other than the CPU,
  // whose GGUF kernels take both as they are). The formats without an MLX form (Q5_0, Q5_1,
  // Q2_K, Q3_K, Q5_K, Q6_K) are then requantized to Q8_0.
  bool affine_4bit = false;
  // Use the exact config.json that mlxcel's writer embeds (key mlxcel.hf_config) when present.
  bool use_embedded_config = true;
};

struct GgufCheckpoint {
  std::shared_ptr<const GgufFile> file;
  ModelConfig config;
  WeightMap weights;
};

// The Hugging Face model_type for a GGUF general.architecture; "" when unsupported.
std::string gguf_arch_to_model_type(const std::string& arch);
// The GGUF architecture for a Hugging Face model_type; "" when unsupported.
std::string model_type_to_gguf_arch(const std::string& model_type);
// True when llama.cpp's converter permutes Q/K rows for this GGUF architecture.
bool gguf_arch_permutes_qk(const std::string& arch);

// Tensor names. hf_to_gguf_tensor_name returns "" for names llama.cpp has no slot for.
std::optional<std::string> gguf_to_hf_tensor_name(const std::string& model_type, const std::string& gguf_name);
std::string hf_to_gguf_tensor_name(const std::string& model_type, const std::string& hf_name);

// Reorders the rows of a [n_heads * head_dim, ...] matrix given as `rows` rows of
// `row_bytes` bytes: to_gguf applies LlamaModel.permute, !to_gguf undoes it.
void permute_qk_rows(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes, int n_heads, bool to_gguf);

// config.json equivalent of the GGUF metadata (and the rope tensors). Throws
// Error(unsupported) for an unknown architecture, Error(invalid_request) for missing or
// absurd hyperparameters.
nlohmann::json gguf_hf_config(const GgufFile& f, bool use_embedded_config = true);

// A matrix of GGUF blocks kept packed is stored as "<prefix>.weight" (u8 rows of blocks) next
// to a marker "<prefix>.gguf_type" (i32 [1], the ggml type). These name and read it.
inline constexpr const char* kGgufTypeSuffix = ".gguf_type";
bool is_gguf_type_marker(const std::string& name);
// The RoPE tensors (rope_freqs, rope_factors_long / _short), which the loader folds into
// the config instead of keeping them as weights.
bool is_gguf_rope_tensor(const std::string& name);
// The packed format of a marker: {gguf_q8_0, 8, 32}, {gguf_q4_0, 4, 32}, {gguf_q5_0, 5, 32},
// {gguf_q5_1, 5, 32}, {gguf_q5_k, 5, 32}, {gguf_q6_k, 6, 16}, {gguf_q3_k, 3, 16}, {gguf_q2_k,
// 2, 16} (packed, CPU), {gguf_q4_k, 4, 32} and {gguf_q4_1, 4, 32} (packed blocks for the CPU,
// or MLX affine 4-bit groups of 32 where the loader wrote scales next to the words:
// affine_4bit); throws Error(invalid_request) naming `what` for any other value.
QuantSpec packed_gguf_spec(const Tensor& marker, const std::string& what);

// Opens, maps and converts a .gguf file. The returned weights keep the mapping alive.
GgufCheckpoint load_gguf_checkpoint(const std::string& path, const GgufLoadOptions& opts = {});
// The same over an already opened file (tests, fuzzing).
GgufCheckpoint gguf_checkpoint(std::shared_ptr<const GgufFile> file, const GgufLoadOptions& opts = {});

// True when `path` names a GGUF file (extension .gguf, or the GGUF magic).
bool is_gguf_path(const std::string& path);
// The GGUF file a model path stands for: the path itself when it is a GGUF file; for a
// folder without config.json, its only *.gguf (Error(invalid_request) listing them when
// there are several); "" otherwise.
std::string gguf_model_file(const std::string& path);

}  // namespace mlxcel
