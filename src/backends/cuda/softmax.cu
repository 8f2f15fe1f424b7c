// Row reductions: softmax (f32) and argmax (f32|f16|bf16 -> i32, lowest index on ties, NaN wins).
#include <algorithm>

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

// Block (r, p) takes values [p * chunk, (p + 1) * chunk) of row r, 8 loads in flight per
// thread; the winner goes to out[r] (one part) or to the partials (pv, pi)[r * parts + p].
// "better" is a total order, so any grouping gives the same winner.
constexpr int kArgmaxThreads = 256;
template <typename T>
__global__ void __launch_bounds__(kArgmaxThreads) argmax_kernel(const T* __restrict__ x, int64_t D, int64_t chunk, int parts,
                                                     float* __restrict__ pv, int* __restrict__ pi,
                                                     int32_t* __restrict__ out) {
  pdl_enter();
  __shared__ float sv[kArgmaxThreads / 32];
  __shared__ int si[kArgmaxThreads / 32];
  const int64_t r = blockIdx.x, begin = int64_t(blockIdx.y) * chunk;
  const int64_t end = begin + chunk < D ? begin + chunk : D;
  const T* row = x + r * D;
  float bv = -INFINITY;
  int bi = INT32_MAX;
  for (int64_t base = begin + threadIdx.x; base < end; base += 8 * kArgmaxThreads) {
    float v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int64_t i = base + int64_t(k) * kArgmaxThreads;
      v[k] = i < end ? to_f(row[i]) : -INFINITY;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int64_t i = base + int64_t(k) * kArgmaxThreads;
      if (i < end && better(v[k], int(i), bv, bi)) bv = v[k], bi = int(i);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sv[warp] = bv, si[warp] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kArgmaxThreads / 32; ++w)
      if (better(sv[w], si[w], bv, bi)) bv = sv[w], bi = si[w];
    if (parts == 1) {
      out[r] = bi == INT32_MAX ? 0 : bi;
    } else {
      pv[r * parts + blockIdx.y] = bv;
      pi[r * parts + blockIdx.y] = bi;
    }
  }
}

// One warp per row: the winner of its parts (at most 32).
__global__ void argmax_merge_kernel(const float* __restrict__ pv, const int* __restrict__ pi, int parts, int64_t rows,
                                    int32_t* __restrict__ out) {
  pdl_enter();
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  float bv = lane < parts ? pv[r * parts + lane] : -INFINITY;
  int bi = lane < parts ? pi[r * parts + lane] : INT32_MAX;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  if (lane == 0) out[r] = bi == INT32_MAX ? 0 : bi;
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
  // Rows split into parts until about two blocks per SM (a vocabulary row is 0.5 MB: one
  // block per row left most of the card idle, 190 us for 64 rows of 128K on an H100).
  const int64_t target = 2 * int64_t(sm_count(out.device().index));
  const int parts = int(std::min<int64_t>({32, ceil_div(target, rows), ceil_div(D, 4096)}));  // >= 1
  const int64_t chunk = ceil_div(D, parts);
  float* pv = nullptr;
  int* pi = nullptr;
  if (parts > 1) {
    pv = static_cast<float*>(scratch(size_t(rows * parts) * 8, 0));
    pi = reinterpret_cast<int*>(pv + rows * parts);
  }
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(parts));
  by_float_type(x.dtype(), "argmax: x", [&](auto tag) {
    using T = decltype(tag);
    launch_pdl(argmax_kernel<T>, grid, kArgmaxThreads, 0, l.stream, static_cast<const T*>(x.raw()), D, chunk, parts, pv, pi,
                                                 out.data<int32_t>());
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
  if (parts > 1) launch_pdl(argmax_merge_kernel, unsigned(ceil_div(rows, 8)), 256, 0, l.stream, pv, pi, parts, rows, out.data<int32_t>());
  MLXCEL_CUDA_LAUNCH_CHECK();
}

}  // namespace mlxcel::cuda
