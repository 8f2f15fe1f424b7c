// Which build of the CPU kernels runs (runtime dispatch by CPU features).
//
// The kernel sources (copy, norm, elementwise, linear, quantized, attention,
// gguf_quants) are compiled once per instruction-set level, each build in its own
// namespace (mlxcel::cpu::generic, mlxcel::cpu::avx2, mlxcel::cpu::avx512, and
// mlxcel::gguf::<level>); the public functions of kernels.h, linear.h, quantized.h,
// attention.h and gguf_quants.h forward to the build chosen here (dispatch.cpp). So one
// binary runs on any x86-64 CPU and uses AVX2 + FMA + F16C, or AVX-512 (F, BW, VL, DQ)
// with VNNI, where the CPU has them, whatever machine built it. The avx512 build's BF16
// kernels run only where the CPU also has AVX512_BF16 (has_avx512_bf16()).
//
// Internal to backends/cpu, ops (ops::cpu_kernel_isa) and the tests.
#pragma once

namespace mlxcel::cpu {

enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

// The kernels in use: the best level this CPU supports, or a lower one by
// MLXCEL_CPU_ISA=generic|avx2 (read once; a level the CPU lacks falls back to the best it has).
Isa isa();
// The best level this CPU supports among the builds compiled in.
Isa best_isa();
// Selects the kernels (tests, benchmarks); a level above best_isa() selects best_isa().
// Returns the previous level. Not for use while kernels run on other threads.
Isa set_isa(Isa level);
const char* isa_name(Isa level);  // "generic", "avx2", "avx512"
// Whether the CPU runs AVX512_BF16 (VDPBF16PS).
bool has_avx512_bf16();
// Whether the avx512 build computes prompt-sized products (more than kGemvMaxRows rows
// of x) of bf16 weights, dense or MLX-quantized with bf16 scales, in bf16: x and the
// weights rounded to bf16, pairs of products summed in f32 by VDPBF16PS (what a bf16
// model's GEMM does on a GPU, at twice the f32 FMA rate). True while the avx512 build is
// in use, where has_avx512_bf16() and MLXCEL_CPU_BF16 is not 0. set_bf16_products (tests,
// benchmarks) returns the previous setting and cannot turn it on without the instructions.
bool bf16_products();
bool set_bf16_products(bool on);
// How the avx512 and avx2 builds' MLX 4- and 8-bit decode GEMV (up to kGemvMaxRows rows of
// x) takes x; the weights stay exact in every form:
//   1 or 2 (MLXCEL_CPU_Q4_X=bf16|bf16x2; needs AVX512_BF16): x as 1 or 2 bf16 parts (hi +
//     lo: 16 of f32's 24 bits) by VDPBF16PS;
//   kQ4XInt16 (4, MLXCEL_CPU_Q4_X=int16): x quantized per weight group to 16-bit integers
//     (d = max |x| / (127 * 256)), as two int8 parts, by VPDPBUSD (avx512: four a 64-byte
//     chunk of weights; as exact as one bf16 part or more, at about its rate:
//     cpu_kernels_bench q4 g64 4096^2, hot: 0.19-0.23 ms, bf16 0.21-0.28, f32 0.39-0.41) or
//     VPMADDUBSW + VPMADDWD (avx2; 8-bit weights by VPMADDWD against x as int16);
//   kQ4XInt8 (3, MLXCEL_CPU_Q4_X=int8): x quantized per weight group to int8 (d = max |x| /
//     127, as llama.cpp's activations for its Q4_0 / Q8_0 / K-quant weights): the fastest
//     (hot 0.13 ms) but the least exact (the family fixtures' logits move by 1-11% where
//     the other forms stay within 1e-3, and greedy tokens of those random-weight models
//     change), so opt-in;
//   0 (MLXCEL_CPU_Q4_X=f32): the f32 paths.
// The default (-1): 1 bf16 part for bf16 scales where bf16_products() (the rule prompt-sized
// products follow), else 2 parts; int16 without AVX512_BF16, and in the avx2 build (which
// has no bf16 forms). The avx2 build's prompt-sized products (more than kGemvMaxRows rows)
// of MLX 4- and 8-bit weights take x in the integer forms too (VPMADDWD against the
// centred weights as int16; the f32 GEMM with MLXCEL_CPU_Q4_X=f32). q4_x_parts: the setting (read once; 0 in
// the generic build); set_q4_x_parts (tests, benchmarks) returns the previous setting (a
// bf16 form without the instructions sets 0); q4_x_form: the form for a weight's scales.
constexpr int kQ4XInt8 = 3;
constexpr int kQ4XInt16 = 4;
int q4_x_parts();
int set_q4_x_parts(int parts);
int q4_x_form(bool bf16_scales);

}  // namespace mlxcel::cpu
