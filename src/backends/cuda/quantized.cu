// MLX affine quantized matrices (ops/quant.h): a fused dequantizing GEMV for decode,
// dequantize-tile + SGEMM for prefill, and dequantization (rows to f32, whole matrix
// in the scales' dtype).
#include <algorithm>
#include <cstdlib>
#include <type_traits>
#include <utility>

#include "backends/cuda/common.cuh"
#include "backends/cuda/gemv.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/linear_impl.h"
#include "backends/cuda/qchunk.cuh"

namespace mlxcel::cuda {

namespace {

// Decode (M == 1) takes 8 weight rows per block; M in 2..8 takes 4 (its accumulators
// grow with M).
constexpr int kQThreads = 128;

// log2 of a group size the kernels take (32, 64, 128), else -1.
int group_shift_of(int group_size) {
  return group_size == 32 ? 5 : group_size == 64 ? 6 : group_size == 128 ? 7 : -1;
}
// From this many rows on, qlinear multiplies on the tensor cores in bf16 (x and the
// dequantized weights rounded to bf16, f32 accumulation): prompt-sized products. Fewer
// rows stay in f32. MLXCEL_CUDA_QTC_ROWS=N (9..64) moves the boundary (A/B runs).
int64_t tensor_core_min_rows() {
  static const int64_t rows = [] {
    const char* e = std::getenv("MLXCEL_CUDA_QTC_ROWS");
    const long v = e && *e ? std::atol(e) : 64;
    return int64_t(v < kGemvMaxRows + 1 ? kGemvMaxRows + 1 : v > 64 ? 64 : v);
  }();
  return rows;
}

// The R weight rows of part `part` a block or warp reads (gated: R/2 rows of gate, the same of up):
// packed words, scales and biases of each (rows past N clamp to N - 1).
template <typename S, int R>
struct QRowPtrs {
  const uint32_t* wp[R];
  const S* sp[R];
  const S* bp[R];
  template <bool kGated>
  __device__ __forceinline__ void init(const GemvParts& P, int part, int64_t row0, int64_t N, int64_t words_per_row,
                                       int64_t groups_per_row) {
    constexpr int kOut = kGated ? R / 2 : R;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int src = kGated ? r / kOut : part;
      int64_t row = row0 + r % kOut;
      row = row < N ? row : N - 1;
      wp[r] = static_cast<const uint32_t*>(P.w[src]) + row * words_per_row;
      sp[r] = static_cast<const S*>(P.scales[src]) + row * groups_per_row;
      bp[r] = static_cast<const S*>(P.biases[src]) + row * groups_per_row;
    }
  }
};

// y [M, N] = x [M, K] @ dequant(w)^T (+ bias) for each part of P (linear_impl.h; gated:
// half of a block's kQRows weight rows from gate, the same rows from up). Uses
// sum_j x_j (s q_j + b) = s (x.q) + b sum(x). Biases f32, outputs f32.
template <int BITS, typename S, int MAXM, int kQRows, bool kGated>
__global__ void __launch_bounds__(kQThreads) qgemv_kernel(const float* __restrict__ x, int M, const GemvParts P,
                                                          int64_t K, int group_shift) {
  constexpr int kOut = kGated ? kQRows / 2 : kQRows;
  __shared__ float red[kQThreads / 32][MAXM][kQRows];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const GemvRows gr = gemv_rows(P, blockIdx.x, kOut);
  const int part = gr.part;
  const int64_t N = gr.N, row0 = gr.row0;
  const int64_t words_per_row = K / 32 * BITS, groups_per_row = K >> group_shift, chunks = K / 32;
  float acc[MAXM][kQRows];
#pragma unroll
  for (int m = 0; m < MAXM; ++m)
#pragma unroll
    for (int r = 0; r < kQRows; ++r) acc[m][r] = 0.0f;
  QRowPtrs<S, kQRows> rows;
  rows.template init<kGated>(P, part, row0, N, words_per_row, groups_per_row);
  const uint32_t* const* wp = rows.wp;
  const S* const* sp = rows.sp;
  const S* const* bp = rows.bp;

  uint32_t wd[kQRows][BITS];
  float sc[kQRows], bi[kQRows];
  auto load_weights = [&](int64_t c) {
    const int64_t g = (c * 32) >> group_shift;
#pragma unroll
    for (int r = 0; r < kQRows; ++r) {
      load_chunk<BITS>(wp[r] + c * BITS, wd[r]);
      sc[r] = to_f(sp[r][g]);
      bi[r] = to_f(bp[r][g]);
    }
  };
  // The first chunk's weights are in flight before the wait for the kernel that writes x.
  if (int64_t(threadIdx.x) < chunks) load_weights(threadIdx.x);
  pdl_enter();
  for (int64_t c = threadIdx.x; c < chunks; c += kQThreads) {
    if (c != int64_t(threadIdx.x)) load_weights(c);
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
      if (m < M) {
        float xv[32];
        load_x_chunk(x + int64_t(m) * K + c * 32, xv);
        float xs = 0.0f;
#pragma unroll
        for (int j = 0; j < 32; ++j) xs += xv[j];
        constexpr bool kInPlace = BITS == 4;  // chunk_value_in_place4 (q4 tg +4% on an H100)
        if constexpr (kInPlace) scale_x_chunk4(xv);
#pragma unroll
        for (int r = 0; r < kQRows; ++r) {
          float d = 0.0f;
#pragma unroll
          for (int j = 0; j < 32; ++j) {
            if constexpr (kInPlace) d = fmaf(xv[j], chunk_value_in_place4(wd[r], j), d);
            else d = fmaf(xv[j], chunk_value<BITS>(wd[r], j), d);
          }
          if constexpr (kInPlace) d *= kChunkUnscale;
          acc[m][r] = fmaf(sc[r], d, fmaf(bi[r], xs, acc[m][r]));
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < MAXM; ++m) {
    if (m < M) {
#pragma unroll
      for (int r = 0; r < kQRows; ++r) {
        const float s = warp_sum(acc[m][r]);
        if (lane == 0) red[warp][m][r] = s;
      }
    }
  }
  __syncthreads();
  const int t = threadIdx.x;
  if (t < M * kOut) {
    const int m = t / kOut, r = t % kOut;
    const int64_t n = row0 + r;
    if (n < N) {
      float s = 0.0f;
#pragma unroll
      for (int q = 0; q < kQThreads / 32; ++q) s += red[q][m][r];
      if (P.bias[part]) s += static_cast<const float*>(P.bias[part])[n];
      if constexpr (kGated) {
        float u = 0.0f;
#pragma unroll
        for (int q = 0; q < kQThreads / 32; ++q) u += red[q][m][r + kOut];
        if (P.bias[1]) u += static_cast<const float*>(P.bias[1])[n];
        s = act_any(Act(P.gate_act), s) * u;
      }
      static_cast<float*>(P.out[part])[int64_t(m) * N + n] = s;
    }
  }
}

// x chunk (32 f32 values) -> int8 in the order the weight words need (dp4a operands),
// with dx = amax / 127 and the exact f32 sum. 4 bits: word k holds values 8k..8k+7 as
// nibbles; (w & 0x0F0F0F0F) has values 8k, 8k+2, 8k+4, 8k+6 and (w >> 4) & 0x0F0F0F0F
// the odd ones, so xq[2k] packs the even x and xq[2k + 1] the odd. 8 bits: word k holds
// values 4k..4k+3 in order, xq[k] packs them.
template <int BITS>
__device__ __forceinline__ void quantize_x_chunk(const float* __restrict__ x, int* xq, float& dx, float& xs) {
  float xv[32];
  load_x_chunk(x, xv);
  float amax = 0.0f, sum = 0.0f;
#pragma unroll
  for (int j = 0; j < 32; ++j) amax = fmaxf(amax, fabsf(xv[j])), sum += xv[j];
  const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
  dx = amax / 127.0f;
  xs = sum;
  // round(x * id) in the low byte: 1.5 * 2^23 + q keeps q's two's complement there.
  int r[32];
#pragma unroll
  for (int j = 0; j < 32; ++j) r[j] = __float_as_int(fmaf(xv[j], id, 12582912.0f));
  if constexpr (BITS == 4) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int* q = r + 8 * k;
      xq[2 * k] = __byte_perm(__byte_perm(q[0], q[2], 0x0040), __byte_perm(q[4], q[6], 0x0040), 0x5410);
      xq[2 * k + 1] = __byte_perm(__byte_perm(q[1], q[3], 0x0040), __byte_perm(q[5], q[7], 0x0040), 0x5410);
    }
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int* q = r + 4 * k;
      xq[k] = __byte_perm(__byte_perm(q[0], q[1], 0x0040), __byte_perm(q[2], q[3], 0x0040), 0x5410);
    }
  }
}

