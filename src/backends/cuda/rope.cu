// Rotary position embeddings: NeoX halves or interleaved pairs over the first
// rotary_dim features of each head, cos/sin times attention_scaling; the rest copied.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace mlxcel::cuda {

namespace {

// One rotated pair of a row: transformers' freqs = pos * inv_freq in f32, cos/sin, times
// attention_scaling. Shared by rope_kernel and rope_kv_kernel so that both round alike.
__device__ __forceinline__ void rope_pair(float p, float inv, float attn_scale, float a, float b, float& oa,
                                          float& ob) {
  const float ang = p * inv;
  const float c = cosf(ang) * attn_scale, s = sinf(ang) * attn_scale;
  oa = a * c - b * s;
  ob = b * c + a * s;
}

template <typename T>
__global__ void rope_kernel(const T* __restrict__ x, const int32_t* __restrict__ pos, const float* __restrict__ inv_freq,
                            int H, int D, int rd, bool interleaved, float attn_scale, T* __restrict__ out) {
  const int64_t row = blockIdx.x;  // t * H + h
  const int64_t t = row / H;
  const T* xr = x + row * D;
  T* o = out + row * D;
  const float p = float(pos[t]);
  const int half = rd / 2;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
    float oa, ob;
    rope_pair(p, inv_freq[i], attn_scale, to_f(xr[ia]), to_f(xr[ib]), oa, ob);
    o[ia] = from_f<T>(oa);
    o[ib] = from_f<T>(ob);
  }
  for (int i = rd + threadIdx.x; i < D; i += blockDim.x) o[i] = xr[i];
}

// The decode step's q/k rotation and cache write in one launch: block row = t * (H + Hkv
// + 1) + j; j < H rotates q head j into q_out, j < H + Hkv rotates k head j - H straight
// into the cache slot of token t (converted to the cache's dtype), the last block of a
// token copies its v row. Slots outside the cache are skipped (padding).
template <typename C>
__global__ void rope_kv_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                               const int32_t* __restrict__ pos, const float* __restrict__ inv_freq, int H, int Hkv,
                               int D, int Dv, int rd, bool interleaved, float attn_scale, float* __restrict__ q_out,
                               C* __restrict__ kc, C* __restrict__ vc, const int32_t* __restrict__ slots,
                               int64_t n_slots) {
  pdl_enter();
  const int64_t row = blockIdx.x;
  const int per_token = H + Hkv + 1;
  const int64_t t = row / per_token;
  const int j = int(row % per_token);
  const float p = float(pos[t]);
  const int half = rd / 2;
  if (j < H) {
    const float* xr = q + (t * H + j) * D;
    float* o = q_out + (t * H + j) * D;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
      const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
      rope_pair(p, inv_freq[i], attn_scale, xr[ia], xr[ib], o[ia], o[ib]);
    }
    for (int i = rd + threadIdx.x; i < D; i += blockDim.x) o[i] = xr[i];
    return;
  }
  const int64_t slot = slots[t];
  if (slot < 0 || slot >= n_slots) return;
  if (j < H + Hkv) {
    const int h = j - H;
    const float* xr = k + (t * Hkv + h) * D;
    C* o = kc + (slot * Hkv + h) * D;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
      const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
      float oa, ob;
      rope_pair(p, inv_freq[i], attn_scale, xr[ia], xr[ib], oa, ob);
      o[ia] = from_f<C>(oa);
      o[ib] = from_f<C>(ob);
    }
    for (int i = rd + threadIdx.x; i < D; i += blockDim.x) o[i] = from_f<C>(xr[i]);
    return;
  }
  const int64_t vw = int64_t(Hkv) * Dv;
  for (int64_t i = threadIdx.x; i < vw; i += blockDim.x) vc[slot * vw + i] = from_f<C>(v[t * vw + i]);
}

}  // namespace

