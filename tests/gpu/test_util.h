// Helpers for the CUDA kernel tests: random host tensors, device round trips,
// poisoned outputs and relative-error comparisons.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/isa.h"
#include "backends/cuda/kernels.h"
#include "base/half.h"
#include "tensor/tensor.h"

namespace mlxcel::gputest {

// A fresh seed for every draw, so no two checks see the same data.
inline std::mt19937& rng() {
  static std::mt19937 g(std::random_device{}());
  return g;
}

inline Tensor host_from(const Shape& shape, DType dt, const std::vector<float>& v) {
  Tensor t = Tensor::empty(shape, dt);
  const size_t n = v.size();
  for (size_t i = 0; i < n; ++i) {
    switch (dt) {
      case DType::f32: t.data<float>()[i] = v[i]; break;
      case DType::f16: t.data<uint16_t>()[i] = f32_to_f16(v[i]); break;
      case DType::bf16: t.data<uint16_t>()[i] = f32_to_bf16(v[i]); break;
      default: ADD_FAILURE() << "host_from: bad dtype";
    }
  }
  return t;
}

// Uniform values in [lo, hi) of dtype dt on the host.
inline Tensor rand_host(const Shape& shape, DType dt = DType::f32, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(size_t(shape_numel(shape)));
  for (auto& x : v) x = d(rng());
  return host_from(shape, dt, v);
}

inline Tensor rand_ids(int64_t n, int32_t hi) {
  std::uniform_int_distribution<int32_t> d(0, hi - 1);
  Tensor t = Tensor::empty({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) t.data<int32_t>()[i] = d(rng());
  return t;
}

inline Tensor gpu(const Tensor& t) { return t.defined() ? cuda::to_device(t, Device::cuda()) : t; }
inline Tensor host(const Tensor& t) { return cuda::to_device(t, Device::cpu()); }

// A device tensor full of 0xff bytes (NaN for floats, -1 for i32): unwritten outputs show.
inline Tensor poisoned(const Shape& shape, DType dt) {
  Tensor h = Tensor::empty(shape, dt);
  std::memset(h.raw(), 0xff, h.nbytes());
  return gpu(h);
}

// ||got - want|| / ||want||; NaN or Inf anywhere fails.
inline double rel_err(const Tensor& got, const Tensor& want) {
  const std::vector<float> a = (got.device().type == DeviceType::cpu ? got : host(got)).to_f32_vector();
  const std::vector<float> b = (want.device().type == DeviceType::cpu ? want : host(want)).to_f32_vector();
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

inline bool bytes_equal(const Tensor& got, const Tensor& want) {
  Tensor a = got.device().type == DeviceType::cpu ? got : host(got);
  Tensor b = want.device().type == DeviceType::cpu ? want : host(want);
  a = a.is_contiguous() ? a : a.clone();
  b = b.is_contiguous() ? b : b.clone();
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

constexpr double kTolF32 = 1e-4, kTolQuant = 1e-3, kTolBf16 = 1e-2;

// Kernel tests compare against the CPU's f32 arithmetic: the quantized batch-1 GEMV runs
// its exact design (0) unless a test picks another (the default rounds activations to
// bf16 or int8; cuda_ops_test's FusedOpsMatchComposition checks every design), and the
// CPU's MLX 4-bit decode GEMV, which on AVX512_BF16 hosts rounds x to bf16 by default
// (backends/cpu/isa.h), takes x in f32.
class ExactGemvEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    cuda::set_gemv_variants(1, 0);
    cpu::set_q4_x_parts(0);
  }
};
inline const bool kExactGemvRegistered = [] {
  ::testing::AddGlobalTestEnvironment(new ExactGemvEnvironment);
  return true;
}();

#define REQUIRE_GPU()                                                     \
  do {                                                                    \
    ::mlxcel::cuda::init();                                               \
    if (!::mlxcel::cuda::available()) GTEST_SKIP() << "no CUDA device";   \
  } while (0)

}  // namespace mlxcel::gputest
