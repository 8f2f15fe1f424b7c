// Gemma (1): Llama-like with GELU (tanh), (1 + w) norms, sqrt(d) embedding scale, MQA.
//   x = embed(ids) * sqrt(d); per layer: x += post(attn(pre(x))); x += post(mlp(pre(x)))
#include "models/layers/gemma_decoder.h"

namespace mlxcel {
namespace {

const bool registered = register_model_family("gemma", [](const ModelConfig& c, const WeightMap& w) {
  return build_gemma_decoder(c, w, GemmaGeneration::v1);
});

}  // namespace
}  // namespace mlxcel
