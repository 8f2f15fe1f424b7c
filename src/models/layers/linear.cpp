#include "models/layers/linear.h"

#include "base/error.h"
#include "loader/gguf_model.h"
#include "ops/ops.h"

namespace mlxcel {

namespace {

void check_dim(const std::string& what, const char* which, int64_t got, int64_t want) {
  if (want > 0 && got != want) invalid("{}: {} is {}, expected {}", what, which, got, want);
}

std::string module_of(const std::string& prefix) { return prefix; }

}  // namespace

std::optional<Linear> Linear::load_optional(const WeightMap& w, const std::string& prefix,
                                            const ModelConfig& cfg, int64_t expect_out, int64_t expect_in) {
  if (!w.contains(prefix + ".weight")) return std::nullopt;
  return load(w, prefix, cfg, expect_out, expect_in);
}

Linear Linear::load(const WeightMap& w, const std::string& prefix, const ModelConfig& cfg, int64_t expect_out,
                    int64_t expect_in) {
  Linear l;
  l.name_ = prefix;
  if (const Tensor* gt = w.find(prefix + kGgufTypeSuffix)) {
    const QuantSpec packed = packed_gguf_spec(*gt, w.source + ": " + prefix);
    if (w.contains(prefix + ".scales")) {
      // Turned into MLX affine weights of the same bits, groups of 32, by place_weights.
      auto q = w.get_quantized(prefix, QuantSpec{QuantFormat::mlx_affine, packed.bits, packed.group_size});
      if (!q) invalid("{}: incomplete quantized weight {}", w.source, prefix);
      l.qweight_ = std::move(*q);
    } else {
      // Kept packed (loader/gguf_model.h): u8 [N, row bytes].
      if (packed.format == QuantFormat::mlx_affine) invalid("{}: {} has no scales", w.source, prefix);
      QuantizedWeight q;
      q.packed = w.get(prefix + ".weight");
      q.spec = packed;
      ops::validate_quantized(q, w.source + ": " + prefix);
      l.qweight_ = std::move(q);
    }
  } else if (w.contains(prefix + ".scales")) {
    std::optional<QuantSpec> spec;
    if (cfg.quantization) spec = cfg.quantization->spec_for(module_of(prefix));
    if (!spec) invalid("{}: tensor {}.scales is present but config.json has no quantization for it", w.source, prefix);
    auto q = w.get_quantized(prefix, *spec);
    if (!q) invalid("{}: incomplete quantized weight {}", w.source, prefix);
    l.qweight_ = std::move(*q);
  } else {
    l.weight_ = w.get(prefix + ".weight");
    if (l.weight_.ndim() != 2) invalid("{}: {}.weight must be 2-D, got {}", w.source, prefix, l.weight_.describe());
    if (!is_floating(l.weight_.dtype()))
      invalid("{}: {}.weight has dtype {}, expected a float type", w.source, prefix, dtype_name(l.weight_.dtype()));
  }
  check_dim(w.source + ": " + prefix, "output size", l.out_features(), expect_out);
  check_dim(w.source + ": " + prefix, "input size", l.in_features(), expect_in);
  if (w.contains(prefix + ".bias")) {
    l.bias_ = w.get(prefix + ".bias");
    if (l.bias_.ndim() != 1 || l.bias_.dim(0) != l.out_features())
      invalid("{}: {}.bias has shape {}, expected [{}]", w.source, prefix, shape_str(l.bias_.shape()),
              l.out_features());
  }
  return l;
}

Linear Linear::rows(int64_t begin, int64_t end) const {
  Linear l;
  l.name_ = name_ + "[" + std::to_string(begin) + ":" + std::to_string(end) + "]";
  if (qweight_) {
    QuantizedWeight q = *qweight_;
    q.packed = q.packed.slice(0, begin, end);
    if (q.scales.defined()) q.scales = q.scales.slice(0, begin, end);  // undefined for GGUF blocks
    if (q.biases.defined()) q.biases = q.biases.slice(0, begin, end);
    l.qweight_ = std::move(q);
  } else {
    l.weight_ = weight_.slice(0, begin, end);
  }
  if (bias_.defined()) l.bias_ = bias_.slice(0, begin, end);
  return l;
}

Tensor Linear::operator()(const Tensor& x) const {
  if (qweight_) return ops::qlinear(x, *qweight_, bias_);
  return ops::linear(x, weight_, bias_);
}

std::vector<Tensor> Linear::apply_all(const Tensor& x, const std::vector<const Linear*>& ls) {
  bool dense = true, mlx = true, gguf_blocks = true;
  for (const Linear* l : ls) {
    dense = dense && !l->qweight_;
    mlx = mlx && l->qweight_ && l->qweight_->spec.format == QuantFormat::mlx_affine;
    gguf_blocks = gguf_blocks && l->qweight_ && is_gguf_format(l->qweight_->spec.format);
  }
  std::vector<Tensor> biases;
  for (const Linear* l : ls) biases.push_back(l->bias_);
  if (dense && ls.size() <= 3) {
    std::vector<Tensor> ws;
    for (const Linear* l : ls) ws.push_back(l->weight_);
    return ops::linear_multi(x, ws, biases);
  }
  if ((mlx || gguf_blocks) && ls.size() <= 3) {
    std::vector<const QuantizedWeight*> ws;
    for (const Linear* l : ls) ws.push_back(&*l->qweight_);
    return ops::qlinear_multi(x, ws, biases);
  }
  std::vector<Tensor> outs;
  for (const Linear* l : ls) outs.push_back((*l)(x));
  return outs;
}

Tensor Linear::gated(const Tensor& x, const Linear& gate, const Linear& up, ops::Activation act, DType out_dtype) {
  if (!gate.qweight_ && !up.qweight_)
    return ops::linear_gated(x, gate.weight_, up.weight_, act, gate.bias_, up.bias_, out_dtype);
  if (gate.qweight_ && up.qweight_ && gate.qweight_->spec.format == QuantFormat::mlx_affine &&
      up.qweight_->spec.format == QuantFormat::mlx_affine)
    return ops::qlinear_gated(x, *gate.qweight_, *up.qweight_, act, gate.bias_, up.bias_);
  if (gate.qweight_ && up.qweight_ && is_gguf_format(gate.qweight_->spec.format) &&
      is_gguf_format(up.qweight_->spec.format)) {
    // GGUF blocks kept packed: gate and up in one parallel region (ops::qlinear_multi).
    std::vector<Tensor> gu = ops::qlinear_multi(x, {&*gate.qweight_, &*up.qweight_}, {gate.bias_, up.bias_});
    return ops::gated(gu[0], gu[1], act);
  }
  return ops::gated(gate(x), up(x), act);
}

std::pair<Tensor, std::vector<Tensor>> Linear::add_norm_apply_all(const Tensor& x, const Tensor& h, const Norm& norm,
                                                                  const std::vector<const Linear*>& ls,
                                                                  DType norm_dtype, ops::RopeKvWrite* rope_kv) {
  const bool rms = norm.defined() && norm.kind_ == Norm::Kind::rms && !ls.empty() && ls.size() <= 3;
  // (Dense weights whose products read x in f32: the fold's own fallback is then what the
  // composition below computes.)
  bool mlx = rms, dense = rms && norm_dtype == DType::f32;
  for (const Linear* l : ls) {
    mlx = mlx && l->qweight_ && l->qweight_->spec.format == QuantFormat::mlx_affine;
    dense = dense && !l->qweight_;
  }
  std::vector<Tensor> biases;
  for (const Linear* l : ls) biases.push_back(l->bias_);
  if (mlx) {
    std::vector<const QuantizedWeight*> ws;
    for (const Linear* l : ls) ws.push_back(&*l->qweight_);
    return ops::add_rms_norm_qlinear_multi(x, h, norm.weight_, norm.eps_, norm.w_offset_, ws, biases, rope_kv);
  }
  if (dense) {
    std::vector<Tensor> ws;
    for (const Linear* l : ls) ws.push_back(l->weight_);
    return ops::add_rms_norm_linear_multi(x, h, norm.weight_, norm.eps_, norm.w_offset_, ws, biases, rope_kv);
  }
  auto [sum, normed] = norm.add_then(x, h, norm_dtype);
  return {sum, apply_all(normed, ls)};
}

std::pair<Tensor, Tensor> Linear::add_norm_gated(const Tensor& x, const Tensor& h, const Norm& norm, const Linear& gate,
                                                 const Linear& up, ops::Activation act, DType norm_dtype,
                                                 DType out_dtype) {
  if (norm.defined() && norm.kind_ == Norm::Kind::rms && gate.qweight_ && up.qweight_ &&
      gate.qweight_->spec.format == QuantFormat::mlx_affine && up.qweight_->spec.format == QuantFormat::mlx_affine)
    return ops::add_rms_norm_qlinear_gated(x, h, norm.weight_, norm.eps_, norm.w_offset_, *gate.qweight_,
                                           *up.qweight_, act, gate.bias_, up.bias_);
  if (norm.defined() && norm.kind_ == Norm::Kind::rms && !gate.qweight_ && !up.qweight_ && norm_dtype == DType::f32)
    return ops::add_rms_norm_linear_gated(x, h, norm.weight_, norm.eps_, norm.w_offset_, gate.weight_, up.weight_, act,
                                          gate.bias_, up.bias_, out_dtype);
  auto [sum, normed] = norm.add_then(x, h, norm_dtype);
  return {sum, gated(normed, gate, up, act, out_dtype)};
}

DType Linear::input_dtype(const Tensor& x) const {
  return qweight_ ? DType::f32 : ops::matmul_input_dtype(x, weight_);
}

int64_t Linear::out_features() const { return qweight_ ? qweight_->rows() : weight_.dim(0); }
int64_t Linear::in_features() const { return qweight_ ? qweight_->cols() : weight_.dim(1); }

Embedding Embedding::load(const WeightMap& w, const std::string& prefix, const ModelConfig& cfg, int64_t expect_vocab,
                          int64_t expect_dim) {
  Embedding e;
  e.table_ = Linear::load(w, prefix, cfg, expect_vocab, expect_dim);
  return e;
}

Tensor Embedding::operator()(const Tensor& ids) const {
  if (table_.qweight_) return ops::qembedding(ids, *table_.qweight_);
  return ops::embedding(ids, table_.weight_);
}

Linear Embedding::as_linear() const {
  Linear l = table_;
  l.bias_ = Tensor();
  return l;
}

int64_t Embedding::vocab() const { return table_.out_features(); }
int64_t Embedding::dim() const { return table_.in_features(); }

Norm Norm::rms(const WeightMap& w, const std::string& prefix, float eps, float w_offset, int64_t expect_dim) {
  Norm n;
  n.kind_ = Kind::rms;
  n.weight_ = w.get(prefix + ".weight");
  n.eps_ = eps;
  n.w_offset_ = w_offset;
  if (n.weight_.ndim() != 1) invalid("{}: {}.weight must be 1-D, got {}", w.source, prefix, n.weight_.describe());
  check_dim(w.source + ": " + prefix, "size", n.weight_.dim(0), expect_dim);
  return n;
}

Norm Norm::layer(const WeightMap& w, const std::string& prefix, float eps, int64_t expect_dim) {
  Norm n = rms(w, prefix, eps, 0.0f, expect_dim);
  n.kind_ = Kind::layer;
  if (w.contains(prefix + ".bias")) n.bias_ = w.get(prefix + ".bias");
  return n;
}

Tensor Norm::operator()(const Tensor& x) const {
  if (kind_ == Kind::rms) return ops::rms_norm(x, weight_, eps_, w_offset_);
  return ops::layer_norm(x, weight_, bias_, eps_);
}

std::pair<Tensor, Tensor> Norm::add_then(const Tensor& x, const Tensor& h, DType out_dtype) const {
  if (defined() && kind_ == Kind::rms) return ops::add_rms_norm(x, h, weight_, eps_, w_offset_, out_dtype);
  Tensor sum = ops::add(x, h);
  return {sum, defined() ? (*this)(sum) : sum};
}

}  // namespace mlxcel
