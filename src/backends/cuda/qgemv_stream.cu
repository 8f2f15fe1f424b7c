// Batch-1 quantized GEMV that streams the weights through shared memory with the Hopper
// bulk-copy engine (gemv_variant 7; linear_impl.h qgemv_stream): y [1, N] = x [1, K] @
// dequant(w)^T for MLX affine 4- and 8-bit weights, sm_90.
//
// Why: design 0 (quantized.cu) gives each thread one chunk per row and issues all of a
// block's loads before its math; a block then computes while nothing of its own is in
// flight, so an SM alternates between loading and computing and a Llama-3.1-8B q4 layer
// reads at about 43% of the copy bandwidth (bench/results/cuda_gemv.md). Here a block owns
// a run of row groups and a producer warp keeps kStages tiles in flight with
// cp.async.bulk (no registers, no address math per byte) while 8 consumer warps compute
// on the tile that has landed: loads and math overlap inside the SM.
//
// A work item is 8 weight rows (gated: 4 rows of gate and the same 4 of up) times a tile
// of kTile values of K: the rows' packed words, scales and biases, 8 x 3 bulk copies.
// Consumer thread t takes chunk t % 128 of the tile for rows 4 (t / 128) .. + 3, so each
// row's K is split over 4 warps in the chunk order of design 0 (thread t: chunks t, t +
// 128, ...); the f32 math per chunk is design 0's too. The results are therefore
// bit-identical to design 0 (tests/gpu/cuda_ops_test.cpp checks it).
//
// Blocks own contiguous runs of row groups (all tiles of a group in one block), taken in
// batches of kBatch groups, tile by tile inside a batch: each group's partial sums stay in
// registers until its last tile (then 4 warps' sums meet in shared memory), and a thread
// reloads its x chunk (and its sum) once a tile and batch, or never again when K is one
// tile. Two blocks share an SM.
//
// Where it pays (H100, cuda_bench): the 4-bit gate/up launch of Llama-3.1-8B, 48.9% ->
// 57.9% of copy bandwidth, and Llama-3.1-8B q4 decode 273-276 -> 304-311 tok/s. It
// loses on small launches (q/o 36.8% -> 31.5%: one or two items a block, all ramp), on
// K beyond one tile (down_proj 54% -> 47%: x reloaded every tile) and for 8-bit decode
// (232 -> 218 tok/s). Design 0 therefore hands it only 4-bit, one-tile launches of at
// least 16 row groups per SM (qgemv_stream's only_where_faster). One bulk copy for the
// 8 rows plus cp.async for scales and biases measured the same as 24 bulk copies.
#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "backends/cuda/common.cuh"
#include "backends/cuda/gemv.cuh"
#include "backends/cuda/linear_impl.h"
#include "backends/cuda/mma.cuh"
#include "backends/cuda/qchunk.cuh"

namespace mlxcel::cuda {

namespace {

constexpr int kRows = 8;            // weight rows of a work item
constexpr int kConsumerWarps = 8;   // 2 row sets x 4 warps along K
constexpr int kThreads = (kConsumerWarps + 1) * 32;  // + the producer warp
constexpr int kTile = 4096;         // values of K per work item
constexpr int kChunks = kTile / 32;  // chunks of a row per tile = consumer threads per row set
constexpr int kRowsPerThread = kRows * kChunks / (kConsumerWarps * 32);  // 4
static_assert(kRowsPerThread == 4 && kChunks == 4 * 32, "thread map: 2 row sets of 4 warps");

template <int BITS>
constexpr int stages() {
  return BITS == 4 ? 4 : 3;  // 16 KB (4-bit) or 32 KB (8-bit) of words a stage
}

// A stage holds the 8 rows' words (words_bytes), then their scales, then their biases
// (each row `sb` bytes: the tile's groups times sizeof(S)).
template <int BITS>
__host__ __device__ constexpr int words_bytes() {
  return kRows * kTile * BITS / 8;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void mbar_init(uint64_t* b, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(b)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* b, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(b)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* b) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(b)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* b, unsigned parity) {
  unsigned done;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_u32(b)), "r"(parity)
        : "memory");
  } while (!done);
}
// `bytes` (a multiple of 16) from global src to shared dst (both 16-byte aligned);
// completion is counted on mbarrier b.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, uint64_t* b) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_u32(dst)),
               "l"(src), "r"(bytes), "r"(smem_u32(b))
               : "memory");
}
// The 256 consumer threads only (the producer warp may be waiting elsewhere).
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumerWarps * 32) : "memory");
}
#endif

