// Helpers for the op tests: random tensors, dtype round trips, comparisons.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/isa.h"
#include "backends/cpu/linear.h"
#include "base/error.h"
#include "base/half.h"
#include "ops/ops.h"
#include "tensor/tensor.h"

namespace mlxcel::optest {

inline std::vector<float> rand_vec(int64_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

inline Tensor rand_f32(const Shape& shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  return Tensor::from_f32(shape, rand_vec(shape_numel(shape), seed, lo, hi));
}

// A tensor of `dtype` holding `values` rounded to that dtype.
inline Tensor make_tensor(const Shape& shape, const std::vector<float>& values, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  for (size_t i = 0; i < values.size(); ++i) {
    switch (dtype) {
      case DType::f32: t.data<float>()[i] = values[i]; break;
      case DType::f16: t.data<uint16_t>()[i] = f32_to_f16(values[i]); break;
      case DType::bf16: t.data<uint16_t>()[i] = f32_to_bf16(values[i]); break;
      default: ADD_FAILURE() << "make_tensor: dtype " << dtype_name(dtype);
    }
  }
  return t;
}

// Values as the kernels see them after rounding to `dtype`.
inline std::vector<float> round_to(const std::vector<float>& v, DType dtype) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    switch (dtype) {
      case DType::f16: out[i] = f16_to_f32(f32_to_f16(v[i])); break;
      case DType::bf16: out[i] = bf16_to_f32(f32_to_bf16(v[i])); break;
      default: out[i] = v[i];
    }
  }
  return out;
}

// Whether the CPU kernels compute a product of M rows with weights (or MLX scales) of
// dtype wdt in bf16: x and the weights rounded to bf16 (backends/cpu/isa.h).
inline bool cpu_bf16_product(DType wdt, int64_t M) {
  return wdt == DType::bf16 && M > cpu::kGemvMaxRows && cpu::bf16_products();
}

// How the CPU's MLX 4- and 8-bit products take x for a product of M rows with K
// columns of `bits`-bit weights in groups of gs with scales of dtype sdt (cpu::q4_x_form):
// 0 = as f32, 1 or 2 = as that many bf16 parts, cpu::kQ4XInt8 / kQ4XInt16 = quantized to
// int8 / int16 per group.
inline int cpu_q4_x_parts(int64_t M, int64_t K, int bits, int gs, DType sdt) {
  if (cpu::isa() == cpu::Isa::generic || (bits != 4 && bits != 8) || K % gs != 0) return 0;
  const int form = cpu::q4_x_form(sdt == DType::bf16);
  const bool int_form = form == cpu::kQ4XInt8 || form == cpu::kQ4XInt16;
  // Prompt-sized products: the avx2 build's GEMM takes x in the integer forms too.
  if (M > cpu::kGemvMaxRows)
    return cpu::isa() == cpu::Isa::avx2 && int_form && (gs == 32 || gs == 64 || gs == 128) ? form : 0;
  if (int_form) return K % (bits == 4 ? 128 : 64) == 0 ? form : 0;
  return cpu::isa() == cpu::Isa::avx512 && K % 64 == 0 ? form : 0;  // the bf16 forms: avx512 only
}

// A group of x as the int8 decode form quantizes it (llama.cpp's Q8 activations: d = max
// |x| / qmax, q = round-to-nearest-even(x / d); qmax 127, or 127 * 256 for the int16 form):
// q, and d as the return value.
inline float int8_group(const float* x, int64_t n, int* q, float qmax = 127.0f) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / qmax;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int64_t i = 0; i < n; ++i) q[i] = int(std::nearbyintf(x[i] * id));
  return d;
}

// x as those parts carry it: bf16(x), plus bf16(x - bf16(x)) with two parts (exact sums).
inline std::vector<float> round_to_bf16_parts(std::vector<float> x, int parts) {
  if (parts == 0) return x;
  for (float& v : x) {
    const float hi = bf16_to_f32(f32_to_bf16(v));
    v = parts == 1 ? hi : hi + bf16_to_f32(f32_to_bf16(v - hi));
  }
  return x;
}

// |got - want| <= atol + rtol * |want| elementwise; reports the first few misses.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& want, float atol, float rtol,
                         const std::string& what = "") {
  ASSERT_EQ(got.size(), want.size()) << what;
  int misses = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const float tol = atol + rtol * std::fabs(want[i]);
    const bool ok = std::fabs(got[i] - want[i]) <= tol || (std::isnan(got[i]) && std::isnan(want[i]));
    if (!ok && misses++ < 5) ADD_FAILURE() << what << " [" << i << "] got " << got[i] << " want " << want[i];
  }
  EXPECT_EQ(misses, 0) << what << ": " << misses << " of " << got.size() << " differ";
}

inline void expect_close(const Tensor& got, const std::vector<float>& want, float atol, float rtol,
                         const std::string& what = "") {
  expect_close(got.to_f32_vector(), want, atol, rtol, what);
}

// fn() throws mlxcel::Error of `kind` whose message contains `needle`.
inline void expect_error(const std::function<void()>& fn, ErrorKind kind, const std::string& needle = "") {
  try {
    fn();
    ADD_FAILURE() << "no error thrown (wanted " << error_kind_name(kind) << " '" << needle << "')";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

inline const DType kFloatDTypes[] = {DType::f32, DType::f16, DType::bf16};

}  // namespace mlxcel::optest
