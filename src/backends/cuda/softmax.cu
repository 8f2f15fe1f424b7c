// Row reductions: softmax (f32) and argmax (f32|f16|bf16 -> i32, lowest index on ties, NaN wins).
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace mlxcel::cuda {

namespace {

__global__ void softmax_kernel(const float* __restrict__ x, float* __restrict__ out, int64_t D) {
  __shared__ float sh[32];
  const float* row = x + int64_t(blockIdx.x) * D;
  float* o = out + int64_t(blockIdx.x) * D;
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) m = fmaxf(m, row[i]);
  m = block_max(m, sh);
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += expf(row[i] - m);
  s = block_sum(s, sh);
  const float inv = 1.0f / s;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) o[i] = expf(row[i] - m) * inv;
}

// (value, index) pairs: a beats b when larger, NaN against non-NaN, or equal with a lower index.
__device__ __forceinline__ bool better(float va, int ia, float vb, int ib) {
  const bool na = isnan(va), nb = isnan(vb);
  if (na != nb) return na;
  if (na && nb) return ia < ib;
  return va > vb || (va == vb && ia < ib);
}

template <typename T>
__global__ void argmax_kernel(const T* __restrict__ x, int32_t* __restrict__ out, int64_t D) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const T* row = x + int64_t(blockIdx.x) * D;
  float bv = -INFINITY;
  int bi = INT32_MAX;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const float v = to_f(row[i]);
    if (better(v, int(i), bv, bi)) {
      bv = v;
      bi = int(i);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x >> 5); ++w) {
      if (better(sv[w], si[w], bv, bi)) {
        bv = sv[w];
        bi = si[w];
      }
    }
    out[blockIdx.x] = bi == INT32_MAX ? 0 : bi;
  }
}

}  // namespace

void softmax(const Tensor& x, Tensor& out) {
  init();
  const int64_t D = x.dim(-1);
  const int64_t rows = D ? x.numel() / D : 0;
  if (rows == 0) return;
  Launch l(out);
  MLXCEL_CUDA_REQUIRE(rows <= INT32_MAX, "softmax: too many rows");
  softmax_kernel<<<unsigned(rows), 256, 0, l.stream>>>(x.data<float>(), out.data<float>(), D);
  MLXCEL_CUDA_LAUNCH_CHECK();
}

void argmax(const Tensor& x, Tensor& out) {
  init();
  const int64_t D = x.dim(-1);
  const int64_t rows = D ? x.numel() / D : 0;
  if (rows == 0) return;
  Launch l(out);
  MLXCEL_CUDA_REQUIRE(D <= INT32_MAX && rows <= INT32_MAX, "argmax: too large");
  switch (x.dtype()) {
    case DType::f32: argmax_kernel<float><<<unsigned(rows), 256, 0, l.stream>>>(x.data<float>(), out.data<int32_t>(), D); break;
    case DType::f16: argmax_kernel<f16><<<unsigned(rows), 256, 0, l.stream>>>(static_cast<const f16*>(x.raw()), out.data<int32_t>(), D); break;
    case DType::bf16: argmax_kernel<bf16><<<unsigned(rows), 256, 0, l.stream>>>(static_cast<const bf16*>(x.raw()), out.data<int32_t>(), D); break;
    default: throw_internal("argmax: x must be f32|f16|bf16");
  }
  MLXCEL_CUDA_LAUNCH_CHECK();
}

}  // namespace mlxcel::cuda
