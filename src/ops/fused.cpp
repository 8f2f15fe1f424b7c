// Fused decode ops (ops/fused.h): the composition on the CPU and for inputs the CUDA
// kernels do not take; one kernel on CUDA otherwise.
#include "ops/fused.h"

#include <cstdlib>

#include "backends/cpu/kernels.h"
#include "backends/cuda/dispatch.h"
#include "ops/ops.h"
#include "ops/ops_internal.h"

namespace mlxcel::ops {

using namespace detail;

// Up to this many rows of x the CUDA products are the fused GEMV (f32 x); more rows go to
// cuBLAS, which rounds a 16-bit weight's x to that dtype (cuda::dense_gemv_rows).
int64_t gemv_rows() {
#ifdef MLXCEL_WITH_CUDA
  return cuda::dense_gemv_rows();
#else
  return 8;
#endif
}

DType matmul_input_dtype(const Tensor& x, const Tensor& w) {
  // MLXCEL_BF16_ACTIVATIONS=0: f32 everywhere (the producers write f32, the products round).
  static const bool enabled = [] {
    const char* e = std::getenv("MLXCEL_BF16_ACTIVATIONS");
    return !(e && e[0] == '0');
  }();
  if (!enabled || !x.defined() || !w.defined() || x.ndim() < 1 || x.dim(-1) <= 0 || x.device().type != DeviceType::cuda ||
      w.dtype() != DType::bf16 || w.ndim() != 2)
    return DType::f32;
  return x.numel() / x.dim(-1) > gemv_rows() ? DType::bf16 : DType::f32;
}

std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& h, const Tensor& w, float eps,
                                       float w_offset, DType out_dtype) {
  constexpr const char* kOp = "add_rms_norm";
  if (out_dtype != DType::f32 && out_dtype != DType::bf16)
    invalid("[{}] out_dtype must be f32 or bf16, got {}", kOp, dtype_name(out_dtype));
  if (x.device().type != DeviceType::cuda) {
    Tensor sum = add(x, h);
    Tensor normed = rms_norm(sum, w, eps, w_offset);
    return {sum, out_dtype == DType::f32 ? normed : astype(normed, out_dtype)};
  }
  check_defined(kOp, x, "x");
  check_defined(kOp, h, "h");
  check_dtype(kOp, x, "x", {DType::f32});
  check_dtype(kOp, h, "h", {DType::f32});
  check_ndim_at_least(kOp, x, "x", 1);
  check_same_device(kOp, x, h, "h");
  if (x.shape() != h.shape()) invalid("[{}] shapes differ: x is {}, h is {}", kOp, x.describe(), h.describe());
  if (w.defined()) {
    check_float(kOp, w, "w");
    check_same_device(kOp, x, w, "w");
    if (w.ndim() != 1 || w.dim(0) != x.dim(-1))
      invalid("[{}] w must be [{}] (the last dimension of x), got {}", kOp, x.dim(-1), w.describe());
  }
  Tensor xc = contiguous_input(x), hc = contiguous_input(h);
  Tensor sum = Tensor::empty(x.shape(), DType::f32, x.device());
  Tensor normed = Tensor::empty(x.shape(), out_dtype, x.device());
  MLXCEL_CUDA_CALL(kOp, cuda::add_rms_norm(xc, hc, w, eps, w_offset, sum, normed));
  return {sum, normed};
}