// Batch-1 quantized GEMV, warp-per-rows design (gemv_variant 1..5): warp w owns R weight
// rows (gated: R/2 of gate and the same of up); lane l takes chunks l, l + 32, ... (32
// values = BITS words each), U chunks per row in flight. P.block_end counts warps.
// kInt8 (designs 4, 5; 4 and 8 bits): each lane rounds its x chunk to int8 (per-chunk
// scale, like llama.cpp's q8_1 activations) and takes the dot products with dp4a, 4
// products per instruction: sum_j x_j (s q_j + b) ~= s dx (xq . q) + b sum(x), the bias
// term exact. Otherwise f32 throughout, as qgemv_kernel.
template <int BITS, typename S, int R, int U, bool kGated, bool kInt8>
__global__ void __launch_bounds__(128) qgemv_warp_kernel(const float* __restrict__ x, const GemvParts P, int64_t K,
                                                         int group_shift) {
  static_assert(!kInt8 || BITS == 4 || BITS == 8, "dp4a GEMV: 4 or 8 bits");
  constexpr int kOut = kGated ? R / 2 : R;
  const int lane = threadIdx.x & 31;
  const unsigned wid = blockIdx.x * 4 + (threadIdx.x >> 5);
  if (wid >= gemv_units<kGated>(P)) return;
  const GemvRows gr = gemv_rows(P, wid, kOut);
  const int64_t words_per_row = K / 32 * BITS, groups_per_row = K >> group_shift, chunks = K / 32;
  QRowPtrs<S, R> rows;
  rows.template init<kGated>(P, gr.part, gr.row0, gr.N, words_per_row, groups_per_row);
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  for (int64_t c0 = lane; c0 < chunks; c0 += 32 * U) {
    uint32_t wd[U][R][BITS];
    float sc[U][R], bi[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + 32 * u;
      if (c < chunks) {
        const int64_t g = (c * 32) >> group_shift;
#pragma unroll
        for (int r = 0; r < R; ++r) {
          load_chunk<BITS>(rows.wp[r] + c * BITS, wd[u][r]);
          sc[u][r] = to_f(rows.sp[r][g]);
          bi[u][r] = to_f(rows.bp[r][g]);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + 32 * u;
      if (c >= chunks) continue;
      if constexpr (kInt8) {
        int xq[8];
        float dx, xs;
        quantize_x_chunk<BITS>(x + c * 32, xq, dx, xs);
        int xq_sum = 0;
        if constexpr (BITS == 8) {
#pragma unroll
          for (int k = 0; k < 8; ++k) xq_sum = __dp4a(xq[k], 0x01010101, xq_sum);
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
          int d = 0;
          if constexpr (BITS == 4) {
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              const uint32_t w = wd[u][r][k];
              d = __dp4a(int(w & 0x0F0F0F0Fu), xq[2 * k], d);
              d = __dp4a(int((w >> 4) & 0x0F0F0F0Fu), xq[2 * k + 1], d);
            }
          } else {
            // q in 0..255: (q - 128) as a signed byte, plus 128 sum(xq).
#pragma unroll
            for (int k = 0; k < 8; ++k) d = __dp4a(int(wd[u][r][k] ^ 0x80808080u), xq[k], d);
            d += 128 * xq_sum;
          }
          acc[r] = fmaf(sc[u][r] * dx, float(d), fmaf(bi[u][r], xs, acc[r]));
        }
      } else {
        float xv[32];
        load_x_chunk(x + c * 32, xv);
        float xs = 0.0f;
#pragma unroll
        for (int j = 0; j < 32; ++j) xs += xv[j];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float d = 0.0f;
#pragma unroll
          for (int j = 0; j < 32; ++j) d = fmaf(xv[j], chunk_value<BITS>(wd[u][r], j), d);
          acc[r] = fmaf(sc[u][r], d, fmaf(bi[u][r], xs, acc[r]));
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
  store_warp_rows<R, kGated>(acc, lane, P, gr.part, gr.row0, gr.N, int(DType::f32), int(DType::f32));
}

template <int BITS, typename S, int R, int U, bool kInt8>
void qgemv_warp_launch(const float* x, GemvParts P, int64_t K, int shift, cudaStream_t st) {
  const bool gated = P.gate_act >= 0;
  const unsigned warps = plan_blocks(P, gated ? R / 2 : R);
  const unsigned grid = (warps + 3) / 4;
  if (gated) qgemv_warp_kernel<BITS, S, R, U, true, kInt8><<<grid, 128, 0, st>>>(x, P, K, shift);
  else qgemv_warp_kernel<BITS, S, R, U, false, kInt8><<<grid, 128, 0, st>>>(x, P, K, shift);
}

__device__ __forceinline__ uint32_t q_at(const uint32_t* row, int64_t k, int bits) {
  const int64_t bit = k * bits;
  const int64_t w = bit >> 5;
  const int sh = int(bit & 31);
  uint32_t v = row[w] >> sh;
  if (sh + bits > 32) v |= row[w + 1] << (32 - sh);
  return v & ((1u << bits) - 1u);
}

// out [n, K] (f32, or bf16 for the tensor-core prefill) = rows of dequant(w); rows null
// = identity. Bad rows flag *bad.
template <typename S, typename O = float>
__global__ void dequant_rows_kernel(const uint32_t* __restrict__ packed, const S* __restrict__ scales,
                                    const S* __restrict__ biases, int bits, int group_size, int64_t N, int64_t K,
                                    const int32_t* __restrict__ rows, int64_t row_base, int64_t n,
                                    O* __restrict__ out, int* bad) {
  const int64_t words_per_row = K * bits / 32, groups_per_row = K / group_size;
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t row = rows ? int64_t(rows[i]) : row_base + i;
    if (row < 0 || row >= N) {
      if (threadIdx.x == 0 && bad) atomicMin(bad, int(i));
      continue;
    }
    const uint32_t* pr = packed + row * words_per_row;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
      const int64_t g = row * groups_per_row + k / group_size;
      // No FMA: MLX rounds the product and the sum separately.
      out[i * K + k] = from_f<O>(__fadd_rn(__fmul_rn(to_f(scales[g]), float(q_at(pr, k, bits))), to_f(biases[g])));
    }
  }
}

template <typename S>
__global__ void dequant_same_kernel(const uint32_t* __restrict__ packed, const S* __restrict__ scales,
                                    const S* __restrict__ biases, int bits, int group_size, int64_t N, int64_t K,
                                    S* __restrict__ out) {
  const int64_t words_per_row = K * bits / 32, groups_per_row = K / group_size;
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const uint32_t* pr = packed + row * words_per_row;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
      const int64_t g = row * groups_per_row + k / group_size;
      const S q = from_f<S>(float(q_at(pr, k, bits)));  // exact: q < 256
      // _rn: no contraction into an FMA, each step rounds like MLX.
      out[row * K + k] = __hadd_rn(__hmul_rn(q, scales[g]), biases[g]);
    }
  }
}

