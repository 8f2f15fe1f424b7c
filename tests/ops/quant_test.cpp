// MLX affine quantization: packing, quantize/dequantize against MLX's algorithm,
// round trips, error bounds, qlinear (GEMV and GEMM paths) and qembedding.
#include <array>
#include <cmath>
#include <cstring>

#include "ops/fused.h"
#include "test_util.h"

namespace mlxcel {
namespace {

using optest::expect_error;
using optest::rand_vec;

struct QuantCase {
  DType dtype;
  int bits, group_size, n, k;
  std::vector<float> w;
  std::vector<uint32_t> packed;
  std::vector<float> scales, biases;
};

const QuantCase kMlxCases[] = {
#include "quant_reference.inc"
};

const int kBits[] = {2, 3, 4, 5, 6, 8};
const int kGroups[] = {32, 64, 128};

Tensor u32_tensor(const Shape& shape, const std::vector<uint32_t>& v) {
  Tensor t = Tensor::empty(shape, DType::u32);
  std::memcpy(t.raw(), v.data(), v.size() * 4);
  return t;
}

std::vector<uint32_t> u32_vector(const Tensor& t) {
  std::vector<uint32_t> v(size_t(t.numel()));
  std::memcpy(v.data(), t.raw(), v.size() * 4);
  return v;
}

// Values of an MLX packed row as MLX's CPU kernel reads them: 2/4/8 bits from each
// byte low bits first, 3/5/6 bits with the byte formulas of extract_bits() in
// mlx/backend/cpu/quantized.cpp (8 values per 3 or 5 bytes, 4 values per 3 bytes).
std::vector<uint32_t> mlx_extract(const uint8_t* w, int64_t k, int bits) {
  std::vector<uint32_t> out;
  while (int64_t(out.size()) < k) {
    if (bits == 3) {
      out.push_back(w[0] & 0x7);
      out.push_back((w[0] & 0x38) >> 3);
      out.push_back(((w[0] & 0xc0) >> 6) + ((w[1] & 0x1) << 2));
      out.push_back((w[1] & 0xe) >> 1);
      out.push_back((w[1] & 0x70) >> 4);
      out.push_back(((w[1] & 0x80) >> 7) + ((w[2] & 0x3) << 1));
      out.push_back((w[2] & 0x1c) >> 2);
      out.push_back((w[2] & 0xe0) >> 5);
      w += 3;
    } else if (bits == 5) {
      out.push_back(w[0] & 0x1f);
      out.push_back(((w[0] & 0xe0) >> 5) + ((w[1] & 0x3) << 3));
      out.push_back((w[1] & 0x7c) >> 2);
      out.push_back(((w[1] & 0x80) >> 7) + ((w[2] & 0xf) << 1));
      out.push_back(((w[2] & 0xf0) >> 4) + ((w[3] & 0x1) << 4));
      out.push_back((w[3] & 0x3e) >> 1);
      out.push_back(((w[3] & 0xc0) >> 6) + ((w[4] & 0x7) << 2));
      out.push_back((w[4] & 0xf8) >> 3);
      w += 5;
    } else if (bits == 6) {
      out.push_back(w[0] & 0x3f);
      out.push_back(((w[0] >> 6) & 0x03) + ((w[1] & 0x0f) << 2));
      out.push_back(((w[1] >> 4) & 0x0f) + ((w[2] & 0x03) << 4));
      out.push_back((w[2] >> 2) & 0x3f);
      w += 3;
    } else {
      uint32_t b = *w++;
      for (int p = 0; p < 8 / bits; ++p) {
        out.push_back(b & ((1u << bits) - 1));
        b >>= bits;
      }
    }
  }
  return out;
}

// A quantized weight with unit scales and zero biases, so dequantize() returns the codes.
QuantizedWeight unit_weight(const Tensor& packed, int bits, int gs, DType sdt = DType::f32) {
  QuantizedWeight q;
  q.spec = {QuantFormat::mlx_affine, bits, gs};
  q.packed = packed;
  const int64_t G = q.cols() / gs;
  q.scales = optest::make_tensor({packed.dim(0), G}, std::vector<float>(size_t(packed.dim(0) * G), 1.0f), sdt);
  q.biases = optest::make_tensor({packed.dim(0), G}, std::vector<float>(size_t(packed.dim(0) * G), 0.0f), sdt);
  return q;
}

TEST(QuantPacking, ThreeBitsByHand) {
  // One row of 32 three-bit values q[k] = k % 8. Value k sits at bits [3k, 3k + 3) of
  // the row's little-endian bit stream, so:
  //   word 0 = values 0..9 at bits 0..29 (0,1,2,...,7,0,1) and the low two bits of
  //            value 10 (= 2 = 0b010) at bits 30..31: bit 31 set  -> 0x88fac688
  //   word 1 = the high bit of value 10 (0) at bit 0, values 11..20 at bits 1..30, and
  //            the low bit of value 21 (= 5 = 0b101) at bit 31     -> 0xc688fac6
  //   word 2 = the two high bits of value 21 (0b10) at bits 0..1, values 22..31 at
  //            bits 2..31                                          -> 0xfac688fa
  const std::vector<uint32_t> words = {0x88fac688u, 0xc688fac6u, 0xfac688fau};
  Tensor d = ops::dequantize(unit_weight(u32_tensor({1, 3}, words), 3, 32));
  auto dv = d.to_f32_vector();
  for (int k = 0; k < 32; ++k) EXPECT_EQ(dv[size_t(k)], float(k % 8)) << k;
  // MLX's own byte decoding agrees.
  auto mlx = mlx_extract(reinterpret_cast<const uint8_t*>(words.data()), 32, 3);
  for (int k = 0; k < 32; ++k) EXPECT_EQ(mlx[size_t(k)], uint32_t(k % 8)) << k;
  // Quantizing k % 8 - 7 (edge -7, scale 1) gives the same codes and packs them back.
  std::vector<float> vals(32);
  for (int k = 0; k < 32; ++k) vals[size_t(k)] = float(k % 8) - 7.0f;  // min -7 is the larger extreme
  QuantizedWeight q = ops::quantize(Tensor::from_f32({1, 32}, vals), {QuantFormat::mlx_affine, 3, 32}, DType::f32);
  EXPECT_EQ(u32_vector(q.packed), words);
  EXPECT_EQ(q.scales.to_f32_vector()[0], 1.0f);
  EXPECT_EQ(q.biases.to_f32_vector()[0], -7.0f);
}

TEST(QuantPacking, DequantizeMatchesMlxByteLayout) {
  for (int bits : kBits) {
    const int64_t K = 128, N = 3;
    std::vector<uint32_t> words(size_t(N * K * bits / 32));
    std::mt19937 rng{uint32_t(bits)};
    for (auto& w : words) w = rng();
    Tensor d = ops::dequantize(unit_weight(u32_tensor({N, K * bits / 32}, words), bits, 32));
    auto dv = d.to_f32_vector();
    for (int64_t r = 0; r < N; ++r) {
      auto mlx = mlx_extract(reinterpret_cast<const uint8_t*>(words.data()) + r * K * bits / 8, K, bits);
      for (int64_t k = 0; k < K; ++k) ASSERT_EQ(dv[size_t(r * K + k)], float(mlx[size_t(k)])) << bits << " " << k;
    }
  }
}

TEST(Quantize, BitExactWithMlxReference) {
  for (const auto& c : kMlxCases) {
    SCOPED_TRACE(::testing::Message() << dtype_name(c.dtype) << " q" << c.bits << " g" << c.group_size);
    Tensor w = optest::make_tensor({c.n, c.k}, c.w, c.dtype);
    QuantizedWeight q = ops::quantize(w, {QuantFormat::mlx_affine, c.bits, c.group_size}, c.dtype);
    EXPECT_EQ(u32_vector(q.packed), c.packed);
    EXPECT_EQ(q.scales.dtype(), c.dtype);
    EXPECT_EQ(q.scales.to_f32_vector(), c.scales);
    EXPECT_EQ(q.biases.to_f32_vector(), c.biases);
    // dequantize in f32 is scale * q + bias with both steps rounded in f32 (no FMA).
    auto codes = mlx_extract(reinterpret_cast<const uint8_t*>(c.packed.data()), c.n * c.k, c.bits);
    auto dv = ops::dequantize(q).to_f32_vector();
    const int64_t G = c.k / c.group_size;
    for (int64_t i = 0; i < c.n * c.k; ++i) {
      const int64_t g = (i / c.k) * G + (i % c.k) / c.group_size;
      volatile float p = float(codes[size_t(i)]) * c.scales[size_t(g)];
      const float want = p + c.biases[size_t(g)];
      ASSERT_EQ(dv[size_t(i)], want) << i;
    }
  }
}

TEST(Quantize, RoundTripOfCanonicalWeights) {
  // Codes that use 0 and 2^bits - 1 in every group, power-of-two scales and biases
  // that are integer multiples of the scale: quantize(dequantize(q)) == q exactly.
  for (DType sdt : optest::kFloatDTypes)
    for (int bits : kBits)
      for (int gs : kGroups) {
        SCOPED_TRACE(::testing::Message() << dtype_name(sdt) << " q" << bits << " g" << gs);
        const int64_t N = 5, K = 2 * gs, G = K / gs;
        const int n_bins = (1 << bits) - 1;
        std::mt19937 rng{uint32_t(bits * 1000 + gs)};
        std::vector<uint32_t> words(size_t(N * K * bits / 32), 0);
        std::vector<float> scales, biases;
        for (int64_t r = 0; r < N; ++r)
          for (int64_t g = 0; g < G; ++g) {
            const float s = std::ldexp(1.0f, -int(rng() % 8) - 2);
            const int m = n_bins / 2 + 1 + int(rng() % uint32_t(n_bins - n_bins / 2));  // n/2 < m <= n
            const bool neg = (r + g) % 2 == 1;  // the larger-magnitude extreme is the max
            scales.push_back(neg ? -s : s);
            biases.push_back(neg ? float(m) * s : -float(m) * s);
            for (int64_t j = 0; j < gs; ++j) {
              uint32_t q = j == 0 ? 0u : (j == 1 ? uint32_t(n_bins) : rng() % uint32_t(n_bins + 1));
              const int64_t bit = (r * K + g * gs + j) * bits;
              const uint64_t v = uint64_t(q) << (bit % 32);
              words[size_t(bit / 32)] |= uint32_t(v);
              if (bit % 32 + bits > 32) words[size_t(bit / 32 + 1)] |= uint32_t(v >> 32);
            }
          }
        QuantizedWeight q;
        q.spec = {QuantFormat::mlx_affine, bits, gs};
        q.packed = u32_tensor({N, K * bits / 32}, words);
        q.scales = optest::make_tensor({N, G}, scales, sdt);
        q.biases = optest::make_tensor({N, G}, biases, sdt);
        QuantizedWeight back = ops::quantize(ops::dequantize(q), q.spec, sdt);
        EXPECT_EQ(u32_vector(back.packed), words);
        EXPECT_EQ(back.scales.to_f32_vector(), scales);
        EXPECT_EQ(back.biases.to_f32_vector(), biases);
      }
}

TEST(Quantize, ErrorBounds) {
  for (DType sdt : optest::kFloatDTypes)
    for (int bits : kBits)
      for (int gs : kGroups) {
        SCOPED_TRACE(::testing::Message() << dtype_name(sdt) << " q" << bits << " g" << gs);
        const int64_t N = 7, K = 3 * gs, G = K / gs;
        auto wv = rand_vec(N * K, uint32_t(bits * 100 + gs), -0.2f, 0.3f);
        QuantizedWeight q = ops::quantize(Tensor::from_f32({N, K}, wv), {QuantFormat::mlx_affine, bits, gs}, sdt);
        auto dv = ops::dequantize(q).to_f32_vector();
        auto sv = q.scales.to_f32_vector(), bv = q.biases.to_f32_vector();
        const float rel = sdt == DType::f32 ? 1e-7f : (sdt == DType::f16 ? 1.0f / 2048 : 1.0f / 256);
        const float n_bins = float((1 << bits) - 1);
        for (int64_t i = 0; i < N * K; ++i) {
          const int64_t g = (i / K) * G + (i % K) / gs;
          const float s = std::fabs(sv[size_t(g)]);
          // Half a step, one more step where MLX's exact edge pushes the other extreme
          // past the last code, plus the rounding of the stored scale and bias.
          const float bound = 1.5f * s + rel * (n_bins * s + std::fabs(bv[size_t(g)])) + 1e-6f;
          ASSERT_LE(std::fabs(dv[size_t(i)] - wv[size_t(i)]), bound) << i;
        }
        // The larger-magnitude extreme of each group is exact when scales are f32.
        if (sdt == DType::f32) {
          for (int64_t g = 0; g < N * G; ++g) {
            const int64_t r = g / G, c0 = (g % G) * gs;
            int64_t ext = r * K + c0;
            for (int64_t j = 0; j < gs; ++j)
              if (std::fabs(wv[size_t(r * K + c0 + j)]) > std::fabs(wv[size_t(ext)])) ext = r * K + c0 + j;
            EXPECT_EQ(dv[size_t(ext)], wv[size_t(ext)]) << "group " << g;
          }
        }
      }
}

TEST(Dequantize, SameDtypeRoundsEachStep) {
  for (DType sdt : {DType::f16, DType::bf16})
    for (int bits : {3, 4, 8}) {
      auto wv = rand_vec(4 * 64, uint32_t(bits), -3.0f, 2.0f);
      QuantizedWeight q = ops::quantize(Tensor::from_f32({4, 64}, wv), {QuantFormat::mlx_affine, bits, 32}, sdt);
      Tensor d = ops::dequantize(q, sdt);
      ASSERT_EQ(d.dtype(), sdt);
      auto dv = d.to_f32_vector();
      auto codes = mlx_extract(reinterpret_cast<const uint8_t*>(q.packed.raw()), 4 * 64, bits);
      auto sv = q.scales.to_f32_vector(), bv = q.biases.to_f32_vector();
      for (int64_t i = 0; i < 4 * 64; ++i) {
        const float p = optest::round_to({float(codes[size_t(i)]) * sv[size_t(i / 32)]}, sdt)[0];
        const float want = optest::round_to({p + bv[size_t(i / 32)]}, sdt)[0];
        ASSERT_EQ(dv[size_t(i)], want) << dtype_name(sdt) << " " << i;
      }
    }
}

// The int8 and int16 decode forms (backends/cpu/quantized.cpp): per group g of w and row of
// x, with x's integer values xq and scale d, Z = 8 (4-bit) or 128 (8-bit) and X_g the exact sum of x,
//   y = sum_g s_g d sum_k (q_k - Z) xq_k + (b_g + Z s_g) X_g   (+ bias),
// in double, within 2e-6 of the sum of the terms' sizes.
void check_int8_decode(const std::vector<float>& xv, const QuantizedWeight& w, const float* bias,
                       const std::vector<float>& yv, int64_t M, int64_t N, int64_t K, bool x16) {
  const int gs = w.spec.group_size, bits = w.spec.bits, Z = bits == 4 ? 8 : 128;
  const int64_t G = K / gs;
  const auto dq = ops::dequantize(w).to_f32_vector();
  const auto sc = w.scales.to_f32_vector(), bi = w.biases.to_f32_vector();
  std::vector<int> xq(static_cast<size_t>(gs));
  int misses = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double y = bias ? bias[n] : 0.0, mag = std::fabs(y);
      for (int64_t g = 0; g < G; ++g) {
        const float* xg = xv.data() + m * K + g * gs;
        const double d = optest::int8_group(xg, gs, xq.data(), x16 ? 127.0f * 256.0f : 127.0f);
        const double s = sc[size_t(n * G + g)], b = bi[size_t(n * G + g)];
        double dot = 0, X = 0;
        for (int k = 0; k < gs; ++k) {
          // The exact integer q of the weight (dq = s q + b as MLX rounds it).
          const double qk = s != 0 ? std::nearbyint((dq[size_t(n * K + g * gs + k)] - b) / s) : 0.0;
          dot += (qk - Z) * xq[size_t(k)];
          mag += std::fabs(s * d * (qk - Z) * xq[size_t(k)]);
          X += xg[k];
        }
        y += s * d * dot + (b + Z * s) * X;
        mag += std::fabs((b + Z * s) * X);
      }
      const double got = yv[size_t(m * N + n)];
      if (std::fabs(got - y) > 2e-6 * mag + 1e-6 && misses++ < 3)
        ADD_FAILURE() << (x16 ? "int16" : "int8") << " x: q" << bits << " g" << gs << " " << dtype_name(w.scales.dtype()) << " M=" << M
                      << " N=" << N << " K=" << K << " y[" << m << "][" << n << "] = " << got << ", want " << y;
    }
}

// y = x @ dequant(w)^T (+ b) in double, checked with error bounds from sum |x w|.
void check_qlinear(int64_t M, int64_t N, int64_t K, int bits, int gs, DType sdt, bool with_bias, uint32_t seed) {
  auto xv = rand_vec(M * K, seed), wv = rand_vec(N * K, seed + 1, -0.5f, 0.4f), bv = rand_vec(N, seed + 2);
  QuantizedWeight q = ops::quantize(Tensor::from_f32({N, K}, wv), {QuantFormat::mlx_affine, bits, gs}, sdt);
  auto dq = ops::dequantize(q).to_f32_vector();
  Tensor bias = with_bias ? Tensor::from_f32({N}, bv) : Tensor();
  auto yv = ops::qlinear(Tensor::from_f32({M, K}, xv), q, bias).to_f32_vector();
  // bf16 scales at prompt sizes on AVX512_BF16: x and the dequantized weights are rounded
  // to bf16. The kernel dequantizes with one FMA, the reference with two roundings, so a
  // weight next to a bf16 rounding boundary may round the other way: one bf16 ulp of one
  // product is allowed on top.
  const bool bf16 = optest::cpu_bf16_product(sdt, M);
  if (bf16) {
    xv = optest::round_to(xv, DType::bf16);
    dq = optest::round_to(dq, DType::bf16);
  }
  // The 4-bit decode GEMV on AVX512_BF16 multiplies the exact weights by x in 1 or 2 bf16
  // parts (backends/cpu/isa.h): the reference takes x as those parts carry it.
  const int form = optest::cpu_q4_x_parts(M, K, bits, gs, sdt);
  if (form == cpu::kQ4XInt8 || form == cpu::kQ4XInt16)
    return check_int8_decode(xv, q, with_bias ? bv.data() : nullptr, yv, M, N, K, form == cpu::kQ4XInt16);
  xv = optest::round_to_bf16_parts(xv, form);
  int misses = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = with_bias ? bv[size_t(n)] : 0.0, mag = std::fabs(s), pmax = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = double(xv[size_t(m * K + k)]) * dq[size_t(n * K + k)];
        s += p;
        mag += std::fabs(p);
        pmax = std::max(pmax, std::fabs(p));
      }
      const double got = yv[size_t(m * N + n)];
      if (std::fabs(got - s) > 2e-6 * mag + 1e-6 + (bf16 ? pmax / 128 : 0.0) && misses++ < 3)
        ADD_FAILURE() << "q" << bits << " g" << gs << " " << dtype_name(sdt) << " M=" << M << " N=" << N << " K=" << K
                      << " y[" << m << "][" << n << "] = " << got << ", want " << s;
    }
}

