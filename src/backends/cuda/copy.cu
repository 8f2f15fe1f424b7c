// Copies and conversions: strided copy, dtype conversion, row gathers, column slices.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace mlxcel::cuda {

namespace {

constexpr int kMaxDims = 8;
struct StridedLayout {
  int ndim;
  int64_t shape[kMaxDims];
  int64_t strides[kMaxDims];  // elements
};

template <typename E>
__global__ void strided_copy_kernel(const E* __restrict__ src, E* __restrict__ dst, int64_t n, StridedLayout L) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, off = 0;
    for (int d = L.ndim - 1; d >= 0; --d) {
      const int64_t c = rem % L.shape[d];
      rem /= L.shape[d];
      off += c * L.strides[d];
    }
    dst[i] = src[off];
  }
}

template <typename S, typename D>
__global__ void convert_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_f<D>(to_f(src[i]));
}
template <typename D>
__global__ void convert_i32_kernel(const int32_t* __restrict__ src, D* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_f<D>(float(src[i]));
}

// Row gather; a bad index is reported through *bad (lowest position wins) and its row
// is left unwritten. E is the element type of the copy; Out widens to f32 when set.
template <typename E, typename O>
__global__ void gather_kernel(const E* __restrict__ x, const int32_t* __restrict__ idx, int64_t n, int64_t R,
                              int64_t D, O* __restrict__ out, int* bad) {
  pdl_enter();
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const int32_t row = idx[r];
    if (row < 0 || row >= R) {
      if (threadIdx.x == 0 && bad) atomicMin(bad, int(r));
      continue;
    }
    const E* src = x + int64_t(row) * D;
    O* dst = out + r * D;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      if constexpr (std::is_same_v<E, O>) dst[i] = src[i];
      else dst[i] = from_f<O>(to_f(src[i]));
    }
  }
}

template <typename E>
__global__ void slice_last_kernel(const E* __restrict__ x, int64_t rows, int64_t D, int64_t begin, int64_t w,
                                  E* __restrict__ out) {
  const int64_t n = rows * w;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / w, c = i % w;
    out[i] = x[r * D + begin + c];
  }
}

template <typename F>
void by_size(size_t es, F&& f) {
  switch (es) {
    case 1: f(uint8_t{}); break;
    case 2: f(uint16_t{}); break;
    case 4: f(uint32_t{}); break;
    case 8: f(uint64_t{}); break;
    default: throw_internal("element size " + std::to_string(es));
  }
}

template <typename F>
void by_float(DType dt, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); break;
    case DType::f16: f(f16{}); break;
    case DType::bf16: f(bf16{}); break;
    default: throw_internal(std::string("dtype is not a float type: ") + dtype_name(dt));
  }
}

// Runs a gather that may flag a bad index, then throws if it did.
template <typename Launcher>
void checked_gather(const char* what, int64_t n, int64_t R, cudaStream_t st, Launcher&& launch) {
  if (capturing(current_device())) {  // no waiting inside a graph capture: unchecked
    launch(static_cast<int*>(nullptr));
    MLXCEL_CUDA_LAUNCH_CHECK();
    return;
  }
  int* bad = static_cast<int*>(scratch(sizeof(int), 3));
  const int init = INT32_MAX;
  MLXCEL_CUDA_CHECK(cudaMemcpyAsync(bad, &init, sizeof(int), cudaMemcpyHostToDevice, st));
  launch(bad);
  MLXCEL_CUDA_LAUNCH_CHECK();
  int host_bad = INT32_MAX;
  MLXCEL_CUDA_CHECK(cudaMemcpyAsync(&host_bad, bad, sizeof(int), cudaMemcpyDeviceToHost, st));
  MLXCEL_CUDA_CHECK(cudaStreamSynchronize(st));
  if (host_bad != INT32_MAX)
    throw_invalid(std::string("[") + what + "] index at position " + std::to_string(host_bad) + " is outside [0, " +
                  std::to_string(R) + ")");
}

// out[p][r, c - off_p] = y[r, c] for the part p whose columns [off_p, off_p + n_p) hold c;
// `vec` elements (of size E) at a time (every part's width a multiple of vec).
struct SplitParts {
  void* out[kMaxSplitParts];
  int64_t off[kMaxSplitParts + 1];
  int n;
};

template <typename E>
__global__ void split_columns_kernel(const E* __restrict__ y, int64_t rows, int64_t cols, SplitParts P) {
  pdl_enter();
  const int64_t n = rows * cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    int p = 0;
    while (p + 1 < P.n && c >= P.off[p + 1]) ++p;
    const int64_t w = P.off[p + 1] - P.off[p];
    static_cast<E*>(P.out[p])[r * w + (c - P.off[p])] = y[i];
  }
}

}  // namespace

