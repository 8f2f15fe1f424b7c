// GGUF block formats: hand-built blocks dequantize to the values their layout defines,
// the reference quantizers round-trip, and the packed matmul matches a dequantized one.
#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <algorithm>
#include <string>
#include <random>
#include <utility>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "backends/cpu/gguf_quants.h"
#include "backends/cpu/parallel.h"
#include "base/half.h"

namespace mlxcel::gguf {
namespace {

void put_half(std::vector<uint8_t>& b, size_t at, float v) {
  uint16_t h = f32_to_f16(v);
  std::memcpy(b.data() + at, &h, 2);
}

// A product's shape: M rows of x, K, N weight rows, and padding bytes after each row.
struct Case {
  int64_t M, K, N;
  size_t pad;
};

std::vector<float> deq(uint32_t type, const std::vector<uint8_t>& b, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  dequantize_row(type, b.data(), y.data(), n);
  return y;
}

TEST(GgufQuants, SizesMatchGgml) {
  EXPECT_EQ(block_bytes(kQ4_0), 18u);
  EXPECT_EQ(block_bytes(kQ4_1), 20u);
  EXPECT_EQ(block_bytes(kQ5_0), 22u);
  EXPECT_EQ(block_bytes(kQ5_1), 24u);
  EXPECT_EQ(block_bytes(kQ8_0), 34u);
  EXPECT_EQ(block_bytes(kQ2_K), 84u);
  EXPECT_EQ(block_bytes(kQ3_K), 110u);
  EXPECT_EQ(block_bytes(kQ4_K), 144u);
  EXPECT_EQ(block_bytes(kQ5_K), 176u);
  EXPECT_EQ(block_bytes(kQ6_K), 210u);
  EXPECT_EQ(row_bytes(kQ4_0, 64), 36u);
  EXPECT_FALSE(can_dequantize(16));  // IQ2_XXS
}

TEST(GgufQuants, Q4_0) {
  std::vector<uint8_t> b(18);
  put_half(b, 0, 0.5f);
  for (int j = 0; j < 16; ++j) b[2 + j] = uint8_t(j | ((15 - j) << 4));
  auto y = deq(kQ4_0, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * (j - 8));
    EXPECT_EQ(y[j + 16], 0.5f * (15 - j - 8));
  }
}

TEST(GgufQuants, Q4_1) {
  std::vector<uint8_t> b(20);
  put_half(b, 0, 0.25f);
  put_half(b, 2, -1.0f);
  for (int j = 0; j < 16; ++j) b[4 + j] = uint8_t(j | (3 << 4));
  auto y = deq(kQ4_1, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.25f * j - 1.0f);
    EXPECT_EQ(y[j + 16], 0.25f * 3 - 1.0f);
  }
}

TEST(GgufQuants, Q5_0AndQ5_1) {
  // Value j's fifth bit is bit j of qh (values 16..31: bits 16..31).
  std::vector<uint8_t> b(22);
  put_half(b, 0, 1.0f);
  uint32_t qh = 0xAAAA5555u;
  std::memcpy(b.data() + 2, &qh, 4);
  for (int j = 0; j < 16; ++j) b[6 + j] = uint8_t(j | (j << 4));
  auto y = deq(kQ5_0, b, 32);
  for (int j = 0; j < 32; ++j) {
    int q = (j % 16) | (((qh >> j) & 1) << 4);
    EXPECT_EQ(y[j], float(q - 16)) << j;
  }
  std::vector<uint8_t> c(24);
  put_half(c, 0, 2.0f);
  put_half(c, 2, 0.5f);
  std::memcpy(c.data() + 4, &qh, 4);
  for (int j = 0; j < 16; ++j) c[8 + j] = uint8_t(j | (j << 4));
  auto z = deq(kQ5_1, c, 32);
  for (int j = 0; j < 32; ++j) {
    int q = (j % 16) | (((qh >> j) & 1) << 4);
    EXPECT_EQ(z[j], 2.0f * q + 0.5f) << j;
  }
}

TEST(GgufQuants, Q8_0) {
  std::vector<uint8_t> b(34);
  put_half(b, 0, 0.125f);
  for (int j = 0; j < 32; ++j) b[2 + j] = uint8_t(int8_t(j * 8 - 128));
  auto y = deq(kQ8_0, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.125f * (j * 8 - 128));
}

TEST(GgufQuants, Q2_K) {
  // scales[16] (low nibble scale, high nibble min); qs[64]; d; dmin.
  std::vector<uint8_t> b(84);
  for (int i = 0; i < 16; ++i) b[i] = uint8_t((i % 16) | (1 << 4));
  for (int i = 0; i < 64; ++i) b[16 + i] = uint8_t(0b11100100);  // 2-bit values 0,1,2,3 by shift
  put_half(b, 80, 1.0f);
  put_half(b, 82, 0.5f);
  auto y = deq(kQ2_K, b, 256);
  // Output order: for each 128 half n, for shift j=0..3, 16 values from q[0..15] with
  // scale index is, then 16 from q[16..31] with is+1.
  int idx = 0, is = 0;
  for (int n = 0; n < 2; ++n)
    for (int j = 0; j < 4; ++j)
      for (int h = 0; h < 2; ++h, ++is)
        for (int l = 0; l < 16; ++l, ++idx) EXPECT_EQ(y[idx], float(is % 16) * j - 0.5f) << idx;
}

TEST(GgufQuants, Q3_K) {
  // hmask[32]; qs[64]; scales[12]; d. All scales 32 + 1 (i.e. 1), hmask all set -> q in 0..3.
  std::vector<uint8_t> b(110);
  for (int i = 0; i < 32; ++i) b[i] = 0xFF;
  for (int i = 0; i < 64; ++i) b[32 + i] = uint8_t(0b00011011);  // shifts 0,2,4,6 -> 3,2,1,0
  // 6-bit scale 33 = 0b100001: low nibble 1, high bits 2.
  for (int i = 0; i < 8; ++i) b[96 + i] = 0x11;
  for (int i = 0; i < 4; ++i) b[104 + i] = 0b10101010;
  put_half(b, 108, 2.0f);
  auto y = deq(kQ3_K, b, 256);
  int idx = 0;
  for (int n = 0; n < 2; ++n)
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 32; ++l, ++idx) EXPECT_EQ(y[idx], 2.0f * (3 - j)) << idx;
  // Clearing hmask subtracts 4.
  for (int i = 0; i < 32; ++i) b[i] = 0;
  y = deq(kQ3_K, b, 256);
  EXPECT_EQ(y[0], 2.0f * (3 - 4));
}