TEST(Qlinear, MatchesDequantizedDenseEveryFormat) {
  uint32_t seed = 1;
  for (DType sdt : optest::kFloatDTypes)
    for (int bits : kBits)
      for (int gs : kGroups)
        for (int64_t M : {1, 2, 3, 5, 8, 9, 19, 32, 33, 45}) check_qlinear(M, 37, 3 * gs, bits, gs, sdt, M % 2 == 1, seed++);
}

// Prompt-sized products in every form of x (the avx2 build's GEMM takes x as int16 or int8
// per group, as its decode does): K over more than one K block of the GEMM (512) and ending
// mid-block, M not a multiple of its 6-row tiles, N not a multiple of its 16 or 64 columns.
TEST(Qlinear, PromptEveryXForm) {
  const int before = cpu::q4_x_parts();
  uint32_t seed = 700;
  for (int parts : {-1, 0, cpu::kQ4XInt8, cpu::kQ4XInt16}) {
    cpu::set_q4_x_parts(parts);
    for (DType sdt : optest::kFloatDTypes)
      for (int gs : kGroups)
        for (int bits : {4, 8})
          for (auto [M, N, K] : {std::array<int64_t, 3>{33, 37, 1152}, {100, 130, 640}, {47, 64, 128}})
            if (K % gs == 0) check_qlinear(M, N, K, bits, gs, sdt, M % 2 == 1, seed++);
  }
  cpu::set_q4_x_parts(before);
}

