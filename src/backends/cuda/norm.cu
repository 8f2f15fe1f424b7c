// RMSNorm (plus a fused residual add) and LayerNorm over the last dimension; f32 rows,
// weights f32|f16|bf16 or absent. One block per row; the row is read from L1/L2 again
// for the output pass.
#include <algorithm>
#include <type_traits>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace mlxcel::cuda {

namespace {

// res != nullptr: h = x + res is written to sum_out and normalized. The normalized rows
// go out as O (f32, or bf16 for a product that rounds its input to bf16: the same bits as
// rounding the f32 result).
template <typename O>
__global__ void rms_norm_kernel(const float* __restrict__ x, const float* __restrict__ res, float* sum_out,
                                const void* __restrict__ w, int wdt, float w_offset, float eps, int64_t D,
                                O* __restrict__ out) {
  pdl_enter();
  __shared__ float sh[32];
  const int64_t base = int64_t(blockIdx.x) * D;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    float v = x[base + i];
    if (res) {
      v += res[base + i];
      sum_out[base + i] = v;
    }
    ss += v * v;
  }
  ss = block_sum(ss, sh);
  // Like transformers: x * rsqrt(mean(x^2) + eps), then times the weight.
  const float inv = 1.0f / sqrtf(ss / float(D) + eps);
  const float* src = res ? sum_out : x;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const float wv = (w ? load_any(w, wdt, i) : 1.0f) + w_offset;
    out[base + i] = from_f<O>((src[base + i] * inv) * wv);
  }
}

// The same for rows of D % 4 == 0 and D <= 4 * 1024 * V: the row stays in registers
// (V float4 per thread), one read of x (and res), one write of each output.
__device__ __forceinline__ void store4(float* p, int idx, float4 v) { reinterpret_cast<float4*>(p)[idx] = v; }
__device__ __forceinline__ void store4(bf16* p, int idx, float4 v) {
  const __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
  uint2 u;
  u.x = *reinterpret_cast<const unsigned*>(&a);
  u.y = *reinterpret_cast<const unsigned*>(&b);
  reinterpret_cast<uint2*>(p)[idx] = u;
}

template <int V, typename O>
__global__ void rms_norm_vec_kernel(const float* __restrict__ x, const float* __restrict__ res, float* sum_out,
                                    const void* __restrict__ w, int wdt, float w_offset, float eps, int64_t D,
                                    O* __restrict__ out) {
  pdl_enter();
  __shared__ float sh[32];
  const int64_t base = int64_t(blockIdx.x) * D;
  const int n4 = int(D / 4);
  const float4* x4 = reinterpret_cast<const float4*>(x + base);
  float4 v[V];
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int idx = threadIdx.x + i * blockDim.x;
    v[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (idx < n4) {
      v[i] = x4[idx];
      if (res) {
        const float4 r = reinterpret_cast<const float4*>(res + base)[idx];
        v[i].x += r.x, v[i].y += r.y, v[i].z += r.z, v[i].w += r.w;
        reinterpret_cast<float4*>(sum_out + base)[idx] = v[i];
      }
      ss += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
    }
  }
  ss = block_sum(ss, sh);
  const float inv = 1.0f / sqrtf(ss / float(D) + eps);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int idx = threadIdx.x + i * blockDim.x;
    if (idx < n4) {
      const int64_t k = int64_t(idx) * 4;
      float4 o;
      o.x = (v[i].x * inv) * ((w ? load_any(w, wdt, k) : 1.0f) + w_offset);
      o.y = (v[i].y * inv) * ((w ? load_any(w, wdt, k + 1) : 1.0f) + w_offset);
      o.z = (v[i].z * inv) * ((w ? load_any(w, wdt, k + 2) : 1.0f) + w_offset);
      o.w = (v[i].w * inv) * ((w ? load_any(w, wdt, k + 3) : 1.0f) + w_offset);
      store4(out + base, idx, o);
    }
  }
}

__global__ void layer_norm_kernel(const float* __restrict__ x, const void* __restrict__ w, int wdt,
                                  const void* __restrict__ b, int bdt, float eps, int64_t D, float* __restrict__ out) {
  __shared__ float sh[32];
  const float* row = x + int64_t(blockIdx.x) * D;
  float* o = out + int64_t(blockIdx.x) * D;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += row[i];
  const float mean = block_sum(s, sh) / float(D);
  float v = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const float d = row[i] - mean;
    v += d * d;
  }
  const float var = block_sum(v, sh) / float(D);
  const float inv = 1.0f / sqrtf(var + eps);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const float wv = w ? load_any(w, wdt, i) : 1.0f;
    const float bv = b ? load_any(b, bdt, i) : 0.0f;
    o[i] = (row[i] - mean) * inv * wv + bv;
  }
}

