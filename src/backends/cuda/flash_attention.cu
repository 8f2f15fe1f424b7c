// Tensor-core paged attention for bf16/f16 caches (attention_impl.h): FlashAttention-2
// style on mma.sync.m16n8k16 with f32 accumulation. K and V tiles of 64 keys are
// gathered through the block table with cp.async into padded shared memory (double
// buffered); ldmatrix feeds the MMAs (K as the column operand of Q.K^T, V transposed for
// P.V); the online softmax runs in f32 on the accumulator fragments, in the log2 domain.
// The score accumulators of two adjacent 8-key tiles are, packed, the A operand of the
// 16-key step of P.V (fragment layouts: mma.cuh).
#include <climits>
#include <type_traits>

#include "backends/cuda/attention_impl.h"
#include "backends/cuda/common.cuh"
#include "backends/cuda/mma.cuh"

namespace mlxcel::cuda {

namespace {

constexpr int kBc = 64;      // keys per tile
constexpr int kWarps = 4;         // warps per decode block
constexpr int kPrefillWarps = 8;  // warps per prefill block: 128 rows share each K/V tile
constexpr int kRowsPrefill = 16 * kPrefillWarps;
constexpr float kLog2e = 1.4426950408889634f;

// ---- shared pieces ---------------------------------------------------------------
template <int D>
struct Tile {
  static constexpr int kStride = D + 8;  // elements per smem row: 16-byte pad, ldmatrix conflict-free
  static constexpr int kElems = kBc * kStride;
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static constexpr size_t kSmemBytes = size_t(4) * kElems * 2;  // K and V, double buffered
};

// Gathers keys [kb, kb + 64) of KV head kvh (rows >= k_end zero-filled) into ks / vs.
template <typename T, int D, int kThreads = kWarps * 32>
__device__ __forceinline__ void load_tile(T* ks, T* vs, const T* __restrict__ kc, const T* __restrict__ vc,
                                          const int32_t* table, const AttnArgs& a, int kvh, int kb, int k_end) {
  constexpr int kRowsPerPass = kThreads / Tile<D>::kChunks;
  if (int(threadIdx.x) >= kRowsPerPass * Tile<D>::kChunks) return;  // D = 80, 96: a few threads idle
  const int part = threadIdx.x % Tile<D>::kChunks;
  for (int j = threadIdx.x / Tile<D>::kChunks; j < kBc; j += kRowsPerPass) {
    const int key = kb + j;
    const bool valid = key < k_end;
    int64_t off = 0;
    if (valid) {
      const int64_t slot = int64_t(table[key / a.block_size]) * a.block_size + key % a.block_size;
      off = (slot * a.n_kv + kvh) * D + part * 8;
    }
    cp_async16(ks + j * Tile<D>::kStride + part * 8, kc + off, valid);
    cp_async16(vs + j * Tile<D>::kStride + part * 8, vc + off, valid);
  }
}

// The warp's Q fragments: rows r_lo (= g) and r_hi (= g + 8) of its 16, each a (token,
// head) pair or absent (zeros).
template <typename T, int D>
__device__ __forceinline__ void load_q_frags(unsigned (&qa)[D / 16][4], const AttnArgs& a, int64_t qrow_lo,
                                             int64_t qrow_hi) {
  const int c = threadIdx.x & 3;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int d0 = kk * 16 + 2 * c, d1 = d0 + 8;
    auto at = [&](int64_t row, int d) { return row < 0 ? 0.0f : load_any(a.q, a.qdt, row * a.D + d); };
    qa[kk][0] = pack2<T>(at(qrow_lo, d0), at(qrow_lo, d0 + 1));
    qa[kk][1] = pack2<T>(at(qrow_hi, d0), at(qrow_hi, d0 + 1));
    qa[kk][2] = pack2<T>(at(qrow_lo, d1), at(qrow_lo, d1 + 1));
    qa[kk][3] = pack2<T>(at(qrow_hi, d1), at(qrow_hi, d1 + 1));
  }
}

// S[NT] = Q . K^T for NT 8-key tiles starting at smem row key0 of the K tile.
template <typename T, int D, int NT>
__device__ __forceinline__ void qk(float (&s)[NT][4], const unsigned (&qa)[D / 16][4], const T* ks, int key0) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int n = 0; n < NT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      unsigned b[4];
      const int key = key0 + np * 16 + (lane & 7) + ((lane >> 4) << 3);
      ldsm_x4(b, ks + key * Tile<D>::kStride + kk * 16 + (((lane >> 3) & 1) << 3));
      mma<T>(s[2 * np], qa[kk], b[0], b[1]);
      mma<T>(s[2 * np + 1], qa[kk], b[2], b[3]);
    }
  }
}

