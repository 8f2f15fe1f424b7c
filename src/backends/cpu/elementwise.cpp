// Elementwise kernels, activations, softmax and argmax.
#include <cmath>
#include <limits>

#include "backends/cpu/kernels.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/simd.h"
#include "base/error.h"

// One build per ISA level (isa.h); dispatch.cpp defines the public mlxcel::cpu functions.
namespace mlxcel::cpu::MLXCEL_CPU_NS {

namespace {

template <typename T>
void binary_typed(const float* a, const T* b, float* out, int64_t n, int64_t D, bool broadcast, BinaryOp op) {
  const int64_t rows = broadcast ? n / D : 1;
  const int64_t cols = broadcast ? D : n;
  if (!broadcast) {
    parallel_for(n, 1, [&](int64_t s, int64_t e) {
      if (op == BinaryOp::add) {
        for (int64_t i = s; i < e; ++i) out[i] = a[i] + to_f32(b[i]);
      } else {
        for (int64_t i = s; i < e; ++i) out[i] = a[i] * to_f32(b[i]);
      }
    });
    return;
  }
  parallel_for(rows, cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* ar = a + r * cols;
      float* o = out + r * cols;
      if (op == BinaryOp::add) {
        for (int64_t i = 0; i < cols; ++i) o[i] = ar[i] + to_f32(b[i]);
      } else {
        for (int64_t i = 0; i < cols; ++i) o[i] = ar[i] * to_f32(b[i]);
      }
    }
  });
}

inline float gelu_tanh(float x) {
  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as torch's gelu(approximate="tanh").
  const float k = 0.7978845608028654f;
  return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}

inline float gelu_erf(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f)); }

template <Act A>
inline float act(float x) {
  if constexpr (A == Act::silu) return x / (1.0f + std::exp(-x));
  if constexpr (A == Act::gelu_tanh) return gelu_tanh(x);
  if constexpr (A == Act::gelu_erf) return gelu_erf(x);
  if constexpr (A == Act::relu) return x > 0.0f ? x : 0.0f;
  if constexpr (A == Act::relu2) return x > 0.0f ? x * x : 0.0f;
  return x;
}

template <Act A>
void activate_typed(const float* x, const float* up, float* out, int64_t n) {
  parallel_for(n, 8, [&](int64_t s, int64_t e) {
    if constexpr (A == Act::silu) {
      // x / (1 + e^-x) with the vector exp (about 1 ulp of std::exp).
      using namespace simd;
      const VecF one = set1(1.0f), zero_v = zero();
      for (; s + kWidth <= e; s += kWidth) {
        const VecF xv = load(x + s);
        VecF y = div(xv, add(one, exp(sub(zero_v, xv))));
        if (up) y = mul(y, load(up + s));
        store(out + s, y);
      }
    }
    if (up) {
      for (int64_t i = s; i < e; ++i) out[i] = act<A>(x[i]) * up[i];
    } else {
      for (int64_t i = s; i < e; ++i) out[i] = act<A>(x[i]);
    }
  });
}

void activate_dispatch(const float* x, const float* up, float* out, int64_t n, Act a) {
  switch (a) {
    case Act::silu: activate_typed<Act::silu>(x, up, out, n); break;
    case Act::gelu_tanh: activate_typed<Act::gelu_tanh>(x, up, out, n); break;
    case Act::gelu_erf: activate_typed<Act::gelu_erf>(x, up, out, n); break;
    case Act::relu: activate_typed<Act::relu>(x, up, out, n); break;
    case Act::relu2: activate_typed<Act::relu2>(x, up, out, n); break;
  }
}

template <typename T>
void argmax_typed(const T* x, int32_t* out, int64_t rows, int64_t D) {
  parallel_for(rows, D, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* row = x + r * D;
      int64_t best = 0;
      float bv = to_f32(row[0]);
      for (int64_t i = 1; i < D; ++i) {
        float v = to_f32(row[i]);
        if (v > bv || (std::isnan(v) && !std::isnan(bv))) {  // NaN wins, like torch.argmax
          bv = v;
          best = i;
        }
      }
      out[r] = int32_t(best);
    }
  });
}

}  // namespace

void binary(const Tensor& a, const Tensor& b, BinaryOp op, Tensor& out) {
  const int64_t n = a.numel();
  const bool broadcast = b.numel() != n;
  const int64_t D = broadcast ? b.numel() : n;
  switch (b.dtype()) {
    case DType::f32: binary_typed(a.data<float>(), b.data<float>(), out.data<float>(), n, D, broadcast, op); break;
    case DType::f16: binary_typed(a.data<float>(), b.data<f16_t>(), out.data<float>(), n, D, broadcast, op); break;
    case DType::bf16: binary_typed(a.data<float>(), b.data<bf16_t>(), out.data<float>(), n, D, broadcast, op); break;
    default: MLXCEL_CHECK(false, "binary with b of {}", dtype_name(b.dtype()));
  }
}

void scale(const Tensor& x, float s, Tensor& out) {
  const float* xp = x.data<float>();
  float* o = out.data<float>();
  parallel_for(x.numel(), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i] = xp[i] * s;
  });
}

float activate_scalar(float x, Act a) {
  switch (a) {
    case Act::silu: return act<Act::silu>(x);
    case Act::gelu_tanh: return act<Act::gelu_tanh>(x);
    case Act::gelu_erf: return act<Act::gelu_erf>(x);
    case Act::relu: return act<Act::relu>(x);
    case Act::relu2: return act<Act::relu2>(x);
  }
  return x;
}

void activate(const Tensor& x, Act a, Tensor& out) {
  activate_dispatch(x.data<float>(), nullptr, out.data<float>(), x.numel(), a);
}

void gated(const Tensor& gate, const Tensor& up, Act a, Tensor& out) {
  activate_dispatch(gate.data<float>(), up.data<float>(), out.data<float>(), gate.numel(), a);
}

void softcap(const Tensor& x, float cap, Tensor& out) {
  const float* xp = x.data<float>();
  float* o = out.data<float>();
  const float inv = 1.0f / cap;
  parallel_for(x.numel(), 8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i] = std::tanh(xp[i] * inv) * cap;
  });
}

void softmax(const Tensor& x, Tensor& out) {
  const int64_t D = x.dim(-1);
  const int64_t rows = D ? x.numel() / D : 0;
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  parallel_for(rows, D * 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = xp + r * D;
      float* o = op + r * D;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t i = 0; i < D; ++i) m = std::max(m, row[i]);
      if (m == -std::numeric_limits<float>::infinity()) m = 0.0f;  // all -inf: avoid inf - inf
      float sum = 0.0f;
      for (int64_t i = 0; i < D; ++i) {
        o[i] = std::exp(row[i] - m);
        sum += o[i];
      }
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      for (int64_t i = 0; i < D; ++i) o[i] *= inv;
    }
  });
}

void argmax(const Tensor& x, Tensor& out) {
  const int64_t D = x.dim(-1);
  const int64_t rows = x.numel() / D;
  int32_t* o = out.data<int32_t>();
  switch (x.dtype()) {
    case DType::f32: argmax_typed(x.data<float>(), o, rows, D); break;
    case DType::f16: argmax_typed(x.data<f16_t>(), o, rows, D); break;
    case DType::bf16: argmax_typed(x.data<bf16_t>(), o, rows, D); break;
    default: MLXCEL_CHECK(false, "argmax of {}", dtype_name(x.dtype()));
  }
}

}  // namespace mlxcel::cpu::MLXCEL_CPU_NS
