#include "models/layers/decoder.h"

#include <cmath>
#include <tuple>

#include "base/error.h"
#include "ops/fused.h"

namespace mlxcel {

Tensor Attention::operator()(const Tensor& x, const Batch& batch, const RopeParams* rope, Tensor& k_cache,
                             Tensor& v_cache) const {
  return attend(Linear::apply_all(x, {&q_proj, &k_proj, &v_proj}), batch, rope, k_cache, v_cache);
}

Tensor Attention::add_norm_then(Tensor& x, const Tensor& h, const Norm& norm, const Batch& batch,
                                const RopeParams* rope, Tensor& k_cache, Tensor& v_cache) const {
  // One decode row of a model without q/k norms: the q/k/v launch may also take the RoPE
  // and the cache write (ops::RopeKvWrite).
  ops::RopeKvWrite rw;
  const bool try_rope = use_rope && rope && qk_norm == QkNorm::none && x.dim(0) == 1;
  if (try_rope) {
    rw.positions = &batch.positions, rw.rope = rope, rw.k_cache = &k_cache, rw.v_cache = &v_cache;
    rw.ctx = &batch.attn, rw.head_dim = head_dim;
  }
  auto [sum, qkv] =
      Linear::add_norm_apply_all(x, h, norm, {&q_proj, &k_proj, &v_proj}, input_dtype(x), try_rope ? &rw : nullptr);
  x = sum;
  return attend(qkv, batch, rope, k_cache, v_cache, rw.done);
}

Tensor Attention::attend(const std::vector<Tensor>& qkv, const Batch& batch, const RopeParams* rope,
                         Tensor& k_cache, Tensor& v_cache, bool rotated_and_written) const {
  const int64_t T = qkv[0].dim(0);
  if (rotated_and_written) {
    Tensor o = ops::paged_attention(qkv[0].reshape({T, n_heads, head_dim}), k_cache, v_cache, batch.attn, params);
    return o_proj(o.reshape({T, -1}));
  }
  Tensor q = qkv[0];  // [T, H*D]
  Tensor k = qkv[1];  // [T, Hkv*D]
  Tensor v = qkv[2];  // [T, Hkv*D]
  if (qk_norm == QkNorm::full) {
    q = q_norm(q);
    k = k_norm(k);
  }
  q = q.reshape({T, n_heads, head_dim});
  k = k.reshape({T, n_kv_heads, head_dim});
  v = v.reshape({T, n_kv_heads, -1});
  if (qk_norm == QkNorm::per_head) {
    q = q_norm(q);
    k = k_norm(k);
  }
  if (use_rope && rope) q = ops::rope_kv_write(q, k, v, batch.positions, *rope, k_cache, v_cache, batch.attn);
  else ops::kv_cache_write(k_cache, v_cache, k, v, batch.attn);
  Tensor o = ops::paged_attention(q, k_cache, v_cache, batch.attn, params);  // [T, H, Dv]
  return o_proj(o.reshape({T, -1}));
}

DType Attention::input_dtype(const Tensor& x) const {
  const DType t = q_proj.input_dtype(x);
  return k_proj.input_dtype(x) == t && v_proj.input_dtype(x) == t ? t : DType::f32;
}

Tensor Mlp::operator()(const Tensor& x) const {
  if (gated) return down_proj(Linear::gated(x, gate_proj, up_proj, act, down_proj.input_dtype(x)));
  return down_proj(ops::activate(up_proj(x), act));
}

Tensor Mlp::add_norm_then(Tensor& x, const Tensor& h, const Norm& norm) const {
  if (!gated) {
    auto [sum, normed] = norm.add_then(x, h, input_dtype(x));
    x = sum;
    return (*this)(normed);
  }
  auto [sum, g] = Linear::add_norm_gated(x, h, norm, gate_proj, up_proj, act, input_dtype(x), down_proj.input_dtype(x));
  x = sum;
  return down_proj(g);
}

DType Mlp::input_dtype(const Tensor& x) const {
  if (!gated) return up_proj.input_dtype(x);
  const DType t = gate_proj.input_dtype(x);
  return up_proj.input_dtype(x) == t ? t : DType::f32;
}

void DecoderLM::finalize() {
  kv_layers_.clear();
  for (const auto& b : blocks) {
    KvLayerSpec s;
    s.n_kv_heads = b.attn.n_kv_heads;
    s.head_dim = b.attn.head_dim;
    s.v_head_dim = int(b.attn.v_proj.out_features() / b.attn.n_kv_heads);
    s.sliding_window = b.attn.params.sliding_window;
    kv_layers_.push_back(s);
  }
}

Tensor DecoderLM::forward(const Batch& batch, KvCache& cache) {
  if (cache.k.size() != blocks.size()) invalid("forward: cache has {} layers, model has {}", cache.k.size(), blocks.size());
  if (batch.token_ids.device() != device_) {
    // Logits for every row in order (decode steps): no row gather (on a device it would
    // also wait for the step to finish before the head is queued), and no upload of rows.
    const Tensor& rows = batch.logit_rows;
    bool identity = rows.defined() && rows.device().type == DeviceType::cpu && rows.numel() > 0 &&
                    rows.numel() == batch.token_ids.numel();
    for (int64_t i = 0; identity && i < rows.numel(); ++i) identity = rows.data<int32_t>()[i] == i;
    if (!identity) return forward(batch_on(batch, device_), cache);
    Batch all_rows = batch;
    all_rows.logit_rows = Tensor();
    return forward(batch_on(all_rows, device_), cache);
  }
  Tensor x = embed_tokens(batch.token_ids);  // [T, hidden]
  if (embed_scale != 1.0f) x = ops::scale(x, embed_scale);

  // One set of rope frequencies per layer type for this step.
  std::map<std::string, RopeParams> ropes;
  for (const auto& b : blocks) {
    if (!b.attn.use_rope || ropes.count(b.attn.rope_key)) continue;
    RopeParams& r = ropes[b.attn.rope_key] = rope_frequencies(config_.rope_for(b.attn.rope_key), batch.max_position + 1);
    if (device_.type != DeviceType::cpu) {
      auto& [values, dev] = rope_device_cache[b.attn.rope_key];
      std::vector<float> host = r.inv_freq.to_f32_vector();
      if (!dev.defined() || values != host) {
        values = std::move(host);
        dev = ops::to_device(r.inv_freq, device_);
      }
      r.inv_freq_device = dev;
    }
  }

  // Each residual add is fused with the norm that follows it (Norm::add_then); `pending`
  // is the branch output not yet added to x.
  Tensor pending;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const DecoderBlock& b = blocks[i];
    const RopeParams* rope = b.attn.use_rope ? &ropes.at(b.attn.rope_key) : nullptr;
    Tensor h;
    // The normed halves go out in the dtype the next products read (bf16 for prompt-sized
    // CUDA products of bf16 weights): no separate rounding pass. For one row of
    // MLX-quantized weights on CUDA the add and the norm run inside the products' launch.
    if (pending.defined()) {
      h = b.attn.add_norm_then(x, pending, b.pre_attn_norm, batch, rope, cache.k[i], cache.v[i]);
    } else {
      h = b.pre_attn_norm.defined() ? b.pre_attn_norm(x) : x;
      h = b.attn(h, batch, rope, cache.k[i], cache.v[i]);
    }
    if (b.post_attn_norm.defined()) h = b.post_attn_norm(h);
    if (b.residual_scale != 1.0f) h = ops::scale(h, b.residual_scale);
    h = b.mlp.add_norm_then(x, h, b.pre_ffw_norm);
    if (b.post_ffw_norm.defined()) h = b.post_ffw_norm(h);
    if (b.residual_scale != 1.0f) h = ops::scale(h, b.residual_scale);
    pending = h;
  }
  if (batch.logit_rows.defined()) {
    // A step that only advances prompt chunks wants no logits.
    if (batch.logit_rows.numel() == 0) return ops::zeros({0, int64_t(config_.vocab_size)}, DType::f32, x.device());
    if (pending.defined()) x = ops::add(x, pending);
    x = final_norm(ops::take_rows(x, batch.logit_rows));
  } else if (pending.defined()) {
    x = final_norm.add_then(x, pending).second;
  } else {
    x = final_norm(x);
  }
  Tensor logits = lm_head(x);
  if (logit_scale != 1.0f) logits = ops::scale(logits, logit_scale);
  if (final_softcap > 0.0f) logits = ops::softcap(logits, final_softcap);
  return logits;
}