template <typename F>
void by_scale(DType dt, F&& f) {
  by_float_type(dt, "quantized: scales", std::forward<F>(f));
}

// MLXCEL_CUDA_QSTREAM=0 keeps design 0 on every shape (A/B knob for design 7's share).
bool qstream_auto() {
  static const bool on = [] {
    const char* e = std::getenv("MLXCEL_CUDA_QSTREAM");
    return !e || std::atoi(e) != 0;
  }();
  return on;
}

// P: parts of one bits/group/scale dtype and one K (packed words in P.w).
template <typename S>
void qgemv_launch(const float* x, int M, GemvParts P, int bits, int group_size, int64_t K, cudaStream_t st) {
  const int shift = group_shift_of(group_size);
  if (shift < 0) throw_unsupported("[qlinear] CUDA supports group sizes 32, 64 and 128");
  const bool gated = P.gate_act >= 0;
  const int rows = M == 1 ? 8 : 4;  // weight rows per block (M > 1 needs more accumulators)
  const unsigned grid = plan_blocks(P, gated ? rows / 2 : rows);
#define MLXCEL_QGEMV_G(B, G)                                                                  \
  if (M == 1)                                                                                 \
    launch_pdl(qgemv_kernel<B, S, 1, 8, G>, grid, kQThreads, 0, st, x, M, P, K, shift);       \
  else                                                                                        \
    launch_pdl(qgemv_kernel<B, S, kGemvMaxRows, 4, G>, grid, kQThreads, 0, st, x, M, P, K, shift)
#define MLXCEL_QGEMV(B)       \
  if (gated) {                \
    MLXCEL_QGEMV_G(B, true);  \
  } else {                    \
    MLXCEL_QGEMV_G(B, false); \
  }
  int variant = gemv_variant(true);
  // The default (9): batch-1 launches of 4- and 8-bit weights in groups of 64 (K a multiple
  // of 512 up to 14336) or 32 (up to 8192) take design 11 (x to f16 per group), other 4-bit
  // ones design 8 (x rounded to bf16); design 0's paths for everything else. 0 keeps
  // design 0 throughout (the exact f32 math).
  if (variant == kQgemvAuto) {
    if (M == 1 && (qgemv_rf(x, M, P, bits, shift, K, dtype_of<S>(), st) ||
                   qgemv_tc(x, M, P, bits, shift, K, dtype_of<S>(), st)))
      return;
    variant = 0;
  }
  if (variant == 11 && qgemv_rf(x, M, P, bits, shift, K, dtype_of<S>(), st)) return;
  if (variant == 6 && qgemv_mma(x, M, P, bits, shift, K, dtype_of<S>(), st)) return;
  if (variant == 8 && qgemv_tc(x, M, P, bits, shift, K, dtype_of<S>(), st)) return;
  if (variant == 10 && qgemv_ks(x, M, P, bits, shift, K, dtype_of<S>(), st)) return;
  // 2-8 rows of 4- or 8-bit weights: bf16 on the tensor cores (the f32 GEMV below does M
  // FMAs a weight and is ALU-bound there).
  if (variant == 0 && qgemm_mma(x, M, P, bits, shift, K, dtype_of<S>(), st)) return;
  // Design 0 hands the shapes where it measured faster to design 7 (the same bits).
  if ((variant == 7 || (variant == 0 && qstream_auto())) &&
      qgemv_stream(x, M, P, bits, shift, K, dtype_of<S>(), variant == 0, st))
    return;
  if (M == 1 && variant > 0 && variant < 6 && (bits == 4 || bits == 8)) {
    auto run = [&](auto bits_tag) {
      constexpr int B = decltype(bits_tag)::value;
      if (variant == 1) qgemv_warp_launch<B, S, 4, 2, false>(x, P, K, shift, st);
      else if (variant == 2) qgemv_warp_launch<B, S, 2, 4, false>(x, P, K, shift, st);
      else if (variant == 3) qgemv_warp_launch<B, S, 8, 1, false>(x, P, K, shift, st);
      else if (variant == 4) qgemv_warp_launch<B, S, 8, 1, true>(x, P, K, shift, st);
      else qgemv_warp_launch<B, S, 4, 2, true>(x, P, K, shift, st);
    };
    if (bits == 4) run(std::integral_constant<int, 4>{});
    else run(std::integral_constant<int, 8>{});
    MLXCEL_CUDA_LAUNCH_CHECK();
    return;
  }
  switch (bits) {
    case 2: MLXCEL_QGEMV(2); break;
    case 3: MLXCEL_QGEMV(3); break;
    case 4: MLXCEL_QGEMV(4); break;
    case 5: MLXCEL_QGEMV(5); break;
    case 6: MLXCEL_QGEMV(6); break;
    case 8: MLXCEL_QGEMV(8); break;
    default: throw_unsupported("[qlinear] bits must be 2, 3, 4, 5, 6 or 8");
  }
#undef MLXCEL_QGEMV
#undef MLXCEL_QGEMV_G
  MLXCEL_CUDA_LAUNCH_CHECK();
}

