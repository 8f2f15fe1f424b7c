// Paged KV cache: kv_cache_write and paged_attention. All of ctx is validated here
// (the kernels trust it), so a bad batch is an invalid_request, never a stray read.
#include "ops/attention.h"

#include "ops/fused.h"

#include "backends/cpu/attention.h"
#include "ops/ops_internal.h"
#include "backends/cuda/dispatch.h"

namespace mlxcel::ops {

using namespace detail;

namespace {

void check_cache(const char* op, const Tensor& c, const char* name, const AttentionContext& ctx) {
  check_defined(op, c, name);
  check_float(op, c, name);
  if (c.ndim() != 4) invalid("[{}] {} must be [n_blocks, block_size, n_kv_heads, dim], got {}", op, name, c.describe());
  if (!c.is_contiguous()) invalid("[{}] {} must be contiguous, got a strided view", op, name);
  if (c.dim(1) != ctx.block_size)
    invalid("[{}] {} has blocks of {} tokens but ctx.block_size is {}", op, name, c.dim(1), ctx.block_size);
}

void check_caches(const char* op, const Tensor& k_cache, const Tensor& v_cache, const AttentionContext& ctx) {
  if (ctx.block_size <= 0) invalid("[{}] ctx.block_size must be positive, got {}", op, ctx.block_size);
  check_cache(op, k_cache, "k_cache", ctx);
  check_cache(op, v_cache, "v_cache", ctx);
  check_same_device(op, k_cache, v_cache, "v_cache");
  if (k_cache.dtype() != v_cache.dtype())
    invalid("[{}] k_cache ({}) and v_cache ({}) differ in dtype", op, dtype_name(k_cache.dtype()),
            dtype_name(v_cache.dtype()));
  if (k_cache.dim(0) != v_cache.dim(0) || k_cache.dim(2) != v_cache.dim(2))
    invalid("[{}] k_cache {} and v_cache {} differ in blocks or kv heads", op, k_cache.describe(), v_cache.describe());
}

// The device copy of a context array when the caller made one (same device, i32, n
// elements, contiguous), else the host array (which the CUDA kernels then upload).
[[maybe_unused]] const int32_t* device_mirror(const Tensor& mirror, Device device, int64_t n, const int32_t* host) {
  if (mirror.defined() && mirror.device() == device && mirror.dtype() == DType::i32 && mirror.numel() == n &&
      mirror.is_contiguous())
    return mirror.data<int32_t>();
  return host;
}

// ctx tensors are read on the host: CPU i32 of the documented shapes.
const int32_t* host_i32(const char* op, const Tensor& t, const char* name, const Shape& shape) {
  if (!t.defined()) invalid("[{}] ctx.{} is undefined", op, name);
  if (t.dtype() != DType::i32 || t.shape() != shape || !t.is_contiguous())
    invalid("[{}] ctx.{} must be contiguous i32 {}, got {}", op, name, shape_str(shape), t.describe());
  if (t.device().type != DeviceType::cpu) invalid("[{}] ctx.{} must be on the host, got {}", op, name, t.describe());
  return t.data<int32_t>();
}

}  // namespace

namespace {

// kv_cache_write's checks; returns the host slot mapping.
const int32_t* check_kv_write(const char* kOp, const Tensor& k_cache, const Tensor& v_cache, const Tensor& k,
                              const Tensor& v, const AttentionContext& ctx) {
  check_caches(kOp, k_cache, v_cache, ctx);
  check_defined(kOp, k, "k");
  check_defined(kOp, v, "v");
  check_dtype(kOp, k, "k", {DType::f32});
  check_dtype(kOp, v, "v", {DType::f32});
  const int64_t Hkv = k_cache.dim(2), D = k_cache.dim(3), Dv = v_cache.dim(3);
  if (k.ndim() != 3 || k.dim(1) != Hkv || k.dim(2) != D)
    invalid("[{}] k must be [T, {}, {}] to match k_cache, got {}", kOp, Hkv, D, k.describe());
  const int64_t T = k.dim(0);
  if (v.ndim() != 3 || v.dim(0) != T || v.dim(1) != Hkv || v.dim(2) != Dv)
    invalid("[{}] v must be [{}, {}, {}] to match k and v_cache, got {}", kOp, T, Hkv, Dv, v.describe());
  check_same_device(kOp, k_cache, k, "k");
  check_same_device(kOp, k_cache, v, "v");
  const int32_t* slots = host_i32(kOp, ctx.slot_mapping, "slot_mapping", {T});
  const int64_t n_slots = k_cache.dim(0) * k_cache.dim(1);
  for (int64_t t = 0; t < T; ++t) {
    if (slots[t] < 0 || slots[t] >= n_slots)
      invalid("[{}] slot_mapping[{}] = {} is outside the cache's {} slots", kOp, t, slots[t], n_slots);
  }
  return slots;
}

}  // namespace

void kv_cache_write(Tensor& k_cache, Tensor& v_cache, const Tensor& k, const Tensor& v, const AttentionContext& ctx) {
  constexpr const char* kOp = "kv_cache_write";
  const int32_t* slots = check_kv_write(kOp, k_cache, v_cache, k, v, ctx);
  const int64_t T = k.dim(0), Hkv = k_cache.dim(2), D = k_cache.dim(3), Dv = v_cache.dim(3);
  check_backend(kOp, k_cache.device());
  Tensor kc = contiguous_input(k), vc = contiguous_input(v);
  switch (k_cache.device().type) {
    case DeviceType::cpu:
      cpu::kv_cache_write(k_cache.raw(), v_cache.raw(), k_cache.dtype(), kc.data<float>(), vc.data<float>(), T, Hkv, D,
                          Dv, slots);
      break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, {
      cuda::kv_cache_write(k_cache.raw(), v_cache.raw(), k_cache.dtype(), kc.data<float>(), vc.data<float>(), T, Hkv, D,
                          Dv, device_mirror(ctx.slot_mapping_device, k_cache.device(), T, slots));
    }); break;
  }
}