std::unique_ptr<DecoderLM> build_pre_norm_decoder(const ModelConfig& cfg, const WeightMap& w, QkNorm qk_norm) {
  auto m = std::make_unique<DecoderLM>(cfg);
  m->embed_tokens = Embedding::load(w, "model.embed_tokens", cfg, cfg.vocab_size, cfg.hidden_size);
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    DecoderBlock b;
    b.pre_attn_norm = Norm::rms(w, p + ".input_layernorm", cfg.norm_eps, 0.0f, cfg.hidden_size);
    b.attn = load_attention(w, p + ".self_attn", cfg, i, qk_norm);
    b.pre_ffw_norm = Norm::rms(w, p + ".post_attention_layernorm", cfg.norm_eps, 0.0f, cfg.hidden_size);
    b.mlp = load_gated_mlp(w, p + ".mlp", cfg);
    m->blocks.push_back(std::move(b));
  }
  m->final_norm = Norm::rms(w, "model.norm", cfg.norm_eps, 0.0f, cfg.hidden_size);
  m->lm_head = load_lm_head(w, cfg, m->embed_tokens);
  return m;
}

float raw_float(const ModelConfig& cfg, const std::string& key, float dflt) {
  auto it = cfg.raw.find(key);
  if (it == cfg.raw.end() || it->is_null()) return dflt;
  if (!it->is_number()) invalid("config.json: {} must be a number", key);
  double v = it->get<double>();
  if (!std::isfinite(v)) invalid("config.json: {} is not finite", key);
  return float(v);
}

