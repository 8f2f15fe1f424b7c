// Paged attention over a ragged batch (ops/attention.h): cache writes, and one kernel
// for decode and prefill rows. Each block takes one query row, one KV head with up to
// kHeadsPerCta of its query heads (GQA: the K/V loads are shared), and one split of
// the visible keys; warps stride over keys with an online softmax in f32. Splits are
// merged by a second kernel.
// Prompt-shaped steps (many rows per sequence) take a tiled kernel instead (below).
#include <algorithm>
#include <cstdlib>

#include "backends/cuda/attention_impl.h"
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace mlxcel::cuda {

namespace {

constexpr int kHeadsPerCta = 8;
constexpr int kMaxDimPerLane = 8;  // head_dim and v_head_dim <= 256
constexpr int kAttnWarps = 4;
// AttnArgs::split_keys by default (MLXCEL_CUDA_SPLIT_KEYS overrides): one tile of the
// flash decode kernel. Llama-3.1-8B tg128 on an H200, alternated in one call (session 27):
// q4 457.5 / 457.8 -> 459.3 / 458.8 tok/s (32: 458.5 / 459.2, 128: 459.2 / 459.4), after a
// 512-token prompt 456.3 / 456.2 -> 458.4 / 458.3, bf16 223.7 / 223.6 -> 223.9 / 224.1:
// the merge of 33 mostly empty splits was a small share of a step.
constexpr int kDefaultSplitKeys = 64;

__global__ void kv_write_kernel(void* kc, int kcdt, void* vc, int vcdt, const void* k, int kdt, const void* v, int vdt,
                                const int32_t* __restrict__ slots, int64_t n_slots, int64_t kw, int64_t vw) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t];
  if (slot < 0 || slot >= n_slots) return;  // padding (or a bad slot: skipped)
  for (int64_t i = threadIdx.x; i < kw; i += blockDim.x) store_any(kc, kcdt, slot * kw + i, load_any(k, kdt, t * kw + i));
  for (int64_t i = threadIdx.x; i < vw; i += blockDim.x) store_any(vc, vcdt, slot * vw + i, load_any(v, vdt, t * vw + i));
}

// q of row t, heads h0 .. h0 + nh, into shared memory (then a barrier).
__device__ __forceinline__ void load_q(const AttnArgs& a, int t, int h0, int nh,
                                       float (*qs)[kMaxDimPerLane * 32]) {
  for (int i = threadIdx.x; i < nh * a.D; i += blockDim.x) {
    const int hh = i / a.D, d = i % a.D;
    qs[hh][d] = load_any(a.q, a.qdt, (int64_t(t) * a.n_heads + h0 + hh) * a.D + d);
  }
  __syncthreads();
}

// Merges the block's warps' online-softmax states (max m, sum l, unnormalized o per head)
// and writes row t's output, or the split's partials when the row has several splits (n).
__device__ __forceinline__ void merge_and_store(const AttnArgs& a, int t, int h0, int nh, int z, int n,
                                                const float (&m)[kHeadsPerCta], const float (&l)[kHeadsPerCta],
                                                const float (&o)[kHeadsPerCta][kMaxDimPerLane],
                                                float (*sm)[kHeadsPerCta], float (*sl)[kHeadsPerCta],
                                                float (*so)[kHeadsPerCta][kMaxDimPerLane * 32]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int hh = 0; hh < kHeadsPerCta; ++hh) {
    if (hh < nh) {
      if (lane == 0) {
        sm[warp][hh] = m[hh];
        sl[warp][hh] = l[hh];
      }
#pragma unroll
      for (int i = 0; i < kMaxDimPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < a.Dv) so[warp][hh][d] = o[hh][i];
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < nh * a.Dv; i += blockDim.x) {
    const int hh = i / a.Dv, d = i % a.Dv;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) M = fmaxf(M, sm[w][hh]);
    float Ls = 0.0f, O = 0.0f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kAttnWarps; ++w) {
        const float f = sm[w][hh] == -INFINITY ? 0.0f : expf(sm[w][hh] - M);
        Ls += sl[w][hh] * f;
        O += so[w][hh][d] * f;
      }
    }
    const int64_t th = int64_t(t) * a.n_heads + h0 + hh;
    if (n == 1) {
      store_any(a.out, a.odt, th * a.Dv + d, Ls > 0.0f ? O / Ls : 0.0f);
    } else {
      a.part_o[(th * a.n_splits + z) * a.Dv + d] = O;
      if (d == 0) {
        a.part_ml[(th * a.n_splits + z) * 2] = M;
        a.part_ml[(th * a.n_splits + z) * 2 + 1] = Ls;
      }
    }
  }
}

