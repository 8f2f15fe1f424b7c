#include "backends/cpu/gguf_quants.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <sys/mman.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define MLXCEL_GGUF_AVX2 1
#endif
// The avx512 build (isa.h): 16-row panels and VPDPBUSD (u8 x s8 -> i32, four products a
// lane) for the int8 products.
#if MLXCEL_GGUF_AVX2 && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__)
#define MLXCEL_GGUF_VNNI 1
#endif

#include "backends/cpu/gemm.h"
#include "backends/cpu/parallel.h"
#include "base/error.h"
#include "base/half.h"
#include "base/thread_pool.h"

// One build per ISA level (backends/cpu/isa.h); dispatch.cpp defines the public
// mlxcel::gguf functions.
namespace mlxcel::gguf::MLXCEL_CPU_NS {

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

// Bytes of one 256-value block of an x8 Q4_K group (8 rows): d[8], dmin[8] (f16), the 8
// sub-blocks' scales and mins as bytes [sub-block][row], then 8 x 128 bytes of quants.
constexpr int64_t kX8Q4kBlock = 16 + 16 + 64 + 64 + 1024;
// Q5_K's: the same, then its high bits (qh) as 8 vectors, lane r = 4 bytes of row r's qh
// (bit s of byte l: value l of sub-block s).
constexpr int64_t kX8Q5kBlock = kX8Q4kBlock + 256;
// ... and of an x8 Q6_K group: d[8] (f16), the 16 sub-blocks' int8 scales [sub-block][row],
// then the 4-bit parts (ql) as 32 vectors and the 2-bit parts (qh) as 16, lane r = 4
// consecutive bytes of row r's ql / qh: 8 x 210 bytes, the file's size.
constexpr int64_t kX8Q6kBlock = 16 + 128 + 1024 + 512;
// ... and of an x8 Q3_K group: Q6_K's d[8] and int8 scales (here sc - 32), then qs as 16
// vectors and hmask as 8, lane r = 4 consecutive bytes of row r's qs / hmask: 912 bytes
// against the file's 8 x 110 (the scales unpacked from 12 bytes a row to 16).
constexpr int64_t kX8Q3kBlock = 16 + 128 + 512 + 256;
// ... and of an x8 Q2_K group: d[8], dmin[8] (f16), the 16 sub-blocks' scale bytes as they
// are (scale in the low nibble, min in the high one) [sub-block][row], then qs as 16 vectors
// as Q3_K's: 8 x 84 bytes, the file's size (the nibbles split in registers; split into
// bytes they would add 19%).
constexpr int64_t kX8Q2kBlock = 16 + 16 + 128 + 512;

// The 32-value formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0). An x8 block is the file's 8 blocks:
// each f16 field (d; Q4_1 / Q5_1: then m) as the 8 rows' (2 bytes a row), then the rest
// (Q5_0 / Q5_1: the 4 bytes of fifth bits; the quants) as vectors of 4-byte lanes, lane r =
// row r's. The 4-bit and 5-bit values stay unsigned: the integer block sums start at
// -xs_mult * xs (xs = 8 sum(xq): Q4_0's offset of 8 once, Q5_0's 16 twice), and Q4_1 /
// Q5_1 add m dx sum(xq) in f32. (Q8_0's values are signed.)
struct B32 {
  int halves;        // f16 fields: 1 (d) or 2 (d, m)
  bool high;         // fifth bits (qh) before the quants
  int64_t qh, qs;    // where qh and the quants start in an x8 block
  int64_t block;     // bytes of an x8 block
  int xs_mult;
};
constexpr B32 b32_format(uint32_t t) {
  const int halves = t == kQ4_1 || t == kQ5_1 ? 2 : 1;
  const bool high = t == kQ5_0 || t == kQ5_1;
  const int64_t qs = 16 * halves + (high ? 32 : 0);
  return {halves, high, 16 * halves, qs, qs + (t == kQ8_0 ? 256 : 128), t == kQ4_0 ? 1 : t == kQ5_0 ? 2 : 0};
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

// Scale i (0..15) of a Q3_K block's 12 scale bytes, less its offset of 32: 6 bits, the low
// 4 from bytes 0..7 (nibbles), the high 2 from bytes 8..11.
inline int8_t q3k_scale(const uint8_t* sraw, int i) {
  const int low = i < 8 ? (sraw[i] & 0xF) : (sraw[i - 8] >> 4);
  const int high = (sraw[8 + (i % 4)] >> (2 * (i / 4))) & 3;
  return int8_t((low | (high << 4)) - 32);
}

// Q3_K: u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d.
void deq_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const float d_all = half_at(b + 108);
  int8_t scales[16];
  for (int i = 0; i < 16; ++i) scales[i] = q3k_scale(b + 96, i);
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

bool affine4_row(uint32_t type, const uint8_t* src, int64_t n, uint32_t* words, float* scales, float* biases) {
  if (type != kQ4_1 && type != kQ4_K) return false;
  // Group g's 32 values q[0..31] into its 4 words.
  auto put = [&](int64_t g, const uint8_t (&q)[32]) {
    uint32_t* w = words + 4 * g;
    for (int i = 0; i < 4; ++i) {
      uint32_t v = 0;
      for (int j = 0; j < 8; ++j) v |= uint32_t(q[8 * i + j]) << (4 * j);
      w[i] = v;
    }
  };
  uint8_t q[32];
  if (type == kQ4_1) {
    for (int64_t g = 0; g < n / 32; ++g) {
      const uint8_t* b = src + g * 20;
      scales[g] = half_at(b), biases[g] = half_at(b + 2);
      for (int j = 0; j < 16; ++j) q[j] = b[4 + j] & 0xF, q[j + 16] = b[4 + j] >> 4;
      put(g, q);
    }
    return true;
  }
  for (int64_t blk = 0; blk < n / 256; ++blk) {
    const uint8_t* b = src + blk * 144;
    const float d = half_at(b), dmin = half_at(b + 2);
    const uint8_t* sc = b + 4;
    const uint8_t* qs = b + 16;
    for (int c = 0; c < 4; ++c) {  // 64 values: sub-block 2c in the low nibbles, 2c + 1 in the high
      for (int h = 0; h < 2; ++h) {
        const int64_t g = blk * 8 + 2 * c + h;
        uint8_t s, m;
        scale_min_k4(2 * c + h, sc, s, m);
        scales[g] = d * float(s), biases[g] = -(dmin * float(m));
        for (int l = 0; l < 32; ++l) q[l] = h ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 0xF;
        put(g, q);
      }
    }
  }
  return true;
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

namespace {

// ggml's reference quantizers: Q8_0 (quantize_row_q8_0_ref): d = amax / 127, q = round(x / d).
void quantize_row_q8_0(const float* x, uint8_t* y, int64_t n) {
  for (int64_t i = 0; i < n / 32; ++i, x += 32, y += 34) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(y, d);
    for (int j = 0; j < 32; ++j) y[2 + j] = uint8_t(int8_t(std::roundf(x[j] * id)));
  }
}

// The 4- and 5-bit 32-value formats (quantize_row_q4_0_ref,
// q4_1_ref, q5_0_ref, q5_1_ref). Q4_0 / Q5_0: d = the value of largest magnitude over -8 /
// -16, q = trunc(x / d + 8.5 / 16.5); Q4_1 / Q5_1: d = (max - min) / 15 / 31, m = min, q =
// trunc((x - min) / d + 0.5); q capped at 15 / 31, the fifth bits of value j in bit j of qh.
void quantize_row_b32(uint32_t type, const float* x, uint8_t* y, int64_t n) {
  const B32 f = b32_format(type);
  const int half = f.high ? 16 : 8, top = 2 * half - 1;
  const size_t bb = block_bytes(type);
  for (int64_t i = 0; i < n / 32; ++i, x += 32, y += bb) {
    float d, lo = 0.0f, off = 0.5f;
    if (f.halves == 2) {
      float mn = x[0], mx = x[0];
      for (int j = 1; j < 32; ++j) mn = std::min(mn, x[j]), mx = std::max(mx, x[j]);
      d = (mx - mn) / float(top);
      lo = mn;
    } else {
      float amax = 0.0f, max = 0.0f;
      for (int j = 0; j < 32; ++j) {
        if (amax < std::fabs(x[j])) {
          amax = std::fabs(x[j]);
          max = x[j];
        }
      }
      d = max / -float(half);
      off = float(half) + 0.5f;
    }
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_half(y, d);
    if (f.halves == 2) put_half(y + 2, lo);
    uint8_t* qs = y + bb - 16;
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const int a = std::min(top, int(int8_t((x[j] - lo) * id + off)));
      const int b = std::min(top, int(int8_t((x[j + 16] - lo) * id + off)));
      qs[j] = uint8_t((a & 0xF) | ((b & 0xF) << 4));
      qh |= uint32_t(a >> 4) << j | uint32_t(b >> 4) << (j + 16);
    }
    if (f.high) std::memcpy(y + 2 * f.halves, &qh, 4);
  }
}

}  // namespace

void quantize_row(uint32_t type, const float* x, uint8_t* y, int64_t n) {
  MLXCEL_CHECK(n % 32 == 0, "gguf quantize: {} values", n);
  MLXCEL_CHECK(type == kQ8_0 || type == kQ4_0 || type == kQ4_1 || type == kQ5_0 || type == kQ5_1,
               "gguf quantize: type {} has no quantizer", type);
  if (type == kQ8_0) quantize_row_q8_0(x, y, n);
  else quantize_row_b32(type, x, y, n);
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
  std::vector<int32_t> s; // [M, K / 32]: 8 * the sum of the block's quants (Q4_0's / Q5_0's offsets, the mins)
  std::vector<int32_t> h; // [M, K / 32]: the sum of its first 16 quants (Q6_K's / Q3_K's 16-value sub-blocks)
};

// Pointers to xb's rows from row m0 on (K values a row): quants, scales, sums, half sums.
struct XRows {
  const int8_t* q;
  const float* d;
  const int32_t* s;
  const int32_t* h;
};
inline XRows x_rows(const XBlocks& xb, int64_t m0, int64_t K) {
  const int64_t nb = K / 32;
  return {xb.q.data() + m0 * K, xb.d.data() + m0 * nb, xb.s.data() + m0 * nb, xb.h.data() + m0 * nb};
}

// One block of 32 activations: int8 quants, scale, 8 * the sum of the quants, the sum of
// the first 16. The AVX2 path computes exactly what the scalar one does (same d and 1/d;
// _mm256_cvtps_epi32 rounds to nearest even like nearbyintf in the default rounding mode).
inline void quantize_block(const float* p, int8_t* q, float* d_out, int32_t* s_out, int32_t* h_out) {
#if MLXCEL_GGUF_AVX2
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 v[4];
  __m256 amax = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_loadu_ps(p + 8 * i);
    amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  const float d = _mm_cvtss_f32(m) / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const __m256 idv = _mm256_set1_ps(id);
  __m256i qi[4];
  for (int i = 0; i < 4; ++i) qi[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], idv));
  // Lane sums of the first half (h) and the whole block (s), reduced side by side.
  const __m256i first = _mm256_add_epi32(qi[0], qi[1]);
  const __m256i sum = _mm256_add_epi32(first, _mm256_add_epi32(qi[2], qi[3]));
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
  __m128i h4 = _mm_add_epi32(_mm256_castsi256_si128(first), _mm256_extracti128_si256(first, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
  h4 = _mm_add_epi32(h4, _mm_shuffle_epi32(h4, 0x4E));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
  h4 = _mm_add_epi32(h4, _mm_shuffle_epi32(h4, 0xB1));
  // i32 -> i16 -> i8 packs work per 128-bit lane; the permute restores the order.
  const __m256i p16a = _mm256_packs_epi32(qi[0], qi[1]), p16b = _mm256_packs_epi32(qi[2], qi[3]);
  const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  *d_out = d;
  *s_out = 8 * _mm_cvtsi128_si32(s4);
  *h_out = _mm_cvtsi128_si32(h4);
#else
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(p[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int32_t s = 0, h = 0;
  for (int j = 0; j < 32; ++j) {
    q[j] = int8_t(std::nearbyintf(p[j] * id));
    s += q[j];
    if (j == 15) h = s;
  }
  *d_out = d;
  *s_out = 8 * s;
  *h_out = h;
#endif
}

void quantize_x(const float* x, int64_t M, int64_t K, XBlocks& xb) {
  const int64_t nb = K / 32;
  xb.q.resize(size_t(M * K));
  xb.d.resize(size_t(M * nb));
  xb.s.resize(size_t(M * nb));
  xb.h.resize(size_t(M * nb));
  cpu::parallel_for(M, K * 4, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m)
      for (int64_t b = 0; b < nb; ++b)
        quantize_block(x + m * K + b * 32, xb.q.data() + m * K + b * 32, &xb.d[size_t(m * nb + b)],
                       &xb.s[size_t(m * nb + b)], &xb.h[size_t(m * nb + b)]);
  });
}

// Dot product of one packed row with one quantized activation row (the scalar kernel).
[[maybe_unused]] float dot_row(uint32_t type, const uint8_t* w, const int8_t* xq, const float* xd, const int32_t* xs,
                               int64_t nb) {
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
      s -= xs[b];
      acc += float(s) * half_at(blk) * xd[b];
    }
  }
  return acc;
}

}  // namespace