Attention attention_defaults(const ModelConfig& cfg, int idx) {
  Attention a;
  a.n_heads = cfg.num_attention_heads;
  a.n_kv_heads = cfg.num_key_value_heads;
  a.head_dim = cfg.head_dim;
  const std::string type = idx < int(cfg.layer_types.size()) ? cfg.layer_types[idx] : std::string("full_attention");
  a.rope_key = type;
  a.params.scale = cfg.query_pre_attn_scalar > 0 ? 1.0f / std::sqrt(cfg.query_pre_attn_scalar)
                                                 : 1.0f / std::sqrt(float(a.head_dim));
  a.params.sliding_window = type == "sliding_attention" ? cfg.sliding_window : 0;
  a.params.softcap = cfg.attn_logit_softcapping;
  a.params.causal = true;
  return a;
}

void load_qk_norms(Attention& a, const WeightMap& w, const std::string& prefix, const ModelConfig& cfg,
                   float norm_w_offset, const AttentionNames& names) {
  if (a.qk_norm == QkNorm::none) return;
  const int64_t qn = a.qk_norm == QkNorm::per_head ? a.head_dim : int64_t(a.n_heads) * a.head_dim;
  const int64_t kn = a.qk_norm == QkNorm::per_head ? a.head_dim : int64_t(a.n_kv_heads) * a.head_dim;
  a.q_norm = Norm::rms(w, prefix + "." + names.q_norm, cfg.norm_eps, norm_w_offset, qn);
  a.k_norm = Norm::rms(w, prefix + "." + names.k_norm, cfg.norm_eps, norm_w_offset, kn);
}

Attention load_attention(const WeightMap& w, const std::string& prefix, const ModelConfig& cfg, int idx,
                         QkNorm qk_norm, float norm_w_offset, const AttentionNames& names) {
  Attention a = attention_defaults(cfg, idx);
  const int64_t hidden = cfg.hidden_size;
  a.q_proj = Linear::load(w, prefix + "." + names.q, cfg, int64_t(a.n_heads) * a.head_dim, hidden);
  a.k_proj = Linear::load(w, prefix + "." + names.k, cfg, int64_t(a.n_kv_heads) * a.head_dim, hidden);
  a.v_proj = Linear::load(w, prefix + "." + names.v, cfg, 0, hidden);
  if (a.v_proj.out_features() % a.n_kv_heads != 0)
    invalid("{}: {}.{} output {} is not a multiple of {} kv heads", w.source, prefix, names.v,
            a.v_proj.out_features(), a.n_kv_heads);
  a.o_proj = Linear::load(w, prefix + "." + names.o, cfg, hidden, 0);
  a.qk_norm = qk_norm;
  load_qk_norms(a, w, prefix, cfg, norm_w_offset, names);
  return a;
}

Mlp load_gated_mlp(const WeightMap& w, const std::string& prefix, const ModelConfig& cfg) {
  Mlp m;
  m.gated = true;
  m.gate_proj = Linear::load(w, prefix + ".gate_proj", cfg, 0, cfg.hidden_size);
  m.up_proj = Linear::load(w, prefix + ".up_proj", cfg, m.gate_proj.out_features(), cfg.hidden_size);
  m.down_proj = Linear::load(w, prefix + ".down_proj", cfg, cfg.hidden_size, m.gate_proj.out_features());
  m.act = ops::parse_activation(cfg.hidden_act);
  return m;
}

Linear load_lm_head(const WeightMap& w, const ModelConfig& cfg, const Embedding& embed, const std::string& name) {
  if (w.contains(name + ".weight")) return Linear::load(w, name, cfg, cfg.vocab_size, cfg.hidden_size);
  if (!cfg.tie_word_embeddings)
    invalid("{}: missing tensor {}.weight (and tie_word_embeddings is false)", w.source, name);
  return embed.as_linear();
}

}  // namespace mlxcel
