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
#include <cstring>
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

// The work split of run() and run_bf16(): column tiles of kNB weight rows, and row
// ranges of x as well when there are few tiles, so every thread has work (tiles of mr
// rows of x). For each tile and row range, block(scratch, n0, nb, k0, kb, m_begin, m_end)
// runs per K block of kKB (one Scratch per thread, kept), then the bias is added.
template <typename Scratch, typename Block>
void for_each_block(int64_t M, int64_t K, int64_t N, int64_t mr, const float* bias, float* y, const Block& block) {
  const int64_t n_tiles = (N + kNB - 1) / kNB;
  const int threads = ThreadPool::global().size();
  int64_t m_splits = std::max<int64_t>(1, std::min<int64_t>((2 * threads + n_tiles - 1) / n_tiles, M / (4 * mr)));
  const int64_t m_chunk = (M + m_splits - 1) / m_splits;
  m_splits = (M + m_chunk - 1) / m_chunk;
  ThreadPool::global().parallel_for(n_tiles * m_splits, [&](int64_t item0, int64_t item1) {
    // NOTE: one per thread for the process's life: made per call, the f32 panels (2 x 128 KB)
    // were mmap'd, faulted in and unmapped by every product of a prefill.
    thread_local Scratch scratch;
    for (int64_t item = item0; item < item1; ++item) {
      const int64_t n0 = (item / m_splits) * kNB, nb = std::min(kNB, N - n0);
      const int64_t m_begin = (item % m_splits) * m_chunk, m_end = std::min(M, m_begin + m_chunk);
      for (int64_t k0 = 0; k0 < K; k0 += kKB) block(scratch, n0, nb, k0, std::min(kKB, K - k0), m_begin, m_end);
      if (bias) {
        for (int64_t m = m_begin; m < m_end; ++m)
          for (int64_t n = 0; n < nb; ++n) y[m * N + n0 + n] += bias[n0 + n];
      }
    }
  });
}

// Per-thread scratch of run(): the source's buffer and the packed f32 panel.
struct PanelScratch {
  std::vector<float> buf = std::vector<float>(size_t(kNB * kKB)), packed = std::vector<float>(size_t(kNB * kKB));
};

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
  for_each_block<PanelScratch>(
      M, K, N, kMR, bias, y,
      [&](PanelScratch& s, int64_t n0, int64_t nb, int64_t k0, int64_t kb, int64_t m_begin, int64_t m_end) {
        src.pack(n0, nb, k0, kb, s.buf.data(), s.packed.data());
        for (int64_t m = m_begin; m < m_end; m += kMR) {
          const MicroFn kernel = micro_kernel(int(std::min<int64_t>(kMR, m_end - m)));
          for (int64_t g = 0; g * kNR < nb; ++g) {
            const int cols = int(std::min<int64_t>(kNR, nb - g * kNR));
            kernel(x + m * K + k0, K, s.packed.data() + g * kb * kNR, kb, y + m * N + n0 + g * kNR, N, k0 > 0, cols);
          }
        }
      });
}

#if defined(MLXCEL_SIMD_AVX512)
// ---- bf16 products on AVX512_BF16 (avx512 build; callers check has_avx512_bf16()) ----
//
// run_bf16 computes what run() does with x and the packed weights rounded to bf16 (to
// nearest even) and the products summed in f32 by VDPBF16PS, two k at a time: the
// numerics of a bf16 model's GEMM on the GPU (the CUDA backend's tensor-core path rounds
// x to the weight dtype too), at twice the f32 FMA rate. The Source packs f32 panels as
// for run(); each kNR-column group is then turned into bf16 pairs.
#define MLXCEL_BF16_TARGET __attribute__((target("avx512bf16")))
static_assert(kNR == 32, "the bf16 kernels take 32-column groups");
constexpr int kMRb = 12;  // rows of x per register tile: 12 x 2 accumulators

MLXCEL_BF16_TARGET inline __m256i bf16_of(__m512 v) {
  const __m256bh h = _mm512_cvtneps_pbh(v);
  __m256i r;
  std::memcpy(&r, &h, sizeof r);
  return r;
}

