// CUDA kernels behind the ops API: the mirror of backends/cpu (kernels.h, linear.h,
// quantized.h). Same signatures as the cpu:: functions where possible, so an op's
// dispatch is one line per device. Tensors here live on a CUDA device; raw pointers
// (qlinear, gather_rows) are device pointers.
//
// Work is enqueued on the stream of the tensor's device (stream_of); nothing waits
// unless stated. to_device: device -> host waits for the data; host -> device returns once
// the bytes are staged (the host tensor may be freed at once).
// This header includes no CUDA header: ops/*.cpp include it as plain C++.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cpu/quantized.h"
#include "ops/attention.h"
#include "ops/rope_kv_target.h"
#include "ops/rope.h"
#include "tensor/tensor.h"

namespace mlxcel::cpu {
struct PagedAttentionArgs;  // backends/cpu/attention.h
}  // namespace mlxcel::cpu

namespace mlxcel::cuda {

using cpu::Act;
using cpu::BinaryOp;
using cpu::QuantMatrix;

// ---- runtime ----------------------------------------------------------------
// Registers the CUDA allocator (a stream-ordered caching pool per device) with
// tensor/. Idempotent and cheap; every entry point below calls it. It creates no
// CUDA context: that happens at the first allocation or launch.
void init();
int device_count();        // 0 when there is no driver or no device
bool available();          // device_count() > 0
// Free and total bytes of device `index` (cudaMemGetInfo) and its name; false when
// there is no such device.
bool memory_info(int index, size_t* free_bytes, size_t* total_bytes, std::string* name = nullptr);
// Waits for all work queued on the device's stream; surfaces asynchronous errors.
void synchronize(Device d = Device::cuda());
// Copy to any device (cpu <-> cuda, cuda <-> cuda); x may be strided.
Tensor to_device(const Tensor& x, Device device);
// A zero-filled tensor on a CUDA device (calls init() first, unlike Tensor::empty).
Tensor zeros(const Shape& shape, DType dtype, Device device);
// Bytes held by the device's pool (in use + cached), for tests and stats.
size_t pool_reserved_bytes(Device d = Device::cuda());
// ---- CUDA graphs (runtime.cpp) -------------------------------------------------
// An instantiated graph of the work one call queued on a device's stream.
struct GraphExec;
// Captures everything `fn` queues on the device's stream (relaxed mode: host code keeps
// running; nothing inside may wait for the stream) and instantiates it; allocations made
// inside are freed at the next launch. While capturing, gathers skip their index check
// (it waits for the stream): the caller validates indices on the host.
std::shared_ptr<GraphExec> capture_graph(int device, const std::function<void()>& fn);
void launch_graph(const GraphExec& g);
// True once a scratch buffer the graph may hold has been reallocated: record it again.
bool graph_stale(const GraphExec& g);
bool capturing(int device);
// dst (a contiguous CUDA tensor) = src (a host tensor of the same dtype and numel),
// queued on dst's device stream.
void copy_from_host(Tensor& dst, const Tensor& src);
// A small device -> host copy queued now and waited for later: start() queues the copy
// of `bytes` (<= the size it was made with) from a device pointer into pinned host memory
// on the device's stream and records an event; wait() blocks until that copy is done and
// returns the host bytes (valid until the next start()). A decode loop reads a step's
// token ids this way while the next step is already queued behind the copy.
struct Readback;
std::shared_ptr<Readback> make_readback(int device, size_t bytes);
void readback_start(Readback& r, const void* src, size_t bytes);
const void* readback_wait(Readback& r);

// Hardware probes (probe.cu), for benchmarks: the bytes/s of reading a `bytes` buffer
// once (best of 10), and the FLOP/s of a bf16 x bf16 -> bf16 cuBLAS GEMM with f32
// accumulation ([m, k] x [n, k]^T, best of 10). Both wait for the device.
double read_bandwidth(int device, size_t bytes = size_t(2) << 30);
double bf16_gemm_flops(int device, int m = 8192, int n = 8192, int k = 8192);

// ---- copies and conversions -------------------------------------------------
void copy_strided(const Tensor& src, Tensor& dst);
// outs[i] (contiguous [rows, n_i]) = columns [sum n_<i, + n_i) of y (contiguous [rows,
// sum n_i], any dtype of the outs' size): one launch for up to 4 parts.
constexpr int kMaxSplitParts = 4;
void split_columns(const Tensor& y, std::vector<Tensor>& outs);
void convert(const Tensor& src, Tensor& dst);
// idx is a device pointer; rows outside [0, R) throw invalid_request (this waits
// for the kernel to report).
void gather_rows(const Tensor& x, const int32_t* idx, int64_t n, Tensor& out);
void gather_rows_f32(const Tensor& table, const int32_t* idx, int64_t n, Tensor& out);
void slice_last(const Tensor& x, int64_t begin, int64_t end, Tensor& out);
void fill_zero(Tensor& out);

// ---- normalization ----------------------------------------------------------
void rms_norm(const Tensor& x, const Tensor& w, float eps, float w_offset, Tensor& out);
// Fused residual add: sum = x + residual (written to sum_out, may alias residual),
// out = rms_norm(sum). All f32 [rows, D], except that out (here and in rms_norm) may be
// bf16: the f32 result rounded once.
void add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& w, float eps, float w_offset,
                  Tensor& sum_out, Tensor& out);
