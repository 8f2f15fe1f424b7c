// Decode GEMV of MLX affine 4-bit weights on the tensor cores, scales applied in f32
// (gemv_variant 8; linear_impl.h qgemv_tc): y [M, N] = x [M, K] @ dequant(w)^T for
// M <= 8 / G (G = 128 / group size: 1, 2 or 4 groups in a 128-value chunk), K a
// multiple of 32.
//
// Why: the f32 designs (quantized.cu) spend about 6 instructions per 4-bit weight and an
// H100 issues about 4.9 per weight at its read bandwidth, so they top out near half of it
// (cuda_gemv.md: ncu at 59% issue-busy, layer at 43% of copy bandwidth; same tok/s on an
// H200). Here a weight costs about 1.7 instructions:
//   - A nibble OR-ed into the mantissa of bf16 128.0 is 128 + q exactly: one LOP3 per two
//     weights (plus one shift per pair of them past the first), no subtraction, no scale.
//   - mma.sync.m16n8k16 (bf16 in, f32 accumulation) sums (128 + q) x over K: the MMA's 16
//     rows are weight rows, its 8 columns separate the groups of a chunk and the tokens:
//     column n holds token n / G's products with group n % G of the chunk (B is zero on
//     the lanes of other groups). So every column of a chunk's result lies in one group.
//   - Per chunk, a lane folds its two columns in f32:
//       y += s * D + (b - 128 s) * sum(x over the group),
//     the group sums of x (rounded to bf16, as the MMA sees it) made once in the prologue.
// The only rounding beyond f32 is x to bf16 (2^-9 relative), as in the bf16 prefill and
// the batched decode (qgemm_mma), and as MLX itself with bf16 activations; the weights
// stay exact.
//
// Memory: a first form had each lane load its fragment straight from global memory (a
// warp's load = 64 bytes of each of 16 rows) and read at half of design 0's rate. Here a
// block streams its tile's rows through a ring of kStages shared-memory stages with
// cp.async, each warp copying 512 contiguous bytes of a row per step, and the MMA lanes
// read their fragments from the stage (rows padded so the quads' reads do not collide).
//
// Work: a tile is 16 weight rows (gated: 8 rows of gate and the same 8 of up); a stage
// holds kSuper values of K of them, one 128-value chunk per warp; the 8 warps' sums meet
// in shared memory after a tile's last stage (fixed order: deterministic). Blocks take
// tiles blockIdx.x, + gridDim.x, ...; the copies run ahead across tile boundaries. After
// pdl_wait the block issues x's first loads, then its first weight stages, then converts
// x to bf16 pairs in lane order with the group sums, once per block (an LM head's x too).
//
// Status (session 22, an H200, bench/results/cuda_gemv.md run 8): the default for 4-bit
// launches of one row (gemv_variant 9) where design 11 (qgemv_rf.cu, session 24: faster
// on every shape it takes) declines them: group 128, K not a multiple of 512, K past
// 14336 (past 8192 for group 32). Llama-3.1-8B q4 layer 33.6-34.0% of copy
// bandwidth against design 0's 29.7-30.2%, tg128 335-345 against 309-313 tok/s. What
// moved it from run 7's 27.3%: x loaded before the weight copies (28.2%), one LOP3 per
// bf16 pair and 32-bit counters (28.7-28.9%), unchecked B-fragment and group-sum reads
// (zero block, padded sums: 31.0%), 3 blocks an SM with up to 85 registers instead of 4
// at 64 (ptxas recomputed lane indices every chunk: 33.4%). ncu on gate_proj: 3.7
// instructions a weight executed (was 5.2), 23% of them the per-block prologue; issue
// slots 55% busy.
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
constexpr int kStages = 4;   // stages of the shared-memory ring
constexpr int kChunk = 128;  // values of K an MMA tile takes (a quad's 64 bytes of a row)
constexpr int kSub = 32;     // values a lane takes (one sub-chunk)


