// Linear and Embedding layers that hold dense or MLX-quantized storage and dispatch
// to the right op; families never look at the weight format (DESIGN.md §2.4).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "loader/config.h"
#include "loader/weights.h"
#include "ops/ops.h"
#include "ops/quant.h"
#include "tensor/tensor.h"

namespace mlxcel {

namespace ops {
struct RopeKvWrite;
}
class Norm;

class Linear {
 public:
  Linear() = default;
  // Loads `prefix`.weight (+ .scales/.biases when quantized, + .bias when present).
  // Quantized storage is recognised by the presence of `prefix`.scales; its spec comes
  // from cfg.quantization. `expect_out`/`expect_in` (when > 0) are checked.
  static Linear load(const WeightMap& w, const std::string& prefix, const ModelConfig& cfg,
                     int64_t expect_out = 0, int64_t expect_in = 0);
  static std::optional<Linear> load_optional(const WeightMap& w, const std::string& prefix,
                                             const ModelConfig& cfg, int64_t expect_out = 0,
                                             int64_t expect_in = 0);
  // A Linear over output rows [begin, end) of this one (weight surgery for fused
  // projections such as Phi-3's qkv_proj). Shares storage.
  Linear rows(int64_t begin, int64_t end) const;

  Tensor operator()(const Tensor& x) const;  // [..., in] -> [..., out]
  // Several projections of one x (q/k/v): {ls[0](x), ls[1](x), ...}, through one fused op
  // when their storage is alike (all dense of one dtype, or all MLX-quantized of one spec).
  static std::vector<Tensor> apply_all(const Tensor& x, const std::vector<const Linear*>& ls);
  // act(gate(x)) * up(x), fused likewise; in out_dtype where dense weights allow (else f32).
  static Tensor gated(const Tensor& x, const Linear& gate, const Linear& up, ops::Activation act,
                      DType out_dtype = DType::f32);
  // {x + h, apply_all(norm(x + h), ls)}: a residual add, the norm after it and the products
  // of the normed rows, as one launch where they allow (MLX-quantized weights behind an
  // RMSNorm, one row on CUDA: ops::add_rms_norm_qlinear_multi); else norm.add_then (its
  // normed half in norm_dtype), then apply_all. rope_kv (ls = q, k, v): the launch may also
  // take the step's RoPE and cache write (ops::RopeKvWrite; rope_kv->done says whether it did).
  static std::pair<Tensor, std::vector<Tensor>> add_norm_apply_all(const Tensor& x, const Tensor& h, const Norm& norm,
                                                                   const std::vector<const Linear*>& ls,
                                                                   DType norm_dtype,
                                                                   ops::RopeKvWrite* rope_kv = nullptr);
  // {x + h, gated(norm(x + h), gate, up, act, out_dtype)} likewise (ops::add_rms_norm_qlinear_gated).
  static std::pair<Tensor, Tensor> add_norm_gated(const Tensor& x, const Tensor& h, const Norm& norm,
                                                  const Linear& gate, const Linear& up, ops::Activation act,
                                                  DType norm_dtype, DType out_dtype);
  // The dtype this layer's product reads an input with x's rows in (ops::matmul_input_dtype):
  // what its producer may write directly.
  DType input_dtype(const Tensor& x) const;
  int64_t out_features() const;
  int64_t in_features() const;
  bool quantized() const { return qweight_.has_value(); }
  const std::string& name() const { return name_; }

 private:
  friend class Embedding;
  std::string name_;
  Tensor weight_;                           // [out, in] when dense
  std::optional<QuantizedWeight> qweight_;  // when quantized
  Tensor bias_;                             // [out] or undefined
};

class Embedding {
 public:
  Embedding() = default;
  static Embedding load(const WeightMap& w, const std::string& prefix, const ModelConfig& cfg,
                        int64_t expect_vocab = 0, int64_t expect_dim = 0);
  Tensor operator()(const Tensor& ids) const;  // i32 [T] -> f32 [T, dim]
  // The same storage as an output projection (tied word embeddings).
  Linear as_linear() const;
  int64_t vocab() const;
  int64_t dim() const;

 private:
  Linear table_;  // reuses Linear's dense-or-quantized storage, [vocab, dim]
};

// RMSNorm (optionally with Gemma's 1 + w) or LayerNorm with optional bias.
class Norm {
 public:
  enum class Kind { rms, layer };
  Norm() = default;
  static Norm rms(const WeightMap& w, const std::string& prefix, float eps, float w_offset = 0.0f,
                  int64_t expect_dim = 0);
  static Norm layer(const WeightMap& w, const std::string& prefix, float eps, int64_t expect_dim = 0);
  Tensor operator()(const Tensor& x) const;
  // {x + h, norm(x + h)}: a residual add and the norm after it (one kernel for RMSNorm on
  // CUDA). An undefined norm gives {x + h, x + h}.
  // out_dtype: the dtype of the normed half where RMSNorm computes it (f32 or bf16).
  std::pair<Tensor, Tensor> add_then(const Tensor& x, const Tensor& h, DType out_dtype = DType::f32) const;
  bool defined() const { return weight_.defined(); }

 private:
  friend class Linear;  // add_norm_apply_all / add_norm_gated fold an RMSNorm into the products
  Kind kind_ = Kind::rms;
  Tensor weight_, bias_;
  float eps_ = 1e-6f;
  float w_offset_ = 0.0f;
};

}  // namespace mlxcel