void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& out);

// ---- elementwise (f32 activations; b of add/mul f32|f16|bf16) -----------------
void binary(const Tensor& a, const Tensor& b, BinaryOp op, Tensor& out);
void scale(const Tensor& x, float s, Tensor& out);
void activate(const Tensor& x, Act act, Tensor& out);
void gated(const Tensor& gate, const Tensor& up, Act act, Tensor& out);  // out f32|bf16
void softcap(const Tensor& x, float cap, Tensor& out);
void softmax(const Tensor& x, Tensor& out);
void argmax(const Tensor& x, Tensor& out);
// Token sampling (ops/sample.h, sample.cu): i32 [rows] from logits f32 [rows, V], one
// cpu::SampleRow per row (host memory).
void sample(const Tensor& logits, const cpu::SampleRow* rows, Tensor& out);

// ---- dense linear -----------------------------------------------------------
// out [M, N] (f32|bf16) = x [M, K] (f32|bf16) @ w [N, K]^T (+ bias [N]); w and bias
// f32|f16|bf16. M <= kGemvMaxRows runs a bandwidth-bound GEMV kernel with f32 x;
// larger M runs cuBLAS (f32 weights: SGEMM; f16/bf16 weights: x is rounded to the
// weight's dtype and the product runs on tensor cores), f32 accumulation.
void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out);
constexpr int kGemvMaxRows = 8;
// The dense products' GEMV/cuBLAS boundary (<= kGemvMaxRows): products of more than
// this many rows go to cuBLAS. Default 1 (batch-1 decode); MLXCEL_CUDA_GEMV_ROWS=N (up to
// kGemvMaxRows) keeps the GEMV up to N rows. The quantized products keep kGemvMaxRows.
// set_dense_gemv_rows returns the previous value (tests).
int dense_gemv_rows();
int set_dense_gemv_rows(int rows);

// ---- MLX affine quantized -----------------------------------------------------
// y f32 [M, N] = x f32 [M, K] @ dequant(w)^T (+ bias f32 [N] or null). Device pointers.
// M <= kGemvMaxRows: fused dequantizing GEMV; larger M: dequantize tiles + SGEMM.
void qlinear(const float* x, int64_t M, const QuantMatrix& w, const float* bias, float* y);

// Per-op GPU time (MLXCEL_CUDA_PROFILE=1, or set_profiling): the ops' CUDA dispatch
// (backends/cuda/dispatch.h) brackets each call with events on the current device's
// stream (not while a graph is being recorded, so profile without CUDA graphs);
// profile_report() waits for the device and lists the time per op, largest first.
bool profiling();
void set_profiling(bool on);
std::string profile_report(bool reset = true);
class OpTimer {
 public:
  explicit OpTimer(const char* op);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  const char* op_ = nullptr;
  void* start_ = nullptr;
};

