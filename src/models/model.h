// Model: a decoder-only language model behind one forward that takes a ragged batch
// (the new tokens of many sequences, flattened) and a paged KV cache, and returns
// the logits of the rows that need them. Prefill, decode and mixed steps are the
// same call (DESIGN.md §2).
//
//   auto model = load_model("/models/qwen3");           // registry picks the family
//   KvCache cache = model->make_cache(n_blocks, 16);
//   Tensor logits = model->forward(batch, cache);        // f32 [n_logit_rows, vocab]
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "loader/config.h"
#include "loader/weights.h"
#include "ops/attention.h"
#include "tensor/tensor.h"

namespace mlxcel {

struct GgufLoadOptions;  // loader/gguf_model.h

// One step's input. Built by the runner (engine) once per step.
struct Batch {
  Tensor token_ids;     // i32 [T]
  Tensor positions;     // i32 [T]
  AttentionContext attn;
  Tensor logit_rows;    // i32 [R]: rows of the flat batch whose logits are returned
  int64_t max_position = 0;  // max(positions) over the step (dynamic rope schemes)
};

// The batch with token_ids, positions and logit_rows on `device`. The attention context
// stays on the host, where the ops validate it; for a device other than the CPU its
// *_device copies are filled, so the kernels need not upload it at every layer.
Batch batch_on(const Batch& batch, Device device);

// KV storage for every layer: k[i] [n_blocks, block_size, n_kv_heads, head_dim].
struct KvCache {
  std::vector<Tensor> k, v;
  int n_blocks = 0;
  int block_size = 0;
};

// What one layer's cache looks like.
struct KvLayerSpec {
  int n_kv_heads = 0;
  int head_dim = 0;
  int v_head_dim = 0;
  int sliding_window = 0;  // 0: full attention
};

class Model {
 public:
  virtual ~Model() = default;

  const ModelConfig& config() const { return config_; }
  const std::vector<KvLayerSpec>& kv_layers() const { return kv_layers_; }
  Device device() const { return device_; }

  // A zero-initialized cache of n_blocks blocks of block_size tokens for every layer.
  KvCache make_cache(int n_blocks, int block_size, DType dtype = DType::f32) const;
  // Logits (f32 [R, vocab], on device()) for batch.logit_rows; writes this step's K/V
  // into cache. The batch's tensors may live on the host: they are uploaded as needed.
  virtual Tensor forward(const Batch& batch, KvCache& cache) = 0;
  // forward() with the logits copied to the host (what samplers read).
  Tensor forward_to_host(const Batch& batch, KvCache& cache);

 protected:
  friend std::unique_ptr<Model> build_model(const ModelConfig& cfg, const WeightMap& weights);
  ModelConfig config_;
  std::vector<KvLayerSpec> kv_layers_;
  Device device_ = Device::cpu();
};

// ---- registry -------------------------------------------------------------------
using ModelBuilder = std::function<std::unique_ptr<Model>(const ModelConfig&, const WeightMap&)>;

// Called from each family file at static-initialization time.
bool register_model_family(const std::string& model_type, ModelBuilder builder);
// Sorted list of registered model types.
std::vector<std::string> supported_model_types();
// Builds the family for cfg.model_type; unknown types fail listing the supported ones.
// The model runs where its weights are (all on one device).
std::unique_ptr<Model> build_model(const ModelConfig& cfg, const WeightMap& weights);
// Moves every tensor of w to `device` (a no-op for the CPU). GGUF Q8_0/Q4_0 blocks,
// which only the CPU kernels read packed, become the equivalent MLX affine weights
// (8/4 bits, groups of 32, f16 scales and biases: bit-exact) on the way.
void place_weights(WeightMap& w, Device device);
// The GGUF half of place_weights, for any device: every "<prefix>.gguf_type" weight
// becomes "<prefix>.weight/.scales/.biases" in MLX affine form (the marker stays, so
// Linear::load knows bits and group size).
void transcode_gguf_blocks(WeightMap& w);
// How a GGUF file is loaded for `device` (then place_weights): affine_4bit off the CPU
// (Q4_1 / Q4_K as exact MLX affine 4-bit).
GgufLoadOptions gguf_load_options(Device device);
// Loads config.json and the safetensors of a checkpoint folder (or a GGUF file) and
// builds the model on `device`.
std::unique_ptr<Model> load_model(const std::string& dir, Device device = Device::cpu());
// "cpu", "cuda", "cuda:N" or "auto" (CUDA GPU 0 when this build has the CUDA backend and
// a GPU is present, else the CPU). Unknown names and CUDA without a GPU or without the
// backend fail with a clear error.
Device parse_device(const std::string& name);

}  // namespace mlxcel
