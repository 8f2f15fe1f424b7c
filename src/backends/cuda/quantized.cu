// MLX affine quantized matrices (ops/quant.h): a fused dequantizing GEMV for decode,
// dequantize-tile + SGEMM for prefill, and dequantization (rows to f32, whole matrix
// in the scales' dtype).
#include <algorithm>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/linear_impl.h"

namespace mlxcel::cuda {

namespace {

// Decode (M == 1) takes 8 weight rows per block; M in 2..8 takes 4 (its accumulators
// grow with M).
constexpr int kQThreads = 128;
// From this many rows on, qlinear multiplies on the tensor cores in bf16 (x and the
// dequantized weights rounded to bf16, f32 accumulation): prompt-sized products. Fewer
// rows stay in f32.
constexpr int64_t kTensorCoreMinRows = 64;

// A "chunk" is 32 consecutive values of a row = BITS u32 words, word-aligned, and
// inside one group (group_size >= 32). Loads a chunk's words.
template <int BITS>
__device__ __forceinline__ void load_chunk(const uint32_t* p, uint32_t* wd) {
  if constexpr (BITS % 4 == 0) {
#pragma unroll
    for (int j = 0; j < BITS / 4; ++j) {
      const uint4 u = reinterpret_cast<const uint4*>(p)[j];
      wd[4 * j] = u.x, wd[4 * j + 1] = u.y, wd[4 * j + 2] = u.z, wd[4 * j + 3] = u.w;
    }
  } else if constexpr (BITS == 2) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    wd[0] = u.x, wd[1] = u.y;
  } else {
#pragma unroll
    for (int j = 0; j < BITS; ++j) wd[j] = p[j];
  }
}

// Value j (0..31) of a chunk; j is a compile-time constant after unrolling.
template <int BITS>
__device__ __forceinline__ float chunk_value(const uint32_t* wd, int j) {
  constexpr uint32_t mask = (1u << BITS) - 1u;
  const int bit = j * BITS, w = bit >> 5, sh = bit & 31;
  uint32_t v = wd[w] >> sh;
  if (sh + BITS > 32) v |= wd[w + 1] << (32 - sh);
  // float(q) without I2F (a quarter-rate instruction): 2^23 + q has q in the low
  // mantissa bits, so the subtraction is exact. One LOP3 + one FADD.
  return __uint_as_float((v & mask) | 0x4B000000u) - 8388608.0f;
}

// y [M, N] = x [M, K] @ dequant(w)^T (+ bias). Uses sum_j x_j (s q_j + b) = s (x.q) + b sum(x).
template <int BITS, typename S, int MAXM, int kQRows>
__global__ void __launch_bounds__(kQThreads) qgemv_kernel(const float* __restrict__ x, int M,
                                                          const uint32_t* __restrict__ packed,
                                                          const S* __restrict__ scales, const S* __restrict__ biases,
                                                          int64_t N, int64_t K, int group_shift,
                                                          const float* __restrict__ bias, float* __restrict__ y) {
  __shared__ float red[kQThreads / 32][MAXM][kQRows];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row0 = int64_t(blockIdx.x) * kQRows;
  const int64_t words_per_row = K / 32 * BITS, groups_per_row = K >> group_shift, chunks = K / 32;
  float acc[MAXM][kQRows];
#pragma unroll
  for (int m = 0; m < MAXM; ++m)
#pragma unroll
    for (int r = 0; r < kQRows; ++r) acc[m][r] = 0.0f;
  int64_t rows[kQRows];
#pragma unroll
  for (int r = 0; r < kQRows; ++r) rows[r] = row0 + r < N ? row0 + r : N - 1;

  for (int64_t c = threadIdx.x; c < chunks; c += kQThreads) {
    uint32_t wd[kQRows][BITS];
    float sc[kQRows], bi[kQRows];
    const int64_t g = (c * 32) >> group_shift;
#pragma unroll
    for (int r = 0; r < kQRows; ++r) {
      load_chunk<BITS>(packed + rows[r] * words_per_row + c * BITS, wd[r]);
      sc[r] = to_f(scales[rows[r] * groups_per_row + g]);
      bi[r] = to_f(biases[rows[r] * groups_per_row + g]);
    }
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
      if (m < M) {
        float xv[32];
        const float4* xp = reinterpret_cast<const float4*>(x + int64_t(m) * K + c * 32);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float4 f = xp[j];
          xv[4 * j] = f.x, xv[4 * j + 1] = f.y, xv[4 * j + 2] = f.z, xv[4 * j + 3] = f.w;
        }
        float xs = 0.0f;
#pragma unroll
        for (int j = 0; j < 32; ++j) xs += xv[j];
#pragma unroll
        for (int r = 0; r < kQRows; ++r) {
          float d = 0.0f;
#pragma unroll
          for (int j = 0; j < 32; ++j) d = fmaf(xv[j], chunk_value<BITS>(wd[r], j), d);
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
  if (t < M * kQRows) {
    const int m = t / kQRows, r = t % kQRows;
    const int64_t n = row0 + r;
    if (n < N) {
      float s = 0.0f;
#pragma unroll
      for (int q = 0; q < kQThreads / 32; ++q) s += red[q][m][r];
      if (bias) s += bias[n];
      y[int64_t(m) * N + n] = s;
    }
  }
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
  switch (dt) {
    case DType::f32: f(float{}); break;
    case DType::f16: f(f16{}); break;
    case DType::bf16: f(bf16{}); break;
    default: throw_internal("quantized: scales must be f32|f16|bf16");
  }
}

template <typename S>
void qgemv_launch(const float* x, int M, const QuantMatrix& w, const float* bias, float* y, cudaStream_t st) {
  const S* sc = static_cast<const S*>(w.scales);
  const S* bi = static_cast<const S*>(w.biases);
  const int shift = w.group_size == 32 ? 5 : w.group_size == 64 ? 6 : w.group_size == 128 ? 7 : -1;
  if (shift < 0) throw_unsupported("[qlinear] CUDA supports group sizes 32, 64 and 128");
  const unsigned grid1 = unsigned(ceil_div(w.N, 8)), grid8 = unsigned(ceil_div(w.N, 4));
#define MLXCEL_QGEMV(B)                                                                                          \
  if (M == 1)                                                                                                    \
    qgemv_kernel<B, S, 1, 8><<<grid1, kQThreads, 0, st>>>(x, M, w.packed, sc, bi, w.N, w.K, shift, bias, y);     \
  else                                                                                                           \
    qgemv_kernel<B, S, kGemvMaxRows, 4><<<grid8, kQThreads, 0, st>>>(x, M, w.packed, sc, bi, w.N, w.K, shift, bias, y)
  switch (w.bits) {
    case 2: MLXCEL_QGEMV(2); break;
    case 3: MLXCEL_QGEMV(3); break;
    case 4: MLXCEL_QGEMV(4); break;
    case 5: MLXCEL_QGEMV(5); break;
    case 6: MLXCEL_QGEMV(6); break;
    case 8: MLXCEL_QGEMV(8); break;
    default: throw_unsupported("[qlinear] bits must be 2, 3, 4, 5, 6 or 8");
  }
#undef MLXCEL_QGEMV
  MLXCEL_CUDA_LAUNCH_CHECK();
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

__global__ void f32_to_bf16_kernel(const float* __restrict__ x, bf16* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

void check_matrix(const QuantMatrix& w) {
  if (w.group_size < 32 || w.K % w.group_size != 0)
    throw_unsupported("[qlinear] CUDA needs group_size >= 32 dividing K");
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
    if (reinterpret_cast<uintptr_t>(x) % 16 != 0) {  // the GEMV reads x with 16-byte loads
      float* xa = static_cast<float*>(scratch(size_t(M * w.K) * 4, 0));
      MLXCEL_CUDA_CHECK(cudaMemcpyAsync(xa, x, size_t(M * w.K) * 4, cudaMemcpyDeviceToDevice, st));
      x = xa;
    }
    by_scale(w.scale_dtype, [&](auto tag) { qgemv_launch<decltype(tag)>(x, int(M), w, bias, y, st); });
    return;
  }
  const float one = 1.0f, zero = 0.0f;
  if (M >= kTensorCoreMinRows) {
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
      dequant_rows_launch(w, nullptr, n0, nt, wt, nullptr, st);
      MLXCEL_CUBLAS_CHECK(cublasGemmEx(cublas_handle(dev), CUBLAS_OP_T, CUBLAS_OP_N, int(nt), int(M), int(w.K), &one, wt,
                                       CUDA_R_16BF, int(w.K), xb, CUDA_R_16BF, int(w.K), &zero, y + n0, CUDA_R_32F,
                                       int(w.N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (bias) finish_rows(y, M, w.N, bias, DType::f32, y, DType::f32, st);
    return;
  }
  // 9..kTensorCoreMinRows-1 rows: dequantize a tile of rows to f32, SGEMM, next tile
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

}  // namespace mlxcel::cuda