// The MLX 4- and 8-bit decode GEMV's ways to multiply (by the weight's scales; f32 x; x as one
// bf16 part; as two), 1 to 8 rows of x, each group size, scale dtype, odd row counts and K up to 4096 (a thread's share of
// rows ending mid-way; the first and last rows).
TEST(Qlinear, FourBitDecodeEveryXForm) {
  const int before = cpu::q4_x_parts();
  uint32_t seed = 900;
  for (int parts : {-1, 0, 1, 2, cpu::kQ4XInt8, cpu::kQ4XInt16}) {
    cpu::set_q4_x_parts(parts);
    for (DType sdt : optest::kFloatDTypes)
      for (int gs : kGroups)
        for (int64_t K : {128, 384, 4096})
          for (int64_t N : {1, 37, 300})
            for (int64_t M : {1, 2, 4, 5, 8, 13, 32})
              for (int bits : {4, 8})
                if (K < 4096 || N < 300) check_qlinear(M, N, K, bits, gs, sdt, N % 2 == 1, seed++);
  }
  cpu::set_q4_x_parts(before);
}

// Batch invariance of the decode forms (bf16 parts, int8): each row of a product of 2-32
// rows of x gets the bits it gets alone.
TEST(Qlinear, FourBitDecodeRowsAsAlone) {
  // The forms are the avx512 and avx2 builds' (the f32 paths group rows differently; the
  // bf16 forms are the avx512 build's alone).
  if (cpu::isa() == cpu::Isa::generic) GTEST_SKIP() << "decode forms need the avx2 or avx512 kernels";
  const int before = cpu::q4_x_parts();
  for (int parts : {1, 2, cpu::kQ4XInt8, cpu::kQ4XInt16}) {
    if ((parts == 1 || parts == 2) && cpu::isa() != cpu::Isa::avx512) continue;
    cpu::set_q4_x_parts(parts);
    for (DType sdt : {DType::bf16, DType::f16}) {
      for (int bits : {4, 8}) {
      QuantizedWeight q = ops::quantize(optest::rand_f32({45, 256}, 7), {QuantFormat::mlx_affine, bits, 64}, sdt);
      for (int64_t M : {2, 3, 5, 8, 17, 32}) {
        Tensor x = optest::rand_f32({M, 256}, uint32_t(10 + M));
        auto all = ops::qlinear(x, q).to_f32_vector();
        for (int64_t m = 0; m < M; ++m) {
          auto one = ops::qlinear(x.slice(0, m, m + 1).clone(), q).to_f32_vector();
          for (int64_t n = 0; n < 45; ++n)
            ASSERT_EQ(all[size_t(m * 45 + n)], one[size_t(n)])
                << "bits " << bits << " parts " << parts << " M " << M << " row " << m;
        }
      }
      }
    }
  }
  cpu::set_q4_x_parts(before);
}

