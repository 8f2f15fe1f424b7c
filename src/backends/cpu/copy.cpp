// Copies and dtype conversions.
#include <cstring>

#include "backends/cpu/kernels.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/simd.h"
#include "base/error.h"

// One build per ISA level (isa.h); dispatch.cpp defines the public mlxcel::cpu functions.
namespace mlxcel::cpu::MLXCEL_CPU_NS {

void copy_strided(const Tensor& src, Tensor& dst) {
  const size_t es = dtype_size(src.dtype());
  if (src.is_contiguous()) {
    const char* s = static_cast<const char*>(src.raw());
    char* d = static_cast<char*>(dst.raw());
    int64_t nbytes = int64_t(src.nbytes());
    parallel_for(nbytes, 1, [&](int64_t b, int64_t e) { std::memcpy(d + b, s + b, size_t(e - b)); });
    return;
  }
  const int nd = src.ndim();
  const Shape& shape = src.shape();
  const Shape& st = src.strides();
  const int64_t inner = nd ? shape[nd - 1] : 1;
  const int64_t inner_stride = nd ? st[nd - 1] : 1;
  const int64_t rows = inner ? src.numel() / inner : 0;
  const char* s = static_cast<const char*>(src.raw());
  char* d = static_cast<char*>(dst.raw());
  parallel_for(rows, inner, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      // Offset of row r: unravel r over the leading dims.
      int64_t off = 0, rem = r;
      for (int k = nd - 2; k >= 0; --k) {
        off += (rem % shape[k]) * st[k];
        rem /= shape[k];
      }
      const char* sp = s + off * int64_t(es);
      char* dp = d + r * inner * int64_t(es);
      if (inner_stride == 1) {
        std::memcpy(dp, sp, size_t(inner) * es);
      } else {
        for (int64_t i = 0; i < inner; ++i) std::memcpy(dp + i * int64_t(es), sp + i * inner_stride * int64_t(es), es);
      }
    }
  });
}

namespace {

template <typename S, typename D>
void convert_typed(const S* s, D* d, int64_t n) {
  parallel_for(n, 2, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) d[i] = from_f32<D>(to_f32(s[i]));
  });
}

template <typename S>
void convert_from(const S* s, const Tensor& dst, int64_t n) {
  switch (dst.dtype()) {
    case DType::f32: convert_typed(s, dst.data<float>(), n); break;
    case DType::f16: convert_typed(s, dst.data<f16_t>(), n); break;
    case DType::bf16: convert_typed(s, dst.data<bf16_t>(), n); break;
    default: MLXCEL_CHECK(false, "convert to {}", dtype_name(dst.dtype()));
  }
}

}  // namespace

void convert(const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  switch (src.dtype()) {
    case DType::f32: convert_from(src.data<float>(), dst, n); break;
    case DType::f16: convert_from(src.data<f16_t>(), dst, n); break;
    case DType::bf16: convert_from(src.data<bf16_t>(), dst, n); break;
    case DType::i32: {
      MLXCEL_CHECK(dst.dtype() == DType::f32, "i32 converts to f32 only");
      const int32_t* s = src.data<int32_t>();
      float* d = dst.data<float>();
      parallel_for(n, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) d[i] = float(s[i]);
      });
      break;
    }
    default: MLXCEL_CHECK(false, "convert from {}", dtype_name(src.dtype()));
  }
}

void gather_rows(const Tensor& x, const int32_t* idx, int64_t n, Tensor& out) {
  const int64_t row_bytes = x.ndim() ? x.dim(-1) * int64_t(dtype_size(x.dtype())) : 0;
  const char* s = static_cast<const char*>(x.raw());
  char* d = static_cast<char*>(out.raw());
  parallel_for(n, row_bytes / 4 + 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) std::memcpy(d + i * row_bytes, s + int64_t(idx[i]) * row_bytes, size_t(row_bytes));
  });
}

namespace {
template <typename T>
void gather_f32_typed(const T* table, int64_t D, const int32_t* idx, int64_t n, float* out) {
  parallel_for(n, D, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T* row = table + int64_t(idx[i]) * D;
      float* o = out + i * D;
      for (int64_t k = 0; k < D; ++k) o[k] = to_f32(row[k]);
    }
  });
}
}  // namespace

void gather_rows_f32(const Tensor& table, const int32_t* idx, int64_t n, Tensor& out) {
  const int64_t D = table.dim(-1);
  float* o = out.data<float>();
  switch (table.dtype()) {
    case DType::f32: gather_f32_typed(table.data<float>(), D, idx, n, o); break;
    case DType::f16: gather_f32_typed(table.data<f16_t>(), D, idx, n, o); break;
    case DType::bf16: gather_f32_typed(table.data<bf16_t>(), D, idx, n, o); break;
    default: MLXCEL_CHECK(false, "gather_rows_f32 from {}", dtype_name(table.dtype()));
  }
}

void slice_last(const Tensor& x, int64_t begin, int64_t end, Tensor& out) {
  const int64_t D = x.dim(-1);
  const int64_t es = int64_t(dtype_size(x.dtype()));
  const int64_t w = (end - begin) * es;
  const int64_t rows = D ? x.numel() / D : 0;
  const char* s = static_cast<const char*>(x.raw());
  char* d = static_cast<char*>(out.raw());
  parallel_for(rows, w / 4 + 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) std::memcpy(d + r * w, s + (r * D + begin) * es, size_t(w));
  });
}

}  // namespace mlxcel::cpu::MLXCEL_CPU_NS
