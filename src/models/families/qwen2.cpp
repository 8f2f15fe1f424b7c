// Qwen 2: Llama with biases on q/k/v (read from the checkpoint when present) and,
// when use_sliding_window is set, sliding layers from max_window_layers on (config).
#include "models/layers/decoder.h"

namespace mlxcel {
namespace {

std::unique_ptr<Model> build_qwen2(const ModelConfig& cfg, const WeightMap& w) {
  auto m = build_pre_norm_decoder(cfg, w);
  m->finalize();
  return m;
}

const bool registered = register_model_family("qwen2", build_qwen2);

}  // namespace
}  // namespace mlxcel