namespace {

// The fused GEMV takes 1..8 rows of x and weights (and biases) of one dtype.
bool fusable(const Tensor& x, const std::vector<Tensor>& ws, const std::vector<Tensor>& biases) {
  if (x.device().type != DeviceType::cuda || ws.empty() || ws.size() > 3) return false;
  const int64_t K = ws[0].defined() && ws[0].ndim() == 2 ? ws[0].dim(1) : 0;
  if (K <= 0) return false;
  const int64_t M = x.numel() / K;
  if (M < 1 || M > gemv_rows()) return false;
  DType bdt = DType::u8;
  for (const Tensor& w : ws)
    if (!w.defined() || w.dtype() != ws[0].dtype()) return false;
  for (const Tensor& b : biases) {
    if (!b.defined()) continue;
    if (bdt != DType::u8 && b.dtype() != bdt) return false;
    bdt = b.dtype();
  }
  return true;
}

// Prompt-sized products on CUDA round an f32 x to bf16 for the tensor cores inside
// cuda::linear, once per product; for several products of one x with bf16 weights it is
// rounded once here instead (the same bits).
Tensor shared_input(const Tensor& x, const std::vector<Tensor>& ws) {
  if (x.device().type != DeviceType::cuda || x.dtype() != DType::f32 || ws.size() < 2) return x;
  for (const Tensor& w : ws)
    if (!w.defined() || w.dtype() != DType::bf16 || w.ndim() != 2 || w.dim(1) != x.dim(-1)) return x;
  const int64_t K = x.dim(-1);
  if (K <= 0 || x.numel() / K <= gemv_rows()) return x;
  return astype(x, DType::bf16);
}

// linear(x, w, b) computed from xs, x rounded by shared_input (or x itself).
Tensor linear_from(const char* op, const Tensor& x, const Tensor& xs, const Tensor& w, const Tensor& b) {
  if (xs.dtype() == x.dtype()) return linear(x, w, b);
  check_linear(op, x, w, b);
  Shape shape = x.shape();
  shape.back() = w.dim(0);
  Tensor out = Tensor::empty(shape, DType::f32, x.device());
  Tensor wc = contiguous_input(w), bc = b.defined() ? contiguous_input(b) : Tensor();
  MLXCEL_CUDA_CALL(op, cuda::linear(xs, wc, bc, out));
  return out;
}

// Products of a decode batch (past the GEMV, up to kAdjacentMaxRows rows) over weights that
// lie end to end in one allocation (the q/k/v of place_weights, Phi-3's split qkv_proj):
// one product, whose columns are then split into the outputs in one launch, as narrow
// weights (k, v) alone would leave most of the card idle. Empty when the weights (or the
// biases) are not adjacent, or for more rows: prompt-sized products fill the card one by
// one, and splitting a long output cost more than the join saved (H100, Llama-3.1-8B bf16
// pp2048: 33.6-34.7K tok/s apart, 32.5K joined).
constexpr int64_t kAdjacentMaxRows = 256;

std::vector<Tensor> adjacent_product(const char* op, const Tensor& x, const std::vector<Tensor>& ws,
                                     const std::vector<Tensor>& bs) {
  if (x.device().type != DeviceType::cuda || ws.size() < 2) return {};
  const Tensor w = Tensor::adjacent_rows(ws);
  if (!w.defined() || w.ndim() != 2 || w.dim(1) <= 0 || x.numel() / w.dim(1) > kAdjacentMaxRows) return {};
  bool biased = false;
  for (const Tensor& b : bs) biased = biased || b.defined();
  const Tensor b = biased ? Tensor::adjacent_rows(bs) : Tensor();
  if (biased && !b.defined()) return {};
  for (size_t i = 0; i < ws.size(); ++i) check_linear(op, x, ws[i], bs[i]);
  const Tensor y = linear(x, w, b);
  const int64_t rows = y.numel() / w.dim(0);
  std::vector<Tensor> outs, flat;
  for (const Tensor& wi : ws) {
    Shape shape = x.shape();
    shape.back() = wi.dim(0);
    outs.push_back(Tensor::empty(shape, y.dtype(), x.device()));
    flat.push_back(outs.back().reshape({rows, wi.dim(0)}));
  }
  MLXCEL_CUDA_CALL(op, cuda::split_columns(y.reshape({rows, w.dim(0)}), flat));
  return outs;
}

// The fused products' operands: contiguous weights and biases (biases checked and made
// contiguous when defined) and f32 outputs of x's shape with the weights' rows.
struct DenseOperands {
  std::vector<Tensor> ws, bs, outs;
};
DenseOperands dense_operands(const char* op, const Tensor& x, const std::vector<Tensor>& ws, std::vector<Tensor> bs) {
  DenseOperands d;
  for (size_t i = 0; i < ws.size(); ++i) {
    check_linear(op, x, ws[i], bs[i]);
    d.ws.push_back(contiguous_input(ws[i]));
    d.bs.push_back(bs[i].defined() ? contiguous_input(bs[i]) : Tensor());
    Shape shape = x.shape();
    shape.back() = ws[i].dim(0);
    d.outs.push_back(Tensor::empty(shape, DType::f32, x.device()));
  }
  return d;
}

}  // namespace

