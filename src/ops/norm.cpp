// RMSNorm and LayerNorm.
#include "backends/cpu/kernels.h"
#include "backends/cuda/dispatch.h"
#include "ops/ops.h"
#include "ops/ops_internal.h"

namespace mlxcel::ops {

using namespace detail;

namespace {
void check_norm_param(const char* op, const Tensor& x, const Tensor& p, const char* name) {
  if (!p.defined()) return;
  check_float(op, p, name);
  check_same_device(op, x, p, name);
  if (p.ndim() != 1 || p.dim(0) != x.dim(-1))
    invalid("[{}] {} must be [{}] (the last dimension of x), got {}", op, name, x.dim(-1), p.describe());
}
}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& w, float eps, float w_offset) {
  constexpr const char* kOp = "rms_norm";
  check_defined(kOp, x, "x");
  check_dtype(kOp, x, "x", {DType::f32});
  check_ndim_at_least(kOp, x, "x", 1);
  check_norm_param(kOp, x, w, "w");
  check_backend(kOp, x.device());
  Tensor xc = contiguous_input(x);
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu: cpu::rms_norm(xc, w, eps, w_offset, out); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::rms_norm(xc, w, eps, w_offset, out)); break;
  }
  return out;
}

Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  constexpr const char* kOp = "layer_norm";
  check_defined(kOp, x, "x");
  check_dtype(kOp, x, "x", {DType::f32});
  check_ndim_at_least(kOp, x, "x", 1);
  check_norm_param(kOp, x, w, "w");
  check_norm_param(kOp, x, b, "b");
  check_backend(kOp, x.device());
  Tensor xc = contiguous_input(x);
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu: cpu::layer_norm(xc, w, b, eps, out); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::layer_norm(xc, w, b, eps, out)); break;
  }
  return out;
}

}  // namespace mlxcel::ops