// The items of a block's n row groups: batches of kBatch groups, tile-major inside a
// batch, so consecutive items share x's tile (reloaded once a tile and batch) while each
// group's sums still add up its tiles in order.
constexpr int kBatch = 4;
struct Item {
  int group, tile, slot, batch;  // group index in the block; its slot and the batch's size
};
__host__ __device__ __forceinline__ Item item_at(int i, int n, int tiles) {
  const int b = i / (kBatch * tiles), rem = i % (kBatch * tiles);
  const int nb = n - b * kBatch < kBatch ? n - b * kBatch : kBatch;
  return {b * kBatch + rem % nb, rem / nb, rem % nb, nb};
}

template <int BITS, typename S, bool kGated>
__global__ void __launch_bounds__(kThreads, 2)
    qgemv_stream_kernel(const float* __restrict__ x, const GemvParts P, int64_t K, int shift) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int kStages = stages<BITS>();
  constexpr int kOut = kGated ? kRows / 2 : kRows;
  constexpr int kRowWords = kTile * BITS / 32;  // u32 words of one row in a tile
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ uint64_t full[kStages], empty[kStages];
  __shared__ float red[kConsumerWarps][kBatch][kRowsPerThread];
  const int sb = int((kTile >> shift) * sizeof(S));  // scale (or bias) bytes of a row in a tile
  const int stage_bytes = words_bytes<BITS>() + 2 * kRows * sb;
  const unsigned groups = gemv_units<kGated>(P);
  const unsigned g_begin = unsigned(uint64_t(groups) * blockIdx.x / gridDim.x);
  const unsigned g_end = unsigned(uint64_t(groups) * (blockIdx.x + 1) / gridDim.x);
  const int tiles = int((K + kTile - 1) / kTile);
  const int items = int(g_end - g_begin) * tiles;
  const int64_t row_words = K * BITS / 32, row_groups = K >> shift;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) mbar_init(&full[s], 1), mbar_init(&empty[s], kConsumerWarps);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  // The producer reads only weights, so it starts filling the stages before the wait for
  // the kernel that writes x (launch_pdl); the consumers wait.
  if (warp == kConsumerWarps) {  // producer
    for (int i = 0; i < items; ++i) {
      const int s = i % kStages;
      if (i >= kStages) mbar_wait(&empty[s], ((i / kStages) & 1) ^ 1);
      const Item it = item_at(i, int(g_end - g_begin), tiles);
      const GemvRows gr = gemv_rows(P, g_begin + unsigned(it.group), kOut);
      const int64_t k0 = int64_t(it.tile) * kTile;
      const int64_t kv = K - k0 < kTile ? K - k0 : kTile;  // values of K in this tile
      const unsigned wbytes = unsigned(kv * BITS / 8), sbytes = unsigned((kv >> shift) * int64_t(sizeof(S)));
      unsigned char* st = smem + size_t(s) * stage_bytes;
      // Rows past N repeat row N - 1 (their sums are not stored).
      auto src_row = [&](int r, int& src) {
        src = kGated ? r / kOut : gr.part;
        const int64_t row = gr.row0 + r % kOut;
        return row < gr.N ? row : gr.N - 1;
      };
      if (lane == 0) mbar_expect_tx(&full[s], kRows * (wbytes + 2 * sbytes));
      __syncwarp();
      if (lane < 3 * kRows) {
        const int r = lane % kRows, what = lane / kRows;
        int src;
        const int64_t row = src_row(r, src);
        if (what == 0) {
          bulk_copy(st + r * kRowWords * 4, static_cast<const uint32_t*>(P.w[src]) + row * row_words + k0 * BITS / 32,
                    wbytes, &full[s]);
        } else {
          const S* base = static_cast<const S*>(what == 1 ? P.scales[src] : P.biases[src]);
          bulk_copy(st + words_bytes<BITS>() + ((what - 1) * kRows + r) * sb, base + row * row_groups + (k0 >> shift),
                    sbytes, &full[s]);
        }
      }
    }
    return;
  }

  // consumers
  pdl_enter();
  const int t = threadIdx.x, c = t % kChunks, set = t / kChunks;  // chunk of the tile; rows 4 set .. + 3
  float acc[kBatch][kRowsPerThread];