// Prompt-sized products in the avx2 build's integer forms give each row of x the bits it
// gets in any other prompt-sized batch (a row's x is quantized alone and its sums run in
// the same order in a 6-row tile or a shorter one): rows of a 40-row product against the
// same rows inside 47- and 100-row products, over two K blocks.
TEST(Qlinear, PromptRowsAsInAnyBatch) {
  if (cpu::isa() != cpu::Isa::avx2) GTEST_SKIP() << "the integer prompt forms are the avx2 build's";
  const int before = cpu::q4_x_parts();
  for (int parts : {cpu::kQ4XInt8, cpu::kQ4XInt16}) {
    cpu::set_q4_x_parts(parts);
    for (int bits : {4, 8}) {
      const QuantizedWeight q =
          ops::quantize(optest::rand_f32({70, 1088}, uint32_t(20 + bits)), {QuantFormat::mlx_affine, bits, 64}, DType::bf16);
      const Tensor x = optest::rand_f32({100, 1088}, 31);
      const auto base = ops::qlinear(x.slice(0, 0, 40).clone(), q).to_f32_vector();
      for (int64_t M : {47, 100}) {
        const auto more = ops::qlinear(x.slice(0, 0, M).clone(), q).to_f32_vector();
        for (size_t i = 0; i < base.size(); ++i)
          ASSERT_EQ(base[i], more[i]) << "bits " << bits << " parts " << parts << " M " << M << " at " << i;
      }
    }
  }
  cpu::set_q4_x_parts(before);
}

