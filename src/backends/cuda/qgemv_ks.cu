// Decode GEMV of MLX affine 4- and 8-bit weights on the tensor cores with K split over
// warps (gemv_variant 10, opt-in: MLXCEL_CUDA_QGEMV=10; linear_impl.h qgemv_ks):
// y [M, N] = x [M, K] @ dequant(w)^T for M <= 8 / G (G = 128 / group size), K a multiple
// of 32.
//
// Design 8 (qgemv_tc.cu) gives a block whole rows of K: every block converts all of x
// (ncu: 23% of its instructions), each chunk reloads its B fragments and group sums from
// shared memory, a block barrier closes every stage, and the launches with few tiles (q/o,
// k/v) leave SMs idle. Here a warp owns one slice of K (4 bits: 256 values = two 128-value
// MMA chunks; 8 bits: 128) and walks a run of 16-row tiles at that slice:
//   - its x never changes: each lane loads its 32 values of x of each chunk once, straight
//     into its B-fragment registers, with its column's group sum (quad shuffles): no
//     shared memory for x, no per-block conversion of the whole of x;
//   - its own ring of kStages stages (16 rows x 128 bytes + their scales and biases) filled
//     by its own cp.async copies: __syncwarp, no block barrier;
//   - a tile's sums of its slice go straight to a global scratch buffer (no reduction
//     across warps); a block = 8 slices x one row group, and the last block of a row
//     group to finish (an atomic counter a row group, reset by that block) adds the slices
//     in order, then bias / activation: deterministic, the same bits for a row of x alone
//     or in a batch;
//   - every launch has one wave of blocks (row groups x slice blocks), k/v too.
// Numerics:
//   4 bits: as design 8: nibbles OR-ed into bf16 128.0 (exact 128 + q, one LOP3 per two
//     weights), x rounded to bf16, y += s D + (b - 128 s) sum(x).
//   8 bits: each byte placed under f16 1024.0 by one PRMT per two weights (exact 1024 + q),
//     x scaled per MMA column (a group of one token) by a power of two that puts the
//     column's largest |x| in [2^14, 2^15) and rounded to f16 (11 significant bits: finer
//     than bf16's 8, and no f16 overflow), y += (s 2^e) D + (b - 1024 s) 2^e sum(x').
//     Within 5e-4 of the exact f32 product, also for x at 3e5 or 1e-6
//     (CudaOps.KSplitQuantizedGemvMatchesCpu).
//   The weights stay exact; f32 accumulation and folds.
//
// Status (session 23, an H200, bench/results/cuda_gemv.md run 9): correct, but not faster
// than the defaults, so opt-in. Llama-3.1-8B layer (cuda_bench --only mlx): q4 33.0-33.7%
// of copy bandwidth (default design 8: 33.3-34.1%), q8 44.9-46.3% (design 0: 46.8-47.2%);
// tg128 q4 327-335 tok/s (default 337-345), q8 234-241 (default 233-238). ncu on gate_proj:
// the SMs are active only 74-76% of the launch (ramp and tail: about 6.5 us of fixed cost a
// launch in every design, cuda_bench's linear fit), and inside it q4 issues at 0.45 a
// scheduler with 0.9 eligible warps (122 registers, 2 blocks an SM): latency-bound. Tried
// and dropped: a block owning one 1,024-value slice with the 8 warps' sums met in shared
// memory every stage (q4 31.5-31.9%, 28.1% with the sum spread over 4 warps), one chunk a
// warp for 4 bits (3 blocks an SM: 28.8-29.2%), 0.67 or 2 waves of blocks, the weights
// issued before x. The block form, with warp 0's 16 threads adding the sums, was the one
// that beat design 0 for 8 bits (q8 layer 49.0-49.1% against 46.7-47.0%, tg128 247.9 against
// 239.1 in one sample): the next thing to try for 8 bits (run 9).
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "backends/cuda/common.cuh"
#include "backends/cuda/gemv.cuh"
#include "backends/cuda/linear_impl.h"
#include "backends/cuda/mma.cuh"

namespace mlxcel::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kStages = 4;         // stages of a warp's ring
constexpr int kChunk = 128;        // values of K an MMA column takes
constexpr int kSub = 32;           // values a lane takes of a chunk
constexpr int kMinBlocks = 3;   // 8 bits: up to 85 registers
constexpr int kMinBlocks4 = 2;  // 4 bits (two chunks of B fragments a warp): up to 128
constexpr int kMaxCounters = 8192;  // row groups (counters at the front of scratch slot 6)

