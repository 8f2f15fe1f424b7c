// Internal to backends/cuda: the arguments of the paged attention kernels, shared by
// attention.cu (the f32 CUDA-core kernels, cache writes, split merge) and
// flash_attention.cu (the tensor-core kernels for bf16/f16 caches).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "tensor/tensor.h"

namespace mlxcel::cuda {

struct AttnArgs {
  const void* q;
  int qdt;
  const int32_t* q_start;
  const int32_t* kv_len;
  const int32_t* block_table;
  int max_blocks, block_size, n_seqs, n_heads, n_kv, D, Dv, G, head_groups;
  float scale, softcap;
  int window;
  bool causal;
  int n_splits;
  // A split takes at least this many of a row's visible keys (0: the row's keys always go
  // to all n_splits): a short context runs on fewer splits of the same grid (the others
  // exit at once), the merge reads only those, and with one split the split kernel writes
  // the output itself (key_span's n).
  int split_keys;
  float* part_o;   // [T, n_heads, n_splits, Dv] unnormalized (n_splits > 1)
  float* part_ml;  // [T, n_heads, n_splits, 2] (max, sum; natural-log domain)
  void* out;       // [T, n_heads, Dv]
  int odt;
};

#ifdef __CUDACC__
// The keys row t of a split sees: its sequence s (the last with q_start[s] <= t) and the
// split z's share [k0, k1) of the visible range (causal, sliding window); n: how many
// splits the row uses (AttnArgs::split_keys; z >= n sees nothing).
struct KeySpan {
  int s, k0, k1, n;
};
__device__ __forceinline__ KeySpan key_span(const AttnArgs& a, int t, int z) {
  int lo_s = 0, hi_s = a.n_seqs - 1;
  while (lo_s < hi_s) {
    const int mid = (lo_s + hi_s + 1) / 2;
    if (a.q_start[mid] <= t) lo_s = mid;
    else hi_s = mid - 1;
  }
  const int s = lo_s;
  const int q_len = a.q_start[s + 1] - a.q_start[s];
  const int L = a.kv_len[s];
  const int pos = L - q_len + (t - a.q_start[s]);
  const int hi = a.causal ? min(pos + 1, L) : L;
  const int lo = a.window > 0 ? max(0, pos - a.window + 1) : 0;
  const int n_vis = max(0, hi - lo);
  const int n = a.split_keys > 0 ? min(a.n_splits, max(1, (n_vis + a.split_keys - 1) / a.split_keys)) : a.n_splits;
  const int chunk = (n_vis + n - 1) / n;
  const int k0 = lo + z * chunk;
  return {s, k0, min(hi, k0 + chunk), n};
}

// Which sequence, and which of its row tiles, prefill block b takes: sequences hold
// q_len * rows_per_token rows in tiles of tile_rows, numbered sequence by sequence.
// {-1, 0} when b is past the last tile (the grid rounds up).
struct PrefillTile {
  int seq, index;
};
__device__ __forceinline__ PrefillTile prefill_tile(const AttnArgs& a, int b, int rows_per_token, int tile_rows) {
  int cum = 0;
  for (int s = 0; s < a.n_seqs; ++s) {
    const int rows = (a.q_start[s + 1] - a.q_start[s]) * rows_per_token;
    const int nt = (rows + tile_rows - 1) / tile_rows;
    if (b < cum + nt) return {s, b - cum};
    cum += nt;
  }
  return {-1, 0};
}
#endif

// Tensor-core (mma.sync, f32 accumulation) attention over a bf16 or f16 paged cache.
// Rows of one query token and one KV head's query heads form the MMA's M dimension, so
// GQA heads share every K/V tile. Supported: D == Dv, D % 16 == 0, D <= 128, cache rows
// 16-byte aligned (flash_supported). q is rounded to the cache's type, and so are the
// softmax probabilities before P.V (as FlashAttention does); scores, softmax and the
// output accumulate in f32.
bool flash_supported(const AttnArgs& a, DType cache_dtype, const void* kc, const void* vc);
// Prompt-shaped steps: blocks of 128 (token, head) rows of one sequence walk the keys any
// of their rows sees, in tiles of 64 (a.n_splits must be 1).
void flash_prefill(const AttnArgs& a, DType cache_dtype, const void* kc, const void* vc, int64_t T,
                   cudaStream_t st);
// One query row per block (decode, short chunks): up to 16 heads of a KV head, a split of
// the keys (a.n_splits, written to part_o / part_ml when > 1); the block's 4 warps take
// 16 keys each of every 64-key tile and merge at the end.
void flash_decode(const AttnArgs& a, DType cache_dtype, const void* kc, const void* vc, int64_t T,
                  cudaStream_t st);
// Query heads per block of flash_decode.
constexpr int kFlashDecodeHeads = 16;

}  // namespace mlxcel::cuda