const char* matmul_isa() {
#if MLXCEL_GGUF_VNNI
  return "avx512-vnni";
#elif MLXCEL_GGUF_AVX2
  return "avx2";
#else
  return "scalar";
#endif
}

#if MLXCEL_GGUF_AVX2
namespace {

// sum over g of maddubs(wg[g], broadcast of x's 4 bytes 4g..4g+3): the i16 partial dot
// products of a Q4_0 block's 8 groups (32 nibbles in each wg) with one row of int8 x
// (|.| <= 8 * 2 * 15 * 127: fits in i16).
inline __m256i dot_8_groups(const __m256i (&wg)[8], const int8_t* xm) {
  int32_t x4;
  std::memcpy(&x4, xm, 4);
  __m256i s16 = _mm256_maddubs_epi16(wg[0], _mm256_set1_epi32(x4));
  for (int g = 1; g < 8; ++g) {
    std::memcpy(&x4, xm + 4 * g, 4);
    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(wg[g], _mm256_set1_epi32(x4)));
  }
  return s16;
}

// The same block sums in i32. Values up to 31 (k5bit: Q5_0 / Q5_1 / Q5_K) overflow i16
// over 8 groups (8 x 2 x 31 x 127), so their groups add in i16 four at a time.
template <bool k5bit>
inline __m256i sum_8_groups(const __m256i (&wg)[8], const int8_t* xm) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (!k5bit) {
    return _mm256_madd_epi16(dot_8_groups(wg, xm), ones);
  } else {
    __m256i s32 = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      __m256i s16 = _mm256_setzero_si256();
      for (int g = 4 * h; g < 4 * h + 4; ++g) {
        int32_t x4;
        std::memcpy(&x4, xm + 4 * g, 4);
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(wg[g], _mm256_set1_epi32(x4)));
      }
      s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(s16, ones));
    }
    return s32;
  }
}

// Decode kernels: 8 weight rows at a time against MC (1..4) quantized activation rows.
// Each row's block dot products stay integers until the 8 rows' sums are gathered into
// one vector (lane i = row i), so the block scales of the 8 rows are applied with one
// f16 -> f32 conversion, one multiply and one FMA per block, and x is loaded once per
// block for all 8 rows. Rows past the end of the matrix repeat the last row (their
// results are discarded by the caller).

// Lane i of the result = sum of the 8 i32 lanes of v[i] (i = 0..7).
inline __m256i reduce8(__m256i v0, __m256i v1, __m256i v2, __m256i v3, __m256i v4, __m256i v5, __m256i v6,
                       __m256i v7) {
  const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
  const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(v4, v5), _mm256_hadd_epi32(v6, v7));
  // h0 = [r0 r1 r2 r3 | r0' r1' r2' r3'] (halves of each row's sum), h1 likewise for r4..r7.
  return _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20), _mm256_permute2x128_si256(h0, h1, 0x31));
}

inline int load16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}
// The f16 scales at byte offset off of the 8 rows, as f32.
inline __m256 scales8(const uint8_t* const* rp, size_t off) {
  __m128i h = _mm_cvtsi32_si128(load16(rp[0] + off));
  h = _mm_insert_epi16(h, load16(rp[1] + off), 1);
  h = _mm_insert_epi16(h, load16(rp[2] + off), 2);
  h = _mm_insert_epi16(h, load16(rp[3] + off), 3);
  h = _mm_insert_epi16(h, load16(rp[4] + off), 4);
  h = _mm_insert_epi16(h, load16(rp[5] + off), 5);
  h = _mm_insert_epi16(h, load16(rp[6] + off), 6);
  h = _mm_insert_epi16(h, load16(rp[7] + off), 7);
  return _mm256_cvtph_ps(h);
}

// The 8 rows are read as 8 interleaved streams, which the hardware prefetchers follow
// less well than one sequential stream; block b of a group prefetches the bytes
// [b * per_block, (b + 1) * per_block) of the region `pf` (a group ahead: its rows are
// contiguous when the matrix's are). A prefetch never faults, so pf may run past the end.
inline void prefetch_ahead(const uint8_t* pf, int64_t b, int64_t per_block) {
  if (!pf) return;
  const uint8_t* p = pf + b * per_block;
  for (int64_t i = 0; i < per_block; i += 64) _mm_prefetch(reinterpret_cast<const char*>(p + i), _MM_HINT_T0);
}

// Q4_0: rows p and p + 4 share a register (row p's 16 bytes in the low lane, row p + 4's
// in the high lane), so one AND and one shift give the low nibbles (values 0..15) and
// the high nibbles (16..31) of two rows; x's halves are broadcast to both lanes. The
// nibbles stay unsigned (0..15) and 8 * sum(x) is subtracted per block.
template <int MC>
void q4_0_rows8(const uint8_t* const* rp, const uint8_t* pf, const XBlocks& xb, int64_t K, int64_t m0, float* out) {
  const int64_t nb = K / 32;
  const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256 acc[MC];
  for (int j = 0; j < MC; ++j) acc[j] = _mm256_setzero_ps();
  const auto [xq, xd, xs, xh] = x_rows(xb, m0, K);
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = size_t(b) * 18;
    prefetch_ahead(pf, b, 144);
    __m256i part[MC][4];
    for (int p = 0; p < 4; ++p) {
      const __m256i v = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(rp[p + 4] + off + 2),
                                            reinterpret_cast<const __m128i*>(rp[p] + off + 2));
      const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      for (int j = 0; j < MC; ++j) {
        const int8_t* xb32 = xq + j * K + b * 32;
        const __m256i xlo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xb32)));
        const __m256i xhi = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xb32 + 16)));
        // [row p: 8 i16 | row p+4: 8 i16], each |.| <= 2 * 2 * 15 * 127
        part[j][p] = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
      }
    }
    const __m256 dw = scales8(rp, off);
    for (int j = 0; j < MC; ++j) {
      // hadd16(hadd16(p0, p1), hadd16(p2, p3)) = [r0 r1 r2 r3 | r4 r5 r6 r7] x2 in i16
      // (|.| <= 8 * 2 * 15 * 127 fits), then pairs to i32.
      const __m256i isum = _mm256_madd_epi16(_mm256_hadd_epi16(_mm256_hadd_epi16(part[j][0], part[j][1]),
                                                               _mm256_hadd_epi16(part[j][2], part[j][3])),
                                             ones);
      const __m256i q = _mm256_sub_epi32(isum, _mm256_set1_epi32(xs[j * nb + b]));
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_mul_ps(dw, _mm256_set1_ps(xd[j * nb + b])), acc[j]);
    }
  }
  for (int j = 0; j < MC; ++j) _mm256_storeu_ps(out + j * 8, acc[j]);
}

// Q8_0: one row's block per register; i8 x i8 products with the sign trick.
template <int MC>
void q8_0_rows8(const uint8_t* const* rp, const uint8_t* pf, const XBlocks& xb, int64_t K, int64_t m0, float* out) {
  const int64_t nb = K / 32;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MC];
  for (int j = 0; j < MC; ++j) acc[j] = _mm256_setzero_ps();
  const auto [xq, xd, xs, xh] = x_rows(xb, m0, K);
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = size_t(b) * 34;
    prefetch_ahead(pf, b, 272);
    __m256i part[MC][8];
    for (int r = 0; r < 8; ++r) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rp[r] + off + 2));
      const __m256i wa = _mm256_sign_epi8(w, w);
      for (int j = 0; j < MC; ++j) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + j * K + b * 32));
        part[j][r] = _mm256_madd_epi16(_mm256_maddubs_epi16(wa, _mm256_sign_epi8(xv, w)), ones);
      }
    }
    const __m256 dw = scales8(rp, off);
    for (int j = 0; j < MC; ++j) {
      const __m256i isum = reduce8(part[j][0], part[j][1], part[j][2], part[j][3], part[j][4], part[j][5],
                                   part[j][6], part[j][7]);
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(xd[j * nb + b])), acc[j]);
    }
  }
  for (int j = 0; j < MC; ++j) _mm256_storeu_ps(out + j * 8, acc[j]);
}

// ---- decode kernels on the x8 layout (see gguf_quants.h) --------------------------------
//
// A group of 8 rows is one contiguous region, block after block: the 8 rows' f16 scales
// (16 bytes; Q4_1 / Q5_1: then their f16 mins), Q5_0 / Q5_1's fifth bits (one vector, lane
// r = row r's 32 bits), then the block's quants, interleaved so that i32 lane r of a
// 32-byte vector holds 4 consecutive values of row r (b32_format). 4-bit quants: 4 vectors
// per block, byte j of lane r in vector v = qs byte 4v + j of row r (low nibble value 4v +
// j, high nibble value 16 + 4v + j). Q8_0: 8 vectors per block, vector g lane r = values
// 4g..4g+3. One broadcast 4-byte group of x against such a vector gives the 8 rows'
// partial sums in the 8 lanes: no horizontal sums, and one 16-byte load gives the 8
// scales. For Q4_0 and Q8_0 the integer block sums and the float steps after them are
// those of q4_0_rows8 / q8_0_rows8, so the results are bit-identical to the row-layout
// kernels.
// How far ahead the x8 GEMV prefetches (MLXCEL_X8_PF bytes, a tuning knob). 0 = none,
// the default: with the scales inline the stream is one the hardware prefetcher follows
// (Zen 4 VM, one thread: 23.8 GB/s without, 19.8 at 1 KB, 22.6 at 2 KB; two threads: all
// within the noise). With separate scale and quant streams 1 KB had been best.
inline int64_t x8_prefetch_bytes() {
  static const int64_t v = [] {
    const char* e = std::getenv("MLXCEL_X8_PF");
    return e ? std::atoll(e) : int64_t(0);
  }();
  return v;
}

// Q5_0 / Q5_1 in an x8 block: lane r of qh holds row r's 32 fifth bits (bit j: value j),
// added to the values of the block's 8 groups as 16s. Group g (values 4 g .. 4 g + 3, w[g])
// takes bits 4 g + e, in byte g / 2 of the lane, bits 4 (g % 2) + e: that byte broadcast to
// the lane's 4 bytes, byte e tested against bit 4 (g % 2) + e. AVX-512: a byte mask, and
// 16 added under it; AVX2: the byte (shifted up a nibble for even g) masked to bit 4 + e is
// 0 or a power of two from 16 on, which min(., 16) makes 0 or 16.
inline void x8_add_high_bits(__m256i qh, __m256i (&w)[8]) {
  const __m256i m10 = _mm256_set1_epi8(0x10), sel = _mm256_set1_epi32(int(0x80402010u));
  [[maybe_unused]] const __m256i sel_lo = _mm256_set1_epi32(0x08040201);
  const __m256i lane_byte0 = _mm256_setr_epi8(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12, 0, 0, 0, 0, 4, 4, 4, 4,
                                              8, 8, 8, 8, 12, 12, 12, 12);
  for (int k = 0; k < 4; ++k) {
    const __m256i b = _mm256_shuffle_epi8(qh, _mm256_add_epi8(lane_byte0, _mm256_set1_epi8(char(k))));
#if MLXCEL_GGUF_VNNI
    w[2 * k] = _mm256_mask_add_epi8(w[2 * k], _mm256_test_epi8_mask(b, sel_lo), w[2 * k], m10);
    w[2 * k + 1] = _mm256_mask_add_epi8(w[2 * k + 1], _mm256_test_epi8_mask(b, sel), w[2 * k + 1], m10);
#else
    w[2 * k] = _mm256_or_si256(w[2 * k], _mm256_min_epu8(_mm256_and_si256(_mm256_slli_epi16(b, 4), sel), m10));
    w[2 * k + 1] = _mm256_or_si256(w[2 * k + 1], _mm256_min_epu8(_mm256_and_si256(b, sel), m10));
#endif
  }
}