#pragma unroll
  for (int j = 0; j < kBatch; ++j)
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) acc[j][r] = 0.0f;
  float xv[32];
  float xs = 0.0f;
  for (int i = 0; i < items; ++i) {
    const Item it = item_at(i, int(g_end - g_begin), tiles);
    const int s = i % kStages;
    const int64_t k0 = int64_t(it.tile) * kTile;
    const bool active = k0 + c * 32 < K;
    // x does not depend on the stage: load it before waiting (once a tile and batch).
    if (active && (i == 0 || (tiles > 1 && it.slot == 0))) {
      xs = 0.0f;
      load_x_chunk(x + k0 + c * 32, xv);
#pragma unroll
      for (int j = 0; j < 32; ++j) xs += xv[j];
      if constexpr (BITS == 4) scale_x_chunk4(xv);
    }
    mbar_wait(&full[s], (i / kStages) & 1);
    if (active) {
      float a[kRowsPerThread];
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
        if (j == it.slot)
#pragma unroll
          for (int r = 0; r < kRowsPerThread; ++r) a[r] = acc[j][r];
      const unsigned char* st = smem + size_t(s) * stage_bytes;
      const int g = (c * 32) >> shift;
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int row = set * kRowsPerThread + r;
        uint32_t wd[BITS];
        load_chunk<BITS>(reinterpret_cast<const uint32_t*>(st) + row * kRowWords + c * BITS, wd);
        const float sc = to_f(reinterpret_cast<const S*>(st + words_bytes<BITS>() + row * sb)[g]);
        const float bi = to_f(reinterpret_cast<const S*>(st + words_bytes<BITS>() + (kRows + row) * sb)[g]);
        float d = 0.0f;
#pragma unroll
        for (int j = 0; j < 32; ++j) {
          if constexpr (BITS == 4) d = fmaf(xv[j], chunk_value_in_place4(wd, j), d);
          else d = fmaf(xv[j], chunk_value<BITS>(wd, j), d);
        }
        if constexpr (BITS == 4) d *= kChunkUnscale;
        a[r] = fmaf(sc, d, fmaf(bi, xs, a[r]));
      }
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
        if (j == it.slot)
#pragma unroll
          for (int r = 0; r < kRowsPerThread; ++r) acc[j][r] = a[r];
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[s]);
    if (it.tile == tiles - 1 && it.slot == it.batch - 1) {  // the batch is done: 4 warps' sums per row
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        if (j < it.batch) {
#pragma unroll
          for (int r = 0; r < kRowsPerThread; ++r) {
            const float v = warp_sum(acc[j][r]);
            if (lane == 0) red[warp][j][r] = v;
            acc[j][r] = 0.0f;
          }
        }
      }
      consumers_sync();
      if (t < it.batch * kOut) {
        const int j = t / kOut, o = t % kOut;
        const GemvRows gr = gemv_rows(P, g_begin + unsigned(it.group - it.slot + j), kOut);
        const int64_t n = gr.row0 + o;
        if (n < gr.N) {
          // Row q of a group sits in warps 4 (q / 4) .. + 3, slot q % 4.
          auto total = [&](int q) {
            float v = 0.0f;
#pragma unroll
            for (int w = 0; w < 4; ++w) v += red[4 * (q / 4) + w][j][q % 4];
            return v;
          };
          float v = total(o);
          if (P.bias[gr.part]) v += static_cast<const float*>(P.bias[gr.part])[n];
          if constexpr (kGated) {
            float u = total(o + kOut);
            if (P.bias[1]) u += static_cast<const float*>(P.bias[1])[n];
            v = act_any(Act(P.gate_act), v) * u;
          }
          static_cast<float*>(P.out[gr.part])[n] = v;
        }
      }
      consumers_sync();
    }
  }