// out[kp][n] = bf16 pair (rows 2 kp, 2 kp + 1) of column n of a packed group [kb][kNR];
// an odd kb's last pair has a zero second half.
MLXCEL_BF16_TARGET inline void pack_bf16_pairs(const float* p, int64_t kb, uint32_t* out) {
  for (int64_t kp = 0; 2 * kp < kb; ++kp) {
    const float* r0 = p + 2 * kp * kNR;
    for (int h = 0; h < 2; ++h) {
      const __m256i a = bf16_of(_mm512_loadu_ps(r0 + 16 * h));
      const __m256i b = bf16_of(2 * kp + 1 < kb ? _mm512_loadu_ps(r0 + kNR + 16 * h) : _mm512_setzero_ps());
      // unpack works per 128-bit lane: lo = columns 0-3 | 8-11, hi = 4-7 | 12-15.
      const __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);
      uint32_t* o = out + kp * kNR + 16 * h;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), _mm256_permute2x128_si256(lo, hi, 0x20));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
  }
}

// r[i] (16 u32 lanes each) = column i of the 16 x 16 matrix whose row i was r[i].
inline void transpose16x16(__m512i* r) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // u[4 i + j], 128-bit lane L: column 4 L + j of rows 4 i .. 4 i + 3.
  for (int i = 0; i < 4; ++i) {
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // Then a 4 x 4 transpose of 128-bit lanes for each j.
  for (int j = 0; j < 4; ++j) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x44), v1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xEE);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x44),
                  v3 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xEE);
    r[j] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    r[4 + j] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    r[8 + j] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    r[12 + j] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
  }
}

// The pair panels run_bf16 multiplies, [group][kp][kNR], straight from weight rows:
// pairs(j, kp0) gives the bf16 pairs kp0 .. kp0 + 15 of row j (j < nb) as 16 u32 lanes,
// and 16 x 16 transposes turn rows into columns. kb must be a multiple of 32. The same
// words as pack_panel + pack_bf16_pairs, without the f32 panel or the scalar transpose.
template <typename RowPairs>
inline void pack_pairs_from_rows(const RowPairs& pairs, int64_t nb, int64_t kb, uint32_t* out) {
  const int64_t kp_n = kb / 2;
  for (int64_t g = 0; g * kNR < nb; ++g)
    for (int h = 0; h < kNR / 16; ++h) {
      const int64_t c0 = g * kNR + 16 * h;
      uint32_t* o = out + g * kp_n * kNR + 16 * h;
      for (int64_t kp0 = 0; kp0 < kp_n; kp0 += 16) {
        __m512i r[16];
        for (int i = 0; i < 16; ++i) r[i] = c0 + i < nb ? pairs(c0 + i, kp0) : _mm512_setzero_si512();
        transpose16x16(r);
        for (int t = 0; t < 16; ++t) _mm512_storeu_si512(o + (kp0 + t) * kNR, r[t]);
      }
    }
}

// The 16 bf16 pairs of p[0..32) (nearest even): u32 lane i = p[2 i] | p[2 i + 1] << 16.
MLXCEL_BF16_TARGET inline __m512i bf16_pairs32(const float* p) {
  const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(p + 16), _mm512_loadu_ps(p));
  __m512i r;
  std::memcpy(&r, &h, 64);
  return r;
}

// Row pairs of f32 rows (row j at rows + j * ld), rounded to bf16 as pack_bf16_pairs does.
struct F32RowPairs {
  const float* rows;
  int64_t ld;
  MLXCEL_BF16_TARGET __m512i operator()(int64_t j, int64_t kp0) const { return bf16_pairs32(rows + j * ld + 2 * kp0); }
};

// xp[m][kp] = bf16 pair of x[m][2 kp], x[m][2 kp + 1] (zero past K).
MLXCEL_BF16_TARGET inline void x_bf16_pairs(const float* x, int64_t K, int64_t m0, int64_t m1, uint32_t* xp) {
  const int64_t kp_n = (K + 1) / 2;
  for (int64_t m = m0; m < m1; ++m) {
    const float* xr = x + m * K;
    uint32_t* o = xp + m * kp_n;
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) _mm512_storeu_si512(o + k / 2, bf16_pairs32(xr + k));
    for (; k < K; k += 2) {
      const uint32_t lo = f32_to_bf16(xr[k]), hi = k + 1 < K ? f32_to_bf16(xr[k + 1]) : 0;
      o[k / 2] = lo | (hi << 16);
    }
  }
}

