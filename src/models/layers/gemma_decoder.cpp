#include "models/layers/gemma_decoder.h"

#include <cmath>

namespace mlxcel {
namespace {

constexpr float kGemmaNormOffset = 1.0f;

// Older Gemma configs say hidden_act "gelu" while the model always ran the tanh
// approximation (hidden_activation); transformers keeps that behaviour.
ModelConfig gemma_config(const ModelConfig& cfg) {
  ModelConfig c = cfg;
  auto it = cfg.raw.find("hidden_activation");
  if (it != cfg.raw.end() && it->is_string()) c.hidden_act = it->get<std::string>();
  if (c.hidden_act == "gelu") c.hidden_act = "gelu_pytorch_tanh";
  return c;
}

}  // namespace

std::unique_ptr<Model> build_gemma_decoder(const ModelConfig& cfg_in, const WeightMap& w, GemmaGeneration gen) {
  const ModelConfig cfg = gemma_config(cfg_in);
  auto m = std::make_unique<DecoderLM>(cfg);
  const float eps = cfg.norm_eps;
  const int64_t d = cfg.hidden_size;
  m->embed_tokens = Embedding::load(w, "model.embed_tokens", cfg, cfg.vocab_size, d);
  m->embed_scale = std::sqrt(float(d));
  const QkNorm qk = gen == GemmaGeneration::v3 ? QkNorm::per_head : QkNorm::none;
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    DecoderBlock b;
    b.pre_attn_norm = Norm::rms(w, p + ".input_layernorm", eps, kGemmaNormOffset, d);
    b.attn = load_attention(w, p + ".self_attn", cfg, i, qk, kGemmaNormOffset);
    if (gen == GemmaGeneration::v1) {
      b.pre_ffw_norm = Norm::rms(w, p + ".post_attention_layernorm", eps, kGemmaNormOffset, d);
    } else {
      b.post_attn_norm = Norm::rms(w, p + ".post_attention_layernorm", eps, kGemmaNormOffset, d);
      b.pre_ffw_norm = Norm::rms(w, p + ".pre_feedforward_layernorm", eps, kGemmaNormOffset, d);
      b.post_ffw_norm = Norm::rms(w, p + ".post_feedforward_layernorm", eps, kGemmaNormOffset, d);
    }
    b.mlp = load_gated_mlp(w, p + ".mlp", cfg);
    m->blocks.push_back(std::move(b));
  }
  m->final_norm = Norm::rms(w, "model.norm", eps, kGemmaNormOffset, d);
  m->lm_head = load_lm_head(w, cfg, m->embed_tokens);
  m->final_softcap = cfg.final_logit_softcapping;
  m->finalize();
  return m;
}

}  // namespace mlxcel
