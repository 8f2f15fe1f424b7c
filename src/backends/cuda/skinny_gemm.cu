// Products of few rows (9 <= M <= 64: an engine decode step of a few dozen sequences) with
// 16-bit weights: y [M, N] = x [M, K] @ w [N, K]^T (+ bias), streaming w once. Opt-in
// (kernels.h set_skinny_gemm, MLXCEL_CUDA_SKINNY).
//
// The premise was that cuBLAS reads the weights of such products at about half of the
// bandwidth. Measured in isolation (cuda_bench, H100, bench/results/cuda_gemv.md run 5)
// cuBLASLt streams N >= 4,096 weights at 72-88% of the copy bandwidth and this kernel at
// 35-73% (its warps wait on ldmatrix and on the loads: 4 warps a block, ~12 a SM); it
// wins only on narrow weights (k/v, N = 1,024: 1.5-1.7x at M <= 32), and that did not
// show in the engine, whose steps at 16 sequences are bound by the host.
//
// Design: a block of 4 warps owns 64 weight rows and all M (padded to MT = 16, 32 or 64)
// rows of x; each warp 16 weight rows. K is cut into 64-wide chunks that cp.async brings
// into shared memory, 4 stages deep (weights and x both); ldmatrix feeds
// mma.sync.m16n8k16 (weights as the row operand, x rows as the column operand) with f32
// accumulation. When there are too few row tiles to fill the card, a thread-block cluster
// of S = 2, 4 or 8 blocks (sm_90) splits K for one tile, and the blocks add their partial
// tiles through distributed shared memory in rank order: no global workspace, no atomics,
// the same bits on every run. S depends only on N, K and the card, so a row's result does
// not depend on how many other rows are in the batch.
#include <cooperative_groups.h>

#include <cstdlib>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/linear_impl.h"
#include "backends/cuda/mma.cuh"

namespace mlxcel::cuda {

namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 128;     // 4 warps
constexpr int kRows = 64;         // weight rows per block
constexpr int kChunk = 64;        // K per stage
constexpr int kStages = 4;
constexpr int kStride = kChunk + 8;  // elements per smem row: 144 bytes, ldmatrix conflict-free
constexpr int kRedStride = kRows + 4;

// Off by default (kernels.h set_skinny_gemm): MLXCEL_CUDA_SKINNY=1 or 2 turns it on.
const int g_skinny_env = [] {
  const char* e = std::getenv("MLXCEL_CUDA_SKINNY");
  return e ? std::atoi(e) : 0;
}();
bool g_skinny = g_skinny_env > 0;

// Mode 2: every shape that fits, not only the narrow ones.
bool g_skinny_all = g_skinny_env > 1;

template <int MT>
constexpr size_t smem_bytes() {
  constexpr size_t pipe = size_t(kStages) * (kRows + MT) * kStride * 2;
  constexpr size_t red = size_t(MT) * kRedStride * 4;
  return pipe > red ? pipe : red;
}

struct SkinnyArgs {
  const void* x;
  const void* w;
  const void* bias;
  void* out;
  int M, N, K, kchunks;
  int bias_dtype, out_dtype;
};

template <typename T, int MT>
__global__ void __launch_bounds__(kThreads) skinny_gemm_kernel(const SkinnyArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  static_assert(MT % 16 == 0 && MT <= 64, "MT: 16, 32 or 64");
  extern __shared__ __align__(16) unsigned char smem[];
  T* ws = reinterpret_cast<T*>(smem);      // [kStages][kRows][kStride]
  T* xs = ws + kStages * kRows * kStride;  // [kStages][MT][kStride]
  cg::cluster_group cluster = cg::this_cluster();
  const int S = int(cluster.num_blocks());
  const int s = int(cluster.block_rank());
  const int n0 = int(blockIdx.x / unsigned(S)) * kRows;
  const int c_begin = int(int64_t(a.kchunks) * s / S), c_end = int(int64_t(a.kchunks) * (s + 1) / S);
  const int n_chunks = c_end - c_begin;
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ w = static_cast<const T*>(a.w);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  // One stage: 64 weight rows and MT x rows of 64 values (8 pieces of 16 bytes each);
  // pieces past N, M or K are zero-filled.
  auto load = [&](int stage, int c) {
    const int k0 = c * kChunk;
#pragma unroll
    for (int i = tid; i < kRows * 8; i += kThreads) {
      const int r = i >> 3, k = k0 + (i & 7) * 8;
      const bool ok = n0 + r < a.N && k < a.K;
      cp_async16(ws + (stage * kRows + r) * kStride + (i & 7) * 8, w + (ok ? int64_t(n0 + r) * a.K + k : 0), ok);
    }
#pragma unroll
    for (int i = tid; i < MT * 8; i += kThreads) {
      const int r = i >> 3, k = k0 + (i & 7) * 8;
      const bool ok = r < a.M && k < a.K;
      cp_async16(xs + (stage * MT + r) * kStride + (i & 7) * 8, x + (ok ? int64_t(r) * a.K + k : 0), ok);
    }
  };

  float acc[MT / 8][4];
#pragma unroll
  for (int j = 0; j < MT / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < n_chunks) load(i, c_begin + i);
    cp_async_commit();
  }
  for (int i = 0; i < n_chunks; ++i) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage i landed for every thread; stage i - 1 is free to refill
    const int next = i + kStages - 1;
    if (next < n_chunks) load(next % kStages, c_begin + next);
    cp_async_commit();
    const T* wt = ws + (i % kStages) * kRows * kStride;
    const T* xt = xs + (i % kStages) * MT * kStride;
#pragma unroll
    for (int kk = 0; kk < kChunk / 16; ++kk) {
      unsigned af[4];
      ldsm_x4(af, wt + (warp * 16 + (lane & 15)) * kStride + kk * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int j = 0; j < MT / 8; j += 2) {
        unsigned bf[4];
        ldsm_x4(bf, xt + (j * 8 + (lane & 7) + (lane >> 4) * 8) * kStride + kk * 16 + ((lane >> 3) & 1) * 8);
        mma<T>(acc[j], af, bf[0], bf[1]);
        mma<T>(acc[j + 1], af, bf[2], bf[3]);
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline's smem becomes this block's partial tile

  // Partial tile red[m][n] (n = weight row in the tile). C fragment: c0, c1 = (weight row
  // g, x rows 2c, 2c + 1), c2, c3 = (weight row g + 8, same x rows).
  float* red = reinterpret_cast<float*>(smem);
  const int g = lane >> 2, c = lane & 3;
#pragma unroll
  for (int j = 0; j < MT / 8; ++j) {
    const int m = j * 8 + 2 * c, n = warp * 16 + g;
    red[m * kRedStride + n] = acc[j][0];
    red[(m + 1) * kRedStride + n] = acc[j][1];
    red[m * kRedStride + n + 8] = acc[j][2];
    red[(m + 1) * kRedStride + n + 8] = acc[j][3];
  }
  cluster.sync();
  // Rank s finishes x rows s, s + S, ...: the S partials added in rank order.
  const int my_rows = a.M > s ? (a.M - s + S - 1) / S : 0;
  for (int e = tid; e < my_rows * kRows; e += kThreads) {
    const int m = s + (e / kRows) * S, n = e % kRows;
    if (n0 + n >= a.N) continue;
    float v = 0.0f;
    for (int q = 0; q < S; ++q) v += cluster.map_shared_rank(red, q)[m * kRedStride + n];
    if (a.bias) v += load_any(a.bias, a.bias_dtype, n0 + n);
    store_any(a.out, a.out_dtype, int64_t(m) * a.N + n0 + n, v);
  }
  cluster.sync();  // no block leaves while another reads its tile
#endif
}

template <typename T, int MT>
void launch(const SkinnyArgs& a, int S, int tiles, cudaStream_t st) {
  constexpr size_t smem = smem_bytes<MT>();
  static const bool attr_set = [] {
    MLXCEL_CUDA_CHECK(cudaFuncSetAttribute(skinny_gemm_kernel<T, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           int(smem)));
    return true;
  }();
  (void)attr_set;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(tiles * S));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(S);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  MLXCEL_CUDA_CHECK(cudaLaunchKernelEx(&cfg, skinny_gemm_kernel<T, MT>, a));
}

}  // namespace

