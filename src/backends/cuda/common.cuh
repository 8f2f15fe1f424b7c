// Device helpers shared by the .cu files of backends/cuda (internal).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cpu/kernels.h"
#include "backends/cuda/runtime.h"
#include "tensor/tensor.h"

namespace mlxcel::cuda {

// Blocks of `threads` that fit an SM for Kernel at `smem` bytes of dynamic shared memory,
// after raising the kernel's limit to smem: set and measured again only when smem changes
// (per kernel and device).
template <auto Kernel>
int blocks_at_smem(size_t smem, int threads, int dev) {
  struct Conf {
    size_t smem = 0;
    int blocks = 0;
  };
  static Conf configured[64];
  Conf& cf = configured[dev >= 0 && dev < 64 ? dev : 0];
  if (cf.smem != smem) {
    MLXCEL_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    int blocks = 0;
    MLXCEL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, Kernel, threads, smem));
    cf.smem = smem, cf.blocks = blocks < 1 ? 1 : blocks;
  }
  return cf.blocks;
}

using bf16 = __nv_bfloat16;
using f16 = __half;
using cpu::Act;

// Widen / narrow between storage types and f32.
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(f16 v) { return __half2float(v); }
__device__ __forceinline__ float to_f(bf16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ f16 from_f<f16>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float v) { return __float2bfloat16_rn(v); }

// The DType of a storage type (float, f16, bf16).
template <typename T>
constexpr DType dtype_of() {
  return std::is_same_v<T, bf16> ? DType::bf16 : std::is_same_v<T, f16> ? DType::f16 : DType::f32;
}

// Reads element i of a buffer of runtime dtype (f32|f16|bf16) as f32.
__device__ __forceinline__ float load_any(const void* p, int dt, int64_t i) {
  if (dt == int(DType::f32)) return static_cast<const float*>(p)[i];
  if (dt == int(DType::f16)) return __half2float(static_cast<const f16*>(p)[i]);
  return __bfloat162float(static_cast<const bf16*>(p)[i]);
}
__device__ __forceinline__ void store_any(void* p, int dt, int64_t i, float v) {
  if (dt == int(DType::f32)) static_cast<float*>(p)[i] = v;
  else if (dt == int(DType::f16)) static_cast<f16*>(p)[i] = __float2half_rn(v);
  else static_cast<bf16*>(p)[i] = __float2bfloat16_rn(v);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread
// gets the result. `sh` holds 32 floats. Contains __syncthreads.
__device__ __forceinline__ float block_sum(float v, float* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  float r = lane < nw ? sh[lane] : 0.0f;
  return warp_sum(r);
}
__device__ __forceinline__ float block_max(float v, float* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  float r = lane < nw ? sh[lane] : -INFINITY;
  return warp_max(r);
}

template <Act A>
__device__ __forceinline__ float act(float x) {
  // Same formulas as backends/cpu (activate_scalar).
  if constexpr (A == Act::silu) return x / (1.0f + expf(-x));
  if constexpr (A == Act::gelu_tanh) {
    const float k = 0.7978845608028654f;
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
  }
  if constexpr (A == Act::gelu_erf) return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
  if constexpr (A == Act::relu) return x > 0.0f ? x : 0.0f;
  if constexpr (A == Act::relu2) return x > 0.0f ? x * x : 0.0f;
  return x;
}

// act<A>(x) with A chosen at run time (once per output value, e.g. in a fused GEMV).
__device__ __forceinline__ float act_any(Act a, float x) {
  switch (a) {
    case Act::silu: return act<Act::silu>(x);
    case Act::gelu_tanh: return act<Act::gelu_tanh>(x);
    case Act::gelu_erf: return act<Act::gelu_erf>(x);
    case Act::relu: return act<Act::relu>(x);
    case Act::relu2: return act<Act::relu2>(x);
  }
  return x;
}

// f(T{}) with T the storage type of dt (f32 | f16 | bf16); else throws "<what> must be
// f32|f16|bf16".
template <typename F>
void by_float_type(DType dt, const char* what, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); break;
    case DType::f16: f(f16{}); break;
    case DType::bf16: f(bf16{}); break;
    default: throw_internal(std::string(what) + " must be f32|f16|bf16");
  }
}

#define MLXCEL_CUDA_REQUIRE(cond, msg)                                                      \
  do {                                                                                      \
    if (!(cond))                                                                            \
      ::mlxcel::cuda::throw_internal(std::string("internal check failed at ") + __FILE__ + ":" + \
                                     std::to_string(__LINE__) + ": " + #cond + ": " + (msg)); \
  } while (0)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid size for a grid-stride loop over n elements.
inline unsigned grid_for(int64_t n, int threads) {
  int64_t b = ceil_div(n, threads);
  if (b < 1) b = 1;
  if (b > 65535LL * 64) b = 65535LL * 64;
  return unsigned(b);
}

// ---- programmatic dependent launch (sm_90) ----
// A kernel started by launch_pdl may begin while the kernel before it in the stream is
// still running. Every such kernel calls pdl_wait() in every thread that reads anything
// an earlier kernel wrote, or writes anything, before doing so; before it, only reads of
// weights (data no kernel writes) may run. pdl_wait() returns once the previous grid has
// finished and its writes are visible; because that grid itself waited for the one
// before it, everything earlier in the stream is finished too. pdl_trigger() lets the
// next PDL kernel be scheduled once every block of this grid has called it (or exited).
// Both are no-ops for kernels launched without the attribute, and before sm_90.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
// The entry of a kernel with no weights to read early: wait, then let the next start.
__device__ __forceinline__ void pdl_enter() {
  pdl_wait();
  pdl_trigger();
}

// kernel<<<grid, block, smem, st>>>(args...) with programmatic stream serialization when
// pdl_on (runtime.h). Only for kernels that follow the pdl_wait() rule above.
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_on() ? 1 : 0;
  MLXCEL_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

// Sets the tensor's device current and returns its stream.
struct Launch {
  DeviceGuard guard;
  cudaStream_t stream;
  explicit Launch(const Tensor& t) : guard(t.device().index), stream(stream_of(t.device().index)) {}
  explicit Launch(int device) : guard(device), stream(stream_of(device)) {}
};

}  // namespace mlxcel::cuda