bool detail::norm_foldable(const Tensor& x, const Tensor& h, const Tensor& norm_w, int64_t K) {
  if (!x.defined() || !h.defined() || x.device().type != DeviceType::cuda) return false;
  if (x.dtype() != DType::f32 || h.dtype() != DType::f32 || x.shape() != h.shape() || h.device() != x.device())
    return false;
  if (x.ndim() < 1 || x.dim(-1) != K || x.numel() != x.dim(-1)) return false;
  if (!norm_w.defined()) return true;
  const DType d = norm_w.dtype();
  return norm_w.ndim() == 1 && norm_w.dim(0) == x.dim(-1) && norm_w.device() == x.device() &&
         (d == DType::f32 || d == DType::f16 || d == DType::bf16);
}

detail::NormFold detail::fold_inputs(const Tensor& x, const Tensor& h, const Tensor& norm_w, float eps,
                                     float w_offset) {
  return {contiguous_input(x), contiguous_input(h), norm_w.defined() ? contiguous_input(norm_w) : Tensor(),
          Tensor::empty(x.shape(), DType::f32, x.device()), eps, w_offset};
}

bool detail::dense_fold_takes([[maybe_unused]] DType wdt, [[maybe_unused]] int64_t K, [[maybe_unused]] bool rope) {
#ifdef MLXCEL_WITH_CUDA
  return cuda::linear_fold_takes(wdt, K, rope);
#else
  return false;
#endif
}

bool detail::quant_fold_takes([[maybe_unused]] int bits, [[maybe_unused]] int group_size, [[maybe_unused]] int64_t K,
                              [[maybe_unused]] bool rope) {
#ifdef MLXCEL_WITH_CUDA
  return cuda::qlinear_fold_takes(bits, group_size, K, rope);
#else
  return false;
#endif
}

#ifdef MLXCEL_WITH_CUDA
cuda::RowNorm detail::row_norm(const NormFold& f) {
  cuda::RowNorm rn;
  rn.h = f.hc.data<float>(), rn.sum = f.sum.data<float>(), rn.eps = f.eps, rn.w_offset = f.w_offset;
  if (f.wc.defined()) rn.w = f.wc.raw(), rn.w_dtype = f.wc.dtype();
  return rn;
}
#endif

std::vector<Tensor> linear_multi(const Tensor& x, const std::vector<Tensor>& ws, const std::vector<Tensor>& biases) {
  constexpr const char* kOp = "linear_multi";
  if (ws.empty() || ws.size() > 3) invalid("[{}] takes 1 to 3 weights, got {}", kOp, ws.size());
  if (!biases.empty() && biases.size() != ws.size())
    invalid("[{}] {} biases for {} weights", kOp, biases.size(), ws.size());
  std::vector<Tensor> bs = biases.empty() ? std::vector<Tensor>(ws.size()) : biases;
  std::vector<Tensor> outs;
  if (!fusable(x, ws, bs)) {
    if (auto joined = adjacent_product(kOp, x, ws, bs); !joined.empty()) return joined;
    const Tensor xs = shared_input(x, ws);
    for (size_t i = 0; i < ws.size(); ++i) outs.push_back(linear_from(kOp, x, xs, ws[i], bs[i]));
    return outs;
  }
  DenseOperands d = dense_operands(kOp, x, ws, bs);
  Tensor xc = contiguous_input(x);
  MLXCEL_CUDA_CALL(kOp, cuda::linear_multi(xc, d.ws, d.bs, d.outs));
  return d.outs;
}

