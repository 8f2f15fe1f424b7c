// IEEE half (f16) and bfloat16 conversions, bit-exact with PyTorch/numpy
// (round to nearest even; NaN stays NaN).
#pragma once

#include <cstdint>
#include <cstring>

namespace mlxcel {

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

#if defined(__clang__) && __clang_major__ < 15
#define MLXCEL_NO_FLOAT16 1  // clang 14 rejects _Float16 on x86-64
#endif

#ifndef MLXCEL_NO_FLOAT16
// NOTE: _Float16 is native on x86-64 (g++ >= 12, clang >= 15) and aarch64; the
// conversions round to nearest even like numpy.
inline float f16_to_f32(uint16_t h) { return static_cast<float>(__builtin_bit_cast(_Float16, h)); }
inline uint16_t f32_to_f16(float f) { return __builtin_bit_cast(uint16_t, static_cast<_Float16>(f)); }
#else
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return bits_to_f32(sign);
    // subnormal: value = man * 2^-24
    float v = float(man) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}
inline uint16_t f32_to_f16(float f) {
  uint32_t u = f32_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return uint16_t(sign | 0x7e00);  // NaN
  if (u >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // rounds to inf
  if (u < 0x38800000u) {                                  // subnormal or zero in f16
    // Round |f| * 2^24 to the nearest integer, ties to even.
    float v = bits_to_f32(u) * 16777216.0f;
    float r = __builtin_rintf(v);
    return uint16_t(sign | uint16_t(r));
  }
  uint32_t mant = u & 0x7fffffu, exp = (u >> 23) - 112;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;
  return uint16_t(sign | h);
}
#endif

}  // namespace mlxcel
