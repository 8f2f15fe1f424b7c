// Phi-3: Llama-shaped with fused projections (qkv_proj = [q; k; v], gate_up_proj =
// [gate; up]), split here into views at load time, and LongRoPE (from the config).
#include "base/error.h"
#include "models/layers/decoder.h"

namespace mlxcel {
namespace {

std::unique_ptr<Model> build_phi3(const ModelConfig& cfg, const WeightMap& w) {
  auto m = std::make_unique<DecoderLM>(cfg);
  const int64_t d = cfg.hidden_size;
  m->embed_tokens = Embedding::load(w, "model.embed_tokens", cfg, cfg.vocab_size, d);
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    DecoderBlock b;
    b.pre_attn_norm = Norm::rms(w, p + ".input_layernorm", cfg.norm_eps, 0.0f, d);
    Attention a = attention_defaults(cfg, i);
    const int64_t q_out = int64_t(a.n_heads) * a.head_dim, kv_out = int64_t(a.n_kv_heads) * a.head_dim;
    Linear qkv = Linear::load(w, p + ".self_attn.qkv_proj", cfg, q_out + 2 * kv_out, d);
    a.q_proj = qkv.rows(0, q_out);
    a.k_proj = qkv.rows(q_out, q_out + kv_out);
    a.v_proj = qkv.rows(q_out + kv_out, q_out + 2 * kv_out);
    a.o_proj = Linear::load(w, p + ".self_attn.o_proj", cfg, d, q_out);
    b.attn = std::move(a);
    b.pre_ffw_norm = Norm::rms(w, p + ".post_attention_layernorm", cfg.norm_eps, 0.0f, d);
    Linear gate_up = Linear::load(w, p + ".mlp.gate_up_proj", cfg, 0, d);
    if (gate_up.out_features() % 2 != 0) invalid("{}: {}.mlp.gate_up_proj has an odd output size", w.source, p);
    const int64_t inter = gate_up.out_features() / 2;
    b.mlp.gated = true;
    b.mlp.gate_proj = gate_up.rows(0, inter);
    b.mlp.up_proj = gate_up.rows(inter, 2 * inter);
    b.mlp.down_proj = Linear::load(w, p + ".mlp.down_proj", cfg, d, inter);
    b.mlp.act = ops::parse_activation(cfg.hidden_act);
    m->blocks.push_back(std::move(b));
  }
  m->final_norm = Norm::rms(w, "model.norm", cfg.norm_eps, 0.0f, d);
  m->lm_head = load_lm_head(w, cfg, m->embed_tokens);
  m->finalize();
  return m;
}

const bool registered = register_model_family("phi3", build_phi3);

}  // namespace
}  // namespace mlxcel
