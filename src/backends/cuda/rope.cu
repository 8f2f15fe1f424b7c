// Rotary position embeddings: NeoX halves or interleaved pairs over the first
// rotary_dim features of each head, cos/sin times attention_scaling; the rest copied.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace mlxcel::cuda {

namespace {

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
    // Like transformers: freqs = pos * inv_freq in f32, cos/sin, times attention_scaling.
    const float ang = p * inv_freq[i];
    const float c = cosf(ang) * attn_scale, s = sinf(ang) * attn_scale;
    const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
    const float a = to_f(xr[ia]), b = to_f(xr[ib]);
    o[ia] = from_f<T>(a * c - b * s);
    o[ib] = from_f<T>(b * c + a * s);
  }
  for (int i = rd + threadIdx.x; i < D; i += blockDim.x) o[i] = xr[i];
}

}  // namespace

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
