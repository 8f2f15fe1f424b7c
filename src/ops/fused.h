// Fused ops for the decode step: each gives exactly the result of the composition it
// names (on the CPU it *is* that composition), and on CUDA runs as one kernel where a
// decode-sized input allows (1 to 8 rows; larger inputs fall back to the composition).
// A decode step of a 7B-class model is hundreds of small kernels; these cut a layer's
// count roughly in half (issue 8).
#pragma once

#include <utility>
#include <vector>

#include "ops/attention.h"
#include "ops/quant.h"
#include "ops/rope.h"
#include "tensor/tensor.h"

namespace mlxcel::ops {

enum class Activation;

// The dtype in which linear(x', w) on x's device reads an x' with x's rows (x's last
// dimension may differ from w's K: the input of a later product): bf16 where the CUDA
// products round x' to bf16 anyway (bf16 weights, more than 8 rows), else f32. A producer of x
// (add_rms_norm, linear_gated) asked for this dtype writes it directly: the same bits as
// rounding its f32 result, one pass over the activations fewer (issue 8: prefill and
// engine steps).
DType matmul_input_dtype(const Tensor& x, const Tensor& w);

// {x + h, rms_norm(x + h, w, eps, w_offset)}: the residual add and the next norm; the
// normalized rows in out_dtype (f32 or bf16), the sum always f32.
std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& h, const Tensor& w, float eps,
                                       float w_offset = 0.0f, DType out_dtype = DType::f32);

// outs[i] = linear(x, ws[i], biases[i]) for up to 3 weights of one dtype and one K
// (biases: empty, or one per weight, each possibly undefined).
std::vector<Tensor> linear_multi(const Tensor& x, const std::vector<Tensor>& ws,
                                 const std::vector<Tensor>& biases = {});
// gated(linear(x, gate, gate_bias), linear(x, up, up_bias), act): an MLP's gate/up, in
// out_dtype (f32 or bf16). x may be bf16 (as linear).
Tensor linear_gated(const Tensor& x, const Tensor& gate, const Tensor& up, Activation act,
                    const Tensor& gate_bias = Tensor(), const Tensor& up_bias = Tensor(),
                    DType out_dtype = DType::f32);

// The same for MLX affine quantized weights of one spec (GGUF-packed weights take the
// composition).
std::vector<Tensor> qlinear_multi(const Tensor& x, const std::vector<const QuantizedWeight*>& ws,
                                  const std::vector<Tensor>& biases = {});
Tensor qlinear_gated(const Tensor& x, const QuantizedWeight& gate, const QuantizedWeight& up, Activation act,
                     const Tensor& gate_bias = Tensor(), const Tensor& up_bias = Tensor());

// {x + h, qlinear_multi(rms_norm(x + h, norm_w, eps, w_offset), ws, biases)}: a residual
// add, the next RMSNorm and the products that read it (a decoder layer's q/k/v). On CUDA
// one launch for one row of x where the decode GEMV takes the shape and folds the norm
// into its reading of x (design 11, backends/cuda/qgemv_rf.cu); otherwise add_rms_norm
// then qlinear_multi. The two agree within f32 rounding (the sum of squares is added in
// another order).
//
// With rope_kv (ws = q, k, v; one row): where that launch also takes the step's RoPE and
// cache write (NeoX halves over whole heads of rope_kv->head_dim, the step's position,
// slot and frequencies mirrored on the device), it returns q and k rotated and has written
// k and v into the caches, as rope_kv_write would (its formula; within f32 rounding), and
// sets rope_kv->done; otherwise done stays false and the products come back unrotated.
struct RopeKvWrite {
  const Tensor* positions = nullptr;  // i32 [1]
  const RopeParams* rope = nullptr;
  Tensor* k_cache = nullptr;
  Tensor* v_cache = nullptr;
  const AttentionContext* ctx = nullptr;
  int head_dim = 0;
  bool done = false;
};
std::pair<Tensor, std::vector<Tensor>> add_rms_norm_qlinear_multi(const Tensor& x, const Tensor& h, const Tensor& norm_w,
                                                                  float eps, float w_offset,
                                                                  const std::vector<const QuantizedWeight*>& ws,
                                                                  const std::vector<Tensor>& biases = {},
                                                                  RopeKvWrite* rope_kv = nullptr);
// {x + h, qlinear_gated(rms_norm(x + h, ...), gate, up, act, ...)}: the same for an MLP.
std::pair<Tensor, Tensor> add_rms_norm_qlinear_gated(const Tensor& x, const Tensor& h, const Tensor& norm_w, float eps,
                                                     float w_offset, const QuantizedWeight& gate,
                                                     const QuantizedWeight& up, Activation act,
                                                     const Tensor& gate_bias = Tensor(), const Tensor& up_bias = Tensor());

// The same two for dense (f32|f16|bf16) weights: on CUDA one launch of the warp GEMV for
// one row of x (backends/cuda/linear.cu), with the RoPE epilogue as above; otherwise
// add_rms_norm then linear_multi / linear_gated. The folded products see x + h times the
// norm weight in f32 and are scaled by 1 / rms at the end; the composition multiplies the
// normalized row: the two agree within f32 rounding.
std::pair<Tensor, std::vector<Tensor>> add_rms_norm_linear_multi(const Tensor& x, const Tensor& h, const Tensor& norm_w,
                                                                 float eps, float w_offset, const std::vector<Tensor>& ws,
                                                                 const std::vector<Tensor>& biases = {},
                                                                 RopeKvWrite* rope_kv = nullptr);
std::pair<Tensor, Tensor> add_rms_norm_linear_gated(const Tensor& x, const Tensor& h, const Tensor& norm_w, float eps,
                                                    float w_offset, const Tensor& gate, const Tensor& up, Activation act,
                                                    const Tensor& gate_bias = Tensor(), const Tensor& up_bias = Tensor(),
                                                    DType out_dtype = DType::f32);

// rope(q, positions, p), with k_cache / v_cache written with rope(k, positions, p) and v
// at ctx.slot_mapping (kv_cache_write): an attention layer's RoPE and cache write.
Tensor rope_kv_write(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions, const RopeParams& p,
                     Tensor& k_cache, Tensor& v_cache, const AttentionContext& ctx);

}  // namespace mlxcel::ops