// The 32-value formats on the x8 layout. Q8_0: signed values (VNNI: q + 128 against 128
// sum(xq)); the others: the 8 groups of unsigned values unpacked once a block for all MC
// rows of x, each block sum exact in i32 from -xs_mult * xs on, then d dx in f32 (Q4_1 /
// Q5_1: + m dx sum(xq)).
template <int MC, uint32_t T>
void x8_group(const uint8_t* grp, int64_t nb, const XBlocks& xb, int64_t K, int64_t m0, float* out) {
  constexpr B32 F = b32_format(T);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MC];
  for (int j = 0; j < MC; ++j) acc[j] = _mm256_setzero_ps();
  const auto [xq, xd, xs, xh] = x_rows(xb, m0, K);
  const int64_t pf = x8_prefetch_bytes();
  for (int64_t b = 0; b < nb; ++b) {
    // Optional software prefetch a fixed distance ahead in the group's stream (into the
    // next group at the end of this one).
    if (pf > 0) {
      const char* p = reinterpret_cast<const char*>(grp + b * F.block + pf);
      for (int64_t i = 0; i < F.block; i += 64) _mm_prefetch(p + i, _MM_HINT_NTA);
    }
    const uint8_t* blk = grp + b * F.block;
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
    const uint8_t* q = blk + F.qs;
    if constexpr (T == kQ8_0) {
      __m256i isum[MC];
#if MLXCEL_GGUF_VNNI
      // q + 128 (q ^ 0x80) as the unsigned operand and 128 * sum(x) = 16 * xs taken off:
      // the same exact integer sums as the sign trick, with one operation per weight
      // vector instead of one per weight vector and row of x.
      const __m256i flip = _mm256_set1_epi8(char(0x80));
      for (int j = 0; j < MC; ++j) isum[j] = _mm256_set1_epi32(-16 * xs[j * nb + b]);
      for (int g = 0; g < 8; ++g) {
        const __m256i wu = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * g)), flip);
        for (int j = 0; j < MC; ++j) {
          int32_t x4;
          std::memcpy(&x4, xq + j * K + b * 32 + 4 * g, 4);
          isum[j] = _mm256_dpbusd_epi32(isum[j], wu, _mm256_set1_epi32(x4));
        }
      }
#else
      for (int g = 0; g < 8; ++g) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * g));
        const __m256i wa = _mm256_sign_epi8(wv, wv);
        for (int j = 0; j < MC; ++j) {
          int32_t x4;
          std::memcpy(&x4, xq + j * K + b * 32 + 4 * g, 4);
          const __m256i xs4 = _mm256_sign_epi8(_mm256_set1_epi32(x4), wv);
          const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wa, xs4), ones);
          isum[j] = g == 0 ? p : _mm256_add_epi32(isum[j], p);
        }
      }
#endif
      for (int j = 0; j < MC; ++j)
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]), _mm256_mul_ps(dw, _mm256_set1_ps(xd[j * nb + b])),
                                 acc[j]);
    } else {
      __m256i wg[8];
      for (int v = 0; v < 4; ++v) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * v));
        wg[v] = _mm256_and_si256(raw, m4);
        wg[v + 4] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
      }
      if constexpr (F.high) x8_add_high_bits(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + F.qh)), wg);
      [[maybe_unused]] const __m256 mv =
          F.halves == 2 ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16))) : dw;
      for (int j = 0; j < MC; ++j) {
        const int32_t xsj = xs[j * nb + b];
#if MLXCEL_GGUF_VNNI
        __m256i qi = _mm256_set1_epi32(-F.xs_mult * xsj);
        for (int g = 0; g < 8; ++g) {
          int32_t x4;
          std::memcpy(&x4, xq + j * K + b * 32 + 4 * g, 4);
          qi = _mm256_dpbusd_epi32(qi, wg[g], _mm256_set1_epi32(x4));
        }
#else
        const __m256i qi =
            _mm256_sub_epi32(sum_8_groups<F.high>(wg, xq + j * K + b * 32), _mm256_set1_epi32(F.xs_mult * xsj));
#endif
        const float dx = xd[j * nb + b];
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(qi), _mm256_mul_ps(dw, _mm256_set1_ps(dx)), acc[j]);
        if constexpr (F.halves == 2) acc[j] = _mm256_fmadd_ps(mv, _mm256_set1_ps(dx * 0.125f * float(xsj)), acc[j]);
      }
    }
  }
  for (int j = 0; j < MC; ++j) _mm256_storeu_ps(out + j * 8, acc[j]);
}

// Q4_K (and Q5_K, whose fifth bits add 16) on its x8 layout (see x8_group_bytes): per
// 256-value block the 8 rows' d and dmin, their 6-bit scales and mins as bytes (sub-block
// major), then the quants as 4 pairs of sub-blocks x 8 vectors, lane r of vector v of
// pair p = bytes 32 p + 4 v .. + 3 of row r's qs (low nibbles: sub-block 2 p, high:
// 2 p + 1; a pair comes from one load), and for Q5_K its qh as 8 more vectors. Sub-block
// s of block b against x's block 8 b + s: y += (d sc_s) dx sum(q xq) - (dmin m_s) dx
// sum(xq), the integer sums exact (values unsigned against int8 x), two FMAs a sub-block.
template <int MC, bool Q5>
void x8_group_q45k(const uint8_t* grp, int64_t nb32, const XBlocks& xb, int64_t K, int64_t m0, float* out) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  [[maybe_unused]] const __m256i m10 = _mm256_set1_epi8(0x10), ones = _mm256_set1_epi16(1);
  __m256 acc[MC];
  for (int j = 0; j < MC; ++j) acc[j] = _mm256_setzero_ps();
  const auto [xq, xd, xs, xh] = x_rows(xb, m0, K);
  const int64_t nbk = nb32 / 8;
  for (int64_t b = 0; b < nbk; ++b) {
    const uint8_t* blk = grp + b * (Q5 ? kX8Q5kBlock : kX8Q4kBlock);
    if constexpr (Q5)  // its fifth bits lie 1,184 bytes on: every line asked for up front
      for (int64_t i = 0; i < kX8Q5kBlock; i += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + i), _MM_HINT_T0);
    const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
    const __m256 mv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16)));
    for (int p = 0; p < 4; ++p) {  // sub-blocks 2p (low nibbles) and 2p + 1 (high) from one load
      const uint8_t* q = blk + 160 + p * 256;
      __m256i il[MC], ih[MC];
      [[maybe_unused]] __m256i sl[MC], sh[MC];  // AVX2: i16 sums of 4 groups (|.| <= 4 x 2 x 31 x 127)
      for (int j = 0; j < MC; ++j) il[j] = ih[j] = sl[j] = sh[j] = _mm256_setzero_si256();
      for (int v = 0; v < 8; ++v) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * v));
        __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
        if constexpr (Q5) {  // bits 2p and 2p + 1 of qh as 16
          const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kX8Q4kBlock + 32 * v));
          const __m256i t = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * p));
          lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(t, 4), m10));
          hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(t, 3), m10));
        }
        for (int j = 0; j < MC; ++j) {
          const int8_t* xv = xq + j * K + (b * 8 + 2 * p) * 32 + 4 * v;
          int32_t xl, xh;
          std::memcpy(&xl, xv, 4);
          std::memcpy(&xh, xv + 32, 4);
#if MLXCEL_GGUF_VNNI
          il[j] = _mm256_dpbusd_epi32(il[j], lo, _mm256_set1_epi32(xl));
          ih[j] = _mm256_dpbusd_epi32(ih[j], hi, _mm256_set1_epi32(xh));
#else
          const __m256i pl = _mm256_maddubs_epi16(lo, _mm256_set1_epi32(xl));
          const __m256i ph = _mm256_maddubs_epi16(hi, _mm256_set1_epi32(xh));
          sl[j] = _mm256_add_epi16(sl[j], pl);
          sh[j] = _mm256_add_epi16(sh[j], ph);
          if (v % 4 == 3) {
            il[j] = _mm256_add_epi32(il[j], _mm256_madd_epi16(sl[j], ones));
            ih[j] = _mm256_add_epi32(ih[j], _mm256_madd_epi16(sh[j], ones));
            sl[j] = sh[j] = _mm256_setzero_si256();
          }
#endif
        }
      }
      for (int h = 0; h < 2; ++h) {
        const int s = 2 * p + h;
        const __m256 D = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
                                               _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 32 + 8 * s)))));
        const __m256 Mn = _mm256_mul_ps(mv, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
                                                _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 96 + 8 * s)))));
        const int64_t xb32 = b * 8 + s;
        for (int j = 0; j < MC; ++j) {
          const float dx = xd[j * nb32 + xb32];
          acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h ? ih[j] : il[j]), _mm256_mul_ps(D, _mm256_set1_ps(dx)), acc[j]);
          acc[j] = _mm256_fnmadd_ps(Mn, _mm256_set1_ps(dx * 0.125f * float(xs[j * nb32 + xb32])), acc[j]);
        }
      }
    }
  }
  for (int j = 0; j < MC; ++j) _mm256_storeu_ps(out + j * 8, acc[j]);
}

// The x8 formats of 16-value sub-blocks, Q6_K (kX8Q6kBlock), Q3_K (kX8Q3kBlock) and Q2_K
// (kX8Q2kBlock): d[8] first (Q2_K: then dmin[8]), where the scale bytes [sub-block][row] and
// the quants start, and the offset taken off every (unsigned) value.
template <uint32_t T>
struct X8K16 {
  static constexpr int64_t kBlock = T == kQ6_K ? kX8Q6kBlock : T == kQ3_K ? kX8Q3kBlock : kX8Q2kBlock;
  static constexpr int64_t kScales = T == kQ2_K ? 32 : 16, kQuants = kScales + 128;
  static constexpr int kOffset = T == kQ6_K ? 32 : T == kQ3_K ? 4 : 0;
};

// Values 4 v .. 4 v + 3 (v = 0..7) of the 4 chunks of 32 of a half block (ggml's n: chunks
// 4 n .. 4 n + 3) in an x8 block of T, w[k] lane r = row r's of chunk 4 n + k, unsigned.
// Q6_K: the 4 chunks share their 2-bit parts and pairwise their 4-bit parts, so 3 loads (ql
// for chunks 0 / 2, ql for 1 / 3, qh) give all 4; Q2_K: one qs load (2 bits a chunk); Q3_K:
// that and one hmask load (bit 4 n + k, worth 4).
template <uint32_t T>
inline void x8_k16_values(const uint8_t* blk, int n, int v, __m256i (&w)[4]) {
  if constexpr (T == kQ6_K) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    const uint8_t* ql = blk + 144 + 32 * 16 * n;
    const __m256i l02 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32 * v));
    const __m256i l13 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32 * (8 + v)));
    const __m256i hv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 144 + 1024 + 32 * (8 * n + v)));
    w[0] = _mm256_or_si256(_mm256_and_si256(l02, m4), _mm256_and_si256(_mm256_slli_epi16(hv, 4), m30));
    w[1] = _mm256_or_si256(_mm256_and_si256(l13, m4), _mm256_and_si256(_mm256_slli_epi16(hv, 2), m30));
    w[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l02, 4), m4), _mm256_and_si256(hv, m30));
    w[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l13, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(hv, 2), m30));
  } else {
    const __m256i m3 = _mm256_set1_epi8(0x03);
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + X8K16<T>::kQuants + 32 * (8 * n + v)));
    w[0] = _mm256_and_si256(q, m3);
    w[1] = _mm256_and_si256(_mm256_srli_epi16(q, 2), m3);
    w[2] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m3);
    w[3] = _mm256_and_si256(_mm256_srli_epi16(q, 6), m3);
    if constexpr (T == kQ3_K) {
      const __m256i m4 = _mm256_set1_epi8(0x04);
      const __m256i h = _mm256_srl_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 144 + 512 + 32 * v)),
                                         _mm_cvtsi32_si128(4 * n));  // bit k: chunk 4 n + k's high bit
      w[0] = _mm256_or_si256(w[0], _mm256_and_si256(_mm256_slli_epi16(h, 2), m4));
      w[1] = _mm256_or_si256(w[1], _mm256_and_si256(_mm256_slli_epi16(h, 1), m4));
      w[2] = _mm256_or_si256(w[2], _mm256_and_si256(h, m4));
      w[3] = _mm256_or_si256(w[3], _mm256_and_si256(_mm256_srli_epi16(h, 1), m4));
    }
  }
}