// A stage: kSuper values of K of the tile's 16 rows as 4-bit words (rows padded by 64
// bytes so the quads' 16-byte reads of rows g and g + 1 fall in different banks), then
// the rows' scales, then their biases, for those values (kSuper / group of each a row).
// kSuper: values of K a stage, 1024 = one chunk a warp (2048, two a warp at 2 blocks an SM,
// measured slower: cuda_gemv.md run 8). kMinBlocks 3: up to 85 registers (at 4 blocks an
// SM, 64 registers, ptxas recomputed lane indices and zeroed B fragments every chunk).
constexpr int kSuper = 1024, kMinBlocks = 3;
constexpr int kRowBytes = kSuper / 2 + 64;  // 576
constexpr int kWordBytes = 16 * kRowBytes;  // 9216
template <typename S>
__host__ __device__ constexpr int stage_bytes(int G) {
  return kWordBytes + 2 * 16 * (kSuper / kChunk) * G * int(sizeof(S));
}

// Shared memory: the stage ring, 64 zero bytes (the B fragments of the lanes outside their
// group, and past K), then xb [M][K / 32][16] bf16 pairs in lane order, xsub [M][K / 32]
// sums of a sub-chunk's rounded values, xg [M][chunks * G] group sums (zero past K's
// groups, so a chunk reads its sums unchecked), red [8][16][9] the warps' partial sums.
template <typename S>
__host__ __device__ inline size_t smem_bytes(int M, int64_t K, int group_shift) {
  const int G = kChunk >> group_shift;
  return size_t(kStages) * size_t(stage_bytes<S>(G)) + size_t(M) * size_t(K) * 2 + size_t(M) * size_t(K / kSub) * 4 +
         size_t(M) * size_t((K + kChunk - 1) / kChunk * G) * 4 + size_t(kWarps) * 16 * 9 * 4 + 64;
}