Tensor paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttentionContext& ctx,
                       const AttentionParams& params) {
  constexpr const char* kOp = "paged_attention";
  check_caches(kOp, k_cache, v_cache, ctx);
  check_defined(kOp, q, "q");
  check_dtype(kOp, q, "q", {DType::f32});
  const int64_t n_blocks = k_cache.dim(0), Hkv = k_cache.dim(2), D = k_cache.dim(3), Dv = v_cache.dim(3);
  if (q.ndim() != 3 || q.dim(2) != D)
    invalid("[{}] q must be [T, n_heads, {}] (the cache's head_dim), got {}", kOp, D, q.describe());
  const int64_t T = q.dim(0), H = q.dim(1);
  if (Hkv <= 0 || H % Hkv != 0)
    invalid("[{}] n_heads {} must be a multiple of n_kv_heads {}", kOp, H, Hkv);
  check_same_device(kOp, q, k_cache, "k_cache");
  if (params.sliding_window < 0) invalid("[{}] sliding_window must be >= 0, got {}", kOp, params.sliding_window);
  if (params.softcap < 0.0f) invalid("[{}] softcap must be >= 0, got {}", kOp, params.softcap);

  if (!ctx.kv_len.defined() || ctx.kv_len.ndim() != 1)
    invalid("[{}] ctx.kv_len must be i32 [n_seqs], got {}", kOp, ctx.kv_len.describe());
  const int64_t S = ctx.kv_len.dim(0);
  const int32_t* kv_len = host_i32(kOp, ctx.kv_len, "kv_len", {S});
  const int32_t* q_start = host_i32(kOp, ctx.q_start, "q_start", {S + 1});
  if (!ctx.block_table.defined() || ctx.block_table.ndim() != 2)
    invalid("[{}] ctx.block_table must be i32 [n_seqs, max_blocks], got {}", kOp, ctx.block_table.describe());
  const int64_t max_blocks = ctx.block_table.dim(1);
  const int32_t* table = host_i32(kOp, ctx.block_table, "block_table", {S, max_blocks});
  if (q_start[0] != 0 || q_start[S] != T)
    invalid("[{}] ctx.q_start must run from 0 to T = {}, got {} .. {}", kOp, T, q_start[0], q_start[S]);
  const int64_t bs = ctx.block_size;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t q_len = int64_t(q_start[s + 1]) - q_start[s];
    if (q_len < 0) invalid("[{}] ctx.q_start decreases at sequence {}", kOp, s);
    if (kv_len[s] < q_len)
      invalid("[{}] sequence {} has kv_len {} < its {} new tokens", kOp, s, kv_len[s], q_len);
    if (kv_len[s] > max_blocks * bs)
      invalid("[{}] sequence {} has kv_len {} but its block table holds {} tokens", kOp, s, kv_len[s], max_blocks * bs);
    for (int64_t b = 0; b * bs < kv_len[s]; ++b) {
      const int32_t blk = table[s * max_blocks + b];
      if (blk < 0 || blk >= n_blocks)
        invalid("[{}] block_table[{}][{}] = {} is outside the cache's {} blocks", kOp, s, b, blk, n_blocks);
    }
  }
  check_backend(kOp, q.device());
  Tensor qc = contiguous_input(q);
  Tensor out = Tensor::empty({T, H, Dv}, DType::f32, q.device());
  cpu::PagedAttentionArgs a;
  a.q = qc.data<float>();
  a.T = T;
  a.n_heads = H;
  a.head_dim = D;
  a.k_cache = k_cache.raw();
  a.v_cache = v_cache.raw();
  a.cache_dtype = k_cache.dtype();
  a.block_size = bs;
  a.n_kv_heads = Hkv;
  a.v_head_dim = Dv;
  a.q_start = q_start;
  a.kv_len = kv_len;
  a.block_table = table;
  a.n_seqs = S;
  a.max_blocks = max_blocks;
  a.scale = params.scale;
  a.sliding_window = params.sliding_window;
  a.softcap = params.softcap;
  a.causal = params.causal;
  a.out = out.data<float>();
  switch (q.device().type) {
    case DeviceType::cpu: cpu::paged_attention(a); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, {
      a.q_start = device_mirror(ctx.q_start_device, q.device(), S + 1, q_start);
      a.kv_len = device_mirror(ctx.kv_len_device, q.device(), S, kv_len);
      a.block_table = device_mirror(ctx.block_table_device, q.device(), S * max_blocks, table);
      cuda::paged_attention(a);
    }); break;
  }
  return out;
}