// Selects the batch-1 GEMV design (linear_impl.h) for dense and quantized weights (tests
// and benchmarks; MLXCEL_CUDA_GEMV sets both at start). Returns dense * 16 + quantized
// as they were.
int set_gemv_variants(int dense, int quantized);
// The bf16 tensor-core product for 2-64 rows of 4- and 8-bit weights (linear_impl.h qgemm_mma; on
// unless MLXCEL_CUDA_QMMA=0): off keeps the f32 paths (tests of the exact math). Returns
// the previous setting.
bool set_qgemm_mma(bool on);
// Dense batch-1 GEMV (designs 1-3) on matrices with few rows: the block's warps split K
// (default; MLXCEL_CUDA_GEMV_KSPLIT=0 turns it off). Returns the previous setting.
bool set_gemv_ksplit(bool on);
// Decode rows of paged attention on attn_decode_kernel (lanes over keys) instead of
// attn_kernel; off by default (attention.cu says why). Returns the previous setting.
bool set_decode_attention(bool on);
// Paged attention over bf16/f16 caches on the tensor-core kernels (flash_attention.cu;
// default, MLXCEL_CUDA_FLASH=0 turns it off) instead of the f32 kernels. Returns the
// previous setting.
bool set_flash_attention(bool on);
// Decode rows' split-KV: a split takes at least this many of a row's visible keys
// (AttnArgs::split_keys; default 64, MLXCEL_CUDA_SPLIT_KEYS, 0: all splits always). Returns the
// previous setting.
int set_split_keys(int keys);
// Programmatic dependent launch of the decode kernels (sm_90+; off by default until it is
// measured on a GPU, MLXCEL_CUDA_PDL=1 turns it on): a kernel may start while the one
// before it in the stream finishes, reading its weights before it waits for that kernel's
// results (common.cuh). Returns the previous setting.
bool set_pdl(bool on);
// Products of 9+ rows on cuBLASLt (default; MLXCEL_CUDA_LT=0: cublasGemmEx). Returns the
// previous setting.
bool set_gemm_lt(bool on);
// Products of kGemvMaxRows + 1 .. kSkinnyMaxRows rows with 16-bit weights on the
// weight-streaming tensor-core kernel (skinny_gemm.cu, sm_90) instead of cuBLAS: mode 1
// for weights of few rows, where cuBLAS leaves the card idle; 2 for every shape; 0 never
// (default: it loses to cuBLASLt at N >= 4,096 and did not speed up the engine; kept for
// its K split through a cluster, bit-identical whatever the batch). MLXCEL_CUDA_SKINNY=M
// sets the mode at start. Returns the previous mode.
constexpr int64_t kSkinnyMaxRows = 64;
int set_skinny_gemm(int mode);

// Fused decode products (1 <= M <= kGemvMaxRows, K > 0; ops/fused.cpp checks shapes):
// one GEMV launch for up to 3 products of the same x (q/k/v: weights of one dtype and K,
// biases of one dtype or absent), and act(x @ gate^T + bg) * (x @ up^T + bu) in one launch
// (gate/up of an MLP). Each output row is computed exactly as linear/qlinear compute it.
void linear_multi(const Tensor& x, const std::vector<Tensor>& ws, const std::vector<Tensor>& biases,
                  std::vector<Tensor>& outs);
void linear_gated(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& gate_bias, const Tensor& up_bias,
                  Act act, Tensor& out);
void qlinear_multi(const float* x, int64_t M, const std::vector<QuantMatrix>& ws, const std::vector<const float*>& biases,
                   const std::vector<float*>& ys);
void qlinear_gated(const float* x, int64_t M, const QuantMatrix& gate, const QuantMatrix& up, const float* gate_bias,
                   const float* up_bias, Act act, float* y);
// The residual add and RMSNorm of one row folded into the decode GEMV that reads the norm
// (design 11, qgemv_rf.cu): sum = x + h (f32 [K], x and h 16-byte aligned), and the
// products, as qlinear_multi / qlinear_gated give them, of rms_norm(sum, w, eps, w_offset)
// (w f32|f16|bf16 [K], or null for ones; the formula of cuda::rms_norm). False (nothing
// launched) where design 11 does not take the shape or another design is selected: the
// caller then composes add_rms_norm and the products.
struct RowNorm {
  const float* h = nullptr;
  const void* w = nullptr;
  DType w_dtype = DType::f32;
  float eps = 0.0f, w_offset = 0.0f;
  float* sum = nullptr;
};
// Which of the decode folds run where they can (bit 0: the residual add + RMSNorm in
// qlinear_*_normed, bit 1: RoPE + cache write); returns the previous mask. Both on unless
// MLXCEL_CUDA_NORM_FOLD=0 / MLXCEL_CUDA_ROPE_FOLD=0 (A/B runs and tests).
int set_decode_folds(int mask);
// A decode step's q/k rotation and K/V cache write taken by the q/k/v launch's epilogue
// (qlinear_multi_normed with parts q, k, v and one row): the launch pairs rows i and i + D
// / 2 of each q and k head in one tile, writes q and k rotated (NeoX halves over the whole
// head, rope_kv_write's formula and rounding) to ys[0] / ys[1], and k and v into the
// caches at slot[0] (device i32; outside [0, n_slots): no cache write). pos is the device
// i32 position, inv_freq the device f32 [D / 2] frequencies (ops/rope_kv_target.h).
using RopeKv = ops::detail::RopeKvTarget;
bool qlinear_multi_normed(const float* x, const RowNorm& norm, const std::vector<QuantMatrix>& ws,
                          const std::vector<const float*>& biases, const std::vector<float*>& ys,
                          const RopeKv* rope = nullptr);
