// Granite: Llama with four scalars: embeddings *= embedding_multiplier, attention
// scale = attention_multiplier, each residual branch *= residual_multiplier,
// logits /= logits_scaling.
#include <cmath>

#include "base/error.h"
#include "models/layers/decoder.h"

namespace mlxcel {
namespace {

std::unique_ptr<Model> build_granite(const ModelConfig& cfg, const WeightMap& w) {
  auto m = build_pre_norm_decoder(cfg, w);
  m->embed_scale = raw_float(cfg, "embedding_multiplier", 1.0f);
  const float attn_mult = raw_float(cfg, "attention_multiplier", 1.0f / std::sqrt(float(cfg.head_dim)));
  const float residual = raw_float(cfg, "residual_multiplier", 1.0f);
  for (auto& b : m->blocks) {
    b.attn.params.scale = attn_mult;
    b.residual_scale = residual;
  }
  const float logits_scaling = raw_float(cfg, "logits_scaling", 1.0f);
  if (logits_scaling == 0.0f) invalid("config.json: logits_scaling must not be 0");
  m->logit_scale = 1.0f / logits_scaling;
  m->finalize();
  return m;
}

const bool registered = register_model_family("granite", build_granite);

}  // namespace
}  // namespace mlxcel