// Q6_K, Q3_K and Q2_K on their x8 layouts: a half block's 4 chunks of 32 are unpacked
// together one group of 4 values a row at a time (x8_k16_values). Each 16-value sub-block's
// exact integer sum of the unsigned values times int8 x, less the offset (32, 4, 0) times x's
// sum over it, then (d sc) dx in f32 (Q2_K: less (dmin m) dx times x's sum): the first
// sub-blocks of the 4 chunks (groups 0-3), then the second ones (groups 4-7).
template <int MC, uint32_t T>
void x8_group_k16(const uint8_t* grp, int64_t nb32, const XBlocks& xb, int64_t K, int64_t m0, float* out) {
  using F = X8K16<T>;
  [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MC];
  for (int j = 0; j < MC; ++j) acc[j] = _mm256_setzero_ps();
  const auto [xq, xd, xs, xh] = x_rows(xb, m0, K);
  for (int64_t b = 0; b < nb32 / 8; ++b) {
    const uint8_t* blk = grp + b * F::kBlock;
    // Every line of the block asked for up front, in order: the steps below read it in
    // interleaved places (Q6_K: ql twice, qh; Q3_K: qs, hmask; the scales), which left the
    // loads one at a time. Q6_K, Llama up_proj shape (8192 x 2048) from memory,
    // 2 threads, five alternated runs: 0.42-0.48 ms against 0.93-1.2 without, 0.47-0.57 a
    // block ahead, Q8_0's x8 copy 0.51-0.71.
    for (int64_t i = 0; i < F::kBlock; i += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + i), _MM_HINT_T0);
    const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
    [[maybe_unused]] const __m256 mv =
        T == kQ2_K ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16))) : dv;
    for (int n = 0; n < 2; ++n) {
      for (int half = 0; half < 2; ++half) {  // sub-blocks 2c (groups 0-3), then 2c + 1 (4-7)
        __m256i is[MC][4];
        int32_t xsum[MC][4];  // x's sums over the sub-blocks
        // AVX2, Q3_K / Q2_K: maddubs pairs are at most 2 x 7 x 127, a sub-block's 4 groups
        // add in i16; Q6_K's (2 x 63 x 127) go to i32 a group at a time.
        [[maybe_unused]] __m256i s16[MC][4];
        for (int j = 0; j < MC; ++j)
          for (int k = 0; k < 4; ++k) {
            const int64_t x32 = b * 8 + 4 * n + k;
            xsum[j][k] = half ? xs[j * nb32 + x32] / 8 - xh[j * nb32 + x32] : xh[j * nb32 + x32];
            is[j][k] = _mm256_set1_epi32(-F::kOffset * xsum[j][k]);
            s16[j][k] = _mm256_setzero_si256();
          }
#pragma GCC unroll 4
        for (int v = 4 * half; v < 4 * half + 4; ++v) {
          __m256i w[4];
          x8_k16_values<T>(blk, n, v, w);
#pragma GCC unroll 4
          for (int j = 0; j < MC; ++j)
#pragma GCC unroll 4
            for (int k = 0; k < 4; ++k) {
              int32_t x4;
              std::memcpy(&x4, xq + j * K + (b * 8 + 4 * n + k) * 32 + 4 * v, 4);
#if MLXCEL_GGUF_VNNI
              is[j][k] = _mm256_dpbusd_epi32(is[j][k], w[k], _mm256_set1_epi32(x4));
#else
              const __m256i p = _mm256_maddubs_epi16(w[k], _mm256_set1_epi32(x4));
              if constexpr (T == kQ6_K) is[j][k] = _mm256_add_epi32(is[j][k], _mm256_madd_epi16(p, ones));
              else s16[j][k] = _mm256_add_epi16(s16[j][k], p);
#endif
            }
        }
#if !MLXCEL_GGUF_VNNI
        if constexpr (T != kQ6_K)
          for (int j = 0; j < MC; ++j)
            for (int k = 0; k < 4; ++k) is[j][k] = _mm256_add_epi32(is[j][k], _mm256_madd_epi16(s16[j][k], ones));
#endif
        for (int k = 0; k < 4; ++k) {
          const int c = 4 * n + k;
          const __m128i sb = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + F::kScales + 16 * c + 8 * half));
          if constexpr (T == kQ2_K) {  // scale and min nibbles
            const __m256i sm = _mm256_cvtepu8_epi32(sb);
            const __m256 D = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_and_si256(sm, _mm256_set1_epi32(0xF))));
            const __m256 Mn = _mm256_mul_ps(mv, _mm256_cvtepi32_ps(_mm256_srli_epi32(sm, 4)));
            for (int j = 0; j < MC; ++j) {
              const float dx = xd[j * nb32 + b * 8 + c];
              acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[j][k]), _mm256_mul_ps(D, _mm256_set1_ps(dx)), acc[j]);
              acc[j] = _mm256_fnmadd_ps(Mn, _mm256_set1_ps(dx * float(xsum[j][k])), acc[j]);
            }
          } else {
            const __m256 D = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sb)));
            for (int j = 0; j < MC; ++j)
              acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[j][k]),
                                       _mm256_mul_ps(D, _mm256_set1_ps(xd[j * nb32 + b * 8 + c])), acc[j]);
          }
        }
      }
    }
  }
  for (int j = 0; j < MC; ++j) _mm256_storeu_ps(out + j * 8, acc[j]);
}

template <int MC>
void x8_group_t(uint32_t type, const uint8_t* grp, int64_t nb, const XBlocks& xb, int64_t K, int64_t m0, float* out) {
  if (type == kQ8_0) x8_group<MC, kQ8_0>(grp, nb, xb, K, m0, out);
  else if (type == kQ4_1) x8_group<MC, kQ4_1>(grp, nb, xb, K, m0, out);
  else if (type == kQ5_0) x8_group<MC, kQ5_0>(grp, nb, xb, K, m0, out);
  else if (type == kQ5_1) x8_group<MC, kQ5_1>(grp, nb, xb, K, m0, out);
  else if (type == kQ4_K) x8_group_q45k<MC, false>(grp, nb, xb, K, m0, out);
  else if (type == kQ5_K) x8_group_q45k<MC, true>(grp, nb, xb, K, m0, out);
  else if (type == kQ6_K) x8_group_k16<MC, kQ6_K>(grp, nb, xb, K, m0, out);
  else if (type == kQ3_K) x8_group_k16<MC, kQ3_K>(grp, nb, xb, K, m0, out);
  else if (type == kQ2_K) x8_group_k16<MC, kQ2_K>(grp, nb, xb, K, m0, out);
  else x8_group<MC, kQ4_0>(grp, nb, xb, K, m0, out);
}

// ---- prefill GEMM (int8) --------------------------------------------------------------
//
// A panel holds 8 weight rows as int8, interleaved so that one 32-byte load gives 4
// consecutive values of each of the 8 rows (lane r = row r): per block of 32 values,
// 8 f32 scales, then 8 groups of 32 bytes (group g = values 4g..4g+3). The micro-kernel
// broadcasts 4 activation bytes of one x row to all lanes, so one maddubs computes
// 2 x 2 products for each of the 8 rows and the 8 rows' block sums end up in the 8 i32
// lanes of one register: no horizontal sums. Q4_0 values stay unsigned (0..15): the
// i16 pair sums (|.| <= 2 * 15 * 127) of a block's 8 groups fit in i16, and 8 * sum(x)
// is subtracted per block. Q8_0 values are signed: |w| times x with w's sign, summed in
// i32 per group.
constexpr int64_t kPanelRows = 8;
// The panels' kinds: Q4_0 and Q8_0 as above; Q4_K's 32-value sub-blocks with two scale
// vectors, D = d sc and M = dmin m (f32, per row), y += D dx sum(q xq) - M dx sum(xq).
// Q6_K's chunks of 32 hold two 16-value sub-blocks: D_a, D_b (d sc) a row, y += D_a dx
// (sum_a(q xq) - 32 sum_a(xq)) + D_b dx (...)_b, the 6-bit values unsigned. Q3_K's are
// exactly of that shape (d (sc - 32) per 16 values, values q3 - 4): its panels hold q3 + 28.
// Q2_K's are Q6_K's without the offset and with two more vectors, M_a, M_b (dmin m):
// y -= M_a dx sum_a(xq) + M_b dx sum_b(xq). Q4_1 and Q5_1 blocks are exactly of Q4_K's shape
// (D = d, M = -m: y += d dx sum(q xq) + m dx sum(xq)); Q5_0's are Q4_0's with values up to
// 31 and 16 sum(xq) taken off (its own kind: the AVX2 tiles add its groups in i16 four at
// a time).
enum PanelKind : int { kPanelQ4_0 = 0, kPanelQ8_0 = 1, kPanelQ4_K = 2, kPanelQ6_K = 3, kPanelQ2_K = 4, kPanelQ5_0 = 5 };
inline PanelKind panel_kind(uint32_t type) {
  switch (type) {
    case kQ8_0: return kPanelQ8_0;
    case kQ4_1: case kQ5_1: case kQ4_K: case kQ5_K: return kPanelQ4_K;
    case kQ6_K: case kQ3_K: return kPanelQ6_K;
    case kQ2_K: return kPanelQ2_K;
    case kQ5_0: return kPanelQ5_0;
    default: return kPanelQ4_0;
  }
}
// A block's f32 scale vectors (8 rows; the VNNI panels' 16 rows take twice as many bytes)
// before its 8 groups.
constexpr int64_t panel_head_bytes(int kind) {
  return kind == kPanelQ2_K ? 128 : kind == kPanelQ4_K || kind == kPanelQ6_K ? 64 : 32;
}
// Q4_0's and Q8_0's panels are packed from whole blocks at a time (pack_panel8 /
// pack_panel16); the other formats' a chunk of 32 values at a time (row_chunk).
inline bool packs_by_chunk(uint32_t type) { return type != kQ4_0 && type != kQ8_0; }
inline int64_t panel_block_bytes(int kind = kPanelQ4_0) { return panel_head_bytes(kind) + 8 * 32; }

// Q6_K chunk c (0..7) of the 210-byte block at blk (the row layout): the scales of its two
// sub-blocks times d, and its 32 values (0..63) as bytes in order.
inline void q6k_row_chunk(const uint8_t* blk, int c, float* Da, float* Db, __m256i* vals) {
  const int n = c / 4, k = c % 4;
  const float d = half_at(blk + 208);
  *Da = d * float(int8_t(blk[192 + 2 * c]));
  *Db = d * float(int8_t(blk[193 + 2 * c]));
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * n + 32 * (k & 1)));
  const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * n));
  const __m256i l4 = _mm256_and_si256(k >> 1 ? _mm256_srli_epi16(lo, 4) : lo, _mm256_set1_epi8(0x0F));
  const __m256i h2 = _mm256_and_si256(_mm256_srli_epi16(hi, 2 * k), _mm256_set1_epi8(0x03));
  *vals = _mm256_or_si256(l4, _mm256_slli_epi16(h2, 4));
}

// Q3_K chunk c (0..7) of the 110-byte block at blk as a Q6_K panel's: the scales less 32 of
// its two sub-blocks times d, and its 32 values q3 + 28 (28..35) as bytes in order, whose
// -32 in the Q6_K tiles leaves exactly q3 - 4. Value l: bits 2 (c % 4) of qs byte 32 (c / 4)
// + l, and bit c of hmask byte l as 4.
inline void q3k_row_chunk(const uint8_t* blk, int c, float* Da, float* Db, __m256i* vals) {
  const float d = half_at(blk + 108);
  *Da = d * float(q3k_scale(blk + 96, 2 * c));
  *Db = d * float(q3k_scale(blk + 96, 2 * c + 1));
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32 + 32 * (c / 4)));
  const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk));
  const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * (c % 4))), _mm256_set1_epi8(0x03));
  const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(c)), _mm256_set1_epi8(0x01));
  *vals = _mm256_add_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 2)), _mm256_set1_epi8(28));
}

// Q2_K chunk c (0..7) of the 84-byte block at blk: the scales and the mins of its two
// sub-blocks times d and dmin, and its 32 values (0..3: bits 2 (c % 4) of qs byte 32 (c / 4)
// + l) as bytes in order.
inline void q2k_row_chunk(const uint8_t* blk, int c, float* D, int64_t ds, __m256i* vals) {
  const float d = half_at(blk + 80), dmin = half_at(blk + 82);
  for (int h = 0; h < 2; ++h) {
    D[h * ds] = d * float(blk[2 * c + h] & 0xF);
    D[(2 + h) * ds] = dmin * float(blk[2 * c + h] >> 4);
  }
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 32 * (c / 4)));
  *vals = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * (c % 4))), _mm256_set1_epi8(0x03));
}

// Q4_K (Q5_K) sub-block s (0..7) of the 256-value block at blk: D = d sc_s, M = dmin m_s,
// and its 32 values (0..15; Q5_K 0..31) as bytes in order.
inline void q45k_sub_block(bool q5, const uint8_t* blk, int s, float* D, float* Mn, __m256i* vals) {
  uint8_t sc, mn;
  scale_min_k4(s, blk + 4, sc, mn);
  *D = half_at(blk) * float(sc);
  *Mn = half_at(blk + 2) * float(mn);
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + (q5 ? 48 : 16) + 32 * (s / 2)));
  *vals = _mm256_and_si256(s & 1 ? _mm256_srli_epi16(raw, 4) : raw, _mm256_set1_epi8(0x0F));
  if (q5) {  // bit s of qh byte l: value l's 16
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16));
    const __m256i hb = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(s));
    *vals = _mm256_or_si256(*vals, _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(0x01)), 4));
  }
}

// A Q4_1 / Q5_0 / Q5_1 block at blk (the row layout) in its panel kind's form: D[0] = d,
// Q4_1 / Q5_1 D[ds] = -m (the Q4_K panels take M dx sum(xq) off), and its 32 values (0..15;
// Q5_0 / Q5_1 0..31, bit j of qh worth 16 to value j) as bytes in order.
inline void b32_row_block(uint32_t type, const uint8_t* blk, float* D, int64_t ds, __m256i* vals) {
  const B32 f = b32_format(type);
  D[0] = half_at(blk);
  if (f.halves == 2) D[ds] = -half_at(blk + 2);
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + block_bytes(type) - 16));
  *vals = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
  if (f.high) {  // byte j: qh's byte j / 8 masked to bit j % 8, then 16 where it is set
    uint32_t qh;
    std::memcpy(&qh, blk + 2 * f.halves, 4);
    const __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32(int(qh)),
                                          _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2,
                                                           2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
    *vals = _mm256_or_si256(*vals, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit),
                                                    _mm256_set1_epi8(0x10)));
  }
}