TEST(GgufQuants, Q4_KAndQ5_K) {
  // d, dmin, scales[12] (6-bit scale/min pairs), qs[128].
  std::vector<uint8_t> b(144);
  put_half(b, 0, 1.0f);
  put_half(b, 2, 1.0f);
  // Sub-blocks 0..3: scale j+1, min 0; 4..7: scale 2, min 1.
  for (int j = 0; j < 4; ++j) {
    b[4 + j] = uint8_t(j + 1);
    b[4 + j + 4] = 0;
  }
  for (int j = 4; j < 8; ++j) b[4 + j + 4] = uint8_t(2 | (1 << 4));
  for (int i = 0; i < 128; ++i) b[16 + i] = uint8_t(5 | (9 << 4));
  auto y = deq(kQ4_K, b, 256);
  const float sc[8] = {1, 2, 3, 4, 2, 2, 2, 2}, mn[8] = {0, 0, 0, 0, 1, 1, 1, 1};
  for (int s = 0; s < 8; ++s)
    for (int l = 0; l < 32; ++l) EXPECT_EQ(y[s * 32 + l], sc[s] * (s % 2 == 0 ? 5 : 9) - mn[s]) << s;

  std::vector<uint8_t> c(176);
  std::memcpy(c.data(), b.data(), 16);
  for (int i = 0; i < 32; ++i) c[16 + i] = 0b01010101;  // high bit set for even sub-blocks
  for (int i = 0; i < 128; ++i) c[48 + i] = uint8_t(5 | (9 << 4));
  auto z = deq(kQ5_K, c, 256);
  for (int s = 0; s < 8; ++s)
    for (int l = 0; l < 32; ++l)
      EXPECT_EQ(z[s * 32 + l], sc[s] * ((s % 2 == 0 ? 5 : 9) + (s % 2 == 0 ? 16 : 0)) - mn[s]) << s;
}

TEST(GgufQuants, Q6_K) {
  // ql[128]; qh[64]; scales[16] (i8); d.
  std::vector<uint8_t> b(210);
  for (int i = 0; i < 128; ++i) b[i] = uint8_t(1 | (2 << 4));
  for (int i = 0; i < 64; ++i) b[128 + i] = uint8_t(0b11100100);  // high pairs 0,1,2,3
  for (int i = 0; i < 16; ++i) b[192 + i] = uint8_t(int8_t(i - 8));
  put_half(b, 208, 0.5f);
  auto y = deq(kQ6_K, b, 256);
  for (int n = 0; n < 2; ++n) {
    for (int l = 0; l < 32; ++l) {
      const int is = n * 8 + l / 16;
      auto sc = [&](int k) { return float(int8_t(b[192 + is + k])); };
      EXPECT_EQ(y[n * 128 + l], 0.5f * sc(0) * float((1 | (0 << 4)) - 32));
      EXPECT_EQ(y[n * 128 + l + 32], 0.5f * sc(2) * float((1 | (1 << 4)) - 32));
      EXPECT_EQ(y[n * 128 + l + 64], 0.5f * sc(4) * float((2 | (2 << 4)) - 32));
      EXPECT_EQ(y[n * 128 + l + 96], 0.5f * sc(6) * float((2 | (3 << 4)) - 32));
    }
  }
}

TEST(GgufQuants, DenseTypes) {
  std::vector<uint8_t> b(6);
  put_half(b, 0, 1.5f);
  uint16_t bf = f32_to_bf16(-2.0f);
  std::memcpy(b.data() + 2, &bf, 2);
  float f;
  dequantize_row(kF16, b.data(), &f, 1);
  EXPECT_EQ(f, 1.5f);
  dequantize_row(kBF16, b.data() + 2, &f, 1);
  EXPECT_EQ(f, -2.0f);
}

TEST(GgufQuants, ReferenceQuantizersRoundTrip) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> x(256);
  for (auto& v : x) v = nd(rng);
  for (uint32_t t : {kQ8_0, kQ4_0}) {
    std::vector<uint8_t> q(row_bytes(t, 256));
    quantize_row(t, x.data(), q.data(), 256);
    auto y = deq(t, q, 256);
    for (int b = 0; b < 8; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      // Q8_0 rounds to the nearest step; Q4_0 (levels -8..7 of d = max / -8) may clip the
      // side opposite the extreme by one more step.
      const float tol = t == kQ8_0 ? amax / 127 * 0.51f : amax / 8 * 1.01f;
      for (int j = 0; j < 32; ++j) EXPECT_LE(std::fabs(y[b * 32 + j] - x[b * 32 + j]), tol + 1e-3f);
    }
  }
  // Q4_1 / Q5_1 (levels min + k d, d = (max - min) / 15 or 31, rounded to the nearest) and
  // Q5_0 (levels -16..15 of d = max / -16).
  for (uint32_t t : {kQ4_1, kQ5_0, kQ5_1}) {
    std::vector<uint8_t> q(row_bytes(t, 256));
    quantize_row(t, x.data(), q.data(), 256);
    auto y = deq(t, q, 256);
    for (int b = 0; b < 8; ++b) {
      float amax = 0, mn = x[size_t(b * 32)], mx = mn;
      for (int j = 0; j < 32; ++j) {
        const float v = x[size_t(b * 32 + j)];
        amax = std::max(amax, std::fabs(v)), mn = std::min(mn, v), mx = std::max(mx, v);
      }
      const float tol = t == kQ5_0 ? amax / 16 * 1.01f : (mx - mn) / (t == kQ4_1 ? 15 : 31) * 0.51f;
      for (int j = 0; j < 32; ++j) EXPECT_LE(std::fabs(y[b * 32 + j] - x[b * 32 + j]), tol + 2e-3f) << t;
    }
  }
  // Q4_0 and Q5_0 keep the signed extreme exactly representable (d = max / -8, -16), Q4_1 /
  // Q5_1 the minimum (m = min); values on the levels come back exactly.
  std::vector<float> z(32, 0.0f);
  z[3] = -4.0f;
  std::vector<uint8_t> q(18);
  quantize_row(kQ4_0, z.data(), q.data(), 32);
  EXPECT_EQ(deq(kQ4_0, q, 32)[3], -4.0f);
  for (uint32_t t : {kQ4_1, kQ5_0, kQ5_1}) {
    const int levels = t == kQ4_1 ? 16 : 32;
    std::vector<float> v(32);
    for (int j = 0; j < 32; ++j) v[size_t(j)] = t == kQ5_0 ? -0.25f * float(j % 32 - 16) : -1.0f + 0.5f * float(j % levels);
    std::vector<uint8_t> qb(block_bytes(t));
    quantize_row(t, v.data(), qb.data(), 32);
    EXPECT_EQ(deq(t, qb, 32), v) << t;
  }
  EXPECT_ANY_THROW(quantize_row(kQ4_K, x.data(), q.data(), 256));
}