int threads_for(int64_t D) { return D >= 1024 ? 512 : D >= 256 ? 256 : 128; }

// f(pointer to out's data) for an f32 or bf16 output.
template <typename F>
void by_out(Tensor& out, F&& f) {
  if (out.dtype() == DType::bf16) f(static_cast<bf16*>(out.raw()));
  else if (out.dtype() == DType::f32) f(out.data<float>());
  else throw_internal("rms_norm: out must be f32|bf16");
}

void rms_launch(const Tensor& x, const float* res, float* sum_out, const Tensor& w, float eps, float w_offset,
                Tensor& out) {
  init();
  const int64_t D = x.dim(-1);
  const int64_t rows = D ? x.numel() / D : 0;
  if (rows == 0) return;
  Launch l(out);
  MLXCEL_CUDA_REQUIRE(rows <= INT32_MAX, "rms_norm: too many rows");
  Tensor wc = w.defined() && !w.is_contiguous() ? to_device(w, w.device()) : w;
  const void* wp = wc.defined() ? wc.raw() : nullptr;
  const int wdt = wc.defined() ? int(wc.dtype()) : 0;
  uintptr_t align = reinterpret_cast<uintptr_t>(x.raw()) | reinterpret_cast<uintptr_t>(out.raw()) |
                    reinterpret_cast<uintptr_t>(res) | reinterpret_cast<uintptr_t>(sum_out);
  if (D % 4 == 0 && D <= 4 * 1024 * 4 && align % 16 == 0) {
    const int n4 = int(D / 4);
    const int threads = std::min(1024, int((n4 + 31) / 32 * 32));
    const int V = (n4 + threads - 1) / threads;
    by_out(out, [&](auto* o) {
      using O = std::remove_pointer_t<decltype(o)>;
      if (V == 1) launch_pdl(rms_norm_vec_kernel<1, O>, unsigned(rows), threads, 0, l.stream, x.data<float>(), res, sum_out, wp, wdt, w_offset, eps, D, o);
      else if (V == 2) launch_pdl(rms_norm_vec_kernel<2, O>, unsigned(rows), threads, 0, l.stream, x.data<float>(), res, sum_out, wp, wdt, w_offset, eps, D, o);
      else launch_pdl(rms_norm_vec_kernel<4, O>, unsigned(rows), threads, 0, l.stream, x.data<float>(), res, sum_out, wp, wdt, w_offset, eps, D, o);
    });
    MLXCEL_CUDA_LAUNCH_CHECK();
    return;
  }
  by_out(out, [&](auto* o) {
    using O = std::remove_pointer_t<decltype(o)>;
    launch_pdl(rms_norm_kernel<O>, unsigned(rows), threads_for(D), 0, l.stream, x.data<float>(), res, sum_out, wp, wdt, w_offset,
                                                                     eps, D, o);
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
}

}  // namespace

void rms_norm(const Tensor& x, const Tensor& w, float eps, float w_offset, Tensor& out) {
  rms_launch(x, nullptr, nullptr, w, eps, w_offset, out);
}

void add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& w, float eps, float w_offset,
                  Tensor& sum_out, Tensor& out) {
  MLXCEL_CUDA_REQUIRE(residual.numel() == x.numel() && sum_out.numel() == x.numel(), "add_rms_norm: shapes");
  rms_launch(x, residual.data<float>(), sum_out.data<float>(), w, eps, w_offset, out);
}

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& out) {
  init();
  const int64_t D = x.dim(-1);
  const int64_t rows = D ? x.numel() / D : 0;
  if (rows == 0) return;
  Launch l(out);
  MLXCEL_CUDA_REQUIRE(rows <= INT32_MAX, "layer_norm: too many rows");
  Tensor wc = w.defined() && !w.is_contiguous() ? to_device(w, w.device()) : w;
  Tensor bc = b.defined() && !b.is_contiguous() ? to_device(b, b.device()) : b;
  layer_norm_kernel<<<unsigned(rows), threads_for(D), 0, l.stream>>>(
      x.data<float>(), wc.defined() ? wc.raw() : nullptr, wc.defined() ? int(wc.dtype()) : 0,
      bc.defined() ? bc.raw() : nullptr, bc.defined() ? int(bc.dtype()) : 0, eps, D, out.data<float>());
  MLXCEL_CUDA_LAUNCH_CHECK();
}

}  // namespace mlxcel::cuda