// Chunk c of the 32 values of the blocks of a row at row (the row layout; c / (block_elems
// / 32) picks the block) in its panel kind's form: the scales (Q4_K / Q5_K / Q4_1 / Q5_1: D,
// M; Q6_K / Q3_K: D_a, D_b; Q2_K: D_a, D_b, M_a, M_b; Q5_0: D) at D[0], D[ds], ..., the
// values as bytes in order.
inline void row_chunk(uint32_t type, const uint8_t* row, int64_t c, float* D, int64_t ds, __m256i* vals) {
  const int64_t per_block = int64_t(block_elems(type)) / 32;
  const uint8_t* blk = row + size_t(c / per_block) * block_bytes(type);
  const int k = int(c % per_block);
  if (type == kQ6_K) q6k_row_chunk(blk, k, D, D + ds, vals);
  else if (type == kQ3_K) q3k_row_chunk(blk, k, D, D + ds, vals);
  else if (type == kQ2_K) q2k_row_chunk(blk, k, D, ds, vals);
  else if (type == kQ4_K || type == kQ5_K) q45k_sub_block(type == kQ5_K, blk, k, D, D + ds, vals);
  else b32_row_block(type, blk, D, ds, vals);
}

#if !MLXCEL_GGUF_VNNI  // the AVX2 GEMM; the avx512 build runs gemm_int8_vnni below
// Packs blocks [0, nb) of the 8 rows rp[] into `panel`.
void pack_panel8(uint32_t type, const uint8_t* const* rp, int64_t nb, uint8_t* panel) {
  const size_t bb = type == kQ8_0 ? 34 : 18;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  if (packs_by_chunk(type)) {
    const int kind = panel_kind(type);
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* dst = panel + b * panel_block_bytes(kind);
      float* D = reinterpret_cast<float*>(dst);
      __m256i r[8];
      for (int i = 0; i < 8; ++i) row_chunk(type, rp[i], b, D + i, 8, r + i);
      cpu::simd::transpose8x8(r);
      for (int g = 0; g < 8; ++g)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + panel_head_bytes(kind) + 32 * g), r[g]);
    }
    return;
  }
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* dst = panel + b * panel_block_bytes();
    const size_t off = size_t(b) * bb;
    _mm256_storeu_ps(reinterpret_cast<float*>(dst), scales8(rp, off));
    __m256i r[8];
    for (int i = 0; i < 8; ++i) {
      if (type == kQ8_0) {
        r[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rp[i] + off + 2));
      } else {
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rp[i] + off + 2));
        r[i] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m4);  // values 0..31
      }
    }
    cpu::simd::transpose8x8(r);
    for (int g = 0; g < 8; ++g) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 32 + 32 * g), r[g]);
  }
}

// y[m][0..8) for the MR rows of x starting at xq (row stride K) against a panel.
template <int MR, int kKind>
void gemm_tile(const uint8_t* panel, int64_t nb, const int8_t* xq, int64_t K, const float* xd, const int32_t* xs,
               const int32_t* xh, __m256* out) {
  constexpr bool Q8 = kKind == kPanelQ8_0;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MR];
  for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* pb = panel + b * panel_block_bytes(kKind);
    const int8_t* xb = xq + b * 32;
    const __m256 dw = _mm256_loadu_ps(reinterpret_cast<const float*>(pb));
    if constexpr (Q8) {
      __m256i isum[MR];
      for (int g = 0; g < 8; ++g) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pb + 32 + 32 * g));
        const __m256i wa = _mm256_sign_epi8(wv, wv);
        for (int m = 0; m < MR; ++m) {
          int32_t x4;
          std::memcpy(&x4, xb + m * K + 4 * g, 4);
          const __m256i p =
              _mm256_madd_epi16(_mm256_maddubs_epi16(wa, _mm256_sign_epi8(_mm256_set1_epi32(x4), wv)), ones);
          isum[m] = g == 0 ? p : _mm256_add_epi32(isum[m], p);
        }
      }
      for (int m = 0; m < MR; ++m)
        acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[m]), _mm256_mul_ps(dw, _mm256_set1_ps(xd[m * nb + b])),
                                 acc[m]);
    } else {
      // The block's 8 groups stay in registers while each row of x runs through them.
      constexpr int64_t kQ = panel_head_bytes(kKind);  // where the quants start
      __m256i wg[8];
      for (int g = 0; g < 8; ++g) wg[g] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pb + kQ + 32 * g));
      for (int m = 0; m < MR; ++m) {
        const float dx = xd[m * nb + b];
        if constexpr (kKind == kPanelQ6_K || kKind == kPanelQ2_K) {
          // maddubs pairs are at most 2 x 63 x 127: two groups fit in i16, the halves apart.
          const int8_t* xm = xb + m * K;
          constexpr int kOffset = kKind == kPanelQ6_K ? 32 : 0;
          const int32_t ha = xh[m * nb + b], hb = xs[m * nb + b] / 8 - ha;  // x's sums over the halves
          __m256i ia = _mm256_set1_epi32(-kOffset * ha);
          __m256i ib = _mm256_set1_epi32(-kOffset * hb);
          for (int g = 0; g < 4; g += 2) {
            int32_t x0, x1, x2, x3;
            std::memcpy(&x0, xm + 4 * g, 4);
            std::memcpy(&x1, xm + 4 * g + 4, 4);
            std::memcpy(&x2, xm + 16 + 4 * g, 4);
            std::memcpy(&x3, xm + 16 + 4 * g + 4, 4);
            ia = _mm256_add_epi32(ia, _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(wg[g], _mm256_set1_epi32(x0)),
                                                                         _mm256_maddubs_epi16(wg[g + 1], _mm256_set1_epi32(x1))),
                                                        ones));
            ib = _mm256_add_epi32(ib, _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(wg[g + 4], _mm256_set1_epi32(x2)),
                                                                         _mm256_maddubs_epi16(wg[g + 5], _mm256_set1_epi32(x3))),
                                                        ones));
          }
          const __m256 db = _mm256_loadu_ps(reinterpret_cast<const float*>(pb + 32));
          acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), _mm256_mul_ps(dw, _mm256_set1_ps(dx)), acc[m]);
          acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ib), _mm256_mul_ps(db, _mm256_set1_ps(dx)), acc[m]);
          if constexpr (kKind == kPanelQ2_K) {
            acc[m] = _mm256_fnmadd_ps(_mm256_loadu_ps(reinterpret_cast<const float*>(pb + 64)),
                                      _mm256_set1_ps(dx * float(ha)), acc[m]);
            acc[m] = _mm256_fnmadd_ps(_mm256_loadu_ps(reinterpret_cast<const float*>(pb + 96)),
                                      _mm256_set1_ps(dx * float(hb)), acc[m]);
          }
          continue;
        }
        if constexpr (kKind == kPanelQ4_K) {
          // Q5_K's / Q5_1's values reach 31: sums in i16 four groups at a time.
          const __m256i isum = sum_8_groups<true>(wg, xb + m * K);
          const __m256 mn = _mm256_loadu_ps(reinterpret_cast<const float*>(pb + 32));
          acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(dx)), acc[m]);
          acc[m] = _mm256_fnmadd_ps(mn, _mm256_set1_ps(dx * 0.125f * float(xs[m * nb + b])), acc[m]);
        } else {  // Q4_0 / Q5_0: less 8 / 16 sum(xq) (xs = 8 sum(xq))
          constexpr bool k5 = kKind == kPanelQ5_0;
          const __m256i q =
              _mm256_sub_epi32(sum_8_groups<k5>(wg, xb + m * K), _mm256_set1_epi32((k5 ? 2 : 1) * xs[m * nb + b]));
          acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_mul_ps(dw, _mm256_set1_ps(dx)), acc[m]);
        }
      }
    }
  }
  for (int m = 0; m < MR; ++m) out[m] = acc[m];
}

constexpr int kGemmMR = 4;

template <int kKind>
void gemm_panel_rows(const uint8_t* panel, int64_t K, const XBlocks& xb, int64_t M, int64_t n0, int64_t nvalid,
                     const float* bias, float* y, int64_t ldy) {
  const int64_t nb = K / 32;
  __m256 out[kGemmMR];
  alignas(32) float tmp[8];
  for (int64_t m = 0; m < M; m += kGemmMR) {
    const int mr = int(std::min<int64_t>(kGemmMR, M - m));
    const auto [xq, xd, xs, xh] = x_rows(xb, m, K);
    switch (mr) {
      case 4: gemm_tile<4, kKind>(panel, nb, xq, K, xd, xs, xh, out); break;
      case 3: gemm_tile<3, kKind>(panel, nb, xq, K, xd, xs, xh, out); break;
      case 2: gemm_tile<2, kKind>(panel, nb, xq, K, xd, xs, xh, out); break;
      default: gemm_tile<1, kKind>(panel, nb, xq, K, xd, xs, xh, out); break;
    }
    for (int j = 0; j < mr; ++j) {
      float* yr = y + (m + j) * ldy + n0;
      __m256 v = out[j];
      if (bias && nvalid == 8) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + n0));
      if (nvalid == 8) {
        _mm256_storeu_ps(yr, v);
      } else {
        _mm256_store_ps(tmp, v);
        for (int64_t i = 0; i < nvalid; ++i) yr[i] = tmp[i] + (bias ? bias[n0 + i] : 0.0f);
      }
    }
  }
}

// y = x W^T for prefill-sized M: x quantized once, each panel of 8 weight rows unpacked
// once (into L1) and run against every row of x.
void gemm_int8(uint32_t type, const XBlocks& xb, int64_t M, int64_t K, const uint8_t* w, size_t row_stride,
               int64_t n_rows, const float* bias, float* y) {
  const int64_t nb = K / 32, n_panels = (n_rows + kPanelRows - 1) / kPanelRows;
  cpu::parallel_dynamic(n_panels, 1, M * K * kPanelRows, [&](int64_t p0, int64_t p1) {
    std::vector<uint8_t> panel(size_t(nb * panel_block_bytes(panel_kind(type))));
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t r0 = p * kPanelRows, rc = std::min(kPanelRows, n_rows - r0);
      const uint8_t* rp[kPanelRows];
      for (int64_t i = 0; i < kPanelRows; ++i) rp[i] = w + size_t(r0 + std::min(i, rc - 1)) * row_stride;
      pack_panel8(type, rp, nb, panel.data());
      switch (panel_kind(type)) {
        case kPanelQ8_0: gemm_panel_rows<kPanelQ8_0>(panel.data(), K, xb, M, r0, rc, bias, y, n_rows); break;
        case kPanelQ4_K: gemm_panel_rows<kPanelQ4_K>(panel.data(), K, xb, M, r0, rc, bias, y, n_rows); break;
        case kPanelQ6_K: gemm_panel_rows<kPanelQ6_K>(panel.data(), K, xb, M, r0, rc, bias, y, n_rows); break;
        case kPanelQ2_K: gemm_panel_rows<kPanelQ2_K>(panel.data(), K, xb, M, r0, rc, bias, y, n_rows); break;
        case kPanelQ5_0: gemm_panel_rows<kPanelQ5_0>(panel.data(), K, xb, M, r0, rc, bias, y, n_rows); break;
        default: gemm_panel_rows<kPanelQ4_0>(panel.data(), K, xb, M, r0, rc, bias, y, n_rows); break;
      }
    }
  });
}
#endif

#if MLXCEL_GGUF_VNNI
// ---- prefill GEMM on AVX-512 VNNI -----------------------------------------------------
//
// The panel holds 16 weight rows, so one 64-byte vector holds 4 consecutive values of
// each row (lane r = row r), per block of 32 values: 16 f32 scales, then 8 groups of 64
// bytes (group g = values 4g..4g+3). The values are unsigned bytes, which VPDPBUSD
// multiplies with the signed bytes of x, adding 4 products into each i32 lane: Q4_0
// keeps its nibbles (0..15) and subtracts 8 * sum(x) per block, Q8_0 stores q + 128
// (q ^ 0x80) and subtracts 128 * sum(x). So a group of x costs one instruction per row
// of x (its 4 bytes broadcast from memory), and the block's integer sums are exact, as
// in the AVX2 GEMM: only the order of the f32 steps differs.
constexpr int64_t kVnniRows = 16;
inline int64_t vnni_block_bytes(int kind = kPanelQ4_0) { return 2 * panel_block_bytes(kind); }