TEST(GgufQuants, PackedMatmulMatchesDequantized) {
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0, 1);
  const int64_t N = 37;
  // AVX2: M < 16 runs the decode GEMV, larger M the int8 panel GEMM. Without AVX2,
  // M >= 64 runs the dequantize-into-panels f32 GEMM (K = 576: a 512-column K block plus
  // a tail).
  const std::pair<int64_t, int64_t> shapes[] = {{1, 256}, {3, 256}, {70, 256}, {70, 576}};
  for (uint32_t t : {kQ8_0, kQ4_0}) {
    for (auto [M, K] : shapes) {
      std::vector<float> w(static_cast<size_t>(N * K)), x(static_cast<size_t>(M * K)), bias(static_cast<size_t>(N));
      for (auto& v : w) v = nd(rng);
      for (auto& v : x) v = nd(rng);
      for (auto& v : bias) v = nd(rng);
      const size_t rb = row_bytes(t, K);
      std::vector<uint8_t> packed(rb * size_t(N));
      for (int64_t r = 0; r < N; ++r) {
        quantize_row(t, w.data() + r * K, packed.data() + r * rb, K);
      }
      std::vector<float> y(static_cast<size_t>(M * N));
      matmul_packed(t, x.data(), M, K, packed.data(), rb, N, bias.data(), y.data());
      std::vector<float> row(static_cast<size_t>(K));
      for (int64_t r = 0; r < N; ++r) {
        dequantize_row(t, packed.data() + r * rb, row.data(), K);
        for (int64_t m = 0; m < M; ++m) {
          double ref = bias[size_t(r)], mag = 0;
          for (int64_t k = 0; k < K; ++k) {
            ref += double(row[size_t(k)]) * x[size_t(m * K + k)];
            mag += std::fabs(double(row[size_t(k)]) * x[size_t(m * K + k)]);
          }
          // Activations are quantized to 8 bits per block of 32: error ~ 1% of sum |w x|.
          EXPECT_NEAR(y[size_t(m * N + r)], ref, 0.01 * mag + 1e-4) << "type " << t << " row " << r;
        }
      }
    }
  }
  EXPECT_TRUE(std::string(matmul_isa()) == "avx512-vnni" || std::string(matmul_isa()) == "avx2" ||
              std::string(matmul_isa()) == "scalar");
}

// The int8 kernels (AVX2: the decode GEMV below 16 rows of x, the panel GEMM from 16)
// against a scalar model of the same arithmetic: x quantized to int8 per block of 32
// (d = amax / 127, round to nearest even), exact integer block dot products, f32 scales
// d_w * d_x. Only the order of the f32 sums differs, so the tolerance is tight. Covers
// odd row counts (groups / panels of 8 with a tail), 1..4-row tiles with a remainder,
// a single block, and rows at an odd byte stride.
TEST(GgufQuants, PackedDecodeKernelMatchesIntegerReference) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0, 1);
  auto qx = [](const float* x, int64_t K, std::vector<int8_t>& q, std::vector<float>& d) {
    q.resize(size_t(K));
    d.resize(size_t(K / 32));
    for (int64_t b = 0; b < K / 32; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
      d[size_t(b)] = db;
      for (int j = 0; j < 32; ++j) q[size_t(b * 32 + j)] = int8_t(std::nearbyintf(x[b * 32 + j] * id));
    }
  };
  const Case cases[] = {{1, 32, 1, 0},  {1, 64, 7, 0},   {1, 1024, 37, 0}, {2, 96, 8, 3},  {3, 160, 9, 0},
                        {4, 256, 16, 1}, {5, 128, 17, 0}, {9, 64, 23, 5},   {33, 96, 15, 0}, {63, 32, 41, 2},
                        {16, 64, 8, 0},  {130, 1024, 19, 0}};
  for (uint32_t t : {kQ8_0, kQ4_0}) {
    const size_t bb = t == kQ8_0 ? 34 : 18;
    for (const Case& c : cases) {
      const size_t rb = row_bytes(t, c.K), stride = rb + c.pad;
      std::vector<float> w(size_t(c.N * c.K)), x(size_t(c.M * c.K));
      for (auto& v : w) v = nd(rng);
      for (auto& v : x) v = nd(rng);
      x[0] = 0.0f;  // a block with a zero in it; below, a block of all zeros
      if (c.K >= 64)
        for (int j = 0; j < 32; ++j) x[size_t(32 + j)] = 0.0f;
      std::vector<uint8_t> packed(stride * size_t(c.N), 0xAB);
      for (int64_t r = 0; r < c.N; ++r) {
        quantize_row(t, w.data() + r * c.K, packed.data() + r * stride, c.K);
      }
      if (t == kQ8_0) packed[2] = 0x80;  // an int8 weight of -128 (ggml never writes it, but it is valid)
      std::vector<float> y(size_t(c.M * c.N));
      matmul_packed(t, x.data(), c.M, c.K, packed.data(), stride, c.N, nullptr, y.data());
      std::vector<int8_t> q;
      std::vector<float> d;
      for (int64_t m = 0; m < c.M; ++m) {
        qx(x.data() + m * c.K, c.K, q, d);
        for (int64_t r = 0; r < c.N; ++r) {
          double ref = 0, mag = 0;
          if (std::string(matmul_isa()) == "scalar" && c.M >= 64) {
            // The scalar build: prompt-sized M dequantizes the weights into the f32 GEMM (x
            // stays f32): the reference is the dequantized product.
            std::vector<float> wr(size_t(c.K));
            dequantize_row(t, packed.data() + size_t(r) * stride, wr.data(), c.K);
            for (int64_t k = 0; k < c.K; ++k) {
              ref += double(wr[size_t(k)]) * x[size_t(m * c.K + k)];
              mag += std::fabs(double(wr[size_t(k)]) * x[size_t(m * c.K + k)]);
            }
            ASSERT_NEAR(y[size_t(m * c.N + r)], ref, 1e-5 * mag + 1e-7)
                << "type " << t << " M " << c.M << " K " << c.K << " N " << c.N << " m " << m << " row " << r;
            continue;
          }
          for (int64_t b = 0; b < c.K / 32; ++b) {
            const uint8_t* blk = packed.data() + size_t(r) * stride + size_t(b) * bb;
            uint16_t h;
            std::memcpy(&h, blk, 2);
            int32_t s = 0;
            for (int j = 0; j < 32; ++j) {
              const int wq = t == kQ8_0 ? int(int8_t(blk[2 + j])) : int((j < 16 ? blk[2 + j] & 0xF : blk[2 + j - 16] >> 4)) - 8;
              s += wq * q[size_t(b * 32 + j)];
            }
            const double term = double(float(s) * (f16_to_f32(h) * d[size_t(b)]));
            ref += term;
            mag += std::fabs(term);
          }
          ASSERT_NEAR(y[size_t(m * c.N + r)], ref, 2e-6 * mag + 1e-7)
              << "type " << t << " M " << c.M << " K " << c.K << " N " << c.N << " m " << m << " row " << r;
        }
      }
    }
  }
}

