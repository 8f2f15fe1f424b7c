// OLMo 2: norms after each branch instead of before (x += norm(attn(x)); x +=
// norm(mlp(x))), and RMSNorm over the whole query and key projections.
#include "base/error.h"
#include "models/layers/decoder.h"

namespace mlxcel {
namespace {

std::unique_ptr<Model> build_olmo2(const ModelConfig& cfg, const WeightMap& w) {
  auto m = std::make_unique<DecoderLM>(cfg);
  const int64_t d = cfg.hidden_size;
  m->embed_tokens = Embedding::load(w, "model.embed_tokens", cfg, cfg.vocab_size, d);
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    DecoderBlock b;
    b.attn = load_attention(w, p + ".self_attn", cfg, i, QkNorm::full);
    b.post_attn_norm = Norm::rms(w, p + ".post_attention_layernorm", cfg.norm_eps, 0.0f, d);
    b.mlp = load_gated_mlp(w, p + ".mlp", cfg);
    b.post_ffw_norm = Norm::rms(w, p + ".post_feedforward_layernorm", cfg.norm_eps, 0.0f, d);
    m->blocks.push_back(std::move(b));
  }
  m->final_norm = Norm::rms(w, "model.norm", cfg.norm_eps, 0.0f, d);
  m->lm_head = load_lm_head(w, cfg, m->embed_tokens);
  m->finalize();
  return m;
}

const bool registered = register_model_family("olmo2", build_olmo2);

}  // namespace
}  // namespace mlxcel
