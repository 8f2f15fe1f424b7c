// MLX affine quantization kernels (see ops/quant.h for the format).
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace mlxcel::cpu {

// A validated, contiguous MLX affine quantized matrix [N, K].
struct QuantMatrix {
  const uint32_t* packed = nullptr;  // [N, K * bits / 32]: a little-endian bit stream per row
  const void* scales = nullptr;      // [N, K / group_size] of scale_dtype
  const void* biases = nullptr;      // [N, K / group_size] of scale_dtype
  DType scale_dtype = DType::f16;    // f32 | f16 | bf16
  int bits = 4;
  int group_size = 64;
  int64_t N = 0, K = 0;
};

// y f32 [M, N] = x f32 [M, K] @ dequant(w)^T (+ bias f32 [N], may be null).
void qlinear(const float* x, int64_t M, const QuantMatrix& w, const float* bias, float* y);

// ys[i] = qlinear(x, M, ws[i], biases[i]) for n (1-4) matrices of one K, bit for bit, in one
// parallel region where the decode kernels allow (a decode step's q, k, v or gate, up).
// biases may be null, or hold nulls.
void qlinear_multi(const float* x, int64_t M, const QuantMatrix* ws, int n, const float* const* biases,
                   float* const* ys);

// out f32 [n, K] = dequantized rows rows[0..n) of w (indices already checked).
// Each value is scale * q + bias rounded as in f32 (no FMA), as MLX computes it.
void dequantize_rows_f32(const QuantMatrix& w, const int32_t* rows, int64_t n, float* out);

// out [N, K] of w.scale_dtype (f16|bf16): MLX's dequantize in that dtype, i.e.
// round(round(q * scale) + bias) with each step rounded to the dtype.
void dequantize_same_dtype(const QuantMatrix& w, void* out);

// MLX's CPU quantizer (mlx/backend/cpu/quantized.cpp): w [N, K] f32|f16|bf16 ->
// packed u32 [N, K * bits / 32], scales and biases [N, K / group_size] of their dtype.
void quantize(const Tensor& w, int bits, int group_size, Tensor& packed, Tensor& scales, Tensor& biases);

}  // namespace mlxcel::cpu