// Rows of random blocks (the K-quants, Q4_1, Q5_0, Q5_1), any bytes but the f16 scales: Q4_K's
// / Q5_K's d and dmin (the first 4 bytes), Q4_1's / Q5_1's d and m (likewise), Q5_0's d (its
// first 2), Q2_K's d and dmin (its last 4) and Q6_K's / Q3_K's d (their last 2) in [2^-9,
// 2^-5). Every other byte pattern is valid.
std::vector<uint8_t> random_blocks(uint32_t t, int64_t N, int64_t K, size_t stride, std::mt19937& rng) {
  std::vector<uint8_t> packed(stride * size_t(N), 0xCD);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> mag(1.0f / 512, 1.0f / 32);
  const size_t bb = block_bytes(t);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t b = 0; b < K / int64_t(block_elems(t)); ++b) {
      uint8_t* blk = packed.data() + size_t(r) * stride + size_t(b) * bb;
      for (size_t i = 0; i < bb; ++i) blk[i] = uint8_t(byte(rng));
      const uint16_t d = f32_to_f16(mag(rng)), dm = f32_to_f16(mag(rng));
      const bool d_only = t == kQ6_K || t == kQ3_K || t == kQ5_0;
      const size_t at = t == kQ6_K || t == kQ3_K ? bb - 2 : t == kQ2_K ? bb - 4 : 0;  // d, then dmin
      std::memcpy(blk + at, &d, 2);
      if (!d_only) std::memcpy(blk + at + 2, &dm, 2);
    }
  return packed;
}

// The scalar model of the packed kernels' arithmetic for one row and one row of x: x to
// int8 per block of 32 (d = amax / 127, round to nearest even), exact integer sums a
// sub-block, then f32 scales: Q4_K / Q5_K y += (d sc) dx isum - (dmin m) dx sum(xq) per 32
// values; Q6_K y += (d sc) dx (isum - 32 sum(xq)) per 16, Q3_K y += (d (sc - 32)) dx (isum -
// 4 sum(xq)) per 16 (isum over the unsigned values, so the sums are of q - offset), Q2_K
// y += (d sc) dx isum - (dmin m) dx sum(xq) per 16; Q4_1 / Q5_1 y += d dx isum + m dx
// sum(xq) and Q5_0 y += d dx (isum - 16 sum(xq)) per 32. ref and sum |terms| into mag.
void block_model(uint32_t t, const uint8_t* row, const float* xm, int64_t K, double& ref, double& mag) {
  for (int64_t c32 = 0; c32 < K / 32; ++c32) {
    const float* xb = xm + c32 * 32;
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float dx = amax / 127.0f, id = dx != 0.0f ? 1.0f / dx : 0.0f;
    int xq[32];
    for (int j = 0; j < 32; ++j) xq[j] = int(std::nearbyintf(xb[j] * id));
    const int c = int(c32 % 8);
    if (block_elems(t) == 32) {
      // d (, m), Q5_x: qh (bit j: value j's 16), then qs (byte j: value j low, j + 16 high)
      const bool with_min = t != kQ5_0, q5 = t != kQ4_1;
      const size_t bb = block_bytes(t);
      const uint8_t* blk = row + size_t(c32) * bb;
      uint16_t hd, hm = 0;
      uint32_t qh = 0;
      std::memcpy(&hd, blk, 2);
      if (with_min) std::memcpy(&hm, blk + 2, 2);
      if (q5) std::memcpy(&qh, blk + (with_min ? 4 : 2), 4);
      int32_t isum = 0, xsum = 0;
      for (int j = 0; j < 32; ++j) {
        const uint8_t byte = blk[bb - 16 + size_t(j % 16)];
        const int q = (j < 16 ? byte & 0xF : byte >> 4) | int((qh >> j) & 1) << 4;
        isum += (q - (t == kQ5_0 ? 16 : 0)) * xq[j];
        xsum += xq[j];
      }
      const double t1 = double(float(isum) * (f16_to_f32(hd) * dx));
      const double t2 = double(f16_to_f32(hm) * (dx * float(xsum)));
      ref += t1 + t2;
      mag += std::fabs(t1) + std::fabs(t2);
    } else if (t == kQ4_K || t == kQ5_K) {
      const bool q5 = t == kQ5_K;
      const uint8_t* blk = row + size_t(c32 / 8) * (q5 ? 176 : 144);
      const uint8_t* q = blk + 4;  // ggml's get_scale_min_k4
      const int sc = c < 4 ? q[c] & 63 : (q[c + 4] & 0xF) | ((q[c - 4] >> 6) << 4);
      const int mn = c < 4 ? q[c + 4] & 63 : (q[c + 4] >> 4) | ((q[c] >> 6) << 4);
      uint16_t hd, hm;
      std::memcpy(&hd, blk, 2);
      std::memcpy(&hm, blk + 2, 2);
      int32_t isum = 0, xsum = 0;
      for (int j = 0; j < 32; ++j) {
        const uint8_t byte = blk[(q5 ? 48 : 16) + 32 * (c / 2) + j];
        const int hb = q5 ? ((blk[16 + j] >> c) & 1) << 4 : 0;  // Q5_K: bit c of qh byte j
        isum += int((c % 2 ? byte >> 4 : byte & 0xF) | hb) * xq[j];
        xsum += xq[j];
      }
      const double t1 = double(float(isum) * ((f16_to_f32(hd) * float(sc)) * dx));
      const double t2 = double((f16_to_f32(hm) * float(mn)) * (dx * float(xsum)));
      ref += t1 - t2;
      mag += std::fabs(t1) + std::fabs(t2);
    } else if (t == kQ2_K) {
      // scales[16] (scale: low nibble, min: high), qs[64], d, dmin: chunk c = 4 n + j, value
      // l: bits 2 j of qs byte 32 n + l; sub-blocks 2 c and 2 c + 1.
      const uint8_t* blk = row + size_t(c32 / 8) * 84;
      uint16_t hd, hm;
      std::memcpy(&hd, blk + 80, 2);
      std::memcpy(&hm, blk + 82, 2);
      for (int half = 0; half < 2; ++half) {
        const uint8_t s = blk[2 * c + half];
        int32_t isum = 0, xsum = 0;
        for (int l = 16 * half; l < 16 * half + 16; ++l) {
          isum += ((blk[16 + 32 * (c / 4) + l] >> (2 * (c % 4))) & 3) * xq[l];
          xsum += xq[l];
        }
        const double t1 = double(float(isum) * ((f16_to_f32(hd) * float(s & 0xF)) * dx));
        const double t2 = double((f16_to_f32(hm) * float(s >> 4)) * (dx * float(xsum)));
        ref += t1 - t2;
        mag += std::fabs(t1) + std::fabs(t2);
      }
    } else if (t == kQ3_K) {
      // hmask[32], qs[64], scales[12], d: chunk c = 4 n + j, value l: bits 2 j of qs byte
      // 32 n + l, bit c of hmask byte l as 4; 6-bit scales, low nibbles in bytes 0..7, high
      // pairs in 8..11, less 32.
      const uint8_t* blk = row + size_t(c32 / 8) * 110;
      const uint8_t* s = blk + 96;
      uint16_t hd;
      std::memcpy(&hd, blk + 108, 2);
      for (int half = 0; half < 2; ++half) {
        const int i = 2 * c + half;
        const int sc = ((i < 8 ? s[i] & 0xF : s[i - 8] >> 4) | (((s[8 + i % 4] >> (2 * (i / 4))) & 3) << 4)) - 32;
        int32_t isum = 0;
        for (int l = 16 * half; l < 16 * half + 16; ++l) {
          const int q3 = ((blk[32 + 32 * (c / 4) + l] >> (2 * (c % 4))) & 3) | (((blk[l] >> c) & 1) << 2);
          isum += (q3 - 4) * xq[l];
        }
        const double term = double(float(isum) * ((f16_to_f32(hd) * float(sc)) * dx));
        ref += term;
        mag += std::fabs(term);
      }
    } else {
      const uint8_t* blk = row + size_t(c32 / 8) * 210;
      uint16_t hd;
      std::memcpy(&hd, blk + 208, 2);
      const int n = c / 4, k = c % 4;
      for (int half = 0; half < 2; ++half) {
        int32_t isum = 0;
        for (int j = 16 * half; j < 16 * half + 16; ++j) {
          const uint8_t lo = blk[64 * n + 32 * (k & 1) + j], hi = blk[128 + 32 * n + j];
          const int q = ((k >> 1 ? lo >> 4 : lo) & 0xF) | (((hi >> (2 * k)) & 3) << 4);
          isum += (q - 32) * xq[j];
        }
        const double term = double(float(isum) * ((f16_to_f32(hd) * float(int8_t(blk[192 + 2 * c + half]))) * dx));
        ref += term;
        mag += std::fabs(term);
      }
    }
  }
}

