// MLX quantization of a device weight: a round trip through the CPU quantizer, so the
// result is bit-identical to it (quantizing is a load-time step, not a hot path).
#include "backends/cpu/quantized.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/runtime.h"

namespace mlxcel::cuda {

void quantize(const Tensor& w, int bits, int group_size, Tensor& packed, Tensor& scales, Tensor& biases) {
  init();
  Tensor hw = to_device(w, Device::cpu());
  Tensor hp = Tensor::empty(packed.shape(), packed.dtype()), hs = Tensor::empty(scales.shape(), scales.dtype()),
         hb = Tensor::empty(biases.shape(), biases.dtype());
  cpu::quantize(hw, bits, group_size, hp, hs, hb);
  DeviceGuard g(packed.device().index);
  cudaStream_t st = stream_of(packed.device().index);
  MLXCEL_CUDA_CHECK(cudaMemcpyAsync(packed.raw(), hp.raw(), hp.nbytes(), cudaMemcpyHostToDevice, st));
  MLXCEL_CUDA_CHECK(cudaMemcpyAsync(scales.raw(), hs.raw(), hs.nbytes(), cudaMemcpyHostToDevice, st));
  MLXCEL_CUDA_CHECK(cudaMemcpyAsync(biases.raw(), hb.raw(), hb.nbytes(), cudaMemcpyHostToDevice, st));
  MLXCEL_CUDA_CHECK(cudaStreamSynchronize(st));
}

}  // namespace mlxcel::cuda
