#include "backends/cpu/isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace mlxcel::cpu {

namespace {

Isa detect() {
#if defined(MLXCEL_CPU_HAS_AVX2_BUILD) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
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

const char* isa_name(Isa level) { return level == Isa::avx2 ? "avx2" : "generic"; }

}  // namespace mlxcel::cpu
