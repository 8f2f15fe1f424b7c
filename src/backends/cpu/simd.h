// Thin SIMD layer for the CPU kernels: one float vector type of kWidth lanes
// (AVX-512: 16, AVX2+FMA+F16C: 8, otherwise a scalar "vector" of 1), loads that
// widen f16/bf16 to f32, FMA and horizontal sums. The width follows the flags of the
// build (one build per level, isa.h); kernels are written once against this layer.
//
// Internal to backends/cpu: never included outside it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "base/half.h"

// The kernel sources are built once per instruction-set level (isa.h); the SIMD layer
// lives in a namespace named after the level, so that its inline functions (one body
// per level) never merge across builds. Other includers get their own.
#ifndef MLXCEL_CPU_NS
#define MLXCEL_CPU_NS native
#endif

namespace mlxcel::cpu {

// Element tags for 16-bit floats (both are stored as uint16_t bits).
struct bf16_t {
  uint16_t bits;
};
struct f16_t {
  uint16_t bits;
};
static_assert(sizeof(bf16_t) == 2 && sizeof(f16_t) == 2);

inline float to_f32(float v) { return v; }
inline float to_f32(bf16_t v) { return bf16_to_f32(v.bits); }
inline float to_f32(f16_t v) { return f16_to_f32(v.bits); }

template <typename T>
inline T from_f32(float v);
template <>
inline float from_f32<float>(float v) { return v; }
template <>
inline bf16_t from_f32<bf16_t>(float v) { return bf16_t{f32_to_bf16(v)}; }
template <>
inline f16_t from_f32<f16_t>(float v) { return f16_t{f32_to_f16(v)}; }

namespace simd {
inline namespace MLXCEL_CPU_NS {

#if defined(__AVX512F__) && defined(__AVX512BW__)
#define MLXCEL_SIMD_AVX512 1
constexpr int kWidth = 16;
using VecF = __m512;
inline VecF zero() { return _mm512_setzero_ps(); }
inline VecF set1(float v) { return _mm512_set1_ps(v); }
inline VecF load(const float* p) { return _mm512_loadu_ps(p); }
inline VecF load(const bf16_t* p) {
  __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
inline VecF load(const f16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline void store(float* p, VecF v) { _mm512_storeu_ps(p, v); }
inline VecF fma(VecF a, VecF b, VecF c) { return _mm512_fmadd_ps(a, b, c); }
inline VecF add(VecF a, VecF b) { return _mm512_add_ps(a, b); }
inline VecF sub(VecF a, VecF b) { return _mm512_sub_ps(a, b); }
inline VecF mul(VecF a, VecF b) { return _mm512_mul_ps(a, b); }
inline VecF div(VecF a, VecF b) { return _mm512_div_ps(a, b); }
inline VecF max(VecF a, VecF b) { return _mm512_max_ps(a, b); }
inline float hsum(VecF v) { return _mm512_reduce_add_ps(v); }
inline float hmax(VecF v) { return _mm512_reduce_max_ps(v); }

#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define MLXCEL_SIMD_AVX2 1
constexpr int kWidth = 8;
using VecF = __m256;
inline VecF zero() { return _mm256_setzero_ps(); }
inline VecF set1(float v) { return _mm256_set1_ps(v); }
inline VecF load(const float* p) { return _mm256_loadu_ps(p); }
inline VecF load(const bf16_t* p) {
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
inline VecF load(const f16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline void store(float* p, VecF v) { _mm256_storeu_ps(p, v); }
inline VecF fma(VecF a, VecF b, VecF c) { return _mm256_fmadd_ps(a, b, c); }
inline VecF add(VecF a, VecF b) { return _mm256_add_ps(a, b); }
inline VecF sub(VecF a, VecF b) { return _mm256_sub_ps(a, b); }
inline VecF mul(VecF a, VecF b) { return _mm256_mul_ps(a, b); }
inline VecF div(VecF a, VecF b) { return _mm256_div_ps(a, b); }
inline VecF max(VecF a, VecF b) { return _mm256_max_ps(a, b); }
inline float hsum(VecF v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hmax(VecF v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

#else
// Scalar fallback: a "vector" of one lane. Same kernels, no intrinsics.
constexpr int kWidth = 1;
using VecF = float;
inline VecF zero() { return 0.0f; }
inline VecF set1(float v) { return v; }
template <typename T>
inline VecF load(const T* p) { return to_f32(*p); }
inline void store(float* p, VecF v) { *p = v; }
inline VecF fma(VecF a, VecF b, VecF c) { return a * b + c; }
inline VecF add(VecF a, VecF b) { return a + b; }
inline VecF sub(VecF a, VecF b) { return a - b; }
inline VecF mul(VecF a, VecF b) { return a * b; }
inline VecF div(VecF a, VecF b) { return a / b; }
inline VecF max(VecF a, VecF b) { return a > b ? a : b; }
inline float hsum(VecF v) { return v; }
inline float hmax(VecF v) { return v; }
#endif

#if defined(__AVX2__)  // the avx2 and avx512 builds
// 8 x 8 transpose of 32-bit elements: out[g] lane r = in[r] lane g.
inline void transpose8x8(__m256i* r) {
  const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
  const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
  const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
  const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
  const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
  const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
  const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
  r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
  r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
  r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
  r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
  r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
  r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
  r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
  r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}
#endif

// e^v per lane for v <= 88.3 (larger values saturate to e^88.3); values below -87.3
// give about 1e-38 instead of smaller ones or 0, so callers that need exact zeros (masked
// attention scores) set them afterwards. Cephes' expf: n = round(v / ln 2), a two-part
// Cody-Waite reduction and a degree-6 polynomial; about 1 ulp off std::exp. Lane by lane
// std::exp where there is no vector version.
inline VecF exp(VecF v) {
#if defined(MLXCEL_SIMD_AVX2)
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.3762626647949f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), v);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n for n in [-126, 128); n = 128 (v near 88.7) is excluded by the clamp above.
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
#elif defined(MLXCEL_SIMD_AVX512)
  // The same steps on 16 lanes.
  v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-87.33654f)), _mm512_set1_ps(88.3762626647949f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), v);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
#else
  return std::exp(v);
#endif
}

// Dot product of n elements, f32 accumulation. x is f32, w any element type.
template <typename T>
inline float dot(const float* x, const T* w, int64_t n) {
  VecF a0 = zero(), a1 = zero();
  int64_t k = 0;
  for (; k + 2 * kWidth <= n; k += 2 * kWidth) {
    a0 = fma(load(x + k), load(w + k), a0);
    a1 = fma(load(x + k + kWidth), load(w + k + kWidth), a1);
  }
  for (; k + kWidth <= n; k += kWidth) a0 = fma(load(x + k), load(w + k), a0);
  float s = hsum(add(a0, a1));
  for (; k < n; ++k) s += x[k] * to_f32(w[k]);
  return s;
}

// y[0..n) += a * v[0..n) with v of any element type.
template <typename T>
inline void axpy(float* y, float a, const T* v, int64_t n) {
  VecF av = set1(a);
  int64_t k = 0;
  for (; k + kWidth <= n; k += kWidth) store(y + k, fma(av, load(v + k), load(y + k)));
  for (; k < n; ++k) y[k] += a * to_f32(v[k]);
}

// y[0..n) *= a.
inline void scale_inplace(float* y, float a, int64_t n) {
  VecF av = set1(a);
  int64_t k = 0;
  for (; k + kWidth <= n; k += kWidth) store(y + k, mul(av, load(y + k)));
  for (; k < n; ++k) y[k] *= a;
}

}  // namespace MLXCEL_CPU_NS
}  // namespace simd
}  // namespace mlxcel::cpu
