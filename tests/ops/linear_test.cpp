// linear (GEMV and GEMM paths) and embedding against scalar references.
#include <cmath>

#include "test_util.h"

namespace mlxcel {
namespace {

using optest::expect_error;
using optest::rand_vec;

// y = x @ w^T + b in double, with per-element error bounds from sum |x_k w_k|.
void check_linear(int64_t M, int64_t K, int64_t N, DType wdt, bool with_bias, uint32_t seed) {
  auto xv = rand_vec(M * K, seed), wv = rand_vec(N * K, seed + 1), bv = rand_vec(N, seed + 2);
  Tensor x = Tensor::from_f32({M, K}, xv);
  Tensor w = optest::make_tensor({N, K}, wv, wdt);
  Tensor b = with_bias ? optest::make_tensor({N}, bv, wdt) : Tensor();
  auto wq = optest::round_to(wv, wdt), bq = optest::round_to(bv, wdt);
  // bf16 weights at prompt sizes on AVX512_BF16: x is rounded to bf16 as well.
  if (optest::cpu_bf16_product(wdt, M)) xv = optest::round_to(xv, DType::bf16);
  Tensor y = ops::linear(x, w, b);
  ASSERT_EQ(y.shape(), (Shape{M, N}));
  auto yv = y.to_f32_vector();
  int misses = 0;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double s = with_bias ? bq[size_t(n)] : 0.0, mag = std::fabs(s);
      for (int64_t k = 0; k < K; ++k) {
        s += double(xv[size_t(m * K + k)]) * wq[size_t(n * K + k)];
        mag += std::fabs(double(xv[size_t(m * K + k)]) * wq[size_t(n * K + k)]);
      }
      const double got = yv[size_t(m * N + n)];
      if (std::fabs(got - s) > 1e-6 * mag + 1e-7 && misses++ < 5)
        ADD_FAILURE() << "M=" << M << " K=" << K << " N=" << N << " " << dtype_name(wdt) << " y[" << m << "][" << n
                      << "] = " << got << ", want " << s;
    }
  }
}

TEST(Linear, GemvPathOddSizes) {
  uint32_t seed = 1;
  for (DType dt : optest::kFloatDTypes)
    for (int64_t M : {1, 2, 3, 4, 5, 6, 7, 8})
      for (int64_t K : {1, 7, 67, 130})
        for (int64_t N : {1, 3, 65}) check_linear(M, K, N, dt, (M + K) % 2 == 0, seed++);
}

TEST(Linear, GroupedGemvPathOddSizes) {  // 9..kGemvMaxRows rows: groups of 8 over weight tiles
  uint32_t seed = 50;
  for (DType dt : optest::kFloatDTypes)
    for (int64_t M : {9, 16, 23, 32})
      for (int64_t K : {7, 130, 1100})
        for (int64_t N : {3, 65, 130}) check_linear(M, K, N, dt, (M + K) % 2 == 0, seed++);
}

TEST(Linear, GemmPathOddSizes) {
  uint32_t seed = 100;
  for (DType dt : optest::kFloatDTypes)
    for (int64_t M : {33, 41, 70})
      for (int64_t K : {1, 67, 517, 1100})  // K blocks of 512 with tails
        for (int64_t N : {3, 65, 130}) check_linear(M, K, N, dt, (M + N) % 2 == 1, seed++);
}

TEST(Linear, LeadingDimsAndErrors) {
  Tensor x = optest::rand_f32({2, 3, 20}, 7);
  Tensor w = optest::rand_f32({5, 20}, 8);
  Tensor y = ops::linear(x, w);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 5}));
  Tensor y2 = ops::linear(x.reshape({6, 20}), w);
  EXPECT_EQ(y.to_f32_vector(), y2.to_f32_vector());
  expect_error([&] { ops::linear(x, optest::rand_f32({5, 21}, 1)); }, ErrorKind::invalid_request, "[linear]");
  expect_error([&] { ops::linear(x, optest::rand_f32({20}, 1)); }, ErrorKind::invalid_request, "[linear]");
  expect_error([&] { ops::linear(x, w, optest::rand_f32({4}, 1)); }, ErrorKind::invalid_request, "[linear] bias");
  expect_error([&] { ops::linear(x, Tensor::from_i32({5, 20}, std::vector<int32_t>(100))); },
               ErrorKind::invalid_request, "[linear]");
}

