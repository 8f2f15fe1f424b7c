// Dense linear y = x @ w^T (+ bias): a bandwidth-bound GEMV for decode-sized M and
// cuBLAS for the rest. f32 accumulation everywhere.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "backends/cuda/common.cuh"
#include "backends/cuda/gemv.cuh"
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

// Stores E floats at p (16-byte aligned, E a multiple of 4).
template <int E>
__device__ __forceinline__ void store_vec(float* p, const float* v) {
#pragma unroll
  for (int j = 0; j < E / 4; ++j)
    reinterpret_cast<float4*>(p)[j] = make_float4(v[4 * j], v[4 * j + 1], v[4 * j + 2], v[4 * j + 3]);
}

// out [M, N] = x [M, K] @ w [N, K]^T (+ bias) for each part of P. Block: kRowsPerBlock
// weight rows (gated: half of them from gate, the same rows from up), kWarps warps
// splitting K into chunks of 32 * E elements (E: one 16-byte weight load per lane).
template <typename W, typename X, bool kVec, bool kGated>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(const X* __restrict__ x, int M, const GemvParts P, int64_t K,
                                                           int bdt, int odt) {
  constexpr int E = kVec ? int(16 / sizeof(W)) : 1;
  constexpr int kOut = kGated ? kRowsPerBlock / 2 : kRowsPerBlock;  // output rows per block
  __shared__ float red[kWarps][kGemvMaxRows][kRowsPerBlock];
  pdl_enter();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const GemvRows gr = gemv_rows(P, blockIdx.x, kOut);
  const int part = gr.part;
  const int64_t N = gr.N, row0 = gr.row0;
  float acc[kGemvMaxRows][kRowsPerBlock];
#pragma unroll
  for (int m = 0; m < kGemvMaxRows; ++m)
#pragma unroll
    for (int r = 0; r < kRowsPerBlock; ++r) acc[m][r] = 0.0f;

  const W* wrow[kRowsPerBlock];
#pragma unroll
  for (int r = 0; r < kRowsPerBlock; ++r) {
    const int64_t row = row0 + r % kOut;
    const W* w = static_cast<const W*>(P.w[kGated ? r / kOut : part]);
    wrow[r] = w + (row < N ? row : N - 1) * K;
  }

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
  if (t < M * kOut) {
    const int m = t / kOut, r = t % kOut;
    const int64_t n = row0 + r;
    if (n < N) {
      float s = 0.0f;
#pragma unroll
      for (int q = 0; q < kWarps; ++q) s += red[q][m][r];
      if (P.bias[part]) s += load_any(P.bias[part], bdt, n);
      if constexpr (kGated) {
        float u = 0.0f;
#pragma unroll
        for (int q = 0; q < kWarps; ++q) u += red[q][m][r + kOut];
        if (P.bias[1]) u += load_any(P.bias[1], bdt, n);
        s = act_any(Act(P.gate_act), s) * u;
      }
      store_any(P.out[part], odt, int64_t(m) * N + n, s);
    }
  }
}

// K split across a block's warps for matrices with few rows (MLXCEL_CUDA_GEMV_KSPLIT=0:
// off; set_gemv_ksplit).
bool g_gemv_ksplit = [] {
  const char* e = std::getenv("MLXCEL_CUDA_GEMV_KSPLIT");
  return !(e && e[0] == '0');
}();

// The decode folds of the dense warp GEMV (linear_multi_normed / linear_gated_normed,
// kernels.h): the residual add and RMSNorm read together with x, and for a q/k/v launch the
// RoPE of q and k and the K/V cache write in the epilogue (the arguments of
// qgemv_rf.cu's KNorm and KRope).
struct DenseFold {
  const float* h = nullptr;  // the residual's other term
  const void* w = nullptr;   // the norm weight (null: ones)
  int wdt = 0;
  float eps = 0.0f, w_offset = 0.0f;
  float* sum = nullptr;  // x + h, written by block 0
  RopeKv rope;           // kFoldRope's
};
enum : int { kFoldNone = 0, kFoldNorm = 1, kFoldRope = 3 };

