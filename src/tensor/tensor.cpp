#include "tensor/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <fmt/format.h>

#include "base/error.h"
#include "base/half.h"

namespace mlxcel {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

namespace {

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (int i = int(shape.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

std::mutex g_alloc_mu;
// glibc's malloc serves blocks from 128 KB up (raised to a freed block's size, at most 32 MB)
// with mmap, and gives the top of its heap back beyond twice that: a prompt's activations
// (MBs each, made and freed by every op) were mapped, zeroed page by page and unmapped
// again, about 7% of an MLX q4 Qwen3-0.6B pp512 in the kernel's page-fault paths. Blocks
// up to 64 MB now stay in the heap and up to 512 MB of freed heap is kept for reuse.
// Set once, when the program starts (not on every allocation).
const bool g_malloc_tuned = [] {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
  return true;
}();

Allocator g_allocators[2] = {
    {[](size_t n) -> void* {
       // 64-byte alignment for AVX-512 loads; size rounded up as aligned_alloc requires.
       void* p = std::aligned_alloc(64, (n + 63) / 64 * 64);
       if (!p) throw Error(ErrorKind::resource_exhausted, fmt::format("out of host memory ({} bytes)", n));
       return p;
     },
     [](void* p) { std::free(p); }},
    {},
};

void check_shape(const Shape& shape) {
  for (auto d : shape) {
    if (d < 0) invalid("negative dimension in shape {}", shape_str(shape));
  }
}

}  // namespace

void register_allocator(DeviceType type, Allocator a) {
  std::lock_guard<std::mutex> lk(g_alloc_mu);
  g_allocators[int(type)] = std::move(a);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  check_shape(shape);
  Allocator a;
  {
    std::lock_guard<std::mutex> lk(g_alloc_mu);
    a = g_allocators[int(device.type)];
  }
  if (!a.alloc) unsupported("no allocator for device {} (backend not built?)", device_name(device));
  size_t nbytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  auto st = std::make_shared<Storage>();
  st->data = a.alloc(nbytes == 0 ? 1 : nbytes);
  st->nbytes = nbytes;
  st->device = device;
  st->keepalive = std::shared_ptr<void>(st->data, a.free);
  Tensor t;
  t.storage_ = std::move(st);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  if (device.type != DeviceType::cpu) unsupported("Tensor::zeros on {}: use ops::zeros", device_name(device));
  Tensor t = empty(shape, dtype, device);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::from_f32(const Shape& shape, const std::vector<float>& values) {
  if (int64_t(values.size()) != shape_numel(shape))
    invalid("from_f32: {} values for shape {}", values.size(), shape_str(shape));
  Tensor t = empty(shape, DType::f32);
  std::memcpy(t.raw(), values.data(), values.size() * 4);
  return t;
}

Tensor Tensor::from_i32(const Shape& shape, const std::vector<int32_t>& values) {
  if (int64_t(values.size()) != shape_numel(shape))
    invalid("from_i32: {} values for shape {}", values.size(), shape_str(shape));
  Tensor t = empty(shape, DType::i32);
  std::memcpy(t.raw(), values.data(), values.size() * 4);
  return t;
}

Tensor Tensor::view_of(const void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner,
                       Device device) {
  check_shape(shape);
  auto st = std::make_shared<Storage>();
  st->data = const_cast<void*>(data);
  st->nbytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  st->device = device;
  st->keepalive = std::move(owner);
  Tensor t;
  t.storage_ = std::move(st);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  if (i < 0) i += n;
  if (i < 0 || i >= n) invalid("dim {} out of range for {}", i, describe());
  return shape_[i];
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0) invalid("reshape: more than one -1 in {}", shape_str(shape));
      infer = int(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) s[infer] = known == 0 ? 0 : numel() / known;
  if (shape_numel(s) != numel()) invalid("reshape: {} cannot become {}", describe(), shape_str(shape));
  if (!is_contiguous()) invalid("reshape: {} is not contiguous", describe());
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::slice(int d, int64_t begin, int64_t end) const {
  if (d < 0) d += ndim();
  if (d < 0 || d >= ndim()) invalid("slice: dim {} out of range for {}", d, describe());
  if (begin < 0 || end < begin || end > shape_[d])
    invalid("slice: [{}, {}) out of range for dim {} of {}", begin, end, d, describe());
  Tensor t = *this;
  t.offset_ += size_t(begin * strides_[d]) * dtype_size(dtype_);
  t.shape_[d] = end - begin;
  return t;
}

Tensor Tensor::adjacent_rows(const std::vector<Tensor>& parts) {
  if (parts.empty()) return Tensor();
  const Tensor& first = parts[0];
  if (!first.defined() || first.ndim() < 1 || !first.is_contiguous()) return Tensor();
  Tensor out = first;
  for (size_t i = 1; i < parts.size(); ++i) {
    const Tensor& p = parts[i];
    if (!p.defined() || p.storage_ != first.storage_ || p.dtype_ != first.dtype_ || p.ndim() != first.ndim() ||
        !p.is_contiguous() || !std::equal(p.shape_.begin() + 1, p.shape_.end(), first.shape_.begin() + 1) ||
        p.offset_ != out.offset_ + out.nbytes())
      return Tensor();
    out.shape_[0] += p.shape_[0];
  }
  return out;
}

Tensor Tensor::select(int64_t index) const {
  if (ndim() == 0) invalid("select on a scalar");
  Tensor t = slice(0, index, index + 1);
  t.shape_.erase(t.shape_.begin());
  t.strides_.erase(t.strides_.begin());
  return t;
}

Tensor Tensor::clone() const {
  if (device().type != DeviceType::cpu) unsupported("Tensor::clone on {}: use ops::contiguous", device_name(device()));
  Tensor out = empty(shape_, dtype_);
  size_t es = dtype_size(dtype_);
  if (is_contiguous()) {
    std::memcpy(out.raw(), raw(), nbytes());
    return out;
  }
  // Generic strided copy, element by element.
  int64_t n = numel();
  int nd = ndim();
  std::vector<int64_t> idx(nd, 0);
  const char* src = static_cast<const char*>(raw());
  char* dst = static_cast<char*>(out.raw());
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (int k = 0; k < nd; ++k) off += idx[k] * strides_[k];
    std::memcpy(dst + i * es, src + off * es, es);
    for (int k = nd - 1; k >= 0; --k) {
      if (++idx[k] < shape_[k]) break;
      idx[k] = 0;
    }
  }
  return out;
}

std::vector<float> Tensor::to_f32_vector() const {
  if (device().type != DeviceType::cpu) unsupported("to_f32_vector on {}", device_name(device()));
  Tensor c = is_contiguous() ? *this : clone();
  int64_t n = numel();
  std::vector<float> out(n);
  switch (dtype_) {
    case DType::f32: std::memcpy(out.data(), c.raw(), n * 4); break;
    case DType::f16: for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(c.data<uint16_t>()[i]); break;
    case DType::bf16: for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(c.data<uint16_t>()[i]); break;
    case DType::i32: for (int64_t i = 0; i < n; ++i) out[i] = float(c.data<int32_t>()[i]); break;
    default: unsupported("to_f32_vector: dtype {}", dtype_name(dtype_));
  }
  return out;
}

std::string Tensor::describe() const {
  if (!defined()) return "<undefined tensor>";
  return fmt::format("{}{} {}", dtype_name(dtype_), shape_str(shape_), device_name(device()));
}

}  // namespace mlxcel