template <int BITS, typename S, int G, int CPW>
struct Lay {
  static constexpr int kCPW = CPW;                      // chunks of a warp's slice (8 bits: 1)
  static constexpr int kRowStage = CPW * kChunk * BITS / 8;  // bytes of a row in a stage
  static constexpr int kPiecesRow = kRowStage / 16;     // 16-byte copies a row
  static constexpr int kRowsRound = 32 / kPiecesRow;    // rows a warp copy instruction covers
  static constexpr int kWCopies = 16 / kRowsRound;      // 16-byte copies a lane and stage
  static constexpr int kSlice = kCPW * kChunk;          // values of K a slice
  static constexpr int kSGw = kCPW * G;                 // groups of a row in a slice
  static constexpr int kScaleRow = kSGw * int(sizeof(S));  // bytes of a row's scales in a stage
  // 4-byte copies a row and array (a lane's count); 8 bits at group 128 with 16-bit scales
  // (2 bytes a row) is declined by qgemv_ks.
  static constexpr int kN4 = kScaleRow >= 4 ? kScaleRow / 4 : 1;
  static constexpr int kStage = 16 * kRowStage + 2 * 16 * kScaleRow;
  // Odd rows' 16-byte pieces XOR-ed by kSwz: the two rows a quarter-warp reads fall in
  // different banks (64-byte rows need none).
  static constexpr int kSwz = BITS == 4 ? (CPW == 2 ? 4 : 0) : 1;
};
template <int BITS, typename S, int G, int CPW>
constexpr size_t smem_bytes() {
  return size_t(kWarps) * kStages * Lay<BITS, S, G, CPW>::kStage;
}