// The fused decode ops (ops/fused.h) are their composition on the CPU, bit for bit, and
// reject bad arguments like the ops they replace.
TEST(FusedOps, EqualTheCompositionOnTheCpu) {
  Tensor x = optest::rand_f32({3, 40}, 11), h = optest::rand_f32({3, 40}, 12);
  Tensor wq = optest::make_tensor({8, 40}, rand_vec(320, 13), DType::bf16);
  Tensor wk = optest::make_tensor({4, 40}, rand_vec(160, 14), DType::bf16);
  Tensor bq = optest::rand_f32({8}, 15);
  std::vector<Tensor> y = ops::linear_multi(x, {wq, wk}, {bq, Tensor()});
  ASSERT_EQ(y.size(), 2u);
  EXPECT_EQ(y[0].to_f32_vector(), ops::linear(x, wq, bq).to_f32_vector());
  EXPECT_EQ(y[1].to_f32_vector(), ops::linear(x, wk).to_f32_vector());
  Tensor wu = optest::make_tensor({8, 40}, rand_vec(320, 16), DType::bf16);
  EXPECT_EQ(ops::linear_gated(x, wq, wu, ops::Activation::silu).to_f32_vector(),
            ops::gated(ops::linear(x, wq), ops::linear(x, wu), ops::Activation::silu).to_f32_vector());
  Tensor nw = optest::rand_f32({40}, 17);
  auto [sum, normed] = ops::add_rms_norm(x, h, nw, 1e-5f);
  EXPECT_EQ(sum.to_f32_vector(), ops::add(x, h).to_f32_vector());
  EXPECT_EQ(normed.to_f32_vector(), ops::rms_norm(ops::add(x, h), nw, 1e-5f).to_f32_vector());
  const QuantSpec spec{QuantFormat::mlx_affine, 4, 32};
  QuantizedWeight q1 = ops::quantize(optest::rand_f32({8, 64}, 18), spec), q2 = ops::quantize(optest::rand_f32({8, 64}, 19), spec);
  Tensor x64 = optest::rand_f32({2, 64}, 20);
  std::vector<Tensor> qy = ops::qlinear_multi(x64, {&q1, &q2});
  EXPECT_EQ(qy[1].to_f32_vector(), ops::qlinear(x64, q2).to_f32_vector());
  EXPECT_EQ(ops::qlinear_gated(x64, q1, q2, ops::Activation::gelu_tanh).to_f32_vector(),
            ops::gated(ops::qlinear(x64, q1), ops::qlinear(x64, q2), ops::Activation::gelu_tanh).to_f32_vector());

  expect_error([&] { ops::linear_multi(x, {}); }, ErrorKind::invalid_request, "[linear_multi] takes 1 to 3");
  expect_error([&] { ops::linear_multi(x, {wq, wk, wq, wk}); }, ErrorKind::invalid_request, "[linear_multi]");
  expect_error([&] { ops::linear_multi(x, {wq, wk}, {bq}); }, ErrorKind::invalid_request, "[linear_multi] 1 biases");
  expect_error([&] { ops::linear_multi(x, {wq, optest::rand_f32({4, 41}, 1)}); }, ErrorKind::invalid_request,
               "[linear]");
  expect_error([&] { ops::linear_gated(x, wq, wk, ops::Activation::silu); }, ErrorKind::invalid_request, "[gated]");
  expect_error([&] { ops::add_rms_norm(x, optest::rand_f32({3, 41}, 1), nw, 1e-5f); }, ErrorKind::invalid_request,
               "[add]");
  expect_error([&] { ops::qlinear_multi(x, {&q1}); }, ErrorKind::invalid_request, "[qlinear_multi]");
}

