// GGUF block formats kept packed (QuantFormat::gguf_q4_0 / q4_1 / q5_0 / q5_1 / q8_0 / q2_k ...
// q6_k): the op side of ops::qlinear / qembedding / dequantize / validate_quantized for them.
// CPU only; the kernels are in backends/cpu/gguf_quants.h. Internal to ops (quant.cpp
// dispatches here).
#pragma once

#include <string>
#include <vector>

#include "ops/quant.h"

namespace mlxcel::ops::detail {

void gguf_validate(const char* op, const QuantizedWeight& w, const std::string& what);
Tensor gguf_qlinear(const Tensor& x, const QuantizedWeight& w, const Tensor& bias);
// Products of one x with 1..3 GGUF weights (q/k/v, gate/up) in one parallel region, x
// quantized once (gguf::matmul_packed_multi): the bits of separate gguf_qlinear calls.
std::vector<Tensor> gguf_qlinear_multi(const Tensor& x, const std::vector<const QuantizedWeight*>& ws,
                                       const std::vector<Tensor>& biases);
Tensor gguf_qembedding(const Tensor& ids, const QuantizedWeight& table);
Tensor gguf_dequantize(const QuantizedWeight& w, DType dtype);

}  // namespace mlxcel::ops::detail
