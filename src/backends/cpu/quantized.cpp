// MLX affine quantized matmul, dequantize and quantize.
//
// Packing: row n of `packed` is a little-endian bit stream; value k of the row
// occupies bits [k * bits, (k + 1) * bits). For 2, 4 and 8 bits this is MLX's
// "value j at bits j * bits of each u32"; for 3, 5 and 6 bits values straddle
// bytes and u32 words exactly as MLX packs them.
#include "backends/cpu/quantized.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/gemm.h"
#include "backends/cpu/isa.h"
#include "backends/cpu/linear.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/simd.h"
#include "base/error.h"

// One build per ISA level (isa.h); dispatch.cpp defines the public mlxcel::cpu functions.
namespace mlxcel::cpu::MLXCEL_CPU_NS {

namespace {

// SIMD loads read up to this many bytes from where a vector's values start.
constexpr int64_t kOverread = 16;

// Value k of a row (reads only the bytes that hold it).
inline uint32_t qvalue(const uint8_t* row, int64_t k, int bits) {
  const int64_t bit = k * bits;
  const int64_t byte = bit >> 3;
  const int shift = int(bit & 7);
  uint32_t v = row[byte];
  if (shift + bits > 8) v |= uint32_t(row[byte + 1]) << 8;
  return (v >> shift) & ((1u << bits) - 1);
}

// Unpacks the kWidth values k.. of a row into floats; k is a multiple of kWidth,
// so for the SIMD paths the values start on a byte boundary.
struct Unpacker {
  int bits;
#if defined(MLXCEL_SIMD_AVX512)
  __m512i shuf, shift, mask;
  explicit Unpacker(int b) : bits(b) {
    alignas(64) int8_t s[64];
    alignas(64) int32_t sh[16];
    for (int l = 0; l < 16; ++l) {
      const int bit = l * b;
      s[4 * l] = int8_t(bit >> 3);
      s[4 * l + 1] = int8_t((bit >> 3) + 1);
      s[4 * l + 2] = s[4 * l + 3] = int8_t(0x80);
      sh[l] = bit & 7;
    }
    shuf = _mm512_load_si512(s);
    shift = _mm512_load_si512(sh);
    mask = _mm512_set1_epi32((1 << b) - 1);
  }
  // Reads 16 bytes.
  simd::VecF operator()(const uint8_t* row, int64_t k) const {
    const uint8_t* p = row + ((k * bits) >> 3);
    __m512i src = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    __m512i g = _mm512_and_si512(_mm512_srlv_epi32(_mm512_shuffle_epi8(src, shuf), shift), mask);
    return _mm512_cvtepi32_ps(g);
  }
#elif defined(MLXCEL_SIMD_AVX2)
  __m256i shuf, shift, mask;
  explicit Unpacker(int b) : bits(b) {
    alignas(32) int8_t s[32];
    alignas(32) int32_t sh[8];
    for (int l = 0; l < 8; ++l) {
      const int bit = l * b;
      // NOTE: pshufb indexes within each 128-bit half; both halves hold the same 8 bytes.
      s[4 * l] = int8_t(bit >> 3);
      s[4 * l + 1] = int8_t((bit >> 3) + 1);
      s[4 * l + 2] = s[4 * l + 3] = int8_t(0x80);
      sh[l] = bit & 7;
    }
    shuf = _mm256_load_si256(reinterpret_cast<const __m256i*>(s));
    shift = _mm256_load_si256(reinterpret_cast<const __m256i*>(sh));
    mask = _mm256_set1_epi32((1 << b) - 1);
  }
  // Reads 8 bytes.
  simd::VecF operator()(const uint8_t* row, int64_t k) const {
    const uint8_t* p = row + ((k * bits) >> 3);
    int64_t v;
    std::memcpy(&v, p, 8);
    __m256i g = _mm256_shuffle_epi8(_mm256_set1_epi64x(v), shuf);
    g = _mm256_and_si256(_mm256_srlv_epi32(g, shift), mask);
    return _mm256_cvtepi32_ps(g);
  }
#else
  explicit Unpacker(int b) : bits(b) {}
  simd::VecF operator()(const uint8_t* row, int64_t k) const { return float(qvalue(row, k, bits)); }
#endif
};

// Rows whose SIMD loads could run past the end of the packed buffer are copied
// into a padded buffer first (only the last one or two rows ever are).
class RowReader {
 public:
  explicit RowReader(const QuantMatrix& w)
      : base_(reinterpret_cast<const uint8_t*>(w.packed)), row_bytes_(w.K * w.bits / 8), n_rows_(w.N) {}
  const uint8_t* row(int64_t n) {
    const uint8_t* p = base_ + n * row_bytes_;
    if ((n_rows_ - 1 - n) * row_bytes_ >= kOverread) return p;
    pad_.assign(size_t(row_bytes_ + kOverread), 0);
    std::memcpy(pad_.data(), p, size_t(row_bytes_));
    return pad_.data();
  }

 private:
  const uint8_t* base_;
  int64_t row_bytes_, n_rows_;
  std::vector<uint8_t> pad_;
};

template <typename S>
inline float sval(const void* p, int64_t i) {
  return to_f32(static_cast<const S*>(p)[i]);
}

// ---- decode: GEMV over N, M <= kGemvMaxRows ------------------------------------
//
// Each weight vector is unpacked once, dequantized (q * scale + bias, one FMA) and
// used by all M rows. Columns are processed in passes that keep M rows of x in L1.
template <int M, typename S, int GS>
void qgemv_rows(const float* x, const QuantMatrix& w, int64_t n0, int64_t n1, int64_t k0, int64_t k1, float* y,
                bool accumulate) {
  using namespace simd;
  constexpr int U = M <= 4 ? 2 : 1;  // independent accumulators per row
  static_assert(GS % (U * kWidth) == 0);
  const int64_t K = w.K, G = K / GS;
  const Unpacker unpack(w.bits);
  RowReader reader(w);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = reader.row(n);
    const S* scales = static_cast<const S*>(w.scales) + n * G;
    const S* biases = static_cast<const S*>(w.biases) + n * G;
    VecF acc[M][U];
    for (int m = 0; m < M; ++m)
      for (int u = 0; u < U; ++u) acc[m][u] = zero();
    // NOTE: GS is a compile-time constant so the group body unrolls completely and
    // the accumulators stay in registers.
    for (int64_t g = k0 / GS; g < k1 / GS; ++g) {
      const VecF sv = set1(to_f32(scales[g])), bv = set1(to_f32(biases[g]));
      for (int j = 0; j < GS; j += U * kWidth) {
        const int64_t k = g * GS + j;
        for (int u = 0; u < U; ++u) {
          const VecF wv = fma(unpack(row, k + u * kWidth), sv, bv);
          for (int m = 0; m < M; ++m) acc[m][u] = fma(wv, load(x + m * K + k + u * kWidth), acc[m][u]);
        }
      }
    }
    for (int m = 0; m < M; ++m) {
      VecF a = acc[m][0];
      for (int u = 1; u < U; ++u) a = add(a, acc[m][u]);
      const float s = hsum(a);
      y[m * w.N + n] = accumulate ? y[m * w.N + n] + s : s;
    }
  }
}

template <int M, typename S>
void qgemv_chunked(const float* x, const QuantMatrix& w, int64_t n0, int64_t n1, float* y) {
  // A multiple of 128 columns keeps passes on group boundaries.
  const int64_t kc = std::max<int64_t>(128, (int64_t(24 * 1024) / (4 * M)) / 128 * 128);
  for (int64_t k0 = 0; k0 < w.K; k0 += kc) {
    const int64_t k1 = std::min(w.K, k0 + kc);
    switch (w.group_size) {
      case 32: qgemv_rows<M, S, 32>(x, w, n0, n1, k0, k1, y, k0 > 0); break;
      case 64: qgemv_rows<M, S, 64>(x, w, n0, n1, k0, k1, y, k0 > 0); break;
      case 128: qgemv_rows<M, S, 128>(x, w, n0, n1, k0, k1, y, k0 > 0); break;
      default: MLXCEL_CHECK(false, "group size {}", w.group_size);
    }
  }
}

#if defined(MLXCEL_SIMD_AVX512) || defined(MLXCEL_SIMD_AVX2)
// A row's G scales as floats, kWidth at a time (one vector load each).
template <typename S>
inline void scales_to_f32(const S* scales, int64_t G, float* out) {
  using namespace simd;
  int64_t g = 0;
  for (; g + kWidth <= G; g += kWidth) store(out + g, load(scales + g));
  for (; g < G; ++g) out[g] = to_f32(scales[g]);
}

// ---- 4-bit decode: nibbles as they lie --------------------------------------------
//
// Byte b of a row holds values 2b (low nibble) and 2b + 1 (high nibble). x is split once
// per call into its even and odd values (xe, xo: M rows of K / 2) with the sum of each
// group (xs: M rows of K / GS), so a vector of bytes widened to 32-bit lanes gives the
// low nibbles with one AND and the high ones with one shift, each multiplied into its
// half of x as it is, without a shuffle or a per-weight scale. Each group's sum is then
// scaled once: y = sum_g s_g sum_k q_k x_k + b_g sum_k x_k, which is MLX's own qmv
// arithmetic. About 7 instructions per 32 weights, against 14 for the general path.
template <typename S, int GS>
void qgemv4_rows(const float* xe, const float* xo, const float* xs, const QuantMatrix& w, int64_t n0, int64_t n1,
                 float* y) {
  using namespace simd;
  const int64_t K = w.K, G = K / GS, half = K / 2;
  const uint8_t* base = reinterpret_cast<const uint8_t*>(w.packed);
  // A row's scales as floats, converted kWidth at a time (one vector load each) instead of
  // one scalar conversion and broadcast per group (per-thread scratch, as above).
  thread_local std::vector<float> sbuf;
  sbuf.resize(static_cast<size_t>(G));
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = base + n * half;
    const S* scales = static_cast<const S*>(w.scales) + n * G;
    const S* biases = static_cast<const S*>(w.biases) + n * G;
    scales_to_f32(scales, G, sbuf.data());
    VecF acc = zero();
    for (int64_t g = 0; g < G; ++g) {
      // Separate sums for the low and high nibbles and for odd and even steps:
      // independent FMA chains.
      constexpr int P = GS / 2 >= 2 * kWidth ? 2 : 1;
      VecF pa[P][2];
      for (int q = 0; q < P; ++q) pa[q][0] = pa[q][1] = zero();
      // kWidth bytes = 2 kWidth values per step.
      for (int j = 0; j < GS / 2; j += kWidth) {
        const int q = (j / kWidth) % P;
        const int64_t b = g * (GS / 2) + j;
#if defined(MLXCEL_SIMD_AVX512)
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + b)));
        const VecF lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)));
        const VecF hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
