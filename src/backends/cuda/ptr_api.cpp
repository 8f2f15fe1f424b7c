// The raw-pointer kernel signatures of backends/cpu (rope.h, attention.h), for a
// one-line CUDA dispatch in src/ops. Tensor data pointers here are device pointers;
// the ops pass their host-validated context arrays (positions may be either) as host
// pointers, which are uploaded. They wrap the Tensor entry points (rope.cu, attention.cu).
#include <limits>

#include "backends/cpu/attention.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/runtime.h"

namespace mlxcel::cuda {

namespace {

bool is_device_ptr(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

// A non-owning view of p: on the current device when p is device memory, else on the host.
Tensor view(const void* p, const Shape& shape, DType dt) {
  const Device d = is_device_ptr(p) ? Device::cuda(current_device()) : Device::cpu();
  return Tensor::view_of(p, shape, dt, nullptr, d);
}

Tensor dev_view(const void* p, const Shape& shape, DType dt) {
  return Tensor::view_of(p, shape, dt, nullptr, Device::cuda(current_device()));
}

RopeParams rope_params(const float* inv_freq, int rot, float attn_scale, bool interleaved) {
  RopeParams p;
  p.inv_freq = view(inv_freq, {rot / 2}, DType::f32);
  p.rotary_dim = rot;
  p.attention_scaling = attn_scale;
  p.interleaved = interleaved;
  return p;
}

// The paged kernels never read the cache's block count; the ops have checked every index.
constexpr int64_t kUnboundedBlocks = int64_t(1) << 40;

}  // namespace

void rope(const float* x, int64_t T, int64_t H, int64_t D, const int32_t* positions, const float* inv_freq, int rot,
          float attn_scale, bool interleaved, float* out) {
  init();
  const RopeParams p = rope_params(inv_freq, rot, attn_scale, interleaved);
  Tensor o = dev_view(out, {T, H, D}, DType::f32);
  rope(dev_view(x, {T, H, D}, DType::f32), view(positions, {T}, DType::i32), p, o);
}

void rope_kv_write(const float* q, const float* k, const float* v, int64_t T, int64_t H, int64_t n_kv_heads,
                   int64_t head_dim, int64_t v_head_dim, const int32_t* positions, const float* inv_freq, int rot,
                   float attn_scale, bool interleaved, float* q_out, void* k_cache, void* v_cache, DType cache_dtype,
                   int64_t n_slots, const int32_t* slots) {
  init();
  const RopeParams p = rope_params(inv_freq, rot, attn_scale, interleaved);
  Tensor qo = dev_view(q_out, {T, H, head_dim}, DType::f32);
  Tensor kc = dev_view(k_cache, {n_slots, 1, n_kv_heads, head_dim}, cache_dtype);
  Tensor vc = dev_view(v_cache, {n_slots, 1, n_kv_heads, v_head_dim}, cache_dtype);
  rope_kv_write(dev_view(q, {T, H, head_dim}, DType::f32), dev_view(k, {T, n_kv_heads, head_dim}, DType::f32),
                dev_view(v, {T, n_kv_heads, v_head_dim}, DType::f32), view(positions, {T}, DType::i32), p, qo, kc, vc,
                view(slots, {T}, DType::i32));
}

void kv_cache_write(void* k_cache, void* v_cache, DType cache_dtype, const float* k, const float* v, int64_t T,
                    int64_t n_kv_heads, int64_t head_dim, int64_t v_head_dim, const int32_t* slots) {
  init();
  Tensor kc = dev_view(k_cache, {kUnboundedBlocks, 1, n_kv_heads, head_dim}, cache_dtype);
  Tensor vc = dev_view(v_cache, {kUnboundedBlocks, 1, n_kv_heads, v_head_dim}, cache_dtype);
  AttentionContext ctx;
  ctx.slot_mapping = view(slots, {T}, DType::i32);
  kv_cache_write(kc, vc, dev_view(k, {T, n_kv_heads, head_dim}, DType::f32),
                 dev_view(v, {T, n_kv_heads, v_head_dim}, DType::f32), ctx);
}

void paged_attention(const cpu::PagedAttentionArgs& a) {
  init();
  const int64_t bs = a.block_size;
  Tensor kc = dev_view(a.k_cache, {kUnboundedBlocks, bs, a.n_kv_heads, a.head_dim}, a.cache_dtype);
  Tensor vc = dev_view(a.v_cache, {kUnboundedBlocks, bs, a.n_kv_heads, a.v_head_dim}, a.cache_dtype);
  AttentionContext ctx;
  ctx.block_size = int(bs);
  ctx.q_start = view(a.q_start, {a.n_seqs + 1}, DType::i32);
  ctx.kv_len = view(a.kv_len, {a.n_seqs}, DType::i32);
  ctx.block_table = view(a.block_table, {a.n_seqs, a.max_blocks}, DType::i32);
  AttentionParams p;
  p.scale = a.scale;
  p.sliding_window = a.sliding_window;
  p.softcap = a.softcap;
  p.causal = a.causal;
  Tensor o = dev_view(a.out, {a.T, a.n_heads, a.v_head_dim}, DType::f32);
  paged_attention(dev_view(a.q, {a.T, a.n_heads, a.head_dim}, DType::f32), kc, vc, ctx, p, o);
}

}  // namespace mlxcel::cuda
