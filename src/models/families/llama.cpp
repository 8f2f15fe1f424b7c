// Llama (1, 2, 3.x; Llama 3 rope scaling comes from the config).
//   x = embed(ids); per layer: x += attn(rms(x)); x += mlp(rms(x)); logits = head(rms(x))
#include "base/error.h"
#include "models/layers/decoder.h"

namespace mlxcel {
namespace {

std::unique_ptr<Model> build_llama(const ModelConfig& cfg, const WeightMap& w) {
  auto m = build_pre_norm_decoder(cfg, w);
  m->finalize();
  return m;
}

const bool registered = register_model_family("llama", build_llama);

}  // namespace
}  // namespace mlxcel
