// Dense matrix products: y = x @ w^T (+ bias), the PyTorch Linear layout.
#pragma once

#include "tensor/tensor.h"

namespace mlxcel::cpu {

// out f32 [M, N] = x f32 [M, K] @ w [N, K]^T (+ bias [N]); w and bias f32|f16|bf16,
// bias may be undefined. Decode-sized M (<= kGemvMaxRows) runs a GEMV that reads each
// weight row once for all rows; larger M runs a cache-blocked GEMM. f32 accumulation.
void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out);

// Rows of x handled by the GEMV path (at most this many); exposed for tests and benches.
constexpr int kGemvMaxRows = 32;

}  // namespace mlxcel::cpu
