// Dense linear y = x @ w^T (+ bias): a bandwidth-bound GEMV for decode-sized M and
// cuBLAS for the rest. f32 accumulation everywhere.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/linear_impl.h"

namespace mlxcel::cuda {

namespace {

constexpr int kRowsPerBlock = 4;   // weight rows per block (x is reused across them)
constexpr int kWarps = 8;          // warps per block, splitting K

// Loads E consecutive elements of x (f32 or bf16) as floats; p is 16-byte aligned when E * sizeof(X) >= 16.
template <int E, typename X>
__device__ __forceinline__ void load_vec(const X* p, float* v) {
  if constexpr (std::is_same_v<X, float> && E % 4 == 0) {
#pragma unroll
    for (int j = 0; j < E / 4; ++j) {
      const float4 f = reinterpret_cast<const float4*>(p)[j];
      v[4 * j] = f.x, v[4 * j + 1] = f.y, v[4 * j + 2] = f.z, v[4 * j + 3] = f.w;
    }
  } else if constexpr (sizeof(X) == 2 && E == 8) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const X* h = reinterpret_cast<const X*>(&u);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = to_f(h[j]);
  } else if constexpr (sizeof(X) == 2 && E == 4) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    const X* h = reinterpret_cast<const X*>(&u);
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = to_f(h[j]);
  } else {
#pragma unroll
    for (int j = 0; j < E; ++j) v[j] = to_f(p[j]);
  }
}

