// Internal to backends/cuda: error checking, per-device streams and handles.
#pragma once

#include <cstdint>
#include <string>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "tensor/tensor.h"

namespace mlxcel::cuda {

// Throw mlxcel::Error naming the call, its place and CUDA's message.
[[noreturn]] void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t s, const char* call, const char* file, int line);
// Error helpers for .cu files, which cannot include fmt (nvcc rejects its constexpr code).
[[noreturn]] void throw_invalid(const std::string& message);      // ErrorKind::invalid_request
[[noreturn]] void throw_unsupported(const std::string& message);  // ErrorKind::unsupported
[[noreturn]] void throw_internal(const std::string& message);     // ErrorKind::internal

inline void check_cuda(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess) throw_cuda_error(e, call, file, line);
}
inline void check_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) throw_cublas_error(s, call, file, line);
}

// Makes `index` the current device for the scope.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

cudaStream_t stream_of(int device);       // the device's step stream (created on first use)
cudaStream_t current_stream();            // stream of the current device
int current_device();
int sm_count(int device);                  // streaming multiprocessors (cached)
int compute_major(int device);             // compute capability major, 0 for a bad index (cached)
// Programmatic dependent launch (common.cuh launch_pdl): on when MLXCEL_CUDA_PDL=1 or
// set_pdl(true) (kernels.h) and the current device is sm_90+ (the switch is read first:
// off costs one load a launch).
bool pdl_on();
cublasHandle_t cublas_handle(int device);  // bound to stream_of(device)
// A scratch buffer of at least `bytes` on the current device, stream-ordered (valid
// until the next call on this device; kernels on the same stream may use it). Slots:
// 0-2 operands of linear/qlinear and attention partials, 3 error flags, 4 the cuBLASLt
// workspace, 5 the bf16 activations of qgemm_mma, 6 the row-group counters and partial
// sums of qgemv_ks.
constexpr int kScratchSlots = 7;
void* scratch(size_t bytes, int slot = 0);
// A device copy of a small i32 tensor (returns it as is when already on `device`).
Tensor on_device_i32(const Tensor& t, int device);

}  // namespace mlxcel::cuda

#define MLXCEL_CUDA_CHECK(call) ::mlxcel::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define MLXCEL_CUBLAS_CHECK(call) ::mlxcel::cuda::check_cublas((call), #call, __FILE__, __LINE__)
// After every kernel launch.
#define MLXCEL_CUDA_LAUNCH_CHECK() MLXCEL_CUDA_CHECK(cudaGetLastError())
