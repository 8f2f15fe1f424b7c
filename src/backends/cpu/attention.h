// Paged KV cache kernels (see ops/attention.h for the cache layout and semantics).
#pragma once

#include <cstdint>

#include "tensor/dtype.h"

namespace mlxcel::cpu {

// A validated paged-attention step: every index below has been checked by the op.
struct PagedAttentionArgs {
  const float* q = nullptr;  // [T, n_heads, head_dim]
  int64_t T = 0, n_heads = 0, head_dim = 0;
  const void* k_cache = nullptr;  // [n_blocks, block_size, n_kv_heads, head_dim]
  const void* v_cache = nullptr;  // [n_blocks, block_size, n_kv_heads, v_head_dim]
  DType cache_dtype = DType::f32;  // f32 | f16 | bf16, both caches
  int64_t block_size = 16, n_kv_heads = 0, v_head_dim = 0;
  const int32_t* q_start = nullptr;      // [n_seqs + 1]
  const int32_t* kv_len = nullptr;       // [n_seqs]
  const int32_t* block_table = nullptr;  // [n_seqs, max_blocks]
  int64_t n_seqs = 0, max_blocks = 0;
  float scale = 1.0f;
  int sliding_window = 0;
  float softcap = 0.0f;
  bool causal = true;
  float* out = nullptr;  // [T, n_heads, v_head_dim]
};

// Online-softmax attention, f32 accumulation; parallel over (head, sequence, block
// of query rows) so a cache block is reused from L1 by all rows of the block.
void paged_attention(const PagedAttentionArgs& a);

// Writes k [T, n_kv_heads, head_dim] and v [T, n_kv_heads, v_head_dim] (f32) into
// the caches (cache_dtype) at flat token slots slots[t] = block * block_size + offset.
void kv_cache_write(void* k_cache, void* v_cache, DType cache_dtype, const float* k, const float* v, int64_t T,
                    int64_t n_kv_heads, int64_t head_dim, int64_t v_head_dim, const int32_t* slots);

}  // namespace mlxcel::cpu