template <int BITS, typename S, int G, int CPW, bool kGated>
__global__ void __launch_bounds__(kThreads, CPW == 2 ? kMinBlocks4 : kMinBlocks)
    qgemv_ks_kernel(const float* __restrict__ x, int M, const GemvParts P, int K, int group_shift, unsigned tiles,
                    int slices, int sblocks, int rgroups, float* __restrict__ part, unsigned* __restrict__ counters,
                    int pre) {
  using L = Lay<BITS, S, G, CPW>;
  constexpr int kRowStage = L::kRowStage;
  constexpr int kOut = kGated ? 8 : 16;
  constexpr int kPiece = 4 / int(sizeof(S));  // scales a 4-byte copy
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ unsigned s_last;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const int sb = int(blockIdx.x % unsigned(sblocks)), rg = int(blockIdx.x / unsigned(sblocks));
  const int slice = sb * kWarps + warp;  // this warp's slice of K
  const unsigned t_begin = unsigned(uint64_t(rg) * tiles / unsigned(rgroups));
  const unsigned t_end = unsigned(uint64_t(rg + 1) * tiles / unsigned(rgroups));
  const int total = int(t_end - t_begin);
  const int groups = K >> group_shift, subs = K / kSub;
  const int64_t wpr = int64_t(K) * BITS / 32;  // words a row
  unsigned char* ring = smem_raw + size_t(warp) * kStages * L::kStage;

  auto finish_value = [&](unsigned t, int r, int m, float sum, float up) {
    const GemvRows o = gemv_rows(P, t, kOut);
    const int64_t n = o.row0 + r;
    if (n >= o.N) return;
    if (P.bias[o.part]) sum += static_cast<const float*>(P.bias[o.part])[n];
    if constexpr (kGated) {
      if (P.bias[1]) up += static_cast<const float*>(P.bias[1])[n];
      sum = act_any(Act(P.gate_act), sum) * up;
    }
    static_cast<float*>(P.out[o.part])[int64_t(m) * o.N + n] = sum;
  };

  if (slice < slices && total > 0) {
    // ---- the warp's copies of a stage: 16 rows x 128 bytes (lane: rows lane / 8 + 4 k,
    // piece lane % 8), then the rows' scales and biases of the slice in 4-byte pieces ----
    const int wpiece = lane % L::kPiecesRow;
    const bool w_in = slice * L::kSlice + wpiece * (128 / BITS) < K;
    const uint32_t* wsrc[L::kWCopies];
    const S* ssrc;  // lane: array lane / 16 (scales, biases), row lane % 16; copy k = 4-byte piece k
    const int srow = lane & 15, sarr = lane >> 4;
    unsigned s_in = 0;  // bit k: piece k lies inside the row's groups
#pragma unroll
    for (int k = 0; k < L::kN4; ++k) s_in |= slice * L::kSGw + k * kPiece < groups ? 1u << k : 0u;
    unsigned next_point = t_begin;
    auto point = [&](unsigned t) {
      const GemvRows gr = gemv_rows(P, t, kOut);
      const unsigned end = P.block_end[kGated ? 0 : gr.part];
      next_point = t + 1 < end - 1 ? end - 1 : t + 1;  // the part's last tile may be cut short
      auto row_of = [&](int r, int& src) {
        src = kGated ? r / 8 : gr.part;
        const int64_t row = gr.row0 + (kGated ? r % 8 : r);
        return row < gr.N ? row : gr.N - 1;
      };
#pragma unroll
      for (int k = 0; k < L::kWCopies; ++k) {
        int src;
        const int64_t row = row_of(lane / L::kPiecesRow + L::kRowsRound * k, src);
        wsrc[k] = static_cast<const uint32_t*>(P.w[src]) + row * wpr + slice * (L::kSlice * BITS / 32) + wpiece * 4;
      }
      {
        int src;
        const int64_t row = row_of(srow, src);
        ssrc = static_cast<const S*>(sarr ? P.biases[src] : P.scales[src]) + row * groups + slice * L::kSGw;
      }
    };
    auto issue = [&](int p) {
      if (p < total) {
        const unsigned t = t_begin + unsigned(p);
        if (t >= next_point) {
          point(t);
        } else {
#pragma unroll
          for (int k = 0; k < L::kWCopies; ++k) wsrc[k] += kOut * wpr;
          ssrc += kOut * groups;
        }
        unsigned char* st = ring + (p % kStages) * L::kStage;
#pragma unroll
        for (int k = 0; k < L::kWCopies; ++k) {
          const int r = lane / L::kPiecesRow + L::kRowsRound * k;
          cp_async16(st + r * kRowStage + ((wpiece ^ ((r & 1) * L::kSwz)) << 4),
                     w_in ? static_cast<const void*>(wsrc[k]) : P.w[0], w_in);
        }
#pragma unroll
        for (int k = 0; k < L::kN4; ++k) {
          const bool in = (s_in >> k) & 1u;
          cp_async4(st + 16 * kRowStage + sarr * 16 * L::kScaleRow + srow * L::kScaleRow + k * 4,
                    in ? static_cast<const void*>(ssrc + k * kPiece) : P.scales[0], in);
        }
      }
      cp_async_commit();  // an empty group past the end keeps the wait counts uniform
    };

    // ---- x: each chunk's B fragments and column sums, once ----
    const int btok = g / G;  // B column g: token g / G, group g % G of the chunk
    for (int d = 0; d < pre; ++d) issue(d);
    pdl_wait();
    float4 xv[L::kCPW][8];
#pragma unroll
    for (int h = 0; h < L::kCPW; ++h) {
      const int sub = (slice * L::kCPW + h) * 4 + c;
      if (btok < M && (c * G) / 4 == g % G && sub < subs) {
        const float4* xp = reinterpret_cast<const float4*>(x + int64_t(btok) * K + int64_t(sub) * kSub);
#pragma unroll
        for (int i = 0; i < 8; ++i) xv[h][i] = xp[i];
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) xv[h][i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
    }
    for (int d = pre; d < kStages - 1; ++d) issue(d);
    pdl_trigger();
    unsigned bx[L::kCPW][16];
    float xs[L::kCPW][2], pws[L::kCPW][2];
#pragma unroll
    for (int h = 0; h < L::kCPW; ++h) {
      float xsum = 0.0f, pw = 1.0f;
      if constexpr (BITS == 4) {
        // Pair p = 4 i + j: values 8 i + j and 8 i + j + 4 (nib_pair's order), rounded to bf16.
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float4 lo = xv[h][2 * i], hi = xv[h][2 * i + 1];
          const float a[4] = {lo.x, lo.y, lo.z, lo.w}, b[4] = {hi.x, hi.y, hi.z, hi.w};
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const __nv_bfloat162 v = __floats2bfloat162_rn(a[j], b[j]);
            bx[h][4 * i + j] = *reinterpret_cast<const unsigned*>(&v);
            xsum += __low2float(v) + __high2float(v);
          }
        }
      } else {
        // The column's largest |x| (its lanes are one quad) sets the scale 2^-e.
        float amax = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i)
          amax = fmaxf(amax, fmaxf(fmaxf(fabsf(xv[h][i].x), fabsf(xv[h][i].y)),
                                   fmaxf(fabsf(xv[h][i].z), fabsf(xv[h][i].w))));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
        // e = exponent(amax) - 14, kept in [-100, 100] (zero / tiny / huge columns).
        const int e = min(max(int((__float_as_uint(amax) >> 23) & 0xFF) - 127 - 14, -100), 100);
        const float inv = __uint_as_float(uint32_t(127 - e) << 23);
        pw = __uint_as_float(uint32_t(127 + e) << 23);
        // Word q of the lane's 8 holds values 4q..4q+3: pair 0 = (4q, 4q+2), pair 1 = (4q+1, 4q+3).
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          const __half2 v0 = __floats2half2_rn(xv[h][q].x * inv, xv[h][q].z * inv);
          const __half2 v1 = __floats2half2_rn(xv[h][q].y * inv, xv[h][q].w * inv);
          bx[h][2 * q] = *reinterpret_cast<const unsigned*>(&v0);
          bx[h][2 * q + 1] = *reinterpret_cast<const unsigned*>(&v1);
          xsum += (__low2float(v0) + __high2float(v0)) + (__low2float(v1) + __high2float(v1));
        }
      }
      // Column g's sum over its quad, then each lane takes its result columns 2c, 2c + 1.
      xsum += __shfl_xor_sync(0xffffffffu, xsum, 1);
      xsum += __shfl_xor_sync(0xffffffffu, xsum, 2);
      xsum *= pw;  // exact (a power of two)
      xs[h][0] = __shfl_sync(0xffffffffu, xsum, 8 * c), xs[h][1] = __shfl_sync(0xffffffffu, xsum, 8 * c + 4);
      pws[h][0] = __shfl_sync(0xffffffffu, pw, 8 * c), pws[h][1] = __shfl_sync(0xffffffffu, pw, 8 * c + 4);
    }
    const int grp0 = G == 4 ? 2 * (c & 1) : 0;  // the lane's first group in a chunk
    constexpr float kBase = BITS == 4 ? 128.0f : 1024.0f;
    using T = std::conditional_t<BITS == 4, bf16, f16>;

    for (int p = 0; p < total; ++p) {
      cp_async_wait<kStages - 2>();
      __syncwarp();  // stage p landed for every lane; slot p - 1 is read by every lane
      issue(p + kStages - 1);
      const unsigned char* st = ring + (p % kStages) * L::kStage;
      const S* ss = reinterpret_cast<const S*>(st + 16 * kRowStage);
      float y[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
#pragma unroll
      for (int h = 0; h < L::kCPW; ++h) {
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if constexpr (BITS == 4) {
          // Row g's piece 4 h + c (its odd rows XOR-ed by 4), row g + 8 the same.
          const int pc = (4 * h + c) ^ ((g & 1) * L::kSwz);
          const uint4 wa = *reinterpret_cast<const uint4*>(st + g * kRowStage + pc * 16);
          const uint4 wb = *reinterpret_cast<const uint4*>(st + (g + 8) * kRowStage + pc * 16);
          const uint32_t w0[4] = {wa.x, wa.y, wa.z, wa.w}, w1[4] = {wb.x, wb.y, wb.z, wb.w};
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const unsigned a0[4] = {nib_pair(w0[q], 0), nib_pair(w1[q], 0), nib_pair(w0[q], 1), nib_pair(w1[q], 1)};
            mma<T>(acc, a0, bx[h][4 * q], bx[h][4 * q + 1]);
            const unsigned a1[4] = {nib_pair(w0[q], 2), nib_pair(w1[q], 2), nib_pair(w0[q], 3), nib_pair(w1[q], 3)};
            mma<T>(acc, a1, bx[h][4 * q + 2], bx[h][4 * q + 3]);
          }
        } else {
          uint32_t w0[8], w1[8];
#pragma unroll
          for (int u = 0; u < 2; ++u) {
            const int pc = (2 * c + u) ^ ((g & 1) * L::kSwz);
            const uint4 wa = *reinterpret_cast<const uint4*>(st + g * kRowStage + pc * 16);
            const uint4 wb = *reinterpret_cast<const uint4*>(st + (g + 8) * kRowStage + pc * 16);
            w0[4 * u] = wa.x, w0[4 * u + 1] = wa.y, w0[4 * u + 2] = wa.z, w0[4 * u + 3] = wa.w;
            w1[4 * u] = wb.x, w1[4 * u + 1] = wb.y, w1[4 * u + 2] = wb.z, w1[4 * u + 3] = wb.w;
          }
#pragma unroll
          for (int q = 0; q < 8; ++q) {
            const unsigned a[4] = {__byte_perm(w0[q], 0x64646464u, 0x4240), __byte_perm(w1[q], 0x64646464u, 0x4240),
                                   __byte_perm(w0[q], 0x64646464u, 0x4341), __byte_perm(w1[q], 0x64646464u, 0x4341)};
            mma<T>(acc, a, bx[h][2 * q], bx[h][2 * q + 1]);
          }
        }
        const int sidx = h * G + grp0;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = g + 8 * r;
          const float s0 = to_f(ss[row * L::kSGw + sidx]), b0 = to_f(ss[16 * L::kSGw + row * L::kSGw + sidx]);
          const float s1 = G == 1 ? s0 : to_f(ss[row * L::kSGw + sidx + 1]);
          const float b1 = G == 1 ? b0 : to_f(ss[16 * L::kSGw + row * L::kSGw + sidx + 1]);
          y[r][0] = fmaf(BITS == 4 ? s0 : s0 * pws[h][0], acc[2 * r], fmaf(fmaf(-kBase, s0, b0), xs[h][0], y[r][0]));
          y[r][1] = fmaf(BITS == 4 ? s1 : s1 * pws[h][1], acc[2 * r + 1], fmaf(fmaf(-kBase, s1, b1), xs[h][1], y[r][1]));
        }
      }
      // Columns 2c, 2c + 1 -> tokens (G = 1: tokens 2c, 2c + 1; G = 2: token c; G = 4: half
      // of token c / 2, the other half on lane c ^ 1).
      float v[2][2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if constexpr (G == 1) {
          v[r][0] = y[r][0], v[r][1] = y[r][1];
        } else {
          v[r][0] = y[r][0] + y[r][1];
          if constexpr (G == 4) v[r][0] += __shfl_xor_sync(0xffffffffu, v[r][0], 1);
          v[r][1] = 0.0f;
        }
      }
      const unsigned t = t_begin + unsigned(p);
