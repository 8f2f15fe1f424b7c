// RMSNorm and LayerNorm over the last dimension.
#include <cmath>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/simd.h"
#include "base/error.h"

// One build per ISA level (isa.h); dispatch.cpp defines the public mlxcel::cpu functions.
namespace mlxcel::cpu::MLXCEL_CPU_NS {

namespace {

// Weight row [D] widened to f32 (plus offset); empty weight -> 1 + offset.
std::vector<float> weight_f32(const Tensor& w, int64_t D, float offset) {
  std::vector<float> out(size_t(D), 1.0f + offset);
  if (w.defined()) {
    out = w.to_f32_vector();
    for (auto& v : out) v += offset;
  }
  return out;
}

float sum_squares(const float* x, int64_t D) {
  using namespace simd;
  VecF a0 = zero(), a1 = zero();
  int64_t i = 0;
  for (; i + 2 * kWidth <= D; i += 2 * kWidth) {
    VecF v0 = load(x + i), v1 = load(x + i + kWidth);
    a0 = fma(v0, v0, a0);
    a1 = fma(v1, v1, a1);
  }
  for (; i + kWidth <= D; i += kWidth) {
    VecF v = load(x + i);
    a0 = fma(v, v, a0);
  }
  float s = hsum(add(a0, a1));
  for (; i < D; ++i) s += x[i] * x[i];
  return s;
}

}  // namespace

void rms_norm(const Tensor& x, const Tensor& w, float eps, float w_offset, Tensor& out) {
  const int64_t D = x.dim(-1);
  const int64_t rows = D ? x.numel() / D : 0;
  const std::vector<float> wf = weight_f32(w, D, w_offset);
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  parallel_for(rows, D * 2, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = xp + r * D;
      float* o = op + r * D;
      // NOTE: like transformers: x * rsqrt(mean(x^2) + eps), then times the weight.
      const float inv = 1.0f / std::sqrt(sum_squares(row, D) / float(D) + eps);
      for (int64_t i = 0; i < D; ++i) o[i] = (row[i] * inv) * wf[size_t(i)];
    }
  });
}

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& out) {
  const int64_t D = x.dim(-1);
  const int64_t rows = D ? x.numel() / D : 0;
  const std::vector<float> wf = weight_f32(w, D, 0.0f);
  const std::vector<float> bf = b.defined() ? b.to_f32_vector() : std::vector<float>(size_t(D), 0.0f);
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  parallel_for(rows, D * 3, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = xp + r * D;
      float* o = op + r * D;
      float mean = 0.0f;
      for (int64_t i = 0; i < D; ++i) mean += row[i];
      mean /= float(D);
      float var = 0.0f;
      for (int64_t i = 0; i < D; ++i) {
        const float d = row[i] - mean;
        var += d * d;
      }
      var /= float(D);
      const float inv = 1.0f / std::sqrt(var + eps);
      for (int64_t i = 0; i < D; ++i) o[i] = (row[i] - mean) * inv * wf[size_t(i)] + bf[size_t(i)];
    }
  });
}

}  // namespace mlxcel::cpu::MLXCEL_CPU_NS
