// Standalone lab for batch-1 4-bit decode GEMV forms (MLX affine q4, group 64, bf16
// scales and biases, x f32, y f32), built straight with nvcc on the GPU machine:
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -o /tmp/lab bench/qgemv_lab.cu && /tmp/lab
// Each row: one shape of a Llama-3.1-8B layer (fused q/k/v, o, fused gate/up, down), a
// kernel form, microseconds a launch (median of trials of the mean over rotating weight
// copies larger than the L2) and the share of the copy bandwidth measured in the same run.
// The "read" forms stream the same bytes the same way with no math: the ceiling of the
// access pattern; "stream" is a plain read by resident blocks. A last section replays 16
// layers' four launches as one CUDA graph (as the decode step runs them). Forms: d8
// (short-lived blocks, 8 rows + 8 rows of ones), p8 (resident blocks), p16 (resident
// blocks, 16 rows, f16: what became design 11, src/backends/cuda/qgemv_rf.cu). Results:
// bench/results/cuda_gemv.md run 10. Also a CMake target (qgemv_lab, with the bench).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#define CK(x)                                                                                \
  do {                                                                                       \
    cudaError_t e_ = (x);                                                                    \
    if (e_ != cudaSuccess) {                                                                 \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));        \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

namespace {

using bf16 = __nv_bfloat16;
cudaStream_t g_stream = nullptr;

__device__ __forceinline__ unsigned nib_pair(uint32_t w, int j) {
  unsigned r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(w >> (4 * j)), "n"(0x000F000F), "n"(0x43004300));
  return r;
}
__device__ __forceinline__ void mma16816(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint4 ldg_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}
__device__ __forceinline__ float bf_lo(unsigned v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf_hi(unsigned v) { return __uint_as_float(v & 0xFFFF0000u); }

constexpr unsigned kOnes = 0x3F803F80u;  // bf16 pair (1, 1)

// d8 / p8: 16 values of x (starting at xp) -> 8 bf16 pairs (x[8 q + j], x[8 q + j + 4]) at dst.
__device__ __forceinline__ void bf16_pairs16(const float* xp16, unsigned* dst) {
  const float4* xp = reinterpret_cast<const float4*>(xp16);
  const float4 v0 = xp[0], v1 = xp[1], v2 = xp[2], v3 = xp[3];
  const float a[16] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w, v2.x, v2.y, v2.z, v2.w, v3.x, v3.y, v3.z, v3.w};
  unsigned pr[8];
#pragma unroll
  for (int qq = 0; qq < 2; ++qq)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const __nv_bfloat162 bv = __floats2bfloat162_rn(a[8 * qq + j], a[8 * qq + j + 4]);
      pr[4 * qq + j] = *reinterpret_cast<const unsigned*>(&bv);
    }
  uint4* d = reinterpret_cast<uint4*>(dst);
  d[0] = make_uint4(pr[0], pr[1], pr[2], pr[3]);
  d[1] = make_uint4(pr[4], pr[5], pr[6], pr[7]);
}

