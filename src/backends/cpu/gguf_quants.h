// GGUF (ggml) block formats on the CPU: reference dequantization of every block format
// mlxcel reads, the reference quantizers the GGUF writer uses (Q8_0, Q4_0, Q4_1, Q5_0,
// Q5_1), and packed matrix products for the formats kept packed at run time (Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0, Q2_K..Q6_K).
//
// Block layouts (little-endian, as ggml-common.h defines them; "half" = IEEE f16):
//   Q4_0  32 values, 18 B: half d; u8 qs[16]          w = d * (nibble - 8)
//   Q4_1  32 values, 20 B: half d, m; u8 qs[16]       w = d * nibble + m
//   Q5_0  32 values, 22 B: half d; u8 qh[4]; qs[16]   w = d * (q5 - 16)
//   Q5_1  32 values, 24 B: half d, m; qh[4]; qs[16]   w = d * q5 + m
//   Q8_0  32 values, 34 B: half d; i8 qs[32]          w = d * q
//   Q2_K..Q6_K: 256-value super-blocks (84, 110, 144, 176, 210 B).
// In the 32-value formats byte j holds value j in its low nibble and value j + 16 in its
// high nibble.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace mlxcel::gguf {

// ggml_type values.
enum GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kBF16 = 30,
};

// The block formats the CPU kernels take as they are (matmul_packed and the x8 copies):
// every quantized format above, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K..Q6_K.
inline bool kept_packed(uint32_t type) {
  return type == kQ4_0 || type == kQ4_1 || type == kQ5_0 || type == kQ5_1 || type == kQ8_0 ||
         (type >= kQ2_K && type <= kQ6_K);
}

// True for the types dequantize_row() handles.
bool can_dequantize(uint32_t type);
// Elements per block and bytes per block of a supported type ({1, 4} for F32, ...).
size_t block_elems(uint32_t type);
size_t block_bytes(uint32_t type);
// Bytes of a row of n values (n a multiple of block_elems).
size_t row_bytes(uint32_t type, int64_t n);

// n values (a multiple of the block size) from `src` into dst.
void dequantize_row(uint32_t type, const uint8_t* src, float* dst, int64_t n);

// The 4-bit block formats whose values are affine in 32-value groups, as MLX affine 4-bit
// groups of 32: Q4_1 (y = d q + m) and Q4_K (sub-block j of a 256-value block: y = (d sc_j)
// q - dmin m_j). Writes n / 8 words (value j of group g at bits 4 (j % 8) of word 4 g + j / 8,
// MLX's packing) and n / 32 f32 scales and biases; every s q + b is exactly the value
// dequantize_row gives (the products d sc_j and dmin m_j are exact in f32). False (nothing
// written) for other types.
bool affine4_row(uint32_t type, const uint8_t* src, int64_t n, uint32_t* words, float* scales, float* biases);

// ggml's reference quantizer of Q8_0, Q4_0, Q4_1, Q5_0 or Q5_1 (quantize_row_<type>_ref):
// n values (a multiple of 32) into n / 32 blocks of `type`.
void quantize_row(uint32_t type, const float* src, uint8_t* dst, int64_t n);

// y[m, n] = sum_k x[m, k] * W[n, k] (+ bias[n]) for a packed W of `type` (kept_packed:
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K) with `n_rows` rows of K values, row r at w + r *
// row_stride bytes. x is f32 [M, K] contiguous, y f32 [M, n_rows] contiguous. Multithreaded
// over rows on the global pool. x is quantized to int8 in blocks of 32 (ggml's Q8_0
// activations); the integer sums are exact per block / sub-block and the scales applied in
// f32: Q8_0 / Q4_0 / Q5_0 y += d dx sum((q - offset) xq) (offsets 0, 8, 16), Q4_1 / Q5_1
// y += d dx isum + m dx sum(xq), Q4_K / Q5_K y += (d sc) dx isum - (dmin m) dx sum(xq),
// Q6_K y += (d sc) dx (isum - 32 sum(xq)) per 16 values, Q3_K y += (d (sc - 32)) dx (isum -
// 4 sum(xq)) per 16, Q2_K y += (d sc) dx isum - (dmin m) dx sum(xq) per 16.
// Decode-sized products (M < 16) run on the x8 copy (below), prefill-sized ones on the
// int8 panel GEMM, which takes every format's blocks as they are.
void matmul_packed(uint32_t type, const float* x, int64_t M, int64_t K, const uint8_t* w, size_t row_stride,
                   int64_t n_rows, const float* bias, float* y);

// One of several products of the same x (matmul_packed's arguments but x, M and K).
struct PackedProduct {
  uint32_t type;
  const uint8_t* w;
  size_t row_stride;
  int64_t n_rows;
  const float* bias;  // may be null
  float* y;           // [M, n_rows]
};
// ps[i].y = x W_i^T (+ bias_i) for 1..8 products that share x (q/k/v, gate/up): at
// decode sizes (M < 16) x is quantized once and all the products' row groups run in one
// parallel region (one fork/join instead of n), each on its x8 copy when it has one;
// results are those of separate matmul_packed calls, bit for bit.
void matmul_packed_multi(const float* x, int64_t M, int64_t K, const PackedProduct* ps, int n);