// Packs blocks [0, nb) of the 16 rows rp[] into `panel` (two 8-row halves).
void pack_panel16(uint32_t type, const uint8_t* const* rp, int64_t nb, uint8_t* panel) {
  // The scale vectors of row_chunk (16 f32 each: D, M; D_a, D_b; D_a, D_b, M_a, M_b; D),
  // then the groups (the values unsigned as they are).
  if (packs_by_chunk(type)) {
    const int kind = panel_kind(type);
    const int64_t head = 2 * panel_head_bytes(kind);
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* dst = panel + b * vnni_block_bytes(kind);
      float* D = reinterpret_cast<float*>(dst);
      for (int h = 0; h < 2; ++h) {
        __m256i r[8];
        for (int i = 0; i < 8; ++i) row_chunk(type, rp[8 * h + i], b, D + 8 * h + i, 16, r + i);
        cpu::simd::transpose8x8(r);
        for (int g = 0; g < 8; ++g) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + head + 64 * g + 32 * h), r[g]);
      }
    }
    return;
  }
  const bool q8 = type == kQ8_0;
  const size_t bb = q8 ? 34 : 18;
  const __m256i m4 = _mm256_set1_epi8(0x0F), flip = _mm256_set1_epi8(char(0x80));
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* dst = panel + b * vnni_block_bytes();
    const size_t off = size_t(b) * bb;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* const* hp = rp + 8 * h;
      _mm256_storeu_ps(reinterpret_cast<float*>(dst + 32 * h), scales8(hp, off));
      __m256i r[8];
      for (int i = 0; i < 8; ++i) {
        if (q8) {
          r[i] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(hp[i] + off + 2)), flip);
        } else {
          const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(hp[i] + off + 2));
          r[i] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m4);  // values 0..31
        }
      }
      cpu::simd::transpose8x8(r);
      for (int g = 0; g < 8; ++g) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 64 + 64 * g + 32 * h), r[g]);
    }
  }
}

// acc[m] = the 16 rows' dot products with the MR rows of x starting at xq (row stride K).
template <int MR, int kKind>
void vnni_tile(const uint8_t* panel, int64_t nb, const int8_t* xq, int64_t K, const float* xd, const int32_t* xs,
               const int32_t* xh, __m512* out) {
  constexpr bool Q8 = kKind == kPanelQ8_0, Q4K = kKind == kPanelQ4_K;
  constexpr bool Q6K = kKind == kPanelQ6_K, Q2K = kKind == kPanelQ2_K;
  constexpr int64_t kQ = 2 * panel_head_bytes(kKind);  // where the groups start
  __m512 acc[MR];
  for (int m = 0; m < MR; ++m) acc[m] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* pb = panel + b * vnni_block_bytes(kKind);
    const int8_t* xb = xq + b * 32;
    if constexpr (Q6K || Q2K) {
      constexpr int kOffset = Q6K ? 32 : 0;
      __m512i ia[MR], ib[MR];
      for (int m = 0; m < MR; ++m) {
        ia[m] = _mm512_set1_epi32(-kOffset * xh[m * nb + b]);
        ib[m] = _mm512_set1_epi32(-kOffset * (xs[m * nb + b] / 8 - xh[m * nb + b]));
      }
      for (int g = 0; g < 4; ++g) {
        const __m512i wa = _mm512_loadu_si512(pb + kQ + 64 * g), wb = _mm512_loadu_si512(pb + kQ + 64 * (g + 4));
        for (int m = 0; m < MR; ++m) {
          int32_t xa, x2;
          std::memcpy(&xa, xb + m * K + 4 * g, 4);
          std::memcpy(&x2, xb + m * K + 16 + 4 * g, 4);
          ia[m] = _mm512_dpbusd_epi32(ia[m], wa, _mm512_set1_epi32(xa));
          ib[m] = _mm512_dpbusd_epi32(ib[m], wb, _mm512_set1_epi32(x2));
        }
      }
      const __m512 da = _mm512_loadu_ps(reinterpret_cast<const float*>(pb));
      const __m512 db = _mm512_loadu_ps(reinterpret_cast<const float*>(pb + 64));
      for (int m = 0; m < MR; ++m) {
        const __m512 dx = _mm512_set1_ps(xd[m * nb + b]);
        acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[m]), _mm512_mul_ps(da, dx), acc[m]);
        acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ib[m]), _mm512_mul_ps(db, dx), acc[m]);
      }
      if constexpr (Q2K) {  // the mins against x's sums over the halves
        const __m512 ma = _mm512_loadu_ps(reinterpret_cast<const float*>(pb + 128));
        const __m512 mb = _mm512_loadu_ps(reinterpret_cast<const float*>(pb + 192));
        for (int m = 0; m < MR; ++m) {
          const float dx = xd[m * nb + b];
          const int32_t ha = xh[m * nb + b], hb = xs[m * nb + b] / 8 - ha;
          acc[m] = _mm512_fnmadd_ps(ma, _mm512_set1_ps(dx * float(ha)), acc[m]);
          acc[m] = _mm512_fnmadd_ps(mb, _mm512_set1_ps(dx * float(hb)), acc[m]);
        }
      }
      continue;
    }
    __m512i isum[MR];
    // xs = 8 * sum(x): Q4_0's offset; Q5_0's is 16 * sum(x), Q8_0's 128 * sum(x); Q4_K's is
    // a float term.
    constexpr int kXsMult = Q4K ? 0 : Q8 ? 16 : kKind == kPanelQ5_0 ? 2 : 1;
    for (int m = 0; m < MR; ++m) isum[m] = _mm512_set1_epi32(-kXsMult * xs[m * nb + b]);
    for (int g = 0; g < 8; ++g) {
      const __m512i wv = _mm512_loadu_si512(pb + kQ + 64 * g);
      for (int m = 0; m < MR; ++m) {
        int32_t x4;
        std::memcpy(&x4, xb + m * K + 4 * g, 4);
        isum[m] = _mm512_dpbusd_epi32(isum[m], wv, _mm512_set1_epi32(x4));
      }
    }
    const __m512 dw = _mm512_loadu_ps(reinterpret_cast<const float*>(pb));
    for (int m = 0; m < MR; ++m)
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[m]), _mm512_mul_ps(dw, _mm512_set1_ps(xd[m * nb + b])), acc[m]);
    if constexpr (Q4K) {
      const __m512 mn = _mm512_loadu_ps(reinterpret_cast<const float*>(pb + 64));
      for (int m = 0; m < MR; ++m)
        acc[m] = _mm512_fnmadd_ps(mn, _mm512_set1_ps(xd[m * nb + b] * 0.125f * float(xs[m * nb + b])), acc[m]);
    }
  }
  for (int m = 0; m < MR; ++m) out[m] = acc[m];
}

constexpr int kVnniMR = 8;

// vnni_tile for mr (1..kVnniMR) rows of x. (A plain array: std::array of this pointer
// type would drop the vector type's attributes.)
using VnniTileFn = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, const float*, const int32_t*,
                           const int32_t*, __m512*);
template <int kKind, int... I>
VnniTileFn vnni_tile_of(int mr, std::integer_sequence<int, I...>) {
  static const VnniTileFn table[] = {&vnni_tile<I + 1, kKind>...};
  return table[mr - 1];
}
template <int kKind>
VnniTileFn vnni_tile_fn(int mr) {
  return vnni_tile_of<kKind>(mr, std::make_integer_sequence<int, kVnniMR>{});
}

template <int kKind>
void vnni_panel_rows(const uint8_t* panel, int64_t K, const XBlocks& xb, int64_t M, int64_t n0, int64_t nvalid,
                     const float* bias, float* y, int64_t ldy) {
  const int64_t nb = K / 32;
  __m512 out[kVnniMR];
  const __mmask16 valid = __mmask16((1u << nvalid) - 1);
  const __m512 bv = bias ? _mm512_maskz_loadu_ps(valid, bias + n0) : _mm512_setzero_ps();
  for (int64_t m = 0; m < M; m += kVnniMR) {
    const int mr = int(std::min<int64_t>(kVnniMR, M - m));
    const auto [xq, xd, xs, xh] = x_rows(xb, m, K);
    vnni_tile_fn<kKind>(mr)(panel, nb, xq, K, xd, xs, xh, out);
    for (int j = 0; j < mr; ++j) _mm512_mask_storeu_ps(y + (m + j) * ldy + n0, valid, _mm512_add_ps(out[j], bv));
  }
}

void gemm_int8_vnni(uint32_t type, const XBlocks& xb, int64_t M, int64_t K, const uint8_t* w, size_t row_stride,
                    int64_t n_rows, const float* bias, float* y) {
  const int64_t nb = K / 32, n_panels = (n_rows + kVnniRows - 1) / kVnniRows;
  cpu::parallel_dynamic(n_panels, 1, M * K * kVnniRows, [&](int64_t p0, int64_t p1) {
    std::vector<uint8_t> panel(size_t(nb * vnni_block_bytes(panel_kind(type))));
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t r0 = p * kVnniRows, rc = std::min(kVnniRows, n_rows - r0);
      const uint8_t* rp[kVnniRows];
      for (int64_t i = 0; i < kVnniRows; ++i) rp[i] = w + size_t(r0 + std::min(i, rc - 1)) * row_stride;
      pack_panel16(type, rp, nb, panel.data());
      switch (panel_kind(type)) {
        case kPanelQ8_0: vnni_panel_rows<kPanelQ8_0>(panel.data(), K, xb, M, r0, rc, bias, y, n_rows); break;
        case kPanelQ4_K: vnni_panel_rows<kPanelQ4_K>(panel.data(), K, xb, M, r0, rc, bias, y, n_rows); break;
        case kPanelQ6_K: vnni_panel_rows<kPanelQ6_K>(panel.data(), K, xb, M, r0, rc, bias, y, n_rows); break;
        case kPanelQ2_K: vnni_panel_rows<kPanelQ2_K>(panel.data(), K, xb, M, r0, rc, bias, y, n_rows); break;
        case kPanelQ5_0: vnni_panel_rows<kPanelQ5_0>(panel.data(), K, xb, M, r0, rc, bias, y, n_rows); break;
        default: vnni_panel_rows<kPanelQ4_0>(panel.data(), K, xb, M, r0, rc, bias, y, n_rows); break;
      }
    }
  });
}
#endif  // MLXCEL_GGUF_VNNI

template <int MC>
void rows8(uint32_t type, const uint8_t* const* rp, const uint8_t* pf, const XBlocks& xb, int64_t K, int64_t m0,
           float* out) {
  if (type == kQ8_0) q8_0_rows8<MC>(rp, pf, xb, K, m0, out);
  else q4_0_rows8<MC>(rp, pf, xb, K, m0, out);
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
  int64_t K = 0;
  void pack(int64_t n0, int64_t nb, int64_t k0, int64_t kb, float* buf, float* packed) const {
    const int64_t be = int64_t(block_elems(type));
    if (k0 % be == 0 && kb % be == 0) {
      for (int64_t n = 0; n < nb; ++n)
        dequantize_row(type, w + size_t(n0 + n) * row_stride + size_t(k0 / be) * block_bytes(type), buf + n * kb, kb);
    } else {  // a panel cutting 256-value blocks: whole rows, then the slice
      std::vector<float> full(static_cast<size_t>(K));
      for (int64_t n = 0; n < nb; ++n) {
        dequantize_row(type, w + size_t(n0 + n) * row_stride, full.data(), K);
        std::copy(full.begin() + k0, full.begin() + k0 + kb, buf + n * kb);
      }
    }
    cpu::gemm::pack_panel(buf, kb, nb, kb, packed);
  }
};

}  // namespace

namespace {
struct Span {
  const uint8_t* p = nullptr;
  size_t n = 0;
};
const uint8_t* x8_copy_of(uint32_t type, const uint8_t* w, size_t row_stride, int64_t n_rows, int64_t K,
                          Span* next = nullptr);
// Lets an idle worker pull the start of the next product's x8 copy into the cache while
// the caller runs the serial ops between products (ThreadPool::prefetch_when_idle).
std::atomic<int64_t>& idle_prefetch_setting() {
  static std::atomic<int64_t> bytes{[] {
    const char* e = std::getenv("MLXCEL_IDLE_PREFETCH_KB");
    return int64_t(e ? std::atoll(e) : 2048) * 1024;
  }()};
  return bytes;
}
void hint_next(const Span& next) {
  const int64_t cap = idle_prefetch_setting().load(std::memory_order_relaxed);
  if (next.p && cap > 0) ThreadPool::global().prefetch_when_idle(next.p, std::min(next.n, size_t(cap)));
}
// One product of a decode step: the weight in the row layout (w, row_stride) and, when
// it has one, its x8 copy (wx8, used instead).
struct DecodeMat {
  uint32_t type;
  const uint8_t* w;
  size_t row_stride;
  const uint8_t* wx8;
  int64_t n_rows;
  const float* bias;
  float* y;
};

void decode_run(const DecodeMat* mats, int n, const XBlocks& xb, int64_t M, int64_t K);
}  // namespace