// The formats without a row-layout kernel (K-quants, Q4_1, Q5_0, Q5_1) kept packed,
// decode-sized M (the x8 kernels: a group repacked on the fly when the weight has no copy)
// and prompt-sized M (the int8 panel GEMM), against a scalar model of their arithmetic
// (block_model; the scalar build's f32 GEMM from 64 rows: against the dequantized
// product). Odd row counts and strides, tiles with a remainder, biases, and the largest
// sums each format can make.
TEST(GgufQuants, BlockFormatsPackedMatchTheirReferences) {
  std::mt19937 rng(41);
  std::normal_distribution<float> nd(0, 1);
  // (the 32-value formats take every case, the K-quants those of whole 256-value blocks)
  const Case cases[] = {{1, 256, 1, 0},   {1, 768, 37, 3}, {3, 512, 9, 0},  {5, 256, 17, 1},  {15, 1024, 8, 0},
                        {16, 256, 23, 0}, {20, 768, 13, 2}, {70, 512, 41, 0}, {1, 32, 5, 1},  {4, 96, 9, 0},
                        {17, 160, 11, 3}, {64, 96, 19, 0}};
  for (uint32_t t : {kQ4_1, kQ5_0, kQ5_1, kQ2_K, kQ3_K, kQ4_K, kQ5_K, kQ6_K})
  for (const Case& c : cases) {
    if (c.K % int64_t(block_elems(t)) != 0) continue;
    const size_t stride = row_bytes(t, c.K) + c.pad;
    std::vector<uint8_t> packed = random_blocks(t, c.N, c.K, stride, rng);
    std::vector<float> x(size_t(c.M * c.K)), bias(size_t(c.N));
    for (auto& v : x) v = nd(rng);
    for (auto& v : bias) v = nd(rng);
    for (int64_t j = 32; j < std::min<int64_t>(64, c.M * c.K); ++j) x[size_t(j)] = 0.0f;  // an all-zero block of x
    std::vector<float> y(size_t(c.M * c.N), std::nanf(""));
    matmul_packed(t, x.data(), c.M, c.K, packed.data(), stride, c.N, bias.data(), y.data());
    // The scalar build runs prompt-sized M (>= 64) as the f32 GEMM on dequantized weights.
    const bool exact_model = c.M < 64 || std::string(matmul_isa()) != "scalar";
    for (int64_t m = 0; m < c.M; ++m) {
      const float* xm = x.data() + m * c.K;
      for (int64_t r = 0; r < c.N; ++r) {
        const uint8_t* row = packed.data() + size_t(r) * stride;
        double ref = bias[size_t(r)], mag = std::fabs(bias[size_t(r)]);
        if (exact_model) {
          block_model(t, row, xm, c.K, ref, mag);
          ASSERT_NEAR(y[size_t(m * c.N + r)], ref, 2e-6 * mag + 1e-6)
              << "type " << t << " M " << c.M << " K " << c.K << " N " << c.N << " m " << m << " row " << r;
        } else {
          std::vector<float> wr(size_t(c.K));
          dequantize_row(t, row, wr.data(), c.K);
          for (int64_t k = 0; k < c.K; ++k) {
            ref += double(wr[size_t(k)]) * xm[k];
            mag += std::fabs(double(wr[size_t(k)]) * xm[k]);
          }
          ASSERT_NEAR(y[size_t(m * c.N + r)], ref, 1e-5 * mag + 1e-6)
              << "M " << c.M << " K " << c.K << " N " << c.N << " m " << m << " row " << r;
        }
      }
    }
  }
  // The largest sums: every Q5_K / Q5_1 / Q5_0 value 31 (and Q4_K / Q4_1 15, Q6_K 63, Q3_K 7,
  // Q2_K 3) against x of one sign at 127 after rounding, for the decode kernel and the GEMM
  // (AVX2 sums pairs in i16); and Q5_0's smallest (0, worth -16).
  for (uint32_t t : {kQ4_1, kQ5_0, kQ5_1, kQ2_K, kQ3_K, kQ4_K, kQ5_K, kQ6_K})
    for (int fill : {0xFF, 0x00})
    for (int64_t M : {int64_t(1), int64_t(20)}) {
      if (fill == 0 && t != kQ5_0) continue;
      const int64_t K = 512, N = 9;
      const size_t rb = row_bytes(t, K);
      std::vector<uint8_t> packed = random_blocks(t, N, K, rb, rng);
      for (int64_t r = 0; r < N; ++r)
        for (int64_t b = 0; b < K / int64_t(block_elems(t)); ++b) {
          uint8_t* blk = packed.data() + size_t(r) * rb + size_t(b) * block_bytes(t);
          if (t == kQ6_K) std::memset(blk, fill, 192);                 // ql, qh
          else if (t == kQ3_K) std::memset(blk, fill, 96);             // hmask, qs
          else if (t == kQ2_K) std::memset(blk + 16, fill, 64);        // qs
          else if (t == kQ5_0) std::memset(blk + 2, fill, 20);         // qh, qs
          else if (t == kQ4_1 || t == kQ5_1) std::memset(blk + 4, fill, block_bytes(t) - 4);  // (qh,) qs
          else std::memset(blk + 16, fill, t == kQ5_K ? 160 : 128);    // (qh,) qs
        }
      std::vector<float> xe(size_t(M * K), 1.0f), ye(size_t(M * N));
      matmul_packed(t, xe.data(), M, K, packed.data(), rb, N, nullptr, ye.data());
      for (int64_t m = 0; m < M; ++m)
        for (int64_t r = 0; r < N; ++r) {
          double ref = 0, mag = 0;
          if (std::string(matmul_isa()) == "scalar" && M >= 64) continue;
          block_model(t, packed.data() + size_t(r) * rb, xe.data() + m * K, K, ref, mag);
          ASSERT_NEAR(ye[size_t(m * N + r)], ref, 2e-6 * mag + 1e-6)
              << "extreme type " << t << " fill " << fill << " M " << M << " row " << r;
        }
    }
  // K must hold whole 256-value blocks.
  std::vector<float> x(320), y(1);
  std::vector<uint8_t> w(512);
  EXPECT_ANY_THROW(matmul_packed(kQ4_K, x.data(), 1, 320, w.data(), 180, 1, nullptr, y.data()));
  EXPECT_ANY_THROW(matmul_packed(kQ6_K, x.data(), 1, 320, w.data(), 263, 1, nullptr, y.data()));
  EXPECT_ANY_THROW(matmul_packed(kQ5_K, x.data(), 1, 320, w.data(), 220, 1, nullptr, y.data()));
  EXPECT_ANY_THROW(matmul_packed(kQ3_K, x.data(), 1, 320, w.data(), 138, 1, nullptr, y.data()));
  EXPECT_ANY_THROW(matmul_packed(kQ2_K, x.data(), 1, 320, w.data(), 105, 1, nullptr, y.data()));
}

