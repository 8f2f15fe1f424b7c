// add/mul/scale/add_, activations, gated, softcap, softmax, argmax.
#include <algorithm>
#include <cmath>

#include "test_util.h"

namespace mlxcel {
namespace {

using optest::expect_close;
using optest::expect_error;
using optest::rand_f32;
using optest::rand_vec;

// A tensor on a (fake) CUDA device: only its metadata is ever read.
Tensor fake_cuda(const Shape& shape, DType dt = DType::f32) {
  static float dummy[1];
  return Tensor::view_of(dummy, shape, dt, nullptr, Device::cuda());
}

TEST(Binary, SameShapeAndBroadcast) {
  const int R = 37, D = 129;  // odd sizes: SIMD tails
  auto av = rand_vec(R * D, 1), bv = rand_vec(R * D, 2), cv = rand_vec(D, 3);
  Tensor a = Tensor::from_f32({R, D}, av);
  for (DType dt : optest::kFloatDTypes) {
    auto bq = optest::round_to(bv, dt), cq = optest::round_to(cv, dt);
    Tensor b = optest::make_tensor({R, D}, bv, dt), c = optest::make_tensor({D}, cv, dt);
    std::vector<float> add_ref(av.size()), mul_ref(av.size()), addb_ref(av.size()), mulb_ref(av.size());
    for (int i = 0; i < R * D; ++i) {
      add_ref[i] = av[i] + bq[i];
      mul_ref[i] = av[i] * bq[i];
      addb_ref[i] = av[i] + cq[i % D];
      mulb_ref[i] = av[i] * cq[i % D];
    }
    expect_close(ops::add(a, b), add_ref, 0, 0, "add");
    expect_close(ops::mul(a, b), mul_ref, 0, 0, "mul");
    expect_close(ops::add(a, c), addb_ref, 0, 0, "add broadcast");
    expect_close(ops::mul(a, c), mulb_ref, 0, 0, "mul broadcast");
  }
  expect_error([&] { ops::add(a, rand_f32({R, D + 1}, 4)); }, ErrorKind::invalid_request, "[add]");
  expect_error([&] { ops::mul(a, rand_f32({D + 1}, 4)); }, ErrorKind::invalid_request, "[mul]");
  expect_error([&] { ops::add(optest::make_tensor({2}, {1, 2}, DType::bf16), rand_f32({2}, 1)); },
               ErrorKind::invalid_request, "[add] a must be f32");
}

TEST(Binary, InPlaceAddAndScale) {
  auto av = rand_vec(3 * 5 * 7, 5), bv = rand_vec(3 * 5 * 7, 6);
  Tensor a = Tensor::from_f32({3, 5, 7}, av);
  ops::add_(a, Tensor::from_f32({3, 5, 7}, bv));
  std::vector<float> want(av.size());
  for (size_t i = 0; i < av.size(); ++i) want[i] = av[i] + bv[i];
  expect_close(a, want, 0, 0);
  for (size_t i = 0; i < av.size(); ++i) want[i] = want[i] * 0.125f;
  expect_close(ops::scale(a, 0.125f), want, 0, 0);
  expect_error([&] { ops::add_(a, rand_f32({3, 5}, 1)); }, ErrorKind::invalid_request, "[add_]");
}

TEST(Activations, MatchFormulas) {
  auto xv = rand_vec(1001, 7, -6.0f, 6.0f);
  Tensor x = Tensor::from_f32({7, 143}, xv);
  struct Case {
    const char* name;
    ops::Activation act;
    double (*f)(double);
  } cases[] = {
      {"silu", ops::Activation::silu, [](double v) { return v / (1.0 + std::exp(-v)); }},
      {"gelu_pytorch_tanh", ops::Activation::gelu_tanh,
       [](double v) { return 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))); }},
      {"gelu", ops::Activation::gelu_erf, [](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); }},
      {"relu", ops::Activation::relu, [](double v) { return v > 0 ? v : 0.0; }},
      {"relu2", ops::Activation::relu2, [](double v) { return v > 0 ? v * v : 0.0; }},
  };
  auto uv = rand_vec(1001, 8);
  Tensor up = Tensor::from_f32({7, 143}, uv);
  for (const auto& c : cases) {
    EXPECT_EQ(ops::parse_activation(c.name), c.act);
    std::vector<float> want(xv.size()), want_gated(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) {
      want[i] = float(c.f(xv[i]));
      want_gated[i] = float(c.f(xv[i]) * uv[i]);
    }
    expect_close(ops::activate(x, c.act), want, 1e-6f, 1e-5f, c.name);
    expect_close(ops::gated(x, up, c.act), want_gated, 1e-6f, 1e-5f, c.name);
  }
  EXPECT_EQ(ops::parse_activation("swish"), ops::Activation::silu);
  EXPECT_EQ(ops::parse_activation("gelu_new"), ops::Activation::gelu_tanh);
  EXPECT_EQ(ops::parse_activation("gelu_fast"), ops::Activation::gelu_tanh);
  expect_error([] { ops::parse_activation("mish"); }, ErrorKind::unsupported, "mish");
  expect_error([&] { ops::gated(x, rand_f32({7, 142}, 1), ops::Activation::silu); }, ErrorKind::invalid_request,
               "[gated]");
}