// Rows `ids` of a packed table, dequantized to f32 [n_ids, K].
void gather_rows(uint32_t type, const uint8_t* w, size_t row_stride, int64_t K, const int32_t* ids,
                 int64_t n_ids, float* out);

// ---- x8 layout: decode-time repacking of the kept_packed weights --------------------------
//
// Groups of 8 rows (the last group padded by repeating the last row), each one contiguous
// region of group_bytes(type, K), block after block: the 8 rows' f16 scales of the block
// (16 bytes; Q4_1 / Q5_1: then their f16 mins, 16 more), Q5_0 / Q5_1's fifth bits as one
// vector (lane r = row r's 4 bytes of qh), then its quants interleaved so that the 32-bit
// lane r of a 32-byte vector holds 4 consecutive values of row r (4-bit quants: 128 bytes,
// nibbles as in the row layout; Q8_0: 256 bytes): 8 times the file's block (144, 160, 176,
// 192, 272 bytes). The same bytes as the row layout when n_rows % 8 == 0. (Scales
// inline, not in a region of their own, so the GEMV reads a single stream the hardware
// prefetcher follows: 1.5x the single-thread rate on a Zen 4 VM, session 20.)
// Q4_K: per 256-value block 1,184 bytes (against 8 x 144 in the row layout): the 8 rows'
// d and dmin (f16, 16 bytes each), the 8 sub-blocks' 6-bit scales and mins unpacked to
// bytes (64 + 64, [sub-block][row]), then the quants as 4 pairs of sub-blocks x 8
// vectors (lane r of vector v of pair p: qs bytes 32 p + 4 v .. + 3 of row r; the low
// nibbles are sub-block 2 p, the high ones 2 p + 1). Q5_K: the same, then its qh as 8
// vectors (1,440 bytes). Q6_K: d (16 bytes), the 16 sub-blocks' int8 scales (128, [sub-
// block][row]), ql as 32 vectors and qh as 16 (1,680 bytes = 8 x 210). Q3_K: d and the
// int8 scales less 32 as Q6_K's, then qs as 16 vectors and hmask as 8 (912 bytes against
// 8 x 110). Q2_K: d, dmin, the 16 scale bytes as they are ([sub-block][row]), qs as 16
// vectors (672 bytes = 8 x 84).
// The decode GEMV then reads one sequential stream per thread and needs neither
// horizontal sums nor per-row scale loads; its results are bit-identical to
// matmul_packed's on the row layout.
size_t x8_group_bytes(uint32_t type, int64_t K);
size_t x8_bytes(uint32_t type, int64_t n_rows, int64_t K);
// w (row layout, rows at row_stride) -> out (x8_bytes(type, n_rows, K) bytes).
void repack_x8(uint32_t type, const uint8_t* w, size_t row_stride, int64_t n_rows, int64_t K, uint8_t* out);
// matmul_packed on an x8 weight (any M; meant for decode-sized M).
void matmul_x8(uint32_t type, const float* x, int64_t M, int64_t K, const uint8_t* wx8, int64_t n_rows,
               const float* bias, float* y);

// Weights whose bytes ([w, w + bytes)) are registered here get an x8 copy of all their rows
// on their first decode-sized matmul_packed (M < 16), and matmul_packed uses the copy from
// then on whenever it is called on rows of the weight that start a group of 8 (the whole
// weight, or a row view of it from a multiple of 8 rows on: Phi-3's fused q/k/v and gate/up
// are split into such views) with the same type, K and stride; other calls use the row
// layout. The loader registers the packed weights it hands out through repackable_owner():
// a keep-alive that holds `inner` and drops the registration and the copy when the
// weight's bytes are released.
std::shared_ptr<void> repackable_owner(const uint8_t* w, size_t bytes, std::shared_ptr<void> inner);
// Bytes held by x8 copies now (for tests and benches).
size_t repacked_bytes_in_use();
// After a decode-sized product on an x8 copy, the first bytes (at most this many) of the
// copy made next (the next product of a decode step) are handed to the thread pool's
// idle workers to prefetch while the caller runs the serial ops in between
// (ThreadPool::prefetch_when_idle). MLXCEL_IDLE_PREFETCH_KB (default 2048; 0 = off):
// 3-9% shorter tokens at moderate load, neutral under heavy load (bench/results/gguf.md,
// session 15).
void set_idle_prefetch_bytes(int64_t bytes);
int64_t idle_prefetch_bytes();
// MLXCEL_GGUF_REPACK=0 turns the copies off (row-layout kernels only); read once.
bool repack_enabled();

// Name of the kernel matmul_packed uses on this CPU ("avx2", "scalar").
const char* matmul_isa();

}  // namespace mlxcel::gguf