#else
        const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + b)));
        const VecF lo = _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15)));
        const VecF hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
#endif
        pa[q][0] = fma(lo, load(xe + b), pa[q][0]);
        pa[q][1] = fma(hi, load(xo + b), pa[q][1]);
      }
      VecF t = add(pa[0][0], pa[0][1]);
      for (int q = 1; q < P; ++q) t = add(t, add(pa[q][0], pa[q][1]));
      acc = fma(t, set1(sbuf[size_t(g)]), acc);
    }
    // The biases' term, sum_g b_g sum(x over group g), as one dot product over the groups.
    y[n] = hsum(acc) + dot(xs, biases, G);
  }
}

// Products of 1 to kGemvMaxRows rows of x with n (1-4) matrices of one K in one parallel
// region (a decode step's q, k and v, or gate and up: one hand-off to the workers, x
// prepared once). pass(i, m0, rows, b0, b1) multiplies rows m0 .. m0 + rows of x (rows <=
// pass_rows: kDecodePassRows, or fewer where a kernel's registers ask) with rows [b0, b1)
// of matrix i. More than pass_rows rows of x go
// in passes over blocks of weight rows that stay in L2 (at most, the whole share: one
// stream). Each row of x gets the same bits whatever the batch. (cpu_kernels_bench, q4 g64
// 4096 x 4096, bf16 form, ms hot / cold: M = 4: 0.85 / 0.93 against the f32 path's 1.1 /
// 1.5; 8 rows of x in one pass, 64 KB of bf16 pairs at K = 4096, left L1: 4.2 / 4.3.)
constexpr int kDecodePassRows = 4;
template <typename Pass>
void decode_region(int64_t M, const QuantMatrix* ws, int n, const Pass& pass, int pass_rows = kDecodePassRows) {
  MLXCEL_CHECK(n >= 1 && n <= 4 && M >= 1 && M <= kGemvMaxRows, "decode region of {} x {}", n, M);
  int64_t first[4] = {0}, total = 0;  // where each matrix's rows start in [0, total)
  for (int i = 0; i < n; ++i) first[i] = total, total += ws[i].N;
  const int64_t K = ws[0].K;
  const int64_t block = M <= pass_rows ? total : std::max<int64_t>(1, 65536 / (K * ws[0].bits / 8));
  auto body = [&](int64_t t0, int64_t t1) {
    for (int i = 0; i < n && t0 < t1; ++i) {
      const int64_t end = first[i] + ws[i].N;
      if (t0 >= end) continue;
      const int64_t n1 = std::min(t1, end) - first[i];
      for (int64_t b0 = t0 - first[i]; b0 < n1; b0 += block)
        for (int64_t m0 = 0; m0 < M; m0 += pass_rows)
          pass(i, m0, int(std::min<int64_t>(pass_rows, M - m0)), b0, std::min(n1, b0 + block));
      t0 = std::min(t1, end);
    }
  };
  ThreadPool::global().parallel_for(total, body, std::max<int64_t>(16, (int64_t(1) << 15) / std::max<int64_t>(1, K * M)));
}

// f(std::integral_constant<int, rows>) for rows 1 .. kDecodePassRows.
template <typename F>
inline void with_rows(int rows, F&& f) {
  switch (rows) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;
  }
}

// f(std::integral_constant<int, gs>) for the decode kernels' group sizes 32, 64 and 128.
template <typename F>
inline void with_group_size(int gs, F&& f) {
  switch (gs) {
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    default: f(std::integral_constant<int, 128>{}); break;
  }
}

// How far ahead the decode kernels prefetch a weight row of rb bytes: at least 4 KB, on the
// same byte of a later row.
inline int64_t prefetch_ahead(int64_t rb) { return (4096 + rb - 1) / rb * rb; }

#if defined(MLXCEL_SIMD_AVX512)

// Up to 16 values of a row's scales (or biases) as f32, k the lanes to load (the others 0;
// masked-off lanes never fault).
template <typename S>
inline __m512 load16_masked(const S* p, __mmask16 k) {
  if constexpr (std::is_same_v<S, float>) return _mm512_maskz_loadu_ps(k, p);
  else if constexpr (std::is_same_v<S, f16_t>) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p));
  else return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)), 16));
}

// ---- 4- and 8-bit decode on AVX512_BF16 ---------------------------------------------
//
// A nibble q shifted into the mantissa of bf16 16.0 (bits 0x4180 | q << 3) is exactly
// 16 + q, so VDPBF16PS multiplies the weights as they lie, 32 pairs per instruction, with
// no conversion to f32. x is split as before into even and odd values, each given as NX
// bf16 parts (x = hi + lo: hi = bf16(x), lo = bf16(x - hi); with NX = 2 the pair carries
// 16 of f32's 24 bits, a relative error of at most 2^-17 per value), and each group's
// sum of those values, X_g. Then y = sum_g s_g D_g + sum_g (b_g - 16 s_g) X_g, where D_g
// = sum (16 + q) x over the group, accumulated in f32. (An offset of 16 rather than the
// 128 one OR gives: it keeps the cancelled part, 16 s_g X_g, below the size of the
// products themselves.) About 7 instructions per 64 weights with NX = 1 and 11 with
// NX = 2, against 14 for the f32 path above. Measured (session 22, Zen 4 VM, 2 threads):
// cpu_kernels_bench q4 g64 4096 x 4096, ms hot / from memory: f32 path 0.39 / 0.65,
// NX = 2 0.33 / 0.42, NX = 1 0.22 / 0.28; mlxcel bench --synthetic qwen3-0.6b --format q4
// tg128: f32 40-54 tok/s, NX = 2 43-50, NX = 1 58-65 (GGUF Q4_0 in the same minutes
// 65-70). Hence the default (isa.h): one part for bf16-scaled weights (a bf16 model's
// activations are bf16 anyway), two otherwise.
constexpr int kQ4BfOffset = 16;
// 8-bit weights the same way, a byte's nibbles apart: q = l + 16 h, and the kernel sums
// (16 + l) x + 16 (16 + h) x = q x + 272 x over x in its natural order.
constexpr int kQ8BfOffset = 272;
template <int BITS>
constexpr int kBfOffset = BITS == 4 ? kQ4BfOffset : kQ8BfOffset;

MLXCEL_BF16_TARGET inline __m512 dp_bf16(__m512 acc, __m512i a, __m512i b) {
  __m512bh ab, bb;
  std::memcpy(&ab, &a, 64);
  std::memcpy(&bb, &b, 64);
  return _mm512_dpbf16_ps(acc, ab, bb);
}

// Chunk c (32 bytes) of a row as bf16 (16 + nibble): lo = each byte's low nibble, hi = its
// high one. 4-bit weights: 64 values, lo the even ones and hi the odd ones, in the order of
// x's even and odd halves. 8-bit weights: 32 values, q = lo + 16 hi.
MLXCEL_BF16_TARGET inline void bf16_nibbles(const uint8_t* row, int64_t c, int64_t pf, __m512i& lo, __m512i& hi) {
  const __m512i m78 = _mm512_set1_epi16(0x78), off = _mm512_set1_epi16(0x4180);
  // pf bytes ahead, once per 64-byte line (cpu_kernels_bench, q4 g64 4096 x 4096 from
  // memory, x as 2 parts: 0.59-0.79 ms without, 0.41-0.44 at 4 KB; 2 KB 0.46-0.58, 8 KB
  // 0.42-0.43; NTA no better).
  if ((c & 1) == 0) _mm_prefetch(reinterpret_cast<const char*>(row + 32 * c + pf), _MM_HINT_T0);
  const __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * c)));
  // (A & B) | C: the nibble moved to mantissa bits 3..6, over 16.0's bits.
  lo = _mm512_ternarylogic_epi32(_mm512_slli_epi16(v, 3), m78, off, 0xEA);
  hi = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 1), m78, off, 0xEA);
}

// A chunk against one row of x (xb: its NX parts): 16 lanes of partial sums of (16 + q) x.
template <int NX>
MLXCEL_BF16_TARGET inline __m512 q4_bf16_dot(__m512i lo, __m512i hi, const uint16_t* xb, int64_t c, int64_t K) {
  const uint16_t* xe = xb + 32 * c;
  const int64_t half = K / 2;
  // One chain through both halves (no add of two partial sums: one vector op fewer a
  // chunk). gguf_bench decode q4_0 qwen3-0.6b, the MLX q4 copy's GEMVs, three alternated
  // passes, median ms a token: two sums 11.85 / 12.52 / 12.24, one chain 11.05 / 11.61 /
  // 11.51 (session 26).
  __m512 t = dp_bf16(_mm512_setzero_ps(), lo, _mm512_loadu_si512(xe));
  t = dp_bf16(t, hi, _mm512_loadu_si512(xe + half));
  if constexpr (NX == 2) {
    t = dp_bf16(t, lo, _mm512_loadu_si512(xe + K));
    t = dp_bf16(t, hi, _mm512_loadu_si512(xe + K + half));
  }
  return t;
}

// A chunk of 8-bit weights (32 values, 32 bytes; lo / hi = each byte's low / high nibble)
// against one row of x in its natural order: 16 lanes of partial sums of (q + 272) x,
// added to t (the low nibbles' chain starts from it: no add a chunk; gguf_bench decode
// q8_0 qwen3-0.6b, MLX q8 copy, four alternated passes, median ms: 20.07 / 19.43 / 21.11
// / 20.46 with an add -> 18.95 / 18.29 / 19.56 / 19.73, session 26).
template <int NX>
MLXCEL_BF16_TARGET inline __m512 q8_bf16_dot(__m512 t, __m512i lo, __m512i hi, const uint16_t* xb, int64_t c,
                                              int64_t K) {
  const uint16_t* xc = xb + 32 * c;
  __m512 tl = dp_bf16(t, lo, _mm512_loadu_si512(xc));
  __m512 th = dp_bf16(_mm512_setzero_ps(), hi, _mm512_loadu_si512(xc));
  if constexpr (NX == 2) {
    tl = dp_bf16(tl, lo, _mm512_loadu_si512(xc + K));
    th = dp_bf16(th, hi, _mm512_loadu_si512(xc + K));
  }
  return _mm512_fmadd_ps(th, _mm512_set1_ps(16.0f), tl);
}

