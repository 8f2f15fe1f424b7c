#include "backends/cpu/gguf_quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define MLXCEL_GGUF_AVX2 1
#endif

#include "backends/cpu/gemm.h"
#include "backends/cpu/parallel.h"
#include "base/error.h"
#include "base/half.h"

namespace mlxcel::gguf {

namespace {

inline float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}
inline void put_half(uint8_t* p, float v) {
  uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// The 6-bit scale and min j (0..7) of a Q4_K/Q5_K block's 12 scale bytes.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t& d, uint8_t& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void deq_q4_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = float((qs[j] & 0xF) - 8) * d;
    y[j + 16] = float((qs[j] >> 4) - 8) * d;
  }
}
void deq_q4_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(qs[j] & 0xF) * d + m;
    y[j + 16] = float(qs[j] >> 4) * d + m;
  }
}
void deq_q5(const uint8_t* b, float* y, bool with_min) {
  const float d = half_at(b);
  const float m = with_min ? half_at(b + 2) : 0.0f;
  const uint8_t* p = b + (with_min ? 4 : 2);
  uint32_t qh;
  std::memcpy(&qh, p, 4);
  const uint8_t* qs = p + 4;
  for (int j = 0; j < 16; ++j) {
    int x0 = (qs[j] & 0xF) | (((qh >> j) << 4) & 0x10);
    int x1 = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
    if (with_min) {
      y[j] = float(x0) * d + m;
      y[j + 16] = float(x1) * d + m;
    } else {
      y[j] = float(x0 - 16) * d;
      y[j + 16] = float(x1 - 16) * d;
    }
  }
}
void deq_q8_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = float(qs[j]) * d;
}

// Q2_K: u8 scales[16]; u8 qs[64]; half d; half dmin.
void deq_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = half_at(b + 80), dmin = half_at(b + 82);
  int is = 0;
  for (int n = 0; n < 256; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        uint8_t sc = scales[is++];
        const float dl = d * float(sc & 0xF), ml = dmin * float(sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * float((q[l + 16 * half] >> shift) & 3) - ml;
      }
      shift += 2;
    }
    q += 32;
  }
}

// Q3_K: u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d.
void deq_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const uint8_t* sraw = b + 96;
  const float d_all = half_at(b + 108);
  // 16 6-bit scales: low 4 bits from bytes 0..7 (nibbles), high 2 bits from bytes 8..11.
  int8_t scales[16];
  for (int i = 0; i < 16; ++i) {
    int low = i < 8 ? (sraw[i] & 0xF) : (sraw[i - 8] >> 4);
    int high = (sraw[8 + (i % 4)] >> (2 * (i / 4))) & 3;
    scales[i] = int8_t((low | (high << 4)) - 32);
  }
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < 256; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d_all * float(scales[is++]);
        for (int l = 0; l < 16; ++l) {
          const int k = l + 16 * half;
          int v = ((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4);
          *y++ = dl * float(v);
        }
      }
      shift += 2;
      m = uint8_t(m << 1);
    }
    q += 32;
  }
}

// Q4_K: half d; half dmin; u8 scales[12]; u8 qs[128].
void deq_q4_k(const uint8_t* b, float* y) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const uint8_t* sc = b + 4;
  const uint8_t* q = b + 16;
  int is = 0;
  for (int j = 0; j < 256; j += 64) {
    uint8_t s, m;
    scale_min_k4(is, sc, s, m);
    const float d1 = d * s, m1 = dmin * m;
    scale_min_k4(is + 1, sc, s, m);
    const float d2 = d * s, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}

