// Llama (1, 2, 3.x; Llama 3 rope scaling comes from the config), and the families
// that are Llama with a different default: Mistral (sliding window on every layer
// when set) and Qwen 2 (q/k/v biases, read from the checkpoint).
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

// Mistral and Starcoder 2 configs carry one sliding_window for all layers, without layer_types.
ModelConfig with_uniform_window(const ModelConfig& cfg) {
  ModelConfig c = cfg;
  if (c.sliding_window > 0 && !c.raw.contains("layer_types"))
    c.layer_types.assign(c.num_hidden_layers, "sliding_attention");
  return c;
}

std::unique_ptr<Model> build_mistral(const ModelConfig& cfg, const WeightMap& w) {
  auto m = build_pre_norm_decoder(with_uniform_window(cfg), w);
  m->finalize();
  return m;
}

const bool registered = register_model_family("llama", build_llama) &&
                        register_model_family("mistral", build_mistral) &&
                        register_model_family("qwen2", build_llama);

}  // namespace
}  // namespace mlxcel