// A chunk's sum of (offset + q) x added to t, a group's running sum (kFirst: the group's
// first chunk, t zero).
template <int BITS, int NX, bool kFirst>
MLXCEL_BF16_TARGET inline __m512 bf16_dot_into(__m512 t, __m512i lo, __m512i hi, const uint16_t* xb, int64_t c,
                                               int64_t K) {
  if constexpr (BITS == 8) {
    return q8_bf16_dot<NX>(t, lo, hi, xb, c, K);
  } else {
    const __m512 d = q4_bf16_dot<NX>(lo, hi, xb, c, K);
    return kFirst ? d : _mm512_add_ps(t, d);
  }
}

// Group gi (kCpg chunks) of a row against M rows of x: its sum of (offset + q) x, times its
// scale (sv, all lanes), added to a. (A function, not a lambda: a lambda lacks the bf16 target and would
// call the helpers above instead of inlining them.)
template <int BITS, int NX, int M, int kCpg>
MLXCEL_BF16_TARGET inline void bf16_group(const uint8_t* row, int64_t gi, int64_t pf, const uint16_t* xb, int64_t K,
                                          __m512 sv, __m512 (&a)[M]) {
  __m512i lo, hi;
  __m512 t[M];
  bf16_nibbles(row, gi * kCpg, pf, lo, hi);
  for (int m = 0; m < M; ++m)
    t[m] = bf16_dot_into<BITS, NX, true>(_mm512_setzero_ps(), lo, hi, xb + m * NX * K, gi * kCpg, K);
  for (int j = 1; j < kCpg; ++j) {
    bf16_nibbles(row, gi * kCpg + j, pf, lo, hi);
    for (int m = 0; m < M; ++m) t[m] = bf16_dot_into<BITS, NX, false>(t[m], lo, hi, xb + m * NX * K, gi * kCpg + j, K);
  }
  for (int m = 0; m < M; ++m) a[m] = _mm512_fmadd_ps(t[m], sv, a[m]);
}

// M rows of x against weight rows [n0, n1). xb: per row of x, NX parts of K bf16 values
// each, a part's even values [0, K/2) then its odd ones; xs: per row of x, G group sums.
// Weight rows one at a time, each one stream: reading 2 or 4 neighbouring rows side by
// side (x loaded once for them) was faster from the cache but slower from memory
// (cpu_kernels_bench q4 g64 4096 x 4096 cold: 0.41-0.45 ms against 0.26-0.30 ms).
// Each row's offset and bias term, sum_g (b_g - 16 s_g) X_g, is added to its accumulator
// as vectors, so a row ends in one horizontal sum. A chunk's weights are converted once
// for the M rows of x.
// 8-bit weights (BITS = 8): 32 values a chunk, x in its natural order.
template <typename S, int GS, int NX, int M, int BITS>
MLXCEL_BF16_TARGET void qgemv4_bf16_rows(const uint16_t* xb, const float* xs, const QuantMatrix& w, int64_t n0,
                                         int64_t n1, float* y) {
  constexpr int kVals = BITS == 4 ? 64 : 32;  // values a chunk (32 bytes)
  constexpr int kCpg = GS / kVals;            // chunks a group (0: 4-bit, groups of 32)
  const int64_t K = w.K, G = K / GS, rb = K * BITS / 8;
  const int64_t pf = prefetch_ahead(rb);
  const __m512 off = _mm512_set1_ps(-float(kBfOffset<BITS>));
  // 4-bit weights in groups of 32: a chunk holds two groups, lanes 0-7 the first one's.
  const __m512i half = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = reinterpret_cast<const uint8_t*>(w.packed) + n * rb;
    const S* scales = static_cast<const S*>(w.scales) + n * G;
    const S* biases = static_cast<const S*>(w.biases) + n * G;
    // Two chains, alternate groups (or chunks): with one, a 32-byte group waited on the
    // last one's FMA. NOTE: acc[g & 1] (chains by index) put them on the stack (hot 0.31
    // ms against 0.23 ms); named arrays stay in registers.
    __m512 acc[M], acc2[M];
    for (int m = 0; m < M; ++m) acc[m] = acc2[m] = _mm512_setzero_ps();
    // Blocks of 16 groups: their scales stay in a register (VPERMPS picks a group's), and
    // their offset and bias term, sum_g (b_g - off s_g) X_g, is added as vectors.
    for (int64_t g0 = 0; g0 < G; g0 += 16) {
      const int ng = int(std::min<int64_t>(16, G - g0));
      const __mmask16 k = __mmask16((1u << ng) - 1);
      const __m512 sv = load16_masked(scales + g0, k);
      const __m512 bo = _mm512_fmadd_ps(sv, off, load16_masked(biases + g0, k));
      for (int m = 0; m < M; ++m) acc[m] = _mm512_fmadd_ps(bo, _mm512_maskz_loadu_ps(k, xs + m * G + g0), acc[m]);
      __m512i lo, hi;
      if constexpr (kCpg == 0) {
        auto chunk = [&](int j, __m512 (&a)[M]) MLXCEL_BF16_TARGET {
          const __m512 s2 = _mm512_permutexvar_ps(_mm512_add_epi32(half, _mm512_set1_epi32(j)), sv);
          const int64_t c = (g0 + j) / 2;
          bf16_nibbles(row, c, pf, lo, hi);
          for (int m = 0; m < M; ++m) a[m] = _mm512_fmadd_ps(q4_bf16_dot<NX>(lo, hi, xb + m * NX * K, c, K), s2, a[m]);
        };
        int j = 0;
        for (; j + 3 < ng; j += 4) {
          chunk(j, acc);
          chunk(j + 2, acc2);
        }
        if (j < ng) chunk(j, acc);
      } else {
        int j = 0;
        for (; j + 1 < ng; j += 2) {
          bf16_group<BITS, NX, M, kCpg>(row, g0 + j, pf, xb, K, _mm512_permutexvar_ps(_mm512_set1_epi32(j), sv), acc);
          bf16_group<BITS, NX, M, kCpg>(row, g0 + j + 1, pf, xb, K, _mm512_permutexvar_ps(_mm512_set1_epi32(j + 1), sv),
                                        acc2);
        }
        if (j < ng) bf16_group<BITS, NX, M, kCpg>(row, g0 + j, pf, xb, K, _mm512_permutexvar_ps(_mm512_set1_epi32(j), sv), acc);
      }
    }
    for (int m = 0; m < M; ++m) y[m * w.N + n] = simd::hsum(_mm512_add_ps(acc[m], acc2[m]));
  }
}
#endif

#if defined(MLXCEL_SIMD_AVX512)
// v rounded to bf16 (nearest even) and stored at dst; returns the rounded values as f32.
MLXCEL_BF16_TARGET inline __m512 to_bf16(__m512 v, uint16_t* dst) {
  const __m256i r = gemm::bf16_of(v);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), r);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(r), 16));
}

// x for qgemv4_bf16_rows: NX bf16 parts, each even values then odd ones (4-bit weights),
// and the sum of each group of the parts' values (what the kernel's offset term takes off).
// With EvenOdd false (8-bit weights) the parts keep x's order.
template <int NX, bool EvenOdd>
MLXCEL_BF16_TARGET void split_x_bf16(const float* x, int64_t K, int gs, uint16_t* xb, float* xs) {
  const __m512i ie = EvenOdd ? _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0)
                             : _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(EvenOdd ? 1 : 16));
  std::fill(xs, xs + K / gs, 0.0f);
  for (int64_t i = 0; i < K; i += 32) {
    const __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
    const __m512 ev = _mm512_permutex2var_ps(a, ie, b), od = _mm512_permutex2var_ps(a, io, b);
    // Where the two 16-value halves go in a part.
    const int64_t de = EvenOdd ? i / 2 : i, dodd = EvenOdd ? K / 2 + i / 2 : i + 16;
    const __m512 eh = to_bf16(ev, xb + de), oh = to_bf16(od, xb + dodd);
    __m512 sum = _mm512_add_ps(eh, oh);
    if constexpr (NX == 2) {
      const __m512 el = to_bf16(_mm512_sub_ps(ev, eh), xb + K + de);
      const __m512 ol = to_bf16(_mm512_sub_ps(od, oh), xb + K + dodd);
      sum = _mm512_add_ps(sum, _mm512_add_ps(el, ol));
    }
    xs[i / gs] += _mm512_reduce_add_ps(sum);
  }
}


template <typename S, int NX, int BITS>
void qgemv4_bf16_multi(const float* x, int64_t M, const QuantMatrix* ws, int n, float* const* ys) {
  const int gs = ws[0].group_size;
  const int64_t K = ws[0].K, G = K / gs;
  thread_local std::vector<uint16_t> xb;
  thread_local std::vector<float> xs;
  xb.resize(size_t(M * NX * K));
  xs.resize(size_t(M * G));
  // NOTE: pointers taken here: inside the body (on a worker) xb would name its own copy.
  uint16_t* xbp = xb.data();
  float* xsp = xs.data();
  for (int64_t m = 0; m < M; ++m) split_x_bf16<NX, BITS == 4>(x + m * K, K, gs, xbp + m * NX * K, xsp + m * G);
  decode_region(M, ws, n, [&](int i, int64_t m0, int rows, int64_t b0, int64_t b1) {
    with_rows(rows, [&](auto R) {
      with_group_size(gs, [&](auto GS) {
        qgemv4_bf16_rows<S, GS.value, NX, R.value, BITS>(xbp + m0 * NX * K, xsp + m0 * G, ws[i], b0, b1,
                                                         ys[i] + m0 * ws[i].N);
      });
    });
  });
}
#endif

