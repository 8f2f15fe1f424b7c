#include "ops/gguf_quant.h"

#include "backends/cpu/gguf_quants.h"
#include "ops/ops.h"
#include "ops/ops_internal.h"
#include "base/thread_pool.h"
#include "base/half.h"
#include <algorithm>
#include <cmath>
#include <cstring>

namespace mlxcel {

uint32_t gguf_type_of(QuantFormat f) {
  switch (f) {
    case QuantFormat::gguf_q8_0: return gguf::kQ8_0;
    case QuantFormat::gguf_q4_0: return gguf::kQ4_0;
    case QuantFormat::gguf_q4_k: return gguf::kQ4_K;
    case QuantFormat::gguf_q5_k: return gguf::kQ5_K;
    case QuantFormat::gguf_q6_k: return gguf::kQ6_K;
    case QuantFormat::gguf_q3_k: return gguf::kQ3_K;
    case QuantFormat::gguf_q2_k: return gguf::kQ2_K;
    case QuantFormat::gguf_q4_1: return gguf::kQ4_1;
    case QuantFormat::gguf_q5_0: return gguf::kQ5_0;
    case QuantFormat::gguf_q5_1: return gguf::kQ5_1;
    default: invalid("not a GGUF block format");
  }
}

}  // namespace mlxcel

namespace mlxcel::ops::detail {

namespace {

void cpu_only(const char* op, Device d) {
  if (d.type != DeviceType::cpu)
    unsupported("[{}] GGUF Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q2_K..Q6_K weights kept packed run on the CPU only (load with "
                "keep_packed = false)",
                op);
}

}  // namespace

void gguf_validate(const char* op, const QuantizedWeight& w, const std::string& what) {
  if (!w.packed.defined() || w.packed.dtype() != DType::u8 || w.packed.ndim() != 2)
    invalid("[{}] {}: a GGUF packed weight must be u8 [N, row bytes], got {}", op, what,
            w.packed.defined() ? w.packed.describe() : std::string("undefined"));
  const size_t bb = gguf::block_bytes(gguf_type_of(w.spec.format));
  if (w.packed.dim(1) == 0 || size_t(w.packed.dim(1)) % bb != 0)
    invalid("[{}] {}: row of {} bytes is not a whole number of {}-byte blocks", op, what, w.packed.dim(1), bb);
  if (w.packed.strides().back() != 1)
    invalid("[{}] {}: GGUF packed rows must be contiguous", op, what);
}

Tensor gguf_qlinear(const Tensor& x, const QuantizedWeight& w, const Tensor& bias) {
  constexpr const char* kOp = "qlinear";
  gguf_validate(kOp, w, "w");
  check_defined(kOp, x, "x");
  check_dtype(kOp, x, "x", {DType::f32});
  check_ndim_at_least(kOp, x, "x", 1);
  const int64_t K = w.cols(), N = w.rows();
  if (x.dim(-1) != K) invalid("[{}] x's last dimension {} does not match the weight's K {}", kOp, x.dim(-1), K);
  cpu_only(kOp, x.device());
  cpu_only(kOp, w.packed.device());
  if (bias.defined() && (bias.ndim() != 1 || bias.dim(0) != N))
    invalid("[{}] bias must be [{}], got {}", kOp, N, bias.describe());
  Tensor xc = contiguous_input(x);
  Shape shape = x.shape();
  shape.back() = N;
  Tensor out = Tensor::empty(shape, DType::f32, x.device());
  Tensor b32 = bias.defined() ? contiguous_input(astype(bias, DType::f32)) : Tensor();
  const int64_t M = xc.numel() / K;
  gguf::matmul_packed(gguf_type_of(w.spec.format), xc.data<float>(), M, K, w.packed.data<uint8_t>(),
                      size_t(w.packed.strides()[0]), N, b32.defined() ? b32.data<float>() : nullptr,
                      out.data<float>());
  return out;
}

std::vector<Tensor> gguf_qlinear_multi(const Tensor& x, const std::vector<const QuantizedWeight*>& ws,
                                       const std::vector<Tensor>& biases) {
  constexpr const char* kOp = "qlinear";
  check_defined(kOp, x, "x");
  check_dtype(kOp, x, "x", {DType::f32});
  check_ndim_at_least(kOp, x, "x", 1);
  cpu_only(kOp, x.device());
  const int64_t K = x.dim(-1);
  std::vector<Tensor> outs, b32(ws.size());
  std::vector<gguf::PackedProduct> ps;
  Tensor xc = contiguous_input(x);
  const int64_t M = K ? xc.numel() / K : 0;
  for (size_t i = 0; i < ws.size(); ++i) {
    const QuantizedWeight& w = *ws[i];
    gguf_validate(kOp, w, "w");
    cpu_only(kOp, w.packed.device());
    const int64_t N = w.rows();
    if (w.cols() != K) invalid("[{}] x's last dimension {} does not match the weight's K {}", kOp, K, w.cols());
    const Tensor& bias = i < biases.size() ? biases[i] : Tensor();
    if (bias.defined() && (bias.ndim() != 1 || bias.dim(0) != N))
      invalid("[{}] bias must be [{}], got {}", kOp, N, bias.describe());
    if (bias.defined()) b32[i] = contiguous_input(astype(bias, DType::f32));
    Shape shape = x.shape();
    shape.back() = N;
    outs.push_back(Tensor::empty(shape, DType::f32, x.device()));
    ps.push_back({gguf_type_of(w.spec.format), w.packed.data<uint8_t>(), size_t(w.packed.strides()[0]), N,
                  b32[i].defined() ? b32[i].data<float>() : nullptr, outs.back().data<float>()});
  }
  if (M > 0 && K > 0) gguf::matmul_packed_multi(xc.data<float>(), M, K, ps.data(), int(ps.size()));
  return outs;
}

Tensor gguf_qembedding(const Tensor& ids, const QuantizedWeight& table) {
  constexpr const char* kOp = "qembedding";
  gguf_validate(kOp, table, "table");
  check_defined(kOp, ids, "ids");
  check_dtype(kOp, ids, "ids", {DType::i32});
  if (ids.ndim() != 1) invalid("[{}] ids must be i32 [T], got {}", kOp, ids.describe());
  cpu_only(kOp, ids.device());
  Tensor ic = contiguous_input(ids);
  const int64_t T = ic.dim(0), V = table.rows(), K = table.cols();
  const int32_t* ip = ic.data<int32_t>();
  for (int64_t i = 0; i < T; ++i)
    if (ip[i] < 0 || ip[i] >= V) invalid("[{}] token id {} at position {} is outside [0, {})", kOp, ip[i], i, V);
  Tensor out = Tensor::empty({T, K}, DType::f32, ids.device());
  gguf::gather_rows(gguf_type_of(table.spec.format), table.packed.data<uint8_t>(), size_t(table.packed.strides()[0]),
                    K, ip, T, out.data<float>());
  return out;
}

Tensor gguf_dequantize(const QuantizedWeight& w, DType dtype) {
  constexpr const char* kOp = "dequantize";
  gguf_validate(kOp, w, "w");
  cpu_only(kOp, w.packed.device());
  const int64_t N = w.rows(), K = w.cols();
  Tensor out = Tensor::empty({N, K}, DType::f32);
  const uint32_t type = gguf_type_of(w.spec.format);
  const uint8_t* base = w.packed.data<uint8_t>();
  const int64_t stride = w.packed.strides()[0];
  float* y = out.data<float>();
  ThreadPool::global().parallel_for(
      N, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) gguf::dequantize_row(type, base + r * stride, y + r * K, K);
      },
      std::max<int64_t>(1, 16384 / std::max<int64_t>(1, K)));
  return dtype == DType::f32 ? out : astype(out, dtype);
}

}  // namespace mlxcel::ops::detail