void matmul_packed(uint32_t type, const float* x, int64_t M, int64_t K, const uint8_t* w, size_t row_stride,
                   int64_t n_rows, const float* bias, float* y) {
  MLXCEL_CHECK(kept_packed(type), "gguf matmul_packed: type {} is not kept packed", type);
  MLXCEL_CHECK(K % int64_t(block_elems(type)) == 0, "gguf matmul_packed: K {} is not a multiple of {}", K,
               block_elems(type));
  [[maybe_unused]] const int64_t nb = K / 32;
  // Decode-sized products of a weight the loader registered run on its x8 copy.
  constexpr int64_t kX8MaxRows = 16;
  if (M < kX8MaxRows && repack_enabled()) {
    Span next;
    if (const uint8_t* wx8 = x8_copy_of(type, w, row_stride, n_rows, K, &next)) {
      matmul_x8(type, x, M, K, wx8, n_rows, bias, y);
      hint_next(next);
      return;
    }
  }
#if MLXCEL_GGUF_AVX2
  // From 16 rows of x the int8 GEMM (each weight panel unpacked once) matches or beats
  // the decode kernel; at M = 64..128 it is about 2x the dequantize + f32 GEMM path
  // below (bench/gguf_bench kernel, 2-core AVX2 VM).
  constexpr int64_t kGemmMinRows = 16;
  if (M >= kGemmMinRows) {
    XBlocks xb;
    quantize_x(x, M, K, xb);
#if MLXCEL_GGUF_VNNI
    gemm_int8_vnni(type, xb, M, K, w, row_stride, n_rows, bias, y);
#else
    gemm_int8(type, xb, M, K, w, row_stride, n_rows, bias, y);
#endif
    return;
  }
#endif
  // Without AVX2, prefill-sized M dequantizes each weight panel once into the f32 GEMM.
  if (M >= 64) {
    cpu::gemm::run(x, M, K, n_rows, PackedSource{type, w, row_stride, K}, bias, y);
    return;
  }
  XBlocks xb;
  quantize_x(x, M, K, xb);
  const DecodeMat d{type, w, row_stride, nullptr, n_rows, bias, y};
  decode_run(&d, 1, xb, M, K);
}

void matmul_packed_multi(const float* x, int64_t M, int64_t K, const PackedProduct* ps, int n) {
  MLXCEL_CHECK(n >= 1 && n <= 8, "gguf matmul_packed_multi: {} products (1..8)", n);
  if (M >= 16 || n == 1) {
    for (int i = 0; i < n; ++i) matmul_packed(ps[i].type, x, M, K, ps[i].w, ps[i].row_stride, ps[i].n_rows, ps[i].bias, ps[i].y);
    return;
  }
  MLXCEL_CHECK(K % 32 == 0, "gguf matmul_packed_multi: K {} is not a multiple of 32", K);
  DecodeMat mats[8];
  Span next;  // after the last product that has an x8 copy
  for (int i = 0; i < n; ++i) {
    const PackedProduct& p = ps[i];
    MLXCEL_CHECK(kept_packed(p.type) && K % int64_t(block_elems(p.type)) == 0,
                 "gguf matmul_packed_multi: type {} with K {} is not kept packed", p.type, K);
    const uint8_t* wx8 = repack_enabled() ? x8_copy_of(p.type, p.w, p.row_stride, p.n_rows, K, &next) : nullptr;
    mats[i] = DecodeMat{p.type, p.w, p.row_stride, wx8, p.n_rows, p.bias, p.y};
  }
  XBlocks xb;
  quantize_x(x, M, K, xb);
  decode_run(mats, n, xb, M, K);
  hint_next(next);
}

void gather_rows(uint32_t type, const uint8_t* w, size_t row_stride, int64_t K, const int32_t* ids, int64_t n_ids,
                 float* out) {
  for (int64_t i = 0; i < n_ids; ++i) dequantize_row(type, w + size_t(ids[i]) * row_stride, out + i * K, K);
}


// ---- x8 layout ------------------------------------------------------------------------

namespace {
// Bytes of the x8 copy of one block of 8 rows (block_elems values a row).
size_t x8_block_bytes(uint32_t type) {
  switch (type) {
    case kQ4_K: return size_t(kX8Q4kBlock);
    case kQ5_K: return size_t(kX8Q5kBlock);
    case kQ6_K: return size_t(kX8Q6kBlock);
    case kQ3_K: return size_t(kX8Q3kBlock);
    case kQ2_K: return size_t(kX8Q2kBlock);
    default: return size_t(b32_format(type).block);  // the file's 8 blocks
  }
}
}  // namespace

size_t x8_group_bytes(uint32_t type, int64_t K) {
  MLXCEL_CHECK(kept_packed(type), "gguf x8: type {} is not kept packed", type);
  const int64_t blk = int64_t(block_elems(type));
  MLXCEL_CHECK(K > 0 && K % blk == 0, "gguf x8: K {} is not a multiple of {}", K, blk);
  return size_t(K / blk) * x8_block_bytes(type);
}

size_t x8_bytes(uint32_t type, int64_t n_rows, int64_t K) {
  return size_t((n_rows + 7) / 8) * x8_group_bytes(type, K);
}

namespace {

// n_vec vectors of 4-byte lanes at dst, lane r of vector v = bytes 4 v .. 4 v + 3 of src
// (row r's).
inline void interleave4(uint8_t* dst, const uint8_t* src, int n_vec, int r) {
  for (int v = 0; v < n_vec; ++v) std::memcpy(dst + 32 * v + 4 * r, src + 4 * v, 4);
}

// Row r's block blk (the row layout) into its lanes of the x8 block at dst.
void repack_block(uint32_t type, const uint8_t* blk, int r, uint8_t* dst) {
  switch (type) {
    case kQ6_K:
      std::memcpy(dst + 2 * r, blk + 208, 2);
      for (int j = 0; j < 16; ++j) dst[16 + 8 * j + r] = blk[192 + j];
      interleave4(dst + 144, blk, 32, r);
      interleave4(dst + 144 + 1024, blk + 128, 16, r);
      return;
    case kQ3_K:
      std::memcpy(dst + 2 * r, blk + 108, 2);
      for (int j = 0; j < 16; ++j) dst[16 + 8 * j + r] = uint8_t(q3k_scale(blk + 96, j));
      interleave4(dst + 144, blk + 32, 16, r);
      interleave4(dst + 144 + 512, blk, 8, r);
      return;
    case kQ2_K:
      std::memcpy(dst + 2 * r, blk + 80, 2);
      std::memcpy(dst + 16 + 2 * r, blk + 82, 2);
      for (int j = 0; j < 16; ++j) dst[32 + 8 * j + r] = blk[j];
      interleave4(dst + 160, blk + 16, 16, r);
      return;
    case kQ4_K:
    case kQ5_K: {
      const bool q5 = type == kQ5_K;
      std::memcpy(dst + 2 * r, blk, 2);
      std::memcpy(dst + 16 + 2 * r, blk + 2, 2);
      for (int j = 0; j < 8; ++j) scale_min_k4(j, blk + 4, dst[32 + 8 * j + r], dst[96 + 8 * j + r]);
      interleave4(dst + 160, blk + (q5 ? 48 : 16), 32, r);
      if (q5) interleave4(dst + kX8Q4kBlock, blk + 16, 8, r);
      return;
    }
    default: {  // the 32-value formats: d (, m) 2 bytes a row, then (qh and) the quants 4
      const B32 f = b32_format(type);
      for (int h = 0; h < f.halves; ++h) std::memcpy(dst + 16 * h + 2 * r, blk + 2 * h, 2);
      interleave4(dst + 16 * f.halves, blk + 2 * f.halves, int(block_bytes(type) - 2 * f.halves) / 4, r);
    }
  }
}

// One x8 group from its 8 rows (rows[r]; a short group repeats its last row).
void repack_group(uint32_t type, const uint8_t* const* rows, int64_t K, uint8_t* grp) {
  const int64_t be = int64_t(block_elems(type));
  const size_t kb = block_bytes(type), xb = x8_block_bytes(type);
  for (int64_t b = 0; b < K / be; ++b)
    for (int r = 0; r < 8; ++r) repack_block(type, rows[r] + size_t(b) * kb, r, grp + size_t(b) * xb);
}

}  // namespace

void repack_x8(uint32_t type, const uint8_t* w, size_t row_stride, int64_t n_rows, int64_t K, uint8_t* out) {
  const size_t gb = x8_group_bytes(type, K);
  const int64_t n_groups = (n_rows + 7) / 8;
  cpu::parallel_for(n_groups, 8 * K, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const uint8_t* rows[8];
      for (int r = 0; r < 8; ++r) rows[r] = w + size_t(std::min(g * 8 + r, n_rows - 1)) * row_stride;
      repack_group(type, rows, K, out + size_t(g) * gb);
    }
  });
}

namespace {

// The scalar kernel on the x8 layout: row r (0..7) of a group against one activation row.
[[maybe_unused]] float x8_dot_scalar(uint32_t type, const uint8_t* grp, int64_t nb, int r, const int8_t* xq,
                                     const float* xd, const int32_t* xs, const int32_t* xh) {
  if (type == kQ6_K || type == kQ3_K || type == kQ2_K) {
    const bool q6 = type == kQ6_K, q2 = type == kQ2_K;
    const int off = q6 ? 32 : q2 ? 0 : 4;
    const int64_t scales = q2 ? 32 : 16, quants = scales + 128;
    float acc = 0.0f;
    for (int64_t b = 0; b < nb / 8; ++b) {
      const uint8_t* blk = grp + b * (q6 ? kX8Q6kBlock : q2 ? kX8Q2kBlock : kX8Q3kBlock);
      const float d = half_at(blk + 2 * r), dmin = q2 ? half_at(blk + 16 + 2 * r) : 0.0f;
      for (int c = 0; c < 8; ++c) {
        const int n = c / 4, k = c % 4;
        const int8_t* xv = xq + (b * 8 + c) * 32;
        const int32_t xsum[2] = {xh[b * 8 + c], xs[b * 8 + c] / 8 - xh[b * 8 + c]};
        int32_t is[2] = {-off * xsum[0], -off * xsum[1]};
        for (int j = 0; j < 32; ++j) {
          const int v = j / 4, e = j % 4;
          int q;
          if (q6) {
            const uint8_t lo = blk[144 + 32 * (16 * n + 8 * (k & 1) + v) + 4 * r + e];
            const uint8_t hi = blk[144 + 1024 + 32 * (8 * n + v) + 4 * r + e];
            q = ((k >> 1 ? lo >> 4 : lo) & 0xF) | (((hi >> (2 * k)) & 3) << 4);
          } else {
            q = (blk[quants + 32 * (8 * n + v) + 4 * r + e] >> (2 * k)) & 3;
            if (!q2) q |= ((blk[144 + 512 + 32 * v + 4 * r + e] >> c) & 1) << 2;
          }
          is[j / 16] += q * xv[j];
        }
        const float dx = xd[b * 8 + c];
        for (int h = 0; h < 2; ++h) {
          const uint8_t sb = blk[scales + 16 * c + 8 * h + r];
          acc += float(is[h]) * ((d * (q2 ? float(sb & 0xF) : float(int8_t(sb)))) * dx);
          if (q2) acc -= (dmin * float(sb >> 4)) * (dx * float(xsum[h]));
        }
      }
    }
    return acc;
  }
  if (type == kQ4_K || type == kQ5_K) {
    const bool q5 = type == kQ5_K;
    float acc = 0.0f;
    for (int64_t b = 0; b < nb / 8; ++b) {
      const uint8_t* blk = grp + b * (q5 ? kX8Q5kBlock : kX8Q4kBlock);
      const float d = half_at(blk + 2 * r), dmin = half_at(blk + 16 + 2 * r);
      for (int s = 0; s < 8; ++s) {
        const int8_t* xv = xq + (b * 8 + s) * 32;
        int32_t isum = 0;
        for (int j = 0; j < 32; ++j) {
          const uint8_t byte = blk[160 + (s / 2) * 256 + 32 * (j / 4) + 4 * r + j % 4];
          const int hb = q5 ? ((blk[kX8Q4kBlock + 32 * (j / 4) + 4 * r + j % 4] >> s) & 1) << 4 : 0;
          isum += int32_t((s & 1 ? byte >> 4 : byte & 0xF) | hb) * xv[j];
        }
        const float dx = xd[b * 8 + s];
        acc += float(isum) * ((d * float(blk[32 + 8 * s + r])) * dx);
        acc -= (dmin * float(blk[96 + 8 * s + r])) * (dx * 0.125f * float(xs[b * 8 + s]));
      }
    }
    return acc;
  }
  const B32 f = b32_format(type);
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* xv = xq + b * 32;
    const uint8_t* blk = grp + b * f.block;
    uint32_t qh = 0;  // Q5_0 / Q5_1: bit j is value j's 16
    if (f.high) std::memcpy(&qh, blk + f.qh + 4 * r, 4);
    int32_t s = -f.xs_mult * xs[b];
    for (int j = 0; j < 32; ++j) {
      if (type == kQ8_0) {
        s += int32_t(int8_t(blk[f.qs + 32 * (j / 4) + 4 * r + j % 4])) * xv[j];
      } else {
        const uint8_t byte = blk[f.qs + 32 * (j % 16 / 4) + 4 * r + j % 4];
        s += int32_t((j < 16 ? byte & 0xF : byte >> 4) | ((qh >> j) & 1) << 4) * xv[j];
      }
    }
    acc += float(s) * half_at(blk + 2 * r) * xd[b];
    if (f.halves == 2) acc += half_at(blk + 16 + 2 * r) * (xd[b] * 0.125f * float(xs[b]));
  }
  return acc;
}

}  // namespace

