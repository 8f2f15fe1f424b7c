// The op API that models call. Every op validates its inputs (errors are tagged
// with the op: "[rms_norm] ..."), allocates its output on the input's device and
// dispatches to that device's backend (backends/cpu, backends/cuda). Model code
// never names a device.
//
// Conventions: activations are row-major and contiguous; "rows" are all leading
// dimensions flattened, the last dimension is the feature dimension. Activations
// are f32 on the CPU; weights may be f32, f16 or bf16. Outputs have the
// activation's dtype unless stated.
#pragma once

#include <functional>
#include <memory>

#include <cstdint>

#include "ops/attention.h"
#include "ops/fused.h"
#include "ops/quant.h"
#include "ops/rope.h"
#include "tensor/tensor.h"

namespace mlxcel::ops {

// ---- copies and conversions -------------------------------------------------
Tensor contiguous(const Tensor& x);                 // copy if x is a strided view
Tensor astype(const Tensor& x, DType dtype);        // f32 <-> f16 <-> bf16, i32 -> f32
Tensor to_device(const Tensor& x, Device device);
// dst = src in place: same shape and dtype, same device, dst contiguous (e.g. a slice
// along dim 0 of a contiguous tensor).
void copy_(Tensor& dst, const Tensor& src);
// dst (a contiguous device tensor) = src (a host tensor of the same dtype and numel),
// queued on dst's device (CUDA).
void copy_from_host(Tensor& dst, const Tensor& src);
// A recorded fixed-shape step (CUDA graph): capture_graph runs `fn` while recording the
// work it queues on `device` (nothing inside may wait for the device; gathers skip their
// index check), and launch() replays that work with the same buffers. CUDA only.
class DeviceGraph {
 public:
  virtual ~DeviceGraph() = default;
  virtual void launch() = 0;
  // The device's scratch buffers moved since the recording: record again before launching.
  virtual bool stale() const = 0;
};
std::unique_ptr<DeviceGraph> capture_graph(Device device, const std::function<void()>& fn);
// A copy of a small tensor to the host that is queued now and waited for later: a decode
// loop queues the copy of a step's token ids, then the next step behind it, and only then
// waits for the ids (so the device never waits for the host between steps). On CUDA the
// copy goes through pinned memory and an event; on the CPU start() copies at once.
class Readback {
 public:
  virtual ~Readback() = default;
  // src: contiguous, on the device the readback was made for, at most max_bytes.
  virtual void start(const Tensor& src) = 0;
  // The host copy of the last start()'s tensor (waits for it).
  virtual Tensor wait() = 0;
};
std::unique_ptr<Readback> make_readback(Device device, int64_t max_bytes);
// Whether this build has the CUDA backend, and how many CUDA GPUs it sees (0 without
// the backend, a driver or a device).
bool cuda_built();
int cuda_device_count();
// The build of the CPU kernels in use ("avx512 + bf16", "avx512", "avx2", "generic"):
// chosen at run time by CPU features; MLXCEL_CPU_ISA=generic|avx2 picks a lower one
// (backends/cpu/isa.h).
const char* cpu_kernel_isa();
Tensor zeros(const Shape& shape, DType dtype, Device device);
// Rows of x picked by idx: x [R, D], idx i32 [n] -> [n, D].
Tensor take_rows(const Tensor& x, const Tensor& idx);
// Columns [begin, end) of the last dimension, as a new contiguous tensor.
Tensor slice_last(const Tensor& x, int64_t begin, int64_t end);

// ---- dense linear algebra ---------------------------------------------------
// y = x @ w^T (+ bias).  x [..., K]; w [N, K] f32|f16|bf16 (the PyTorch Linear
// layout); bias [N] or undefined -> [..., N].
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());
// Embedding lookup: ids i32 [T], table [V, D] f32|f16|bf16 -> f32 [T, D].
// An id outside [0, V) throws invalid_request.
Tensor embedding(const Tensor& ids, const Tensor& table);

// ---- normalization ----------------------------------------------------------
// y = x / sqrt(mean(x^2) + eps) * (w + w_offset). Gemma stores w - 1, so it
// passes w_offset = 1. w [D] any float dtype; undefined w means all ones.
Tensor rms_norm(const Tensor& x, const Tensor& w, float eps, float w_offset = 0.0f);
// y = (x - mean) / sqrt(var + eps) * w + b; w, b [D] or undefined.
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps);

// ---- elementwise ------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);       // same shape, or b [D] broadcast over rows
Tensor mul(const Tensor& a, const Tensor& b);       // same shape, or b [D] broadcast over rows
Tensor scale(const Tensor& x, float s);
void add_(Tensor& a, const Tensor& b);              // a += b, in place, same shape

enum class Activation { silu, gelu_tanh, gelu_erf, relu, relu2 };
// Parses a config's hidden_act ("silu", "gelu_pytorch_tanh", "gelu", "gelu_new", ...).
Activation parse_activation(const std::string& name);
Tensor activate(const Tensor& x, Activation act);
// act(gate) * up, both [..., D].  SwiGLU is act = silu, GeGLU is gelu.
// out_dtype f32 or bf16 (the f32 result rounded once).
Tensor gated(const Tensor& gate, const Tensor& up, Activation act, DType out_dtype = DType::f32);

// tanh(x / cap) * cap  (Gemma 2 logit soft-capping).
Tensor softcap(const Tensor& x, float cap);
// Softmax over the last dimension, computed in f32.
Tensor softmax(const Tensor& x);
// Index of the max over the last dimension: [..., D] -> i32 [...]. Ties pick the lowest index.
Tensor argmax(const Tensor& x);

}  // namespace mlxcel::ops