#endif
}

// Blocks per SM (MLXCEL_QSTREAM_BLOCKS, a tuning knob; default 2).
int blocks_per_sm() {
  static const int v = [] {
    const char* e = std::getenv("MLXCEL_QSTREAM_BLOCKS");
    const int n = e ? std::atoi(e) : 2;
    return n < 1 ? 1 : n > 2 ? 2 : n;
  }();
  return v;
}

// P.block_end already planned (plan_blocks, `groups` row groups in all).
template <int BITS, typename S, bool kGated>
void launch(const float* x, const GemvParts& P, unsigned groups, int64_t K, int shift, int dev, cudaStream_t st) {
  const int sb = int((kTile >> shift) * sizeof(S));
  const int smem = stages<BITS>() * (words_bytes<BITS>() + 2 * kRows * sb);
  auto kernel = qgemv_stream_kernel<BITS, S, kGated>;
  static int configured[64] = {};  // the largest dynamic shared memory set, per device
  if (dev >= 0 && dev < 64 && configured[dev] < smem) {
    MLXCEL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    configured[dev] = smem;
  }
  const unsigned grid = std::min(groups, unsigned(sm_count(dev) * blocks_per_sm()));
  launch_pdl(kernel, grid, kThreads, size_t(smem), st, x, P, K, shift);
}

}  // namespace

bool qgemv_stream(const float* x, int M, GemvParts P, int bits, int group_shift, int64_t K, DType scale_dtype,
                  bool only_where_faster, cudaStream_t st) {
  if (M != 1 || (bits != 4 && bits != 8) || group_shift < 5 || group_shift > 7 || K % 32 != 0) return false;
  const int dev = current_device();
  if (compute_major(dev) < 9) return false;
  if (only_where_faster) {
    // Measured faster than design 0 (bench/results/cuda_gemv.md run 6): 4-bit weights,
    // one tile of K (x stays in registers) and at least 16 row groups per SM (below; the
    // Llama-3.1-8B gate/up launch and LM head). Smaller launches lose to their ramp,
    // longer K to reloading x every tile; 8-bit decode measured 6% slower with it.
    if (bits != 4 || K > kTile) return false;
  }
  // Bulk copies move multiples of 16 bytes between 16-byte aligned addresses: every row's
  // words and scales, and every tile's share of them, must keep that alignment.
  const int64_t ss = scale_dtype == DType::f32 ? 4 : 2;
  const int64_t last = K % kTile ? K % kTile : kTile;
  if ((K * bits / 8) % 16 || ((K >> group_shift) * ss) % 16 || ((last >> group_shift) * ss) % 16 ||
      ((kTile >> group_shift) * ss) % 16)
    return false;
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0) return false;
  for (int i = 0; i < P.n; ++i) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(P.w[i]) | reinterpret_cast<uintptr_t>(P.scales[i]) |
                        reinterpret_cast<uintptr_t>(P.biases[i]);
    if (a % 16 != 0) return false;
  }
  const bool gated = P.gate_act >= 0;
  const unsigned groups = plan_blocks(P, gated ? kRows / 2 : kRows);
  if (only_where_faster && groups < 16u * unsigned(sm_count(dev))) return false;
  by_float_type(scale_dtype, "qgemv_stream: scales", [&](auto tag) {
    using S = decltype(tag);
    if (bits == 4) {
      if (gated) launch<4, S, true>(x, P, groups, K, group_shift, dev, st);
      else launch<4, S, false>(x, P, groups, K, group_shift, dev, st);
    } else {
      if (gated) launch<8, S, true>(x, P, groups, K, group_shift, dev, st);
      else launch<8, S, false>(x, P, groups, K, group_shift, dev, st);
    }
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
  return true;
}

}  // namespace mlxcel::cuda