// Form "d8": a warp takes 8 weight rows and a slice of K; a step is 256 values of K (lane
// (g, c): row g, group c of the step, 32 bytes straight into registers). Every MMA: A rows
// 0-7 the 8 weight rows as exact 128 + q bf16, rows 8-15 ones (so D's rows 8-15 hold the
// sums of the rounded x of each column's group); B column n = group n of a 512-value chunk
// (two steps), nonzero on the one lane of each quad whose group it is. Folded per chunk in
// f32: y += s D + (b - 128 s) X. The warps of a block split K; their sums meet in shared
// memory. MODE 0: full; 1: loads only (the ceiling of the pattern).
template <int WARPS, int UNR, int MODE, int CH = 1, bool PDL = false>
__global__ void __launch_bounds__(WARPS * 32) d8_kernel(const float* __restrict__ x, const uint32_t* __restrict__ W,
                                                        const bf16* __restrict__ S, const bf16* __restrict__ Bz,
                                                        float* __restrict__ y, int N, int K) {
  static_assert(UNR % 2 == 0, "whole chunks a batch");
  extern __shared__ __align__(16) unsigned smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const int nsteps = K / 256, spw = (nsteps + WARPS - 1) / WARPS;
  const int s_begin = warp * spw, s_end = min(nsteps, s_begin + spw), my = max(0, s_end - s_begin);
  unsigned* zero = smem;                             // 32 zero words
  unsigned* xs = smem + 32 + warp * spw * 4 * 32;    // [spw][4 groups][32 pairs]
  float* red = reinterpret_cast<float*>(smem + 32 + WARPS * spw * 4 * 32);  // [WARPS][8]
  const int row = blockIdx.x * 8 + g;
  const int rowc = row < N ? row : N - 1;
  const int groups = K / 64;
  const uint32_t* wrow = W + size_t(rowc) * (K / 8) + size_t(s_begin) * 32 + c * 8;
  const unsigned* srow = reinterpret_cast<const unsigned*>(S + size_t(rowc) * groups);
  const unsigned* brow = reinterpret_cast<const unsigned*>(Bz + size_t(rowc) * groups);

  uint4 cur[UNR][2];
  unsigned csc[UNR / 2], cbi[UNR / 2];
  auto load_batch = [&](int s0, uint4 (&dst)[UNR][2], unsigned (&sc)[UNR / 2], unsigned (&bi)[UNR / 2]) {
#pragma unroll
    for (int u = 0; u < UNR; ++u) {
      const int s = s0 + u;
      if (s < my) {
        const uint4* p = reinterpret_cast<const uint4*>(wrow + size_t(s) * 32);
        dst[u][0] = ldg_stream(p);
        dst[u][1] = ldg_stream(p + 1);
      } else {
        dst[u][0] = dst[u][1] = make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < UNR / 2; ++u) {
      const int s = s0 + 2 * u;
      int gi = (s_begin + s) * 4 + 2 * c;
      if (s >= my || gi >= groups) gi = 0;
      sc[u] = __ldg(srow + gi / 2);
      bi[u] = __ldg(brow + gi / 2);
    }
  };
  load_batch(0, cur, csc, cbi);
  if constexpr (PDL) {
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    asm volatile("griddepcontrol.wait;" ::: "memory");
  }

  // x of this warp's slice -> bf16 pairs in B order, once (each warp writes the zero
  // block too: same values, so no barrier beyond the warp's is needed).
  zero[lane] = 0u;
  for (int pass = 0; pass < (my + 1) / 2; ++pass) {
    const int gl = lane >> 2, h = lane & 3;
    const int s = pass * 2 + (gl >> 2), cg = gl & 3;
    if (s < my) bf16_pairs16(x + (s_begin + s) * 256 + cg * 64 + 16 * h, xs + (s * 4 + cg) * 32 + 8 * h);
  }
  __syncwarp();

  float yg = 0.0f;
  float acc[CH][4] = {};
  unsigned xor_acc = 0;
  for (int s0 = 0; s0 < my; s0 += UNR) {
    uint4 nxt[UNR][2];
    unsigned nsc[UNR / 2], nbi[UNR / 2];
    const bool more = s0 + UNR < my;
    if (more) load_batch(s0 + UNR, nxt, nsc, nbi);
#pragma unroll
    for (int u = 0; u < UNR; ++u) {
      const int s = s0 + u;
      if (MODE == 1) {
        xor_acc ^= cur[u][0].x ^ cur[u][0].y ^ cur[u][0].z ^ cur[u][0].w ^ cur[u][1].x ^ cur[u][1].y ^ cur[u][1].z ^
                   cur[u][1].w;
        if (u % 2 == 1) xor_acc ^= csc[u / 2] ^ cbi[u / 2];
        continue;
      }
      if (s < my) {
        const bool data = g == 4 * (s & 1) + c;
        const uint4* bp = reinterpret_cast<const uint4*>(data ? xs + (s * 4 + c) * 32 : zero);
        unsigned b[32];
        if (MODE == 2) {
#pragma unroll
          for (int v = 0; v < 32; ++v) b[v] = data ? 0x3F803F80u + v : 0u;
        } else {
#pragma unroll
          for (int v = 0; v < 8; ++v) {
            const uint4 t = bp[data ? v : 0];
            b[4 * v] = t.x, b[4 * v + 1] = t.y, b[4 * v + 2] = t.z, b[4 * v + 3] = t.w;
          }
        }
        const uint32_t w[8] = {cur[u][0].x, cur[u][0].y, cur[u][0].z, cur[u][0].w,
                               cur[u][1].x, cur[u][1].y, cur[u][1].z, cur[u][1].w};
        if (MODE == 3) {
#pragma unroll
          for (int m = 0; m < 16; ++m) {
            const int q = m >> 1, j = 2 * (m & 1);
            xor_acc ^= (nib_pair(w[q], j) + b[2 * m]) ^ (nib_pair(w[q], j + 1) + b[2 * m + 1]);
          }
        } else
#pragma unroll
        for (int m = 0; m < 16; ++m) {
          const int q = m >> 1, j = 2 * (m & 1);
          mma16816(acc[m % CH], nib_pair(w[q], j), kOnes, nib_pair(w[q], j + 1), kOnes, b[2 * m], b[2 * m + 1]);
        }
      }
      if (u % 2 == 1 || s + 1 >= my) {
        // fold the chunk: lane (g, c) holds groups 2c, 2c + 1 of it for row g (acc 0, 1)
        // and their x sums (acc 2, 3).
#pragma unroll
        for (int h = 1; h < CH; ++h)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[0][e] += acc[h][e], acc[h][e] = 0.0f;
        const unsigned sp = csc[u / 2], bp2 = cbi[u / 2];
        const float s0f = bf_lo(sp), s1f = bf_hi(sp), b0f = bf_lo(bp2), b1f = bf_hi(bp2);
        yg = fmaf(s0f, acc[0][0], fmaf(fmaf(-128.0f, s0f, b0f), acc[0][2], yg));
        yg = fmaf(s1f, acc[0][1], fmaf(fmaf(-128.0f, s1f, b1f), acc[0][3], yg));
        acc[0][0] = acc[0][1] = acc[0][2] = acc[0][3] = 0.0f;
      }
    }
    if (more) {
#pragma unroll
      for (int u = 0; u < UNR; ++u) cur[u][0] = nxt[u][0], cur[u][1] = nxt[u][1];
#pragma unroll
      for (int u = 0; u < UNR / 2; ++u) csc[u] = nsc[u], cbi[u] = nbi[u];
    }
  }
  if (MODE == 1 || MODE == 3) yg += __uint_as_float(xor_acc & 0x007FFFFFu);
  yg += __shfl_xor_sync(0xFFFFFFFFu, yg, 1);
  yg += __shfl_xor_sync(0xFFFFFFFFu, yg, 2);
  if (c == 0) red[warp * 8 + g] = yg;
  __syncthreads();
  if (threadIdx.x < 8) {
    float t = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) t += red[w * 8 + threadIdx.x];
    const int r = blockIdx.x * 8 + threadIdx.x;
    if (r < N) y[r] = t;
  }
}

template <int WARPS, int UNR, int MODE, int CH = 1, bool PDL = false>
void launch_d8(const float* x, const uint32_t* W, const bf16* S, const bf16* B, float* y, int N, int K) {
  const int nsteps = K / 256, spw = (nsteps + WARPS - 1) / WARPS;
  const size_t smem = (32 + size_t(WARPS) * spw * 4 * 32 + WARPS * 8) * 4;
  static bool set = false;
  if (!set) {
    CK(cudaFuncSetAttribute(d8_kernel<WARPS, UNR, MODE, CH, PDL>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            200 * 1024));
    set = true;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((N + 7) / 8);
  cfg.blockDim = dim3(WARPS * 32);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = g_stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = PDL ? 1 : 0;
  CK(cudaLaunchKernelEx(&cfg, d8_kernel<WARPS, UNR, MODE, CH, PDL>, x, W, S, B, y, N, K));
}

__global__ void fill_kernel(uint32_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 15, h *= 0x85EBCA77u, h ^= h >> 13;
    p[i] = h;
  }
}
__global__ void fill_scales(bf16* p, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = __float2bfloat16_rn(0.001f * float(1 + (i % 13)));
}
template <bool PDL>
__global__ void empty_kernel(float* y) {
  if constexpr (PDL) asm volatile("griddepcontrol.wait;" ::: "memory");
  if (threadIdx.x == 0 && blockIdx.x == 0 && y == nullptr) y[0] = 1.0f;
}
template <bool PDL>
void launch_empty(const float*, const uint32_t*, const bf16*, const bf16*, float* y, int N, int) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((N + 7) / 8);
  cfg.blockDim = dim3(128);
  cfg.stream = g_stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = PDL ? 1 : 0;
  CK(cudaLaunchKernelEx(&cfg, empty_kernel<PDL>, y));
}