bool qlinear_gated_normed(const float* x, const RowNorm& norm, const QuantMatrix& gate, const QuantMatrix& up,
                          const float* gate_bias, const float* up_bias, Act act, float* y);
// The dense twins (bf16 / f16 / f32 weights, the warp GEMV of dense designs 1 and 4 and
// up): the same folds for one f32 row of x, outputs as linear_multi / linear_gated write
// them. False (nothing launched) where the fold or the shape is not taken (the caller
// composes): a dense design 2 or 3, unaligned operands, K not a multiple of a 16-byte
// weight load, folds switched off.
bool linear_multi_normed(const float* x, const RowNorm& norm, const std::vector<Tensor>& ws,
                         const std::vector<Tensor>& biases, std::vector<Tensor>& outs, const RopeKv* rope = nullptr);
bool linear_gated_normed(const float* x, const RowNorm& norm, const Tensor& gate, const Tensor& up,
                         const Tensor& gate_bias, const Tensor& up_bias, Act act, Tensor& out);
// Whether the folded launches above would take products of K columns of `wdt` weights
// (linear_fold_takes) or of `bits` / `group_size` MLX weights (qlinear_fold_takes), with
// rope the q/k/v epilogue too: the switches, the selected design and the shape, asked
// before the callers make the operands. The launches still decline (false) where the
// operands' alignment or the parts do not fit.
bool linear_fold_takes(DType wdt, int64_t K, bool rope);
bool qlinear_fold_takes(int bits, int group_size, int64_t K, bool rope);
// out f32 [n, K] = dequantized rows rows[0..n) of w; rows null means rows 0..n-1.
// Row indices outside [0, N) throw invalid_request (this waits for the kernel).
void dequantize_rows_f32(const QuantMatrix& w, const int32_t* rows, int64_t n, float* out);
// out [N, K] of w.scale_dtype (f16|bf16), rounded step by step like MLX.
void dequantize_same_dtype(const QuantMatrix& w, void* out);

// MLX quantizer for a device weight w [N, K] into pre-allocated device outputs; runs the
// CPU quantizer on a host copy (bit-identical to cpu::quantize).
void quantize(const Tensor& w, int bits, int group_size, Tensor& packed, Tensor& scales, Tensor& biases);

// ---- rotary embeddings ------------------------------------------------------
// x [T, H, D] f32|f16|bf16, positions i32 [T] (cpu or cuda); p.inv_freq on the host.
// out like x. NeoX halves or interleaved pairs; features past rotary_dim copied.
void rope(const Tensor& x, const Tensor& positions, const RopeParams& p, Tensor& out);

// ---- paged attention --------------------------------------------------------
// Context tensors may live on the host or the device (host ones are copied).
// Slots < 0 in slot_mapping are skipped (padding).
void kv_cache_write(Tensor& k_cache, Tensor& v_cache, const Tensor& k, const Tensor& v,
                    const AttentionContext& ctx);
// q [T, n_heads, D] f32|f16|bf16; caches f32|f16|bf16; out [T, n_heads, Dv] like q.
// Online softmax in f32, split-KV across blocks, query heads of one KV head share loads.
void paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttentionContext& ctx,
                     const AttentionParams& params, Tensor& out);

// ---- raw-pointer forms of the CPU signatures (backends/cpu/rope.h, attention.h) ----
// Device pointers for tensor data; context arrays (positions, slots, q_start, kv_len,
// block_table) and inv_freq may be host or device pointers (host ones are uploaded).
void rope(const float* x, int64_t T, int64_t H, int64_t D, const int32_t* positions, const float* inv_freq, int rot,
          float attn_scale, bool interleaved, float* out);
// rope(q) into q_out, and the caches' slots[t] written with rope(k) and v (ops/fused.h
// rope_kv_write): one launch. The tensor form takes caches of any block shape.
void rope_kv_write(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions, const RopeParams& p,
                   Tensor& q_out, Tensor& k_cache, Tensor& v_cache, const Tensor& slots);
void rope_kv_write(const float* q, const float* k, const float* v, int64_t T, int64_t H, int64_t n_kv_heads,
                   int64_t head_dim, int64_t v_head_dim, const int32_t* positions, const float* inv_freq, int rot,
                   float attn_scale, bool interleaved, float* q_out, void* k_cache, void* v_cache, DType cache_dtype,
                   int64_t n_slots, const int32_t* slots);
void kv_cache_write(void* k_cache, void* v_cache, DType cache_dtype, const float* k, const float* v, int64_t T,
                    int64_t n_kv_heads, int64_t head_dim, int64_t v_head_dim, const int32_t* slots);
void paged_attention(const cpu::PagedAttentionArgs& a);

}  // namespace mlxcel::cuda