// Batch-1 GEMV, warp-per-rows design (gemv_variant 1..3): warp w of the grid owns R
// weight rows (gated: R/2 rows of gate and the same of up) and walks K with U 16-byte
// loads per row in flight per lane; a shuffle reduction. KS = 4: the block's 4 warps
// share one set of rows and split K (for matrices with too few rows to fill the card:
// a 4,096-row matrix gives 1,024 row sets); their sums meet in shared memory. P.block_end
// counts row sets. Needs K % E == 0 and 16-byte aligned rows and x.
// kFold (one row of x): kFoldNorm has each block put (x + h) times the norm weight into
// shared memory once (block 0 also writes x + h to F.sum), with the row's sum of squares,
// and scales the rows' sums by 1 / rms(x + h) at the end (W (s w) / rms = W (s w) times
// 1 / rms). (Reading x, h and the weight in the loop, by every warp, measured 4% slower
// than the separate norm kernel on Llama-3.1-8B bf16, session 29.)
// kFoldRope also takes rows i, i + 1, i + D / 2, i + D / 2 + 1 of a q or k head as one
// unit (R = 4), rotates each pair in the epilogue and writes k and v into the caches.
template <typename W, int R, int U, bool kGated, int KS, int kFold = kFoldNone>
__global__ void __launch_bounds__(128) gemv_warp_kernel(const float* __restrict__ x, const GemvParts P, int64_t K,
                                                        int bdt, int odt, const DenseFold F) {
  constexpr int E = int(16 / sizeof(W));
  constexpr int kOut = kGated ? R / 2 : R;
  constexpr bool kNorm = kFold != kFoldNone, kRope = kFold == kFoldRope;
  static_assert(KS == 1 || KS == 4, "KS: 1 or the block's 4 warps");
  static_assert(!kRope || (R == 4 && !kGated), "RoPE units are 4 rows of one part");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned units = gemv_units<kGated>(P);
  // The unfolded kernels take one unit a warp (KS = 1) or block (KS = 4); the folded ones
  // a unit every `stride` (resident blocks: the folded x is made once a block).
  const unsigned first = KS == 1 ? blockIdx.x * 4 + warp : blockIdx.x;
  const unsigned stride = kNorm ? gridDim.x * (KS == 1 ? 4u : 1u) : 0u;
  const int kpart = KS == 1 ? 0 : warp;
  if (!kNorm && first >= units) return;  // (the grid's other warps call pdl_enter)
  const int64_t vecs = K / E;  // 16-byte vectors per row
  // A unit's part, row count, rows (row r: row0 + r, or for a rotated unit of head h,
  // row0 = h D + 4 j, rows h D + 2 j + (r & 1) and the same + D / 2 for r >= 2) and their
  // first weights.
  struct Unit {
    int part;
    int64_t N, row0;
    bool rot;
    const uint4* wrow[R];
  };
  auto row_of = [&](const Unit& u, int r) -> int64_t {
    const int D = F.rope.head_dim;
    if (u.rot) return u.row0 / D * D + u.row0 % D / 2 + (r & 1) + (r >= 2 ? D / 2 : 0);
    return u.row0 + r % kOut;
  };
  auto unit_at = [&](unsigned id) {
    const GemvRows gr = gemv_rows(P, id < units ? id : units - 1, kOut);
    Unit u{gr.part, gr.N, gr.row0, kRope && gr.part < 2, {}};
#pragma unroll
    for (int r = 0; r < R; ++r) {
      int64_t row = row_of(u, r);
      row = row < u.N ? row : u.N - 1;
      u.wrow[r] = reinterpret_cast<const uint4*>(static_cast<const W*>(P.w[kGated ? r / kOut : u.part]) + row * K);
    }
    return u;
  };
  uint4 wv[U][R];
  auto load_w = [&](const Unit& un, int64_t v0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t v = v0 + 32 * KS * u;
#pragma unroll
      for (int r = 0; r < R; ++r) wv[u][r] = v < vecs ? __ldcs(un.wrow[r] + v) : make_uint4(0, 0, 0, 0);
    }
  };
  Unit un = unit_at(first);
  // The first weights are in flight before the wait for the kernel that writes x.
  if (first < units) load_w(un, lane + 32 * kpart);
  pdl_enter();
  extern __shared__ __align__(16) float xfold[];  // kNorm: [K] (x + h) w
  const float* xr = x;
  float inv = 1.0f;  // kNorm: 1 / rms(x + h)
  if constexpr (kNorm) {
    __shared__ float sq[4];
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < K / 4; i += blockDim.x) {
      float a[4], hv[4], nw[4] = {1.0f, 1.0f, 1.0f, 1.0f};
      load_vec<4>(x + 4 * i, a);
      load_vec<4>(F.h + 4 * i, hv);
      if (F.w && F.wdt == int(DType::bf16)) load_vec<4>(static_cast<const bf16*>(F.w) + 4 * i, nw);
      else if (F.w && F.wdt == int(DType::f16)) load_vec<4>(static_cast<const f16*>(F.w) + 4 * i, nw);
      else if (F.w) load_vec<4>(static_cast<const float*>(F.w) + 4 * i, nw);
#pragma unroll
      for (int j = 0; j < 4; ++j) a[j] += hv[j], ss = fmaf(a[j], a[j], ss);
      if (blockIdx.x == 0) store_vec<4>(F.sum + 4 * i, a);
#pragma unroll
      for (int j = 0; j < 4; ++j) a[j] *= nw[j] + F.w_offset;
      store_vec<4>(xfold + 4 * i, a);
    }
    ss = warp_sum(ss);
    if (lane == 0) sq[warp] = ss;
    __syncthreads();
    inv = 1.0f / sqrtf((sq[0] + sq[1] + sq[2] + sq[3]) / float(K) + F.eps);  // cuda::rms_norm's formula
    xr = xfold;
  }
  int parity = 0;
  for (unsigned id = first; id < units; id += stride, parity ^= 1) {
    if (id != first) {
      un = unit_at(id);
      load_w(un, lane + 32 * kpart);
    }
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    for (int64_t v0 = lane + 32 * kpart; v0 < vecs; v0 += 32 * KS * U) {
      if (v0 != lane + 32 * kpart) load_w(un, v0);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t v = v0 + 32 * KS * u;
        if (v < vecs) {
          float xv[E];
          load_vec<E>(xr + v * E, xv);
#pragma unroll
          for (int r = 0; r < R; ++r) {
            float wf[E];
            load_vec<E>(reinterpret_cast<const W*>(&wv[u][r]), wf);
#pragma unroll
            for (int j = 0; j < E; ++j) acc[r] = fmaf(xv[j], wf[j], acc[r]);
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]) * inv;
    if constexpr (KS > 1) {
      // (two buffers: a unit's sums are written while warp 0 may still read the last one's)
      __shared__ float red[2][KS][R];
      if (lane == 0)
#pragma unroll
        for (int r = 0; r < R; ++r) red[parity][warp][r] = acc[r];
      __syncthreads();
      if (warp != 0) {
        if (!kNorm) return;
        continue;
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        acc[r] = 0.0f;
#pragma unroll
        for (int q = 0; q < KS; ++q) acc[r] += red[parity][q][r];
      }
    }
    if constexpr (kRope) {
      // Lane r < 4 writes row_of(r): + bias; q and k rotated with their partner row r ^ 2
      // (first half a, second half b: a c - b s, b c + a s, rope_kv_write's formula); k
      // and v also into the caches at this token's slot.
      float v = 0.0f, other = 0.0f;
#pragma unroll
      for (int r = 0; r < 4; ++r)
        if (r == lane) v = acc[r], other = acc[r ^ 2];
      const int64_t n = row_of(un, lane);
      if (lane < 4 && n < un.N) {
        const void* bias = P.bias[un.part];
        if (bias) v += load_any(bias, bdt, n);
        if (un.rot) {
          if (bias) other += load_any(bias, bdt, row_of(un, lane ^ 2));
          const int D = F.rope.head_dim, i = int(n % D) % (D / 2);
          const float ang = float(F.rope.pos[0]) * F.rope.inv_freq[i];
          const float c = cosf(ang) * F.rope.attn_scale, sn = sinf(ang) * F.rope.attn_scale;
          const float a = lane < 2 ? v : other, b = lane < 2 ? other : v;
          v = lane < 2 ? a * c - b * sn : b * c + a * sn;
        }
        store_any(P.out[un.part], odt, n, v);
        const int64_t slot = F.rope.slot[0];
        if (un.part > 0 && slot >= 0 && slot < F.rope.n_slots)
          store_any(un.part == 1 ? F.rope.k_cache : F.rope.v_cache, int(F.rope.cache_dtype), slot * un.N + n, v);
      }
    } else {
      store_warp_rows<R, kGated>(acc, lane, P, un.part, un.row0, un.N, bdt, odt);
    }
    if (!kNorm) return;
  }
}