Tensor rope_kv_write(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions, const RopeParams& p,
                     Tensor& k_cache, Tensor& v_cache, const AttentionContext& ctx) {
  constexpr const char* kOp = "rope_kv_write";
  if (q.device().type != DeviceType::cuda) {
    Tensor qr = rope(q, positions, p);
    kv_cache_write(k_cache, v_cache, rope(k, positions, p), v, ctx);
    return qr;
  }
  check_rope(kOp, q, positions, p);
  check_rope(kOp, k, positions, p);
  const int32_t* slots = check_kv_write(kOp, k_cache, v_cache, k, v, ctx);
  if (q.dim(0) != k.dim(0)) invalid("[{}] q has {} tokens but k has {}", kOp, q.dim(0), k.dim(0));
  check_same_device(kOp, q, k_cache, "k_cache");
  const int64_t T = q.dim(0);
  Tensor qc = contiguous_input(q), kc = contiguous_input(k), vc = contiguous_input(v);
  Tensor pc = contiguous_input(positions), fc = contiguous_input(p.inv_freq);
  Tensor out = Tensor::empty(q.shape(), DType::f32, q.device());
  MLXCEL_CUDA_CALL(kOp, {
    cuda::rope_kv_write(qc.data<float>(), kc.data<float>(), vc.data<float>(), T, q.dim(1), k.dim(1), k.dim(2),
                        v.dim(2), pc.data<int32_t>(), rope_freq_on(p, q.device(), fc), p.rotary_dim,
                        p.attention_scaling, p.interleaved, out.data<float>(), k_cache.raw(), v_cache.raw(),
                        k_cache.dtype(), k_cache.dim(0) * k_cache.dim(1),
                        device_mirror(ctx.slot_mapping_device, k_cache.device(), T, slots));
  });
  return out;
}

bool detail::rope_kv_target(const RopeKvWrite& w, int64_t q_rows, int64_t k_rows, int64_t v_rows, Device dev,
                            RopeKvTarget* out) {
  if (!w.positions || !w.rope || !w.k_cache || !w.v_cache || !w.ctx || dev.type != DeviceType::cuda) return false;
  const RopeParams& p = *w.rope;
  const int D = w.head_dim;
  if (D <= 0 || D % 16 != 0 || p.rotary_dim != D || p.interleaved || q_rows % D != 0) return false;
  const Tensor& pos = *w.positions;
  const Tensor &kc = *w.k_cache, &vc = *w.v_cache;
  if (!pos.defined() || pos.dtype() != DType::i32 || pos.numel() != 1 || pos.device() != dev || !pos.is_contiguous())
    return false;
  if (!kc.defined() || !vc.defined() || kc.ndim() != 4 || vc.ndim() != 4 || kc.device() != dev ||
      vc.device() != dev || kc.dtype() != vc.dtype() || !kc.is_contiguous() || !vc.is_contiguous())
    return false;
  const DType c = kc.dtype();
  if (c != DType::f32 && c != DType::f16 && c != DType::bf16) return false;
  if (kc.dim(0) != vc.dim(0) || kc.dim(1) != vc.dim(1) || kc.dim(2) != vc.dim(2) || kc.dim(3) != D ||
      kc.dim(2) * D != k_rows || vc.dim(2) * vc.dim(3) != v_rows)
    return false;
  // The slot: checked on the host as kv_cache_write checks it, read by the kernel from the
  // step's device mirror.
  const Tensor& sm = w.ctx->slot_mapping;
  if (!sm.defined() || sm.dtype() != DType::i32 || sm.numel() != 1 || sm.device().type != DeviceType::cpu) return false;
  const int64_t n_slots = kc.dim(0) * kc.dim(1);
  const int32_t slot = sm.data<int32_t>()[0];
  if (slot < 0 || slot >= n_slots) return false;
  const int32_t* slot_dev = device_mirror(w.ctx->slot_mapping_device, dev, 1, nullptr);
  if (!slot_dev) return false;
  const float* freq = rope_freq_mirror(p, dev);  // rotary_dim == D: D / 2 frequencies
  if (!freq) return false;
  *out = RopeKvTarget{pos.data<int32_t>(), slot_dev, freq, p.attention_scaling, D, kc.raw(), vc.raw(), c, n_slots};
  return true;
}

}  // namespace mlxcel::ops
