// Attention over a paged KV cache, for a ragged batch of sequences.
//
// The cache of one layer is k_cache [n_blocks, block_size, n_kv_heads, head_dim]
// and v_cache [n_blocks, block_size, n_kv_heads, v_head_dim]. Each sequence owns
// a list of blocks (its block table); token t of a sequence lives in block
// table[t / block_size] at offset t % block_size. A contiguous cache is the
// special case of consecutive blocks.
//
// The flat batch holds the new tokens of every sequence back to back: sequence s
// owns rows [q_start[s], q_start[s+1]). Its new tokens are the last q_len ones of
// its kv_len tokens, so row i of sequence s sits at position kv_len - q_len + i.
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace mlxcel {

// Built once per step by the runner; shared by all layers.
struct AttentionContext {
  Tensor q_start;        // i32 [n_seqs + 1], cumulative row offsets in the flat batch
  Tensor kv_len;         // i32 [n_seqs], tokens in the cache after this step's writes
  Tensor block_table;    // i32 [n_seqs, max_blocks_per_seq]
  Tensor slot_mapping;   // i32 [T]: block * block_size + offset where each new token goes
  int block_size = 16;
  // Optional copies of the four arrays above on the caches' device (the model makes them
  // once per step). The ops validate the host arrays; the CUDA kernels read these
  // instead of uploading the host arrays at every layer. Must hold the same values.
  Tensor q_start_device, kv_len_device, block_table_device, slot_mapping_device;
  int n_seqs() const { return int(kv_len.dim(0)); }
};

// Per-layer parameters.
struct AttentionParams {
  float scale = 1.0f;       // applied to q.k
  int sliding_window = 0;   // > 0: a query at position p sees keys at positions > p - window
  float softcap = 0.0f;     // > 0: scores = tanh(scores / softcap) * softcap before masking
  bool causal = true;
};

namespace ops {
// Writes this step's keys and values into the cache at ctx.slot_mapping.
// k [T, n_kv_heads, head_dim], v [T, n_kv_heads, v_head_dim].
void kv_cache_write(Tensor& k_cache, Tensor& v_cache, const Tensor& k, const Tensor& v,
                    const AttentionContext& ctx);
// q [T, n_heads, head_dim] -> [T, n_heads, v_head_dim]. n_heads must be a multiple
// of n_kv_heads (GQA/MQA). Reads keys and values straight from the blocks.
Tensor paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       const AttentionContext& ctx, const AttentionParams& params);
}  // namespace ops

}  // namespace mlxcel