template <typename KV>
__global__ void __launch_bounds__(kAttnWarps * 32) attn_kernel(const KV* __restrict__ kc, const KV* __restrict__ vc,
                                                               AttnArgs a) {
  pdl_enter();
  __shared__ float qs[kHeadsPerCta][kMaxDimPerLane * 32];
  __shared__ float so[kAttnWarps][kHeadsPerCta][kMaxDimPerLane * 32];
  __shared__ float sm[kAttnWarps][kHeadsPerCta], sl[kAttnWarps][kHeadsPerCta];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int t = blockIdx.x;
  const int kvh = blockIdx.y / a.head_groups, hg = blockIdx.y % a.head_groups;
  const int z = blockIdx.z;
  const int h0 = kvh * a.G + hg * kHeadsPerCta;
  const int nh = min(kHeadsPerCta, a.G - hg * kHeadsPerCta);

  const KeySpan ks = key_span(a, t, z);
  if (z >= ks.n) return;  // a split this row does not use (the whole block)
  const int s = ks.s, k0 = ks.k0, k1 = ks.k1;
  load_q(a, t, h0, nh, qs);

  float m[kHeadsPerCta], l[kHeadsPerCta], o[kHeadsPerCta][kMaxDimPerLane];
#pragma unroll
  for (int hh = 0; hh < kHeadsPerCta; ++hh) {
    m[hh] = -INFINITY;
    l[hh] = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxDimPerLane; ++i) o[hh][i] = 0.0f;
  }
  const int32_t* table = a.block_table + int64_t(s) * a.max_blocks;
  for (int j = k0 + warp; j < k1; j += kAttnWarps) {
    const int64_t slot = int64_t(table[j / a.block_size]) * a.block_size + j % a.block_size;
    const KV* kr = kc + (slot * a.n_kv + kvh) * a.D;
    const KV* vr = vc + (slot * a.n_kv + kvh) * a.Dv;
    float kv[kMaxDimPerLane], vv[kMaxDimPerLane];
#pragma unroll
    for (int i = 0; i < kMaxDimPerLane; ++i) {
      const int d = lane + 32 * i;
      kv[i] = d < a.D ? to_f(kr[d]) : 0.0f;
      vv[i] = d < a.Dv ? to_f(vr[d]) : 0.0f;
    }
#pragma unroll
    for (int hh = 0; hh < kHeadsPerCta; ++hh) {
      if (hh < nh) {
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < kMaxDimPerLane; ++i) {
          const int d = lane + 32 * i;
          if (d < a.D) dot = fmaf(qs[hh][d], kv[i], dot);
        }
        float sc = warp_sum(dot) * a.scale;
        if (a.softcap > 0.0f) sc = tanhf(sc / a.softcap) * a.softcap;
        const float mn = fmaxf(m[hh], sc);
        const float corr = expf(m[hh] - mn), p = expf(sc - mn);
        l[hh] = l[hh] * corr + p;
#pragma unroll
        for (int i = 0; i < kMaxDimPerLane; ++i) o[hh][i] = fmaf(o[hh][i], corr, p * vv[i]);
        m[hh] = mn;
      }
    }
  }
  merge_and_store(a, t, h0, nh, z, ks.n, m, l, o, sm, sl, so);
}

