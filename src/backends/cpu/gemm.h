// Cache-blocked GEMM y[M, N] = x[M, K] @ W[N, K]^T over a pluggable weight source
// (dense f32/f16/bf16 or quantized), shared by linear.cpp and quantized.cpp.
// Internal to backends/cpu.
//
// Work is split over column tiles of NB weight rows (and over row ranges of x when
// there are few tiles). For each tile and each K block the weight panel is widened
// to f32 once (Source::panel) and stays in L2 while every row of x streams past it;
// an MR x NR register-tiled dot-product kernel does the arithmetic.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "backends/cpu/parallel.h"
#include "backends/cpu/simd.h"

namespace mlxcel::cpu::gemm {

#if defined(MLXCEL_SIMD_AVX512)
constexpr int kMR = 4, kNR = 4;
#else
constexpr int kMR = 4, kNR = 2;
#endif
constexpr int64_t kNB = 64;   // weight rows per tile
constexpr int64_t kKB = 512;  // K block (a multiple of every quantization group size)

// y[m][n] (+)= sum_k x[m][k] * w[n][k] for m < MR, n < NR, k < kb.
template <int MR, int NR>
inline void micro(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t kb, float* y, int64_t ldy,
                  bool accumulate) {
  using namespace simd;
  VecF acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = zero();
  int64_t k = 0;
  for (; k + kWidth <= kb; k += kWidth) {
    VecF xv[MR];
    for (int m = 0; m < MR; ++m) xv[m] = load(x + m * ldx + k);
    for (int n = 0; n < NR; ++n) {
      VecF wv = load(w + n * ldw + k);
      for (int m = 0; m < MR; ++m) acc[m][n] = fma(xv[m], wv, acc[m][n]);
    }
  }
  for (int m = 0; m < MR; ++m) {
    for (int n = 0; n < NR; ++n) {
      float s = hsum(acc[m][n]);
      for (int64_t kk = k; kk < kb; ++kk) s += x[m * ldx + kk] * w[n * ldw + kk];
      float& out = y[m * ldy + n];
      out = accumulate ? out + s : s;
    }
  }
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t, bool);

template <int MR, int... NRs>
void fill_row(MicroFn* row, std::integer_sequence<int, NRs...>) {
  ((row[NRs] = &micro<MR, NRs + 1>), ...);
}
template <int... MRs>
void fill_table(MicroFn (*table)[kNR], std::integer_sequence<int, MRs...>) {
  ((fill_row<MRs + 1>(table[MRs], std::make_integer_sequence<int, kNR>{})), ...);
}
// kernel(mr, nr) for edge tiles (1 <= mr <= kMR, 1 <= nr <= kNR).
inline MicroFn micro_kernel(int mr, int nr) {
  static const auto table = [] {
    struct T {
      MicroFn f[kMR][kNR];
    } t{};
    fill_table(t.f, std::make_integer_sequence<int, kMR>{});
    return t;
  }();
  return table.f[mr - 1][nr - 1];
}

// Source concept:
//   const float* panel(int64_t n0, int64_t nb, int64_t k0, int64_t kb, float* buf, int64_t& ld) const;
// returns f32 weights [nb][ld] for rows n0.. and columns k0.., either pointing into
// the source (f32 weights) or filled into buf (capacity kNB * kKB).
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
  int64_t m_splits = std::max<int64_t>(1, std::min<int64_t>((2 * threads + n_tiles - 1) / n_tiles, M / (8 * kMR)));
  const int64_t m_chunk = (M + m_splits - 1) / m_splits;
  m_splits = (M + m_chunk - 1) / m_chunk;
  ThreadPool::global().parallel_for(n_tiles * m_splits, [&](int64_t item0, int64_t item1) {
    std::vector<float> buf(size_t(kNB * kKB));
    for (int64_t item = item0; item < item1; ++item) {
      const int64_t n0 = (item / m_splits) * kNB, nb = std::min(kNB, N - n0);
      const int64_t m_begin = (item % m_splits) * m_chunk, m_end = std::min(M, m_begin + m_chunk);
      for (int64_t k0 = 0; k0 < K; k0 += kKB) {
        const int64_t kb = std::min(kKB, K - k0);
        int64_t ldw = 0;
        const float* w = src.panel(n0, nb, k0, kb, buf.data(), ldw);
        const bool acc = k0 > 0;
        for (int64_t m = m_begin; m < m_end; m += kMR) {
          const int mr = int(std::min<int64_t>(kMR, m_end - m));
          for (int64_t n = 0; n < nb; n += kNR) {
            const int nr = int(std::min<int64_t>(kNR, nb - n));
            micro_kernel(mr, nr)(x + m * K + k0, K, w + n * ldw, ldw, kb, y + m * N + n0 + n, N, acc);
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

}  // namespace mlxcel::cpu::gemm
