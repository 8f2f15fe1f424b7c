// rms_norm and layer_norm against double-precision references.
#include <cmath>

#include "test_util.h"

namespace mlxcel {
namespace {

using optest::expect_close;
using optest::expect_error;
using optest::rand_vec;

std::vector<float> rms_ref(const std::vector<float>& x, const std::vector<float>& w, int R, int D, double eps,
                           double off) {
  std::vector<float> out(x.size());
  for (int r = 0; r < R; ++r) {
    double ss = 0;
    for (int i = 0; i < D; ++i) ss += double(x[r * D + i]) * x[r * D + i];
    const double inv = 1.0 / std::sqrt(ss / D + eps);
    for (int i = 0; i < D; ++i) out[r * D + i] = float(x[r * D + i] * inv * ((w.empty() ? 1.0 : w[i]) + off));
  }
  return out;
}

TEST(RmsNorm, MatchesReferenceForEveryWeightDtype) {
  const int R = 9, D = 203;
  auto xv = rand_vec(R * D, 1, -3.0f, 3.0f), wv = rand_vec(D, 2);
  Tensor x = Tensor::from_f32({3, 3, D}, xv);
  for (DType dt : optest::kFloatDTypes) {
    Tensor w = optest::make_tensor({D}, wv, dt);
    auto wq = optest::round_to(wv, dt);
    expect_close(ops::rms_norm(x, w, 1e-6f), rms_ref(xv, wq, R, D, 1e-6, 0.0), 1e-6f, 2e-6f, dtype_name(dt));
    // Gemma: w_offset = 1.
    expect_close(ops::rms_norm(x, w, 1e-6f, 1.0f), rms_ref(xv, wq, R, D, 1e-6, 1.0), 1e-6f, 2e-6f, "gemma");
  }
  expect_close(ops::rms_norm(x, Tensor(), 1e-5f), rms_ref(xv, {}, R, D, 1e-5, 0.0), 1e-6f, 2e-6f, "no weight");
  EXPECT_EQ(ops::rms_norm(x, Tensor(), 1e-5f).shape(), (Shape{3, 3, D}));
  expect_error([&] { ops::rms_norm(x, Tensor::from_f32({D - 1}, rand_vec(D - 1, 3)), 1e-6f); },
               ErrorKind::invalid_request, "[rms_norm]");
  expect_error([&] { ops::rms_norm(optest::make_tensor({D}, wv, DType::f16), Tensor(), 1e-6f); },
               ErrorKind::invalid_request, "[rms_norm]");
}

TEST(LayerNorm, MatchesReference) {
  const int R = 6, D = 77;
  auto xv = rand_vec(R * D, 4, -2.0f, 5.0f), wv = rand_vec(D, 5), bv = rand_vec(D, 6);
  Tensor x = Tensor::from_f32({R, D}, xv);
  for (DType dt : optest::kFloatDTypes) {
    auto wq = optest::round_to(wv, dt), bq = optest::round_to(bv, dt);
    std::vector<float> want(xv.size()), want_nowb(xv.size());
    for (int r = 0; r < R; ++r) {
      double m = 0, v = 0;
      for (int i = 0; i < D; ++i) m += xv[r * D + i];
      m /= D;
      for (int i = 0; i < D; ++i) v += (xv[r * D + i] - m) * (xv[r * D + i] - m);
      v /= D;
      for (int i = 0; i < D; ++i) {
        const double n = (xv[r * D + i] - m) / std::sqrt(v + 1e-5);
        want[r * D + i] = float(n * wq[i] + bq[i]);
        want_nowb[r * D + i] = float(n);
      }
    }
    expect_close(ops::layer_norm(x, optest::make_tensor({D}, wv, dt), optest::make_tensor({D}, bv, dt), 1e-5f),
                 want, 2e-6f, 2e-6f, dtype_name(dt));
    expect_close(ops::layer_norm(x, Tensor(), Tensor(), 1e-5f), want_nowb, 2e-6f, 2e-6f, "no w, b");
  }
  expect_error([&] { ops::layer_norm(x, Tensor(), Tensor::from_f32({3}, {1, 2, 3}), 1e-5f); },
               ErrorKind::invalid_request, "[layer_norm]");
}

}  // namespace
}  // namespace mlxcel
