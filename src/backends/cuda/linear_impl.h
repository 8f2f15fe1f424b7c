// Internal helpers shared by linear.cu and quantized.cu.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backends/cuda/runtime.h"
#include "tensor/dtype.h"

namespace mlxcel::ops::detail {
struct RopeKvTarget;
}

namespace mlxcel::cuda {

// Up to kMaxParts products of one x in one GEMV launch (kernels.h: linear_multi,
// linear_gated and their quantized twins). Blocks [block_end[i-1], block_end[i]) compute
// part i. Gated (gate_act >= 0): parts 0 and 1 are gate and up of the same N, each block
// takes the same rows of both and writes act(gate) * up to out[0].
constexpr int kMaxParts = 3;
// What a block reads first to find its rows and weights (n, block_end, N, w) comes first:
// 64 bytes, one line of the kernels' constant cache.
struct GemvParts {
  int n = 0;
  unsigned block_end[kMaxParts] = {};
  int64_t N[kMaxParts] = {};
  const void* w[kMaxParts] = {};       // dense: the [N, K] weight; quantized: packed words
  const void* scales[kMaxParts] = {};  // quantized only
  const void* biases[kMaxParts] = {};  // quantized only
  const void* bias[kMaxParts] = {};    // the optional [N] bias of each part
  void* out[kMaxParts] = {};
  int gate_act = -1;  // an Act when gated
};
static_assert(offsetof(GemvParts, w) + sizeof(GemvParts::w) == 64, "the first line");

// Whether x and every part's weight words start on 16 bytes (the tensor-core GEMVs' 16-byte
// copies) and, with scales_too, every part's scales and biases on 4 (their 4-byte copies).
inline bool copy_aligned(const float* x, const GemvParts& P, bool scales_too) {
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0) return false;
  for (int i = 0; i < P.n; ++i) {
    if (reinterpret_cast<uintptr_t>(P.w[i]) % 16 != 0) return false;
    if (scales_too && (reinterpret_cast<uintptr_t>(P.scales[i]) | reinterpret_cast<uintptr_t>(P.biases[i])) % 4 != 0)
      return false;
  }
  return true;
}
// The batch-1 GEMV design (kernels.h set_gemv_variants): 0 = a block splits K across 8
// warps over 4 (dense) or 8 (quantized) rows; 1..3 = each warp owns rows (R) and walks
// K with U loads in flight per lane, no shared memory (1: R4 U2, 2: R2 U4, 3: R8 U1);
// 4, 5 (4- and 8-bit weights; dense takes 1): the warp design on int8 activations and
// dp4a (4: R8 U1, 5: R4 U2); 6 (4- and 8-bit, 1-8 rows; dense takes 1): f16 weights and
// activations on the tensor cores (qgemv_mma); 7 (4- and 8-bit, M = 1; dense takes 1):
// design 0's math on weights streamed through shared memory (qgemv_stream); 8 (4-bit, a
// few rows; dense takes 1): the tensor cores with scales applied in f32 (qgemv_tc); 9
// (quantized only, the default): design 11 for the launches of one row it takes, else
// design 8 for 4-bit ones, design 0's paths (qgemm_mma, design 7, design 0) for the
// rest; 10 (4- and 8-bit, a few rows; dense
// takes 1): the tensor cores with K split over blocks (qgemv_ks); 11 (4- and 8-bit g32 /
// g64, one row; dense takes 1): weights straight into registers, f16 on the tensor cores,
// resident blocks (qgemv_rf; the default's first choice).
int gemv_variant(bool quantized);
// The decode folds switched on (kernels.h set_decode_folds: bit 0 the norm, bit 1 RoPE).
int decode_folds();
constexpr int kQgemvAuto = 9;
// Whether quantized design v runs design 0's paths (the default runs them where designs
// 11 and 8 do not apply).
inline bool design0_paths(int v) { return v == 0 || v == kQgemvAuto; }

// Design 7 (quantized, M == 1, 4- or 8-bit, sm_90, qgemv_stream.cu): design 0's math on
// weights streamed through shared memory by bulk copies, bit-identical to design 0. False
// (nothing launched) when the card, shape or alignment does not fit it, or, with
// only_where_faster (design 0's launches), when the shape is one where it measured slower.
bool qgemv_stream(const float* x, int M, GemvParts P, int bits, int group_shift, int64_t K, DType scale_dtype,
                  bool only_where_faster, cudaStream_t st);

// Design 6 (quantized, M <= 8, 4- or 8-bit, qgemv_mma.cu): weights dequantized to f16
// in registers, products on the tensor cores. False (nothing launched) when the shape or
// alignment does not fit it. group_shift = log2(group_size).
bool qgemv_mma(const float* x, int M, GemvParts P, int bits, int group_shift, int64_t K, DType scale_dtype,
               cudaStream_t st);

// Design 8 (quantized, 4-bit, M <= 8 / (128 / group size), qgemv_tc.cu): exact 128 + q
// nibbles and x rounded to bf16 on the tensor cores, each 128-value chunk's groups kept
// in separate MMA columns and folded with their scale and bias in f32. False (nothing
// launched) when the shape, alignment or card does not fit it.
bool qgemv_tc(const float* x, int M, GemvParts P, int bits, int group_shift, int64_t K, DType scale_dtype,
              cudaStream_t st);