// Q5_K: half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128].
void deq_q5_k(const uint8_t* b, float* y) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const uint8_t* sc = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  int is = 0;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < 256; j += 64) {
    uint8_t s, m;
    scale_min_k4(is, sc, s, m);
    const float d1 = d * s, m1 = dmin * m;
    scale_min_k4(is + 1, sc, s, m);
    const float d2 = d * s, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * float((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 = uint8_t(u1 << 2);
    u2 = uint8_t(u2 << 2);
  }
}

// Q6_K: u8 ql[128]; u8 qh[64]; i8 scales[16]; half d.
void deq_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half_at(b + 208);
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * float(sc[is]) * float(q1);
      y[l + 32] = d * float(sc[is + 2]) * float(q2);
      y[l + 64] = d * float(sc[is + 4]) * float(q3);
      y[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

}  // namespace

bool can_dequantize(uint32_t t) {
  switch (t) {
    case kF32: case kF16: case kBF16: case kQ4_0: case kQ4_1: case kQ5_0: case kQ5_1: case kQ8_0:
    case kQ2_K: case kQ3_K: case kQ4_K: case kQ5_K: case kQ6_K:
      return true;
    default:
      return false;
  }
}

size_t block_elems(uint32_t t) {
  switch (t) {
    case kF32: case kF16: case kBF16: return 1;
    case kQ4_0: case kQ4_1: case kQ5_0: case kQ5_1: case kQ8_0: return 32;
    case kQ2_K: case kQ3_K: case kQ4_K: case kQ5_K: case kQ6_K: return 256;
    default: return 0;
  }
}

size_t block_bytes(uint32_t t) {
  switch (t) {
    case kF32: return 4;
    case kF16: case kBF16: return 2;
    case kQ4_0: return 18;
    case kQ4_1: return 20;
    case kQ5_0: return 22;
    case kQ5_1: return 24;
    case kQ8_0: return 34;
    case kQ2_K: return 84;
    case kQ3_K: return 110;
    case kQ4_K: return 144;
    case kQ5_K: return 176;
    case kQ6_K: return 210;
    default: return 0;
  }
}

size_t row_bytes(uint32_t t, int64_t n) {
  const size_t be = block_elems(t);
  MLXCEL_CHECK(be != 0 && n % int64_t(be) == 0, "gguf row of {} values for type {}", n, t);
  return size_t(n) / be * block_bytes(t);
}

void dequantize_row(uint32_t t, const uint8_t* src, float* dst, int64_t n) {
  const size_t be = block_elems(t), bb = block_bytes(t);
  MLXCEL_CHECK(be != 0 && n % int64_t(be) == 0, "gguf dequantize: {} values for type {}", n, t);
  const int64_t nb = n / int64_t(be);
  switch (t) {
    case kF32: std::memcpy(dst, src, size_t(n) * 4); return;
    case kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = half_at(src + 2 * i);
      return;
    case kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    default: break;
  }
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* b = src + size_t(i) * bb;
    float* y = dst + i * int64_t(be);
    switch (t) {
      case kQ4_0: deq_q4_0(b, y); break;
      case kQ4_1: deq_q4_1(b, y); break;
      case kQ5_0: deq_q5(b, y, false); break;
      case kQ5_1: deq_q5(b, y, true); break;
      case kQ8_0: deq_q8_0(b, y); break;
      case kQ2_K: deq_q2_k(b, y); break;
      case kQ3_K: deq_q3_k(b, y); break;
      case kQ4_K: deq_q4_k(b, y); break;
      case kQ5_K: deq_q5_k(b, y); break;
      case kQ6_K: deq_q6_k(b, y); break;
      default: MLXCEL_CHECK(false, "unreachable");
    }
  }
}

void quantize_row_q8_0(const float* x, uint8_t* y, int64_t n) {
  MLXCEL_CHECK(n % 32 == 0, "q8_0: {} values", n);
  for (int64_t i = 0; i < n / 32; ++i, x += 32, y += 34) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(y, d);
    for (int j = 0; j < 32; ++j) y[2 + j] = uint8_t(int8_t(std::roundf(x[j] * id)));
  }
}

void quantize_row_q4_0(const float* x, uint8_t* y, int64_t n) {
  MLXCEL_CHECK(n % 32 == 0, "q4_0: {} values", n);
  for (int64_t i = 0; i < n / 32; ++i, x += 32, y += 18) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(y, d);
    for (int j = 0; j < 16; ++j) {
      const uint8_t a = uint8_t(std::min(15, int(int8_t(x[j] * id + 8.5f))));
      const uint8_t b = uint8_t(std::min(15, int(int8_t(x[j + 16] * id + 8.5f))));
      y[2 + j] = uint8_t(a | (b << 4));
    }
  }
}

// ---- packed matmul -------------------------------------------------------------------
//
// Like ggml's CPU path, activations are quantized to 8 bits in blocks of 32 (one f32
// scale per block), and each block's dot product is an integer dot product scaled by
// d_w * d_x. This adds an error of the order of Q8_0's to the activations.

namespace {

struct XBlocks {
  std::vector<int8_t> q;  // [M, K]
  std::vector<float> d;   // [M, K / 32]
  std::vector<int32_t> s; // [M, K / 32]: sum of the block's quants (for Q4_0's -8 offset)
};

void quantize_x(const float* x, int64_t M, int64_t K, XBlocks& xb) {
  const int64_t nb = K / 32;
  xb.q.resize(size_t(M * K));
  xb.d.resize(size_t(M * nb));
  xb.s.resize(size_t(M * nb));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t b = 0; b < nb; ++b) {
      const float* p = x + m * K + b * 32;
      float amax = 0.0f;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(p[j]));
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      int8_t* q = xb.q.data() + m * K + b * 32;
      int32_t s = 0;
      for (int j = 0; j < 32; ++j) {
        q[j] = int8_t(std::nearbyintf(p[j] * id));
        s += q[j];
      }
      xb.d[size_t(m * nb + b)] = d;
      xb.s[size_t(m * nb + b)] = s;
    }
  }
}

