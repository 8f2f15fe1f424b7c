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

// NOTE: _Float16 is native on x86-64 (g++ >= 12, clang >= 14) and aarch64; the
// conversions round to nearest even like numpy.
inline float f16_to_f32(uint16_t h) { return static_cast<float>(__builtin_bit_cast(_Float16, h)); }

inline uint16_t f32_to_f16(float f) {
  _Float16 h = static_cast<_Float16>(f);  // g++ 12 / clang 14 on x86-64: round to nearest even
  return __builtin_bit_cast(uint16_t, h);
}

}  // namespace mlxcel