// bf16 activations between ops (ops::matmul_input_dtype): linear reads bf16 x as its
// values, and the producers' bf16 outputs are their f32 results rounded once. On the CPU
// every product reads f32, so the hint is f32 there.
TEST(FusedOps, Bf16ActivationsAreTheRoundedF32) {
  Tensor x = optest::rand_f32({12, 40}, 21), h = optest::rand_f32({12, 40}, 22);
  Tensor w = optest::make_tensor({8, 40}, rand_vec(320, 23), DType::bf16);
  Tensor wu = optest::make_tensor({8, 40}, rand_vec(320, 24), DType::bf16);
  Tensor xb = ops::astype(x, DType::bf16);
  EXPECT_EQ(ops::linear(xb, w).to_f32_vector(), ops::linear(ops::astype(xb, DType::f32), w).to_f32_vector());
  EXPECT_EQ(ops::matmul_input_dtype(x, w), DType::f32);
  Tensor g = ops::linear_gated(x, w, wu, ops::Activation::silu, Tensor(), Tensor(), DType::bf16);
  EXPECT_EQ(g.dtype(), DType::bf16);
  EXPECT_EQ(g.to_f32_vector(), ops::astype(ops::linear_gated(x, w, wu, ops::Activation::silu), DType::bf16).to_f32_vector());
  Tensor nw = optest::rand_f32({40}, 25);
  auto [sum, normed] = ops::add_rms_norm(x, h, nw, 1e-5f, 0.0f, DType::bf16);
  EXPECT_EQ(sum.dtype(), DType::f32);
  EXPECT_EQ(normed.dtype(), DType::bf16);
  EXPECT_EQ(normed.to_f32_vector(), ops::astype(ops::add_rms_norm(x, h, nw, 1e-5f).second, DType::bf16).to_f32_vector());
  expect_error([&] { ops::add_rms_norm(x, h, nw, 1e-5f, 0.0f, DType::f16); }, ErrorKind::invalid_request,
               "[add_rms_norm] out_dtype");
  expect_error([&] { ops::gated(x, h, ops::Activation::silu, DType::i32); }, ErrorKind::invalid_request,
               "[gated] out_dtype");
}

TEST(Embedding, LooksUpRowsInEveryDtype) {
  const int V = 50, D = 37;
  auto tv = rand_vec(V * D, 9);
  Tensor ids = Tensor::from_i32({5}, {0, 49, 7, 7, 23});
  for (DType dt : optest::kFloatDTypes) {
    auto tq = optest::round_to(tv, dt);
    Tensor e = ops::embedding(ids, optest::make_tensor({V, D}, tv, dt));
    EXPECT_EQ(e.dtype(), DType::f32);
    EXPECT_EQ(e.shape(), (Shape{5, D}));
    std::vector<float> want;
    for (int id : {0, 49, 7, 7, 23})
      for (int k = 0; k < D; ++k) want.push_back(tq[size_t(id * D + k)]);
    optest::expect_close(e, want, 0, 0, dtype_name(dt));
  }
  Tensor table = optest::rand_f32({V, D}, 1);
  expect_error([&] { ops::embedding(Tensor::from_i32({2}, {3, 50}), table); }, ErrorKind::invalid_request,
               "[embedding] token id 50");
  expect_error([&] { ops::embedding(Tensor::from_i32({1}, {-2}), table); }, ErrorKind::invalid_request,
               "[embedding]");
  expect_error([&] { ops::embedding(Tensor::from_i32({1, 1}, {1}), table); }, ErrorKind::invalid_request,
               "[embedding]");
}

}  // namespace
}  // namespace mlxcel