// ---- 4- and 8-bit decode with int8 x on AVX-512 VNNI (and AVX2, below) -------------
//
// x is quantized like llama.cpp's activations: in blocks (here each weight group, 32, 64
// or 128 values; llama.cpp takes 32 for Q4_0 / Q8_0 weights and 256 for its K-quants),
// d = max |x| / 127, x~ = d round(x / d). The weights stay exact: VPDPBUSD multiplies
// their unsigned 4- or 8-bit values as they lie, 64 bytes at a time (4-bit: the low
// nibbles against x's even values, the high nibbles against its odd ones, x rearranged
// once per call), against x's int8 values, 4 products to a 32-bit lane, and each lane's
// integer sum is scaled by s_g d_g of its group. The error x~ - x is made to meet the
// weights centred, as (q - Z) s_g with Z = 8 (4-bit) or 128 (8-bit), as in Q4_0's
// d (q - 8):
//   y = sum_g s_g d_g sum_k q_k x~_k + b_g X_g + Z s_g (X_g - d_g sum_k x~_k)
// with X_g the exact f32 sum of x over the group; the last two terms are a few vector
// operations a row (R_g = Z (X_g - d_g sum x~) made once per call). A chunk of 64 bytes
// costs 4 loads (weights, 2 of x, the lanes' scales) and about 8 other instructions.
template <int BITS>
constexpr int kIntCentre = BITS == 4 ? 8 : 128;

// x of one row, quantized for qgemv_int8_rows: q, its int8 values, chunk by chunk (a chunk
// is 64 bytes of a weight row: 128 values of 4 bits, 64 of 8 bits; 4-bit: the chunk's 64
// even values, then its 64 odd ones); per group: d, the scale; xs, the exact sum of x; r,
// Z (xs - d sum q).
struct XInt8 {
  int8_t* q;
  int8_t* q2;  // with two parts: x's low bytes (x16 = 256 q + q2), in q's order
  float* d;
  float* xs;
  float* r;
};

#if defined(MLXCEL_SIMD_AVX512)
template <int BITS, bool X2>
constexpr int kXIntBytes = X2 ? 2 : 1;  // bytes of q and q2 a value of x
template <int BITS, bool X2>
constexpr int kIntPassRows = kDecodePassRows;  // rows of x a pass of qgemv_int8_rows

template <int BITS, bool X2>
void quantize_x_int8(const float* x, int64_t K, int gs, const XInt8& o) {
  constexpr int kVals = BITS == 4 ? 128 : 64;  // values a chunk
  // One part: x~ = d q, |q| <= 127. Two: x~ = d x16, |x16| <= 127 * 256, as q = floor((x16 +
  // 128) / 256) in [-127, 127] and q2 = x16 - 256 q in [-128, 127].
  constexpr float kMax = X2 ? 127.0f * 256.0f : 127.0f;
  for (int64_t g = 0; g < K / gs; ++g) {
    const float* p = x + g * gs;
    __m512 amax = _mm512_setzero_ps(), sum = _mm512_setzero_ps();
    for (int i = 0; i < gs; i += 16) {
      const __m512 v = _mm512_loadu_ps(p + i);
      amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
      sum = _mm512_add_ps(sum, v);
    }
    const float d = _mm512_reduce_max_ps(amax) / kMax;
    const __m512 id = _mm512_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m512i qsum = _mm512_setzero_si512();
    for (int i = 0; i < gs; i += 16) {
      // Nearest even, as nearbyintf in the default rounding mode.
      const __m512i qi = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(p + i), id));
      qsum = _mm512_add_epi32(qsum, qi);
      if constexpr (X2) {
        const __m512i hi = _mm512_srai_epi32(_mm512_add_epi32(qi, _mm512_set1_epi32(128)), 8);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o.q + g * gs + i), _mm512_cvtsepi32_epi8(hi));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o.q2 + g * gs + i),
                         _mm512_cvtsepi32_epi8(_mm512_sub_epi32(qi, _mm512_slli_epi32(hi, 8))));
      } else {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o.q + g * gs + i), _mm512_cvtsepi32_epi8(qi));
      }
    }
    o.d[g] = d;
    o.xs[g] = _mm512_reduce_add_ps(sum);
    o.r[g] = float(kIntCentre<BITS>) * (o.xs[g] - d * float(_mm512_reduce_add_epi32(qsum)));
  }
  if constexpr (BITS == 4) {
    alignas(64) int8_t c[kVals];
    for (int8_t* q : {o.q, o.q2}) {
      if (!q) continue;
      for (int64_t k = 0; k < K; k += kVals) {
        std::memcpy(c, q + k, kVals);
        for (int i = 0; i < 64; ++i) q[k + i] = c[2 * i], q[k + 64 + i] = c[2 * i + 1];
      }
    }
  }
}

// M rows of x (xi: per row, one XInt8 of K values) against weight rows [n0, n1), one
// weight row at a time, each one stream (as qgemv4_bf16_rows). A row goes in blocks of 16
// groups: their scales s_g d_g stay in a register per row of x, and each chunk picks its
// lanes' from it (VPERMPS), with the block's bias and centring terms, b_g X_g + s_g R_g,
// added as vectors (one horizontal sum a row at the end).
template <typename S, int GS, int M, int BITS, bool X2>
void qgemv_int8_rows(const XInt8* xi, const QuantMatrix& w, int64_t n0, int64_t n1, float* y) {
  constexpr int kVals = BITS == 4 ? 128 : 64;
  constexpr int kGpc = kVals / GS;                   // groups a chunk (0: 8-bit, groups of 128)
  constexpr int kCpb = kGpc ? 16 / kGpc : 32;        // chunks a block of 16 groups
  const int64_t K = w.K, G = K / GS, rb = K * BITS / 8, chunks = K / kVals;
  const int64_t pf = prefetch_ahead(rb);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  // Lane j's group within a chunk, and the step from one chunk to the next.
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i idx0 = kGpc == 4 ? _mm512_srli_epi32(lane, 2) : kGpc == 2 ? _mm512_srli_epi32(lane, 3) : _mm512_setzero_si512();
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = reinterpret_cast<const uint8_t*>(w.packed) + n * rb;
    const S* scales = static_cast<const S*>(w.scales) + n * G;
    const S* biases = static_cast<const S*>(w.biases) + n * G;
    __m512 acc[M];
    for (int m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
    for (int64_t g0 = 0, c = 0; g0 < G; g0 += 16) {
      const __mmask16 k = G - g0 >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (G - g0)) - 1);
      const __m512 sv = load16_masked(scales + g0, k), bv = load16_masked(biases + g0, k);
      __m512 sd[M];
      for (int m = 0; m < M; ++m) {
        sd[m] = _mm512_mul_ps(sv, _mm512_maskz_loadu_ps(k, xi[m].d + g0));
        acc[m] = _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(k, xi[m].xs + g0),
                                 _mm512_fmadd_ps(sv, _mm512_maskz_loadu_ps(k, xi[m].r + g0), acc[m]));
      }
      const int64_t cend = std::min(chunks, c + kCpb);
      for (int j = 0; c < cend; ++c, ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(row + 64 * c + pf), _MM_HINT_T0);
        const __m512i v = _mm512_loadu_si512(row + 64 * c);
        const __m512i idx = kGpc ? _mm512_add_epi32(idx0, _mm512_set1_epi32(kGpc * j)) : _mm512_set1_epi32(j >> 1);
        if constexpr (BITS == 4) {
          const __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
          for (int m = 0; m < M; ++m) {
            const int8_t* xq = xi[m].q + 128 * c;
            __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(xq));
            is = _mm512_dpbusd_epi32(is, hi, _mm512_loadu_si512(xq + 64));
            if constexpr (X2) {
              const int8_t* xl = xi[m].q2 + 128 * c;
              __m512i il = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(xl));
              il = _mm512_dpbusd_epi32(il, hi, _mm512_loadu_si512(xl + 64));
              is = _mm512_add_epi32(_mm512_slli_epi32(is, 8), il);
            }
            acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_permutexvar_ps(idx, sd[m]), acc[m]);
          }
        } else {
          for (int m = 0; m < M; ++m) {
            __m512i is = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, _mm512_loadu_si512(xi[m].q + 64 * c));
            if constexpr (X2)
              is = _mm512_add_epi32(_mm512_slli_epi32(is, 8),
                                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, _mm512_loadu_si512(xi[m].q2 + 64 * c)));
            acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_permutexvar_ps(idx, sd[m]), acc[m]);
          }
        }
      }
    }
    for (int m = 0; m < M; ++m) y[m * w.N + n] = simd::hsum(acc[m]);
  }
}

#elif defined(MLXCEL_SIMD_AVX2)
// ---- the same forms on AVX2 ----------------------------------------------------------
//
// The arithmetic and the error terms above, with AVX2's integer products, a 32-byte chunk
// of a weight row at a time. 4-bit (64 values a chunk; x's 32 even values, then its 32 odd
// ones): VPMADDUBSW multiplies the unsigned nibbles by x's int8 values and sums pairs in
// 16 bits (low and high nibbles together at most 4 x 15 x 128 = 7,680: no saturation),
// VPMADDWD sums those into 32-bit lanes (times 256 for the int16 form's high part). 8-bit
// (32 values a chunk, in order): unsigned bytes times int8 would saturate VPMADDUBSW's
// pairs, so the bytes are widened to 16 bits and VPMADDWD takes x as int16 (the int16
// form's x16, or the int8 form's values), both forms in one kernel. About 17 instructions
// a chunk of 64 4-bit weights in the int16 form, against 28 for the f32 path (qgemv4_rows).
template <int BITS, bool X2>
constexpr int kXIntBytes = X2 || BITS == 8 ? 2 : 1;  // bytes of q a value of x
// Rows of x a pass of qgemv_int8_rows: the 4-bit int16 form's 4 rows spill AVX2's 16
// vector registers.
template <int BITS, bool X2>
constexpr int kIntPassRows = BITS == 4 && X2 ? 2 : kDecodePassRows;

