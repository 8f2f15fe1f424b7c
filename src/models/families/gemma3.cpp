// Gemma 3 (text): Gemma 2 plus per-head q/k RMSNorm and a separate RoPE for sliding layers.
//   x = embed(ids) * sqrt(d); per layer: x += post(attn(pre(x))); x += post(mlp(pre(x)))
#include "models/layers/gemma_decoder.h"

namespace mlxcel {
namespace {

const bool registered = register_model_family("gemma3_text", [](const ModelConfig& c, const WeightMap& w) {
  return build_gemma_decoder(c, w, GemmaGeneration::v3);
});

}  // namespace
}  // namespace mlxcel