// The ceiling of a read: a grid of resident blocks, each thread 4 16-byte loads in flight,
// over the matrix's words, scales and biases (three arrays, as the GEMV reads them).
__global__ void __launch_bounds__(256) stream_kernel(const uint4* a, size_t na, const uint4* b, size_t nb,
                                                     const uint4* c, size_t nc, float* y) {
  unsigned acc = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  const size_t t0 = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  size_t i = t0;
  for (; i + 3 * stride < na; i += 4 * stride) {
    const uint4 v0 = ldg_stream(a + i), v1 = ldg_stream(a + i + stride), v2 = ldg_stream(a + i + 2 * stride),
                v3 = ldg_stream(a + i + 3 * stride);
    acc ^= v0.x ^ v1.y ^ v2.z ^ v3.w;
  }
  for (; i < na; i += stride) acc ^= ldg_stream(a + i).x;
  for (i = t0; i < nb; i += stride) acc ^= ldg_stream(b + i).y;
  for (i = t0; i < nc; i += stride) acc ^= ldg_stream(c + i).z;
  if (acc == 0x12345678u) y[0] = 1.0f;
}
void launch_stream(const float*, const uint32_t* W, const bf16* S, const bf16* B, float* y, int N, int K) {
  static int grid = 0;
  if (!grid) {
    int per = 0, dev = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, stream_kernel, 256, 0));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    grid = per * prop.multiProcessorCount;
  }
  const size_t nw = size_t(N) * K / 32, ns = size_t(N) * K / 64 * 2 / 16;
  stream_kernel<<<grid, 256, 0, g_stream>>>(reinterpret_cast<const uint4*>(W), nw, reinterpret_cast<const uint4*>(S),
                                            ns, reinterpret_cast<const uint4*>(B), ns, y);
}

// Blocks of `threads` that stay resident on the card for Kernel at smem bytes (measured once).
template <auto Kernel>
int resident_grid(int threads, size_t smem, const char* name) {
  static int grid = 0;
  if (!grid) {
    CK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 220 * 1024));
    int per = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, Kernel, threads, smem));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    grid = per * prop.multiProcessorCount;
    std::fprintf(stderr, "%s: %d blocks an SM, %zu bytes of shared memory\n", name, per, smem);
    if (!grid) std::exit(1);
  }
  return grid;
}

// Form "p8": persistent blocks of S warps. Warp w owns steps [w SPW, (w + 1) SPW) of K
// (S SPW 256 == K), its slice of x converted once into shared memory (as d8). The block
// walks 8-row tiles blockIdx.x, + gridDim.x, ...; the next tile's weights are loaded into
// registers before the current one is computed; the warps' sums of a tile meet in shared
// memory after one barrier a tile. MODE 1: loads only.
template <int S, int SPW, int MODE, int MINB>
__global__ void __launch_bounds__(S * 32, MINB) p8_kernel(const float* __restrict__ x, const uint32_t* __restrict__ W,
                                                          const bf16* __restrict__ Sc, const bf16* __restrict__ Bz,
                                                          float* __restrict__ y, int N, int K) {
  static_assert(SPW % 2 == 0, "whole chunks");
  extern __shared__ __align__(16) unsigned smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  unsigned* zero = smem;
  unsigned* xs = smem + 32 + warp * SPW * 128;
  float* red = reinterpret_cast<float*>(smem + 32 + S * SPW * 128);
  const int groups = K / 64, tiles = (N + 7) / 8, s_begin = warp * SPW;
  struct Batch {
    uint4 w[SPW][2];
    unsigned sc[SPW / 2], bi[SPW / 2];
  };
  auto load = [&](int t, Batch& b) {
    int row = t * 8 + g;
    row = row < N ? row : N - 1;
    const uint4* wp = reinterpret_cast<const uint4*>(W + size_t(row) * (K / 8) + s_begin * 32) + 2 * c;
#pragma unroll
    for (int s = 0; s < SPW; ++s) b.w[s][0] = ldg_stream(wp + s * 8), b.w[s][1] = ldg_stream(wp + s * 8 + 1);
    const unsigned* sp = reinterpret_cast<const unsigned*>(Sc + size_t(row) * groups);
    const unsigned* bp = reinterpret_cast<const unsigned*>(Bz + size_t(row) * groups);
#pragma unroll
    for (int u = 0; u < SPW / 2; ++u) {
      const int gi = (s_begin + 2 * u) * 4 + 2 * c;
      b.sc[u] = __ldg(sp + gi / 2), b.bi[u] = __ldg(bp + gi / 2);
    }
  };
  Batch b0, b1;
  int t = blockIdx.x;
  if (t < tiles) load(t, b0);
  zero[lane] = 0u;
  for (int pass = 0; pass < SPW / 2; ++pass) {
    const int gl = lane >> 2, h = lane & 3;
    const int s = pass * 2 + (gl >> 2), cg = gl & 3;
    bf16_pairs16(x + (s_begin + s) * 256 + cg * 64 + 16 * h, xs + (s * 4 + cg) * 32 + 8 * h);
  }
  __syncwarp();
  auto compute = [&](const Batch& b) {
    float yg = 0.0f;
    if constexpr (MODE == 1) {
      unsigned v = 0;
#pragma unroll
      for (int s = 0; s < SPW; ++s) v ^= b.w[s][0].x ^ b.w[s][0].y ^ b.w[s][0].z ^ b.w[s][0].w ^ b.w[s][1].x ^
                                         b.w[s][1].y ^ b.w[s][1].z ^ b.w[s][1].w;
#pragma unroll
      for (int u = 0; u < SPW / 2; ++u) v ^= b.sc[u] ^ b.bi[u];
      return __uint_as_float(v & 0x007FFFFFu);
    }
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int s = 0; s < SPW; ++s) {
      const bool data = g == 4 * (s & 1) + c;
      const uint4* bp = reinterpret_cast<const uint4*>(data ? xs + (s * 4 + c) * 32 : zero);
      unsigned bb[32];
#pragma unroll
      for (int v = 0; v < 8; ++v) {
        const uint4 q = bp[data ? v : 0];
        bb[4 * v] = q.x, bb[4 * v + 1] = q.y, bb[4 * v + 2] = q.z, bb[4 * v + 3] = q.w;
      }
      const uint32_t w[8] = {b.w[s][0].x, b.w[s][0].y, b.w[s][0].z, b.w[s][0].w,
                             b.w[s][1].x, b.w[s][1].y, b.w[s][1].z, b.w[s][1].w};
#pragma unroll
      for (int m = 0; m < 16; ++m) {
        const int q = m >> 1, j = 2 * (m & 1);
        mma16816(acc, nib_pair(w[q], j), kOnes, nib_pair(w[q], j + 1), kOnes, bb[2 * m], bb[2 * m + 1]);
      }
      if (s & 1) {
        const unsigned sp = b.sc[s / 2], bp2 = b.bi[s / 2];
        const float s0f = bf_lo(sp), s1f = bf_hi(sp), b0f = bf_lo(bp2), b1f = bf_hi(bp2);
        yg = fmaf(s0f, acc[0], fmaf(fmaf(-128.0f, s0f, b0f), acc[2], yg));
        yg = fmaf(s1f, acc[1], fmaf(fmaf(-128.0f, s1f, b1f), acc[3], yg));
        acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
      }
    }
    return yg;
  };
  int j = 0;
  auto tile = [&](const Batch& cur, Batch& nxt) {
    const int tn = t + int(gridDim.x);
    if (tn < tiles) load(tn, nxt);
    float yg = compute(cur);
    yg += __shfl_xor_sync(0xFFFFFFFFu, yg, 1);
    yg += __shfl_xor_sync(0xFFFFFFFFu, yg, 2);
    float* rb = red + (j & 1) * S * 8;
    if (c == 0) rb[warp * 8 + g] = yg;
    __syncthreads();
    if (threadIdx.x < 8) {
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < S; ++w) sum += rb[w * 8 + threadIdx.x];
      const int r = t * 8 + threadIdx.x;
      if (r < N) y[r] = sum;
    }
    t = tn, ++j;
  };
  while (t < tiles) {
    tile(b0, b1);
    if (t >= tiles) break;
    tile(b1, b0);
  }
}

