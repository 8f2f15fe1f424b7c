// Helpers shared by the op implementations (validation and device dispatch).
// Private to src/ops: not part of the op API.
#pragma once

#include <initializer_list>
#include <string>

#include "base/error.h"
#include "ops/rope.h"
#include "ops/rope_kv_target.h"
#include "tensor/tensor.h"

namespace mlxcel::ops {
struct RopeKvWrite;
}
#ifdef MLXCEL_WITH_CUDA
namespace mlxcel::cuda {
struct RowNorm;
}
#endif

namespace mlxcel::ops::detail {

// Thrown by the CUDA case of an op's dispatch switch until the CUDA backend has a kernel.
[[noreturn]] inline void no_cuda(const char* op) {
  throw Error(ErrorKind::unsupported, fmt::format("[{}] has no CUDA implementation", op));
}

// Rejects devices that have no backend for this op before anything is allocated there.
inline void check_backend(const char* op, Device d) {
#ifndef MLXCEL_WITH_CUDA
  if (d.type == DeviceType::cuda) no_cuda(op);
#else
  (void)op;
  (void)d;
#endif
}

inline void check_defined(const char* op, const Tensor& t, const char* name) {
  if (!t.defined()) invalid("[{}] {} is undefined", op, name);
}

inline void check_dtype(const char* op, const Tensor& t, const char* name, std::initializer_list<DType> ok) {
  for (DType d : ok) {
    if (t.dtype() == d) return;
  }
  std::string allowed;
  for (DType d : ok) allowed += std::string(allowed.empty() ? "" : "|") + dtype_name(d);
  invalid("[{}] {} must be {}, got {}", op, name, allowed, t.describe());
}

inline void check_float(const char* op, const Tensor& t, const char* name) {
  check_dtype(op, t, name, {DType::f32, DType::f16, DType::bf16});
}

inline void check_same_device(const char* op, const Tensor& a, const Tensor& b, const char* b_name) {
  if (b.defined() && !(a.device() == b.device()))
    invalid("[{}] {} is on {} but the input is on {}", op, b_name, device_name(b.device()), device_name(a.device()));
}

inline void check_ndim_at_least(const char* op, const Tensor& t, const char* name, int n) {
  if (t.ndim() < n) invalid("[{}] {} must have at least {} dimension(s), got {}", op, name, n, t.describe());
}

// The input as a contiguous tensor (no copy when it already is).
Tensor contiguous_input(const Tensor& x);

// The checks of rope (x f32 [T, H, D], positions i32 [T] on x's device, host inv_freq),
// and the inv_freq pointer a kernel on device d reads (p's device mirror when it has one).
void check_rope(const char* op, const Tensor& x, const Tensor& positions, const RopeParams& p);
const float* rope_freq_on(const RopeParams& p, Device d, const Tensor& host_freq);
// p's device mirror of inv_freq on d, or null when it has none.
const float* rope_freq_mirror(const RopeParams& p, Device d);

// The checks of linear (x f32 [..., K], w [N, K] f32|f16|bf16, bias [N] or undefined).
void check_linear(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias);

// The device pointers a one-row q/k/v launch needs to rotate q and k and write k and v
// into the caches in its epilogue (ops/fused.h RopeKvWrite; ops/rope_kv_target.h): false
// (and nothing checked further) where the step does not allow it: the caller then
// composes rope_kv_write, whose checks give bad input its error.
bool rope_kv_target(const RopeKvWrite& w, int64_t q_rows, int64_t k_rows, int64_t v_rows, Device dev,
                    RopeKvTarget* out);

// The residual add and RMSNorm folded into the decode products that read them (ops/fused.h
// add_rms_norm_linear_*, add_rms_norm_qlinear_*): whether x (one f32 row on CUDA), h (like
// x) and the norm weight (of x's last dimension, f32|f16|bf16, or none) take the fold into
// products of K columns; then the inputs, contiguous, and the sum's output.
bool norm_foldable(const Tensor& x, const Tensor& h, const Tensor& norm_w, int64_t K);
struct NormFold {
  Tensor xc, hc, wc, sum;
  float eps, w_offset;
};
NormFold fold_inputs(const Tensor& x, const Tensor& h, const Tensor& norm_w, float eps, float w_offset);
// Whether the CUDA folds would take the products (cuda::linear_fold_takes /
// qlinear_fold_takes; false in a build without CUDA), asked before fold_inputs and the
// outputs are made, so that a declined fold does not make them twice.
bool dense_fold_takes(DType wdt, int64_t K, bool rope);
bool quant_fold_takes(int bits, int group_size, int64_t K, bool rope);
#ifdef MLXCEL_WITH_CUDA
// The fold as the CUDA launches take it (backends/cuda/kernels.h).
cuda::RowNorm row_norm(const NormFold& f);
#endif

}  // namespace mlxcel::ops::detail