namespace {

// Rows [8 g, 8 g + 8) of one product for the M rows of x (quantized in xb). Each group
// serves every tile of up to 4 activation rows while its bytes are in L1.
void decode_group(const DecodeMat& d, int64_t g, const XBlocks& xb, int64_t M, int64_t K) {
  constexpr int64_t kRows = 8;
  const int64_t nb = K / 32, r0 = g * kRows, rc = std::min(kRows, d.n_rows - r0);
  const uint32_t type = d.type;
  [[maybe_unused]] const uint8_t* grp = d.wx8 ? d.wx8 + size_t(g) * x8_group_bytes(type, K) : nullptr;
  const uint8_t* rp[kRows];
  if (!grp)
    for (int64_t i = 0; i < kRows; ++i) rp[i] = d.w + size_t(r0 + std::min(i, rc - 1)) * d.row_stride;
  if (!grp && type != kQ4_0 && type != kQ8_0) {
    // No row-layout kernel but Q4_0's and Q8_0's: the group is repacked here (the x8 copy's
    // bytes).
    thread_local std::vector<uint8_t> tmp;
    tmp.resize(x8_group_bytes(type, K));
    repack_group(type, rp, K, tmp.data());
    grp = tmp.data();
  }
  for (int64_t m0 = 0; m0 < M; m0 += 4) {
    const int64_t mc = std::min<int64_t>(4, M - m0);
    float v[4 * kRows];
#if MLXCEL_GGUF_AVX2
    if (grp) {
      switch (mc) {
        case 4: x8_group_t<4>(type, grp, nb, xb, K, m0, v); break;
        case 3: x8_group_t<3>(type, grp, nb, xb, K, m0, v); break;
        case 2: x8_group_t<2>(type, grp, nb, xb, K, m0, v); break;
        default: x8_group_t<1>(type, grp, nb, xb, K, m0, v); break;
      }
    } else {
      // Prefetch the next group during the first tile (its rows follow this group's
      // when the rows are packed back to back).
      const uint8_t* pf = m0 == 0 && d.row_stride == row_bytes(type, K) ? rp[0] + kRows * d.row_stride : nullptr;
      switch (mc) {
        case 4: rows8<4>(type, rp, pf, xb, K, m0, v); break;
        case 3: rows8<3>(type, rp, pf, xb, K, m0, v); break;
        case 2: rows8<2>(type, rp, pf, xb, K, m0, v); break;
        default: rows8<1>(type, rp, pf, xb, K, m0, v); break;
      }
    }
#else
    for (int64_t j = 0; j < mc; ++j)
      for (int64_t i = 0; i < rc; ++i) {
        const auto [xq, xd, xs, xh] = x_rows(xb, m0 + j, K);
        v[j * kRows + i] = grp ? x8_dot_scalar(type, grp, nb, int(i), xq, xd, xs, xh)
                               : dot_row(type, d.w + size_t(r0 + i) * d.row_stride, xq, xd, xs, nb);
      }
#endif
    for (int64_t j = 0; j < mc; ++j)
      for (int64_t i = 0; i < rc; ++i)
        d.y[(m0 + j) * d.n_rows + r0 + i] = v[j * kRows + i] + (d.bias ? d.bias[r0 + i] : 0.0f);
  }
}

// The products of a decode step that share x, in one parallel region over all their
// groups of 8 rows. Chunks of about 1/16 of a thread's share (at least 2 groups) balance
// a late or preempted thread at one atomic increment per chunk.
void decode_run(const DecodeMat* mats, int n, const XBlocks& xb, int64_t M, int64_t K) {
  int64_t first[9];
  MLXCEL_CHECK(n >= 1 && n <= 8, "gguf decode: {} products in one region", n);
  first[0] = 0;
  for (int i = 0; i < n; ++i) first[i + 1] = first[i] + (mats[i].n_rows + 7) / 8;
  const int64_t n_groups = first[n];
  const int64_t chunk = std::max<int64_t>(2, n_groups / (16 * ThreadPool::global().size()));
  // Guided chunks (long contiguous runs first): +1.5-3.5% tg on the Zen 4 VM against
  // fixed chunks pulled from a counter (MLXCEL_DECODE_GUIDED=0 keeps those, for A/B runs).
  static const bool guided = [] {
    const char* e = std::getenv("MLXCEL_DECODE_GUIDED");
    return !(e && std::string(e) == "0");
  }();
  (guided ? cpu::parallel_guided : cpu::parallel_dynamic)(n_groups, chunk, 8 * K * M, [&](int64_t g0, int64_t g1) {
    int i = 0;
    for (int64_t g = g0; g < g1; ++g) {
      while (g >= first[i + 1]) ++i;
      decode_group(mats[i], g - first[i], xb, M, K);
    }
  });
}

}  // namespace

void matmul_x8(uint32_t type, const float* x, int64_t M, int64_t K, const uint8_t* wx8, int64_t n_rows,
               const float* bias, float* y) {
  x8_group_bytes(type, K);  // checks type and K
  XBlocks xb;
  quantize_x(x, M, K, xb);
  const DecodeMat d{type, nullptr, 0, wx8, n_rows, bias, y};
  decode_run(&d, 1, xb, M, K);
}

namespace {

// x8 copies are cut from arenas of transparent huge pages (where the kernel offers them
// on request: the copies are streamed once per token, and with 4 KB pages every 4 KB of
// it is a TLB miss, a costly nested page walk in a VM). Copies are made in the order of
// first use, so one decode step reads the arena nearly front to back. An arena is freed
// when its last copy is.
constexpr size_t kHugePage = size_t(2) << 20, kArenaBytes = size_t(32) << 20;

struct X8Arena {
  uint8_t* base = nullptr;
  size_t size = 0, used = 0;
  int live = 0;
};

struct X8Copy {
  int registrations = 0;
  size_t extent = 0;  // the registered bytes (rows at any stride: known at the first product)
  uint32_t type = 0;
  int64_t n_rows = 0, K = 0;
  size_t row_stride = 0, bytes = 0;
  uint8_t* buf = nullptr;
  bool ready = false;  // buf holds the repacked bytes
  X8Arena* arena = nullptr;
  // The weight whose copy was made next (the next product of a decode step, as copies
  // are made in the order of first use; the last one links back to the first).
  const uint8_t* next_key = nullptr;
};

struct X8Registry {
  std::mutex mu;
  std::map<const uint8_t*, X8Copy> map;  // ordered: a row view's weight is the one at or below it
  std::vector<std::unique_ptr<X8Arena>> arenas;  // the last one takes new copies
  size_t bytes = 0;
  const uint8_t* first_key = nullptr;  // the first and the last copy made (the ring of next_key)
  const uint8_t* last_key = nullptr;

  uint8_t* allocate(size_t bytes_, X8Arena** from) {
    bytes_ = (bytes_ + 63) / 64 * 64;
    if (arenas.empty() || arenas.back()->size - arenas.back()->used < bytes_) {
      auto a = std::make_unique<X8Arena>();
      a->size = std::max(kArenaBytes, (bytes_ + kHugePage - 1) / kHugePage * kHugePage);
      a->base = static_cast<uint8_t*>(std::aligned_alloc(kHugePage, a->size));
      if (!a->base) return nullptr;
#if defined(MADV_HUGEPAGE)
      madvise(a->base, a->size, MADV_HUGEPAGE);  // advice only: no huge pages is fine
#endif
      arenas.push_back(std::move(a));
    }
    X8Arena* a = arenas.back().get();
    uint8_t* p = a->base + a->used;
    a->used += bytes_;
    ++a->live;
    *from = a;
    return p;
  }
  void release(X8Copy& c) {
    if (!c.buf) return;
    bytes -= c.bytes;
    if (--c.arena->live == 0) {
      std::free(c.arena->base);
      arenas.erase(std::find_if(arenas.begin(), arenas.end(), [&](const auto& a) { return a.get() == c.arena; }));
    }
    c.buf = nullptr;
    c.ready = false;
    c.arena = nullptr;
  }
};

// Never destroyed: weights may be released after static destruction has begun.
X8Registry& x8_registry() {
  static X8Registry* r = new X8Registry;
  return *r;
}

struct RepackableOwner {
  RepackableOwner(const uint8_t* w_, std::shared_ptr<void> inner_) : w(w_), inner(std::move(inner_)) {}
  RepackableOwner(const RepackableOwner&) = delete;
  RepackableOwner& operator=(const RepackableOwner&) = delete;
  const uint8_t* w;
  std::shared_ptr<void> inner;
  ~RepackableOwner() {
    X8Registry& reg = x8_registry();
    std::lock_guard<std::mutex> lock(reg.mu);
    auto it = reg.map.find(w);
    if (it != reg.map.end() && --it->second.registrations == 0) {
      if (reg.first_key == w) reg.first_key = it->second.next_key != w ? it->second.next_key : nullptr;
      if (reg.last_key == w) reg.last_key = nullptr;
      reg.release(it->second);
      reg.map.erase(it);
    }
  }
};

// The x8 copy of rows [r0, r0 + n_rows) of a registered weight, w pointing at row r0: the
// whole weight (r0 = 0) or a row view of it from a group boundary on (r0 % 8 == 0; Phi-3's
// fused q/k/v and gate/up are split into such views). The copy, of all the registered rows,
// is made now if the weight has none yet. Null for anything else.
const uint8_t* x8_copy_of(uint32_t type, const uint8_t* w, size_t row_stride, int64_t n_rows, int64_t K,
                          Span* next) {
  X8Registry& reg = x8_registry();
  std::unique_lock<std::mutex> lock(reg.mu);
  auto it = reg.map.upper_bound(w);
  if (it == reg.map.begin()) return nullptr;
  --it;  // the registered weight at or below w
  const uint8_t* base = it->first;
  const size_t off = size_t(w - base);
  if (row_stride == 0 || off % row_stride != 0 || off / row_stride % 8 != 0) return nullptr;
  const int64_t r0 = int64_t(off / row_stride);
  if (r0 + n_rows > int64_t(it->second.extent / row_stride)) return nullptr;
  if (!it->second.buf) {
    // Claim the copy, then repack without the lock (repack_x8 runs on the thread pool; a
    // caller that finds the copy not ready yet uses the row layout meanwhile).
    X8Copy& c = it->second;
    const int64_t all_rows = int64_t(c.extent / row_stride);
    const size_t bytes = x8_bytes(type, all_rows, K);
    c.buf = reg.allocate(bytes, &c.arena);
    if (!c.buf) return nullptr;
    c.type = type;
    c.n_rows = all_rows;
    c.K = K;
    c.row_stride = row_stride;
    c.bytes = bytes;
    reg.bytes += bytes;
    if (reg.last_key) {
      auto last = reg.map.find(reg.last_key);
      if (last != reg.map.end()) last->second.next_key = base;
    }
    if (!reg.first_key) reg.first_key = base;
    c.next_key = reg.first_key;
    reg.last_key = base;
    uint8_t* dst = c.buf;
    lock.unlock();
    repack_x8(type, base, row_stride, all_rows, K, dst);  // the weight outlives this call
    lock.lock();
    it = reg.map.find(base);
    if (it == reg.map.end()) return nullptr;
    it->second.ready = true;
  }
  const X8Copy& c = it->second;
  if (!c.ready || c.type != type || r0 + n_rows > c.n_rows || c.K != K || c.row_stride != row_stride) return nullptr;
  if (next) {
    auto nx = reg.map.find(c.next_key);
    *next = nx != reg.map.end() && nx->second.ready ? Span{nx->second.buf, nx->second.bytes} : Span{};
  }
  return c.buf + size_t(r0 / 8) * x8_group_bytes(type, K);
}

}  // namespace

std::shared_ptr<void> repackable_owner(const uint8_t* w, size_t bytes, std::shared_ptr<void> inner) {
  {
    X8Registry& reg = x8_registry();
    std::lock_guard<std::mutex> lock(reg.mu);
    X8Copy& c = reg.map[w];
    ++c.registrations;
    c.extent = std::max(c.extent, bytes);
  }
  return std::make_shared<RepackableOwner>(w, std::move(inner));
}

size_t repacked_bytes_in_use() {
  X8Registry& reg = x8_registry();
  std::lock_guard<std::mutex> lock(reg.mu);
  return reg.bytes;
}

void set_idle_prefetch_bytes(int64_t bytes) { idle_prefetch_setting().store(std::max<int64_t>(0, bytes)); }
int64_t idle_prefetch_bytes() { return idle_prefetch_setting().load(); }

bool repack_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("MLXCEL_GGUF_REPACK");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

}  // namespace mlxcel::gguf::MLXCEL_CPU_NS
