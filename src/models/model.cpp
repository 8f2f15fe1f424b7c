#include "models/model.h"

#include <algorithm>
#include <map>
#include <mutex>

#include "base/error.h"
#include "loader/gguf_model.h"
#include "ops/ops.h"

namespace mlxcel {

KvCache Model::make_cache(int n_blocks, int block_size, DType dtype) const {
  if (n_blocks <= 0 || block_size <= 0) invalid("make_cache: n_blocks and block_size must be positive");
  KvCache c;
  c.n_blocks = n_blocks;
  c.block_size = block_size;
  for (const auto& l : kv_layers_) {
    c.k.push_back(ops::zeros({n_blocks, block_size, l.n_kv_heads, l.head_dim}, dtype, device_));
    c.v.push_back(ops::zeros({n_blocks, block_size, l.n_kv_heads, l.v_head_dim}, dtype, device_));
  }
  return c;
}

namespace {
std::map<std::string, ModelBuilder>& registry() {
  static std::map<std::string, ModelBuilder> r;
  return r;
}
std::mutex& registry_mu() {
  static std::mutex mu;
  return mu;
}
}  // namespace

bool register_model_family(const std::string& model_type, ModelBuilder builder) {
  std::lock_guard<std::mutex> lk(registry_mu());
  registry()[model_type] = std::move(builder);
  return true;
}

std::vector<std::string> supported_model_types() {
  std::lock_guard<std::mutex> lk(registry_mu());
  std::vector<std::string> out;
  for (const auto& [k, _] : registry()) out.push_back(k);
  return out;
}

std::unique_ptr<Model> build_model(const ModelConfig& cfg, const WeightMap& weights) {
  ModelBuilder b;
  {
    std::lock_guard<std::mutex> lk(registry_mu());
    auto it = registry().find(cfg.model_type);
    if (it != registry().end()) b = it->second;
  }
  if (!b) {
    auto types = supported_model_types();
    std::string list;
    for (const auto& t : types) list += (list.empty() ? "" : ", ") + t;
    unsupported("unsupported model_type '{}'; supported: {}", cfg.model_type, list);
  }
  return b(cfg, weights);
}

std::unique_ptr<Model> load_model(const std::string& dir) {
  if (std::string gguf = gguf_model_file(dir); !gguf.empty()) {  // metadata -> config, HF tensor names
    GgufCheckpoint ck = load_gguf_checkpoint(gguf);
    return build_model(ck.config, ck.weights);
  }
  ModelConfig cfg = load_model_config(dir + "/config.json");
  WeightMap weights = load_checkpoint_weights(dir);
  return build_model(cfg, weights);
}

}  // namespace mlxcel