// Large enough that the rows are split over the thread pool in chunks pulled from a
// shared counter (cpu::parallel_dynamic): every row is computed once and right.
TEST(GgufQuants, PackedKernelsSplitOverThreads) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0, 1);
  const int64_t N = 2051, K = 512;
  for (uint32_t t : {kQ8_0, kQ4_0}) {
    const size_t rb = row_bytes(t, K);
    std::vector<uint8_t> packed(rb * size_t(N));
    std::vector<float> w(static_cast<size_t>(K));
    for (int64_t r = 0; r < N; ++r) {
      for (auto& v : w) v = nd(rng);
      quantize_row(t, w.data(), packed.data() + size_t(r) * rb, K);
    }
    for (int64_t M : {int64_t(1), int64_t(5), int64_t(20)}) {
      std::vector<float> x(static_cast<size_t>(M * K)), y(static_cast<size_t>(M * N), std::nanf("")),
          row(static_cast<size_t>(K));
      for (auto& v : x) v = nd(rng);
      matmul_packed(t, x.data(), M, K, packed.data(), rb, N, nullptr, y.data());
      for (int64_t r = 0; r < N; ++r) {
        dequantize_row(t, packed.data() + size_t(r) * rb, row.data(), K);
        for (int64_t m = 0; m < M; ++m) {
          double ref = 0, mag = 0;
          for (int64_t k = 0; k < K; ++k) {
            ref += double(row[size_t(k)]) * x[size_t(m * K + k)];
            mag += std::fabs(double(row[size_t(k)]) * x[size_t(m * K + k)]);
          }
          ASSERT_NEAR(y[size_t(m * N + r)], ref, 0.01 * mag + 1e-4) << "type " << t << " M " << M << " row " << r;
        }
      }
    }
  }
}

// The x8 layout (decode-time repacking): the GEMV on the repacked copy gives exactly the
// row-layout kernel's results (same integer block sums, same float steps) on odd row
// counts (a padded last group), 1..15 rows of x, rows at an odd stride, a bias, and a
// weight of -128 in Q8_0.
std::vector<uint8_t> random_packed(uint32_t t, int64_t N, int64_t K, size_t stride, std::mt19937& rng) {
  if (t != kQ8_0 && t != kQ4_0) return random_blocks(t, N, K, stride, rng);
  std::normal_distribution<float> nd(0, 1);
  std::vector<uint8_t> packed(stride * size_t(N), 0xCD);
  std::vector<float> w(static_cast<size_t>(K));
  for (int64_t r = 0; r < N; ++r) {
    for (auto& v : w) v = nd(rng);
    quantize_row(t, w.data(), packed.data() + size_t(r) * stride, K);
  }
  if (t == kQ8_0) packed[2] = 0x80;
  return packed;
}