// Online softmax over the scores of the thread's two rows (i = 0: g, 1: g + 8) for the
// keys key0 + 8 n + 2 c + {0, 1}; visible(i, key) says which count. Scores become
// probabilities in place; m (log2 domain) and the thread's partial l are updated and o
// is rescaled.
template <int NT, int ONT, typename Vis>
__device__ __forceinline__ void softmax_step(float (&s)[NT][4], float (&m)[2], float (&l)[2], float (&o)[ONT][4],
                                             const AttnArgs& a, int key0, Vis visible) {
  const int c = threadIdx.x & 3;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float x = s[n][2 * i + e] * a.scale;
        if (a.softcap > 0.0f) x = tanhf(x / a.softcap) * a.softcap;
        x = visible(i, key0 + 8 * n + 2 * c + e) ? x * kLog2e : -INFINITY;
        s[n][2 * i + e] = x;
        mx = fmaxf(mx, x);
      }
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float mn = fmaxf(m[i], mx);
    const float base = mn == -INFINITY ? 0.0f : mn;
    const float corr = exp2f(m[i] - base);  // 0 when m was -inf
    float sum = 0.0f;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float p = exp2f(s[n][2 * i + e] - base);
        s[n][2 * i + e] = p;
        sum += p;
      }
    }
    l[i] = l[i] * corr + sum;
    m[i] = mn;
#pragma unroll
    for (int n = 0; n < ONT; ++n) {
      o[n][2 * i] *= corr;
      o[n][2 * i + 1] *= corr;
    }
  }
}

// o += P . V for NT score tiles (NT even) against V rows key0 .. key0 + 8 NT of the tile.
template <typename T, int D, int NT>
__device__ __forceinline__ void pv(float (&o)[D / 8][4], const float (&p)[NT][4], const T* vs, int key0) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int kk = 0; kk < NT / 2; ++kk) {
    const unsigned pa[4] = {pack2<T>(p[2 * kk][0], p[2 * kk][1]), pack2<T>(p[2 * kk][2], p[2 * kk][3]),
                            pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                            pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3])};
    const int key = key0 + kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      unsigned b[4];
      ldsm_x4_t(b, vs + key * Tile<D>::kStride + dp * 16 + ((lane >> 4) << 3));
      mma<T>(o[2 * dp], pa, b[0], b[1]);
      mma<T>(o[2 * dp + 1], pa, b[2], b[3]);
    }
  }
}

