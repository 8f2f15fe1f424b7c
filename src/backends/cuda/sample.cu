// Token sampling on the device (ops/sample.h): one block of 1024 threads per row, the
// steps of the CPU reference (backends/cpu/sample.cpp) without sorting the vocabulary.
// Thresholds are found by bisection over the 32-bit order-preserving keys of the
// logits (32 counting or mass passes over the row, which the LM head just wrote to L2):
// the k-th largest key for top-k (plus a bisection over ids when the k-th value is
// tied), and the largest key whose tokens hold top_p of the mass for top-p. Every sum is
// a fixed-order block reduction, so a row's token depends only on its logits and u.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace mlxcel::cuda {

namespace {

using cpu::SampleRow;
constexpr int kThreads = 1024;

__device__ __forceinline__ uint32_t key_of(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

struct RowState {
  const float* l;
  int64_t V;
  float m, inv_t;
  uint32_t tk;     // top-k: keys > tk are in; == tk with id < tie_id are in
  int64_t tie_id;  // (no top-k: tk = 0, tie_id = V: everything is in)
  float min_p;
  uint32_t tp;     // top-p: keys >= tp are kept
};

__device__ __forceinline__ bool in_top_k(const RowState& s, uint32_t k, int64_t i) {
  return k > s.tk || (k == s.tk && i < s.tie_id);
}
// The token's weight exp((l - m) / T) when it passes top-k and min-p, else 0.
__device__ __forceinline__ float weight(const RowState& s, float v, int64_t i) {
  const uint32_t k = key_of(v);
  if (!in_top_k(s, k, i)) return 0.0f;
  const float e = expf((v - s.m) * s.inv_t);
  return e >= s.min_p ? e : 0.0f;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(const float* __restrict__ logits, int64_t V,
                                                          const SampleRow* __restrict__ rows, int32_t* __restrict__ out) {
  pdl_enter();
  __shared__ float sh[32];
  __shared__ float scan[32];
  __shared__ int pick;
  const int64_t r = blockIdx.x;
  const SampleRow p = rows[r];
  RowState s{};
  s.l = logits + r * V;
  s.V = V;
  // 1. max and argmax (lowest id on ties).
  float bv = -INFINITY;
  int64_t bi = V;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) {
    const float v = s.l[i];
    if (v > bv || (v == bv && i < bi)) bv = v, bi = i;
  }
  s.m = block_max(bv, sh);
  {
    // Lowest id holding the max.
    float cand = bv == s.m ? float(bi) : INFINITY;
    cand = -block_max(-cand, sh);
    bi = int64_t(cand);
  }
  if (p.temperature <= 0.0f) {
    if (threadIdx.x == 0) out[r] = int32_t(bi);
    return;
  }
  s.inv_t = 1.0f / p.temperature;
  s.min_p = p.min_p;
  s.tk = 0;
  s.tie_id = V;
  // 2. top-k: the largest key t with count(key >= t) >= k.
  if (p.top_k > 0 && p.top_k < V) {
    uint64_t lo = 0, hi = 0xFFFFFFFFull;
    while (lo < hi) {
      const uint64_t mid = lo + (hi - lo + 1) / 2;
      float c = 0.0f;
      for (int64_t i = threadIdx.x; i < V; i += kThreads) c += key_of(s.l[i]) >= uint32_t(mid) ? 1.0f : 0.0f;
      if (block_sum(c, sh) >= float(p.top_k)) lo = mid;
      else hi = mid - 1;
    }
    s.tk = uint32_t(lo);
    float above = 0.0f;
    for (int64_t i = threadIdx.x; i < V; i += kThreads) above += key_of(s.l[i]) > s.tk ? 1.0f : 0.0f;
    const float need = float(p.top_k) - block_sum(above, sh);  // tied tokens to take, lowest ids first
    // The smallest id bound b with count(key == tk, id < b) >= need.
    int64_t ilo = 1, ihi = V;
    while (ilo < ihi) {
      const int64_t mid = (ilo + ihi) / 2;
      float c = 0.0f;
      for (int64_t i = threadIdx.x; i < mid; i += kThreads) c += key_of(s.l[i]) == s.tk ? 1.0f : 0.0f;
      if (block_sum(c, sh) >= need) ihi = mid;
      else ilo = mid + 1;
    }
    s.tie_id = ilo;
  }
  // 3. Z over the top-k set (before min-p, as the reference normalizes).
  float z = 0.0f;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) {
    const float v = s.l[i];
    if (in_top_k(s, key_of(v), i)) z += expf((v - s.m) * s.inv_t);
  }
  z = block_sum(z, sh);
  // 5. top-p: the largest key t with mass(key >= t, passing top-k and min-p) >= top_p Z.
  s.tp = 0;
  if (p.top_p < 1.0f) {
    const float target = p.top_p * z;
    float all = 0.0f;
    for (int64_t i = threadIdx.x; i < V; i += kThreads) all += weight(s, s.l[i], i);
    if (block_sum(all, sh) >= target) {
      uint64_t lo = 0, hi = 0xFFFFFFFFull;
      while (lo < hi) {
        const uint64_t mid = lo + (hi - lo + 1) / 2;
        float c = 0.0f;
        for (int64_t i = threadIdx.x; i < V; i += kThreads) {
          const float v = s.l[i];
          if (key_of(v) >= uint32_t(mid)) c += weight(s, v, i);
        }
        if (block_sum(c, sh) >= target) lo = mid;
        else hi = mid - 1;
      }
      s.tp = uint32_t(lo);
    }
  }
  // 6. The draw: thread t owns ids [t C, (t + 1) C); an exclusive scan of their masses
  // finds the owner of u * total, which walks its ids.
  const int64_t C = (V + kThreads - 1) / kThreads;
  const int64_t i0 = int64_t(threadIdx.x) * C, i1 = min(V, i0 + C);
  float mine = 0.0f;
  int64_t last_mine = -1;
  for (int64_t i = i0; i < i1; ++i) {
    const float v = s.l[i];
    if (key_of(v) < s.tp) continue;
    const float w = weight(s, v, i);
    if (w > 0.0f) mine += w, last_mine = i;
  }
  // Inclusive scan over the block: warps, then the 32 warp totals.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float inc = mine;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float n = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += n;
  }
  if (lane == 31) scan[warp] = inc;
  if (threadIdx.x == 0) pick = -1;
  __syncthreads();
  if (warp == 0) {
    float w = scan[lane];
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float n = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += n;
    }
    scan[lane] = w;  // inclusive totals of warps 0..lane
  }
  __syncthreads();
  const float total = scan[31];
  const float before = inc - mine + (warp > 0 ? scan[warp - 1] : 0.0f);
  const float target = p.u * total;
  if (mine > 0.0f && target >= before && target < before + mine) {
    float acc = before;
    int64_t chosen = last_mine;
    for (int64_t i = i0; i < i1; ++i) {
      const float v = s.l[i];
      if (key_of(v) < s.tp) continue;
      const float w = weight(s, v, i);
      if (w <= 0.0f) continue;
      acc += w;
      if (target < acc) {
        chosen = i;
        break;
      }
    }
    atomicMax(&pick, int(chosen));  // one owner in exact arithmetic; rounding: the later id
  }
  __syncthreads();
  const int chosen = pick;
  if (chosen >= 0) {
    if (threadIdx.x == 0) out[r] = chosen;
    return;
  }
  // Rounding left no owner (u * total at the very end): the highest kept id.
  const float lm = block_max(float(last_mine), sh);
  if (threadIdx.x == 0) out[r] = lm >= 0.0f ? int32_t(lm) : int32_t(bi);
}

}  // namespace

void sample(const Tensor& logits, const SampleRow* rows, Tensor& out) {
  init();
  const int64_t V = logits.dim(-1);
  const int64_t R = V ? logits.numel() / V : 0;
  if (R == 0) return;
  MLXCEL_CUDA_REQUIRE(R <= INT32_MAX && V <= (int64_t(1) << 24), "sample: at most 2^24 ids per row");
  Launch l(out);
  const size_t bytes = size_t(R) * sizeof(SampleRow);
  SampleRow* dev_rows = static_cast<SampleRow*>(scratch(bytes, 3));
  MLXCEL_CUDA_CHECK(cudaMemcpyAsync(dev_rows, rows, bytes, cudaMemcpyHostToDevice, l.stream));
  launch_pdl(sample_kernel, unsigned(R), kThreads, 0, l.stream, logits.data<float>(), V, dev_rows, out.data<int32_t>());
  MLXCEL_CUDA_LAUNCH_CHECK();
}

}  // namespace mlxcel::cuda
