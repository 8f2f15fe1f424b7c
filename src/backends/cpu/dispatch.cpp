// The public functions of the CPU kernel sources, forwarded to the build of the
// instruction-set level isa() selects (isa.h). Each kernel source is compiled once per
// level into mlxcel::cpu::<level> / mlxcel::gguf::<level>; the lists below declare those
// builds' functions and define the public ones.
#include <memory>

#include "backends/cpu/attention.h"
#include "backends/cpu/gguf_quants.h"
#include "backends/cpu/isa.h"
#include "backends/cpu/kernels.h"
#include "backends/cpu/linear.h"
#include "backends/cpu/quantized.h"

// X(return type, name, (parameters), (arguments))
#define MLXCEL_CPU_KERNEL_FUNCTIONS(X)                                                                             \
  X(void, copy_strided, (const Tensor& src, Tensor& dst), (src, dst))                                              \
  X(void, convert, (const Tensor& src, Tensor& dst), (src, dst))                                                   \
  X(void, gather_rows, (const Tensor& x, const int32_t* idx, int64_t n, Tensor& out), (x, idx, n, out))            \
  X(void, gather_rows_f32, (const Tensor& table, const int32_t* idx, int64_t n, Tensor& out), (table, idx, n, out)) \
  X(void, slice_last, (const Tensor& x, int64_t begin, int64_t end, Tensor& out), (x, begin, end, out))            \
  X(void, rms_norm, (const Tensor& x, const Tensor& w, float eps, float w_offset, Tensor& out),                     \
    (x, w, eps, w_offset, out))                                                                                    \
  X(void, layer_norm, (const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& out),                  \
    (x, w, b, eps, out))                                                                                           \
  X(void, binary, (const Tensor& a, const Tensor& b, BinaryOp op, Tensor& out), (a, b, op, out))                   \
  X(void, scale, (const Tensor& x, float s, Tensor& out), (x, s, out))                                             \
  X(float, activate_scalar, (float x, Act act), (x, act))                                                          \
  X(void, activate, (const Tensor& x, Act act, Tensor& out), (x, act, out))                                        \
  X(void, gated, (const Tensor& gate, const Tensor& up, Act act, Tensor& out), (gate, up, act, out))               \
  X(void, softcap, (const Tensor& x, float cap, Tensor& out), (x, cap, out))                                       \
  X(void, softmax, (const Tensor& x, Tensor& out), (x, out))                                                       \
  X(void, argmax, (const Tensor& x, Tensor& out), (x, out))                                                        \
  X(void, linear, (const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out), (x, w, bias, out))          \
  X(void, qlinear, (const float* x, int64_t M, const QuantMatrix& w, const float* bias, float* y),                 \
    (x, M, w, bias, y))                                                                                            \
  X(void, qlinear_multi,                                                                                           \
    (const float* x, int64_t M, const QuantMatrix* ws, int n, const float* const* biases, float* const* ys),       \
    (x, M, ws, n, biases, ys))                                                                                     \
  X(void, dequantize_rows_f32, (const QuantMatrix& w, const int32_t* rows, int64_t n, float* out),                 \
    (w, rows, n, out))                                                                                             \
  X(void, dequantize_same_dtype, (const QuantMatrix& w, void* out), (w, out))                                      \
  X(void, quantize, (const Tensor& w, int bits, int group_size, Tensor& packed, Tensor& scales, Tensor& biases),    \
    (w, bits, group_size, packed, scales, biases))                                                                 \
  X(void, paged_attention, (const PagedAttentionArgs& a), (a))                                                     \
  X(void, kv_cache_write,                                                                                          \
    (void* k_cache, void* v_cache, DType cache_dtype, const float* k, const float* v, int64_t T,                   \
     int64_t n_kv_heads, int64_t head_dim, int64_t v_head_dim, const int32_t* slots),                              \
    (k_cache, v_cache, cache_dtype, k, v, T, n_kv_heads, head_dim, v_head_dim, slots))