TEST(GgufQuants, X8LayoutMatchesRowLayoutExactly) {
  std::mt19937 rng(23);
  std::normal_distribution<float> nd(0, 1);
  const Case cases[] = {{1, 32, 1, 0},  {1, 64, 7, 3},    {1, 1024, 37, 0}, {2, 96, 8, 0},  {3, 160, 9, 1},
                        {4, 256, 16, 0}, {5, 128, 17, 2},  {7, 3072, 13, 0}, {9, 64, 23, 5}, {15, 96, 41, 0},
                        {1, 512, 2051, 0}, {4, 1024, 777, 0}};
  for (uint32_t t : {kQ8_0, kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ2_K, kQ3_K, kQ4_K, kQ5_K, kQ6_K}) {
    for (const Case& c : cases) {
      if (c.K % int64_t(block_elems(t)) != 0) continue;
      const size_t stride = row_bytes(t, c.K) + c.pad;
      std::vector<uint8_t> packed = random_packed(t, c.N, c.K, stride, rng);
      std::vector<uint8_t> x8(x8_bytes(t, c.N, c.K));
      // Q4_K: d, dmin and the unpacked scales and mins take 160 bytes of 1,184 a block of 8
      // rows (Q5_K: 1,440 with its high bits); Q3_K's scales unpacked to bytes 912. The
      // others: the file's bytes (Q4_1 / Q5_0 / Q5_1: d, m and qh by row, then the quants).
      const size_t blocks = size_t(c.K / 256);
      const size_t per_group = t == kQ4_K   ? blocks * 1184
                               : t == kQ5_K ? blocks * 1440
                               : t == kQ3_K ? blocks * 912
                                            : 8 * row_bytes(t, c.K);
      ASSERT_EQ(x8.size(), size_t((c.N + 7) / 8) * per_group);
      repack_x8(t, packed.data(), stride, c.N, c.K, x8.data());
      std::vector<float> x(size_t(c.M * c.K)), bias(size_t(c.N));
      for (auto& v : x) v = nd(rng);
      for (auto& v : bias) v = nd(rng);
      for (int64_t j = 0; j < 32; ++j) x[size_t(j)] = 0.0f;  // an all-zero block
      for (const float* b : {static_cast<const float*>(nullptr), static_cast<const float*>(bias.data())}) {
        std::vector<float> y_rows(size_t(c.M * c.N), std::nanf("")), y_x8(size_t(c.M * c.N), std::nanf(""));
        matmul_packed(t, x.data(), c.M, c.K, packed.data(), stride, c.N, b, y_rows.data());
        matmul_x8(t, x.data(), c.M, c.K, x8.data(), c.N, b, y_x8.data());
        for (size_t i = 0; i < y_rows.size(); ++i) {
          if (std::string(matmul_isa()) != "scalar")
            ASSERT_EQ(y_rows[i], y_x8[i]) << "type " << t << " M " << c.M << " K " << c.K << " N " << c.N << " at " << i;
          else
            ASSERT_NEAR(y_rows[i], y_x8[i], 1e-4 * (1 + std::fabs(y_rows[i])));
        }
      }
    }
  }
}

// A weight registered through repackable_owner gets its x8 copy on the first decode-sized
// product (prefill-sized ones keep the row layout), with the same results; the copy goes
// when the owner does. Row views of it from a multiple of 8 rows on (fewer rows at the same
// address, later rows) use the same copy, views from other rows the row layout.
TEST(GgufQuants, RegisteredWeightsGetAnX8CopyForTheirLifetime) {
  if (!repack_enabled()) GTEST_SKIP() << "MLXCEL_GGUF_REPACK=0";
  std::mt19937 rng(29);
  std::normal_distribution<float> nd(0, 1);
  const int64_t N = 203, K = 256;
  for (uint32_t t : {kQ8_0, kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ2_K, kQ3_K, kQ4_K, kQ5_K, kQ6_K}) {
    const size_t rb = row_bytes(t, K);
    auto bytes = std::make_shared<std::vector<uint8_t>>(random_packed(t, N, K, rb, rng));
    const uint8_t* w = bytes->data();
    std::vector<float> x(size_t(16 * K));
    for (auto& v : x) v = nd(rng);
    std::vector<float> ref1(static_cast<size_t>(N)), ref16(static_cast<size_t>(16 * N)), y(static_cast<size_t>(16 * N));
    matmul_packed(t, x.data(), 1, K, w, rb, N, nullptr, ref1.data());
    matmul_packed(t, x.data(), 16, K, w, rb, N, nullptr, ref16.data());
    const size_t before = repacked_bytes_in_use();
    std::shared_ptr<void> owner = repackable_owner(w, bytes->size(), bytes);
    matmul_packed(t, x.data(), 16, K, w, rb, N, nullptr, y.data());  // prefill-sized: no copy
    EXPECT_EQ(repacked_bytes_in_use(), before);
    EXPECT_EQ(y, ref16);
    // The first product is a view of the first N - 9 rows: the copy holds all N.
    matmul_packed(t, x.data(), 1, K, w, rb, N - 9, nullptr, y.data());
    EXPECT_EQ(repacked_bytes_in_use(), before + x8_bytes(t, N, K));
    EXPECT_TRUE(std::equal(ref1.begin(), ref1.end() - 9, y.begin()));
    matmul_packed(t, x.data(), 1, K, w, rb, N, nullptr, y.data());
    EXPECT_TRUE(std::equal(ref1.begin(), ref1.end(), y.begin()));
    // Views from rows 16 (its groups in the copy) and 13 (the row layout), 2 rows of x.
    std::vector<float> ref2(size_t(2 * N));
    matmul_packed(t, x.data(), 2, K, w, rb, N, nullptr, ref2.data());
    for (int64_t r0 : {int64_t(16), int64_t(13)}) {
      const int64_t n = N - r0 - 5;
      std::vector<float> yv(size_t(2 * n));
      matmul_packed(t, x.data(), 2, K, w + size_t(r0) * rb, rb, n, nullptr, yv.data());
      for (int64_t m = 0; m < 2; ++m)
        for (int64_t r = 0; r < n; ++r) ASSERT_EQ(yv[size_t(m * n + r)], ref2[size_t(m * N + r0 + r)]) << t << " " << r0;
    }
    EXPECT_EQ(repacked_bytes_in_use(), before + x8_bytes(t, N, K));
    owner.reset();
    EXPECT_EQ(repacked_bytes_in_use(), before);
    EXPECT_EQ(bytes.use_count(), 1);
  }
}