// The GEMV reads x with 16-byte loads: an unaligned x is copied to scratch first.
const float* aligned_x(const float* x, int64_t n, cudaStream_t st) {
  if (reinterpret_cast<uintptr_t>(x) % 16 == 0) return x;
  float* xa = static_cast<float*>(scratch(size_t(n) * 4, 0));
  MLXCEL_CUDA_CHECK(cudaMemcpyAsync(xa, x, size_t(n) * 4, cudaMemcpyDeviceToDevice, st));
  return xa;
}

GemvParts part_of(const QuantMatrix& w, const float* bias, float* y) {
  GemvParts P;
  P.n = 1;
  P.w[0] = w.packed, P.scales[0] = w.scales, P.biases[0] = w.biases, P.bias[0] = bias, P.out[0] = y, P.N[0] = w.N;
  return P;
}

template <typename O>
void dequant_rows_launch(const QuantMatrix& w, const int32_t* rows, int64_t row_base, int64_t n, O* out, int* bad,
                         cudaStream_t st) {
  const unsigned grid = unsigned(n < 65535 ? n : 65535);
  by_scale(w.scale_dtype, [&](auto tag) {
    using S = decltype(tag);
    dequant_rows_kernel<S, O><<<grid, 256, 0, st>>>(w.packed, static_cast<const S*>(w.scales),
                                                    static_cast<const S*>(w.biases), w.bits, w.group_size, w.N, w.K,
                                                    rows, row_base, n, out, bad);
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
}

// Rows row0 .. row0 + n of dequant(w) as bf16, for 4- and 8-bit weights: a thread per
// packed word (8 or 4 values, one 16- or 8-byte store), the values as dequant_rows_kernel
// rounds them (s * q and + b rounded separately, then to bf16).
template <typename S, int BITS>
__global__ void dequant_bf16_kernel(const uint32_t* __restrict__ packed, const S* __restrict__ scales,
                                    const S* __restrict__ biases, int group_size, int64_t K, int64_t row0,
                                    int64_t n, bf16* __restrict__ out) {
  constexpr int V = 32 / BITS;
  constexpr uint32_t mask = (1u << BITS) - 1u;
  const int64_t words_per_row = K / V, groups_per_row = K / group_size;
  const uint32_t* src = packed + row0 * words_per_row;
  const int64_t total = n * words_per_row;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / words_per_row, wi = i - r * words_per_row;
    const uint32_t v = src[i];
    const int64_t g = (row0 + r) * groups_per_row + wi * V / group_size;
    const float sc = to_f(scales[g]), bi = to_f(biases[g]);
    alignas(16) bf16 o[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float q = __uint_as_float(((v >> (BITS * j)) & mask) | 0x4B000000u) - 8388608.0f;
      o[j] = __float2bfloat16_rn(__fadd_rn(__fmul_rn(sc, q), bi));
    }
    if constexpr (V == 8) *reinterpret_cast<uint4*>(out + r * K + wi * V) = *reinterpret_cast<const uint4*>(o);
    else *reinterpret_cast<uint2*>(out + r * K + wi * V) = *reinterpret_cast<const uint2*>(o);
  }
}

// Rows n0 .. n0 + nt of dequant(w) into bf16 [nt, K].
void dequant_tile_bf16(const QuantMatrix& w, int64_t n0, int64_t nt, bf16* out, cudaStream_t st) {
  if (w.bits != 4 && w.bits != 8) {
    dequant_rows_launch(w, nullptr, n0, nt, out, nullptr, st);
    return;
  }
  const int64_t words = nt * w.K * w.bits / 32;
  const unsigned grid = unsigned(std::min<int64_t>((words + 255) / 256, int64_t(sm_count(current_device())) * 16));
  by_scale(w.scale_dtype, [&](auto tag) {
    using S = decltype(tag);
    const S* sc = static_cast<const S*>(w.scales);
    const S* bi = static_cast<const S*>(w.biases);
    if (w.bits == 4) dequant_bf16_kernel<S, 4><<<grid, 256, 0, st>>>(w.packed, sc, bi, w.group_size, w.K, n0, nt, out);
    else dequant_bf16_kernel<S, 8><<<grid, 256, 0, st>>>(w.packed, sc, bi, w.group_size, w.K, n0, nt, out);
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
}

__global__ void f32_to_bf16_kernel(const float* __restrict__ x, bf16* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

void check_matrix(const QuantMatrix& w) {
  if (w.group_size < 32 || w.K % w.group_size != 0)
    throw_unsupported("[qlinear] CUDA needs group_size >= 32 dividing K");
}

// The two parts of a gated launch: act(gate x + gate_bias) * (up x + up_bias) into y.
GemvParts gated_parts(const QuantMatrix& gate, const QuantMatrix& up, const float* gate_bias, const float* up_bias,
                      Act act, float* y) {
  GemvParts P;
  P.n = 2;
  P.w[0] = gate.packed, P.scales[0] = gate.scales, P.biases[0] = gate.biases, P.bias[0] = gate_bias;
  P.w[1] = up.packed, P.scales[1] = up.scales, P.biases[1] = up.biases, P.bias[1] = up_bias;
  P.out[0] = y, P.N[0] = gate.N, P.N[1] = gate.N;
  P.gate_act = int(act);
  return P;
}

}  // namespace

void qlinear(const float* x, int64_t M, const QuantMatrix& w, const float* bias, float* y) {
  init();
  if (M == 0 || w.N == 0) return;
  check_matrix(w);
  const int dev = current_device();
  cudaStream_t st = stream_of(dev);
  if (w.K == 0) {
    finish_rows(nullptr, M, w.N, bias, DType::f32, y, DType::f32, st);
    return;
  }
  if (M <= kGemvMaxRows) {
    x = aligned_x(x, M * w.K, st);
    by_scale(w.scale_dtype,
             [&](auto tag) { qgemv_launch<decltype(tag)>(x, int(M), part_of(w, bias, y), w.bits, w.group_size, w.K, st); });
    return;
  }
  if (const int shift = group_shift_of(w.group_size); M <= kQgemmMaxRows && design0_paths(gemv_variant(true)) && shift > 0) {
    // Decode batches of 4- and 8-bit weights: the fused bf16 tensor-core product (no
    // dequantized copy).
    if (qgemm_mma(aligned_x(x, M * w.K, st), int(M), part_of(w, bias, y), w.bits, shift, w.K, w.scale_dtype, st))
      return;
  }
  const float one = 1.0f, zero = 0.0f;
  if (M >= tensor_core_min_rows()) {
    // Prefill: x rounded to bf16 once; each tile of weight rows dequantized to bf16 and
    // multiplied on the tensor cores (f32 accumulation, f32 out).
    // TODO(cuda): a fused dequantizing GEMM (dequantize in the tile, no bf16 copy).
    bf16* xb = static_cast<bf16*>(scratch(size_t(M * w.K) * 2, 0));
    const int64_t nx = M * w.K;
    f32_to_bf16_kernel<<<unsigned(std::min<int64_t>((nx + 255) / 256, 65535)), 256, 0, st>>>(x, xb, nx);
    MLXCEL_CUDA_LAUNCH_CHECK();
    int64_t tile = (int64_t(32) << 20) / w.K;  // 64 MiB of bf16
    tile = tile < 64 ? 64 : tile;
    tile = tile > w.N ? w.N : tile;
    bf16* wt = static_cast<bf16*>(scratch(size_t(tile * w.K) * 2, 2));
    for (int64_t n0 = 0; n0 < w.N; n0 += tile) {
      const int64_t nt = w.N - n0 < tile ? w.N - n0 : tile;
      dequant_tile_bf16(w, n0, nt, wt, st);
      MLXCEL_CUBLAS_CHECK(cublasGemmEx(cublas_handle(dev), CUBLAS_OP_T, CUBLAS_OP_N, int(nt), int(M), int(w.K), &one, wt,
                                       CUDA_R_16BF, int(w.K), xb, CUDA_R_16BF, int(w.K), &zero, y + n0, CUDA_R_32F,
                                       int(w.N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (bias) finish_rows(y, M, w.N, bias, DType::f32, y, DType::f32, st);
    return;
  }
  // 9..tensor_core_min_rows()-1 rows: dequantize a tile of rows to f32, SGEMM, next tile
  // (f32 throughout, as the GEMV).
  int64_t tile = (int64_t(16) << 20) / w.K;  // 64 MiB of f32
  tile = tile < 64 ? 64 : tile;
  tile = tile > w.N ? w.N : tile;
  float* wt = static_cast<float*>(scratch(size_t(tile * w.K) * 4, 2));
  for (int64_t n0 = 0; n0 < w.N; n0 += tile) {
    const int64_t nt = w.N - n0 < tile ? w.N - n0 : tile;
    dequant_rows_launch(w, nullptr, n0, nt, wt, nullptr, st);
    MLXCEL_CUBLAS_CHECK(cublasSgemm(cublas_handle(dev), CUBLAS_OP_T, CUBLAS_OP_N, int(nt), int(M), int(w.K), &one, wt,
                                    int(w.K), x, int(w.K), &zero, y + n0, int(w.N)));
  }
  if (bias) finish_rows(y, M, w.N, bias, DType::f32, y, DType::f32, st);
}

void dequantize_rows_f32(const QuantMatrix& w, const int32_t* rows, int64_t n, float* out) {
  init();
  if (n == 0 || w.K == 0) return;
  const int dev = current_device();
  cudaStream_t st = stream_of(dev);
  if (!rows || capturing(dev)) {  // no waiting inside a graph capture: unchecked
    dequant_rows_launch(w, rows, 0, n, out, static_cast<int*>(nullptr), st);
    return;
  }
  int* bad = static_cast<int*>(scratch(sizeof(int), 3));
  MLXCEL_CUDA_CHECK(cudaMemsetAsync(bad, 0x7f, sizeof(int), st));
  dequant_rows_launch(w, rows, 0, n, out, bad, st);
  int host_bad = 0;
  MLXCEL_CUDA_CHECK(cudaMemcpyAsync(&host_bad, bad, sizeof(int), cudaMemcpyDeviceToHost, st));
  MLXCEL_CUDA_CHECK(cudaStreamSynchronize(st));
  if (host_bad != 0x7f7f7f7f)
    throw_invalid("[qembedding] token id at position " + std::to_string(host_bad) + " is outside [0, " +
                  std::to_string(w.N) + ")");
}

void dequantize_same_dtype(const QuantMatrix& w, void* out) {
  init();
  if (w.N == 0 || w.K == 0) return;
  cudaStream_t st = current_stream();
  const unsigned grid = unsigned(w.N < 65535 ? w.N : 65535);
  switch (w.scale_dtype) {
    case DType::f16:
      dequant_same_kernel<f16><<<grid, 256, 0, st>>>(w.packed, static_cast<const f16*>(w.scales),
                                                     static_cast<const f16*>(w.biases), w.bits, w.group_size, w.N, w.K,
                                                     static_cast<f16*>(out));
      break;
    case DType::bf16:
      dequant_same_kernel<bf16><<<grid, 256, 0, st>>>(w.packed, static_cast<const bf16*>(w.scales),
                                                      static_cast<const bf16*>(w.biases), w.bits, w.group_size, w.N,
                                                      w.K, static_cast<bf16*>(out));
      break;
    default: throw_internal("dequantize_same_dtype: scales must be f16|bf16");
  }
  MLXCEL_CUDA_LAUNCH_CHECK();
}

void qlinear_multi(const float* x, int64_t M, const std::vector<QuantMatrix>& ws, const std::vector<const float*>& biases,
                   const std::vector<float*>& ys) {
  init();
  MLXCEL_CUDA_REQUIRE(!ws.empty() && ws.size() <= size_t(kMaxParts) && biases.size() == ws.size() &&
                          ys.size() == ws.size(),
                      "qlinear_multi: 1..3 parts");
  MLXCEL_CUDA_REQUIRE(M >= 1 && M <= kGemvMaxRows && ws[0].K > 0, "qlinear_multi: decode-sized M and K > 0 only");
  GemvParts P;
  P.n = int(ws.size());
  for (size_t i = 0; i < ws.size(); ++i) {
    const QuantMatrix& w = ws[i];
    check_matrix(w);
    MLXCEL_CUDA_REQUIRE(w.K == ws[0].K && w.bits == ws[0].bits && w.group_size == ws[0].group_size &&
                            w.scale_dtype == ws[0].scale_dtype,
                        "qlinear_multi: parts differ");
    P.w[i] = w.packed, P.scales[i] = w.scales, P.biases[i] = w.biases, P.bias[i] = biases[i], P.out[i] = ys[i];
    P.N[i] = w.N;
  }
  cudaStream_t st = stream_of(current_device());
  x = aligned_x(x, M * ws[0].K, st);
  by_scale(ws[0].scale_dtype, [&](auto tag) {
    qgemv_launch<decltype(tag)>(x, int(M), P, ws[0].bits, ws[0].group_size, ws[0].K, st);
  });
}

void qlinear_gated(const float* x, int64_t M, const QuantMatrix& gate, const QuantMatrix& up, const float* gate_bias,
                   const float* up_bias, Act act, float* y) {
  init();
  MLXCEL_CUDA_REQUIRE(M >= 1 && M <= kGemvMaxRows && gate.K > 0, "qlinear_gated: decode-sized M and K > 0 only");
  check_matrix(gate);
  check_matrix(up);
  MLXCEL_CUDA_REQUIRE(up.N == gate.N && up.K == gate.K && up.bits == gate.bits && up.group_size == gate.group_size &&
                          up.scale_dtype == gate.scale_dtype,
                      "qlinear_gated: gate and up differ");
  GemvParts P = gated_parts(gate, up, gate_bias, up_bias, act, y);
  cudaStream_t st = stream_of(current_device());
  x = aligned_x(x, M * gate.K, st);
  by_scale(gate.scale_dtype, [&](auto tag) {
    qgemv_launch<decltype(tag)>(x, int(M), P, gate.bits, gate.group_size, gate.K, st);
  });
}

namespace {
// Design 11 with the norm folded in, where it is selected (the default or 11) and takes the
// shape: one row, its usual conditions.
// MLXCEL_CUDA_NORM_FOLD=0 keeps the norm a kernel of its own (A/B runs).
bool g_norm_fold = [] {
  const char* e = std::getenv("MLXCEL_CUDA_NORM_FOLD");
  return !e || std::string(e) != "0";
}();
// MLXCEL_CUDA_ROPE_FOLD=0 keeps the RoPE / cache write a kernel of its own (A/B runs).
bool g_rope_fold = [] {
  const char* e = std::getenv("MLXCEL_CUDA_ROPE_FOLD");
  return !e || std::string(e) != "0";
}();
bool normed_launch(const float* x, const RowNorm& norm, GemvParts& P, const QuantMatrix& w, const RopeKv* rope) {
  if (!qlinear_fold_takes(w.bits, w.group_size, w.K, rope != nullptr)) return false;
  return qgemv_rf(x, 1, P, w.bits, group_shift_of(w.group_size), w.K, w.scale_dtype, stream_of(current_device()), &norm,
                  rope);
}
}  // namespace

int decode_folds() { return (g_norm_fold ? 1 : 0) | (g_rope_fold ? 2 : 0); }

bool qlinear_fold_takes(int bits, int group_size, int64_t K, bool rope) {
  const int v = gemv_variant(true);
  if (!g_norm_fold || (v != kQgemvAuto && v != 11) || (rope && !g_rope_fold)) return false;
  const int shift = group_shift_of(group_size);
  return shift >= 0 && qgemv_rf_takes(bits, shift, K, true);
}

int set_decode_folds(int mask) {
  const int old = decode_folds();
  g_norm_fold = (mask & 1) != 0;
  g_rope_fold = (mask & 2) != 0;
  return old;
}

bool qlinear_multi_normed(const float* x, const RowNorm& norm, const std::vector<QuantMatrix>& ws,
                          const std::vector<const float*>& biases, const std::vector<float*>& ys, const RopeKv* rope) {
  init();
  MLXCEL_CUDA_REQUIRE(!ws.empty() && ws.size() <= size_t(kMaxParts) && biases.size() == ws.size() &&
                          ys.size() == ws.size(),
                      "qlinear_multi_normed: 1..3 parts");
  GemvParts P;
  P.n = int(ws.size());
  for (size_t i = 0; i < ws.size(); ++i) {
    const QuantMatrix& w = ws[i];
    check_matrix(w);
    if (w.K != ws[0].K || w.bits != ws[0].bits || w.group_size != ws[0].group_size || w.scale_dtype != ws[0].scale_dtype)
      return false;
    P.w[i] = w.packed, P.scales[i] = w.scales, P.biases[i] = w.biases, P.bias[i] = biases[i], P.out[i] = ys[i];
    P.N[i] = w.N;
  }
  if (rope && ws.size() != 3) return false;
  return normed_launch(x, norm, P, ws[0], rope);
}

bool qlinear_gated_normed(const float* x, const RowNorm& norm, const QuantMatrix& gate, const QuantMatrix& up,
                          const float* gate_bias, const float* up_bias, Act act, float* y) {
  init();
  check_matrix(gate);
  check_matrix(up);
  if (up.N != gate.N || up.K != gate.K || up.bits != gate.bits || up.group_size != gate.group_size ||
      up.scale_dtype != gate.scale_dtype)
    return false;
  GemvParts P = gated_parts(gate, up, gate_bias, up_bias, act, y);
  return normed_launch(x, norm, P, gate, nullptr);
}

}  // namespace mlxcel::cuda