namespace mlxcel::ops {

QuantizedWeight gguf_to_mlx_affine(const QuantizedWeight& w, const std::string& what) {
  constexpr const char* kOp = "gguf_to_mlx_affine";
  if (!is_gguf_format(w.spec.format))
    invalid("[{}] {}: not a GGUF Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q2_K..Q6_K weight", kOp, what);
  detail::gguf_validate(kOp, w, what);
  if (w.packed.device().type != DeviceType::cpu) invalid("[{}] {}: the packed weight must be on the host", kOp, what);
  const uint8_t* base = static_cast<const uint8_t*>(w.packed.raw());
  const size_t row_stride = size_t(w.packed.strides()[0]);  // in bytes (u8)
  if (w.spec.format == QuantFormat::gguf_q4_k || w.spec.format == QuantFormat::gguf_q4_1)
    return gguf_rows_to_affine4(gguf_type_of(w.spec.format), base, row_stride, w.rows(), w.cols());
  if (w.spec.format != QuantFormat::gguf_q8_0 && w.spec.format != QuantFormat::gguf_q4_0) {
    // Q2_K's, Q3_K's and Q6_K's 16-value sub-blocks have no MLX form, nor the 5 bits of Q5_0,
    // Q5_1 and Q5_K: through Q8_0.
    QuantizedWeight q8;
    q8.spec = {QuantFormat::gguf_q8_0, 8, 32};
    q8.packed = gguf_rows_to_q8_0(gguf_type_of(w.spec.format), base, row_stride, w.rows(), w.cols());
    return gguf_to_mlx_affine(q8, what);
  }
  const bool q8 = w.spec.format == QuantFormat::gguf_q8_0;
  const int bits = q8 ? 8 : 4;
  const int64_t N = w.rows(), K = w.cols(), G = K / 32;
  const size_t bb = q8 ? 34 : 18;
  const float bias_mul = q8 ? -128.0f : -8.0f;
  // f16 scales unless some bias would overflow f16 (|d| > 511 for Q8_0, > 8188 for Q4_0).
  bool f16_ok = true;
  for (int64_t r = 0; r < N && f16_ok; ++r)
    for (int64_t g = 0; g < G; ++g) {
      uint16_t d;
      std::memcpy(&d, base + r * row_stride + size_t(g) * bb, 2);
      const float df = f16_to_f32(d);
      if (std::isfinite(df) && !std::isfinite(f16_to_f32(f32_to_f16(df * bias_mul)))) {
        f16_ok = false;
        break;
      }
    }
  QuantizedWeight out;
  out.spec = {QuantFormat::mlx_affine, bits, 32};
  const DType sdt = f16_ok ? DType::f16 : DType::f32;
  out.packed = Tensor::empty({N, K * bits / 32}, DType::u32);
  out.scales = Tensor::empty({N, G}, sdt);
  out.biases = Tensor::empty({N, G}, sdt);
  uint32_t* P = out.packed.data<uint32_t>();
  ThreadPool::global().parallel_for(N, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = base + r * row_stride;
      uint32_t* prow = P + r * (K * bits / 32);
      for (int64_t g = 0; g < G; ++g) {
        const uint8_t* blk = row + size_t(g) * bb;
        uint16_t d;
        std::memcpy(&d, blk, 2);
        const float df = f16_to_f32(d);
        if (f16_ok) {
          out.scales.data<uint16_t>()[r * G + g] = d;
          out.biases.data<uint16_t>()[r * G + g] = f32_to_f16(df * bias_mul);
        } else {
          out.scales.data<float>()[r * G + g] = df;
          out.biases.data<float>()[r * G + g] = df * bias_mul;
        }
        uint8_t q[32];
        if (q8) {
          for (int j = 0; j < 32; ++j) q[j] = uint8_t(int(int8_t(blk[2 + j])) + 128);
        } else {
          for (int j = 0; j < 16; ++j) {
            q[j] = blk[2 + j] & 0x0F;
            q[j + 16] = blk[2 + j] >> 4;
          }
        }
        uint32_t* words = prow + g * bits;  // 32 values x bits = `bits` words per group
        for (int i = 0; i < bits; ++i) words[i] = 0;
        for (int j = 0; j < 32; ++j) words[j * bits / 32] |= uint32_t(q[j]) << ((j * bits) % 32);
      }
    }
  });
  return out;
}