// Several products of one x in one region (q/k/v, gate/up): bit for bit the separate
// calls' results, with mixed types, odd row counts, biases, two products registered (x8
// copies) and the others not, at decode and at prefill sizes.
TEST(GgufQuants, MultiProductMatchesSeparateCalls) {
  std::mt19937 rng(31);
  std::normal_distribution<float> nd(0, 1);
  const int64_t K = 320;
  constexpr int kN = 5;
  const uint32_t types[kN] = {kQ4_0, kQ8_0, kQ4_0, kQ5_1, kQ4_1};
  const int64_t rows_of[kN] = {37, 8, 203, 21, 64};
  std::vector<std::shared_ptr<std::vector<uint8_t>>> w;
  for (int i = 0; i < kN; ++i)
    w.push_back(std::make_shared<std::vector<uint8_t>>(random_packed(types[i], rows_of[i], K, row_bytes(types[i], K), rng)));
  std::shared_ptr<void> owner = repackable_owner(w[2]->data(), w[2]->size(), w[2]);
  std::shared_ptr<void> owner4 = repackable_owner(w[4]->data(), w[4]->size(), w[4]);
  std::vector<float> bias(203);
  for (auto& v : bias) v = nd(rng);
  for (int64_t M : {int64_t(1), int64_t(3), int64_t(15), int64_t(17)}) {
    std::vector<float> x(size_t(M * K));
    for (auto& v : x) v = nd(rng);
    std::vector<std::vector<float>> ref(kN), got(kN);
    PackedProduct ps[kN];
    for (int i = 0; i < kN; ++i) {
      ref[size_t(i)].assign(size_t(M * rows_of[i]), 0.0f);
      got[size_t(i)].assign(size_t(M * rows_of[i]), std::nanf(""));
      const float* b = i == 1 ? nullptr : bias.data();
      matmul_packed(types[i], x.data(), M, K, w[size_t(i)]->data(), row_bytes(types[i], K), rows_of[i], b,
                    ref[size_t(i)].data());
      ps[i] = {types[i], w[size_t(i)]->data(), row_bytes(types[i], K), rows_of[i], b, got[size_t(i)].data()};
    }
    matmul_packed_multi(x.data(), M, K, ps, kN);
    for (int i = 0; i < kN; ++i) EXPECT_EQ(got[size_t(i)], ref[size_t(i)]) << "M " << M << " product " << i;
  }
  PackedProduct none{};
  EXPECT_ANY_THROW(matmul_packed_multi(nullptr, 1, K, &none, 0));
}

// Threads racing on a registered weight's first decode-sized product: one makes the
// copy (outside the registry's lock), the others use the row layout meanwhile or the
// copy after; every result is the same.
TEST(GgufQuants, ConcurrentFirstUseOfARegisteredWeight) {
  std::mt19937 rng(37);
  std::normal_distribution<float> nd(0, 1);
  const int64_t N = 1031, K = 512;
  const size_t rb = row_bytes(kQ4_0, K);
  auto bytes = std::make_shared<std::vector<uint8_t>>(random_packed(kQ4_0, N, K, rb, rng));
  std::vector<float> x(static_cast<size_t>(K)), ref(static_cast<size_t>(N));
  for (auto& v : x) v = nd(rng);
  matmul_packed(kQ4_0, x.data(), 1, K, bytes->data(), rb, N, nullptr, ref.data());
  std::shared_ptr<void> owner = repackable_owner(bytes->data(), bytes->size(), bytes);
  std::vector<std::vector<float>> got(4, std::vector<float>(static_cast<size_t>(N)));
  std::vector<std::thread> th;
  for (size_t t = 0; t < got.size(); ++t)
    th.emplace_back([&, t] {
      for (int rep = 0; rep < 5; ++rep) matmul_packed(kQ4_0, x.data(), 1, K, bytes->data(), rb, N, nullptr, got[t].data());
    });
  for (auto& t : th) t.join();
  for (const auto& g : got) EXPECT_EQ(g, ref);
}

TEST(CpuParallel, DynamicCoversEveryItemOnce) {
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(1000), int64_t(100003)}) {
    for (int64_t chunk : {int64_t(1), int64_t(3), int64_t(64)}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      cpu::parallel_dynamic(n, chunk, 1 << 15, [&](int64_t b, int64_t e) {
        ASSERT_LE(e - b, chunk);
        for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "n " << n << " chunk " << chunk;
    }
  }
}

TEST(CpuParallel, GuidedCoversEveryItemOnceInShrinkingChunks) {
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(1000), int64_t(100003)}) {
    for (int64_t min_chunk : {int64_t(1), int64_t(3), int64_t(64)}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<int64_t> largest{0};
      cpu::parallel_guided(n, min_chunk, 1 << 15, [&](int64_t b, int64_t e) {
        ASSERT_LT(b, e);
        // Never more than half of what was left over the workers (at most n / 2 with two
        // or more), never less than min_chunk unless at the end.
        ASSERT_TRUE(e - b >= min_chunk || e == n) << b << ".." << e;
        int64_t l = largest.load();
        while (e - b > l && !largest.compare_exchange_weak(l, e - b)) {
        }
        for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "n " << n << " chunk " << min_chunk;
      if (ThreadPool::global().size() > 1 && n >= 1000) {
        EXPECT_LE(largest.load(), std::max(min_chunk, n / 2));
      }
    }
  }
}

// tests/gguf/data/quant_vectors.bin: random blocks of every format dequantized by
// llama.cpp's gguf-py (tools/gguf/make_quant_vectors.py). Bit-exact, except that gguf-py
// computes some products in a different order (K-quants: d * sc first), so allow 1 ulp-ish.
TEST(GgufQuants, MatchLlamaCppReferenceVectors) {
  std::ifstream in(std::string(MLXCEL_SOURCE_DIR) + "/tests/gguf/data/quant_vectors.bin", std::ios::binary);
  ASSERT_TRUE(in) << "missing tests/gguf/data/quant_vectors.bin";
  std::string buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = 0;
  int types = 0;
  while (pos + 12 <= buf.size()) {
    uint32_t hdr[3];
    std::memcpy(hdr, buf.data() + pos, 12);
    pos += 12;
    const uint32_t type = hdr[0], n = hdr[1], nbytes = hdr[2];
    ASSERT_LE(pos + nbytes + size_t(n) * 4, buf.size());
    ASSERT_EQ(row_bytes(type, n), nbytes) << "type " << type;
    std::vector<float> want(n), got(n);
    std::memcpy(want.data(), buf.data() + pos + nbytes, size_t(n) * 4);
    dequantize_row(type, reinterpret_cast<const uint8_t*>(buf.data() + pos), got.data(), n);
    for (uint32_t i = 0; i < n; ++i)
      ASSERT_NEAR(got[i], want[i], 1e-6f * std::max(1.0f, std::fabs(want[i]))) << "type " << type << " value " << i;
    pos += nbytes + size_t(n) * 4;
    ++types;
  }
  EXPECT_EQ(types, 10);
}

}  // namespace
}  // namespace mlxcel::gguf
