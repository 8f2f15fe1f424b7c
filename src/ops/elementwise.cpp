// Elementwise ops, activations, softcap, softmax, argmax.
#include <string>

#include "backends/cpu/kernels.h"
#include "backends/cuda/dispatch.h"
#include "ops/ops.h"
#include "ops/ops_internal.h"

namespace mlxcel::ops {

using namespace detail;

static_assert(int(Activation::silu) == int(cpu::Act::silu) && int(Activation::relu2) == int(cpu::Act::relu2) &&
              int(Activation::gelu_tanh) == int(cpu::Act::gelu_tanh) &&
              int(Activation::gelu_erf) == int(cpu::Act::gelu_erf) && int(Activation::relu) == int(cpu::Act::relu));

namespace {

void check_activation_input(const char* op, const Tensor& x, const char* name) {
  check_defined(op, x, name);
  check_dtype(op, x, name, {DType::f32});
}

// a and b must match, or b [D] broadcasts over the rows of a [..., D].
void check_broadcast(const char* op, const Tensor& a, const Tensor& b) {
  if (b.shape() == a.shape()) return;
  if (b.ndim() == 1 && a.ndim() >= 1 && b.dim(0) == a.dim(-1)) return;
  invalid("[{}] b must have a's shape or be [D] with D = a's last dimension; a is {}, b is {}", op, a.describe(),
          b.describe());
}

Tensor binary_op(const char* op, const Tensor& a, const Tensor& b, cpu::BinaryOp kind) {
  check_activation_input(op, a, "a");
  check_defined(op, b, "b");
  check_float(op, b, "b");
  check_same_device(op, a, b, "b");
  check_broadcast(op, a, b);
  check_backend(op, a.device());
  Tensor ac = contiguous_input(a), bc = contiguous_input(b);
  Tensor out = Tensor::empty(a.shape(), DType::f32, a.device());
  switch (a.device().type) {
    case DeviceType::cpu: cpu::binary(ac, bc, kind, out); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(op, cuda::binary(ac, bc, kind, out)); break;
  }
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_op("add", a, b, cpu::BinaryOp::add); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op("mul", a, b, cpu::BinaryOp::mul); }

void add_(Tensor& a, const Tensor& b) {
  constexpr const char* kOp = "add_";
  check_activation_input(kOp, a, "a");
  check_defined(kOp, b, "b");
  check_float(kOp, b, "b");
  check_same_device(kOp, a, b, "b");
  if (a.shape() != b.shape()) invalid("[{}] shapes differ: a is {}, b is {}", kOp, a.describe(), b.describe());
  if (!a.is_contiguous()) invalid("[{}] a must be contiguous (it is written in place), got {}", kOp, a.describe());
  check_backend(kOp, a.device());
  Tensor bc = contiguous_input(b);
  switch (a.device().type) {
    case DeviceType::cpu: cpu::binary(a, bc, cpu::BinaryOp::add, a); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::binary(a, bc, cpu::BinaryOp::add, a)); break;
  }
}

Tensor scale(const Tensor& x, float s) {
  constexpr const char* kOp = "scale";
  check_activation_input(kOp, x, "x");
  check_backend(kOp, x.device());
  Tensor xc = contiguous_input(x);
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu: cpu::scale(xc, s, out); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::scale(xc, s, out)); break;
  }
  return out;
}

Activation parse_activation(const std::string& name) {
  // NOTE: names from transformers' ACT2FN. gelu_new, gelu_fast, gelu_accurate and
  // gelu_pytorch_tanh are all the tanh approximation; plain "gelu" is the erf form.
  static const struct {
    const char* name;
    Activation act;
  } table[] = {
      {"silu", Activation::silu},
      {"swish", Activation::silu},
      {"gelu", Activation::gelu_erf},
      {"gelu_python", Activation::gelu_erf},
      {"gelu_new", Activation::gelu_tanh},
      {"gelu_pytorch_tanh", Activation::gelu_tanh},
      {"gelu_fast", Activation::gelu_tanh},
      {"gelu_accurate", Activation::gelu_tanh},
      {"gelu_tanh", Activation::gelu_tanh},
      {"relu", Activation::relu},
      {"relu2", Activation::relu2},
      {"relu_squared", Activation::relu2},
  };
  for (const auto& e : table) {
    if (name == e.name) return e.act;
  }
  unsupported("[parse_activation] unsupported activation '{}'", name);
}

Tensor activate(const Tensor& x, Activation act) {
  constexpr const char* kOp = "activate";
  check_activation_input(kOp, x, "x");
  check_backend(kOp, x.device());
  Tensor xc = contiguous_input(x);
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu: cpu::activate(xc, cpu::Act(act), out); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::activate(xc, cpu::Act(act), out)); break;
  }
  return out;
}

Tensor gated(const Tensor& gate, const Tensor& up, Activation act, DType out_dtype) {
  constexpr const char* kOp = "gated";
  if (out_dtype != DType::f32 && out_dtype != DType::bf16)
    invalid("[{}] out_dtype must be f32 or bf16, got {}", kOp, dtype_name(out_dtype));
  check_activation_input(kOp, gate, "gate");
  check_activation_input(kOp, up, "up");
  check_same_device(kOp, gate, up, "up");
  if (gate.shape() != up.shape())
    invalid("[{}] gate and up differ in shape: {} vs {}", kOp, gate.describe(), up.describe());
  check_backend(kOp, gate.device());
  Tensor gc = contiguous_input(gate), uc = contiguous_input(up);
  if (gate.device().type == DeviceType::cuda) {
    Tensor out = Tensor::empty(gate.shape(), out_dtype, gate.device());
    MLXCEL_CUDA_CALL(kOp, cuda::gated(gc, uc, cpu::Act(act), out));
    return out;
  }
  Tensor out = Tensor::empty(gate.shape(), DType::f32, gate.device());
  cpu::gated(gc, uc, cpu::Act(act), out);
  return out_dtype == DType::f32 ? out : astype(out, out_dtype);
}

Tensor softcap(const Tensor& x, float cap) {
  constexpr const char* kOp = "softcap";
  check_activation_input(kOp, x, "x");
  if (!(cap > 0.0f)) invalid("[{}] cap must be positive, got {}", kOp, cap);
  check_backend(kOp, x.device());
  Tensor xc = contiguous_input(x);
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu: cpu::softcap(xc, cap, out); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::softcap(xc, cap, out)); break;
  }
  return out;
}

Tensor softmax(const Tensor& x) {
  constexpr const char* kOp = "softmax";
  check_activation_input(kOp, x, "x");
  check_ndim_at_least(kOp, x, "x", 1);
  check_backend(kOp, x.device());
  Tensor xc = contiguous_input(x);
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu: cpu::softmax(xc, out); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::softmax(xc, out)); break;
  }
  return out;
}

Tensor argmax(const Tensor& x) {
  constexpr const char* kOp = "argmax";
  check_defined(kOp, x, "x");
  check_float(kOp, x, "x");
  check_ndim_at_least(kOp, x, "x", 1);
  if (x.dim(-1) == 0) invalid("[{}] the last dimension of {} is empty", kOp, x.describe());
  check_backend(kOp, x.device());
  Tensor xc = contiguous_input(x);
  Shape shape(x.shape().begin(), x.shape().end() - 1);
  Tensor out = Tensor::empty(shape, DType::i32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu: cpu::argmax(xc, out); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::argmax(xc, out)); break;
  }
  return out;
}

}  // namespace mlxcel::ops