// 8 values of a row's scales (or biases, or x's per-group floats) as f32; n < 8 loads n
// and zeroes the rest (f32: a masked load; f16 / bf16 have none in AVX2).
template <typename S>
inline __m256 load8(const S* p, int64_t n) {
  if (n >= 8) return simd::load(p);
  if constexpr (std::is_same_v<S, float>) {
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
  } else {
    alignas(32) float t[8] = {};
    for (int64_t i = 0; i < n; ++i) t[i] = to_f32(p[i]);
    return _mm256_load_ps(t);
  }
}

// A group of gs values of x (gs a multiple of 8): its scale d = max |x| / kmax, and its
// exact f32 sum at *sum.
inline float x_group_scale(const float* p, int gs, float kmax, float* sum) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 amax = _mm256_setzero_ps(), s = _mm256_setzero_ps();
  for (int i = 0; i < gs; i += 8) {
    const __m256 v = _mm256_loadu_ps(p + i);
    amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v));
    s = _mm256_add_ps(s, v);
  }
  *sum = simd::hsum(s);
  return simd::hmax(amax) / kmax;
}

template <int BITS, bool X2>
void quantize_x_int8(const float* x, int64_t K, int gs, const XInt8& o) {
  constexpr float kMax = X2 ? 127.0f * 256.0f : 127.0f;
  int16_t* q16 = reinterpret_cast<int16_t*>(o.q);
  alignas(32) int32_t t[128];
  for (int64_t g = 0; g < K / gs; ++g) {
    const float* p = x + g * gs;
    float xs;
    const float d = x_group_scale(p, gs, kMax, &xs);
    const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    // Nearest even, as nearbyintf in the default rounding mode.
    for (int i = 0; i < gs; i += 8)
      _mm256_store_si256(reinterpret_cast<__m256i*>(t + i), _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p + i), id)));
    int64_t qsum = 0;
    for (int i = 0; i < gs; ++i) {
      const int32_t v = std::clamp<int32_t>(t[i], -int32_t(kMax), int32_t(kMax));
      qsum += v;
      const int64_t k = g * gs + i;
      if constexpr (BITS == 8) {
        q16[k] = int16_t(v);
      } else {
        // Chunk c = k / 64: its even values first, then its odd ones.
        const int64_t j = k % 64, at = k - j + (j % 2 ? 32 + j / 2 : j / 2);
        if constexpr (X2) {
          const int32_t hi = (v + 128) >> 8;
          o.q[at] = int8_t(hi);
          o.q2[at] = int8_t(v - 256 * hi);
        } else {
          o.q[at] = int8_t(v);
        }
      }
    }
    o.d[g] = d;
    o.xs[g] = xs;
    o.r[g] = float(kIntCentre<BITS>) * (o.xs[g] - d * float(qsum));
  }
}

// M rows of x against weight rows [n0, n1), one weight row at a time, in blocks of 8 groups:
// their scales s_g d_g stay in a register per row of x and each chunk picks its lanes'
// (VPERMPS); the block's bias and centring terms are added as vectors.
template <typename S, int GS, int M, int BITS, bool X2>
void qgemv_int8_rows(const XInt8* xi, const QuantMatrix& w, int64_t n0, int64_t n1, float* y) {
  constexpr int kVals = BITS == 4 ? 64 : 32;    // values a chunk
  constexpr int kGpc = kVals / GS;               // groups a chunk (0: a group spans chunks)
  constexpr int kCpb = kGpc ? 8 / kGpc : 8 * GS / kVals;  // chunks a block of 8 groups
  const int64_t K = w.K, G = K / GS, rb = K * BITS / 8, chunks = K / kVals, pf = prefetch_ahead(rb);
  const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1), k256 = _mm256_set1_epi16(256);
  // Lane j's group within a chunk: with two groups a chunk, lanes 0-3 hold the first.
  const __m256i idx0 = kGpc == 2 ? _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0) : _mm256_setzero_si256();
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = reinterpret_cast<const uint8_t*>(w.packed) + n * rb;
    const S* scales = static_cast<const S*>(w.scales) + n * G;
    const S* biases = static_cast<const S*>(w.biases) + n * G;
    __m256 acc[M];
    for (int m = 0; m < M; ++m) acc[m] = _mm256_setzero_ps();
    for (int64_t g0 = 0, c = 0; g0 < G; g0 += 8) {
      const int64_t ng = G - g0;
      const __m256 sv = load8(scales + g0, ng), bv = load8(biases + g0, ng);
      __m256 sd[M];
      for (int m = 0; m < M; ++m) {
        sd[m] = _mm256_mul_ps(sv, load8(xi[m].d + g0, ng));
        acc[m] = _mm256_fmadd_ps(bv, load8(xi[m].xs + g0, ng), _mm256_fmadd_ps(sv, load8(xi[m].r + g0, ng), acc[m]));
      }
      const int64_t cend = std::min(chunks, c + kCpb);
      for (int j = 0; c < cend; ++c, ++j) {
        __m256i idx;
        if constexpr (kGpc != 0) idx = _mm256_add_epi32(idx0, _mm256_set1_epi32(kGpc * j));
        else idx = _mm256_set1_epi32(j / (kCpb / 8));
        const uint8_t* wc = row + 32 * c;
        if ((c & 1) == 0) _mm_prefetch(reinterpret_cast<const char*>(wc + pf), _MM_HINT_T0);
        if constexpr (BITS == 4) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc));
          const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
          for (int m = 0; m < M; ++m) {
            const __m256i* xq = reinterpret_cast<const __m256i*>(xi[m].q + 64 * c);
            const __m256i t = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256(xq)),
                                               _mm256_maddubs_epi16(hi, _mm256_loadu_si256(xq + 1)));
            __m256i is;
            if constexpr (X2) {
              const __m256i* xl = reinterpret_cast<const __m256i*>(xi[m].q2 + 64 * c);
              const __m256i t2 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256(xl)),
                                                  _mm256_maddubs_epi16(hi, _mm256_loadu_si256(xl + 1)));
              is = _mm256_add_epi32(_mm256_madd_epi16(t, k256), _mm256_madd_epi16(t2, ones));
            } else {
              is = _mm256_madd_epi16(t, ones);
            }
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_permutevar8x32_ps(sd[m], idx), acc[m]);
          }
        } else {
          const __m256i w0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wc)));
          const __m256i w1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wc + 16)));
          for (int m = 0; m < M; ++m) {
            const __m256i* xq = reinterpret_cast<const __m256i*>(reinterpret_cast<const int16_t*>(xi[m].q) + 32 * c);
            const __m256i is = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256(xq)),
                                                _mm256_madd_epi16(w1, _mm256_loadu_si256(xq + 1)));
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_permutevar8x32_ps(sd[m], idx), acc[m]);
          }
        }
      }
    }
    for (int m = 0; m < M; ++m) y[m * w.N + n] = simd::hsum(acc[m]);
  }
}
#endif

template <typename S, int BITS, bool X2>
void qgemv_int8_multi(const float* x, int64_t M, const QuantMatrix* ws, int n, float* const* ys) {
  const int gs = ws[0].group_size;
  const int64_t K = ws[0].K, G = K / gs;
  thread_local std::vector<int8_t> qbuf;
  thread_local std::vector<float> fbuf;
  constexpr int kB = kXIntBytes<BITS, X2>;
  qbuf.resize(size_t(kB * M * K));
  fbuf.resize(size_t(M * 3 * G));
  XInt8 xi[kGemvMaxRows];
  for (int64_t m = 0; m < M; ++m) {
    float* f = fbuf.data() + m * 3 * G;
    int8_t* q = qbuf.data() + kB * m * K;
    xi[m] = XInt8{q, X2 ? q + K : nullptr, f, f + G, f + 2 * G};
    quantize_x_int8<BITS, X2>(x + m * K, K, gs, xi[m]);
  }
  // NOTE: xi is captured by reference: the workers read the caller's array.
  decode_region(M, ws, n, [&](int i, int64_t m0, int rows, int64_t b0, int64_t b1) {
    with_rows(rows, [&](auto R) {
      with_group_size(gs, [&](auto GS) {
        qgemv_int8_rows<S, GS.value, R.value, BITS, X2>(xi + m0, ws[i], b0, b1, ys[i] + m0 * ws[i].N);
      });
    });
  }, kIntPassRows<BITS, X2>);
}

// The decode kernels' products (int8 or bf16 forms of x) when they take these weights (of
// one spec and K); false otherwise.
template <typename S>
bool decode_multi(const float* x, int64_t M, const QuantMatrix* ws, int n, float* const* ys) {
  const QuantMatrix& w = ws[0];
  for (int i = 1; i < n; ++i)
    if (ws[i].bits != w.bits || ws[i].group_size != w.group_size || ws[i].K != w.K ||
        ws[i].scale_dtype != w.scale_dtype)
      return false;
  const int gs = w.group_size;
  if ((w.bits != 4 && w.bits != 8) || (gs != 32 && gs != 64 && gs != 128) || w.K % gs != 0 || M < 1 ||
      M > kGemvMaxRows)
    return false;
  const int form = q4_x_form(w.scale_dtype == DType::bf16);
  if ((form == kQ4XInt8 || form == kQ4XInt16) && w.K % (w.bits == 4 ? 128 : 64) == 0) {
    const bool x2 = form == kQ4XInt16;
    if (w.bits == 4) x2 ? qgemv_int8_multi<S, 4, true>(x, M, ws, n, ys) : qgemv_int8_multi<S, 4, false>(x, M, ws, n, ys);
    else x2 ? qgemv_int8_multi<S, 8, true>(x, M, ws, n, ys) : qgemv_int8_multi<S, 8, false>(x, M, ws, n, ys);
    return true;
  }
#if defined(MLXCEL_SIMD_AVX512)
  if ((form == 1 || form == 2) && w.K % 64 == 0) {
    if (w.bits == 4) form == 2 ? qgemv4_bf16_multi<S, 2, 4>(x, M, ws, n, ys) : qgemv4_bf16_multi<S, 1, 4>(x, M, ws, n, ys);
    else form == 2 ? qgemv4_bf16_multi<S, 2, 8>(x, M, ws, n, ys) : qgemv4_bf16_multi<S, 1, 8>(x, M, ws, n, ys);
    return true;
  }
#endif
  return false;
}