#define MLXCEL_GGUF_KERNEL_FUNCTIONS(X)                                                                            \
  X(bool, can_dequantize, (uint32_t type), (type))                                                                 \
  X(size_t, block_elems, (uint32_t type), (type))                                                                  \
  X(size_t, block_bytes, (uint32_t type), (type))                                                                  \
  X(size_t, row_bytes, (uint32_t type, int64_t n), (type, n))                                                      \
  X(void, dequantize_row, (uint32_t type, const uint8_t* src, float* dst, int64_t n), (type, src, dst, n))         \
  X(bool, affine4_row, (uint32_t type, const uint8_t* src, int64_t n, uint32_t* words, float* scales, float* biases), \
    (type, src, n, words, scales, biases))                                                                         \
  X(void, quantize_row, (uint32_t type, const float* src, uint8_t* dst, int64_t n), (type, src, dst, n))           \
  X(void, matmul_packed,                                                                                           \
    (uint32_t type, const float* x, int64_t M, int64_t K, const uint8_t* w, size_t row_stride, int64_t n_rows,     \
     const float* bias, float* y),                                                                                 \
    (type, x, M, K, w, row_stride, n_rows, bias, y))                                                               \
  X(void, matmul_packed_multi, (const float* x, int64_t M, int64_t K, const PackedProduct* ps, int n),             \
    (x, M, K, ps, n))                                                                                              \
  X(void, gather_rows,                                                                                             \
    (uint32_t type, const uint8_t* w, size_t row_stride, int64_t K, const int32_t* ids, int64_t n_ids, float* out), \
    (type, w, row_stride, K, ids, n_ids, out))                                                                     \
  X(size_t, x8_group_bytes, (uint32_t type, int64_t K), (type, K))                                                 \
  X(size_t, x8_bytes, (uint32_t type, int64_t n_rows, int64_t K), (type, n_rows, K))                               \
  X(void, repack_x8, (uint32_t type, const uint8_t* w, size_t row_stride, int64_t n_rows, int64_t K, uint8_t* out), \
    (type, w, row_stride, n_rows, K, out))                                                                         \
  X(void, matmul_x8,                                                                                               \
    (uint32_t type, const float* x, int64_t M, int64_t K, const uint8_t* wx8, int64_t n_rows, const float* bias,   \
     float* y),                                                                                                    \
    (type, x, M, K, wx8, n_rows, bias, y))                                                                         \
  X(std::shared_ptr<void>, repackable_owner, (const uint8_t* w, size_t bytes, std::shared_ptr<void> inner),         \
    (w, bytes, std::move(inner)))                                                                                  \
  X(size_t, repacked_bytes_in_use, (), ())                                                                         \
  X(void, set_idle_prefetch_bytes, (int64_t bytes), (bytes))                                                       \
  X(int64_t, idle_prefetch_bytes, (), ())                                                                          \
  X(bool, repack_enabled, (), ())                                                                                  \
  X(const char*, matmul_isa, (), ())

#define MLXCEL_DECLARE(ret, name, params, args) ret name params;

namespace mlxcel::cpu {
namespace generic {
MLXCEL_CPU_KERNEL_FUNCTIONS(MLXCEL_DECLARE)
}
#if defined(MLXCEL_CPU_HAS_AVX2_BUILD)
namespace avx2 {
MLXCEL_CPU_KERNEL_FUNCTIONS(MLXCEL_DECLARE)
}
#if defined(MLXCEL_CPU_HAS_AVX512_BUILD)
namespace avx512 {
MLXCEL_CPU_KERNEL_FUNCTIONS(MLXCEL_DECLARE)
}
#define MLXCEL_FORWARD(ns, name, args)                 \
  switch (isa()) {                                     \
    case Isa::avx512: return ns::avx512::name args;    \
    case Isa::avx2: return ns::avx2::name args;        \
    default: return ns::generic::name args;            \
  }
#else
#define MLXCEL_FORWARD(ns, name, args) \
  return isa() == Isa::avx2 ? ns::avx2::name args : ns::generic::name args;
#endif
#else
#define MLXCEL_FORWARD(ns, name, args) return ns::generic::name args;
#endif
}  // namespace mlxcel::cpu

namespace mlxcel::gguf {
namespace generic {
MLXCEL_GGUF_KERNEL_FUNCTIONS(MLXCEL_DECLARE)
}
#if defined(MLXCEL_CPU_HAS_AVX2_BUILD)
namespace avx2 {
MLXCEL_GGUF_KERNEL_FUNCTIONS(MLXCEL_DECLARE)
}
#endif
#if defined(MLXCEL_CPU_HAS_AVX512_BUILD)
namespace avx512 {
MLXCEL_GGUF_KERNEL_FUNCTIONS(MLXCEL_DECLARE)
}
#endif
}  // namespace mlxcel::gguf

namespace mlxcel::cpu {
#define MLXCEL_DEFINE_CPU(ret, name, params, args) \
  ret name params { MLXCEL_FORWARD(::mlxcel::cpu, name, args) }
MLXCEL_CPU_KERNEL_FUNCTIONS(MLXCEL_DEFINE_CPU)
}  // namespace mlxcel::cpu

namespace mlxcel::gguf {
using cpu::Isa;
using cpu::isa;
#define MLXCEL_DEFINE_GGUF(ret, name, params, args) \
  ret name params { MLXCEL_FORWARD(::mlxcel::gguf, name, args) }
MLXCEL_GGUF_KERNEL_FUNCTIONS(MLXCEL_DEFINE_GGUF)
}  // namespace mlxcel::gguf
