// Qwen 3: Llama with RMSNorm on each head's queries and keys before RoPE.
#include "base/error.h"
#include "models/layers/decoder.h"

namespace mlxcel {
namespace {

std::unique_ptr<Model> build_qwen3(const ModelConfig& cfg, const WeightMap& w) {
  auto m = build_pre_norm_decoder(cfg, w, QkNorm::per_head);
  m->finalize();
  return m;
}

const bool registered = register_model_family("qwen3", build_qwen3);

}  // namespace
}  // namespace mlxcel