template <typename S, int G, bool kGated>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    qgemv_tc_kernel(const float* __restrict__ x, int M, const GemvParts P, int64_t K, int group_shift,
                    unsigned tiles) {
  constexpr int kOut = kGated ? 8 : 16;
  static_assert(stage_bytes<S>(G) % 16 == 0, "the zero block and xb follow the ring 16-byte aligned");
  constexpr int kSG = (kSuper / kChunk) * G;          // groups of a row in a stage
  constexpr int kPiece = sizeof(S) == 2 ? 2 : 1;      // scales per 4-byte copy
  constexpr int kPieces = kSG / kPiece;               // 4-byte copies per row and array
  constexpr int kSBytes = 16 * kSG * int(sizeof(S));  // scales (or biases) of a stage
  extern __shared__ __align__(16) unsigned char smem_raw[];
  // K < 2^31 (qgemv_tc checks): 32-bit counters throughout.
  const int K32 = int(K), subs = K32 / kSub, chunks = (K32 + kChunk - 1) / kChunk, groups = K32 >> group_shift;
  const int supers = (K32 + kSuper - 1) / kSuper;
  unsigned char* ring = smem_raw;
  unsigned* zero64 = reinterpret_cast<unsigned*>(smem_raw + size_t(kStages) * stage_bytes<S>(G));
  unsigned* xb = zero64 + 16;
  float* xsub = reinterpret_cast<float*>(xb + size_t(M) * size_t(subs) * 16);
  float* xg = xsub + size_t(M) * size_t(subs);
  const int xgs = chunks * G;  // a token's group sums in xg (padded)
  float* red = xg + size_t(M) * size_t(xgs);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const int64_t words_per_row = K / 8;
  // This block's tiles: blockIdx.x, + gridDim.x, ...; its stages run tile by tile, each
  // tile's supers super-chunks in order.
  const int my_tiles = blockIdx.x < tiles ? int((tiles - blockIdx.x + gridDim.x - 1) / gridDim.x) : 0;
  const int nsup = supers, total = my_tiles * nsup;

  // The copies of a stage into its ring slot: 16 rows x 32 pieces of 16 bytes (thread t:
  // rows t / 32 and t / 32 + 8, piece t % 32: a warp copies 512 contiguous bytes of a row),
  // then the scales and biases in 4-byte pieces. Past K (or past a row's groups) they
  // zero-fill. The source pointers are set once a tile, then move by a stage's bytes.
  constexpr int kScaleCopies = (2 * 16 * kPieces + kThreads - 1) / kThreads;
  const uint32_t* wsrc[2];
  const S* ssrc[kScaleCopies];
  int iss_tile = 0, iss_sc = 0;  // the next stage to issue
  auto point = [&](int local_tile) {
    const GemvRows gr = gemv_rows(P, blockIdx.x + unsigned(local_tile) * gridDim.x, kOut);
    auto row_of = [&](int r, int& src) {
      src = kGated ? r / 8 : gr.part;
      const int64_t row = gr.row0 + (kGated ? r % 8 : r);
      return row < gr.N ? row : gr.N - 1;
    };
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      int src;
      const int64_t row = row_of(warp + 8 * k, src);
      wsrc[k] = static_cast<const uint32_t*>(P.w[src]) + row * words_per_row + lane * 4;
    }
#pragma unroll
    for (int k = 0; k < kScaleCopies; ++k) {
      const int idx = threadIdx.x + k * kThreads;
      const int arr = idx / (16 * kPieces), r = (idx / kPieces) % 16, piece = idx % kPieces;
      int src;
      const int64_t row = row_of(r, src);
      ssrc[k] = static_cast<const S*>(arr ? P.biases[src] : P.scales[src]) + row * groups + piece * kPiece;
    }
  };
  auto issue = [&](int p) {
    if (p < total) {
      if (iss_sc == 0) point(iss_tile);
      unsigned char* slot = ring + (p % kStages) * stage_bytes<S>(G);
      // A stage that lies inside K (every stage when K % kSuper == 0) copies without bounds
      // checks: copy(std::false_type) folds them away.
      auto copy = [&](auto checked) {
        constexpr bool kChecked = decltype(checked)::value;
        const int sub = iss_sc * (kSuper / kSub) + lane;
        const bool in_k = !kChecked || sub < subs;
#pragma unroll
        for (int k = 0; k < 2; ++k)
          cp_async16(slot + (warp + 8 * k) * kRowBytes + lane * 16, in_k ? wsrc[k] + iss_sc * (kSuper / 8) : wsrc[k],
                     in_k);
#pragma unroll
        for (int k = 0; k < kScaleCopies; ++k) {
          const int idx = threadIdx.x + k * kThreads;
          if (kScaleCopies * kThreads == 2 * 16 * kPieces || idx < 2 * 16 * kPieces) {
            const int arr = idx / (16 * kPieces), r = (idx / kPieces) % 16, piece = idx % kPieces;
            const bool grp_in = !kChecked || iss_sc * kSG + piece * kPiece < groups;
            cp_async4(slot + kWordBytes + arr * kSBytes + (r * kSG + piece * kPiece) * int(sizeof(S)),
                      grp_in ? ssrc[k] + iss_sc * kSG : ssrc[k], grp_in);
          }
        }
      };
      if ((iss_sc + 1) * kSuper <= K32) copy(std::false_type{});
      else copy(std::true_type{});
      if (++iss_sc == nsup) iss_sc = 0, ++iss_tile;
    }
    cp_async_commit();  // an empty group past the end keeps the wait counts uniform
  };

  // x -> bf16 pairs in lane order (pair p = 4 i + j of a sub-chunk: values 8 i + j and
  // 8 i + j + 4) and the sums of the rounded values, once per block. x's first loads are
  // issued before the weight stages: issued after them (the first form), they queued
  // behind every block's weight copies and every block waited there (ncu: 20% of the
  // stall samples on the conversion; cuda_gemv.md run 8).
  const int64_t nx = int64_t(M) * subs;
  auto load_x = [&](int64_t idx, float4 (&v)[8]) {
    const float4* xp = reinterpret_cast<const float4*>(x + (idx / subs) * K + (idx % subs) * kSub);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = xp[i];
  };
  auto store_x = [&](int64_t idx, const float4 (&v)[8]) {
    unsigned pr[16];
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float4 lo = v[2 * i], hi = v[2 * i + 1];
      const float a[4] = {lo.x, lo.y, lo.z, lo.w}, b[4] = {hi.x, hi.y, hi.z, hi.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const __nv_bfloat162 bv = __floats2bfloat162_rn(a[j], b[j]);
        pr[4 * i + j] = *reinterpret_cast<const unsigned*>(&bv);
        sum += __low2float(bv) + __high2float(bv);
      }
    }
    uint4* dst = reinterpret_cast<uint4*>(xb + idx * 16);
