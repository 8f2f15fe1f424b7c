// Hardware probes for `mlxcel bench`: the card's read bandwidth and its bf16 tensor-core
// GEMM rate, measured in the same run as the model figures they are compared with.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/runtime.h"

namespace mlxcel::cuda {

namespace {

__global__ void fill_words(uint4* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed;
    p[i] = make_uint4(x, x ^ 0x9e3779b9u, x * 3u, x + 7u);
  }
}

// Reads every 16-byte word once (grid-stride, several loads in flight per thread) and
// folds them into one word per block so the loads cannot be dropped.
__global__ void read_words(const uint4* __restrict__ p, size_t n, uint32_t* __restrict__ sink) {
  uint32_t acc = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride), d = __ldcs(p + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
  }
  for (; i < n; i += stride) {
    uint4 a = __ldcs(p + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) atomicXor(sink + blockIdx.x, acc);
}

float best_ms(cudaStream_t st, int reps, const auto& launch) {
  cudaEvent_t a, b;
  MLXCEL_CUDA_CHECK(cudaEventCreate(&a));
  MLXCEL_CUDA_CHECK(cudaEventCreate(&b));
  launch();  // warm-up
  float best = 1e30f;
  for (int r = 0; r < reps; ++r) {
    MLXCEL_CUDA_CHECK(cudaEventRecord(a, st));
    launch();
    MLXCEL_CUDA_CHECK(cudaEventRecord(b, st));
    MLXCEL_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    MLXCEL_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    best = std::min(best, ms);
  }
  MLXCEL_CUDA_CHECK(cudaEventDestroy(a));
  MLXCEL_CUDA_CHECK(cudaEventDestroy(b));
  return best;
}

}  // namespace

double read_bandwidth(int device, size_t bytes) {
  init();
  MLXCEL_CUDA_CHECK(cudaSetDevice(device));
  cudaStream_t st = stream_of(device);
  const size_t n = bytes / sizeof(uint4);
  uint4* p = nullptr;
  uint32_t* sink = nullptr;
  const int blocks = sm_count(device) * 8, threads = 512;
  MLXCEL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&p), n * sizeof(uint4), st));
  MLXCEL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&sink), blocks * sizeof(uint32_t), st));
  MLXCEL_CUDA_CHECK(cudaMemsetAsync(sink, 0, blocks * sizeof(uint32_t), st));
  fill_words<<<blocks, threads, 0, st>>>(p, n, 12345u);
  MLXCEL_CUDA_LAUNCH_CHECK();
  const float ms = best_ms(st, 10, [&] {
    read_words<<<blocks, threads, 0, st>>>(p, n, sink);
    MLXCEL_CUDA_LAUNCH_CHECK();
  });
  MLXCEL_CUDA_CHECK(cudaFreeAsync(p, st));
  MLXCEL_CUDA_CHECK(cudaFreeAsync(sink, st));
  MLXCEL_CUDA_CHECK(cudaStreamSynchronize(st));
  return double(n * sizeof(uint4)) / (double(ms) * 1e-3);
}

double bf16_gemm_flops(int device, int m, int n, int k) {
  init();
  MLXCEL_CUDA_CHECK(cudaSetDevice(device));
  cudaStream_t st = stream_of(device);
  __nv_bfloat16 *a = nullptr, *b = nullptr, *c = nullptr;
  MLXCEL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&a), size_t(m) * k * 2, st));
  MLXCEL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&b), size_t(n) * k * 2, st));
  MLXCEL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&c), size_t(m) * n * 2, st));
  MLXCEL_CUDA_CHECK(cudaMemsetAsync(a, 0x3c, size_t(m) * k * 2, st));  // bf16 0x3c3c ~ 0.0115
  MLXCEL_CUDA_CHECK(cudaMemsetAsync(b, 0x3c, size_t(n) * k * 2, st));
  const float alpha = 1.0f, beta = 0.0f;
  cublasHandle_t h = cublas_handle(device);
  const float ms = best_ms(st, 10, [&] {
    // C[n, m] (column-major) = B^T A: the row-major [m, n] = A [m, k] x B^T, as ops::linear calls it.
    MLXCEL_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, b, CUDA_R_16BF, k, a, CUDA_R_16BF, k,
                                     &beta, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  });
  MLXCEL_CUDA_CHECK(cudaFreeAsync(a, st));
  MLXCEL_CUDA_CHECK(cudaFreeAsync(b, st));
  MLXCEL_CUDA_CHECK(cudaFreeAsync(c, st));
  MLXCEL_CUDA_CHECK(cudaStreamSynchronize(st));
  return 2.0 * double(m) * n * k / (double(ms) * 1e-3);
}

}  // namespace mlxcel::cuda