void rope_kv_write(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions, const RopeParams& p,
                   Tensor& q_out, Tensor& k_cache, Tensor& v_cache, const Tensor& slots) {
  init();
  const int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2), Hkv = k.dim(1), Dv = v.dim(2);
  if (T == 0) return;
  Launch l(q_out);
  const int dev = q_out.device().index;
  MLXCEL_CUDA_REQUIRE(p.rotary_dim % 2 == 0 && p.rotary_dim <= D, "rope_kv_write: rotary_dim");
  MLXCEL_CUDA_REQUIRE(T * (H + Hkv + 1) <= INT32_MAX, "rope_kv_write: too many rows");
  Tensor pos = on_device_i32(positions, dev), sl = on_device_i32(slots, dev);
  Tensor inv = p.inv_freq.device().type == DeviceType::cuda ? p.inv_freq : to_device(p.inv_freq, Device::cuda(dev));
  const int64_t n_slots = k_cache.dim(0) * k_cache.dim(1);
  const unsigned grid = unsigned(T * (H + Hkv + 1));
  const int threads = D >= 256 ? 128 : 64;
#define MLXCEL_ROPE_KV(C)                                                                                            \
  launch_pdl(rope_kv_kernel<C>, grid, threads, 0, l.stream,                                                                  \
      q.data<float>(), k.data<float>(), v.data<float>(), pos.data<int32_t>(), inv.data<float>(), int(H), int(Hkv),   \
      int(D), int(Dv), p.rotary_dim, p.interleaved, p.attention_scaling, q_out.data<float>(),                        \
      static_cast<C*>(k_cache.raw()), static_cast<C*>(v_cache.raw()), sl.data<int32_t>(), n_slots)
  switch (k_cache.dtype()) {
    case DType::f32: MLXCEL_ROPE_KV(float); break;
    case DType::f16: MLXCEL_ROPE_KV(f16); break;
    case DType::bf16: MLXCEL_ROPE_KV(bf16); break;
    default: throw_internal("rope_kv_write: cache must be f32|f16|bf16");
  }
#undef MLXCEL_ROPE_KV
  MLXCEL_CUDA_LAUNCH_CHECK();
}

void rope(const Tensor& x, const Tensor& positions, const RopeParams& p, Tensor& out) {
  init();
  const int64_t T = x.dim(0), H = x.dim(1), D = x.dim(2);
  if (T * H * D == 0) return;
  Launch l(out);
  const int dev = out.device().index;
  MLXCEL_CUDA_REQUIRE(p.rotary_dim % 2 == 0 && p.rotary_dim <= D, "rope: rotary_dim");
  MLXCEL_CUDA_REQUIRE(p.inv_freq.numel() >= p.rotary_dim / 2, "rope: inv_freq too short");
  MLXCEL_CUDA_REQUIRE(T * H <= INT32_MAX, "rope: too many rows");
  Tensor pos = on_device_i32(positions, dev);
  Tensor inv = p.inv_freq.device().type == DeviceType::cuda ? p.inv_freq : to_device(p.inv_freq, Device::cuda(dev));
  const unsigned grid = unsigned(T * H);
  const int threads = D >= 256 ? 128 : 64;
#define MLXCEL_ROPE(TY)                                                                                           \
  rope_kernel<TY><<<grid, threads, 0, l.stream>>>(static_cast<const TY*>(x.raw()), pos.data<int32_t>(),           \
                                                  inv.data<float>(), int(H), int(D), p.rotary_dim, p.interleaved, \
                                                  p.attention_scaling, static_cast<TY*>(out.raw()))
  switch (x.dtype()) {
    case DType::f32: MLXCEL_ROPE(float); break;
    case DType::f16: MLXCEL_ROPE(f16); break;
    case DType::bf16: MLXCEL_ROPE(bf16); break;
    default: throw_internal("rope: x must be f32|f16|bf16");
  }
#undef MLXCEL_ROPE
  MLXCEL_CUDA_LAUNCH_CHECK();
}

}  // namespace mlxcel::cuda
