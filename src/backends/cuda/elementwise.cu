// Elementwise kernels: add/mul (with row broadcast), scale, activations, gated, softcap.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace mlxcel::cuda {

namespace {

template <typename B, bool kAdd>
__global__ void binary_kernel(const float* __restrict__ a, const B* __restrict__ b, float* out, int64_t n, int64_t D) {
  pdl_enter();
  // D == n: same shape; otherwise b [D] broadcast over the rows. out may alias a.
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float bv = to_f(b[D == n ? i : i % D]);
    out[i] = kAdd ? a[i] + bv : a[i] * bv;
  }
}

__global__ void scale_kernel(const float* __restrict__ x, float s, float* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = x[i] * s;
}

template <Act A, typename O>
__global__ void act_kernel(const float* __restrict__ x, const float* __restrict__ up, O* __restrict__ out,
                           int64_t n) {
  pdl_enter();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f<O>(up ? act<A>(x[i]) * up[i] : act<A>(x[i]));
}

__global__ void softcap_kernel(const float* __restrict__ x, float cap, float* __restrict__ out, int64_t n) {
  const float inv = 1.0f / cap;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = tanhf(x[i] * inv) * cap;
}

template <typename O>
void act_dispatch(const float* x, const float* up, O* out, int64_t n, Act a, cudaStream_t st) {
  const unsigned g = grid_for(n, 256);
  switch (a) {
    case Act::silu: launch_pdl(act_kernel<Act::silu, O>, g, 256, 0, st, x, up, out, n); break;
    case Act::gelu_tanh: launch_pdl(act_kernel<Act::gelu_tanh, O>, g, 256, 0, st, x, up, out, n); break;
    case Act::gelu_erf: launch_pdl(act_kernel<Act::gelu_erf, O>, g, 256, 0, st, x, up, out, n); break;
    case Act::relu: launch_pdl(act_kernel<Act::relu, O>, g, 256, 0, st, x, up, out, n); break;
    case Act::relu2: launch_pdl(act_kernel<Act::relu2, O>, g, 256, 0, st, x, up, out, n); break;
  }
  MLXCEL_CUDA_LAUNCH_CHECK();
}

}  // namespace

void binary(const Tensor& a, const Tensor& b, BinaryOp op, Tensor& out) {
  init();
  const int64_t n = a.numel();
  if (n == 0) return;
  Launch l(out);
  const int64_t D = b.numel();
  MLXCEL_CUDA_REQUIRE(D > 0 && n % D == 0, "binary: b does not broadcast");
  const unsigned g = grid_for(n, 256);
  auto run = [&](auto tag) {
    using B = decltype(tag);
    const B* bp = static_cast<const B*>(b.raw());
    if (op == BinaryOp::add) launch_pdl(binary_kernel<B, true>, g, 256, 0, l.stream, a.data<float>(), bp, out.data<float>(), n, D);
    else launch_pdl(binary_kernel<B, false>, g, 256, 0, l.stream, a.data<float>(), bp, out.data<float>(), n, D);
  };
  switch (b.dtype()) {
    case DType::f32: run(float{}); break;
    case DType::f16: run(f16{}); break;
    case DType::bf16: run(bf16{}); break;
    default: throw_internal("binary: b must be f32|f16|bf16");
  }
  MLXCEL_CUDA_LAUNCH_CHECK();
}

void scale(const Tensor& x, float s, Tensor& out) {
  init();
  const int64_t n = x.numel();
  if (n == 0) return;
  Launch l(out);
  scale_kernel<<<grid_for(n, 256), 256, 0, l.stream>>>(x.data<float>(), s, out.data<float>(), n);
  MLXCEL_CUDA_LAUNCH_CHECK();
}

void activate(const Tensor& x, Act a, Tensor& out) {
  init();
  if (x.numel() == 0) return;
  Launch l(out);
  act_dispatch(x.data<float>(), nullptr, out.data<float>(), x.numel(), a, l.stream);
}

void gated(const Tensor& gate, const Tensor& up, Act a, Tensor& out) {
  init();
  if (gate.numel() == 0) return;
  Launch l(out);
  if (out.dtype() == DType::bf16)
    act_dispatch(gate.data<float>(), up.data<float>(), static_cast<bf16*>(out.raw()), gate.numel(), a, l.stream);
  else
    act_dispatch(gate.data<float>(), up.data<float>(), out.data<float>(), gate.numel(), a, l.stream);
}

void softcap(const Tensor& x, float cap, Tensor& out) {
  init();
  const int64_t n = x.numel();
  if (n == 0) return;
  Launch l(out);
  softcap_kernel<<<grid_for(n, 256), 256, 0, l.stream>>>(x.data<float>(), cap, out.data<float>(), n);
  MLXCEL_CUDA_LAUNCH_CHECK();
}

}  // namespace mlxcel::cuda
