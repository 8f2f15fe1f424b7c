// Internal helpers shared by linear.cu and quantized.cu.
#pragma once

#include <cstdint>

#include "backends/cuda/runtime.h"
#include "tensor/dtype.h"

namespace mlxcel::cuda {

// out[m, n] = src[m, n] (+ bias[n]) in out's dtype; src may alias out (f32) or be null (zeros).
void finish_rows(const float* src, int64_t M, int64_t N, const void* bias, DType bias_dtype, void* out, DType out_dtype,
                 cudaStream_t st);
// y f32 [M, N] = x f32 [M, K] @ w f32 [N, K]^T through cuBLAS SGEMM (no TF32).
void gemm_f32_nt(const float* x, int64_t M, const float* w, int64_t N, int64_t K, float* y, int device);

}  // namespace mlxcel::cuda
