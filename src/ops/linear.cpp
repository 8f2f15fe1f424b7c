// Dense linear and embedding lookup.
#include "backends/cpu/kernels.h"
#include "backends/cuda/dispatch.h"
#include "backends/cpu/linear.h"
#include "ops/ops.h"
#include "ops/ops_internal.h"

namespace mlxcel::ops {

using namespace detail;

void detail::check_linear(const char* kOp, const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_defined(kOp, x, "x");
  check_defined(kOp, w, "w");
  check_dtype(kOp, x, "x", {DType::f32, DType::bf16});
  check_float(kOp, w, "w");
  check_ndim_at_least(kOp, x, "x", 1);
  if (w.ndim() != 2) invalid("[{}] w must be [N, K], got {}", kOp, w.describe());
  if (w.dim(1) != x.dim(-1))
    invalid("[{}] x's last dimension {} does not match w's K {} (x {}, w {})", kOp, x.dim(-1), w.dim(1), x.describe(),
            w.describe());
  check_same_device(kOp, x, w, "w");
  if (bias.defined()) {
    check_float(kOp, bias, "bias");
    check_same_device(kOp, x, bias, "bias");
    if (bias.ndim() != 1 || bias.dim(0) != w.dim(0))
      invalid("[{}] bias must be [{}], got {}", kOp, w.dim(0), bias.describe());
  }
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  constexpr const char* kOp = "linear";
  check_linear(kOp, x, w, bias);
  check_backend(kOp, x.device());
  Tensor xc = contiguous_input(x), wc = contiguous_input(w);
  Shape shape = x.shape();
  shape.back() = w.dim(0);
  Tensor out = Tensor::empty(shape, DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu:
      // bf16 x (a producer that wrote matmul_input_dtype): its values, widened exactly.
      if (xc.dtype() != DType::f32) xc = astype(xc, DType::f32);
      cpu::linear(xc, wc, bias, out);
      break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::linear(xc, wc, bias, out)); break;
  }
  return out;
}

Tensor embedding(const Tensor& ids, const Tensor& table) {
  constexpr const char* kOp = "embedding";
  check_defined(kOp, ids, "ids");
  check_defined(kOp, table, "table");
  check_dtype(kOp, ids, "ids", {DType::i32});
  check_float(kOp, table, "table");
  if (ids.ndim() != 1) invalid("[{}] ids must be i32 [T], got {}", kOp, ids.describe());
  if (table.ndim() != 2) invalid("[{}] table must be [V, D], got {}", kOp, table.describe());
  check_same_device(kOp, table, ids, "ids");
  check_backend(kOp, table.device());
  Tensor ic = contiguous_input(ids), tc = contiguous_input(table);
  const int64_t T = ic.dim(0), V = tc.dim(0);
  Tensor out = Tensor::empty({T, tc.dim(1)}, DType::f32, table.device());
  switch (table.device().type) {
    case DeviceType::cpu: {
      const int32_t* ip = ic.data<int32_t>();
      for (int64_t i = 0; i < T; ++i) {
        if (ip[i] < 0 || ip[i] >= V) invalid("[{}] token id {} at position {} is outside [0, {})", kOp, ip[i], i, V);
      }
      cpu::gather_rows_f32(tc, ip, T, out);
      break;
    }
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::gather_rows_f32(tc, ic.data<int32_t>(), T, out)); break;
  }
  return out;
}

}  // namespace mlxcel::ops