TEST(Softcap, TanhScaled) {
  auto xv = rand_vec(333, 9, -100.0f, 100.0f);
  std::vector<float> want(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) want[i] = float(std::tanh(double(xv[i]) / 30.0) * 30.0);
  expect_close(ops::softcap(Tensor::from_f32({333}, xv), 30.0f), want, 1e-5f, 1e-6f);
  expect_error([&] { ops::softcap(Tensor::from_f32({333}, xv), 0.0f); }, ErrorKind::invalid_request, "[softcap]");
}

TEST(Softmax, RowsSumToOne) {
  const int R = 5, D = 77;
  auto xv = rand_vec(R * D, 10, -20.0f, 20.0f);
  xv[3] = -INFINITY;  // masked entry
  Tensor y = ops::softmax(Tensor::from_f32({R, D}, xv));
  std::vector<float> want(xv.size());
  for (int r = 0; r < R; ++r) {
    double m = -INFINITY, s = 0;
    for (int i = 0; i < D; ++i) m = std::max(m, double(xv[r * D + i]));
    for (int i = 0; i < D; ++i) s += std::exp(double(xv[r * D + i]) - m);
    for (int i = 0; i < D; ++i) want[r * D + i] = float(std::exp(double(xv[r * D + i]) - m) / s);
  }
  expect_close(y, want, 1e-7f, 1e-5f);
  EXPECT_EQ(y.to_f32_vector()[3], 0.0f);
}

TEST(Argmax, LowestIndexOnTies) {
  Tensor x = Tensor::from_f32({3, 5}, {1, 3, 3, 2, 0,  //
                                       -1, -1, -1, -1, -1,  //
                                       0, 1, 2, 3, 4});
  Tensor a = ops::argmax(x);
  EXPECT_EQ(a.dtype(), DType::i32);
  EXPECT_EQ(a.shape(), (Shape{3}));
  EXPECT_EQ(a.data<int32_t>()[0], 1);
  EXPECT_EQ(a.data<int32_t>()[1], 0);
  EXPECT_EQ(a.data<int32_t>()[2], 4);
  // Large random rows in every float dtype.
  auto v = rand_vec(4 * 3001, 11);
  for (DType dt : optest::kFloatDTypes) {
    auto q = optest::round_to(v, dt);
    Tensor am = ops::argmax(optest::make_tensor({4, 3001}, v, dt));
    for (int r = 0; r < 4; ++r) {
      auto it = std::max_element(q.begin() + r * 3001, q.begin() + (r + 1) * 3001);
      EXPECT_EQ(am.data<int32_t>()[r], int(it - (q.begin() + r * 3001)));
    }
  }
}

#ifndef MLXCEL_WITH_CUDA  // only meaningful without the CUDA backend
TEST(Elementwise, CudaTensorsAreUnsupported) {
  Tensor c = fake_cuda({4, 8});
  expect_error([&] { ops::scale(c, 2.0f); }, ErrorKind::unsupported, "[scale] has no CUDA implementation");
  expect_error([&] { ops::softmax(c); }, ErrorKind::unsupported, "[softmax] has no CUDA implementation");
  expect_error([&] { ops::add(c, rand_f32({4, 8}, 1)); }, ErrorKind::invalid_request, "[add]");
}
#endif

}  // namespace
}  // namespace mlxcel
