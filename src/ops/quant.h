// Quantized weights. MLX affine quantization (mlx.core.quantize): each row of a
// [N, K] weight is split into groups of `group_size` values; a group stores
// q = round((w - bias) / scale) in `bits` bits, w ~= scale * q + bias. Values
// are packed little-end-first into u32 words, so `packed` is u32 [N, K * bits / 32]
// (3, 5 and 6 bits straddle words). scales and biases are [N, K / group_size] in
// f16, bf16 or f32.
#pragma once

#include <string>

#include "tensor/tensor.h"

namespace mlxcel {

// gguf_q4_0 / gguf_q4_1 / gguf_q5_0 / gguf_q5_1 / gguf_q8_0 / gguf_q2_k ... gguf_q6_k: GGUF
// (ggml) blocks kept packed: `packed` is u8 [N, K / 32 * 18 (Q4_0), 20 (Q4_1), 22 (Q5_0), 24
// (Q5_1) or 34 (Q8_0), or K / 256 * 84 (Q2_K), 110 (Q3_K), 144 (Q4_K), 176 (Q5_K) or 210
// (Q6_K)], scales and biases are undefined; CPU only (ops/gguf_quant.h,
// backends/cpu/gguf_quants.h). group_size: 32 (the 32-value formats' blocks, Q4_K / Q5_K's
// sub-blocks), 16 for Q6_K's, Q3_K's and Q2_K's.
enum class QuantFormat : uint8_t {
  mlx_affine, gguf_q8_0, gguf_q4_0, gguf_q4_k, gguf_q6_k, gguf_q5_k, gguf_q3_k, gguf_q2_k, gguf_q4_1, gguf_q5_0, gguf_q5_1
};

// True for the GGUF block formats kept packed; their ggml type (gguf::GgmlType value).
inline bool is_gguf_format(QuantFormat f) { return f != QuantFormat::mlx_affine; }  // all the others
uint32_t gguf_type_of(QuantFormat f);

struct QuantSpec {
  QuantFormat format = QuantFormat::mlx_affine;
  int bits = 4;         // 2, 3, 4, 5, 6, 8
  int group_size = 64;  // 32, 64, 128
  std::string describe() const;  // "mlx q4 g64"
};

struct QuantizedWeight {
  Tensor packed;  // u32 [N, K * bits / 32]
  Tensor scales;  // [N, K / group_size]
  Tensor biases;  // [N, K / group_size]
  QuantSpec spec;
  int64_t rows() const { return packed.dim(0); }
  int64_t cols() const;  // K, derived from packed and bits
};

namespace ops {

// Checks shapes and dtypes of a quantized weight; throws invalid_request naming `what`.
void validate_quantized(const QuantizedWeight& w, const std::string& what);
// y = x @ dequant(w)^T (+ bias): x [..., K] f32 -> [..., N] f32.
Tensor qlinear(const Tensor& x, const QuantizedWeight& w, const Tensor& bias = Tensor());
// Quantized embedding rows: ids i32 [T] -> f32 [T, K].
Tensor qembedding(const Tensor& ids, const QuantizedWeight& table);
// MLX-compatible quantizer (same rounding as mlx.core.quantize on the CPU). w [N, K]
// float, K divisible by group_size. scale_dtype is the dtype of scales and biases;
// MLX stores them in w's dtype, so pass scale_dtype = w.dtype() to reproduce it.
// NOTE: MLX's Metal kernel differs from its CPU one in two corners (it rounds ties
// away from zero and clamps a group's max at >= 0); this follows the CPU one.
QuantizedWeight quantize(const Tensor& w, QuantSpec spec, DType scale_dtype = DType::f16);
// The MLX affine weight that holds exactly the values of a GGUF Q8_0 / Q4_0 weight
// (on the host): Q8_0 (d, q int8) -> 8 bits, q + 128, scale d, bias -128 d; Q4_0 (d,
// nibbles q) -> 4 bits, scale d, bias -8 d; groups of 32 (one ggml block), scales and
// biases f16 (the block's own d; f32 when -128 d or -8 d would overflow f16).
// Dequantizing gives the same f32 values as ggml's dequantization. Lets the backends
// without GGUF kernels (CUDA) run these files on the MLX kernels. Q4_1 and Q4_K become
// exactly their values as 4 bits with f32 scales (gguf_rows_to_affine4); the other formats
// go through Q8_0 (gguf_rows_to_q8_0), each value within amax / 254 of its 32-value block.
QuantizedWeight gguf_to_mlx_affine(const QuantizedWeight& w, const std::string& what);
// N rows of GGUF blocks of `type` (row r at src + r * row_stride bytes, K values) on the
// host, rows in parallel: as ggml Q8_0 rows (u8 [N, K / 32 * 34]; dequantized, then ggml's
// reference Q8_0 rounding, at most amax / 254 of a 32-value block), or, for Q4_1 / Q4_K,
// as the MLX affine 4-bit g32 weight with f32 scales and biases of exactly their values
// (gguf::affine4_row).
Tensor gguf_rows_to_q8_0(uint32_t type, const uint8_t* src, size_t row_stride, int64_t N, int64_t K);
QuantizedWeight gguf_rows_to_affine4(uint32_t type, const uint8_t* src, size_t row_stride, int64_t N, int64_t K);
// Dequantized weight [N, K] of `dtype`: w = scale * q + bias, bit-exact with
// mlx.core.dequantize. f32 rounds the product and the sum in f32 (what MLX gives
// for f32 scales); dtype == the scales' dtype (f16|bf16) rounds each step in that
// dtype (what MLX gives for f16/bf16 scales); any other dtype is the f32 result cast.
Tensor dequantize(const QuantizedWeight& w, DType dtype = DType::f32);

}  // namespace ops
}  // namespace mlxcel
