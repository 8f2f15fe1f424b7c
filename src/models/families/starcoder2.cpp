// StarCoder 2: LayerNorm with biases, biased projections, a plain (ungated) MLP
// c_fc -> gelu -> c_proj, and a sliding window on every layer when set (the loader marks the layers).
#include "base/error.h"
#include "models/layers/decoder.h"

namespace mlxcel {
namespace {

std::unique_ptr<Model> build_starcoder2(const ModelConfig& cfg, const WeightMap& w) {
  auto m = std::make_unique<DecoderLM>(cfg);
  const int64_t d = cfg.hidden_size;
  m->embed_tokens = Embedding::load(w, "model.embed_tokens", cfg, cfg.vocab_size, d);
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    DecoderBlock b;
    b.pre_attn_norm = Norm::layer(w, p + ".input_layernorm", cfg.norm_eps, d);
    b.attn = load_attention(w, p + ".self_attn", cfg, i);
    b.pre_ffw_norm = Norm::layer(w, p + ".post_attention_layernorm", cfg.norm_eps, d);
    b.mlp.gated = false;
    b.mlp.up_proj = Linear::load(w, p + ".mlp.c_fc", cfg, 0, d);
    b.mlp.down_proj = Linear::load(w, p + ".mlp.c_proj", cfg, d, b.mlp.up_proj.out_features());
    b.mlp.act = ops::parse_activation(cfg.hidden_act);
    m->blocks.push_back(std::move(b));
  }
  m->final_norm = Norm::layer(w, "model.norm", cfg.norm_eps, d);
  m->lm_head = load_lm_head(w, cfg, m->embed_tokens);
  m->finalize();
  return m;
}

const bool registered = register_model_family("starcoder2", build_starcoder2);

}  // namespace
}  // namespace mlxcel