// qlinear_multi (one parallel region for q, k, v or gate, up on the CPU) gives each
// product's qlinear bits, for every decode form, batch sizes on both sides of the GEMV
// limit, biases or none, and weights of different specs (products one by one).
TEST(Qlinear, MultiMatchesSeparate) {
  const int before = cpu::q4_x_parts();
  for (int form : {-1, 0, 1, 2, cpu::kQ4XInt8, cpu::kQ4XInt16})
    for (int bits : {4, 8})
      for (int64_t M : {1, 3, 9, 32, 40}) {
        cpu::set_q4_x_parts(form);
        const DType sdt = M % 2 ? DType::bf16 : DType::f16;
        std::vector<QuantizedWeight> qs;
        for (int64_t N : {40, 8, 100})
          qs.push_back(ops::quantize(optest::rand_f32({N, 256}, uint32_t(N + bits)), {QuantFormat::mlx_affine, bits, 64}, sdt));
        // A fourth of another spec: the products then run one by one.
        QuantizedWeight other =
            ops::quantize(optest::rand_f32({24, 256}, 5), {QuantFormat::mlx_affine, 12 - bits, 32}, sdt);
        const Tensor x = optest::rand_f32({M, 256}, uint32_t(M));
        const Tensor b1 = optest::rand_f32({8}, 3);
        for (bool mixed : {false, true}) {
          std::vector<const QuantizedWeight*> ws = {&qs[0], &qs[1], mixed ? &other : &qs[2]};
          std::vector<Tensor> bs = {Tensor(), b1, Tensor()};
          auto ys = ops::qlinear_multi(x, ws, bs);
          ASSERT_EQ(ys.size(), 3u);
          for (size_t i = 0; i < 3; ++i) {
            auto want = ops::qlinear(x, *ws[i], bs[i]).to_f32_vector();
            auto got = ys[i].to_f32_vector();
            ASSERT_EQ(got.size(), want.size());
            for (size_t j = 0; j < got.size(); ++j)
              ASSERT_EQ(got[j], want[j]) << "form " << form << " bits " << bits << " M " << M << " product " << i
                                         << (mixed ? " (mixed specs)" : "") << " at " << j;
          }
        }
      }
  cpu::set_q4_x_parts(before);
}