// ---- decode: lanes over keys ------------------------------------------------------
// Same blocks as attn_kernel (one query row, one KV head with up to kHeadsPerCta of its
// query heads, one split), but a warp takes 32 keys at once: lane j scores key j for
// every head (its K row read in 16-byte vectors against q in shared memory), the tile's
// softmax runs once per head on warp shuffles, and for P.V each lane owns output dims
// and the probabilities are broadcast key by key. attn_kernel instead reduced over the
// head dim for every key and head: a chain of shuffles per key. Needs D % E == 0
// (E = 16 / sizeof(KV)); written like attn_kernel's merge at the end.
template <typename KV>
__global__ void __launch_bounds__(kAttnWarps * 32) attn_decode_kernel(const KV* __restrict__ kc,
                                                                      const KV* __restrict__ vc, AttnArgs a) {
  pdl_enter();
  constexpr int E = int(16 / sizeof(KV));
  __shared__ __align__(16) float qs[kHeadsPerCta][kMaxDimPerLane * 32];
  __shared__ float so[kAttnWarps][kHeadsPerCta][kMaxDimPerLane * 32];
  __shared__ float sm[kAttnWarps][kHeadsPerCta], sl[kAttnWarps][kHeadsPerCta];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int t = blockIdx.x;
  const int kvh = blockIdx.y / a.head_groups, hg = blockIdx.y % a.head_groups;
  const int z = blockIdx.z;
  const int h0 = kvh * a.G + hg * kHeadsPerCta;
  const int nh = min(kHeadsPerCta, a.G - hg * kHeadsPerCta);

  const KeySpan ks = key_span(a, t, z);
  if (z >= ks.n) return;  // a split this row does not use (the whole block)
  const int s = ks.s, k0 = ks.k0, k1 = ks.k1;
  load_q(a, t, h0, nh, qs);

  float m[kHeadsPerCta], l[kHeadsPerCta], o[kHeadsPerCta][kMaxDimPerLane];
#pragma unroll
  for (int hh = 0; hh < kHeadsPerCta; ++hh) {
    m[hh] = -INFINITY;
    l[hh] = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxDimPerLane; ++i) o[hh][i] = 0.0f;
  }
  const int32_t* table = a.block_table + int64_t(s) * a.max_blocks;
  for (int j0 = k0 + 32 * warp; j0 < k1; j0 += 32 * kAttnWarps) {
    const int j = j0 + lane;
    const bool valid = j < k1;
    const int64_t slot = valid ? int64_t(table[j / a.block_size]) * a.block_size + j % a.block_size : 0;
    // Scores of key j for every head.
    float sc[kHeadsPerCta];
#pragma unroll
    for (int hh = 0; hh < kHeadsPerCta; ++hh) sc[hh] = 0.0f;
    if (valid) {
      const uint4* kr = reinterpret_cast<const uint4*>(kc + (slot * a.n_kv + kvh) * a.D);
#pragma unroll 4
      for (int v = 0; v < a.D / E; ++v) {
        const uint4 raw = kr[v];
        const KV* kv = reinterpret_cast<const KV*>(&raw);
        float kf[E];
#pragma unroll
        for (int e = 0; e < E; ++e) kf[e] = to_f(kv[e]);
#pragma unroll
        for (int hh = 0; hh < kHeadsPerCta; ++hh) {
          if (hh < nh) {
#pragma unroll
            for (int e = 0; e < E; ++e) sc[hh] = fmaf(qs[hh][v * E + e], kf[e], sc[hh]);
          }
        }
      }
    }
    float p[kHeadsPerCta];
#pragma unroll
    for (int hh = 0; hh < kHeadsPerCta; ++hh) {
      p[hh] = 0.0f;
      if (hh < nh) {
        float x = sc[hh] * a.scale;
        if (a.softcap > 0.0f) x = tanhf(x / a.softcap) * a.softcap;
        x = valid ? x : -INFINITY;
        const float mn = fmaxf(m[hh], warp_max(x));  // finite: key j0 is valid
        const float corr = expf(m[hh] - mn);
        p[hh] = valid ? expf(x - mn) : 0.0f;
        l[hh] = l[hh] * corr + warp_sum(p[hh]);
#pragma unroll
        for (int i = 0; i < kMaxDimPerLane; ++i) o[hh][i] *= corr;
        m[hh] = mn;
      }
    }
    // P.V: lane owns dims lane + 32 i; key jj's probability comes by shuffle.
    const int n_keys = min(32, k1 - j0);
#pragma unroll 4
    for (int jj = 0; jj < n_keys; ++jj) {
      const int64_t slot_j = __shfl_sync(0xffffffffu, slot, jj);
      const KV* vr = vc + (slot_j * a.n_kv + kvh) * a.Dv;
      float vv[kMaxDimPerLane];
#pragma unroll
      for (int i = 0; i < kMaxDimPerLane; ++i) {
        const int d = lane + 32 * i;
        vv[i] = d < a.Dv ? to_f(vr[d]) : 0.0f;
      }
#pragma unroll
      for (int hh = 0; hh < kHeadsPerCta; ++hh) {
        const float pj = __shfl_sync(0xffffffffu, p[hh], jj);
        if (hh < nh) {
#pragma unroll
          for (int i = 0; i < kMaxDimPerLane; ++i) o[hh][i] = fmaf(pj, vv[i], o[hh][i]);
        }
      }
    }
  }
  merge_and_store(a, t, h0, nh, z, ks.n, m, l, o, sm, sl, so);
}