template <typename W, int R, int U, bool kGated, int KS, int kFold>
void warp_launch(const float* x, const GemvParts& P, int64_t K, int bdt, int odt, cudaStream_t st, const DenseFold& F,
                 unsigned blocks) {
  auto kernel = gemv_warp_kernel<W, R, U, kGated, KS, kFold>;
  size_t smem = 0;
  if constexpr (kFold != kFoldNone) {
    // The folded x in shared memory, and resident blocks (one wave) walking the units.
    smem = size_t(K) * 4;
    const int dev = current_device();
    blocks = std::min(blocks, unsigned(sm_count(dev) * blocks_at_smem<gemv_warp_kernel<W, R, U, kGated, KS, kFold>>(
                                                            smem, 128, dev)));
  }
  launch_pdl(kernel, blocks, 128, smem, st, x, P, K, bdt, odt, F);
}

template <typename W, int R, int U, int kFold = kFoldNone>
void gemv_warp_launch(const float* x, GemvParts P, int64_t K, int bdt, int odt, cudaStream_t st,
                      const DenseFold& F = {}) {
  const bool gated = P.gate_act >= 0;
  const unsigned sets = plan_blocks(P, gated ? R / 2 : R);
  // Fewer than 16 row sets per SM: the block's warps split K instead of taking a row set
  // each (g_gemv_ksplit = false keeps one warp per row set).
  const bool split = g_gemv_ksplit && sets < 16u * unsigned(sm_count(current_device()));
  const unsigned blocks = split ? sets : (sets + 3) / 4;
  if constexpr (kFold == kFoldRope) {
    if (split) warp_launch<W, R, U, false, 4, kFold>(x, P, K, bdt, odt, st, F, blocks);
    else warp_launch<W, R, U, false, 1, kFold>(x, P, K, bdt, odt, st, F, blocks);
  } else if (split) {
    if (gated) warp_launch<W, R, U, true, 4, kFold>(x, P, K, bdt, odt, st, F, blocks);
    else warp_launch<W, R, U, false, 4, kFold>(x, P, K, bdt, odt, st, F, blocks);
  } else {
    if (gated) warp_launch<W, R, U, true, 1, kFold>(x, P, K, bdt, odt, st, F, blocks);
    else warp_launch<W, R, U, false, 1, kFold>(x, P, K, bdt, odt, st, F, blocks);
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
void gemv_launch(const X* x, int M, GemvParts P, int64_t K, int bdt, int odt, cudaStream_t st) {
  constexpr int E = int(16 / sizeof(W));
  uintptr_t align = reinterpret_cast<uintptr_t>(x);
  for (int i = 0; i < P.n; ++i) align |= reinterpret_cast<uintptr_t>(P.w[i]);
  const bool vec = K % E == 0 && align % 16 == 0, gated = P.gate_act >= 0;
  if constexpr (std::is_same_v<X, float>) {
    const int variant = gemv_variant(false);
    if (M == 1 && vec && variant > 0 && variant != kQgemvAuto) {
      if (variant == 1) gemv_warp_launch<W, 4, 2>(x, P, K, bdt, odt, st);
      else if (variant == 2) gemv_warp_launch<W, 2, 4>(x, P, K, bdt, odt, st);
      else if (variant == 3) gemv_warp_launch<W, 8, 1>(x, P, K, bdt, odt, st);
      else gemv_warp_launch<W, 4, 2>(x, P, K, bdt, odt, st);  // 4-6: quantized-only designs
      return;
    }
  }
  const unsigned grid = plan_blocks(P, gated ? kRowsPerBlock / 2 : kRowsPerBlock);
  if (gated) {
    if (vec) launch_pdl(gemv_kernel<W, X, true, true>, grid, kWarps * 32, 0, st, x, M, P, K, bdt, odt);
    else launch_pdl(gemv_kernel<W, X, false, true>, grid, kWarps * 32, 0, st, x, M, P, K, bdt, odt);
  } else {
    if (vec) launch_pdl(gemv_kernel<W, X, true, false>, grid, kWarps * 32, 0, st, x, M, P, K, bdt, odt);
    else launch_pdl(gemv_kernel<W, X, false, false>, grid, kWarps * 32, 0, st, x, M, P, K, bdt, odt);
  }
}

template <typename X>
void gemv_by_w(const X* x, int M, DType wdt, const GemvParts& P, int64_t K, int bdt, int odt, cudaStream_t st) {
  switch (wdt) {
    case DType::f32: gemv_launch<float>(x, M, P, K, bdt, odt, st); break;
    case DType::f16: gemv_launch<f16>(x, M, P, K, bdt, odt, st); break;
    case DType::bf16: gemv_launch<bf16>(x, M, P, K, bdt, odt, st); break;
    default: throw_internal("linear: w must be f32|f16|bf16");
  }
}

void gemv_parts(const Tensor& x, int M, DType wdt, const GemvParts& P, int64_t K, DType bdt, DType odt,
                cudaStream_t st) {
  MLXCEL_CUDA_REQUIRE(x.dtype() == DType::f32 || x.dtype() == DType::bf16, "linear: x must be f32|bf16");
  MLXCEL_CUDA_REQUIRE(odt == DType::f32 || odt == DType::bf16, "linear: out must be f32|bf16");
  if (x.dtype() == DType::f32) gemv_by_w(x.data<float>(), M, wdt, P, K, int(bdt), int(odt), st);
  else gemv_by_w(static_cast<const bf16*>(x.raw()), M, wdt, P, K, int(bdt), int(odt), st);
}

__global__ void to_type_kernel(const void* src, int sdt, void* dst, int ddt, int64_t n) {
  pdl_enter();
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

namespace {
// Defaults measured on an H200 (bench/results/cuda_gemv.md, run 4): the warp design R4 U2
// for dense weights (71% vs 63% of copy bandwidth over a Llama-3.1-8B layer; tg of
// Llama-3.1-8B bf16 +20%); for quantized weights 9 (kQgemvAuto): for batch-1 launches
// design 11 (registers fed straight from global memory, f16 x; 4- and 8-bit,
// cuda_gemv.md run 10) where it takes the shape, else design 8 (bf16 x on the tensor
// cores) for 4-bit ones, the exact f32 block design 0 otherwise
// (MLXCEL_CUDA_QGEMV=0: design 0 everywhere; cuda_gemv.md run 8). Design 4
// (int8 activations on dp4a) decodes Llama-3.1-8B q4 25% faster but moves the tiny
// fixtures' logits by 3-13%, so it is opt-in (MLXCEL_CUDA_GEMV=4).
// MLXCEL_CUDA_QGEMV=D sets the quantized design alone (A/B runs that keep the dense one).
const char* g_gemv_env = std::getenv("MLXCEL_CUDA_GEMV");
const char* g_qgemv_env = std::getenv("MLXCEL_CUDA_QGEMV");
int g_gemv_dense = g_gemv_env ? std::atoi(g_gemv_env) : 1;
int g_gemv_quant = g_qgemv_env ? std::atoi(g_qgemv_env) : g_gemv_env ? std::atoi(g_gemv_env) : kQgemvAuto;
}  // namespace

int gemv_variant(bool quantized) { return quantized ? g_gemv_quant : g_gemv_dense; }

bool set_gemv_ksplit(bool on) {
  const bool old = g_gemv_ksplit;
  g_gemv_ksplit = on;
  return old;
}

int set_gemv_variants(int dense, int quantized) {
  const int old = g_gemv_dense * 16 + g_gemv_quant;
  g_gemv_dense = dense, g_gemv_quant = quantized;
  return old;
}

unsigned plan_blocks(GemvParts& P, int rows_per_block) {
  int64_t blocks = 0;
  const int n = P.gate_act >= 0 ? 1 : P.n;  // gated: the blocks of gate also cover up
  for (int i = 0; i < n; ++i) {
    blocks += ceil_div(P.N[i], rows_per_block);
    P.block_end[i] = unsigned(blocks);
  }
  MLXCEL_CUDA_REQUIRE(blocks > 0 && blocks < (int64_t(1) << 31), "gemv: bad grid");
  return unsigned(blocks);
}

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

namespace {

// cuBLASLt for the products of 9+ rows (MLXCEL_CUDA_LT=0: cublasGemmEx instead): its
// heuristic, given a workspace, splits K for skinny shapes (an engine step of 64
// sequences is a [64, K] x [K, N] product that a plain tiling spreads over few SMs).
// One plan (layouts + algorithm) per shape and dtype, cached.
bool g_use_lt = [] {
  const char* e = std::getenv("MLXCEL_CUDA_LT");
  return !(e && e[0] == '0');
}();
constexpr size_t kLtWorkspace = size_t(32) << 20;

struct LtPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
};

cublasLtHandle_t lt_handle(int dev) {
  static std::mutex mu;
  static std::unordered_map<int, cublasLtHandle_t> handles;
  std::lock_guard<std::mutex> lk(mu);
  auto it = handles.find(dev);
  if (it != handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  MLXCEL_CUBLAS_CHECK(cublasLtCreate(&h));
  handles[dev] = h;
  return h;
}

// y f32 [M, N] (column-major N x M) = w [N, K]^T-as-stored times x [M, K]; false when
// cuBLASLt has no algorithm for the shape (the caller falls back to cublasGemmEx).
bool gemm_lt(const void* x, const void* w, DType ct, int64_t M, int64_t N, int64_t K, float* y, int dev,
             cudaStream_t st) {
  static std::mutex mu;
  static std::map<std::tuple<int, int64_t, int64_t, int64_t, int>, LtPlan> plans;
  cublasLtHandle_t h = lt_handle(dev);
  const cudaDataType_t t = ct == DType::bf16 ? CUDA_R_16BF : ct == DType::f16 ? CUDA_R_16F : CUDA_R_32F;
  LtPlan* plan = nullptr;
  {
    std::lock_guard<std::mutex> lk(mu);
    LtPlan& p = plans[{dev, M, N, K, int(ct)}];
    if (!p.op) {
      MLXCEL_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
      MLXCEL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
      MLXCEL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
      MLXCEL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, t, uint64_t(K), uint64_t(N), K));
      MLXCEL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, t, uint64_t(K), uint64_t(M), K));
      MLXCEL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, uint64_t(N), uint64_t(M), N));
      cublasLtMatmulPreference_t pref = nullptr;
      MLXCEL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      const size_t ws = kLtWorkspace;
      MLXCEL_CUBLAS_CHECK(
          cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
      // The heuristic's first answer. (Timing its top 8 on a shape's first call, session
      // 15: pp level, and the engine slower, 64 sequences 7,653 -> 6,300 tok/s on an
      // H200, its batch size changing every few steps.)
      cublasLtMatmulHeuristicResult_t r{};
      int n = 0;
      const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(h, p.op, p.a, p.b, p.c, p.c, pref, 1, &r, &n);
      cublasLtMatmulPreferenceDestroy(pref);
      p.ok = hs == CUBLAS_STATUS_SUCCESS && n > 0 && r.state == CUBLAS_STATUS_SUCCESS;
      if (p.ok) p.algo = r.algo;
    }
    plan = &p;  // std::map nodes are stable
  }
  if (!plan->ok) return false;
  const float one = 1.0f, zero = 0.0f;
  void* ws = scratch(kLtWorkspace, 4);
  MLXCEL_CUBLAS_CHECK(cublasLtMatmul(h, plan->op, &one, w, plan->a, x, plan->b, &zero, y, plan->c, y, plan->c, &plan->algo,
                                     ws, kLtWorkspace, st));
  return true;
}

}  // namespace