// Design 11 (quantized, 4- or 8-bit, group 64 (K a multiple of 512 up to 14336) or 32
// (up to 8192), M == 1, qgemv_rf.cu): resident blocks of K / 512 warps walk 16-row tiles,
// each lane loading its MMA fragments of the weights straight from global memory; exact
// 1024 + q under f16 (nibbles by LOP3, bytes by PRMT), x rounded to f16 after a
// power-of-two scale per group (2^-12 relative, any finite x), f32 accumulation and
// fold. False (nothing launched) when the shape, alignment or card does not fit it.
// With norm (kernels.h RowNorm), x is the residual and the kernel also takes the residual
// add and the RMSNorm before the products: each block reads x + h and the norm weight for
// its conversion of x, the first block writes the sum, and the rows' sums are scaled by
// 1 / rms(x + h) at the end (the norm is linear in its scale; no barrier before the first
// tile).
// With rope (kernels.h RopeKv; parts q, k, v, not gated), the epilogue also rotates q and
// k and writes k and v into the caches. Both only where K <= 4096.
struct RowNorm;
using RopeKv = ops::detail::RopeKvTarget;
bool qgemv_rf(const float* x, int M, GemvParts P, int bits, int group_shift, int64_t K, DType scale_dtype,
              cudaStream_t st, const RowNorm* norm = nullptr, const RopeKv* rope = nullptr);
// Whether qgemv_rf takes one row of `bits` / 2^group_shift weights of K columns on this
// card, with (folded) the norm or RoPE folds: its conditions but the operands' alignment
// and the parts, so that a caller can ask before it makes them.
bool qgemv_rf_takes(int bits, int group_shift, int64_t K, bool folded);

// Whether a one-row q/k/v launch with parts P can take rope's epilogue: three parts, not
// gated, whole heads of D rows (D a multiple of d_multiple) in q and k, every pointer set,
// a cache of f32|f16|bf16 (what ops::detail::rope_kv_target gives; checked again here
// because the launches read them unguarded).
bool rope_kv_takes(const GemvParts& P, const RopeKv& rope, int d_multiple);

// Design 10 (quantized, 4- or 8-bit, M <= 8 / (128 / group size), qgemv_ks.cu): design 8's
// numerics for 4 bits (8 bits: exact 1024 + q and x scaled per column by a power of two
// into f16), a warp owning one slice of K (256 / 128 values) and a run of 16-row tiles,
// x's fragments in registers, its own cp.async ring, the slices' partial sums added in
// order by the last block of each row group (opt-in: not faster than designs 8 / 0,
// cuda_gemv.md run 9). False (nothing launched) when the shape, alignment or card does
// not fit (8 bits at group 128 with 16-bit scales too).
bool qgemv_ks(const float* x, int M, GemvParts P, int bits, int group_shift, int64_t K, DType scale_dtype,
              cudaStream_t st);

// 4- and 8-bit MLX affine products of 2..kQgemmMaxRows rows in bf16 on the tensor cores
// (qgemv_mma.cu): weights dequantized to bf16 in registers (exact q; s q + b by one bf16
// FMA for 4 bits, in f32 then rounded for 8), x rounded to bf16, f32 accumulation; the multi-part and
// gated forms as the GEMVs. False (nothing launched) when the shape, alignment or card
// does not fit it, or when it is off (MLXCEL_CUDA_QMMA=0, set_qgemm_mma(false): the
// callers' older paths run). MLXCEL_CUDA_QMMA_ROWS=N caps its rows.
constexpr int kQgemmMaxRows = 64;
bool qgemm_mma(const float* x, int M, GemvParts P, int bits, int group_shift, int64_t K, DType scale_dtype,
               cudaStream_t st);

// y [M, N] (out_dtype f32|bf16) = x [M, K] @ w [N, K]^T (+ bias) for M <= kSkinnyMaxRows,
// x and w both of dtype ct (bf16|f16), on the weight-streaming kernel (skinny_gemm.cu).
// False (nothing launched) when it is off or the shape, alignment or card does not fit.
bool skinny_gemm(const void* x, const void* w, DType ct, int64_t M, int64_t N, int64_t K, const void* bias,
                 DType bias_dtype, void* out, DType out_dtype, int device, cudaStream_t st);
// The blocks of one cluster that split K for an N x K weight (1, 2, 4 or 8).
int skinny_gemm_split(int64_t N, int64_t K, int device);

// Fills P.block_end for `rows_per_block` output rows per block; returns the grid size.
unsigned plan_blocks(GemvParts& P, int rows_per_block);

// out[m, n] = src[m, n] (+ bias[n]) in out's dtype; src may alias out (f32) or be null (zeros).
void finish_rows(const float* src, int64_t M, int64_t N, const void* bias, DType bias_dtype, void* out, DType out_dtype,
                 cudaStream_t st);
// y f32 [M, N] = x f32 [M, K] @ w f32 [N, K]^T through cuBLAS SGEMM (no TF32).
void gemm_f32_nt(const float* x, int64_t M, const float* w, int64_t N, int64_t K, float* y, int device);

}  // namespace mlxcel::cuda