template <int S, int SPW, int MODE, int MINB>
void launch_p8(const float* x, const uint32_t* W, const bf16* Sc, const bf16* B, float* y, int N, int K) {
  if (S * SPW * 256 != K) {
    std::fprintf(stderr, "p8: S * SPW * 256 != K\n");
    std::exit(1);
  }
  const size_t smem = (32 + size_t(S) * SPW * 128 + 2 * S * 8) * 4;
  const int grid = resident_grid<p8_kernel<S, SPW, MODE, MINB>>(S * 32, smem, "p8_kernel");
  const int tiles = (N + 7) / 8;
  p8_kernel<S, SPW, MODE, MINB><<<std::min(grid, tiles), S * 32, smem, g_stream>>>(x, W, Sc, B, y, N, K);
}
// p8 with S picked from K: 4096 -> 8 x 2 steps, 14336 -> 28 x 2 steps.
template <int MODE>
void launch_p8_auto(const float* x, const uint32_t* W, const bf16* Sc, const bf16* B, float* y, int N, int K) {
  if (K == 4096) launch_p8<8, 2, MODE, 3>(x, W, Sc, B, y, N, K);
  else launch_p8<28, 2, MODE, 1>(x, W, Sc, B, y, N, K);
}
template <int MODE>
void launch_p8_auto4(const float* x, const uint32_t* W, const bf16* Sc, const bf16* B, float* y, int N, int K) {
  if (K == 4096) launch_p8<4, 4, MODE, 4>(x, W, Sc, B, y, N, K);
  else launch_p8<14, 4, MODE, 1>(x, W, Sc, B, y, N, K);
}

__device__ __forceinline__ unsigned lop_or(uint32_t w, uint32_t mask) {
  unsigned r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(w), "r"(mask), "r"(0x64006400u));
  return r;
}
__device__ __forceinline__ void mma16816h(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                          unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Form "p16": p8's persistent blocks with 16-row tiles (rows g and g + 8 both weights) and
// f16 on the tensor cores: a nibble under f16 1024.0 is 1024 + q, and at bits 4-7 1024 + 16 q
// with no shift (x for those slots is stored / 16): one shift and four LOP3 a word. The
// offsets come back per group: y += s (D - C) + b X with C = 1024 (sum of the even slots'
// x + sum of the odd slots' x / 16) and X the sum of the x the MMA saw, both made once a
// launch per warp. The next step's words are loaded before a step is computed.

__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(dst))),
               "l"(src));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(dst))),
               "l"(src));
}

// p16 / r16's shared pieces. x of a warp's SPW steps -> f16 B fragments in xs (pair p = 4 q
// + j of a group: (x[8 q + j], x[8 q + j + 4]), / 16 for odd j), and the C and X of the
// lane's folding groups 2c, 2c + 1 of each chunk.
template <int SPW>
__device__ __forceinline__ void p16_convert_x(const float* __restrict__ x, unsigned* xs, int s_begin, int lane,
                                              float (&Xr)[SPW / 2][2], float (&Cr)[SPW / 2][2]) {
  const int c = lane & 3;
#pragma unroll
  for (int pass = 0; pass < SPW / 2; ++pass) {
    const int gl = lane >> 2, h = lane & 3;
    const int s = pass * 2 + (gl >> 2), cg = gl & 3;
    const float4* xp = reinterpret_cast<const float4*>(x + (s_begin + s) * 256 + cg * 64 + 16 * h);
    const float4 v0 = xp[0], v1 = xp[1], v2 = xp[2], v3 = xp[3];
    const float a[16] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w, v2.x, v2.y, v2.z, v2.w, v3.x, v3.y, v3.z, v3.w};
    unsigned pr[8];
    float se = 0.0f, so = 0.0f;
#pragma unroll
    for (int qq = 0; qq < 2; ++qq)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float f = (j & 1) ? 0.0625f : 1.0f;
        const __half2 hv = __floats2half2_rn(a[8 * qq + j] * f, a[8 * qq + j + 4] * f);
        pr[4 * qq + j] = *reinterpret_cast<const unsigned*>(&hv);
        const float2 back = __half22float2(hv);
        if (j & 1) so += back.x + back.y;
        else se += back.x + back.y;
      }
    uint4* dst = reinterpret_cast<uint4*>(xs + (s * 4 + cg) * 32 + 8 * h);
    dst[0] = make_uint4(pr[0], pr[1], pr[2], pr[3]);
    dst[1] = make_uint4(pr[4], pr[5], pr[6], pr[7]);
    se += __shfl_xor_sync(0xFFFFFFFFu, se, 1), so += __shfl_xor_sync(0xFFFFFFFFu, so, 1);
    se += __shfl_xor_sync(0xFFFFFFFFu, se, 2), so += __shfl_xor_sync(0xFFFFFFFFu, so, 2);
    const float X = se + 16.0f * so, C = 1024.0f * (se + so);
    // this lane folds groups 2c and 2c + 1 of the chunk: lanes 8c and 8c + 4 made them
    Xr[pass][0] = __shfl_sync(0xFFFFFFFFu, X, 8 * c), Xr[pass][1] = __shfl_sync(0xFFFFFFFFu, X, 8 * c + 4);
    Cr[pass][0] = __shfl_sync(0xFFFFFFFFu, C, 8 * c), Cr[pass][1] = __shfl_sync(0xFFFFFFFFu, C, 8 * c + 4);
  }
}
// Step s's 16 MMAs: words w (rows g: w[0..1], g + 8: w[2..3]) against the B fragments.
__device__ __forceinline__ void p16_step(float (&acc)[4], const uint4 (&w)[4], const unsigned* xs,
                                         const unsigned* zero, int s, int g, int c) {
  const bool data = g == 4 * (s & 1) + c;
  const uint4* bp = reinterpret_cast<const uint4*>(data ? xs + (s * 4 + c) * 32 : zero);
  const uint32_t wa[8] = {w[0].x, w[0].y, w[0].z, w[0].w, w[1].x, w[1].y, w[1].z, w[1].w};
  const uint32_t wb[8] = {w[2].x, w[2].y, w[2].z, w[2].w, w[3].x, w[3].y, w[3].z, w[3].w};
#pragma unroll
  for (int v = 0; v < 8; ++v) {
    const uint4 bq = bp[data ? v : 0];  // pairs 4v .. 4v + 3: word v's two MMAs
    const uint32_t a8 = wa[v] >> 8, b8 = wb[v] >> 8;
    mma16816h(acc, lop_or(wa[v], 0x000F000Fu), lop_or(wb[v], 0x000F000Fu), lop_or(wa[v], 0x00F000F0u),
              lop_or(wb[v], 0x00F000F0u), bq.x, bq.y);
    mma16816h(acc, lop_or(a8, 0x000F000Fu), lop_or(b8, 0x000F000Fu), lop_or(a8, 0x00F000F0u), lop_or(b8, 0x00F000F0u),
              bq.z, bq.w);
  }
}
// A chunk's fold: y += s (D - C) + b X for the lane's two groups, rows g (y0) and g + 8 (y1).
__device__ __forceinline__ void p16_fold(float (&acc)[4], const unsigned (&sc)[2], const unsigned (&bi)[2],
                                         const float (&X)[2], const float (&C)[2], float& y0, float& y1) {
  y0 = fmaf(bf_lo(sc[0]), acc[0] - C[0], fmaf(bf_lo(bi[0]), X[0], y0));
  y0 = fmaf(bf_hi(sc[0]), acc[1] - C[1], fmaf(bf_hi(bi[0]), X[1], y0));
  y1 = fmaf(bf_lo(sc[1]), acc[2] - C[0], fmaf(bf_lo(bi[1]), X[0], y1));
  y1 = fmaf(bf_hi(sc[1]), acc[3] - C[1], fmaf(bf_hi(bi[1]), X[1], y1));
  acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
}
// A tile's end: the quad's sums, the warps' sums in order behind one barrier, y.
template <int S>
__device__ __forceinline__ void p16_tile_out(float y0, float y1, float* rb, int warp, int g, int c, int t, int N,
                                             float* __restrict__ y) {
  y0 += __shfl_xor_sync(0xFFFFFFFFu, y0, 1), y1 += __shfl_xor_sync(0xFFFFFFFFu, y1, 1);
  y0 += __shfl_xor_sync(0xFFFFFFFFu, y0, 2), y1 += __shfl_xor_sync(0xFFFFFFFFu, y1, 2);
  if (c == 0) rb[warp * 16 + g] = y0, rb[warp * 16 + g + 8] = y1;
  __syncthreads();
  if (threadIdx.x < 16) {
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < S; ++w) sum += rb[w * 16 + threadIdx.x];
    const int r = t * 16 + threadIdx.x;
    if (r < N) y[r] = sum;
  }
}

