// Device helpers for the MLX affine quantized GEMVs (quantized.cu, qgemv_stream.cu): a
// "chunk" of 32 weight values and the 32 values of x it meets.
#pragma once

#include <cstdint>

#include "backends/cuda/common.cuh"

namespace mlxcel::cuda {

// A "chunk" is 32 consecutive values of a row = BITS u32 words, word-aligned, and
// inside one group (group_size >= 32). Loads a chunk's words.
template <int BITS>
__device__ __forceinline__ void load_chunk(const uint32_t* p, uint32_t* wd) {
  if constexpr (BITS % 4 == 0) {
#pragma unroll
    for (int j = 0; j < BITS / 4; ++j) {
      const uint4 u = reinterpret_cast<const uint4*>(p)[j];
      wd[4 * j] = u.x, wd[4 * j + 1] = u.y, wd[4 * j + 2] = u.z, wd[4 * j + 3] = u.w;
    }
  } else if constexpr (BITS == 2) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    wd[0] = u.x, wd[1] = u.y;
  } else {
#pragma unroll
    for (int j = 0; j < BITS; ++j) wd[j] = p[j];
  }
}

// Value j (0..31) of a chunk; j is a compile-time constant after unrolling.
template <int BITS>
__device__ __forceinline__ float chunk_value(const uint32_t* wd, int j) {
  constexpr uint32_t mask = (1u << BITS) - 1u;
  const int bit = j * BITS, w = bit >> 5, sh = bit & 31;
  uint32_t v = wd[w] >> sh;
  if (sh + BITS > 32) v |= wd[w + 1] << (32 - sh);
  // float(q) without I2F (a quarter-rate instruction): 2^23 + q has q in the low
  // mantissa bits, so the subtraction is exact. One LOP3 + one FADD.
  return __uint_as_float((v & mask) | 0x4B000000u) - 8388608.0f;
}

// Design 0's form of chunk_value for 4 bits: two instructions a value. A word holds
// values 8w..8w+7 as nibbles; values 0-2 are masked where they lie (bits 0-11), values
// 3-7 in the word shifted right by 12 (bits 0-19), so no nibble reaches the exponent. The
// masked bits, read as an f32, are the subnormal q * 2^(4 pos) * 2^-149 (one LOP3; FFMA
// takes subnormals at full rate, no FTZ in this build). The x value it meets was scaled by
// 2^(64 - 4 pos) (scale_x_chunk4), so each product is x * q * 2^-85 exactly and the
// chunk's sum, times 2^85 (kChunkUnscale), is the sum of x * q with the same roundings
// wherever the products and partial sums are above 2^-41 in size (smaller ones land among
// the subnormals: an absolute error below 2^-64) and |x| < 2^64. (The same form for 8 bits
// measured slower: q8 layer 63.1 -> 59.2% of copy bandwidth on an H100.)
__device__ __forceinline__ int nibble_pos(int j) {
  const int k = j % 8;
  return k < 3 ? k : k - 3;
}
__device__ __forceinline__ float chunk_value_in_place4(const uint32_t* wd, int j) {
  const uint32_t src = j % 8 < 3 ? wd[j / 8] : wd[j / 8] >> 12;
  return __uint_as_float(src & (0xFu << (4 * nibble_pos(j))));
}
__device__ __forceinline__ void scale_x_chunk4(float (&xv)[32]) {
#pragma unroll
  for (int j = 0; j < 32; ++j) xv[j] *= __uint_as_float(uint32_t(127 + 64 - 4 * nibble_pos(j)) << 23);
}
constexpr float kChunkUnscale = 38685626227668133590597632.0f;  // 2^85

// The 32 f32 values of x at p (16-byte aligned).
__device__ __forceinline__ void load_x_chunk(const float* __restrict__ p, float (&xv)[32]) {
  const float4* xp = reinterpret_cast<const float4*>(p);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float4 f = xp[j];
    xv[4 * j] = f.x, xv[4 * j + 1] = f.y, xv[4 * j + 2] = f.z, xv[4 * j + 3] = f.w;
  }
}

}  // namespace mlxcel::cuda