// attn_decode_kernel is opt-in (MLXCEL_CUDA_DECODE_ATTN=1 or set_decode_attention):
// on an H200 it was slower than attn_kernel at the contexts measured (Llama-3.1-8B
// shapes, 16-256 keys: tg 172 vs 181 tok/s, 64 sequences 5,149 vs 5,708 tok/s); long
// contexts are unmeasured.
bool g_decode_kernel = [] {
  const char* e = std::getenv("MLXCEL_CUDA_DECODE_ATTN");
  return e && e[0] == '1';
}();
bool use_decode_kernel() { return g_decode_kernel; }

// Tensor-core kernels (flash_attention.cu) for bf16/f16 caches they support: on by
// default; MLXCEL_CUDA_FLASH=0 (or set_flash_attention) gives the f32 kernels above.
bool g_flash = [] {
  const char* e = std::getenv("MLXCEL_CUDA_FLASH");
  return !(e && e[0] == '0');
}();

// ---- prefill: query tiles ------------------------------------------------------
// A block takes kTileQ consecutive query rows of one sequence and one query head, and
// walks the visible keys in tiles of kTileK: K and V tiles are staged in shared memory
// (as f32; K rows padded by 4 floats: conflict-free float4 reads) and serve all kTileQ
// rows, instead of being re-read per row. Each warp owns kTileQ / 4 rows: lane j scores
// key j of the tile for all of them, each row's online softmax runs on warp shuffles,
// and each lane accumulates its DV_LANE output dims of every row. FP32 on the CUDA cores.
// Needs head_dim % 4 == 0.
// TODO(cuda): tensor cores (mma) for the two products.
constexpr int kTileQ = 32, kTileK = 32, kTileWarps = 4, kRowsPerWarp = kTileQ / kTileWarps;

size_t prefill_smem_bytes(int D, int Dv) {
  return size_t(kTileQ * D + kTileK * (D + 4) + kTileK * Dv + kTileQ * kTileK) * sizeof(float);
}