// The residual add + RMSNorm + products ops (ops/fused.h) are, on the CPU, exactly
// add_rms_norm followed by the products; bad inputs fail as those ops fail.
TEST(Qlinear, AddNormThenProductsIsTheComposition) {
  const QuantSpec spec{QuantFormat::mlx_affine, 4, 64};
  QuantizedWeight q = ops::quantize(optest::rand_f32({40, 256}, 11), spec, DType::bf16);
  QuantizedWeight k = ops::quantize(optest::rand_f32({8, 256}, 12), spec, DType::bf16);
  QuantizedWeight u = ops::quantize(optest::rand_f32({40, 256}, 13), spec, DType::bf16);
  const Tensor x = optest::rand_f32({1, 256}, 14), h = optest::rand_f32({1, 256}, 15);
  const Tensor w = optest::rand_f32({256}, 16), b = optest::rand_f32({40}, 17);
  auto [sum, outs] = ops::add_rms_norm_qlinear_multi(x, h, w, 1e-5f, 1.0f, {&q, &k}, {b, Tensor()});
  auto [want_sum, normed] = ops::add_rms_norm(x, h, w, 1e-5f, 1.0f);
  EXPECT_EQ(sum.to_f32_vector(), want_sum.to_f32_vector());
  ASSERT_EQ(outs.size(), 2u);
  EXPECT_EQ(outs[0].to_f32_vector(), ops::qlinear(normed, q, b).to_f32_vector());
  EXPECT_EQ(outs[1].to_f32_vector(), ops::qlinear(normed, k).to_f32_vector());
  auto [gsum, g] = ops::add_rms_norm_qlinear_gated(x, h, w, 1e-5f, 1.0f, q, u, ops::Activation::silu, b);
  EXPECT_EQ(gsum.to_f32_vector(), want_sum.to_f32_vector());
  EXPECT_EQ(g.to_f32_vector(), ops::qlinear_gated(normed, q, u, ops::Activation::silu, b).to_f32_vector());
  EXPECT_THROW(ops::add_rms_norm_qlinear_multi(x, optest::rand_f32({1, 255}, 18), w, 1e-5f, 0.0f, {&q}), Error);
  EXPECT_THROW(ops::add_rms_norm_qlinear_multi(x, h, w, 1e-5f, 0.0f, {}), Error);
  // A RoPE / cache-write request is a CUDA epilogue only: on the CPU done stays false, the
  // caches are untouched and the products are the composition's, unrotated.
  QuantizedWeight v = ops::quantize(optest::rand_f32({8, 256}, 19), spec, DType::bf16);
  RopeParams rp;
  rp.inv_freq = optest::rand_f32({4}, 20);
  rp.rotary_dim = 8;
  Tensor pos = Tensor::from_i32({1}, {5});
  Tensor kc = Tensor::zeros({2, 4, 1, 8}, DType::f32), vc = Tensor::zeros({2, 4, 1, 8}, DType::f32);
  AttentionContext ctx;
  ctx.block_size = 4;
  ctx.slot_mapping = Tensor::from_i32({1}, {3});
  ops::RopeKvWrite rw;
  rw.positions = &pos, rw.rope = &rp, rw.k_cache = &kc, rw.v_cache = &vc, rw.ctx = &ctx, rw.head_dim = 8;
  rw.done = true;
  auto [rsum, routs] = ops::add_rms_norm_qlinear_multi(x, h, w, 1e-5f, 1.0f, {&q, &k, &v}, {b, Tensor(), Tensor()}, &rw);
  EXPECT_FALSE(rw.done);
  ASSERT_EQ(routs.size(), 3u);
  EXPECT_EQ(routs[1].to_f32_vector(), ops::qlinear(normed, k).to_f32_vector());
  EXPECT_EQ(kc.to_f32_vector(), std::vector<float>(size_t(kc.numel()), 0.0f));
  EXPECT_EQ(vc.to_f32_vector(), std::vector<float>(size_t(vc.numel()), 0.0f));
}