void split_columns(const Tensor& y, std::vector<Tensor>& outs) {
  init();
  MLXCEL_CUDA_REQUIRE(!outs.empty() && int(outs.size()) <= kMaxSplitParts && y.ndim() == 2 && y.is_contiguous(),
                      "split_columns: y [rows, cols] and 1-4 outputs");
  const int64_t rows = y.dim(0), cols = y.dim(1);
  SplitParts P{};
  P.n = int(outs.size());
  int64_t vec = 16 / int64_t(dtype_size(y.dtype()));
  for (int i = 0; i < P.n; ++i) {
    P.out[i] = outs[size_t(i)].raw();
    P.off[i + 1] = P.off[i] + outs[size_t(i)].dim(-1);
    while (vec > 1 && (outs[size_t(i)].dim(-1) % vec || reinterpret_cast<uintptr_t>(P.out[i]) % 16)) vec /= 2;
  }
  MLXCEL_CUDA_REQUIRE(P.off[P.n] == cols, "split_columns: the parts' widths must add up to y's");
  if (reinterpret_cast<uintptr_t>(y.raw()) % 16) vec = 1;
  if (rows * cols == 0) return;
  Launch l(y);
  const int64_t esize = int64_t(dtype_size(y.dtype())) * vec;
  for (int i = 0; i <= P.n; ++i) P.off[i] /= vec;
  const int64_t n = rows * (cols / vec);
  auto go = [&](auto tag) {
    using E = decltype(tag);
    launch_pdl(split_columns_kernel<E>, grid_for(n, 256), 256, 0, l.stream, static_cast<const E*>(y.raw()), rows, cols / vec, P);
  };
  switch (esize) {
    case 16: go(uint4{}); break;
    case 8: go(uint2{}); break;
    case 4: go(uint32_t{}); break;
    case 2: go(uint16_t{}); break;
    default: go(uint8_t{}); break;
  }
  MLXCEL_CUDA_LAUNCH_CHECK();
}

void copy_strided(const Tensor& src, Tensor& dst) {
  init();
  if (src.numel() == 0) return;
  Launch l(dst);
  if (src.ndim() > kMaxDims) throw_unsupported("[contiguous] more than 8 dimensions on CUDA");
  if (src.is_contiguous()) {
    MLXCEL_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, l.stream));
    return;
  }
  StridedLayout L{};
  L.ndim = src.ndim();
  for (int d = 0; d < L.ndim; ++d) {
    L.shape[d] = src.shape()[size_t(d)];
    L.strides[d] = src.strides()[size_t(d)];
  }
  const int64_t n = src.numel();
  by_size(dtype_size(src.dtype()), [&](auto e) {
    using E = decltype(e);
    strided_copy_kernel<E><<<grid_for(n, 256), 256, 0, l.stream>>>(static_cast<const E*>(src.raw()),
                                                                    static_cast<E*>(dst.raw()), n, L);
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
}

void convert(const Tensor& src, Tensor& dst) {
  init();
  const int64_t n = src.numel();
  if (n == 0) return;
  Launch l(dst);
  if (src.dtype() == dst.dtype()) {
    MLXCEL_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, l.stream));
    return;
  }
  by_float(dst.dtype(), [&](auto d) {
    using D = decltype(d);
    if (src.dtype() == DType::i32) {
      convert_i32_kernel<D><<<grid_for(n, 256), 256, 0, l.stream>>>(src.data<int32_t>(), static_cast<D*>(dst.raw()), n);
      return;
    }
    by_float(src.dtype(), [&](auto s) {
      using S = decltype(s);
      convert_kernel<S, D><<<grid_for(n, 256), 256, 0, l.stream>>>(static_cast<const S*>(src.raw()),
                                                                   static_cast<D*>(dst.raw()), n);
    });
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
}

void gather_rows(const Tensor& x, const int32_t* idx, int64_t n, Tensor& out) {
  init();
  if (n == 0) return;
  Launch l(out);
  const int64_t R = x.dim(0), D = x.dim(1);
  const unsigned grid = unsigned(n < 65535 ? n : 65535);
  checked_gather("take_rows", n, R, l.stream, [&](int* bad) {
    by_size(dtype_size(x.dtype()), [&](auto e) {
      using E = decltype(e);
      launch_pdl(gather_kernel<E, E>, grid, 128, 0, l.stream, static_cast<const E*>(x.raw()), idx, n, R, D,
                                                      static_cast<E*>(out.raw()), bad);
    });
  });
}

void gather_rows_f32(const Tensor& table, const int32_t* idx, int64_t n, Tensor& out) {
  init();
  if (n == 0) return;
  Launch l(out);
  const int64_t R = table.dim(0), D = table.dim(1);
  const unsigned grid = unsigned(n < 65535 ? n : 65535);
  checked_gather("embedding", n, R, l.stream, [&](int* bad) {
    by_float(table.dtype(), [&](auto e) {
      using E = decltype(e);
      launch_pdl(gather_kernel<E, float>, grid, 128, 0, l.stream, static_cast<const E*>(table.raw()), idx, n, R, D,
                                                          out.data<float>(), bad);
    });
  });
}

void slice_last(const Tensor& x, int64_t begin, int64_t end, Tensor& out) {
  init();
  const int64_t D = x.dim(-1), w = end - begin;
  const int64_t rows = D ? x.numel() / D : 0;
  if (rows * w == 0) return;
  Launch l(out);
  by_size(dtype_size(x.dtype()), [&](auto e) {
    using E = decltype(e);
    slice_last_kernel<E><<<grid_for(rows * w, 256), 256, 0, l.stream>>>(static_cast<const E*>(x.raw()), rows, D,
                                                                        begin, w, static_cast<E*>(out.raw()));
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
}

Tensor zeros(const Shape& shape, DType dtype, Device device) {
  init();
  DeviceGuard g(device.index);
  Tensor t = Tensor::empty(shape, dtype, device);
  fill_zero(t);
  return t;
}

void fill_zero(Tensor& out) {
  init();
  if (out.nbytes() == 0) return;
  Launch l(out);
  MLXCEL_CUDA_CHECK(cudaMemsetAsync(out.raw(), 0, out.nbytes(), l.stream));
}

}  // namespace mlxcel::cuda