#pragma unroll
      for (int e = 0; e < (G == 1 ? 2 : 1); ++e) {
        const int m = G == 1 ? 2 * c + e : G == 2 ? c : c >> 1;
        if (m < M && (G != 4 || (c & 1) == 0)) {
          if (slices > 1) {
            float* ps = part + (size_t(slice) * tiles + t) * 16 * M;
            ps[g * M + m] = v[0][e];
            ps[(g + 8) * M + m] = v[1][e];
          } else if constexpr (kGated) {
            finish_value(t, g, m, v[0][e], v[1][e]);
          } else {
            finish_value(t, g, m, v[0][e], 0.0f);
            finish_value(t, g + 8, m, v[1][e], 0.0f);
          }
        }
      }
    }
    cp_async_wait<0>();
  }
  if (slices == 1 || total == 0) return;

  // The last of the row group's blocks to get here adds the slices' sums, slice by slice.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(&counters[rg], 1u) == unsigned(sblocks - 1) ? 1u : 0u;
  __syncthreads();
  if (!s_last) return;
  pdl_wait();  // (warps without a slice skipped it above)
  __threadfence();
  const int per_tile = kOut * M;
  for (int idx = threadIdx.x; idx < total * per_tile; idx += kThreads) {
    const unsigned t = t_begin + unsigned(idx / per_tile);
    const int r = (idx % per_tile) / M, m = idx % M;
    float sum = 0.0f, up = 0.0f;
    const float* ps = part + size_t(t) * 16 * M + r * M + m;
    const size_t step = size_t(tiles) * 16 * M;
#pragma unroll 8
    for (int s = 0; s < slices; ++s) {  // (unrolled: 8 loads in flight, added in slice order)
      sum += __ldcg(ps + s * step);
      if constexpr (kGated) up += __ldcg(ps + s * step + 8 * M);
    }
    finish_value(t, r, m, sum, up);
  }
  if (threadIdx.x == 0) counters[rg] = 0u;
}

