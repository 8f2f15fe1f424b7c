// Which build of the CPU kernels runs (runtime dispatch by CPU features).
//
// The kernel sources (copy, norm, elementwise, linear, quantized, attention,
// gguf_quants) are compiled once per instruction-set level, each build in its own
// namespace (mlxcel::cpu::generic, mlxcel::cpu::avx2, and mlxcel::gguf::<level>); the
// public functions of kernels.h, linear.h, quantized.h, attention.h and gguf_quants.h
// forward to the build chosen here (dispatch.cpp). So one binary runs on any x86-64
// CPU and uses AVX2 + FMA + F16C where the CPU has them, whatever machine built it.
//
// Internal to backends/cpu, ops (ops::cpu_kernel_isa) and the tests.
#pragma once

namespace mlxcel::cpu {

enum class Isa { generic = 0, avx2 = 1 };

// The kernels in use: the best level this CPU supports, or MLXCEL_CPU_ISA=generic|avx2
// (read once; a level the CPU lacks falls back to the best it has).
Isa isa();
// The best level this CPU supports among the builds compiled in.
Isa best_isa();
// Selects the kernels (tests, benchmarks); a level above best_isa() selects best_isa().
// Returns the previous level. Not for use while kernels run on other threads.
Isa set_isa(Isa level);
const char* isa_name(Isa level);  // "generic", "avx2"

}  // namespace mlxcel::cpu
