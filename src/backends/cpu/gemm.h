// Cache-blocked GEMM y[M, N] = x[M, K] @ W[N, K]^T over a pluggable weight source
// (dense f32/f16/bf16 or quantized), shared by linear.cpp and quantized.cpp.
// Internal to backends/cpu.
//
// Work is split over column tiles of kNB weight rows (and over row ranges of x when
// there are few tiles). For each tile and each K block the weight panel is widened
// to f32 once (Source::pack), packed k-major and stays in L2 while every row of x
// streams past it; a kMR x kNR register-tiled outer-product kernel does the arithmetic.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "backends/cpu/parallel.h"
#include "backends/cpu/simd.h"

namespace mlxcel::cpu::gemm {
inline namespace MLXCEL_CPU_NS {  // one build per ISA level (simd.h)

// Register tile: kMR rows of x by kNV vectors (kNR = kNV * kWidth columns) of y.
#if defined(MLXCEL_SIMD_AVX512)
constexpr int kMR = 8, kNV = 2;
#elif defined(MLXCEL_SIMD_AVX2)
constexpr int kMR = 6, kNV = 2;
#else
constexpr int kMR = 4, kNV = 4;
#endif
constexpr int kNR = kNV * simd::kWidth;
constexpr int64_t kNB = 64;   // weight rows (columns of y) per tile, a multiple of kNR
constexpr int64_t kKB = 512;  // K block (a multiple of every quantization group size)
static_assert(kNB % kNR == 0);

// y[m][0..ncols) (+)= sum_k x[m][k] * wp[k][0..ncols) for m < MR: an outer-product
// kernel over a packed panel wp [kb][kNR] (zero past ncols). Accumulators stay in
// registers for the whole K block; x is broadcast one element at a time.
template <int MR>
void micro(const float* x, int64_t ldx, const float* wp, int64_t kb, float* y, int64_t ldy, bool accumulate,
           int ncols) {
  using namespace simd;
  VecF c[MR][kNV];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < kNV; ++v) c[m][v] = zero();
  for (int64_t k = 0; k < kb; ++k) {
    VecF b[kNV];
    for (int v = 0; v < kNV; ++v) b[v] = load(wp + k * kNR + v * kWidth);
    for (int m = 0; m < MR; ++m) {
      const VecF a = set1(x[m * ldx + k]);
      for (int v = 0; v < kNV; ++v) c[m][v] = fma(a, b[v], c[m][v]);
    }
  }
  if (ncols == kNR) {
    for (int m = 0; m < MR; ++m)
      for (int v = 0; v < kNV; ++v) {
        float* out = y + m * ldy + v * kWidth;
        store(out, accumulate ? add(load(out), c[m][v]) : c[m][v]);
      }
    return;
  }
  alignas(64) float tmp[kNR];
  for (int m = 0; m < MR; ++m) {
    for (int v = 0; v < kNV; ++v) store(tmp + v * kWidth, c[m][v]);
    float* out = y + m * ldy;
    for (int n = 0; n < ncols; ++n) out[n] = accumulate ? out[n] + tmp[n] : tmp[n];
  }
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, bool, int);

// kernel for mr rows (1 <= mr <= kMR).
inline MicroFn micro_kernel(int mr) {
  static const auto table = []<int... I>(std::integer_sequence<int, I...>) {
    return std::array<MicroFn, kMR>{&micro<I + 1>...};
  }(std::make_integer_sequence<int, kMR>{});
  return table[size_t(mr - 1)];
}

// Packs rows [0, nb) x columns [0, kb) of a row-major panel of T (leading
// dimension ld) into kNR-column groups [group][kb][kNR] of f32, zero-padding the
// last group.
template <typename T>
void pack_panel(const T* w, int64_t ld, int64_t nb, int64_t kb, float* packed) {
  for (int64_t g = 0; g * kNR < nb; ++g) {
    float* dst = packed + g * kb * kNR;
    const int64_t n0 = g * kNR, cols = std::min<int64_t>(kNR, nb - n0);
    if (cols < kNR) std::fill(dst, dst + kb * kNR, 0.0f);
    // NOTE: k outer, rows inner: stores are sequential and the kNR source rows are
    // read as kNR short streams that stay in L1.
    const T* src = w + n0 * ld;
    for (int64_t k = 0; k < kb; ++k)
      for (int64_t j = 0; j < cols; ++j) dst[k * kNR + j] = to_f32(src[j * ld + k]);
  }
}

// Decode-sized products (M <= kGemvMaxRows) stream each weight row once for all rows
// of x. fn(m0, mr, n0, n1) computes rows [m0, m0 + mr) of y (mr <= kGemvGroup) for
// weight rows [n0, n1). Beyond kGemvGroup rows the weights are walked in short tiles
// and every group of rows reads a tile while it is still in L1/L2, so the weights
// still come from memory once per step.
// A full group runs NB weight rows at a time: M x NB accumulators + NB + 1 registers.
#if defined(MLXCEL_SIMD_AVX512)
constexpr int kGemvGroup = 8, kGemvBlockN = 3;
#else
constexpr int kGemvGroup = 4, kGemvBlockN = 3;
#endif
template <int Group = kGemvGroup, typename Fn>
void for_gemv_groups(int64_t M, int64_t n0, int64_t n1, Fn&& fn) {
  if (M <= Group) {
    fn(int64_t(0), int(M), n0, n1);
    return;
  }
  constexpr int64_t kTile = 24;  // weight rows per tile; a multiple of kGemvBlockN
  for (int64_t t = n0; t < n1; t += kTile)
    for (int64_t m0 = 0; m0 < M; m0 += Group)
      fn(m0, int(std::min<int64_t>(Group, M - m0)), t, std::min(n1, t + kTile));
}

// Source concept:
//   void pack(int64_t n0, int64_t nb, int64_t k0, int64_t kb, float* buf, float* packed) const;
// writes the f32 weights of rows n0.. and columns k0.. into `packed` in the
// pack_panel layout; buf (kNB * kKB floats) is scratch.
template <typename Source>
void run(const float* x, int64_t M, int64_t K, int64_t N, const Source& src, const float* bias, float* y) {
  if (K == 0) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) y[m * N + n] = bias ? bias[n] : 0.0f;
    return;
  }
  const int64_t n_tiles = (N + kNB - 1) / kNB;
  const int threads = ThreadPool::global().size();
  // Few column tiles: split the rows of x as well so every thread has work.
  int64_t m_splits = std::max<int64_t>(1, std::min<int64_t>((2 * threads + n_tiles - 1) / n_tiles, M / (4 * kMR)));
  const int64_t m_chunk = (M + m_splits - 1) / m_splits;
  m_splits = (M + m_chunk - 1) / m_chunk;
  ThreadPool::global().parallel_for(n_tiles * m_splits, [&](int64_t item0, int64_t item1) {
    std::vector<float> buf(size_t(kNB * kKB)), packed(size_t(kNB * kKB));
    for (int64_t item = item0; item < item1; ++item) {
      const int64_t n0 = (item / m_splits) * kNB, nb = std::min(kNB, N - n0);
      const int64_t m_begin = (item % m_splits) * m_chunk, m_end = std::min(M, m_begin + m_chunk);
      for (int64_t k0 = 0; k0 < K; k0 += kKB) {
        const int64_t kb = std::min(kKB, K - k0);
        src.pack(n0, nb, k0, kb, buf.data(), packed.data());
        const bool acc = k0 > 0;
        for (int64_t m = m_begin; m < m_end; m += kMR) {
          const int mr = int(std::min<int64_t>(kMR, m_end - m));
          const MicroFn kernel = micro_kernel(mr);
          for (int64_t g = 0; g * kNR < nb; ++g) {
            const int cols = int(std::min<int64_t>(kNR, nb - g * kNR));
            kernel(x + m * K + k0, K, packed.data() + g * kb * kNR, kb, y + m * N + n0 + g * kNR, N, acc, cols);
          }
        }
      }
      if (bias) {
        for (int64_t m = m_begin; m < m_end; ++m)
          for (int64_t n = 0; n < nb; ++n) y[m * N + n0 + n] += bias[n0 + n];
      }
    }
  });
}

}  // namespace MLXCEL_CPU_NS
}  // namespace mlxcel::cpu::gemm
