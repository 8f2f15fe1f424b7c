#include "backends/cpu/isa.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

namespace mlxcel::cpu {

namespace {

Isa detect() {
#if defined(MLXCEL_CPU_HAS_AVX2_BUILD) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
#if defined(MLXCEL_CPU_HAS_AVX512_BUILD)
  // __builtin_cpu_supports also checks that the OS saves the ZMM state (XCR0).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
    return Isa::avx512;
#endif
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
    return Isa::avx2;
#endif
  return Isa::generic;
}

Isa clamp(Isa level) { return int(level) > int(best_isa()) ? best_isa() : level; }

std::atomic<int>& current() {
  static std::atomic<int> level{[] {
    const char* e = std::getenv("MLXCEL_CPU_ISA");
    if (e && std::strcmp(e, "generic") == 0) return int(Isa::generic);
    if (e && std::strcmp(e, "avx2") == 0) return int(clamp(Isa::avx2));
    return int(best_isa());
  }()};
  return level;
}

}  // namespace

Isa best_isa() {
  static const Isa best = detect();
  return best;
}

Isa isa() { return Isa(current().load(std::memory_order_relaxed)); }

Isa set_isa(Isa level) { return Isa(current().exchange(int(clamp(level)))); }

const char* isa_name(Isa level) {
  switch (level) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

bool has_avx512_bf16() {
  static const bool yes = [] {
#if defined(MLXCEL_CPU_HAS_AVX512_BUILD) && (defined(__x86_64__) || defined(__i386__))
    return best_isa() == Isa::avx512 && __builtin_cpu_supports("avx512bf16");  // best_isa() ran cpu_init
#else
    return false;
#endif
  }();
  return yes;
}

namespace {
std::atomic<bool>& bf16_switch() {
  static std::atomic<bool> on{[] {
    const char* e = std::getenv("MLXCEL_CPU_BF16");
    return has_avx512_bf16() && !(e && std::strcmp(e, "0") == 0);
  }()};
  return on;
}
}  // namespace

bool bf16_products() { return isa() == Isa::avx512 && bf16_switch().load(std::memory_order_relaxed); }

bool set_bf16_products(bool on) { return bf16_switch().exchange(on && has_avx512_bf16()); }

namespace {
std::atomic<int>& q4_parts_switch() {
  static std::atomic<int> parts{[] {
    const char* e = std::getenv("MLXCEL_CPU_Q4_X");
    if (e && std::strcmp(e, "int8") == 0) return kQ4XInt8;
    if (e && std::strcmp(e, "int16") == 0) return kQ4XInt16;
    if (e && std::strcmp(e, "f32") == 0) return 0;
    if (e && std::strcmp(e, "bf16") == 0) return has_avx512_bf16() ? 1 : 0;
    if (e && std::strcmp(e, "bf16x2") == 0) return has_avx512_bf16() ? 2 : 0;
    return -1;
  }()};
  return parts;
}
}  // namespace

int q4_x_parts() { return isa() != Isa::generic ? q4_parts_switch().load(std::memory_order_relaxed) : 0; }

int set_q4_x_parts(int parts) {
  parts = std::clamp(parts, -1, kQ4XInt16);
  if ((parts == 1 || parts == 2) && !has_avx512_bf16()) parts = 0;
  return q4_parts_switch().exchange(parts);
}

int q4_x_form(bool bf16_scales) {
  const int parts = q4_x_parts();
  // The avx2 build has the integer forms and the f32 path; its default is the int16 form.
  if (isa() == Isa::avx2) return parts == 0 || parts == kQ4XInt8 ? parts : kQ4XInt16;
  if (parts >= 0) return parts;
  return !has_avx512_bf16() ? kQ4XInt16 : bf16_scales && bf16_products() ? 1 : 2;
}

}  // namespace mlxcel::cpu
