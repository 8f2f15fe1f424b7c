// MLX affine quantization: validation, qlinear, qembedding, quantize, dequantize.
#include "ops/quant.h"

#include <fmt/format.h>

#include "backends/cpu/gguf_quants.h"
#include "backends/cpu/quantized.h"
#include "ops/fused.h"
#include "ops/gguf_quant.h"

#include <algorithm>
#include "ops/ops.h"
#include "ops/ops_internal.h"
#include "backends/cuda/dispatch.h"

namespace mlxcel {

std::string QuantSpec::describe() const { return fmt::format("mlx q{} g{}", bits, group_size); }

int64_t QuantizedWeight::cols() const {
  if (is_gguf_format(spec.format)) {
    const uint32_t t = gguf_type_of(spec.format);
    return packed.dim(1) / int64_t(gguf::block_bytes(t)) * int64_t(gguf::block_elems(t));
  }
  return packed.dim(1) * 32 / spec.bits;
}

namespace ops {

using namespace detail;

namespace {

void check_spec(const char* op, const QuantSpec& spec, const std::string& what) {
  if (spec.format != QuantFormat::mlx_affine) invalid("[{}] {}: unknown quantization format", op, what);
  const int b = spec.bits;
  if (!(b == 2 || b == 3 || b == 4 || b == 5 || b == 6 || b == 8))
    invalid("[{}] {}: bits must be 2, 3, 4, 5, 6 or 8, got {}", op, what, b);
  const int g = spec.group_size;
  if (!(g == 32 || g == 64 || g == 128)) invalid("[{}] {}: group_size must be 32, 64 or 128, got {}", op, what, g);
}

void validate(const char* op, const QuantizedWeight& w, const std::string& what) {
  check_spec(op, w.spec, what);
  if (!w.packed.defined() || !w.scales.defined() || !w.biases.defined())
    invalid("[{}] {}: packed, scales and biases must all be defined", op, what);
  if (w.packed.dtype() != DType::u32 || w.packed.ndim() != 2)
    invalid("[{}] {}: packed must be u32 [N, K * bits / 32], got {}", op, what, w.packed.describe());
  if ((w.packed.dim(1) * 32) % w.spec.bits != 0)
    invalid("[{}] {}: packed width {} is not a whole number of {}-bit values", op, what, w.packed.dim(1), w.spec.bits);
  const int64_t N = w.packed.dim(0), K = w.cols();
  if (K % w.spec.group_size != 0)
    invalid("[{}] {}: K = {} is not a multiple of group_size {}", op, what, K, w.spec.group_size);
  const Shape sshape{N, K / w.spec.group_size};
  for (const auto* t : {&w.scales, &w.biases}) {
    const char* name = t == &w.scales ? "scales" : "biases";
    check_float(op, *t, name);
    if (t->shape() != sshape)
      invalid("[{}] {}: {} must be {} for {} packed as {}, got {}", op, what, name, shape_str(sshape),
              w.packed.describe(), w.spec.describe(), t->describe());
    check_same_device(op, w.packed, *t, name);
  }
  if (w.scales.dtype() != w.biases.dtype())
    invalid("[{}] {}: scales ({}) and biases ({}) differ in dtype", op, what, dtype_name(w.scales.dtype()),
            dtype_name(w.biases.dtype()));
}

// Contiguous views of the three tensors, and the kernel's description of them.
struct Prepared {
  Tensor packed, scales, biases;
  cpu::QuantMatrix m;
};

Prepared prepare(const QuantizedWeight& w) {
  Prepared p{contiguous_input(w.packed), contiguous_input(w.scales), contiguous_input(w.biases), {}};
  p.m.packed = p.packed.data<uint32_t>();
  p.m.scales = p.scales.raw();
  p.m.biases = p.biases.raw();
  p.m.scale_dtype = p.scales.dtype();
  p.m.bits = w.spec.bits;
  p.m.group_size = w.spec.group_size;
  p.m.N = w.rows();
  p.m.K = w.cols();
  return p;
}

}  // namespace

void validate_quantized(const QuantizedWeight& w, const std::string& what) {
  if (is_gguf_format(w.spec.format)) return gguf_validate("quantized", w, what);
  validate("quantized", w, what);
}

// The checks of qlinear for an MLX affine weight.
static void check_qlinear(const char* kOp, const Tensor& x, const QuantizedWeight& w, const Tensor& bias) {
  validate(kOp, w, "w");
  check_defined(kOp, x, "x");
  check_dtype(kOp, x, "x", {DType::f32});
  check_ndim_at_least(kOp, x, "x", 1);
  if (x.dim(-1) != w.cols())
    invalid("[{}] x's last dimension {} does not match the weight's K {} ({})", kOp, x.dim(-1), w.cols(),
            w.spec.describe());
  check_same_device(kOp, x, w.packed, "w");
  if (bias.defined()) {
    check_float(kOp, bias, "bias");
    check_same_device(kOp, x, bias, "bias");
    if (bias.ndim() != 1 || bias.dim(0) != w.rows())
      invalid("[{}] bias must be [{}], got {}", kOp, w.rows(), bias.describe());
  }
}

Tensor qlinear(const Tensor& x, const QuantizedWeight& w, const Tensor& bias) {
  constexpr const char* kOp = "qlinear";
  if (is_gguf_format(w.spec.format)) return gguf_qlinear(x, w, bias);
  check_qlinear(kOp, x, w, bias);
  check_backend(kOp, x.device());
  Tensor xc = contiguous_input(x);
  Shape shape = x.shape();
  shape.back() = w.rows();
  Tensor out = Tensor::empty(shape, DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu: {
      Prepared p = prepare(w);
      Tensor b32 = bias.defined() ? astype(bias, DType::f32) : Tensor();
      const int64_t M = w.cols() ? xc.numel() / w.cols() : 0;
      cpu::qlinear(xc.data<float>(), M, p.m, b32.defined() ? b32.data<float>() : nullptr, out.data<float>());
      break;
    }
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, {
      Prepared p = prepare(w);
      Tensor b32 = bias.defined() ? astype(bias, DType::f32) : Tensor();
      const int64_t M = w.cols() ? xc.numel() / w.cols() : 0;
      cuda::qlinear(xc.data<float>(), M, p.m, b32.defined() ? b32.data<float>() : nullptr, out.data<float>());
    }); break;
  }
  return out;
}

namespace {

// The fused GEMV takes MLX weights of one spec and scale dtype, 1..8 rows of x.
bool fusable(const Tensor& x, const std::vector<const QuantizedWeight*>& ws) {
  if (x.device().type != DeviceType::cuda || ws.empty() || ws.size() > 3) return false;
  const QuantizedWeight& w0 = *ws[0];
  const int64_t K = w0.cols();
  if (K <= 0) return false;
  const int64_t M = x.numel() / K;
  if (M < 1 || M > 8) return false;
  for (const QuantizedWeight* w : ws)
    if (w->spec.format != QuantFormat::mlx_affine || w->spec.bits != w0.spec.bits ||
        w->spec.group_size != w0.spec.group_size || w->scales.dtype() != w0.scales.dtype())
      return false;
  return true;
}

Tensor bias_f32(const Tensor& b) { return b.defined() ? astype(b, DType::f32) : Tensor(); }
const float* f32_or_null(const Tensor& b) { return b.defined() ? b.data<float>() : nullptr; }

// The matrices, f32 biases and outputs of a multi-part product of x (one output of each
// weight's rows, f32, x's leading shape), as the backends take them.
struct MultiParts {
  std::vector<Prepared> ps;
  std::vector<cpu::QuantMatrix> ms;
  std::vector<Tensor> b32, outs;
  std::vector<const float*> bp;
  std::vector<float*> ys;
};
MultiParts multi_parts(const Tensor& x, const std::vector<const QuantizedWeight*>& ws,
                       const std::vector<Tensor>& biases) {
  MultiParts m;
  for (size_t i = 0; i < ws.size(); ++i) {
    m.ps.push_back(prepare(*ws[i]));
    m.ms.push_back(m.ps.back().m);
    m.b32.push_back(bias_f32(biases.empty() ? Tensor() : biases[i]));
    m.bp.push_back(f32_or_null(m.b32.back()));
    Shape shape = x.shape();
    shape.back() = ws[i]->rows();
    m.outs.push_back(Tensor::empty(shape, DType::f32, x.device()));
    m.ys.push_back(m.outs.back().data<float>());
  }
  return m;
}

}  // namespace

std::vector<Tensor> qlinear_multi(const Tensor& x, const std::vector<const QuantizedWeight*>& ws,
                                  const std::vector<Tensor>& biases) {
  constexpr const char* kOp = "qlinear_multi";
  if (ws.empty() || ws.size() > 3) invalid("[{}] takes 1 to 3 weights, got {}", kOp, ws.size());
  if (!biases.empty() && biases.size() != ws.size())
    invalid("[{}] {} biases for {} weights", kOp, biases.size(), ws.size());
  auto bias = [&](size_t i) { return biases.empty() ? Tensor() : biases[i]; };
  // GGUF blocks kept packed (CPU): one parallel region, x quantized once.
  if (x.defined() && x.device().type == DeviceType::cpu &&
      std::all_of(ws.begin(), ws.end(), [](const QuantizedWeight* w) { return w && is_gguf_format(w->spec.format); }))
    return gguf_qlinear_multi(x, ws, biases);
  std::vector<Tensor> outs;
  // MLX weights of one K on the CPU: one call (cpu::qlinear_multi: one parallel region
  // where the decode kernels allow, else a product each; the bits of separate qlinear calls).
  const bool cpu_mlx = x.defined() && x.device().type == DeviceType::cpu &&
                       std::all_of(ws.begin(), ws.end(), [&](const QuantizedWeight* w) {
                         return w && w->spec.format == QuantFormat::mlx_affine && w->cols() == ws[0]->cols();
                       });
  if (!cpu_mlx && !fusable(x, ws)) {
    for (size_t i = 0; i < ws.size(); ++i) outs.push_back(qlinear(x, *ws[i], bias(i)));
    return outs;
  }
  for (size_t i = 0; i < ws.size(); ++i) check_qlinear(kOp, x, *ws[i], bias(i));
  Tensor xc = contiguous_input(x);
  const int64_t M = ws[0]->cols() ? xc.numel() / ws[0]->cols() : 0;
  MultiParts mp = multi_parts(x, ws, biases);
  outs = mp.outs;
  auto& ms = mp.ms;
  auto& bp = mp.bp;
  auto& ys = mp.ys;
  if (cpu_mlx) {
    if (M > 0) cpu::qlinear_multi(xc.data<float>(), M, ms.data(), int(ms.size()), bp.data(), ys.data());
    return outs;
  }
  MLXCEL_CUDA_CALL(kOp, cuda::qlinear_multi(xc.data<float>(), M, ms, bp, ys));
  return outs;
}

Tensor qlinear_gated(const Tensor& x, const QuantizedWeight& gate, const QuantizedWeight& up, Activation act,
                     const Tensor& gate_bias, const Tensor& up_bias) {
  constexpr const char* kOp = "qlinear_gated";
  if (x.defined() && x.device().type == DeviceType::cpu && gate.rows() == up.rows()) {
    std::vector<Tensor> gu = qlinear_multi(x, {&gate, &up}, {gate_bias, up_bias});
    return gated(gu[0], gu[1], act);
  }
  if (!fusable(x, {&gate, &up}) || gate.rows() != up.rows())
    return gated(qlinear(x, gate, gate_bias), qlinear(x, up, up_bias), act);
  check_qlinear(kOp, x, gate, gate_bias);
  check_qlinear(kOp, x, up, up_bias);
  Tensor xc = contiguous_input(x);
  [[maybe_unused]] const int64_t M = xc.numel() / gate.cols();  // (CUDA builds)
  Prepared pg = prepare(gate), pu = prepare(up);
  Tensor bg = bias_f32(gate_bias), bu = bias_f32(up_bias);
  Shape shape = x.shape();
  shape.back() = gate.rows();
  Tensor out = Tensor::empty(shape, DType::f32, x.device());
  MLXCEL_CUDA_CALL(kOp, cuda::qlinear_gated(xc.data<float>(), M, pg.m, pu.m, f32_or_null(bg), f32_or_null(bu),
                                            cpu::Act(act), out.data<float>()));
  return out;
}

std::pair<Tensor, std::vector<Tensor>> add_rms_norm_qlinear_multi(const Tensor& x, const Tensor& h, const Tensor& norm_w,
                                                                  float eps, float w_offset,
                                                                  const std::vector<const QuantizedWeight*>& ws,
                                                                  const std::vector<Tensor>& biases,
                                                                  RopeKvWrite* rope_kv) {
  constexpr const char* kOp = "add_rms_norm_qlinear_multi";
  if (rope_kv) rope_kv->done = false;
  auto takes = [&](bool rope) {
    const QuantizedWeight& w0 = *ws[0];
    return quant_fold_takes(w0.spec.bits, w0.spec.group_size, w0.cols(), rope);
  };
  if (!ws.empty() && ws.size() <= 3 && (biases.empty() || biases.size() == ws.size()) &&
      fusable(x, ws) && norm_foldable(x, h, norm_w, ws[0]->cols()) && takes(false)) {
    auto bias = [&](size_t i) { return biases.empty() ? Tensor() : biases[i]; };
    for (size_t i = 0; i < ws.size(); ++i) check_qlinear(kOp, x, *ws[i], bias(i));
    detail::RopeKvTarget rt;
    [[maybe_unused]] const bool roped =
        rope_kv && ws.size() == 3 && takes(true) &&
        detail::rope_kv_target(*rope_kv, ws[0]->rows(), ws[1]->rows(), ws[2]->rows(), x.device(), &rt);
    const NormFold f = fold_inputs(x, h, norm_w, eps, w_offset);
    MultiParts mp = multi_parts(x, ws, biases);
    bool done = false;
    MLXCEL_CUDA_CALL(kOp, {
      const cuda::RowNorm rn = row_norm(f);
      // With the rope it is both or neither: a launch that declines the epilogue is
      // tried again without it.
      if (roped) done = cuda::qlinear_multi_normed(f.xc.data<float>(), rn, mp.ms, mp.bp, mp.ys, &rt);
      if (done) rope_kv->done = true;
      else done = cuda::qlinear_multi_normed(f.xc.data<float>(), rn, mp.ms, mp.bp, mp.ys);
    });
    if (done) return {f.sum, mp.outs};
  }
  auto [sum, normed] = add_rms_norm(x, h, norm_w, eps, w_offset);
  return {sum, qlinear_multi(normed, ws, biases)};
}

std::pair<Tensor, Tensor> add_rms_norm_qlinear_gated(const Tensor& x, const Tensor& h, const Tensor& norm_w, float eps,
                                                     float w_offset, const QuantizedWeight& gate,
                                                     const QuantizedWeight& up, Activation act,
                                                     const Tensor& gate_bias, const Tensor& up_bias) {
  constexpr const char* kOp = "add_rms_norm_qlinear_gated";
  if (gate.rows() == up.rows() && fusable(x, {&gate, &up}) && norm_foldable(x, h, norm_w, gate.cols()) &&
      quant_fold_takes(gate.spec.bits, gate.spec.group_size, gate.cols(), false)) {
    check_qlinear(kOp, x, gate, gate_bias);
    check_qlinear(kOp, x, up, up_bias);
    const NormFold f = fold_inputs(x, h, norm_w, eps, w_offset);
    Prepared pg = prepare(gate), pu = prepare(up);
    Tensor bg = bias_f32(gate_bias), bu = bias_f32(up_bias);
    Shape shape = x.shape();
    shape.back() = gate.rows();
    Tensor out = Tensor::empty(shape, DType::f32, x.device());
    bool done = false;
    MLXCEL_CUDA_CALL(kOp, done = cuda::qlinear_gated_normed(f.xc.data<float>(), row_norm(f), pg.m, pu.m,
                                                            f32_or_null(bg), f32_or_null(bu), cpu::Act(act),
                                                            out.data<float>()));
    if (done) return {f.sum, out};
  }
  auto [sum, normed] = add_rms_norm(x, h, norm_w, eps, w_offset);
  return {sum, qlinear_gated(normed, gate, up, act, gate_bias, up_bias)};
}

Tensor qembedding(const Tensor& ids, const QuantizedWeight& table) {
  constexpr const char* kOp = "qembedding";
  if (is_gguf_format(table.spec.format)) return gguf_qembedding(ids, table);
  validate(kOp, table, "table");
  check_defined(kOp, ids, "ids");
  check_dtype(kOp, ids, "ids", {DType::i32});
  if (ids.ndim() != 1) invalid("[{}] ids must be i32 [T], got {}", kOp, ids.describe());
  check_same_device(kOp, table.packed, ids, "ids");
  check_backend(kOp, ids.device());
  Tensor ic = contiguous_input(ids);
  const int64_t T = ic.dim(0), V = table.rows();
  Tensor out = Tensor::empty({T, table.cols()}, DType::f32, ids.device());
  switch (ids.device().type) {
    case DeviceType::cpu: {
      const int32_t* ip = ic.data<int32_t>();
      for (int64_t i = 0; i < T; ++i) {
        if (ip[i] < 0 || ip[i] >= V) invalid("[{}] token id {} at position {} is outside [0, {})", kOp, ip[i], i, V);
      }
      Prepared p = prepare(table);
      cpu::dequantize_rows_f32(p.m, ip, T, out.data<float>());
      break;
    }
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, {
      Prepared p = prepare(table);
      cuda::dequantize_rows_f32(p.m, ic.data<int32_t>(), T, out.data<float>());
    }); break;
  }
  return out;
}