#pragma unroll
    for (int u = 0; u < 4; ++u) dst[u] = make_uint4(pr[4 * u], pr[4 * u + 1], pr[4 * u + 2], pr[4 * u + 3]);
    xsub[idx] = sum;
  };
  pdl_wait();
  {
    float4 v[8];
    const bool first = int64_t(threadIdx.x) < nx;
    if (first) load_x(threadIdx.x, v);
#pragma unroll
    for (int d = 0; d < kStages - 1; ++d) issue(d);
    if (first) store_x(threadIdx.x, v);
    for (int64_t idx = int64_t(threadIdx.x) + kThreads; idx < nx; idx += kThreads) {
      load_x(idx, v);
      store_x(idx, v);
    }
  }
  pdl_trigger();
  __syncthreads();
  {
    const int per_group = (1 << group_shift) / kSub;
    for (int idx = threadIdx.x; idx < M * xgs; idx += kThreads) {
      const int t = idx / xgs, gi = idx % xgs;
      float s = 0.0f;
      if (gi < groups)
        for (int u = 0; u < per_group; ++u) s += xsub[(t * groups + gi) * per_group + u];
      xg[idx] = s;
    }
    if (threadIdx.x < 16) zero64[threadIdx.x] = 0u;
  }
  // (the first stage's __syncthreads below publishes xg)

  // This lane's B column: token g / G, group g % G of the chunk; nonzero only on the lanes
  // whose sub-chunk lies in that group.
  const int btok = g / G;
  const bool bvalid = btok < M && (c * G) / 4 == g % G;
  // This lane's two result columns 2c, 2c + 1: their tokens and groups in the chunk.
  const int tok0 = G == 1 ? 2 * c : G == 2 ? c : c >> 1;
  const int tok1 = G == 1 ? 2 * c + 1 : tok0;
  const int grp0 = G == 4 ? 2 * (c & 1) : 0;
  const int grp1 = G == 1 ? 0 : grp0 + 1;
  const unsigned* xb_lane = xb + (size_t(bvalid ? btok : 0) * size_t(subs) + size_t(c)) * 16;
  const float* xg0 = xg + (tok0 < M ? tok0 : 0) * xgs + grp0;
  const float* xg1 = xg + (tok1 < M ? tok1 : 0) * xgs + grp1;
  const float m0 = tok0 < M ? 1.0f : 0.0f, m1 = tok1 < M ? 1.0f : 0.0f;

  float yacc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  int sc = 0, cons_tile = 0;  // the stage being consumed
  for (int p = 0; p < total; ++p) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage p landed for every thread; slot p - 1 is free again
    issue(p + kStages - 1);
    const int wc = warp;  // this warp's chunk of the stage
    const int ch = sc * (kSuper / kChunk) + wc;
    if (ch < chunks) {
      const unsigned char* slot = ring + (p % kStages) * stage_bytes<S>(G);
      const uint4 wa = *reinterpret_cast<const uint4*>(slot + g * kRowBytes + wc * 64 + c * 16);
      const uint4 wb = *reinterpret_cast<const uint4*>(slot + (g + 8) * kRowBytes + wc * 64 + c * 16);
      // B fragments: the lanes outside their group (and past K) read 64 zero bytes.
      unsigned bx[16];
      load_regs16(bx, bvalid && ch * 4 + c < subs ? xb_lane + ch * 4 * 16 : zero64, true);
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      const uint32_t w0[4] = {wa.x, wa.y, wa.z, wa.w}, w1[4] = {wb.x, wb.y, wb.z, wb.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const unsigned a0[4] = {nib_pair(w0[q], 0), nib_pair(w1[q], 0), nib_pair(w0[q], 1), nib_pair(w1[q], 1)};
        mma<bf16>(acc, a0, bx[4 * q], bx[4 * q + 1]);
        const unsigned a1[4] = {nib_pair(w0[q], 2), nib_pair(w1[q], 2), nib_pair(w0[q], 3), nib_pair(w1[q], 3)};
        mma<bf16>(acc, a1, bx[4 * q + 2], bx[4 * q + 3]);
      }
      const float xs0 = m0 * xg0[ch * G], xs1 = m1 * xg1[ch * G];
      const S* ss = reinterpret_cast<const S*>(slot + kWordBytes);
      const int sidx = wc * G + grp0;  // the lane's first group in the stage
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = g + 8 * r;
        const float s0 = to_f(ss[row * kSG + sidx]), b0 = to_f(ss[16 * kSG + row * kSG + sidx]);
        const float s1 = G == 1 ? s0 : to_f(ss[row * kSG + sidx + 1]);
        const float b1 = G == 1 ? b0 : to_f(ss[16 * kSG + row * kSG + sidx + 1]);
        yacc[r][0] = fmaf(s0, acc[2 * r], fmaf(fmaf(-128.0f, s0, b0), xs0, yacc[r][0]));
        yacc[r][1] = fmaf(s1, acc[2 * r + 1], fmaf(fmaf(-128.0f, s1, b1), xs1, yacc[r][1]));
      }
    }
    if (sc == nsup - 1) {
      // The tile's last stage: the 8 warps' sums meet (row g + 8 r, column 2c + e).
      float* mine = red + warp * 16 * 9;
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int e = 0; e < 2; ++e) mine[(g + 8 * r) * 9 + 2 * c + e] = yacc[r][e], yacc[r][e] = 0.0f;
      __syncthreads();
      const GemvRows o = gemv_rows(P, blockIdx.x + unsigned(cons_tile) * gridDim.x, kOut);
      for (int idx = threadIdx.x; idx < kOut * M; idx += kThreads) {
        const int r = idx / M, m = idx % M;
        const int64_t n = o.row0 + r;
        if (n >= o.N) continue;
        float sum = 0.0f, up = 0.0f;
        for (int q = 0; q < kWarps; ++q) {
          const float* rq = red + q * 16 * 9;
#pragma unroll
          for (int e = 0; e < G; ++e) {
            sum += rq[r * 9 + m * G + e];
            if constexpr (kGated) up += rq[(r + 8) * 9 + m * G + e];
          }
        }
        if (P.bias[o.part]) sum += static_cast<const float*>(P.bias[o.part])[n];
        if constexpr (kGated) {
          if (P.bias[1]) up += static_cast<const float*>(P.bias[1])[n];
          sum = act_any(Act(P.gate_act), sum) * up;
        }
        static_cast<float*>(P.out[o.part])[int64_t(m) * o.N + n] = sum;
      }
      // red is written again only after the next stage's __syncthreads.
    }
    if (++sc == nsup) sc = 0, ++cons_tile;
  }
  cp_async_wait<0>();
}

