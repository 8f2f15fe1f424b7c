// CPU kernels behind the ops API (ops/*.cpp validate, allocate and dispatch here).
// Kernels assume validated inputs: CPU tensors, contiguous unless stated, dtypes
// and shapes as the op documents. They run on ThreadPool::global().
//
// The matmul, quantized and attention kernels live in linear.h, quantized.h and
// attention.h beside this file.
#pragma once

#include <cstdint>
#include <cstring>

#include "tensor/tensor.h"

namespace mlxcel::cpu {

// ---- copies and conversions -------------------------------------------------
// dst (contiguous, same shape and dtype) = src (any strides).
void copy_strided(const Tensor& src, Tensor& dst);
// dst = src converted elementwise; both contiguous, same numel. Supported:
// f32/f16/bf16 -> f32/f16/bf16, i32 -> f32.
void convert(const Tensor& src, Tensor& dst);
// out [n, D] = x [R, D] rows idx[0..n) (indices already checked), same dtype.
void gather_rows(const Tensor& x, const int32_t* idx, int64_t n, Tensor& out);
// out f32 [n, D] = table [V, D] (f32|f16|bf16) rows idx[0..n), widened to f32.
void gather_rows_f32(const Tensor& table, const int32_t* idx, int64_t n, Tensor& out);
// out [..., end - begin] = x [..., D] columns [begin, end).
void slice_last(const Tensor& x, int64_t begin, int64_t end, Tensor& out);

// ---- normalization (x f32 [rows, D]; w, b [D] f32|f16|bf16 or undefined) ------
void rms_norm(const Tensor& x, const Tensor& w, float eps, float w_offset, Tensor& out);
void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& out);

// ---- elementwise (f32) -------------------------------------------------------
enum class BinaryOp { add, mul };
// out = a op b; b has a's numel, or b [D] is broadcast over the rows of a [rows, D].
// b may be f32, f16 or bf16. out may alias a.
void binary(const Tensor& a, const Tensor& b, BinaryOp op, Tensor& out);
void scale(const Tensor& x, float s, Tensor& out);

// Mirrors ops::Activation (same order).
enum class Act { silu, gelu_tanh, gelu_erf, relu, relu2 };
float activate_scalar(float x, Act act);  // the reference formula
void activate(const Tensor& x, Act act, Tensor& out);
// out = act(gate) * up.
void gated(const Tensor& gate, const Tensor& up, Act act, Tensor& out);
void softcap(const Tensor& x, float cap, Tensor& out);
// Softmax over the last dimension of x [rows, D].
void softmax(const Tensor& x, Tensor& out);
// out i32 [rows]: index of the max of each row (lowest index on ties); x f32|f16|bf16.
void argmax(const Tensor& x, Tensor& out);

// Filters and the draw of one row of token sampling (ops/sample.h says what they mean).
struct SampleRow {
  float temperature = 0.0f;  // <= 0: argmax
  int top_k = 0;             // 0 or >= vocab: off
  float top_p = 1.0f;        // >= 1: off
  float min_p = 0.0f;        // <= 0: off
  float u = 0.0f;            // uniform in [0, 1): where in the kept mass the token is
};
// out i32 [rows] from logits f32 [rows, V] and one SampleRow per row.
void sample(const Tensor& logits, const SampleRow* rows, Tensor& out);
// The order-preserving unsigned key of a float (larger float, larger key).
inline uint32_t float_key(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

}  // namespace mlxcel::cpu