template <int BITS, typename S, int G, int CPW>
void launch(const float* x, int M, GemvParts P, int64_t K, int shift, int dev, cudaStream_t st) {
  using L = Lay<BITS, S, G, CPW>;
  const bool gated = P.gate_act >= 0;
  const unsigned tiles = plan_blocks(P, gated ? 8 : 16);
  const size_t smem = smem_bytes<BITS, S, G, CPW>();
  auto kernel = gated ? qgemv_ks_kernel<BITS, S, G, CPW, true> : qgemv_ks_kernel<BITS, S, G, CPW, false>;
  const int blocks_per_sm = gated ? blocks_at_smem<qgemv_ks_kernel<BITS, S, G, CPW, true>>(smem, kThreads, dev)
                                    : blocks_at_smem<qgemv_ks_kernel<BITS, S, G, CPW, false>>(smem, kThreads, dev);
  const int slices = int((K + L::kSlice - 1) / L::kSlice);
  const int sblocks = (slices + kWarps - 1) / kWarps;
  // One wave of blocks (0.67 or 2 waves measured slower: cuda_gemv.md run 9).
  const int64_t cap = int64_t(sm_count(dev)) * blocks_per_sm;
  const int rgroups = int(std::max<int64_t>(1, std::min<int64_t>({int64_t(tiles), cap / sblocks, kMaxCounters})));
  float* part = nullptr;
  unsigned* counters = nullptr;
  if (slices > 1) {
    const size_t counter_bytes = size_t(kMaxCounters) * 4;
    unsigned char* buf =
        static_cast<unsigned char*>(scratch(counter_bytes + size_t(slices) * tiles * 16 * size_t(M) * 4, 6));
    static void* zeroed[64] = {};
    void*& z = zeroed[dev >= 0 && dev < 64 ? dev : 0];
    if (z != buf) {  // a new buffer: its counters start at zero (each launch leaves them so)
      MLXCEL_CUDA_CHECK(cudaMemsetAsync(buf, 0, counter_bytes, st));
      z = buf;
    }
    counters = reinterpret_cast<unsigned*>(buf);
    part = reinterpret_cast<float*>(buf + counter_bytes);
  }
  const unsigned grid = unsigned(rgroups) * unsigned(sblocks);
  // Stages issued before pdl_wait: all of the first ones under programmatic launch (they
  // overlap the kernel before), none otherwise (x's loads first: issuing the weights first
  // measured slower, cuda_gemv.md runs 8 and 9).
  const int pre = pdl_on() ? kStages - 1 : 0;
  launch_pdl(kernel, grid, kThreads, smem, st, x, M, P, int(K), shift, tiles, slices, sblocks, rgroups, part, counters,
             pre);
}

}  // namespace