// ---- prefill ---------------------------------------------------------------------
// Block: 128 rows of sequence s, row r = token * G + head-in-group (so a block covers
// 128 / G tokens of all G heads of KV head blockIdx.y); warp w owns rows 16 w .. 16 w + 15.
// Blocks are numbered from the last tiles (the longest key ranges) down.
template <typename T, int D>
__global__ void __launch_bounds__(kPrefillWarps * 32) flash_prefill_kernel(const T* __restrict__ kc,
                                                                    const T* __restrict__ vc, AttnArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  __shared__ int tile_seq, tile_row0;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const int kvh = blockIdx.y;
  if (threadIdx.x == 0) {
    const PrefillTile pt = prefill_tile(a, int(gridDim.x) - 1 - int(blockIdx.x), a.G, kRowsPrefill);
    tile_seq = pt.seq;
    tile_row0 = pt.index * kRowsPrefill;
  }
  __syncthreads();
  const int s = tile_seq;
  if (s < 0) return;
  const int r0 = tile_row0;
  const int q0 = a.q_start[s], q_len = a.q_start[s + 1] - q0, L = a.kv_len[s];
  const int n_rows = q_len * a.G;
  // The thread's two rows: their positions, or -1 when absent.
  int pos[2];
  int64_t qrow[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = r0 + warp * 16 + g + 8 * i;
    if (r < n_rows) {
      const int tok = r / a.G, hh = r % a.G;
      pos[i] = L - q_len + tok;
      qrow[i] = int64_t(q0 + tok) * a.n_heads + kvh * a.G + hh;
    } else {
      pos[i] = -1;
      qrow[i] = -1;
    }
  }
  const int tok_first = r0 / a.G, tok_last = (min(r0 + kRowsPrefill, n_rows) - 1) / a.G;
  const int k_hi = a.causal ? min(L - q_len + tok_last + 1, L) : L;
  const int k_lo = a.window > 0 ? max(0, L - q_len + tok_first - a.window + 1) : 0;
  auto visible = [&](int i, int key) {
    return pos[i] >= 0 && key < k_hi && (!a.causal || key <= pos[i]) && (a.window <= 0 || key > pos[i] - a.window);
  };

  unsigned qa[D / 16][4];
  load_q_frags<T, D>(qa, a, qrow[0], qrow[1]);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

  // The warp's positions: a tile none of its rows sees is skipped, and one all of them
  // see whole needs no mask.
  int pmin = INT_MAX, pmax = -1;
#pragma unroll
  for (int i = 0; i < 2; ++i)
    if (pos[i] >= 0) pmin = min(pmin, pos[i]), pmax = max(pmax, pos[i]);
  pmin = __reduce_min_sync(0xffffffffu, pmin);
  pmax = __reduce_max_sync(0xffffffffu, pmax);
  const bool all_rows = __all_sync(0xffffffffu, pos[0] >= 0 && pos[1] >= 0);

  const int32_t* table = a.block_table + int64_t(s) * a.max_blocks;
  const int n_tiles = k_hi > k_lo ? (k_hi - k_lo + kBc - 1) / kBc : 0;
  constexpr int kThreads = kPrefillWarps * 32;
  if (n_tiles > 0) load_tile<T, D, kThreads>(smem, smem + Tile<D>::kElems, kc, vc, table, a, kvh, k_lo, k_hi);
  cp_async_commit();
  for (int it = 0; it < n_tiles; ++it) {
    const int kb = k_lo + it * kBc, kl = kb + kBc - 1;  // the tile's first and last key
    T* ks = smem + (it & 1) * 2 * Tile<D>::kElems;
    T* vs = ks + Tile<D>::kElems;
    if (it + 1 < n_tiles) {
      T* nk = smem + ((it + 1) & 1) * 2 * Tile<D>::kElems;
      load_tile<T, D, kThreads>(nk, nk + Tile<D>::kElems, kc, vc, table, a, kvh, kb + kBc, k_hi);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const bool none = pmax < 0 || (a.causal && kb > pmax) || (a.window > 0 && kl <= pmin - a.window);
    if (!none) {
      float sc[kBc / 8][4];
      qk<T, D, kBc / 8>(sc, qa, ks, 0);
      const bool whole = all_rows && kl < k_hi && (!a.causal || kl <= pmin) && (a.window <= 0 || kb > pmax - a.window);
      if (whole) softmax_step<kBc / 8, D / 8>(sc, m, l, o, a, kb, [](int, int) { return true; });
      else softmax_step<kBc / 8, D / 8>(sc, m, l, o, a, kb, visible);
      pv<T, D, kBc / 8>(o, sc, vs, 0);
    }
    __syncthreads();  // this buffer is refilled two tiles on
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float lt = l[i];
    lt += __shfl_xor_sync(0xffffffffu, lt, 1);
    lt += __shfl_xor_sync(0xffffffffu, lt, 2);
    if (qrow[i] < 0) continue;
    const float inv = lt > 0.0f ? 1.0f / lt : 0.0f;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      const int d = 8 * n + 2 * c;
      store_any(a.out, a.odt, qrow[i] * D + d, o[n][2 * i] * inv);
      store_any(a.out, a.odt, qrow[i] * D + d + 1, o[n][2 * i + 1] * inv);
    }
  }
}