// The decode kernels (decode_multi), or the f32 4-bit path, when they apply; false otherwise.
template <typename S>
bool qgemv4(const float* x, int64_t M, const QuantMatrix& w, float* y) {
  if (decode_multi<S>(x, M, &w, 1, &y)) return true;
  // The f32 path: 4-bit weights in whole groups of 2 kWidth values, one row of x only (with
  // 4 and 8 rows, cpu_kernels_bench 4096 x 4096, the general path's shared dequantized
  // vector measured faster: 1.18 / 2.16 ms against 1.40 / 3.11).
  const int gs = w.group_size;
  if (M != 1 || w.bits != 4 || (gs != 32 && gs != 64 && gs != 128) || gs % (2 * simd::kWidth) != 0 || w.K % gs != 0)
    return false;
  // x split into its even and odd values and its group sums, in per-thread scratch (a
  // decode step makes a few hundred of these calls: no allocation each time).
  const int64_t K = w.K, half = K / 2, G = K / gs;
  thread_local std::vector<float> scratch;
  scratch.resize(size_t(2 * half + G));
  float *xe = scratch.data(), *xo = xe + half, *xs = xo + half;
  for (int64_t i = 0; i < half; ++i) xe[i] = x[2 * i], xo[i] = x[2 * i + 1];
  for (int64_t g = 0; g < G; ++g) {
    float s = 0.0f;
    for (int64_t k = g * gs; k < (g + 1) * gs; ++k) s += x[k];
    xs[g] = s;
  }
  auto body = [&](int64_t n0, int64_t n1) {
    switch (gs) {
      case 32: qgemv4_rows<S, 32>(xe, xo, xs, w, n0, n1, y); break;
      case 64: qgemv4_rows<S, 64>(xe, xo, xs, w, n0, n1, y); break;
      default: qgemv4_rows<S, 128>(xe, xo, xs, w, n0, n1, y); break;
    }
  };
  ThreadPool::global().parallel_for(w.N, body, std::max<int64_t>(16, (int64_t(1) << 15) / std::max<int64_t>(1, K)));
  return true;
}
#endif

template <typename S>
void qgemv(const float* x, int64_t M, const QuantMatrix& w, float* y) {
#if defined(MLXCEL_SIMD_AVX512) || defined(MLXCEL_SIMD_AVX2)
  if (qgemv4<S>(x, M, w, y)) return;
#endif
  auto body = [&](int64_t n0, int64_t n1) {
    // Groups of 8: each group unpacks and dequantizes the weights again.
    gemm::for_gemv_groups<8>(M, n0, n1, [&](int64_t m0, int mr, int64_t t0, int64_t t1) {
      const float* xm = x + m0 * w.K;
      float* ym = y + m0 * w.N;
      switch (mr) {
        case 1: qgemv_chunked<1, S>(xm, w, t0, t1, ym); break;
        case 2: qgemv_chunked<2, S>(xm, w, t0, t1, ym); break;
        case 3: qgemv_chunked<3, S>(xm, w, t0, t1, ym); break;
        case 4: qgemv_chunked<4, S>(xm, w, t0, t1, ym); break;
        case 5: qgemv_chunked<5, S>(xm, w, t0, t1, ym); break;
        case 6: qgemv_chunked<6, S>(xm, w, t0, t1, ym); break;
        case 7: qgemv_chunked<7, S>(xm, w, t0, t1, ym); break;
        case 8: qgemv_chunked<8, S>(xm, w, t0, t1, ym); break;
        default: MLXCEL_CHECK(false, "qgemv group of {} rows", mr);
      }
    });
  };
  ThreadPool::global().parallel_for(w.N, body, std::max<int64_t>(16, (int64_t(1) << 15) / std::max<int64_t>(1, w.K * M)));
}

// ---- prefill: blocked GEMM over dequantized panels -------------------------------
template <typename S>
struct QuantSource {
  const QuantMatrix& w;
  // Rows n0.. dequantized to f32 [nb][kb] in buf.
  void rows(int64_t n0, int64_t nb, int64_t k0, int64_t kb, float* buf) const {
    using namespace simd;
    const int64_t G = w.K / w.group_size, gs = w.group_size;
    const int bits = w.bits;
    const Unpacker unpack(bits);
    RowReader reader(w);
    for (int64_t n = 0; n < nb; ++n) {
      const uint8_t* row = reader.row(n0 + n);
      float* dst = buf + n * kb;
      for (int64_t g = k0 / gs; g < (k0 + kb) / gs; ++g) {
        const VecF s = set1(sval<S>(w.scales, (n0 + n) * G + g)), b = set1(sval<S>(w.biases, (n0 + n) * G + g));
        for (int64_t j = 0; j < gs; j += kWidth) {
          const int64_t k = g * gs + j;
          store(dst + (k - k0), fma(unpack(row, k), s, b));
        }
      }
    }
  }
  void pack(int64_t n0, int64_t nb, int64_t k0, int64_t kb, float* buf, float* packed) const {
    rows(n0, nb, k0, kb, buf);
    gemm::pack_panel(buf, kb, nb, kb, packed);
  }
#if defined(MLXCEL_SIMD_AVX512)
  // run_bf16's pair panels from the dequantized rows (gemm::pack_pairs_from_rows).
  void pair_rows(int64_t n0, int64_t nb, int64_t k0, int64_t kb, float* buf, uint32_t* pairs) const {
    rows(n0, nb, k0, kb, buf);
    gemm::pack_pairs_from_rows(gemm::F32RowPairs{buf, kb}, nb, kb, pairs);
  }
#endif
};

// y [M, N] += bias [N]; nothing for a null bias.
inline void add_bias(float* y, int64_t M, int64_t N, const float* bias) {
  if (!bias) return;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) y[m * N + n] += bias[n];
}

#if defined(MLXCEL_SIMD_AVX2)
// ---- prefill on AVX2 with x as int16 (the decode's integer forms of x) ---------------
//
// The avx2 build's f32 GEMM is bound by its FMA rate (8 products an instruction, about 2
// instructions a cycle). With x quantized per weight group to 16-bit integers, as the
// decode takes it (kQ4XInt16: d = max |x| / (127 * 256); kQ4XInt8: max |x| / 127), and
// the weights centred, q - Z (Z = 8 or 128), as int16, VPMADDWD makes 16 products an
// instruction (pairs summed into 32-bit lanes) and VPADDD adds them up: the same
// arithmetic as the decode kernels,
//   y = sum_g s_g d_g sum_k (q_k - Z) x~_k + (b_g + Z s_g) X_g,
// with X_g the exact f32 sum of x over the group. A panel holds kNB weight rows of one K
// block as int32 lanes of two int16 values (k, k + 1), 16 columns a k-pair (two vectors),
// with each group's s_g and b_g + Z s_g per column; a 6 x 16 register tile of int32 sums
// (12 of the 16 registers) runs a group, then its sums are scaled into f32 sums in L1.
// Sums stay exact: |q - Z| <= 128 and |x~| <= 32,512, so a group of 128 sums to under 2^30.
constexpr int kX16MR = 6;  // rows of x a register tile
constexpr int kX16Cols = 16;  // columns of y a register tile
static_assert(gemm::kNB % kX16Cols == 0);

// x quantized for gemm_x16: per row K int16 values, per group d (x~ = d q) and the exact sum.
struct X16 {
  std::vector<int16_t> q;
  std::vector<float> d, xs;
};

void quantize_x16(const float* x, int64_t M, int64_t K, int gs, float kmax, X16& o) {
  const int64_t G = K / gs;
  o.q.resize(size_t(M * K));
  o.d.resize(size_t(M * G));
  o.xs.resize(size_t(M * G));
  parallel_for(M, K * 4, [&](int64_t m0, int64_t m1) {
    const __m256i lim = _mm256_set1_epi32(int(kmax));
    for (int64_t i = m0 * G; i < m1 * G; ++i) {
      const float* p = x + i * gs;
      const float d = x_group_scale(p, gs, kmax, &o.xs[size_t(i)]);
      const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
      for (int j = 0; j < gs; j += 8) {
        // Nearest even, as nearbyintf in the default rounding mode, then clamped to the range.
        __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p + j), id));
        v = _mm256_max_epi32(_mm256_min_epi32(v, lim), _mm256_sub_epi32(_mm256_setzero_si256(), lim));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o.q.data() + i * gs + j),
                         _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
      }
      o.d[size_t(i)] = d;
    }
  });
}

// A thread's panel: w [kNB / 16][kb / 2][16] int32 pairs; s and b [kb / gs][kNB].
struct X16Panel {
  std::vector<int32_t> w = std::vector<int32_t>(size_t(gemm::kNB * gemm::kKB / 2));
  std::vector<float> s = std::vector<float>(size_t(gemm::kNB * gemm::kKB / 32)),
                     b = std::vector<float>(size_t(gemm::kNB * gemm::kKB / 32));
};

// Weight rows [n0, n0 + nb) x columns [k0, k0 + kb) of 4- or 8-bit weights into a panel
// (columns past nb: the last row again, with zero scales).
template <typename S>
void pack_x16_panel(const QuantMatrix& w, int64_t n0, int64_t nb, int64_t k0, int64_t kb, X16Panel& p) {
  const int gs = w.group_size, bits = w.bits;
  const int64_t G = w.K / gs, gb = kb / gs, pairs = kb / 2, rb = w.K * bits / 8;
  const int64_t cols = (nb + kX16Cols - 1) / kX16Cols * kX16Cols;
  const float Z = bits == 4 ? 8.0f : 128.0f;
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t g = 0; g < gb; ++g) {
      const int64_t at = (n0 + j) * G + k0 / gs + g;
      const float s = j < nb ? sval<S>(w.scales, at) : 0.0f, b = j < nb ? sval<S>(w.biases, at) : 0.0f;
      p.s[size_t(g * gemm::kNB + j)] = s;
      p.b[size_t(g * gemm::kNB + j)] = b + Z * s;
    }
  const uint8_t* base = reinterpret_cast<const uint8_t*>(w.packed);
  const __m256i m4 = _mm256_set1_epi32(0x0F), z4 = _mm256_set1_epi32(8), z8 = _mm256_set1_epi16(128);
  for (int64_t c8 = 0; c8 < cols / 8; ++c8) {
    const uint8_t* rows[8];
    for (int i = 0; i < 8; ++i) rows[i] = base + std::min(n0 + c8 * 8 + i, n0 + nb - 1) * rb + k0 * bits / 8;
    int32_t* dst = p.w.data() + (c8 / 2) * pairs * kX16Cols + (c8 % 2) * 8;
    for (int64_t p0 = 0; p0 < pairs; p0 += 8) {
      __m256i r[8];
      for (int i = 0; i < 8; ++i) {
        if (bits == 4) {  // byte b: values 2b (low nibble) and 2b + 1, one pair
          int64_t v8;
          std::memcpy(&v8, rows[i] + p0, 8);
          const __m256i v = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v8));
          const __m256i lo = _mm256_sub_epi32(_mm256_and_si256(v, m4), z4);
          const __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(v, 4), z4);
          r[i] = _mm256_blend_epi16(lo, _mm256_slli_epi32(hi, 16), 0xAA);
        } else {
          const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[i] + 2 * p0));
          r[i] = _mm256_sub_epi16(_mm256_cvtepu8_epi16(v), z8);
        }
      }
      simd::transpose8x8(r);
      for (int g = 0; g < 8; ++g) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (p0 + g) * kX16Cols), r[g]);
    }
  }
}