#if MLXCEL_GGUF_AVX2
inline __m256i load_q4_unsigned(const uint8_t* qs) {
  // 16 bytes -> 32 nibbles in value order: low nibbles (values 0..15), then high (16..31).
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}
// Sum of u8 a[i] * i8 b[i] over 32 bytes as 8 i32 lanes.
inline __m256i dot_u8i8(__m256i a, __m256i b) {
  const __m256i p16 = _mm256_maddubs_epi16(a, b);
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}
// Sum of i8 a[i] * i8 b[i] (a != -128) as 8 i32 lanes.
inline __m256i dot_i8i8(__m256i a, __m256i b) {
  const __m256i ax = _mm256_sign_epi8(a, a);
  const __m256i sb = _mm256_sign_epi8(b, a);
  return dot_u8i8(ax, sb);
}
#endif

// Dot product of one packed row with one quantized activation row.
[[maybe_unused]] float dot_row(uint32_t type, const uint8_t* w, const int8_t* xq, const float* xd, const int32_t* xs, int64_t nb) {
#if MLXCEL_GGUF_AVX2
  __m256 acc = _mm256_setzero_ps();
  if (type == kQ8_0) {
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w + b * 34;
      const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * 32));
      const __m256i s = dot_i8i8(wq, xv);
      const __m256 scale = _mm256_set1_ps(half_at(blk) * xd[b]);
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc);
    }
  } else {
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w + b * 18;
      const __m256i wq = load_q4_unsigned(blk + 2);  // 0..15
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * 32));
      const __m256i s = dot_u8i8(wq, xv);  // sum q*x; subtract 8 * sum x below
      // 8 * sum(x), spread over the 8 lanes that are summed at the end.
      const __m256 sf = _mm256_sub_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(float(xs[b])));
      const __m256 scale = _mm256_set1_ps(half_at(blk) * xd[b]);
      acc = _mm256_fmadd_ps(sf, scale, acc);
    }
  }
  __m128 lo = _mm256_castps256_ps128(acc), hi = _mm256_extractf128_ps(acc, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_hadd_ps(lo, lo);
  lo = _mm_hadd_ps(lo, lo);
  return _mm_cvtss_f32(lo);
#else
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t s = 0;
    const int8_t* xv = xq + b * 32;
    if (type == kQ8_0) {
      const uint8_t* blk = w + b * 34;
      const int8_t* q = reinterpret_cast<const int8_t*>(blk + 2);
      for (int j = 0; j < 32; ++j) s += int32_t(q[j]) * xv[j];
      acc += float(s) * half_at(blk) * xd[b];
    } else {
      const uint8_t* blk = w + b * 18;
      for (int j = 0; j < 16; ++j) {
        s += int32_t(blk[2 + j] & 0xF) * xv[j];
        s += int32_t(blk[2 + j] >> 4) * xv[j + 16];
      }
      s -= 8 * xs[b];
      acc += float(s) * half_at(blk) * xd[b];
    }
  }
  return acc;
#endif
}

}  // namespace

const char* matmul_isa() {
#if MLXCEL_GGUF_AVX2
  return "avx2";
#else
  return "scalar";
#endif
}

#if MLXCEL_GGUF_AVX2
namespace {

inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_hadd_ps(lo, lo);
  lo = _mm_hadd_ps(lo, lo);
  return _mm_cvtss_f32(lo);
}