template <typename KV, int DV_LANE>
__global__ void __launch_bounds__(kTileWarps * 32) attn_prefill_kernel(const KV* __restrict__ kc,
                                                                       const KV* __restrict__ vc, AttnArgs a) {
  extern __shared__ float smem[];
  float* qs = smem;                             // [kTileQ][D]
  float* ks = qs + kTileQ * a.D;                // [kTileK][D + 4] (16-byte rows, no bank conflicts)
  float* vs = ks + kTileK * (a.D + 4);          // [kTileK][Dv]
  float* ps = vs + kTileK * a.Dv;               // [kTileQ][kTileK]
  __shared__ int tile_seq, tile_row0;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int h = blockIdx.y, kvh = h / a.G;
  if (threadIdx.x == 0) {  // which sequence and which of its tiles this block takes
    const PrefillTile pt = prefill_tile(a, int(blockIdx.x), 1, kTileQ);
    tile_seq = pt.seq;
    tile_row0 = pt.seq < 0 ? 0 : a.q_start[pt.seq] + pt.index * kTileQ;
  }
  __syncthreads();
  const int s = tile_seq;
  if (s < 0) return;
  const int t0 = tile_row0, t_end = min(a.q_start[s + 1], t0 + kTileQ);
  const int q_len = a.q_start[s + 1] - a.q_start[s];
  const int L = a.kv_len[s];
  const int pos0 = L - q_len + (t0 - a.q_start[s]);  // position of the tile's first row
  const int n_rows = t_end - t0;
  // Keys any row of the tile may see.
  const int last_pos = pos0 + n_rows - 1;
  const int k_hi = a.causal ? min(last_pos + 1, L) : L;
  const int k_lo = a.window > 0 ? max(0, pos0 - a.window + 1) : 0;

  for (int i = threadIdx.x; i < kTileQ * a.D; i += blockDim.x) {
    const int r = i / a.D, d = i % a.D;
    qs[i] = r < n_rows ? load_any(a.q, a.qdt, (int64_t(t0 + r) * a.n_heads + h) * a.D + d) : 0.0f;
  }
  float m[kRowsPerWarp], l[kRowsPerWarp], o[kRowsPerWarp][DV_LANE];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < DV_LANE; ++i) o[r][i] = 0.0f;
  }
  const int32_t* table = a.block_table + int64_t(s) * a.max_blocks;
  for (int kb = k_lo; kb < k_hi; kb += kTileK) {
    __syncthreads();  // the previous tile's K/V (and, first time, qs) are done with
    for (int i = threadIdx.x; i < kTileK * a.D; i += blockDim.x) {
      const int j = i / a.D, d = i % a.D, key = kb + j;
      float v = 0.0f;
      if (key < k_hi) {
        const int64_t slot = int64_t(table[key / a.block_size]) * a.block_size + key % a.block_size;
        v = to_f(kc[(slot * a.n_kv + kvh) * a.D + d]);
      }
      ks[j * (a.D + 4) + d] = v;
    }
    for (int i = threadIdx.x; i < kTileK * a.Dv; i += blockDim.x) {
      const int j = i / a.Dv, d = i % a.Dv, key = kb + j;
      float v = 0.0f;
      if (key < k_hi) {
        const int64_t slot = int64_t(table[key / a.block_size]) * a.block_size + key % a.block_size;
        v = to_f(vc[(slot * a.n_kv + kvh) * a.Dv + d]);
      }
      vs[j * a.Dv + d] = v;
    }
    __syncthreads();
    const int key = kb + lane;
    // Scores of the warp's rows against key `lane`: float4 loads, the K row once for
    // all rows (q reads are broadcasts).
    float sc[kRowsPerWarp];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) sc[rr] = 0.0f;
    const float4* kr4 = reinterpret_cast<const float4*>(ks + lane * (a.D + 4));
    const float4* qw4 = reinterpret_cast<const float4*>(qs + warp * kRowsPerWarp * a.D);
    const int d4n = a.D / 4;
    for (int d4 = 0; d4 < d4n; ++d4) {
      const float4 kv = kr4[d4];
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const float4 qv = qw4[rr * d4n + d4];
        sc[rr] = fmaf(qv.x, kv.x, fmaf(qv.y, kv.y, fmaf(qv.z, kv.z, fmaf(qv.w, kv.w, sc[rr]))));
      }
    }
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp * kRowsPerWarp + rr;
      const int pos = pos0 + r;
      const bool vis = r < n_rows && key < k_hi && key < L && (!a.causal || key <= pos) &&
                       (a.window <= 0 || key > pos - a.window);
      float x = -INFINITY;
      if (vis) {
        x = sc[rr] * a.scale;
        if (a.softcap > 0.0f) x = tanhf(x / a.softcap) * a.softcap;
      }
      const float mt = warp_max(x);
      const float mn = fmaxf(m[rr], mt);
      float p = 0.0f, corr = 1.0f;
      if (mn != -INFINITY) {
        p = vis ? expf(x - mn) : 0.0f;
        corr = m[rr] == -INFINITY ? 0.0f : expf(m[rr] - mn);
      }
      l[rr] = l[rr] * corr + warp_sum(p);
      m[rr] = mn;
      ps[r * kTileK + lane] = p;