bool qgemv_ks(const float* x, int M, GemvParts P, int bits, int group_shift, int64_t K, DType scale_dtype,
              cudaStream_t st) {
  if ((bits != 4 && bits != 8) || group_shift < 5 || group_shift > 7 || K % kSub != 0 || M < 1 ||
      K > (int64_t(1) << 30))
    return false;
  const int G = kChunk >> group_shift;
  if (M > 8 / G) return false;
  if (bits == 8 && G == 1 && scale_dtype != DType::f32) return false;  // a row's scales of a slice: 2 bytes
  const int dev = current_device();
  if (compute_major(dev) < 8) return false;
  // 4-byte copies of scale pairs (16-bit scales) need an even number of groups a row.
  if (scale_dtype != DType::f32 && (K >> group_shift) % 2 != 0) return false;
  if (!copy_aligned(x, P, true)) return false;
  // Rows of K / 8 (4-bit) or K / 4 (8-bit) words: 16-byte copies need K % 32 (4-bit) /
  // K % 16 (8-bit) values, which K % 32 == 0 gives; the row starts must be 16-byte aligned.
  if ((K * bits / 8) % 16 != 0) return false;
  by_float_type(scale_dtype, "qgemv_ks: scales", [&](auto tag) {
    using S = decltype(tag);
    auto run = [&](auto bits_tag, auto cpw_tag) {
      constexpr int B = decltype(bits_tag)::value, C = decltype(cpw_tag)::value;
      if (G == 1) launch<B, S, 1, C>(x, M, P, K, group_shift, dev, st);
      else if (G == 2) launch<B, S, 2, C>(x, M, P, K, group_shift, dev, st);
      else launch<B, S, 4, C>(x, M, P, K, group_shift, dev, st);
    };
    // 4 bits: a warp's slice is two chunks (256 values: 128-byte row pieces, up to 128
    // registers, 2 blocks an SM; one chunk, 64-byte pieces at 3 blocks an SM, measured
    // slower: cuda_gemv.md run 9); 8 bits: one chunk (128-byte pieces, 3 blocks an SM).
    if (bits == 8) run(std::integral_constant<int, 8>{}, std::integral_constant<int, 1>{});
    else run(std::integral_constant<int, 4>{}, std::integral_constant<int, 2>{});
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
  return true;
}

}  // namespace mlxcel::cuda