Tensor gguf_rows_to_q8_0(uint32_t type, const uint8_t* src, size_t row_stride, int64_t N, int64_t K) {
  const size_t qrb = gguf::row_bytes(gguf::kQ8_0, K);
  Tensor out = Tensor::empty({N, int64_t(qrb)}, DType::u8);
  uint8_t* dst = out.data<uint8_t>();
  ThreadPool::global().parallel_for(
      N,
      [&](int64_t r0, int64_t r1) {
        std::vector<float> row(static_cast<size_t>(K));
        for (int64_t r = r0; r < r1; ++r) {
          gguf::dequantize_row(type, src + size_t(r) * row_stride, row.data(), K);
          gguf::quantize_row(gguf::kQ8_0, row.data(), dst + size_t(r) * qrb, K);
        }
      },
      64);
  return out;
}

QuantizedWeight gguf_rows_to_affine4(uint32_t type, const uint8_t* src, size_t row_stride, int64_t N, int64_t K) {
  const int64_t W = K / 8, G = K / 32;
  QuantizedWeight out;
  out.spec = {QuantFormat::mlx_affine, 4, 32};
  out.packed = Tensor::empty({N, W}, DType::u32);
  out.scales = Tensor::empty({N, G}, DType::f32);
  out.biases = Tensor::empty({N, G}, DType::f32);
  uint32_t* wp = out.packed.data<uint32_t>();
  float* sp = out.scales.data<float>();
  float* bp = out.biases.data<float>();
  ThreadPool::global().parallel_for(
      N,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          MLXCEL_CHECK(gguf::affine4_row(type, src + size_t(r) * row_stride, K, wp + r * W, sp + r * G, bp + r * G),
                       "gguf_rows_to_affine4: type {} is not Q4_1 / Q4_K", type);
      },
      64);
  return out;
}

}  // namespace mlxcel::ops