// ---- decode ----------------------------------------------------------------------
// Block: query row blockIdx.x, heads hg * 16 .. of KV head kvh (blockIdx.y = kvh *
// head_groups + hg), split blockIdx.z of the row's visible keys. Warp w scores keys
// 16 w .. 16 w + 15 of each tile; the four warps' states merge in shared memory.
template <typename T, int D>
__global__ void __launch_bounds__(kWarps * 32) flash_decode_kernel(const T* __restrict__ kc,
                                                                   const T* __restrict__ vc, AttnArgs a) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const int t = blockIdx.x;
  const int kvh = blockIdx.y / a.head_groups, hg = blockIdx.y % a.head_groups;
  const int z = blockIdx.z;
  const int nh = min(kFlashDecodeHeads, a.G - hg * kFlashDecodeHeads);
  const int h0 = kvh * a.G + hg * kFlashDecodeHeads;

  const KeySpan span = key_span(a, t, z);
  if (z >= span.n) return;  // a split this row does not use (the whole block)
  const int s = span.s, k0 = span.k0, k1 = span.k1;

  int64_t qrow[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) qrow[i] = g + 8 * i < nh ? int64_t(t) * a.n_heads + h0 + g + 8 * i : -1;
  unsigned qa[D / 16][4];
  load_q_frags<T, D>(qa, a, qrow[0], qrow[1]);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  auto visible = [&](int i, int key) { return qrow[i] >= 0 && key < k1; };

  const int32_t* table = a.block_table + int64_t(s) * a.max_blocks;
  const int n_tiles = k1 > k0 ? (k1 - k0 + kBc - 1) / kBc : 0;
  if (n_tiles > 0) load_tile<T, D>(smem, smem + Tile<D>::kElems, kc, vc, table, a, kvh, k0, k1);
  cp_async_commit();
  for (int it = 0; it < n_tiles; ++it) {
    const int kb = k0 + it * kBc;
    T* ks = smem + (it & 1) * 2 * Tile<D>::kElems;
    T* vs = ks + Tile<D>::kElems;
    if (it + 1 < n_tiles) {
      T* nk = smem + ((it + 1) & 1) * 2 * Tile<D>::kElems;
      load_tile<T, D>(nk, nk + Tile<D>::kElems, kc, vc, table, a, kvh, kb + kBc, k1);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (kb + 16 * warp < k1) {  // the warp's 16 keys hold at least one visible key
      float sc[2][4];
      qk<T, D, 2>(sc, qa, ks, 16 * warp);
      softmax_step<2, D / 8>(sc, m, l, o, a, kb + 16 * warp, visible);
      pv<T, D, 2>(o, sc, vs, 16 * warp);
    }
    __syncthreads();
  }
  cp_async_wait<0>();
  __syncthreads();
  // Merge the warps: per row, max m and the rescaled sums (smem reused: the tiles are done).
  float* so = reinterpret_cast<float*>(smem_raw);            // [kWarps][16][D]
  float* sml = so + kWarps * 16 * D;                           // [kWarps][16][2]
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = g + 8 * i;
    float lt = l[i];
    lt += __shfl_xor_sync(0xffffffffu, lt, 1);
    lt += __shfl_xor_sync(0xffffffffu, lt, 2);
    if (c == 0) {
      sml[(warp * 16 + r) * 2] = m[i];
      sml[(warp * 16 + r) * 2 + 1] = lt;
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      so[(warp * 16 + r) * D + 8 * n + 2 * c] = o[n][2 * i];
      so[(warp * 16 + r) * D + 8 * n + 2 * c + 1] = o[n][2 * i + 1];
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < nh * D; idx += blockDim.x) {
    const int r = idx / D, d = idx % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, sml[(w * 16 + r) * 2]);
    float Ls = 0.0f, O = 0.0f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float f = exp2f(sml[(w * 16 + r) * 2] - M);  // 0 for a warp that saw nothing
        Ls += sml[(w * 16 + r) * 2 + 1] * f;
        O += so[(w * 16 + r) * D + d] * f;
      }
    }
    const int64_t th = int64_t(t) * a.n_heads + h0 + r;
    if (span.n == 1) {
      store_any(a.out, a.odt, th * D + d, Ls > 0.0f ? O / Ls : 0.0f);
    } else {
      a.part_o[(th * a.n_splits + z) * D + d] = O;
      if (d == 0) {
        a.part_ml[(th * a.n_splits + z) * 2] = M == -INFINITY ? M : M / kLog2e;  // natural log domain
        a.part_ml[(th * a.n_splits + z) * 2 + 1] = Ls;
      }
    }
  }
}