// out [M, N] = x [M, K] @ w [N, K]^T (+ bias). Block: kRowsPerBlock rows, kWarps warps
// splitting K into chunks of 32 * E elements (E: one 16-byte weight load per lane).
template <typename W, typename X, bool kVec>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(const X* __restrict__ x, int M, const W* __restrict__ w,
                                                           int64_t N, int64_t K, const void* __restrict__ bias,
                                                           int bdt, void* __restrict__ out, int odt) {
  constexpr int E = kVec ? int(16 / sizeof(W)) : 1;
  __shared__ float red[kWarps][kGemvMaxRows][kRowsPerBlock];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row0 = int64_t(blockIdx.x) * kRowsPerBlock;
  float acc[kGemvMaxRows][kRowsPerBlock];
#pragma unroll
  for (int m = 0; m < kGemvMaxRows; ++m)
#pragma unroll
    for (int r = 0; r < kRowsPerBlock; ++r) acc[m][r] = 0.0f;

  const W* wrow[kRowsPerBlock];
#pragma unroll
  for (int r = 0; r < kRowsPerBlock; ++r) wrow[r] = w + (row0 + r < N ? row0 + r : N - 1) * K;

  for (int64_t k = (int64_t(warp) * 32 + lane) * E; k < K; k += int64_t(kWarps) * 32 * E) {
    float wv[kRowsPerBlock][E];
#pragma unroll
    for (int r = 0; r < kRowsPerBlock; ++r) load_vec<E>(wrow[r] + k, wv[r]);
#pragma unroll
    for (int m = 0; m < kGemvMaxRows; ++m) {
      if (m < M) {
        float xv[E];
        load_vec<E>(x + int64_t(m) * K + k, xv);
#pragma unroll
        for (int r = 0; r < kRowsPerBlock; ++r)
#pragma unroll
          for (int j = 0; j < E; ++j) acc[m][r] = fmaf(xv[j], wv[r][j], acc[m][r]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kGemvMaxRows; ++m) {
    if (m < M) {
#pragma unroll
      for (int r = 0; r < kRowsPerBlock; ++r) {
        const float s = warp_sum(acc[m][r]);
        if (lane == 0) red[warp][m][r] = s;
      }
    }
  }
  __syncthreads();
  const int t = threadIdx.x;
  if (t < M * kRowsPerBlock) {
    const int m = t / kRowsPerBlock, r = t % kRowsPerBlock;
    const int64_t n = row0 + r;
    if (n < N) {
      float s = 0.0f;
#pragma unroll
      for (int q = 0; q < kWarps; ++q) s += red[q][m][r];
      if (bias) s += load_any(bias, bdt, n);
      store_any(out, odt, int64_t(m) * N + n, s);
    }
  }
}

// out[m, n] = src[m, n] (+ bias[n]) converted to out's dtype; src may alias out when f32.
__global__ void finish_kernel(const float* src, int64_t M, int64_t N, const void* __restrict__ bias, int bdt,
                              void* out, int odt) {
  const int64_t n_all = M * N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n_all; i += int64_t(gridDim.x) * blockDim.x) {
    float v = src ? src[i] : 0.0f;
    if (bias) v += load_any(bias, bdt, i % N);
    store_any(out, odt, i, v);
  }
}

template <typename W, typename X>
void gemv_launch(const X* x, int M, const W* w, int64_t N, int64_t K, const void* bias, int bdt, void* out, int odt,
                 cudaStream_t st) {
  constexpr int E = int(16 / sizeof(W));
  const uintptr_t align = reinterpret_cast<uintptr_t>(w) | reinterpret_cast<uintptr_t>(x);
  const bool vec = K % E == 0 && align % 16 == 0;
  const unsigned grid = unsigned(ceil_div(N, kRowsPerBlock));
  if (vec) gemv_kernel<W, X, true><<<grid, kWarps * 32, 0, st>>>(x, M, w, N, K, bias, bdt, out, odt);
  else gemv_kernel<W, X, false><<<grid, kWarps * 32, 0, st>>>(x, M, w, N, K, bias, bdt, out, odt);
  MLXCEL_CUDA_LAUNCH_CHECK();
}

template <typename X>
void gemv_by_w(const X* x, int M, const Tensor& w, const void* bias, int bdt, void* out, int odt, cudaStream_t st) {
  const int64_t N = w.dim(0), K = w.dim(1);
  switch (w.dtype()) {
    case DType::f32: gemv_launch(x, M, w.data<float>(), N, K, bias, bdt, out, odt, st); break;
    case DType::f16: gemv_launch(x, M, static_cast<const f16*>(w.raw()), N, K, bias, bdt, out, odt, st); break;
    case DType::bf16: gemv_launch(x, M, static_cast<const bf16*>(w.raw()), N, K, bias, bdt, out, odt, st); break;
    default: throw_internal("linear: w must be f32|f16|bf16");
  }
}

__global__ void to_type_kernel(const void* src, int sdt, void* dst, int ddt, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_any(dst, ddt, i, load_any(src, sdt, i));
}

cudaDataType_t cuda_type(DType d) {
  switch (d) {
    case DType::f32: return CUDA_R_32F;
    case DType::f16: return CUDA_R_16F;
    case DType::bf16: return CUDA_R_16BF;
    default: throw_internal("cuda_type: not a float dtype");
  }
}

}  // namespace

void finish_rows(const float* src, int64_t M, int64_t N, const void* bias, DType bias_dtype, void* out, DType out_dtype,
                 cudaStream_t st) {
  finish_kernel<<<grid_for(M * N, 256), 256, 0, st>>>(src, M, N, bias, int(bias_dtype), out, int(out_dtype));
  MLXCEL_CUDA_LAUNCH_CHECK();
}

void gemm_f32_nt(const float* x, int64_t M, const float* w, int64_t N, int64_t K, float* y, int device) {
  const float one = 1.0f, zero = 0.0f;
  MLXCEL_CUBLAS_CHECK(cublasSgemm(cublas_handle(device), CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &one, w,
                                  int(K), x, int(K), &zero, y, int(N)));
}

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out) {
  init();
  const int64_t K = w.dim(1), N = w.dim(0);
  const int64_t M = K ? x.numel() / K : (N ? out.numel() / N : 0);
  if (M == 0 || N == 0) return;
  Launch l(out);
  const int dev = out.device().index;
  Tensor bc = bias.defined() && !bias.is_contiguous() ? to_device(bias, bias.device()) : bias;
  const void* bp = bc.defined() ? bc.raw() : nullptr;
  const DType bdt = bc.defined() ? bc.dtype() : DType::f32;
  const int odt = int(out.dtype());
  if (K == 0) {
    finish_rows(nullptr, M, N, bp, bdt, out.raw(), out.dtype(), l.stream);
    return;
  }
  MLXCEL_CUDA_REQUIRE(x.dtype() == DType::f32 || x.dtype() == DType::bf16, "linear: x must be f32|bf16");
  MLXCEL_CUDA_REQUIRE(out.dtype() == DType::f32 || out.dtype() == DType::bf16, "linear: out must be f32|bf16");
  if (M <= kGemvMaxRows) {
    if (x.dtype() == DType::f32) gemv_by_w(x.data<float>(), int(M), w, bp, int(bdt), out.raw(), odt, l.stream);
    else gemv_by_w(static_cast<const bf16*>(x.raw()), int(M), w, bp, int(bdt), out.raw(), odt, l.stream);
    return;
  }
  MLXCEL_CUDA_REQUIRE(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX, "linear: dimensions exceed int32");
  // Operands of one type: the weight's. x is converted when its dtype differs.
  const DType ct = w.dtype();
  const void* xp = x.raw();
  if (x.dtype() != ct) {
    void* xs = scratch(size_t(M * K) * dtype_size(ct), 0);
    to_type_kernel<<<grid_for(M * K, 256), 256, 0, l.stream>>>(x.raw(), int(x.dtype()), xs, int(ct), M * K);
    MLXCEL_CUDA_LAUNCH_CHECK();
    xp = xs;
  }
  const bool direct = out.dtype() == DType::f32;
  float* y = direct ? out.data<float>() : static_cast<float*>(scratch(size_t(M * N) * 4, 1));
  const float one = 1.0f, zero = 0.0f;
  MLXCEL_CUBLAS_CHECK(cublasGemmEx(cublas_handle(dev), CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &one, w.raw(),
                                   cuda_type(ct), int(K), xp, cuda_type(ct), int(K), &zero, y, CUDA_R_32F, int(N),
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  if (bp || !direct) finish_rows(y, M, N, bp, bdt, out.raw(), out.dtype(), l.stream);
}

}  // namespace mlxcel::cuda