QuantizedWeight quantize(const Tensor& w, QuantSpec spec, DType scale_dtype) {
  constexpr const char* kOp = "quantize";
  check_spec(kOp, spec, "spec");
  check_defined(kOp, w, "w");
  check_float(kOp, w, "w");
  if (w.ndim() != 2) invalid("[{}] w must be [N, K], got {}", kOp, w.describe());
  if (w.dim(1) % spec.group_size != 0)
    invalid("[{}] K = {} is not a multiple of group_size {}", kOp, w.dim(1), spec.group_size);
  if (!(scale_dtype == DType::f32 || scale_dtype == DType::f16 || scale_dtype == DType::bf16))
    invalid("[{}] scale_dtype must be f32|f16|bf16, got {}", kOp, dtype_name(scale_dtype));
  check_backend(kOp, w.device());
  Tensor wc = contiguous_input(w);
  const int64_t N = w.dim(0), K = w.dim(1);
  QuantizedWeight q;
  q.spec = spec;
  q.packed = Tensor::empty({N, K * spec.bits / 32}, DType::u32, w.device());
  q.scales = Tensor::empty({N, K / spec.group_size}, scale_dtype, w.device());
  q.biases = Tensor::empty({N, K / spec.group_size}, scale_dtype, w.device());
  switch (w.device().type) {
    case DeviceType::cpu: cpu::quantize(wc, spec.bits, spec.group_size, q.packed, q.scales, q.biases); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::quantize(wc, spec.bits, spec.group_size, q.packed, q.scales, q.biases)); break;
  }
  return q;
}