// MC activation rows (m0..m0+MC) against one weight row: each weight block is decoded
// once and multiplied into MC accumulators.
template <int MC>
void dot_tile(uint32_t type, const uint8_t* w, const XBlocks& xb, int64_t K, int64_t m0, float* out) {
  const int64_t nb = K / 32;
  __m256 acc[MC];
  for (int j = 0; j < MC; ++j) acc[j] = _mm256_setzero_ps();
  const int8_t* xq = xb.q.data() + m0 * K;
  const float* xd = xb.d.data() + m0 * nb;
  const int32_t* xs = xb.s.data() + m0 * nb;
  if (type == kQ8_0) {
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w + b * 34;
      const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
      const __m256i wa = _mm256_sign_epi8(wq, wq);
      uint16_t h;
      std::memcpy(&h, blk, 2);
      const float dw = _cvtsh_ss(h);
      for (int j = 0; j < MC; ++j) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + j * K + b * 32));
        const __m256i s = dot_u8i8(wa, _mm256_sign_epi8(xv, wq));
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * xd[j * nb + b]), acc[j]);
      }
    }
  } else {
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w + b * 18;
      const __m256i wq = load_q4_unsigned(blk + 2);
      uint16_t h;
      std::memcpy(&h, blk, 2);
      const float dw = _cvtsh_ss(h);
      for (int j = 0; j < MC; ++j) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + j * K + b * 32));
        const __m256i s = dot_u8i8(wq, xv);
        // q in 0..15: subtract 8 * sum(x), spread over the 8 lanes summed at the end.
        const __m256 sf = _mm256_sub_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(float(xs[j * nb + b])));
        acc[j] = _mm256_fmadd_ps(sf, _mm256_set1_ps(dw * xd[j * nb + b]), acc[j]);
      }
    }
  }
  for (int j = 0; j < MC; ++j) out[j] = hsum8(acc[j]);
}

}  // namespace
#endif

namespace {

// Weight source for the cache-blocked f32 GEMM (backends/cpu/gemm.h): each panel of
// block rows is dequantized once into f32 and then serves every row of x.
struct PackedSource {
  uint32_t type;
  const uint8_t* w;
  size_t row_stride;
  void pack(int64_t n0, int64_t nb, int64_t k0, int64_t kb, float* buf, float* packed) const {
    for (int64_t n = 0; n < nb; ++n)
      dequantize_row(type, w + size_t(n0 + n) * row_stride + size_t(k0 / 32) * block_bytes(type), buf + n * kb, kb);
    cpu::gemm::pack_panel(buf, kb, nb, kb, packed);
  }
};

}  // namespace

void matmul_packed(uint32_t type, const float* x, int64_t M, int64_t K, const uint8_t* w, size_t row_stride,
                   int64_t n_rows, const float* bias, float* y) {
  MLXCEL_CHECK(type == kQ8_0 || type == kQ4_0, "gguf matmul_packed: type {} is not kept packed", type);
  MLXCEL_CHECK(K % 32 == 0, "gguf matmul_packed: K {} is not a multiple of 32", K);
  // Prefill-sized M: dequantizing each weight panel once and running the f32 GEMM beats
  // the int8 tile kernel (which decodes every block once per 4 rows of x): 1.2-1.5x at
  // M = 128 on the 2-core AVX2 build machine (bench/gguf_bench kernel).
  if (M >= 64) {
    cpu::gemm::run(x, M, K, n_rows, PackedSource{type, w, row_stride}, bias, y);
    return;
  }
  [[maybe_unused]] const int64_t nb = K / 32;
  XBlocks xb;
  quantize_x(x, M, K, xb);
  // Rows in chunks of 16 (their bytes stay in cache) against activation tiles of 4 rows
  // (each weight block decoded once per tile).
  constexpr int64_t kRowChunk = 16;
  const int64_t n_chunks = (n_rows + kRowChunk - 1) / kRowChunk;
  cpu::parallel_for(n_chunks, kRowChunk * K * M, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t r0 = c * kRowChunk, r1 = std::min(n_rows, r0 + kRowChunk);
      for (int64_t m0 = 0; m0 < M; m0 += 4) {
        const int64_t mc = std::min<int64_t>(4, M - m0);
        for (int64_t r = r0; r < r1; ++r) {
          const uint8_t* wr = w + size_t(r) * row_stride;
          float v[4];
#if MLXCEL_GGUF_AVX2
          switch (mc) {
            case 4: dot_tile<4>(type, wr, xb, K, m0, v); break;
            case 3: dot_tile<3>(type, wr, xb, K, m0, v); break;
            case 2: dot_tile<2>(type, wr, xb, K, m0, v); break;
            default: dot_tile<1>(type, wr, xb, K, m0, v); break;
          }
#else
          for (int64_t j = 0; j < mc; ++j)
            v[j] = dot_row(type, wr, xb.q.data() + (m0 + j) * K, xb.d.data() + (m0 + j) * nb,
                           xb.s.data() + (m0 + j) * nb, nb);
#endif
          for (int64_t j = 0; j < mc; ++j) y[(m0 + j) * n_rows + r] = v[j] + (bias ? bias[r] : 0.0f);
        }
      }
    }
  });
}

void gather_rows(uint32_t type, const uint8_t* w, size_t row_stride, int64_t K, const int32_t* ids, int64_t n_ids,
                 float* out) {
  for (int64_t i = 0; i < n_ids; ++i) dequantize_row(type, w + size_t(ids[i]) * row_stride, out + i * K, K);
}

}  // namespace mlxcel::gguf