template <int S, int SPW, int MODE, int MINB>
__global__ void __launch_bounds__(S * 32, MINB) p16_kernel(const float* __restrict__ x, const uint32_t* __restrict__ W,
                                                           const bf16* __restrict__ Sc, const bf16* __restrict__ Bz,
                                                           float* __restrict__ y, int N, int K) {
  static_assert(SPW % 2 == 0, "whole chunks");
  extern __shared__ __align__(16) unsigned smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  unsigned* zero = smem;
  unsigned* xs = smem + 32 + warp * SPW * 128;
  float* red = reinterpret_cast<float*>(smem + 32 + S * SPW * 128);
  const int groups = K / 64, tiles = (N + 15) / 16, s_begin = warp * SPW;
  struct Step {
    uint4 w[4];
    unsigned sc[2], bi[2];
  };
  auto load = [&](int t, int s, Step& b, bool scales) {
    int r0 = t * 16 + g, r1 = r0 + 8;
    r0 = r0 < N ? r0 : N - 1, r1 = r1 < N ? r1 : N - 1;
    // MODE 5: lane c reads 16-byte pieces c and c + 4 of the row's 128 bytes (a warp's load
    // covers 64 contiguous bytes of each of 8 rows); MODE 4: pieces 2c, 2c + 1 through L1.
    const int o0 = MODE == 5 ? c : 2 * c, o1 = MODE == 5 ? c + 4 : 2 * c + 1;
    const uint4* p0 = reinterpret_cast<const uint4*>(W + size_t(r0) * (K / 8) + (s_begin + s) * 32);
    const uint4* p1 = reinterpret_cast<const uint4*>(W + size_t(r1) * (K / 8) + (s_begin + s) * 32);
    if (MODE == 4) b.w[0] = __ldg(p0 + o0), b.w[1] = __ldg(p0 + o1), b.w[2] = __ldg(p1 + o0), b.w[3] = __ldg(p1 + o1);
    else b.w[0] = ldg_stream(p0 + o0), b.w[1] = ldg_stream(p0 + o1), b.w[2] = ldg_stream(p1 + o0), b.w[3] = ldg_stream(p1 + o1);
    if (scales) {
      const int gi = (s_begin + s - 1) * 4 + 2 * c;  // the chunk of steps s - 1, s
      b.sc[0] = __ldg(reinterpret_cast<const unsigned*>(Sc + size_t(r0) * groups + gi));
      b.bi[0] = __ldg(reinterpret_cast<const unsigned*>(Bz + size_t(r0) * groups + gi));
      b.sc[1] = __ldg(reinterpret_cast<const unsigned*>(Sc + size_t(r1) * groups + gi));
      b.bi[1] = __ldg(reinterpret_cast<const unsigned*>(Bz + size_t(r1) * groups + gi));
    }
  };
  Step bufs[2];
  int t = blockIdx.x;
  if (t < tiles) load(t, 0, bufs[0], false);
  zero[lane] = 0u;
  float Xr[SPW / 2][2], Cr[SPW / 2][2];
  p16_convert_x<SPW>(x, xs, s_begin, lane, Xr, Cr);
  __syncwarp();
  int j = 0;
  while (t < tiles) {
    float y0 = 0.0f, y1 = 0.0f;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    unsigned vx = 0;
#pragma unroll
    for (int s = 0; s < SPW; ++s) {
      Step& cur = bufs[s & 1];
      Step& nxt = bufs[(s + 1) & 1];
      if (s + 1 < SPW) load(t, s + 1, nxt, ((s + 1) & 1) != 0);
      else if (t + int(gridDim.x) < tiles) load(t + int(gridDim.x), 0, nxt, false);
      if constexpr (MODE == 1 || MODE == 4 || MODE == 5) {
#pragma unroll
        for (int i = 0; i < 4; ++i) vx ^= cur.w[i].x ^ cur.w[i].y ^ cur.w[i].z ^ cur.w[i].w;
        if (s & 1) vx ^= cur.sc[0] ^ cur.sc[1] ^ cur.bi[0] ^ cur.bi[1];
        continue;
      }
      p16_step(acc, cur.w, xs, zero, s, g, c);
      if (s & 1) p16_fold(acc, cur.sc, cur.bi, Xr[s / 2], Cr[s / 2], y0, y1);
    }
    if constexpr (MODE == 1 || MODE == 4 || MODE == 5) y0 = __uint_as_float(vx & 0x007FFFFFu);
    p16_tile_out<S>(y0, y1, red + (j & 1) * S * 16, warp, g, c, t, N, y);
    t += int(gridDim.x), ++j;
  }
}