Tensor linear_gated(const Tensor& x, const Tensor& gate, const Tensor& up, Activation act, const Tensor& gate_bias,
                    const Tensor& up_bias, DType out_dtype) {
  constexpr const char* kOp = "linear_gated";
  if (!fusable(x, {gate, up}, {gate_bias, up_bias}) || gate.dim(0) != up.dim(0) || up.ndim() != 2) {
    const Tensor xs = shared_input(x, {gate, up});
    return gated(linear_from(kOp, x, xs, gate, gate_bias), linear_from(kOp, x, xs, up, up_bias), act, out_dtype);
  }
  DenseOperands d = dense_operands(kOp, x, {gate, up}, {gate_bias, up_bias});
  Tensor xc = contiguous_input(x);
  MLXCEL_CUDA_CALL(kOp, cuda::linear_gated(xc, d.ws[0], d.ws[1], d.bs[0], d.bs[1], cpu::Act(act), d.outs[0]));
  return out_dtype == DType::f32 ? d.outs[0] : astype(d.outs[0], out_dtype);
}

std::pair<Tensor, std::vector<Tensor>> add_rms_norm_linear_multi(const Tensor& x, const Tensor& h, const Tensor& norm_w,
                                                                 float eps, float w_offset, const std::vector<Tensor>& ws,
                                                                 const std::vector<Tensor>& biases, RopeKvWrite* rope_kv) {
  constexpr const char* kOp = "add_rms_norm_linear_multi";
  if (rope_kv) rope_kv->done = false;
  std::vector<Tensor> bs = biases.empty() ? std::vector<Tensor>(ws.size()) : biases;
  if (!ws.empty() && ws.size() <= 3 && bs.size() == ws.size() && fusable(x, ws, bs) &&
      norm_foldable(x, h, norm_w, ws[0].dim(1)) && dense_fold_takes(ws[0].dtype(), ws[0].dim(1), false)) {
    RopeKvTarget rt;
    [[maybe_unused]] const bool roped =
        rope_kv && ws.size() == 3 && dense_fold_takes(ws[0].dtype(), ws[0].dim(1), true) &&
        rope_kv_target(*rope_kv, ws[0].dim(0), ws[1].dim(0), ws[2].dim(0), x.device(), &rt);
    DenseOperands d = dense_operands(kOp, x, ws, bs);
    const NormFold f = fold_inputs(x, h, norm_w, eps, w_offset);
    bool done = false;
    MLXCEL_CUDA_CALL(kOp, {
      const cuda::RowNorm rn = row_norm(f);
      // With the rope it is both or neither, as add_rms_norm_qlinear_multi.
      if (roped) done = cuda::linear_multi_normed(f.xc.data<float>(), rn, d.ws, d.bs, d.outs, &rt);
      if (done) rope_kv->done = true;
      else done = cuda::linear_multi_normed(f.xc.data<float>(), rn, d.ws, d.bs, d.outs);
    });
    if (done) return {f.sum, d.outs};
  }
  auto [sum, normed] = add_rms_norm(x, h, norm_w, eps, w_offset);
  return {sum, linear_multi(normed, ws, biases)};
}

std::pair<Tensor, Tensor> add_rms_norm_linear_gated(const Tensor& x, const Tensor& h, const Tensor& norm_w, float eps,
                                                    float w_offset, const Tensor& gate, const Tensor& up, Activation act,
                                                    const Tensor& gate_bias, const Tensor& up_bias, DType out_dtype) {
  constexpr const char* kOp = "add_rms_norm_linear_gated";
  if (fusable(x, {gate, up}, {gate_bias, up_bias}) && up.ndim() == 2 && gate.dim(0) == up.dim(0) &&
      norm_foldable(x, h, norm_w, gate.dim(1)) && dense_fold_takes(gate.dtype(), gate.dim(1), false)) {
    DenseOperands d = dense_operands(kOp, x, {gate, up}, {gate_bias, up_bias});
    const NormFold f = fold_inputs(x, h, norm_w, eps, w_offset);
    bool done = false;
    MLXCEL_CUDA_CALL(kOp, done = cuda::linear_gated_normed(f.xc.data<float>(), row_norm(f), d.ws[0], d.ws[1], d.bs[0],
                                                           d.bs[1], cpu::Act(act), d.outs[0]));
    if (done) return {f.sum, out_dtype == DType::f32 ? d.outs[0] : astype(d.outs[0], out_dtype)};
  }
  auto [sum, normed] = add_rms_norm(x, h, norm_w, eps, w_offset);
  return {sum, linear_gated(normed, gate, up, act, gate_bias, up_bias, out_dtype)};
}

}  // namespace mlxcel::ops