template <int D>
size_t decode_smem_bytes() {
  const size_t merge = size_t(kWarps) * 16 * (D + 2) * sizeof(float);
  return Tile<D>::kSmemBytes > merge ? Tile<D>::kSmemBytes : merge;
}

// Calls f(T tag, D constant) for the cache type and head dim.
template <typename F>
void by_type_and_dim(DType cdt, int D, F&& f) {
  auto dims = [&](auto tag) {
    switch (D) {
      case 32: f(tag, std::integral_constant<int, 32>{}); break;
      case 64: f(tag, std::integral_constant<int, 64>{}); break;
      case 80: f(tag, std::integral_constant<int, 80>{}); break;
      case 96: f(tag, std::integral_constant<int, 96>{}); break;
      case 128: f(tag, std::integral_constant<int, 128>{}); break;
      default: throw_internal("flash attention: unsupported head dim");
    }
  };
  if (cdt == DType::bf16) dims(bf16{});
  else if (cdt == DType::f16) dims(f16{});
  else throw_internal("flash attention: cache must be bf16|f16");
}

}  // namespace

bool flash_supported(const AttnArgs& a, DType cdt, const void* kc, const void* vc) {
  if (cdt != DType::bf16 && cdt != DType::f16) return false;
  if (a.D != a.Dv) return false;
  if (a.D != 32 && a.D != 64 && a.D != 80 && a.D != 96 && a.D != 128) return false;
  return reinterpret_cast<uintptr_t>(kc) % 16 == 0 && reinterpret_cast<uintptr_t>(vc) % 16 == 0;
}

void flash_prefill(const AttnArgs& a, DType cdt, const void* kc, const void* vc, int64_t T, cudaStream_t st) {
  // Row tiles of all sequences: at most ceil(T * G / 64) + one partial tile per sequence.
  const int64_t tiles = (T * a.G + kRowsPrefill - 1) / kRowsPrefill + a.n_seqs;
  MLXCEL_CUDA_REQUIRE(tiles <= INT32_MAX && a.n_kv <= 65535, "flash_prefill: grid");
  by_type_and_dim(cdt, a.D, [&](auto tag, auto dim) {
    using KV = decltype(tag);
    constexpr int D = decltype(dim)::value;
    auto kernel = flash_prefill_kernel<KV, D>;
    const size_t smem = Tile<D>::kSmemBytes;
    if (smem > 48 * 1024)
      MLXCEL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    kernel<<<dim3(unsigned(tiles), unsigned(a.n_kv)), kPrefillWarps * 32, smem, st>>>(static_cast<const KV*>(kc),
                                                                                static_cast<const KV*>(vc), a);
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
}

void flash_decode(const AttnArgs& a, DType cdt, const void* kc, const void* vc, int64_t T, cudaStream_t st) {
  MLXCEL_CUDA_REQUIRE(T <= INT32_MAX && int64_t(a.n_kv) * a.head_groups <= 65535 && a.n_splits <= 65535,
                      "flash_decode: grid");
  by_type_and_dim(cdt, a.D, [&](auto tag, auto dim) {
    using KV = decltype(tag);
    constexpr int D = decltype(dim)::value;
    auto kernel = flash_decode_kernel<KV, D>;
    const size_t smem = decode_smem_bytes<D>();
    if (smem > 48 * 1024)
      MLXCEL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    launch_pdl(kernel, dim3(unsigned(T), unsigned(a.n_kv * a.head_groups), unsigned(a.n_splits)), kWarps * 32, smem,
               st, static_cast<const KV*>(kc), static_cast<const KV*>(vc), a);
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
}

}  // namespace mlxcel::cuda
