// Tensor: a shape, row-major strides (in elements), a dtype and a shared Storage
// (an owned device buffer, or a zero-copy view into an mmapped checkpoint).
// Copying a Tensor is cheap and shares the storage. No autograd.
//
//   Tensor x = Tensor::empty({4, 128}, DType::f32);          // on the CPU
//   float* p = x.data<float>();
//   Tensor row = x.slice(0, 1, 2);                            // view of row 1
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "tensor/dtype.h"

namespace mlxcel {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);

// A block of bytes on one device. `keepalive` holds whatever owns the bytes
// (a MappedFile, a device allocation); the destructor releases it.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  std::shared_ptr<void> keepalive;
};

// Per-device allocation hooks. The CPU allocator is built in; the CUDA backend
// registers its own at start-up (tensor/ never includes a backend).
struct Allocator {
  std::function<void*(size_t)> alloc;
  std::function<void(void*)> free;
};
void register_allocator(DeviceType type, Allocator a);

class Tensor {
 public:
  Tensor() = default;  // an empty ("undefined") tensor

  // New contiguous tensor; contents uninitialized.
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  // CPU tensor holding a copy of `values`.
  static Tensor from_f32(const Shape& shape, const std::vector<float>& values);
  static Tensor from_i32(const Shape& shape, const std::vector<int32_t>& values);
  // View of external bytes kept alive by `owner` (e.g. a MappedFile). No copy.
  static Tensor view_of(const void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner,
                        Device device = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim(int i) const;  // negative i counts from the end
  int ndim() const { return int(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::cpu(); }
  bool is_contiguous() const;

  // Raw pointers to the first element. Host access is only valid for CPU tensors.
  void* raw() const { return static_cast<char*>(storage_->data) + offset_; }
  template <typename T>
  T* data() const { return static_cast<T*>(raw()); }

  // Views (no copy). reshape needs a contiguous tensor.
  Tensor reshape(const Shape& shape) const;
  Tensor slice(int dim, int64_t begin, int64_t end) const;  // [begin, end) along dim
  Tensor select(int64_t index) const;                        // drop dim 0

  // `parts` (contiguous, one dtype, the same trailing dimensions) when they lie end to
  // end in one storage, as one view concatenated along dim 0; else an undefined tensor.
  static Tensor adjacent_rows(const std::vector<Tensor>& parts);

  // Deep copy (contiguous) on the same device. CPU only here; ops::contiguous is device-generic.
  Tensor clone() const;
  std::vector<float> to_f32_vector() const;  // CPU tensor of f32/f16/bf16 -> host floats

  std::string describe() const;  // "f32[2, 3] cpu"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  Shape shape_, strides_;
  DType dtype_ = DType::f32;
};

}  // namespace mlxcel
