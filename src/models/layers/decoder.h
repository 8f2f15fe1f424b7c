// The shared skeleton of decoder-only transformers: embeddings, N blocks of
// (attention, MLP) with optional pre/post norms around each, a final norm and a
// head. Families fill it from their config and weight names; they differ by which
// norms exist, the attention options and a few scalars, not by flags in the loop.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "models/layers/linear.h"
#include "models/model.h"
#include "ops/ops.h"

namespace mlxcel {

enum class QkNorm { none, per_head, full };

struct Attention {
  Linear q_proj, k_proj, v_proj, o_proj;
  Norm q_norm, k_norm;           // used when qk_norm != none
  QkNorm qk_norm = QkNorm::none;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  bool use_rope = true;
  std::string rope_key;          // which RopeConfig (layer type) this layer uses
  AttentionParams params;

  // x f32 [T, hidden] -> [T, hidden]; writes this step's K/V into the layer's cache.
  Tensor operator()(const Tensor& x, const Batch& batch, const RopeParams* rope, Tensor& k_cache,
                    Tensor& v_cache) const;
  // operator() of norm(x + h), x becoming x + h: the residual add and the norm folded into
  // the q/k/v products where they allow (Linear::add_norm_apply_all).
  Tensor add_norm_then(Tensor& x, const Tensor& h, const Norm& norm, const Batch& batch, const RopeParams* rope,
                       Tensor& k_cache, Tensor& v_cache) const;
  // The dtype q/k/v read an x with these rows in (Linear::input_dtype; bf16 only if all three
  // do): the pre-attention norm writes it.
  DType input_dtype(const Tensor& x) const;

 private:
  // Everything after the q/k/v products: norms, RoPE and the cache write (unless
  // rotated_and_written: the products' launch did them), attention, o_proj.
  Tensor attend(const std::vector<Tensor>& qkv, const Batch& batch, const RopeParams* rope, Tensor& k_cache,
                Tensor& v_cache, bool rotated_and_written = false) const;
};

struct Mlp {
  bool gated = true;             // gated: down(act(gate(x)) * up(x)); plain: down(act(up(x)))
  Linear gate_proj, up_proj, down_proj;
  ops::Activation act = ops::Activation::silu;
  Tensor operator()(const Tensor& x) const;  // x f32, or bf16 where input_dtype says so
  // operator() of norm(x + h), x becoming x + h: the add and norm folded into gate/up where
  // they allow (Linear::add_norm_gated).
  Tensor add_norm_then(Tensor& x, const Tensor& h, const Norm& norm) const;
  DType input_dtype(const Tensor& x) const;  // likewise for gate and up (or up)
};

struct DecoderBlock {
  Norm pre_attn_norm, post_attn_norm, pre_ffw_norm, post_ffw_norm;  // any may be undefined
  Attention attn;
  Mlp mlp;
  float residual_scale = 1.0f;
};

class DecoderLM : public Model {
 public:
  Embedding embed_tokens;
  float embed_scale = 1.0f;
  std::vector<DecoderBlock> blocks;
  Norm final_norm;
  Linear lm_head;
  float logit_scale = 1.0f;      // logits *= logit_scale (Granite: 1 / logits_scaling)
  float final_softcap = 0.0f;    // Gemma 2

  explicit DecoderLM(const ModelConfig& cfg) { config_ = cfg; }
  // Device copies of the RoPE frequencies per rope key with the host values they hold:
  // uploaded again only when the values change (so a recorded decode step's pointers
  // stay valid for position-independent rope types).
  std::map<std::string, std::pair<std::vector<float>, Tensor>> rope_device_cache;
  // Fills kv_layers_ from the blocks; call once the blocks are built.
  void finalize();
  Tensor forward(const Batch& batch, KvCache& cache) override;
};

// ---- loading helpers shared by families -----------------------------------------
struct AttentionNames {
  std::string q = "q_proj", k = "k_proj", v = "v_proj", o = "o_proj";
  std::string q_norm = "q_norm", k_norm = "k_norm";
};

// Attention sizes and options of layer `idx` from the config, without weights.
Attention attention_defaults(const ModelConfig& cfg, int idx);
// The attention of layer `idx` with the config's defaults: GQA sizes, scale
// 1/sqrt(head_dim) (or query_pre_attn_scalar^-1/2), sliding window and rope key from
// layer_types, attention soft-cap. Loads q/k/v/o from `prefix`.
Attention load_attention(const WeightMap& w, const std::string& prefix, const ModelConfig& cfg, int idx,
                         QkNorm qk_norm = QkNorm::none, float norm_w_offset = 0.0f,
                         const AttentionNames& names = {});
// Loads q_norm/k_norm for a.qk_norm (per head: [head_dim]; full: [heads * head_dim]).
void load_qk_norms(Attention& a, const WeightMap& w, const std::string& prefix, const ModelConfig& cfg,
                   float norm_w_offset, const AttentionNames& names = {});
// gate_proj/up_proj/down_proj with cfg.hidden_act.
Mlp load_gated_mlp(const WeightMap& w, const std::string& prefix, const ModelConfig& cfg);
// The untied head, or the tied embedding when lm_head.weight is absent and the config ties them.
Linear load_lm_head(const WeightMap& w, const ModelConfig& cfg, const Embedding& embed,
                    const std::string& name = "lm_head");
// The common pre-norm block stack (Llama and its descendants): per layer
// input_layernorm -> self_attn -> post_attention_layernorm -> mlp, then model.norm and
// the head. Families adjust the returned model (scalars, rope use) before finalize().
std::unique_ptr<DecoderLM> build_pre_norm_decoder(const ModelConfig& cfg, const WeightMap& w,
                                                  QkNorm qk_norm = QkNorm::none);
// Reads a float from the family's raw config (default when absent); NaN/inf rejected.
float raw_float(const ModelConfig& cfg, const std::string& key, float dflt);

}  // namespace mlxcel