// y[m][0..ncols) (+)= rows [m, m + MR) of x against 16 columns of a panel (wp: their pairs;
// sp, bp: their first group's scales and bias terms, kNB apart) over a K block at k0.
template <int MR, int GS>
void x16_tile(const int32_t* wp, const float* sp, const float* bp, const X16& xq, int64_t K, int64_t m, int64_t k0,
              int64_t kb, float* y, int64_t ldy, bool accumulate, int ncols) {
  constexpr int kPairs = GS / 2;
  const int64_t G = K / GS;
  const int16_t* xr[MR];  // pairs (k, k + 1) read as one 32-bit value
  for (int i = 0; i < MR; ++i) xr[i] = xq.q.data() + (m + i) * K + k0;
  alignas(32) float f[MR][kX16Cols] = {};
  for (int64_t g = 0; g < kb / GS; ++g) {
    const int32_t* wg = wp + g * kPairs * kX16Cols;
    const int64_t xo = g * kPairs;
    if constexpr (MR == kX16MR) {
      // NOTE: the compiler's allocation of this loop spilled half the sums (12 sums, 2
      // weight vectors, x and a product take all 16 registers): 50 against 126 GFLOP/s.
      // The group's sums are made in ymm0-11 and scaled into f there (a C++ epilogue from
      // sums stored to memory cost 13% of the tile's time).
      const int16_t *x0 = xr[0] + 2 * xo, *x3 = xr[3] + 2 * xo;
      alignas(32) float dx[2 * kX16MR];  // per row: d and X of the group
      for (int i = 0; i < kX16MR; ++i) {
        const size_t at = size_t((m + i) * G + k0 / GS + g);
        dx[2 * i] = xq.d[at];
        dx[2 * i + 1] = xq.xs[at];
      }
      const int64_t ld = K * int64_t(sizeof(int16_t));
      int64_t n = kPairs;
      __asm__ volatile(
#define MLXCEL_X16_ZERO(r) "vpxor %%ymm" r ", %%ymm" r ", %%ymm" r "\n\t"
          MLXCEL_X16_ZERO("0") MLXCEL_X16_ZERO("1") MLXCEL_X16_ZERO("2") MLXCEL_X16_ZERO("3")
          MLXCEL_X16_ZERO("4") MLXCEL_X16_ZERO("5") MLXCEL_X16_ZERO("6") MLXCEL_X16_ZERO("7")
          MLXCEL_X16_ZERO("8") MLXCEL_X16_ZERO("9") MLXCEL_X16_ZERO("10") MLXCEL_X16_ZERO("11")
#undef MLXCEL_X16_ZERO
          "1:\n\t"
          "vmovdqu (%[w]), %%ymm12\n\t"
          "vmovdqu 32(%[w]), %%ymm13\n\t"
#define MLXCEL_X16_ROW(addr, a0, a1)                   \
  "vpbroadcastd " addr ", %%ymm14\n\t"                 \
  "vpmaddwd %%ymm14, %%ymm12, %%ymm15\n\t"             \
  "vpaddd %%ymm15, %%ymm" a0 ", %%ymm" a0 "\n\t"         \
  "vpmaddwd %%ymm14, %%ymm13, %%ymm14\n\t"             \
  "vpaddd %%ymm14, %%ymm" a1 ", %%ymm" a1 "\n\t"
          MLXCEL_X16_ROW("(%[x0])", "0", "1")
          MLXCEL_X16_ROW("(%[x0],%[ld])", "2", "3")
          MLXCEL_X16_ROW("(%[x0],%[ld],2)", "4", "5")
          MLXCEL_X16_ROW("(%[x3])", "6", "7")
          MLXCEL_X16_ROW("(%[x3],%[ld])", "8", "9")
          MLXCEL_X16_ROW("(%[x3],%[ld],2)", "10", "11")
#undef MLXCEL_X16_ROW
          "add $64, %[w]\n\t"
          "add $4, %[x0]\n\t"
          "add $4, %[x3]\n\t"
          "dec %[n]\n\t"
          "jnz 1b\n\t"
          // The group's sums into f (as the other tiles' code below, in the same order):
          // f = cvt(a) (s d) + f, then + b X. Row i: d and X at dx + 8 i, 4; f at f + 64 i.
#define MLXCEL_X16_SCALE(a, sv, fo)                     \
  "vcvtdq2ps %%ymm" a ", %%ymm" a "\n\t"                 \
  "vmulps " sv "(%[s]), %%ymm12, %%ymm14\n\t"           \
  "vfmadd213ps " fo "(%[f]), %%ymm14, %%ymm" a "\n\t"   \
  "vfmadd231ps " sv "(%[b]), %%ymm13, %%ymm" a "\n\t"   \
  "vmovaps %%ymm" a ", " fo "(%[f])\n\t"
#define MLXCEL_X16_EPI(d, X, a0, a1, f0, f1)           \
  "vbroadcastss " d "(%[dx]), %%ymm12\n\t"              \
  "vbroadcastss " X "(%[dx]), %%ymm13\n\t"              \
  MLXCEL_X16_SCALE(a0, "0", f0) MLXCEL_X16_SCALE(a1, "32", f1)
          MLXCEL_X16_EPI("0", "4", "0", "1", "0", "32")
          MLXCEL_X16_EPI("8", "12", "2", "3", "64", "96")
          MLXCEL_X16_EPI("16", "20", "4", "5", "128", "160")
          MLXCEL_X16_EPI("24", "28", "6", "7", "192", "224")
          MLXCEL_X16_EPI("32", "36", "8", "9", "256", "288")
          MLXCEL_X16_EPI("40", "44", "10", "11", "320", "352")
#undef MLXCEL_X16_EPI
#undef MLXCEL_X16_SCALE
          : [w] "+r"(wg), [x0] "+r"(x0), [x3] "+r"(x3), [n] "+r"(n)
          : [ld] "r"(ld), [dx] "r"(dx), [s] "r"(sp + g * gemm::kNB), [b] "r"(bp + g * gemm::kNB), [f] "r"(&f[0][0])
          : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
            "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
    } else {
      __m256i a[MR][2];
      for (int i = 0; i < MR; ++i) a[i][0] = a[i][1] = _mm256_setzero_si256();
      for (int p = 0; p < kPairs; ++p) {
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + p * kX16Cols));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + p * kX16Cols + 8));
        for (int i = 0; i < MR; ++i) {
          int32_t pair;
          std::memcpy(&pair, xr[i] + 2 * (xo + p), sizeof(pair));
          const __m256i xb = _mm256_set1_epi32(pair);
          a[i][0] = _mm256_add_epi32(a[i][0], _mm256_madd_epi16(w0, xb));
          a[i][1] = _mm256_add_epi32(a[i][1], _mm256_madd_epi16(w1, xb));
        }
      }
      const float* s = sp + g * gemm::kNB;
      const float* b = bp + g * gemm::kNB;
      const int64_t gi = (m * G) + k0 / GS + g;
      for (int i = 0; i < MR; ++i) {
        const __m256 d = _mm256_set1_ps(xq.d[size_t(gi + i * G)]), X = _mm256_set1_ps(xq.xs[size_t(gi + i * G)]);
        for (int v = 0; v < 2; ++v) {
          __m256 t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[i][v]), _mm256_mul_ps(_mm256_loadu_ps(s + 8 * v), d),
                                     _mm256_load_ps(f[i] + 8 * v));
          _mm256_store_ps(f[i] + 8 * v, _mm256_fmadd_ps(_mm256_loadu_ps(b + 8 * v), X, t));
        }
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* out = y + i * ldy;
    for (int n = 0; n < ncols; ++n) out[n] = accumulate ? out[n] + f[i][n] : f[i][n];
  }
}

template <int GS>
using X16TileFn = void (*)(const int32_t*, const float*, const float*, const X16&, int64_t, int64_t, int64_t, int64_t,
                           float*, int64_t, bool, int);

template <int GS>
X16TileFn<GS> x16_tile_for(int mr) {
  static const auto table = []<int... I>(std::integer_sequence<int, I...>) {
    return std::array<X16TileFn<GS>, kX16MR>{&x16_tile<I + 1, GS>...};
  }(std::make_integer_sequence<int, kX16MR>{});
  return table[size_t(mr - 1)];
}

// Whether gemm_x16 takes these weights with x in this form (the decode's integer forms).
inline bool x16_takes(const QuantMatrix& w, int form) {
  const int gs = w.group_size;
  return (form == kQ4XInt16 || form == kQ4XInt8) && (w.bits == 4 || w.bits == 8) && (gs == 32 || gs == 64 || gs == 128) &&
         w.K % gs == 0;
}

