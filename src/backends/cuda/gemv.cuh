// Device helpers shared by the batch-1 GEMV kernels of linear.cu and quantized.cu (the
// GemvParts layout of linear_impl.h).
#pragma once

#include "backends/cuda/common.cuh"
#include "backends/cuda/linear_impl.h"

namespace mlxcel::cuda {

// What unit `unit` of the grid (a block or a warp, as plan_blocks counted them) computes:
// its part, that part's row count, and its first output row (k_out output rows a unit).
struct GemvRows {
  int part;
  int64_t N, row0;
};
__device__ __forceinline__ GemvRows gemv_rows(const GemvParts& P, unsigned unit, int k_out) {
  int part = 0;
  while (part + 1 < P.n && unit >= P.block_end[part]) ++part;
  return {part, P.N[part], int64_t(unit - (part ? P.block_end[part - 1] : 0u)) * k_out};
}

// The units plan_blocks planned (a warp grid rounds up to whole blocks past it).
template <bool kGated>
__device__ __forceinline__ unsigned gemv_units(const GemvParts& P) {
  return P.block_end[kGated ? 0 : P.n - 1];
}

// Lane r of a warp writes output row row0 + r from sum[r] (the warp's reduced dot
// products of its R weight rows): + bias (dtype bdt), and when gated act(gate) * up with
// up's sum in sum[r + R / 2]; out in dtype odt.
template <int R, bool kGated>
__device__ __forceinline__ void store_warp_rows(const float (&sum)[R], int lane, const GemvParts& P, int part,
                                                int64_t row0, int64_t N, int bdt, int odt) {
  constexpr int kOut = kGated ? R / 2 : R;
  if (lane >= kOut) return;
  float s = 0.0f, u = 0.0f;
#pragma unroll
  for (int r = 0; r < kOut; ++r)
    if (r == lane) s = sum[r], u = kGated ? sum[r + kOut] : 0.0f;
  const int64_t n = row0 + lane;
  if (n >= N) return;
  if (P.bias[part]) s += load_any(P.bias[part], bdt, n);
  if constexpr (kGated) {
    if (P.bias[1]) u += load_any(P.bias[1], bdt, n);
    s = act_any(Act(P.gate_act), s) * u;
  }
  store_any(P.out[part], odt, n, s);
}

}  // namespace mlxcel::cuda
