// Copies and conversions: contiguous, astype, to_device, zeros, take_rows, slice_last.
#include <cstring>

#include "backends/cpu/isa.h"
#include "backends/cpu/kernels.h"
#include "backends/cuda/dispatch.h"
#include "ops/ops.h"
#include "ops/ops_internal.h"

namespace mlxcel::ops {

using namespace detail;

Tensor detail::contiguous_input(const Tensor& x) { return x.is_contiguous() ? x : contiguous(x); }

Tensor contiguous(const Tensor& x) {
  constexpr const char* kOp = "contiguous";
  check_defined(kOp, x, "x");
  if (x.is_contiguous()) return x;
  check_backend(kOp, x.device());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  switch (x.device().type) {
    case DeviceType::cpu: cpu::copy_strided(x, out); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::copy_strided(x, out)); break;
  }
  return out;
}

Tensor astype(const Tensor& x, DType dtype) {
  constexpr const char* kOp = "astype";
  check_defined(kOp, x, "x");
  auto is_float = [](DType d) { return d == DType::f32 || d == DType::f16 || d == DType::bf16; };
  const bool ok = dtype == x.dtype() || (is_float(x.dtype()) && is_float(dtype)) ||
                  (x.dtype() == DType::i32 && dtype == DType::f32);
  if (!ok)
    invalid("[{}] cannot convert {} to {} (supported: f32|f16|bf16 -> f32|f16|bf16, i32 -> f32)", kOp,
            x.describe(), dtype_name(dtype));
  check_backend(kOp, x.device());
  if (dtype == x.dtype()) {
    Tensor out = Tensor::empty(x.shape(), dtype, x.device());
    switch (x.device().type) {
      case DeviceType::cpu: cpu::copy_strided(x, out); break;
      case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::copy_strided(x, out)); break;
    }
    return out;
  }
  Tensor xc = contiguous_input(x);
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  switch (x.device().type) {
    case DeviceType::cpu: cpu::convert(xc, out); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::convert(xc, out)); break;
  }
  return out;
}

Tensor to_device(const Tensor& x, Device device) {
  constexpr const char* kOp = "to_device";
  check_defined(kOp, x, "x");
  if (x.device().type == DeviceType::cpu && device.type == DeviceType::cpu) {
    Tensor out = Tensor::empty(x.shape(), x.dtype(), device);
    cpu::copy_strided(x, out);
    return out;
  }
#ifdef MLXCEL_WITH_CUDA
  return cuda::to_device(x, device);
#else
  // NOTE: host <-> device copies belong to the CUDA backend.
  unsupported("[{}] copy from {} to {} needs the CUDA backend (not built)", kOp, device_name(x.device()),
              device_name(device));
#endif
}

void copy_(Tensor& dst, const Tensor& src) {
  constexpr const char* kOp = "copy_";
  check_defined(kOp, dst, "dst");
  check_defined(kOp, src, "src");
  check_same_device(kOp, dst, src, "src");
  if (dst.shape() != src.shape() || dst.dtype() != src.dtype())
    invalid("[{}] dst {} and src {} differ in shape or dtype", kOp, dst.describe(), src.describe());
  if (!dst.is_contiguous()) invalid("[{}] dst must be contiguous, got {}", kOp, dst.describe());
  check_backend(kOp, dst.device());
  switch (dst.device().type) {
    case DeviceType::cpu: cpu::copy_strided(src, dst); return;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::copy_strided(src, dst)); return;
  }
  no_cuda(kOp);
}

void copy_from_host(Tensor& dst, const Tensor& src) {
  constexpr const char* kOp = "copy_from_host";
  check_defined(kOp, dst, "dst");
  check_defined(kOp, src, "src");
  if (src.device().type != DeviceType::cpu) invalid("[{}] src must be on the host, got {}", kOp, src.describe());
  if (dst.dtype() != src.dtype() || dst.numel() != src.numel() || !dst.is_contiguous())
    invalid("[{}] dst {} must be contiguous with the dtype and size of src {}", kOp, dst.describe(), src.describe());
  switch (dst.device().type) {
    case DeviceType::cpu: {
      Tensor d = dst;
      cpu::copy_strided(src.reshape(dst.shape()), d);
      return;
    }
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::copy_from_host(dst, src)); return;
  }
  no_cuda(kOp);
}

#ifdef MLXCEL_WITH_CUDA
namespace {
class CudaGraph : public DeviceGraph {
 public:
  explicit CudaGraph(std::shared_ptr<cuda::GraphExec> g) : g_(std::move(g)) {}
  void launch() override { cuda::launch_graph(*g_); }
  bool stale() const override { return cuda::graph_stale(*g_); }

 private:
  std::shared_ptr<cuda::GraphExec> g_;
};
}  // namespace
#endif

std::unique_ptr<DeviceGraph> capture_graph(Device device, const std::function<void()>& fn) {
  constexpr const char* kOp = "capture_graph";
  if (device.type != DeviceType::cuda) unsupported("[{}] graphs are recorded on CUDA devices only", kOp);
#ifdef MLXCEL_WITH_CUDA
  return std::make_unique<CudaGraph>(cuda::capture_graph(device.index, fn));
#else
  no_cuda(kOp);
#endif
}