template <typename S, int GS>
void gemm_x16(const float* x, int64_t M, const QuantMatrix& w, const float* bias, float* y, float kmax) {
  const int64_t K = w.K, N = w.N;
  thread_local X16 buf;
  X16& xq = buf;  // NOTE: a reference, so the workers read the caller's (a lambda does not capture a thread_local)
  quantize_x16(x, M, K, GS, kmax, xq);
  gemm::for_each_block<X16Panel>(
      M, K, N, kX16MR, bias, y,
      [&](X16Panel& p, int64_t n0, int64_t nb, int64_t k0, int64_t kb, int64_t m_begin, int64_t m_end) {
        pack_x16_panel<S>(w, n0, nb, k0, kb, p);
        for (int64_t m = m_begin; m < m_end; m += kX16MR) {
          const X16TileFn<GS> tile = x16_tile_for<GS>(int(std::min<int64_t>(kX16MR, m_end - m)));
          for (int64_t c = 0; c < nb; c += kX16Cols)
            tile(p.w.data() + c * (kb / 2), p.s.data() + c, p.b.data() + c, xq, K, m, k0, kb, y + m * N + n0 + c, N,
                 k0 > 0, int(std::min<int64_t>(kX16Cols, nb - c)));
        }
      });
}
#endif

template <typename S>
void qlinear_typed(const float* x, int64_t M, const QuantMatrix& w, const float* bias, float* y) {
  if (M <= kGemvMaxRows) {
    qgemv<S>(x, M, w, y);
    add_bias(y, M, w.N, bias);
    return;
  }
#if defined(MLXCEL_SIMD_AVX512)
  if (w.scale_dtype == DType::bf16 && bf16_products()) return gemm::run_bf16(x, M, w.K, w.N, QuantSource<S>{w}, bias, y);
#elif defined(MLXCEL_SIMD_AVX2)
  if (const int form = q4_x_form(w.scale_dtype == DType::bf16); x16_takes(w, form)) {
    const float kmax = form == kQ4XInt8 ? 127.0f : 127.0f * 256.0f;
    with_group_size(w.group_size, [&](auto GS) { gemm_x16<S, GS.value>(x, M, w, bias, y, kmax); });
    return;
  }
#endif
  gemm::run(x, M, w.K, w.N, QuantSource<S>{w}, bias, y);
}

template <typename S>
void dequantize_rows_typed(const QuantMatrix& w, const int32_t* rows, int64_t n, float* out) {
  const int64_t K = w.K, G = K / w.group_size;
  const uint8_t* base = reinterpret_cast<const uint8_t*>(w.packed);
  const int64_t row_bytes = K * w.bits / 8;
  parallel_for(n, K * 2, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t r = rows ? rows[i] : i;
      const uint8_t* row = base + r * row_bytes;
      float* o = out + i * K;
      for (int64_t g = 0; g < G; ++g) {
        const float s = sval<S>(w.scales, r * G + g), b = sval<S>(w.biases, r * G + g);
        for (int64_t k = g * w.group_size; k < (g + 1) * w.group_size; ++k) {
          const float p = float(qvalue(row, k, w.bits)) * s;  // NOTE: two roundings, like MLX
          o[k] = p + b;
        }
      }
    }
  });
}

template <typename T>
void dequantize_same_typed(const QuantMatrix& w, T* out) {
  const int64_t K = w.K, G = K / w.group_size;
  const uint8_t* base = reinterpret_cast<const uint8_t*>(w.packed);
  const int64_t row_bytes = K * w.bits / 8;
  parallel_for(w.N, K * 2, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = base + r * row_bytes;
      for (int64_t g = 0; g < G; ++g) {
        const float s = sval<T>(w.scales, r * G + g), b = sval<T>(w.biases, r * G + g);
        for (int64_t k = g * w.group_size; k < (g + 1) * w.group_size; ++k) {
          // NOTE: f32 holds q * s exactly and rounds the sum once more; with 24 bits
          // >= 2p + 2 that double rounding equals rounding the exact sum to T.
          const float p = to_f32(from_f32<T>(float(qvalue(row, k, w.bits)) * s));
          out[r * K + k] = from_f32<T>(p + b);
        }
      }
    }
  });
}

// One group of MLX's CPU quantize (mlx/backend/cpu/quantized.cpp), bit for bit.
template <typename T>
void quantize_group(const T* w, int gs, int bits, uint32_t* out_words, float& scale_out, float& bias_out) {
  const float n_bins = float((1 << bits) - 1);
  const float eps = 1e-7f;
  float w_min = std::numeric_limits<float>::infinity();
  float w_max = -w_min;
  for (int j = 0; j < gs; ++j) {
    w_max = std::max(w_max, to_f32(w[j]));
    w_min = std::min(w_min, to_f32(w[j]));
  }
  const bool mask = std::abs(w_min) > std::abs(w_max);
  float scale = std::max((w_max - w_min) / n_bins, eps);
  scale = mask ? scale : -scale;
  const float edge = mask ? w_min : w_max;
  const float q0 = std::rint(edge / scale);
  float bias = 0;
  if (q0 != 0) {
    scale = edge / q0;
    bias = edge;
  }
  const int n_words = gs * bits / 32;
  std::fill(out_words, out_words + n_words, 0u);
  for (int j = 0; j < gs; ++j) {
    float q = std::rint((to_f32(w[j]) - bias) / scale);
    q = std::min(std::max(q, 0.0f), n_bins);
    const uint64_t v = uint64_t(q);
    const int bit = j * bits;
    const uint64_t shifted = v << (bit & 31);
    out_words[bit >> 5] |= uint32_t(shifted);
    if ((bit & 31) + bits > 32) out_words[(bit >> 5) + 1] |= uint32_t(shifted >> 32);
  }
  scale_out = scale;
  bias_out = bias;
}

template <typename T, typename S>
void quantize_typed(const T* w, int64_t N, int64_t K, int bits, int gs, uint32_t* packed, S* scales, S* biases) {
  const int64_t G = K / gs, words_per_row = K * bits / 32, words_per_group = gs * bits / 32;
  parallel_for(N, K * 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t g = 0; g < G; ++g) {
        float s, b;
        quantize_group(w + r * K + g * gs, gs, bits, packed + r * words_per_row + g * words_per_group, s, b);
        scales[r * G + g] = from_f32<S>(s);
        biases[r * G + g] = from_f32<S>(b);
      }
    }
  });
}

template <typename T>
void quantize_dispatch_scales(const T* w, int64_t N, int64_t K, int bits, int gs, Tensor& packed, Tensor& scales,
                              Tensor& biases) {
  uint32_t* p = packed.data<uint32_t>();
  switch (scales.dtype()) {
    case DType::f32: quantize_typed(w, N, K, bits, gs, p, scales.data<float>(), biases.data<float>()); break;
    case DType::f16: quantize_typed(w, N, K, bits, gs, p, scales.data<f16_t>(), biases.data<f16_t>()); break;
    case DType::bf16: quantize_typed(w, N, K, bits, gs, p, scales.data<bf16_t>(), biases.data<bf16_t>()); break;
    default: MLXCEL_CHECK(false, "quantize scales {}", dtype_name(scales.dtype()));
  }
}

}  // namespace

void qlinear(const float* x, int64_t M, const QuantMatrix& w, const float* bias, float* y) {
  switch (w.scale_dtype) {
    case DType::f32: qlinear_typed<float>(x, M, w, bias, y); break;
    case DType::f16: qlinear_typed<f16_t>(x, M, w, bias, y); break;
    case DType::bf16: qlinear_typed<bf16_t>(x, M, w, bias, y); break;
    default: MLXCEL_CHECK(false, "qlinear scales {}", dtype_name(w.scale_dtype));
  }
}

void qlinear_multi(const float* x, int64_t M, const QuantMatrix* ws, int n, const float* const* biases,
                   float* const* ys) {
  MLXCEL_CHECK(n >= 1 && n <= 4, "qlinear_multi of {} matrices", n);
#if defined(MLXCEL_SIMD_AVX512) || defined(MLXCEL_SIMD_AVX2)
  bool done = false;
  switch (ws[0].scale_dtype) {
    case DType::f32: done = decode_multi<float>(x, M, ws, n, ys); break;
    case DType::f16: done = decode_multi<f16_t>(x, M, ws, n, ys); break;
    case DType::bf16: done = decode_multi<bf16_t>(x, M, ws, n, ys); break;
    default: break;
  }
  if (done) {
    if (biases)
      for (int i = 0; i < n; ++i) add_bias(ys[i], M, ws[i].N, biases[i]);
    return;
  }
#endif
  for (int i = 0; i < n; ++i) MLXCEL_CPU_NS::qlinear(x, M, ws[i], biases ? biases[i] : nullptr, ys[i]);
}

void dequantize_rows_f32(const QuantMatrix& w, const int32_t* rows, int64_t n, float* out) {
  switch (w.scale_dtype) {
    case DType::f32: dequantize_rows_typed<float>(w, rows, n, out); break;
    case DType::f16: dequantize_rows_typed<f16_t>(w, rows, n, out); break;
    case DType::bf16: dequantize_rows_typed<bf16_t>(w, rows, n, out); break;
    default: MLXCEL_CHECK(false, "dequantize scales {}", dtype_name(w.scale_dtype));
  }
}

void dequantize_same_dtype(const QuantMatrix& w, void* out) {
  switch (w.scale_dtype) {
    case DType::f16: dequantize_same_typed(w, static_cast<f16_t*>(out)); break;
    case DType::bf16: dequantize_same_typed(w, static_cast<bf16_t*>(out)); break;
    case DType::f32: dequantize_rows_typed<float>(w, nullptr, w.N, static_cast<float*>(out)); break;
    default: MLXCEL_CHECK(false, "dequantize scales {}", dtype_name(w.scale_dtype));
  }
}

void quantize(const Tensor& w, int bits, int group_size, Tensor& packed, Tensor& scales, Tensor& biases) {
  const int64_t N = w.dim(0), K = w.dim(1);
  switch (w.dtype()) {
    case DType::f32: quantize_dispatch_scales(w.data<float>(), N, K, bits, group_size, packed, scales, biases); break;
    case DType::f16: quantize_dispatch_scales(w.data<f16_t>(), N, K, bits, group_size, packed, scales, biases); break;
    case DType::bf16: quantize_dispatch_scales(w.data<bf16_t>(), N, K, bits, group_size, packed, scales, biases); break;
    default: MLXCEL_CHECK(false, "quantize {}", dtype_name(w.dtype()));
  }
}

}  // namespace mlxcel::cpu::MLXCEL_CPU_NS