#pragma unroll
      for (int i = 0; i < DV_LANE; ++i) o[rr][i] *= corr;
    }
    __syncwarp();
    // o[row] += p[row, j] * v[j]: each V value once for all of the warp's rows.
    const float* pw = ps + warp * kRowsPerWarp * kTileK;
    for (int j = 0; j < kTileK; ++j) {
      float vv[DV_LANE];
#pragma unroll
      for (int i = 0; i < DV_LANE; ++i) {
        const int d = lane + 32 * i;
        vv[i] = d < a.Dv ? vs[j * a.Dv + d] : 0.0f;
      }
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const float pj = pw[rr * kTileK + j];
#pragma unroll
        for (int i = 0; i < DV_LANE; ++i) o[rr][i] = fmaf(pj, vv[i], o[rr][i]);
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = warp * kRowsPerWarp + rr;
    if (r >= n_rows) continue;
    const int64_t th = int64_t(t0 + r) * a.n_heads + h;
#pragma unroll
    for (int i = 0; i < DV_LANE; ++i) {
      const int d = lane + 32 * i;
      if (d < a.Dv) store_any(a.out, a.odt, th * a.Dv + d, l[rr] > 0.0f ? o[rr][i] / l[rr] : 0.0f);
    }
  }
}

template <typename KV>
void launch_prefill(const KV* kc, const KV* vc, const AttnArgs& a, int64_t T, int dev, cudaStream_t st) {
  const size_t smem = prefill_smem_bytes(a.D, a.Dv);
  const dim3 grid(unsigned(ceil_div(T, kTileQ) + a.n_seqs), unsigned(a.n_heads));
  auto go = [&](auto kernel) {
    // Opt in to more than 48 KiB of shared memory (per kernel: the DV_LANE variants share
    // one function type, so no static "done" flag here).
    if (smem > 48 * 1024)
      MLXCEL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    kernel<<<grid, kTileWarps * 32, smem, st>>>(kc, vc, a);
  };
  const int dv_lanes = int(ceil_div(a.Dv, 32));
  if (dv_lanes <= 2) go(attn_prefill_kernel<KV, 2>);
  else if (dv_lanes <= 4) go(attn_prefill_kernel<KV, 4>);
  else go(attn_prefill_kernel<KV, 8>);
  MLXCEL_CUDA_LAUNCH_CHECK();
}

// Whether a step is prompt-shaped enough for the tile kernel: many rows per sequence on
// average (decode steps have one). MLXCEL_CUDA_PREFILL_TILES=0 turns it off.
bool use_prefill_tiles(int64_t T, int n_seqs) {
  static const int mode = [] {
    const char* e = std::getenv("MLXCEL_CUDA_PREFILL_TILES");
    return e && e[0] == '0' ? 0 : 1;
  }();
  return mode == 1 && T >= 64 && T >= int64_t(n_seqs) * 16;
}

// AttnArgs::split_keys: MLXCEL_CUDA_SPLIT_KEYS=N (0: off), set_split_keys.
int g_split_keys = [] {
  const char* e = std::getenv("MLXCEL_CUDA_SPLIT_KEYS");
  return e ? std::max(0, std::atoi(e)) : kDefaultSplitKeys;
}();