namespace {
class HostReadback : public Readback {
 public:
  explicit HostReadback(int64_t max_bytes) : max_bytes_(max_bytes) {}
  void start(const Tensor& src) override {
    if (src.device().type != DeviceType::cpu || src.nbytes() > max_bytes_)
      invalid("[readback] {} must be on the host and at most {} bytes", src.describe(), max_bytes_);
    copy_ = src.clone();
  }
  Tensor wait() override { return copy_; }

 private:
  int64_t max_bytes_;
  Tensor copy_;
};
#ifdef MLXCEL_WITH_CUDA
class CudaReadback : public Readback {
 public:
  CudaReadback(Device device, int64_t max_bytes)
      : device_(device), r_(cuda::make_readback(device.index, size_t(max_bytes))), max_bytes_(max_bytes) {}
  void start(const Tensor& src) override {
    constexpr const char* kOp = "readback";
    if (src.device() != device_ || !src.is_contiguous() || src.nbytes() > max_bytes_)
      invalid("[{}] {} must be contiguous, on {} and at most {} bytes", kOp, src.describe(), device_name(device_), max_bytes_);
    MLXCEL_CUDA_CALL(kOp, cuda::readback_start(*r_, src.raw(), size_t(src.nbytes())));
    shape_ = src.shape(), dtype_ = src.dtype();
  }
  Tensor wait() override {
    constexpr const char* kOp = "readback";
    const void* p = nullptr;
    MLXCEL_CUDA_CALL(kOp, p = cuda::readback_wait(*r_));
    Tensor out = Tensor::empty(shape_, dtype_);
    std::memcpy(out.raw(), p, size_t(out.nbytes()));
    return out;
  }

 private:
  Device device_;
  std::shared_ptr<cuda::Readback> r_;
  int64_t max_bytes_;
  Shape shape_;
  DType dtype_ = DType::u8;
};
#endif
}  // namespace

std::unique_ptr<Readback> make_readback(Device device, int64_t max_bytes) {
  if (max_bytes < 0) invalid("[readback] max_bytes must be >= 0, got {}", max_bytes);
  if (device.type == DeviceType::cpu) return std::make_unique<HostReadback>(max_bytes);
#ifdef MLXCEL_WITH_CUDA
  return std::make_unique<CudaReadback>(device, max_bytes);
#else
  no_cuda("readback");
#endif
}

bool cuda_built() {
#ifdef MLXCEL_WITH_CUDA
  return true;
#else
  return false;
#endif
}

const char* cpu_kernel_isa() {
  if (cpu::bf16_products()) return "avx512 + bf16";
  return cpu::isa_name(cpu::isa());
}

int cuda_device_count() {
#ifdef MLXCEL_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

Tensor zeros(const Shape& shape, DType dtype, Device device) {
  constexpr const char* kOp = "zeros";
  check_backend(kOp, device);
  switch (device.type) {
    case DeviceType::cpu: return Tensor::zeros(shape, dtype, device);
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, return cuda::zeros(shape, dtype, device));
  }
  no_cuda(kOp);
}

Tensor take_rows(const Tensor& x, const Tensor& idx) {
  constexpr const char* kOp = "take_rows";
  check_defined(kOp, x, "x");
  check_defined(kOp, idx, "idx");
  if (x.ndim() != 2) invalid("[{}] x must be [R, D], got {}", kOp, x.describe());
  if (idx.ndim() != 1) invalid("[{}] idx must be i32 [n], got {}", kOp, idx.describe());
  check_dtype(kOp, idx, "idx", {DType::i32});
  check_same_device(kOp, x, idx, "idx");
  check_backend(kOp, x.device());
  Tensor xc = contiguous_input(x), ic = contiguous_input(idx);
  const int64_t n = ic.dim(0), R = xc.dim(0);
  Tensor out = Tensor::empty({n, xc.dim(1)}, x.dtype(), x.device());
  switch (x.device().type) {
    case DeviceType::cpu: {
      const int32_t* ip = ic.data<int32_t>();
      for (int64_t i = 0; i < n; ++i) {
        if (ip[i] < 0 || ip[i] >= R) invalid("[{}] index {} at position {} is outside [0, {})", kOp, ip[i], i, R);
      }
      cpu::gather_rows(xc, ip, n, out);
      break;
    }
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::gather_rows(xc, ic.data<int32_t>(), n, out)); break;
  }
  return out;
}

Tensor slice_last(const Tensor& x, int64_t begin, int64_t end) {
  constexpr const char* kOp = "slice_last";
  check_defined(kOp, x, "x");
  check_ndim_at_least(kOp, x, "x", 1);
  const int64_t D = x.dim(-1);
  if (begin < 0 || end < begin || end > D) invalid("[{}] [{}, {}) is outside the last dimension of {}", kOp, begin, end, x.describe());
  check_backend(kOp, x.device());
  Tensor xc = contiguous_input(x);
  Shape shape = x.shape();
  shape.back() = end - begin;
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  switch (x.device().type) {
    case DeviceType::cpu: cpu::slice_last(xc, begin, end, out); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::slice_last(xc, begin, end, out)); break;
  }
  return out;
}

}  // namespace mlxcel::ops