template <int S, int RING, int MODE, int MINB>
__global__ void __launch_bounds__(S * 32, MINB) r16_kernel(const float* __restrict__ x, const uint32_t* __restrict__ W,
                                                           const bf16* __restrict__ Sc, const bf16* __restrict__ Bz,
                                                           float* __restrict__ y, int N, int K) {
  constexpr int SPW = 2;
  extern __shared__ __align__(16) unsigned smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  unsigned* zero = smem;
  unsigned* xs = smem + 32 + warp * SPW * 128;
  float* red = reinterpret_cast<float*>(smem + 32 + S * SPW * 128);
  // this warp's ring: [RING][5 pieces][32 lanes] of 16 bytes (pieces 0-3 the lane's words of
  // rows g, g + 8; piece 4 the scales and biases of the step that folds)
  uint4* ring = reinterpret_cast<uint4*>(smem + 32 + S * SPW * 128 + 2 * S * 16) + warp * RING * 5 * 32 + lane;
  const int groups = K / 64, tiles = (N + 15) / 16, s_begin = warp * SPW;
  const int my_items = int(blockIdx.x) < tiles ? ((tiles - int(blockIdx.x) + int(gridDim.x) - 1) / int(gridDim.x)) * 2 : 0;
  auto issue = [&](int n) {
    if (n < my_items) {
      const int tt = int(blockIdx.x) + (n >> 1) * int(gridDim.x), s = n & 1;
      int r0 = tt * 16 + g, r1 = r0 + 8;
      r0 = r0 < N ? r0 : N - 1, r1 = r1 < N ? r1 : N - 1;
      const uint4* p0 = reinterpret_cast<const uint4*>(W + size_t(r0) * (K / 8) + (s_begin + s) * 32) + 2 * c;
      const uint4* p1 = reinterpret_cast<const uint4*>(W + size_t(r1) * (K / 8) + (s_begin + s) * 32) + 2 * c;
      uint4* slot = ring + (n % RING) * 5 * 32;
      cp_async16(slot, p0), cp_async16(slot + 32, p0 + 1), cp_async16(slot + 64, p1), cp_async16(slot + 96, p1 + 1);
      if (s == 1) {
        const int gi = s_begin * 4 + 2 * c;
        unsigned* sp = reinterpret_cast<unsigned*>(slot + 128);
        cp_async4(sp, Sc + size_t(r0) * groups + gi), cp_async4(sp + 1, Bz + size_t(r0) * groups + gi);
        cp_async4(sp + 2, Sc + size_t(r1) * groups + gi), cp_async4(sp + 3, Bz + size_t(r1) * groups + gi);
      }
    }
    asm volatile("cp.async.commit_group;\n" ::);
  };
  for (int n = 0; n < RING - 1; ++n) issue(n);
  int t = blockIdx.x;
  zero[lane] = 0u;
  float Xr[SPW / 2][2], Cr[SPW / 2][2];
  p16_convert_x<SPW>(x, xs, s_begin, lane, Xr, Cr);
  __syncwarp();
  int j = 0, n = 0;
  while (t < tiles) {
    float y0 = 0.0f, y1 = 0.0f;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    unsigned vx = 0;
#pragma unroll
    for (int s = 0; s < SPW; ++s) {
      asm volatile("cp.async.wait_group %0;\n" ::"n"(RING - 2));
      issue(n + s + RING - 1);
      const uint4* slot = ring + ((n + s) % RING) * 5 * 32;
      struct {
        uint4 w[4];
        unsigned sc[2], bi[2];
      } cur;
      cur.w[0] = slot[0], cur.w[1] = slot[32], cur.w[2] = slot[64], cur.w[3] = slot[96];
      if (s == 1) {
        const uint4 q = slot[128];
        cur.sc[0] = q.x, cur.bi[0] = q.y, cur.sc[1] = q.z, cur.bi[1] = q.w;
      }
      if constexpr (MODE == 1) {
#pragma unroll
        for (int i = 0; i < 4; ++i) vx ^= cur.w[i].x ^ cur.w[i].y ^ cur.w[i].z ^ cur.w[i].w;
        if (s & 1) vx ^= cur.sc[0] ^ cur.sc[1] ^ cur.bi[0] ^ cur.bi[1];
        continue;
      }
      p16_step(acc, cur.w, xs, zero, s, g, c);
      if (s & 1) p16_fold(acc, cur.sc, cur.bi, Xr[s / 2], Cr[s / 2], y0, y1);
    }
    if constexpr (MODE == 1 || MODE == 4 || MODE == 5) y0 = __uint_as_float(vx & 0x007FFFFFu);
    p16_tile_out<S>(y0, y1, red + (j & 1) * S * 16, warp, g, c, t, N, y);
    t += int(gridDim.x), ++j, n += 2;
  }
  asm volatile("cp.async.wait_group 0;\n" ::);
}

template <int S, int SPW, int MODE, int MINB>
void launch_p16(const float* x, const uint32_t* W, const bf16* Sc, const bf16* B, float* y, int N, int K) {
  if (S * SPW * 256 != K) {
    std::fprintf(stderr, "p16: S * SPW * 256 != K\n");
    std::exit(1);
  }
  const size_t smem = (32 + size_t(S) * SPW * 128 + 2 * S * 16) * 4;
  const int grid = resident_grid<p16_kernel<S, SPW, MODE, MINB>>(S * 32, smem, "p16_kernel");
  const int tiles = (N + 15) / 16;
  p16_kernel<S, SPW, MODE, MINB><<<std::min(grid, tiles), S * 32, smem, g_stream>>>(x, W, Sc, B, y, N, K);
}

template <int S, int RING, int MODE, int MINB>
void launch_r16(const float* x, const uint32_t* W, const bf16* Sc, const bf16* B, float* y, int N, int K) {
  if (S * 2 * 256 != K) {
    std::fprintf(stderr, "r16: S * 512 != K\n");
    std::exit(1);
  }
  const size_t smem = (32 + size_t(S) * 256 + 2 * S * 16) * 4 + size_t(S) * RING * 5 * 32 * 16;
  const int grid = resident_grid<r16_kernel<S, RING, MODE, MINB>>(S * 32, smem, "r16_kernel");
  const int tiles = (N + 15) / 16;
  r16_kernel<S, RING, MODE, MINB><<<std::min(grid, tiles), S * 32, smem, g_stream>>>(x, W, Sc, B, y, N, K);
}
template <int MODE, int RING>
void launch_r16_a(const float* x, const uint32_t* W, const bf16* Sc, const bf16* B, float* y, int N, int K) {
  if (K == 4096) launch_r16<8, RING, MODE, 2>(x, W, Sc, B, y, N, K);
  else launch_r16<28, 2, MODE, 1>(x, W, Sc, B, y, N, K);
}
template <int MODE>
void launch_p16_a(const float* x, const uint32_t* W, const bf16* Sc, const bf16* B, float* y, int N, int K) {
  if (K == 4096) launch_p16<8, 2, MODE, 2>(x, W, Sc, B, y, N, K);
  else launch_p16<14, 4, MODE, 1>(x, W, Sc, B, y, N, K);
}
template <int MODE>
void launch_p16_b(const float* x, const uint32_t* W, const bf16* Sc, const bf16* B, float* y, int N, int K) {
  if (K == 4096) launch_p16<4, 4, MODE, 4>(x, W, Sc, B, y, N, K);
  else launch_p16<28, 2, MODE, 1>(x, W, Sc, B, y, N, K);
}

