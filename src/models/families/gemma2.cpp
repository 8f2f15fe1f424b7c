// Gemma 2: sandwich norms, attention and final logit soft-caps, alternating sliding window.
//   x = embed(ids) * sqrt(d); per layer: x += post(attn(pre(x))); x += post(mlp(pre(x)))
#include "models/layers/gemma_decoder.h"

namespace mlxcel {
namespace {

const bool registered = register_model_family("gemma2", [](const ModelConfig& c, const WeightMap& w) {
  return build_gemma_decoder(c, w, GemmaGeneration::v2);
});

}  // namespace
}  // namespace mlxcel