bool set_gemm_lt(bool on) {
  const bool old = g_use_lt;
  g_use_lt = on;
  return old;
}

namespace {
std::atomic<int> g_dense_gemv_rows{[] {
  // Default 1: from 2 rows on cuBLAS(Lt) is faster (Llama-3.1-8B bf16 engine on an H100,
  // 2 / 4 / 8 sequences: 284 / 478 / 666 tok/s with the GEMV, 306 / 609 / 1,201 with cuBLAS).
  const char* e = std::getenv("MLXCEL_CUDA_GEMV_ROWS");
  const int v = e && *e ? std::atoi(e) : 1;
  return v < 1 ? 1 : v > kGemvMaxRows ? kGemvMaxRows : v;
}()};
}  // namespace

int dense_gemv_rows() { return g_dense_gemv_rows.load(std::memory_order_relaxed); }

int set_dense_gemv_rows(int rows) {
  MLXCEL_CUDA_REQUIRE(rows >= 1 && rows <= kGemvMaxRows, "set_dense_gemv_rows: 1..kGemvMaxRows");
  return g_dense_gemv_rows.exchange(rows);
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
  if (K == 0) {
    finish_rows(nullptr, M, N, bp, bdt, out.raw(), out.dtype(), l.stream);
    return;
  }
  MLXCEL_CUDA_REQUIRE(x.dtype() == DType::f32 || x.dtype() == DType::bf16, "linear: x must be f32|bf16");
  MLXCEL_CUDA_REQUIRE(out.dtype() == DType::f32 || out.dtype() == DType::bf16, "linear: out must be f32|bf16");
  if (M <= dense_gemv_rows()) {
    GemvParts P;
    P.n = 1;
    P.w[0] = w.raw(), P.bias[0] = bp, P.out[0] = out.raw(), P.N[0] = N;
    gemv_parts(x, int(M), w.dtype(), P, K, bdt, out.dtype(), l.stream);
    return;
  }
  MLXCEL_CUDA_REQUIRE(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX, "linear: dimensions exceed int32");
  // Operands of one type: the weight's. x is converted when its dtype differs.
  const DType ct = w.dtype();
  const void* xp = x.raw();
  if (x.dtype() != ct) {
    void* xs = scratch(size_t(M * K) * dtype_size(ct), 0);
    launch_pdl(to_type_kernel, grid_for(M * K, 256), 256, 0, l.stream, x.raw(), int(x.dtype()), xs, int(ct), M * K);
    xp = xs;
  }
  if (skinny_gemm(xp, w.raw(), ct, M, N, K, bp, bdt, out.raw(), out.dtype(), dev, l.stream)) return;
  const bool direct = out.dtype() == DType::f32;
  float* y = direct ? out.data<float>() : static_cast<float*>(scratch(size_t(M * N) * 4, 1));
  if (g_use_lt && gemm_lt(xp, w.raw(), ct, M, N, K, y, dev, l.stream)) {
    if (bp || !direct) finish_rows(y, M, N, bp, bdt, out.raw(), out.dtype(), l.stream);
    return;
  }
  const float one = 1.0f, zero = 0.0f;
  MLXCEL_CUBLAS_CHECK(cublasGemmEx(cublas_handle(dev), CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &one, w.raw(),
                                   cuda_type(ct), int(K), xp, cuda_type(ct), int(K), &zero, y, CUDA_R_32F, int(N),
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  if (bp || !direct) finish_rows(y, M, N, bp, bdt, out.raw(), out.dtype(), l.stream);
}


namespace {
// The parts of a multi-part launch (linear_multi and its folded twin) and the biases'
// dtype (f32 without biases); false where the parts differ in dtype or K, the outputs in
// dtype or the biases in dtype.
bool multi_parts(const std::vector<Tensor>& ws, const std::vector<Tensor>& biases, const std::vector<Tensor>& outs,
                 GemvParts& P, DType& bdt) {
  const int64_t K = ws[0].dim(1);
  P.n = int(ws.size());
  bdt = DType::f32;
  bool biased = false;
  for (size_t i = 0; i < ws.size(); ++i) {
    if (ws[i].dtype() != ws[0].dtype() || ws[i].dim(1) != K || outs[i].dtype() != outs[0].dtype()) return false;
    P.w[i] = ws[i].raw(), P.out[i] = outs[i].raw(), P.N[i] = ws[i].dim(0);
    if (!biases[i].defined()) continue;
    if (biased && biases[i].dtype() != bdt) return false;
    P.bias[i] = biases[i].raw(), bdt = biases[i].dtype(), biased = true;
  }
  return true;
}
}  // namespace

void linear_multi(const Tensor& x, const std::vector<Tensor>& ws, const std::vector<Tensor>& biases,
                  std::vector<Tensor>& outs) {
  init();
  MLXCEL_CUDA_REQUIRE(!ws.empty() && ws.size() <= size_t(kMaxParts) && biases.size() == ws.size() &&
                          outs.size() == ws.size(),
                      "linear_multi: 1..3 parts");
  const int64_t K = ws[0].dim(1);
  const int64_t M = K ? x.numel() / K : 0;
  MLXCEL_CUDA_REQUIRE(M >= 1 && M <= kGemvMaxRows && K > 0, "linear_multi: decode-sized M and K > 0 only");
  Launch l(outs[0]);
  GemvParts P;
  DType bdt;
  MLXCEL_CUDA_REQUIRE(multi_parts(ws, biases, outs, P, bdt), "linear_multi: parts differ");
  gemv_parts(x, int(M), ws[0].dtype(), P, K, bdt, outs[0].dtype(), l.stream);
}

namespace {
// The parts of a gated launch (gate, up; the rows' act(gate) * up into out) and the
// biases' dtype (f32 without biases).
GemvParts gated_parts(const Tensor& gate, const Tensor& up, const Tensor& gate_bias, const Tensor& up_bias, Act act,
                      Tensor& out, DType& bdt) {
  GemvParts P;
  P.n = 2;
  P.w[0] = gate.raw(), P.w[1] = up.raw();
  P.bias[0] = gate_bias.defined() ? gate_bias.raw() : nullptr;
  P.bias[1] = up_bias.defined() ? up_bias.raw() : nullptr;
  P.out[0] = out.raw(), P.N[0] = gate.dim(0), P.N[1] = gate.dim(0);
  P.gate_act = int(act);
  bdt = gate_bias.defined() ? gate_bias.dtype() : up_bias.defined() ? up_bias.dtype() : DType::f32;
  return P;
}
}  // namespace

void linear_gated(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& gate_bias, const Tensor& up_bias,
                  Act act, Tensor& out) {
  init();
  const int64_t K = gate.dim(1), N = gate.dim(0);
  const int64_t M = K ? x.numel() / K : 0;
  MLXCEL_CUDA_REQUIRE(M >= 1 && M <= kGemvMaxRows && K > 0, "linear_gated: decode-sized M and K > 0 only");
  MLXCEL_CUDA_REQUIRE(up.dtype() == gate.dtype() && up.dim(0) == N && up.dim(1) == K, "linear_gated: gate and up differ");
  MLXCEL_CUDA_REQUIRE(!gate_bias.defined() || !up_bias.defined() || gate_bias.dtype() == up_bias.dtype(),
                      "linear_gated: bias dtypes differ");
  Launch l(out);
  DType bdt;
  const GemvParts P = gated_parts(gate, up, gate_bias, up_bias, act, out, bdt);
  gemv_parts(x, int(M), gate.dtype(), P, K, bdt, out.dtype(), l.stream);
}

namespace {

// The folded launch (kernels.h linear_multi_normed): the warp design R4 U2 (dense designs
// 1 and 4 and up; 2 and 3 keep their own row counts and compose), one row, everything the
// kernel reads with 16-byte loads aligned.
bool dense_fold_launch(const float* x, const RowNorm& norm, const GemvParts& P, DType wdt, int64_t K, DType bdt,
                       DType odt, const RopeKv* rope) {
  if (!linear_fold_takes(wdt, K, rope != nullptr) || !norm.h || !norm.sum) return false;
  uintptr_t align = reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(norm.h) |
                    reinterpret_cast<uintptr_t>(norm.sum) | reinterpret_cast<uintptr_t>(norm.w);
  for (int i = 0; i < P.n; ++i) align |= reinterpret_cast<uintptr_t>(P.w[i]);
  if (align % 16 != 0) return false;
  DenseFold F;
  F.h = norm.h, F.w = norm.w, F.wdt = int(norm.w_dtype), F.eps = norm.eps, F.w_offset = norm.w_offset, F.sum = norm.sum;
  if (rope) {
    // Whole heads of D (a multiple of 4: a unit's rows) rows in q and k.
    if (!rope_kv_takes(P, *rope, 4)) return false;
    F.rope = *rope;
  }
  cudaStream_t st = stream_of(current_device());
  auto go = [&](auto tag) {
    using W = decltype(tag);
    if (rope) gemv_warp_launch<W, 4, 2, kFoldRope>(x, P, K, int(bdt), int(odt), st, F);
    else gemv_warp_launch<W, 4, 2, kFoldNorm>(x, P, K, int(bdt), int(odt), st, F);
  };
  if (wdt == DType::bf16) go(bf16{});
  else if (wdt == DType::f16) go(f16{});
  else go(float{});
  MLXCEL_CUDA_LAUNCH_CHECK();
  return true;
}

}  // namespace

bool rope_kv_takes(const GemvParts& P, const RopeKv& rope, int d_multiple) {
  const int D = rope.head_dim;
  const DType c = rope.cache_dtype;
  return P.n == 3 && P.gate_act < 0 && D > 0 && D % d_multiple == 0 && P.N[0] % D == 0 && P.N[1] % D == 0 &&
         rope.pos && rope.slot && rope.inv_freq && rope.k_cache && rope.v_cache &&
         (c == DType::f32 || c == DType::f16 || c == DType::bf16);
}

bool linear_fold_takes(DType wdt, int64_t K, bool rope) {
  const int folds = decode_folds(), variant = gemv_variant(false);
  if (!(folds & 1) || (rope && !(folds & 2)) || variant <= 0 || variant == 2 || variant == 3) return false;
  if (wdt != DType::bf16 && wdt != DType::f16 && wdt != DType::f32) return false;
  // K whole 16-byte loads; the folded row lives in shared memory (up to 48 KB, no opt-in).
  return K > 0 && K % (16 / int64_t(dtype_size(wdt))) == 0 && K * 4 <= 48 * 1024;
}

bool linear_multi_normed(const float* x, const RowNorm& norm, const std::vector<Tensor>& ws,
                         const std::vector<Tensor>& biases, std::vector<Tensor>& outs, const RopeKv* rope) {
  init();
  MLXCEL_CUDA_REQUIRE(!ws.empty() && ws.size() <= size_t(kMaxParts) && biases.size() == ws.size() &&
                          outs.size() == ws.size(),
                      "linear_multi_normed: 1..3 parts");
  GemvParts P;
  DType bdt;
  if (!multi_parts(ws, biases, outs, P, bdt)) return false;
  return dense_fold_launch(x, norm, P, ws[0].dtype(), ws[0].dim(1), bdt, outs[0].dtype(), rope);
}

bool linear_gated_normed(const float* x, const RowNorm& norm, const Tensor& gate, const Tensor& up,
                         const Tensor& gate_bias, const Tensor& up_bias, Act act, Tensor& out) {
  init();
  const int64_t K = gate.dim(1), N = gate.dim(0);
  if (up.dtype() != gate.dtype() || up.dim(0) != N || up.dim(1) != K) return false;
  if (gate_bias.defined() && up_bias.defined() && gate_bias.dtype() != up_bias.dtype()) return false;
  DType bdt;
  const GemvParts P = gated_parts(gate, up, gate_bias, up_bias, act, out, bdt);
  return dense_fold_launch(x, norm, P, gate.dtype(), K, bdt, out.dtype(), nullptr);
}

}  // namespace mlxcel::cuda
