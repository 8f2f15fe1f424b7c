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

// One step's input. Built by the runner (engine) once per step.
struct Batch {
  Tensor token_ids;     // i32 [T]
  Tensor positions;     // i32 [T]
  AttentionContext attn;
  Tensor logit_rows;    // i32 [R]: rows of the flat batch whose logits are returned
  int64_t max_position = 0;  // max(positions) over the step (dynamic rope schemes)
};

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
  // Logits (f32 [R, vocab]) for batch.logit_rows; writes this step's K/V into cache.
  virtual Tensor forward(const Batch& batch, KvCache& cache) = 0;

 protected:
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
std::unique_ptr<Model> build_model(const ModelConfig& cfg, const WeightMap& weights);
// Loads config.json and the safetensors of a checkpoint folder and builds the model.
std::unique_ptr<Model> load_model(const std::string& dir);

}  // namespace mlxcel