TEST(Qlinear, GemmPathAcrossKBlocks) {
  uint32_t seed = 500;
  for (int bits : kBits)
    for (int gs : kGroups) check_qlinear(21, 70, 1152, bits, gs, DType::bf16, bits % 2 == 0, seed++);
}

TEST(Qlinear, LeadingDimsAndErrors) {
  QuantizedWeight q = ops::quantize(optest::rand_f32({6, 64}, 1), {QuantFormat::mlx_affine, 4, 32}, DType::f16);
  Tensor x = optest::rand_f32({2, 3, 64}, 2);
  EXPECT_EQ(ops::qlinear(x, q).shape(), (Shape{2, 3, 6}));
  expect_error([&] { ops::qlinear(optest::rand_f32({2, 63}, 1), q); }, ErrorKind::invalid_request, "[qlinear]");
  expect_error([&] { ops::qlinear(x, q, optest::rand_f32({5}, 1)); }, ErrorKind::invalid_request, "[qlinear] bias");
  QuantizedWeight bad = q;
  bad.spec.bits = 7;
  expect_error([&] { ops::qlinear(x, bad); }, ErrorKind::invalid_request, "bits");
  bad = q;
  bad.spec.group_size = 16;
  expect_error([&] { ops::qlinear(x, bad); }, ErrorKind::invalid_request, "group_size");
  bad = q;
  bad.scales = optest::rand_f32({6, 3}, 1);
  expect_error([&] { ops::qlinear(x, bad); }, ErrorKind::invalid_request, "scales");
  bad = q;
  bad.biases = optest::make_tensor({6, 2}, std::vector<float>(12, 0.0f), DType::bf16);
  expect_error([&] { ops::qlinear(x, bad); }, ErrorKind::invalid_request, "differ in dtype");
  bad = q;
  bad.packed = optest::rand_f32({6, 8}, 1);
  expect_error([&] { ops::qlinear(x, bad); }, ErrorKind::invalid_request, "packed");
  expect_error([&] { ops::validate_quantized(bad, "model.layers.0.mlp.up_proj"); }, ErrorKind::invalid_request,
               "up_proj");
  expect_error([&] { ops::quantize(optest::rand_f32({2, 48}, 1), {QuantFormat::mlx_affine, 4, 32}); },
               ErrorKind::invalid_request, "[quantize]");
}

TEST(Qembedding, RowsOfDequantize) {
  for (int bits : kBits) {
    QuantizedWeight q =
        ops::quantize(optest::rand_f32({40, 96}, uint32_t(bits)), {QuantFormat::mlx_affine, bits, 32}, DType::bf16);
    auto full = ops::dequantize(q).to_f32_vector();
    Tensor ids = Tensor::from_i32({4}, {39, 0, 17, 17});
    Tensor e = ops::qembedding(ids, q);
    ASSERT_EQ(e.shape(), (Shape{4, 96}));
    auto ev = e.to_f32_vector();
    int i = 0;
    for (int id : {39, 0, 17, 17}) {
      for (int k = 0; k < 96; ++k) ASSERT_EQ(ev[size_t(i * 96 + k)], full[size_t(id * 96 + k)]);
      ++i;
    }
    expect_error([&] { ops::qembedding(Tensor::from_i32({1}, {40}), q); }, ErrorKind::invalid_request,
                 "[qembedding] token id 40");
  }
}

}  // namespace
}  // namespace mlxcel