// Copy-bandwidth anchor: a 2 GiB device-to-device copy, bytes read + written.
double copy_bw() {
  const size_t n = size_t(1) << 31;
  void *a, *b;
  CK(cudaMalloc(&a, n));
  CK(cudaMalloc(&b, n));
  CK(cudaMemset(a, 1, n));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
  std::vector<float> t;
  for (int i = 0; i < 5; ++i) {
    CK(cudaEventRecord(e0));
    CK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * n / (t[2] * 1e-3) / 1e9;
}

float bf_round(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

struct Shape {
  const char* name;
  int N, K;
};

using LaunchFn = void (*)(const float*, const uint32_t*, const bf16*, const bf16*, float*, int, int);
struct Form {
  const char* name;
  LaunchFn fn;
  bool check;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "profile") {
    // For a profiler (ncu --kernel-name regex:p16_kernel): five launches of "p16 a" on the
    // o shape (4096 x 4096).
    CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
    const int N = 4096, K = 4096;
    uint32_t* w;
    bf16 *sc, *bi;
    float *x, *y;
    CK(cudaMalloc(&w, size_t(N) * K / 2));
    CK(cudaMalloc(&sc, size_t(N) * K / 64 * 2));
    CK(cudaMalloc(&bi, size_t(N) * K / 64 * 2));
    CK(cudaMalloc(&x, K * 4));
    CK(cudaMalloc(&y, N * 4));
    fill_kernel<<<1024, 256>>>(w, size_t(N) * K / 8, 3);
    fill_scales<<<256, 256>>>(sc, size_t(N) * K / 64);
    fill_scales<<<256, 256>>>(bi, size_t(N) * K / 64);
    fill_scales<<<64, 256>>>(reinterpret_cast<bf16*>(x), K * 2);
    CK(cudaDeviceSynchronize());
    for (int i = 0; i < 5; ++i) launch_p16_a<0>(x, w, sc, bi, y, N, K);
    CK(cudaStreamSynchronize(g_stream));
    std::printf("profile launches done\n");
    return 0;
  }
  int reps = argc > 1 ? std::atoi(argv[1]) : 5;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const double bw = copy_bw();
  CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  std::printf("# %s, %d SMs, copy bandwidth %.0f GB/s\n\n", prop.name, prop.multiProcessorCount, bw);
  const Shape shapes[] = {{"qkv 6144x4096", 6144, 4096},
                          {"o 4096x4096", 4096, 4096},
                          {"gate/up 28672x4096", 28672, 4096},
                          {"down 4096x14336", 4096, 14336},
                          {"gate 14336x4096", 14336, 4096}};
  const Form forms[] = {
      {"stream", launch_stream, false},
      {"p16 read a", launch_p16_a<1>, false},
      {"p16 a", launch_p16_a<0>, true},
      {"p16 b", launch_p16_b<0>, true},
      {"r16 read ring3", launch_r16_a<1, 3>, false},
      {"r16 ring3", launch_r16_a<0, 3>, true},
      {"r16 read ring4", launch_r16_a<1, 4>, false},
      {"r16 ring4", launch_r16_a<0, 4>, true},
  };
  std::printf("| shape | form | us | GB/s | share of copy BW | rel err |\n| --- | --- | ---: | ---: | ---: | ---: |\n");
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> ux(-1.0f, 1.0f), us(0.002f, 0.02f), ub(-0.1f, 0.1f);
  std::uniform_int_distribution<uint32_t> uw;
  double layer_us[32] = {};
  for (int si = 0; si < 5; ++si) {
    const Shape& sh = shapes[si];
    const int N = sh.N, K = sh.K, G = K / 64;
    const size_t wbytes = size_t(N) * K / 2, sbytes = size_t(N) * G * 2;
    const size_t per = wbytes + 2 * sbytes;
    const int copies = int(std::max<size_t>(2, (size_t(400) << 20) / per + 1));
    std::vector<uint32_t> hw(size_t(N) * K / 8);
    std::vector<bf16> hs(size_t(N) * G), hb(size_t(N) * G);
    std::vector<float> hx(K);
    for (auto& v : hw) v = uw(rng);
    for (auto& v : hs) v = __float2bfloat16_rn(us(rng));
    for (auto& v : hb) v = __float2bfloat16_rn(ub(rng));
    for (auto& v : hx) v = ux(rng);
    uint32_t* dw;
    bf16 *ds, *db;
    float *dx, *dy;
    CK(cudaMalloc(&dw, wbytes * copies));
    CK(cudaMalloc(&ds, sbytes * copies));
    CK(cudaMalloc(&db, sbytes * copies));
    CK(cudaMalloc(&dx, K * 4));
    CK(cudaMalloc(&dy, size_t(N) * 4));
    for (int i = 0; i < copies; ++i) {
      CK(cudaMemcpy(reinterpret_cast<char*>(dw) + wbytes * i, hw.data(), wbytes, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(reinterpret_cast<char*>(ds) + sbytes * i, hs.data(), sbytes, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(reinterpret_cast<char*>(db) + sbytes * i, hb.data(), sbytes, cudaMemcpyHostToDevice));
    }
    CK(cudaMemcpy(dx, hx.data(), K * 4, cudaMemcpyHostToDevice));
    // reference: x rounded to bf16, f64 sums
    std::vector<double> ref(N);
    for (int n = 0; n < N; ++n) {
      double acc = 0.0;
      for (int gi = 0; gi < G; ++gi) {
        const double s = __bfloat162float(hs[size_t(n) * G + gi]), b = __bfloat162float(hb[size_t(n) * G + gi]);
        double qx = 0.0, xs = 0.0;
        for (int k = gi * 64; k < gi * 64 + 64; ++k) {
          const uint32_t wd = hw[size_t(n) * (K / 8) + k / 8];
          const int q = (wd >> (4 * (k % 8))) & 15;
          const double xv = bf_round(hx[k]);
          qx += q * xv, xs += xv;
        }
        acc += s * qx + b * xs;
      }
      ref[n] = acc;
    }
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    int fi = 0;
    for (const Form& f : forms) {
      double err = -1.0;
      if (f.check) {
        CK(cudaMemset(dy, 0xFF, size_t(N) * 4));
        f.fn(dx, dw, ds, db, dy, N, K);
        CK(cudaGetLastError());
        CK(cudaStreamSynchronize(g_stream));
        std::vector<float> hy(N);
        CK(cudaMemcpy(hy.data(), dy, size_t(N) * 4, cudaMemcpyDeviceToHost));
        double num = 0.0, den = 0.0;
        for (int n = 0; n < N; ++n) num += (hy[n] - ref[n]) * (hy[n] - ref[n]), den += ref[n] * ref[n];
        err = std::sqrt(num / den);
        if (!(err < 1e-4)) err = std::isnan(err) ? 99.0 : err;
      }
      const int calls = copies * std::max(1, 64 / copies);
      std::vector<float> t;
      for (int r = 0; r < reps + 1; ++r) {
        CK(cudaEventRecord(e0, g_stream));
        for (int i = 0; i < calls; ++i) {
          const int cp = i % copies;
          f.fn(dx, reinterpret_cast<const uint32_t*>(reinterpret_cast<const char*>(dw) + wbytes * cp),
               reinterpret_cast<const bf16*>(reinterpret_cast<const char*>(ds) + sbytes * cp),
               reinterpret_cast<const bf16*>(reinterpret_cast<const char*>(db) + sbytes * cp), dy, N, K);
        }
        CK(cudaEventRecord(e1, g_stream));
        CK(cudaEventSynchronize(e1));
        CK(cudaGetLastError());
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (r > 0) t.push_back(ms * 1000.0f / calls);
      }
      std::sort(t.begin(), t.end());
      const double u = t[t.size() / 2];
      const double bytes = double(per) + K * 4 + N * 4;
      if (si < 4) layer_us[fi] += u;
      ++fi;
      std::printf("| %s | %s | %.1f | %.0f | %.1f%% | %.1e |\n", sh.name, f.name, u, bytes / u / 1e3,
                  100.0 * bytes / u / 1e3 / bw, err);
    }
    CK(cudaFree(dw));
    CK(cudaFree(ds));
    CK(cudaFree(db));
    CK(cudaFree(dx));
    CK(cudaFree(dy));
  }
  // layer = qkv + o + gate/up + down (the first four shapes)
  std::printf("\nlayer (qkv, o, gate/up, down; the model's four launches):\n");
  double layer_bytes = 0.0;
  for (int i = 0; i < 4; ++i) layer_bytes += double(shapes[i].N) * shapes[i].K * (0.5 + 4.0 / 64);
  int fi = 0;
  for (const Form& f : forms) {
    std::printf("  %-12s %.1f us, %.1f%% of copy BW\n", f.name, layer_us[fi], 100.0 * layer_bytes / layer_us[fi] / 1e3 / bw);
    ++fi;
  }

  // Whole layers as the decode step runs them: L layers x (qkv, o, gate/up, down), each
  // layer its own weights (L x 123 MB past the L2), captured in one CUDA graph, replayed.
  {
    const int L = 16;
    struct Mat {
      uint32_t* w;
      bf16 *s, *b;
      int N, K;
    };
    std::vector<Mat> mats;
    for (int l = 0; l < L; ++l)
      for (int i = 0; i < 4; ++i) {
        Mat m;
        m.N = shapes[i].N, m.K = shapes[i].K;
        const size_t nw = size_t(m.N) * m.K / 8, ns = size_t(m.N) * m.K / 64;
        CK(cudaMalloc(&m.w, nw * 4));
        CK(cudaMalloc(&m.s, ns * 2));
        CK(cudaMalloc(&m.b, ns * 2));
        fill_kernel<<<1024, 256>>>(m.w, nw, uint32_t(l * 4 + i));
        fill_scales<<<256, 256>>>(m.s, ns);
        fill_scales<<<256, 256>>>(m.b, ns);
        mats.push_back(m);
      }
    float *gx, *gy;
    CK(cudaMalloc(&gx, 14336 * 4));
    CK(cudaMalloc(&gy, 28672 * 4));
    CK(cudaMemset(gx, 0, 14336 * 4));
    fill_scales<<<64, 256>>>(reinterpret_cast<bf16*>(gx), 14336 * 2);
    CK(cudaDeviceSynchronize());
    const Form gforms[] = {
        {"stream", launch_stream, false},
        {"p16 read a", launch_p16_a<1>, false},
        {"p16 a", launch_p16_a<0>, false},
        {"p16 b", launch_p16_b<0>, false},
        {"r16 read ring3", launch_r16_a<1, 3>, false},
        {"r16 ring3", launch_r16_a<0, 3>, false},
        {"r16 read ring4", launch_r16_a<1, 4>, false},
        {"r16 ring4", launch_r16_a<0, 4>, false},
    };
    std::printf("\nGraphed layers (%d layers of 4 launches a replay; us a layer; share of copy BW):\n", L);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    // The median ms of 11 replays of one graph of what `issue` queues.
    auto graph_ms = [&](auto&& issue) {
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      CK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeGlobal));
      issue();
      CK(cudaStreamEndCapture(g_stream, &graph));
      CK(cudaGraphInstantiate(&exec, graph, 0));
      CK(cudaGraphLaunch(exec, g_stream));
      CK(cudaStreamSynchronize(g_stream));
      std::vector<float> t;
      for (int r = 0; r < 11; ++r) {
        CK(cudaEventRecord(e0, g_stream));
        CK(cudaGraphLaunch(exec, g_stream));
        CK(cudaEventRecord(e1, g_stream));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms);
      }
      CK(cudaGetLastError());
      CK(cudaGraphExecDestroy(exec));
      CK(cudaGraphDestroy(graph));
      std::sort(t.begin(), t.end());
      return double(t[t.size() / 2]);
    };
    for (const Form& f : gforms) {
      const double us_layer = graph_ms([&] {
                                for (const Mat& m : mats) f.fn(gx, m.w, m.s, m.b, gy, m.N, m.K);
                              }) * 1000.0 / L;
      std::printf("  %-18s %.1f us a layer, %.1f%% of copy BW\n", f.name, us_layer,
                  100.0 * layer_bytes / us_layer / 1e3 / bw);
    }
    // Each shape alone: 16 launches of it (the 16 layers' copies) a graph, us a launch
    // (cuda_bench --layers times the project's launches the same way).
    std::printf("\nGraphed launches of one shape (%d a replay; us a launch):\n", L);
    for (const Form& f : gforms) {
      std::printf("  %-18s", f.name);
      for (int i = 0; i < 4; ++i) {
        const double ms = graph_ms([&] {
          for (int l = 0; l < L; ++l) {
            const Mat& m = mats[size_t(l) * 4 + i];
            f.fn(gx, m.w, m.s, m.b, gy, m.N, m.K);
          }
        });
        std::printf("  %s %.1f", shapes[i].name, ms * 1000.0 / L);
      }
      std::printf("\n");
    }
  }
  return 0;
}