Tensor dequantize(const QuantizedWeight& w, DType dtype) {
  constexpr const char* kOp = "dequantize";
  if (is_gguf_format(w.spec.format)) return gguf_dequantize(w, dtype);
  validate(kOp, w, "w");
  if (!(dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16))
    invalid("[{}] dtype must be f32|f16|bf16, got {}", kOp, dtype_name(dtype));
  check_backend(kOp, w.packed.device());
  const int64_t N = w.rows(), K = w.cols();
  const bool same = dtype == w.scales.dtype() && dtype != DType::f32;
  Tensor out = Tensor::empty({N, K}, same ? dtype : DType::f32, w.packed.device());
  switch (w.packed.device().type) {
    case DeviceType::cpu: {
      Prepared p = prepare(w);
      if (same) {
        cpu::dequantize_same_dtype(p.m, out.raw());
      } else {
        cpu::dequantize_rows_f32(p.m, nullptr, N, out.data<float>());
      }
      break;
    }
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, {
      Prepared p = prepare(w);
      if (same) {
        cuda::dequantize_same_dtype(p.m, out.raw());
      } else {
        cuda::dequantize_rows_f32(p.m, nullptr, N, out.data<float>());
      }
    }); break;
  }
  return (dtype == out.dtype()) ? out : astype(out, dtype);
}

}  // namespace ops
}  // namespace mlxcel