template <typename S, int G>
void launch(const float* x, int M, GemvParts P, int64_t K, int shift, int dev, cudaStream_t st) {
  const bool gated = P.gate_act >= 0;
  const unsigned tiles = plan_blocks(P, gated ? 8 : 16);
  const size_t smem = smem_bytes<S>(M, K, shift);
  auto kernel = gated ? qgemv_tc_kernel<S, G, true> : qgemv_tc_kernel<S, G, false>;
  const int blocks_per_sm = gated ? blocks_at_smem<qgemv_tc_kernel<S, G, true>>(smem, kThreads, dev)
                                    : blocks_at_smem<qgemv_tc_kernel<S, G, false>>(smem, kThreads, dev);
  const unsigned grid = std::min(tiles, unsigned(sm_count(dev) * blocks_per_sm));
  launch_pdl(kernel, grid, kThreads, smem, st, x, M, P, K, shift, tiles);
}

}  // namespace

bool qgemv_tc(const float* x, int M, GemvParts P, int bits, int group_shift, int64_t K, DType scale_dtype,
              cudaStream_t st) {
  if (bits != 4 || group_shift < 5 || group_shift > 7 || K % kSub != 0 || M < 1 || K > (int64_t(1) << 30)) return false;
  const int G = kChunk >> group_shift;
  if (M > 8 / G) return false;
  const size_t smem =
      scale_dtype == DType::f32 ? smem_bytes<float>(M, K, group_shift) : smem_bytes<bf16>(M, K, group_shift);
  if (smem > 160 * 1024) return false;
  const int dev = current_device();
  if (compute_major(dev) < 8) return false;
  // 4-byte copies of scale pairs (16-bit scales) need an even number of groups a row.
  if (scale_dtype != DType::f32 && (K >> group_shift) % 2 != 0) return false;
  if (!copy_aligned(x, P, true)) return false;
  by_float_type(scale_dtype, "qgemv_tc: scales", [&](auto tag) {
    using S = decltype(tag);
    if (G == 1) launch<S, 1>(x, M, P, K, group_shift, dev, st);
    else if (G == 2) launch<S, 2>(x, M, P, K, group_shift, dev, st);
    else launch<S, 4>(x, M, P, K, group_shift, dev, st);
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
  return true;
}

}  // namespace mlxcel::cuda