// out[t, h] = merge of the splits' (max, sum, unnormalized o): the first key_span(...).n
// of the n_splits slots (a row of one split has its output already).
__global__ void attn_combine_kernel(const AttnArgs a) {
  pdl_enter();
  const int64_t th = blockIdx.x;
  const int n = key_span(a, int(th / a.n_heads), 0).n, n_splits = a.n_splits, Dv = a.Dv;
  if (n == 1) return;
  const float* __restrict__ part_o = a.part_o;
  const float* __restrict__ part_ml = a.part_ml;
  float M = -INFINITY;
  for (int z = 0; z < n; ++z) M = fmaxf(M, part_ml[(th * n_splits + z) * 2]);
  for (int d = threadIdx.x; d < Dv; d += blockDim.x) {
    float Ls = 0.0f, O = 0.0f;
    if (M != -INFINITY) {
      for (int z = 0; z < n; ++z) {
        const float mz = part_ml[(th * n_splits + z) * 2];
        const float f = mz == -INFINITY ? 0.0f : expf(mz - M);
        Ls += part_ml[(th * n_splits + z) * 2 + 1] * f;
        O += part_o[(th * n_splits + z) * Dv + d] * f;
      }
    }
    store_any(a.out, a.odt, th * Dv + d, Ls > 0.0f ? O / Ls : 0.0f);
  }
}

}  // namespace

int set_split_keys(int keys) {
  const int old = g_split_keys;
  g_split_keys = std::max(0, keys);
  return old;
}

bool set_flash_attention(bool on) {
  const bool old = g_flash;
  g_flash = on;
  return old;
}

bool set_decode_attention(bool on) {
  const bool old = g_decode_kernel;
  g_decode_kernel = on;
  return old;
}

void kv_cache_write(Tensor& k_cache, Tensor& v_cache, const Tensor& k, const Tensor& v, const AttentionContext& ctx) {
  init();
  const int64_t T = k.dim(0);
  if (T == 0) return;
  Launch l(k_cache);
  const int dev = k_cache.device().index;
  Tensor slots = on_device_i32(ctx.slot_mapping, dev);
  const int64_t n_slots = k_cache.dim(0) * k_cache.dim(1);
  const int64_t kw = k.numel() / T, vw = v.numel() / T;
  MLXCEL_CUDA_REQUIRE(T <= INT32_MAX, "kv_cache_write: too many tokens");
  kv_write_kernel<<<unsigned(T), 128, 0, l.stream>>>(k_cache.raw(), int(k_cache.dtype()), v_cache.raw(),
                                                     int(v_cache.dtype()), k.raw(), int(k.dtype()), v.raw(),
                                                     int(v.dtype()), slots.data<int32_t>(), n_slots, kw, vw);
  MLXCEL_CUDA_LAUNCH_CHECK();
}

void paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttentionContext& ctx,
                     const AttentionParams& params, Tensor& out) {
  init();
  const int64_t T = q.dim(0);
  if (T == 0) return;
  Launch l(out);
  const int dev = out.device().index;
  AttnArgs a{};
  a.n_heads = int(q.dim(1));
  a.D = int(q.dim(2));
  a.n_kv = int(k_cache.dim(2));
  a.Dv = int(v_cache.dim(3));
  if (a.D > kMaxDimPerLane * 32 || a.Dv > kMaxDimPerLane * 32)
    throw_unsupported("[paged_attention] CUDA supports head dims up to 256");
  MLXCEL_CUDA_REQUIRE(a.n_kv > 0 && a.n_heads % a.n_kv == 0, "paged_attention: heads");
  Tensor qs = on_device_i32(ctx.q_start, dev), kl = on_device_i32(ctx.kv_len, dev),
         bt = on_device_i32(ctx.block_table, dev);
  a.q = q.raw();
  a.qdt = int(q.dtype());
  a.q_start = qs.data<int32_t>();
  a.kv_len = kl.data<int32_t>();
  a.block_table = bt.data<int32_t>();
  a.max_blocks = int(ctx.block_table.dim(1));
  a.block_size = ctx.block_size;
  a.n_seqs = ctx.n_seqs();
  a.G = a.n_heads / a.n_kv;
  a.head_groups = int(ceil_div(a.G, kHeadsPerCta));
  a.scale = params.scale;
  a.softcap = params.softcap;
  a.window = params.sliding_window;
  a.causal = params.causal;
  a.out = out.raw();
  a.odt = int(out.dtype());
  const DType cdt = k_cache.dtype();
  const bool flash = g_flash && v_cache.dtype() == cdt && flash_supported(a, cdt, k_cache.raw(), v_cache.raw());
  if (flash) a.head_groups = int(ceil_div(a.G, kFlashDecodeHeads));
  // Prompt-shaped steps take a tile kernel (no splits) when one fits.
  const bool tiles = use_prefill_tiles(T, a.n_seqs) &&
                     (flash || (a.D % 4 == 0 && prefill_smem_bytes(a.D, a.Dv) <= 200 * 1024 && a.n_heads <= 65535));
  // Otherwise enough blocks to fill the card twice, but no split shorter than 128 keys of
  // the longest possible context (max_blocks * block_size, known on the host).
  const int64_t base = T * a.n_kv * a.head_groups;
  const int64_t max_ctx = int64_t(a.max_blocks) * a.block_size;
  int64_t splits = ceil_div(2 * sm_count(dev), base);
  splits = splits > ceil_div(max_ctx, 128) ? ceil_div(max_ctx, 128) : splits;
  splits = splits < 1 || tiles ? 1 : splits > 64 ? 64 : splits;
  a.n_splits = int(splits);
  a.split_keys = g_split_keys;
  if (a.n_splits > 1) {
    const int64_t rows = T * a.n_heads * a.n_splits;
    a.part_o = static_cast<float*>(scratch(size_t(rows * a.Dv) * 4, 0));
    a.part_ml = static_cast<float*>(scratch(size_t(rows * 2) * 4, 1));
  }
  if (flash && tiles) {
    flash_prefill(a, cdt, k_cache.raw(), v_cache.raw(), T, l.stream);
  } else if (flash) {
    flash_decode(a, cdt, k_cache.raw(), v_cache.raw(), T, l.stream);
  } else if (tiles) {
    by_float_type(cdt, "paged_attention: cache", [&](auto tag) {
      using KV = decltype(tag);
      launch_prefill(static_cast<const KV*>(k_cache.raw()), static_cast<const KV*>(v_cache.raw()), a, T, dev, l.stream);
    });
  } else {
    MLXCEL_CUDA_REQUIRE(T <= INT32_MAX && a.n_kv * a.head_groups <= 65535, "paged_attention: grid");
    const dim3 grid(unsigned(T), unsigned(a.n_kv * a.head_groups), unsigned(a.n_splits));
    const int E = int(16 / dtype_size(cdt));
    const bool decode = use_decode_kernel() && a.D % E == 0 && reinterpret_cast<uintptr_t>(k_cache.raw()) % 16 == 0;
    by_float_type(cdt, "paged_attention: cache", [&](auto tag) {
      using KV = decltype(tag);
      const KV* kc = static_cast<const KV*>(k_cache.raw());
      const KV* vc = static_cast<const KV*>(v_cache.raw());
      if (decode) launch_pdl(attn_decode_kernel<KV>, grid, kAttnWarps * 32, 0, l.stream, kc, vc, a);
      else launch_pdl(attn_kernel<KV>, grid, kAttnWarps * 32, 0, l.stream, kc, vc, a);
    });
    MLXCEL_CUDA_LAUNCH_CHECK();
  }
  if (a.n_splits > 1) {
    launch_pdl(attn_combine_kernel, unsigned(T * a.n_heads), 128, 0, l.stream, a);
    MLXCEL_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace mlxcel::cuda