// y[m][0..ncols) (+)= the MR rows of xp against a pair panel wp [kp_n][kNR].
template <int MR>
MLXCEL_BF16_TARGET void micro_bf16(const uint32_t* xp, int64_t ldx, const uint32_t* wp, int64_t kp_n, float* y,
                                   int64_t ldy, bool accumulate, int ncols) {
  __m512 c[MR][2];
  for (int m = 0; m < MR; ++m) c[m][0] = c[m][1] = _mm512_setzero_ps();
  for (int64_t kp = 0; kp < kp_n; ++kp) {
    __m512bh b0, b1;
    const __m512i w0 = _mm512_loadu_si512(wp + kp * kNR), w1 = _mm512_loadu_si512(wp + kp * kNR + 16);
    std::memcpy(&b0, &w0, 64);
    std::memcpy(&b1, &w1, 64);
    for (int m = 0; m < MR; ++m) {
      const __m512i ai = _mm512_set1_epi32(int(xp[m * ldx + kp]));
      __m512bh a;
      std::memcpy(&a, &ai, 64);
      c[m][0] = _mm512_dpbf16_ps(c[m][0], a, b0);
      c[m][1] = _mm512_dpbf16_ps(c[m][1], a, b1);
    }
  }
  const __mmask16 k0 = ncols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << ncols) - 1);
  const __mmask16 k1 = ncols >= 32 ? __mmask16(0xFFFF) : ncols <= 16 ? __mmask16(0) : __mmask16((1u << (ncols - 16)) - 1);
  for (int m = 0; m < MR; ++m) {
    float* out = y + m * ldy;
    __m512 v0 = c[m][0], v1 = c[m][1];
    if (accumulate) {
      v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(k0, out), v0);
      v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(k1, out + 16), v1);
    }
    _mm512_mask_storeu_ps(out, k0, v0);
    _mm512_mask_storeu_ps(out + 16, k1, v1);
  }
}

using MicroBf16Fn = void (*)(const uint32_t*, int64_t, const uint32_t*, int64_t, float*, int64_t, bool, int);

inline MicroBf16Fn micro_bf16_kernel(int mr) {
  static const auto table = []<int... I>(std::integer_sequence<int, I...>) {
    return std::array<MicroBf16Fn, kMRb>{&micro_bf16<I + 1>...};
  }(std::make_integer_sequence<int, kMRb>{});
  return table[size_t(mr - 1)];
}

// Per-thread scratch of run_bf16(): run()'s, and the panel's bf16 pairs.
struct PairScratch : PanelScratch {
  std::vector<uint32_t> pairs = std::vector<uint32_t>(size_t(kNB * kKB / 2));
};

template <typename Source>
MLXCEL_BF16_TARGET void run_bf16(const float* x, int64_t M, int64_t K, int64_t N, const Source& src, const float* bias,
                                 float* y) {
  if (K == 0) return run(x, M, K, N, src, bias, y);
  const int64_t kp_all = (K + 1) / 2;
  std::vector<uint32_t> xp(size_t(M * kp_all));
  cpu::parallel_for(M, K * 2, [&](int64_t m0, int64_t m1) { x_bf16_pairs(x, K, m0, m1, xp.data()); });
  // kKB is even: every K block starts on a pair.
  for_each_block<PairScratch>(
      M, K, N, kMRb, bias, y,
      [&](PairScratch& s, int64_t n0, int64_t nb, int64_t k0, int64_t kb, int64_t m_begin, int64_t m_end) {
        const int64_t kp_n = (kb + 1) / 2;
        // Sources that build pair panels from their rows (Source::pair_rows) skip the f32
        // panel when kb is a multiple of 32.
        constexpr bool kRows = requires { src.pair_rows(n0, nb, k0, kb, s.buf.data(), s.pairs.data()); };
        if (kRows && kb % 32 == 0) {
          if constexpr (kRows) src.pair_rows(n0, nb, k0, kb, s.buf.data(), s.pairs.data());
        } else {
          src.pack(n0, nb, k0, kb, s.buf.data(), s.packed.data());
          for (int64_t g = 0; g * kNR < nb; ++g)
            pack_bf16_pairs(s.packed.data() + g * kb * kNR, kb, s.pairs.data() + g * kp_n * kNR);
        }
        for (int64_t m = m_begin; m < m_end; m += kMRb) {
          const MicroBf16Fn kernel = micro_bf16_kernel(int(std::min<int64_t>(kMRb, m_end - m)));
          for (int64_t g = 0; g * kNR < nb; ++g) {
            const int cols = int(std::min<int64_t>(kNR, nb - g * kNR));
            kernel(xp.data() + m * kp_all + k0 / 2, kp_all, s.pairs.data() + g * kp_n * kNR, kp_n,
                   y + m * N + n0 + g * kNR, N, k0 > 0, cols);
          }
        }
      });
}
#endif  // MLXCEL_SIMD_AVX512

}  // namespace MLXCEL_CPU_NS
}  // namespace mlxcel::cpu::gemm