int set_skinny_gemm(int mode) {
  const int old = !g_skinny ? 0 : g_skinny_all ? 2 : 1;
  g_skinny = mode > 0;
  g_skinny_all = mode > 1;
  return old;
}

int skinny_gemm_split(int64_t N, int64_t K, int device) {
  const int64_t tiles = ceil_div(N, kRows), kchunks = ceil_div(K, kChunk);
  const int64_t target = 2 * int64_t(sm_count(device));
  int S = 1;
  while (S < 8 && tiles * S < target && kchunks >= int64_t(4) * S) S *= 2;
  return S;
}

bool skinny_gemm(const void* x, const void* w, DType ct, int64_t M, int64_t N, int64_t K, const void* bias,
                 DType bias_dtype, void* out, DType out_dtype, int device, cudaStream_t st) {
  if (!g_skinny || M < 1 || M > kSkinnyMaxRows || N < 1 || K < 1 || (ct != DType::bf16 && ct != DType::f16)) return false;
  if (K % 8 || N > INT32_MAX / 2 || K > INT32_MAX / 2 || compute_major(device) < 9) return false;
  // Only where cuBLAS leaves most of the card idle: few row tiles (k_proj / v_proj of
  // GQA models). On an H100 at N = 4,096 and more cuBLASLt streams the weights at 72-87%
  // of the copy bandwidth and this kernel at 35-73% (bench/results/cuda_gemv.md, run 5).
  if (!g_skinny_all && ceil_div(N, kRows) * 4 > sm_count(device)) return false;
  if ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w)) % 16) return false;
  SkinnyArgs a{x, w, bias, out, int(M), int(N), int(K), int(ceil_div(K, kChunk)), int(bias_dtype), int(out_dtype)};
  const int S = skinny_gemm_split(N, K, device);
  const int tiles = int(ceil_div(N, kRows));
  auto go = [&](auto tag) {
    using T = decltype(tag);
    if (M <= 16) launch<T, 16>(a, S, tiles, st);
    else if (M <= 32) launch<T, 32>(a, S, tiles, st);
    else launch<T, 64>(a, S, tiles, st);
  };
  if (ct == DType::bf16) go(bf16{});
  else go(f16{});
  return true;
}

}  // namespace mlxcel::cuda
