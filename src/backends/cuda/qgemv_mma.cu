// Quantized GEMV on the tensor cores (gemv_variant 6; linear_impl.h qgemv_mma): y [M, N]
// = x [M, K] @ dequant(w)^T for M <= 8 and MLX affine 4- or 8-bit weights.
//
// The f32 designs of quantized.cu spend about four instructions per 4-bit weight and are
// ALU-bound on an H100/H200. Here a weight becomes f16 in about 1.5 instructions per
// weight (nibbles or bytes OR-ed into the mantissa of 1024.0 two at a time, one HSUB2
// and one HFMA2 with the group's scale and bias), and mma.sync.m16n8k16 (f32
// accumulation) does the products: the 16 rows of A are weight rows, the 8 columns of B
// are the M <= 8 activation rows (x rounded to f16), so one kernel serves decode of 1-8
// sequences.
//
// The order of the products along K is free, so each lane's A and B registers follow
// the packing of the weight words (no shuffles): lane (g, c) takes 32-value chunk c of
// each 128-value step for rows g and g + 8, and its x values in the same pairing. A
// block has 16 weight rows (gated: 8 rows of gate and the same 8 of up) and 8 warps that
// split K; their fragments are summed in shared memory.
//
// Precision: w = s q + b and x rounded to f16 (2^-11 relative), products and sums in
// f32. |x| beyond 65504 would overflow f16: this design is opt-in for that reason and
// because it is not bit-exact with the f32 designs (MLXCEL_CUDA_GEMV=6).
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "backends/cuda/common.cuh"
#include "backends/cuda/gemv.cuh"
#include "backends/cuda/linear_impl.h"
#include "backends/cuda/mma.cuh"

namespace mlxcel::cuda {

namespace {

constexpr int kWarps = 8;  // K split over the block's warps
constexpr int kU = 2;      // 128-value steps in flight per warp (4 measured slower: 174 registers, one block per SM)

// half2 (1024 + lo, 1024 + hi) - 1024: exact small integers.
__device__ __forceinline__ __half2 magic_sub(uint32_t v) {
  const __half2 h = *reinterpret_cast<const __half2*>(&v);
  return __hsub2(h, __half2half2(__ushort_as_half(0x6400)));
}

// The 32 values of a chunk (BITS words) as 16 half2 q values. Pair p holds values
// (lo(p), hi(p)) of the chunk: 4 bits, p = 4 i + j: (8 i + j, 8 i + j + 4); 8 bits,
// p = 2 i + j: (4 i + j, 4 i + j + 2).
template <int BITS>
__device__ __forceinline__ void chunk_q(const uint32_t (&wd)[BITS], __half2 (&q)[16]) {
  if constexpr (BITS == 4) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) q[4 * i + j] = magic_sub(((wd[i] >> (4 * j)) & 0x000F000Fu) | 0x64006400u);
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      q[2 * i] = magic_sub(__byte_perm(wd[i], 0x64646464u, 0x4240));
      q[2 * i + 1] = magic_sub(__byte_perm(wd[i], 0x64646464u, 0x4341));
    }
  }
}

// Chunk index of value pair p: the first and second value.
template <int BITS>
__device__ __forceinline__ constexpr int pair_lo(int p) {
  return BITS == 4 ? 8 * (p / 4) + p % 4 : 4 * (p / 2) + p % 2;
}
template <int BITS>
__device__ __forceinline__ constexpr int pair_hi(int p) {
  return pair_lo<BITS>(p) + (BITS == 4 ? 4 : 2);
}

__device__ __forceinline__ unsigned as_u32(__half2 h) { return *reinterpret_cast<unsigned*>(&h); }

// The lane's two weight rows of a 16-row MMA tile starting at tile0: rows g and g + 8
// (gated: gate row g and up row g), clamped to the part's last row.
template <typename S, bool kGated>
struct LaneRows {
  const uint32_t* w[2];
  const S* s[2];
  const S* b[2];
  __device__ __forceinline__ LaneRows(const GemvParts& P, const GemvRows& gr, int64_t tile0, int g, int bits,
                                      int64_t K, int group_shift) {
    const int64_t words_per_row = K / 32 * bits, groups_per_row = K >> group_shift;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int src = kGated ? i : gr.part;
      int64_t row = tile0 + (kGated ? g : g + 8 * i);
      row = row < gr.N ? row : gr.N - 1;
      w[i] = static_cast<const uint32_t*>(P.w[src]) + row * words_per_row;
      s[i] = static_cast<const S*>(P.scales[src]) + row * groups_per_row;
      b[i] = static_cast<const S*>(P.biases[src]) + row * groups_per_row;
    }
  }
  // Chunk ch's BITS words of both rows, and their group's scale and bias.
  template <int BITS>
  __device__ __forceinline__ void load(int64_t ch, int group_shift, uint32_t (&wd)[2][BITS], float (&sc)[2],
                                       float (&bi)[2]) const {
    const int64_t grp = (ch * 32) >> group_shift;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const uint4* p = reinterpret_cast<const uint4*>(w[i] + ch * BITS);
#pragma unroll
      for (int v = 0; v < BITS / 4; ++v) {
        const uint4 t = p[v];
        wd[i][4 * v] = t.x, wd[i][4 * v + 1] = t.y, wd[i][4 * v + 2] = t.z, wd[i][4 * v + 3] = t.w;
      }
      sc[i] = to_f(s[i][grp]);
      bi[i] = to_f(b[i][grp]);
    }
  }
  // One pass of a warp over its slice of K: U chunks, chunk u at pass_chunk(s0, u, stride,
  // c), each loaded when it lies inside the row (chunks in all).
  template <int BITS, int U>
  __device__ __forceinline__ void load_pass(int64_t s0, int64_t stride, int c, int64_t chunks, int group_shift,
                                            uint32_t (&wd)[U][2][BITS], float (&sc)[U][2], float (&bi)[U][2]) const {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t ch = pass_chunk(s0, u, stride, c);
      if (ch < chunks) load<BITS>(ch, group_shift, wd[u], sc[u], bi[u]);
    }
  }
  // The chunk lane c of a row group takes at step u of the pass starting at s0 (warps of
  // one slice `stride` apart; the group's 4 lanes read 4 consecutive chunks).
  __device__ __forceinline__ static int64_t pass_chunk(int64_t s0, int u, int64_t stride, int c) {
    return (s0 + int64_t(u) * stride) * 4 + c;
  }
};

template <int BITS, typename S, bool kGated>
__global__ void __launch_bounds__(kWarps * 32) qgemv_mma_kernel(const float* __restrict__ x, int M,
                                                                 const GemvParts P, int64_t K, int group_shift) {
  constexpr int kOut = kGated ? 8 : 16;
  __shared__ float red[kWarps][16][9];  // [warp][row][token], padded
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const GemvRows gr = gemv_rows(P, blockIdx.x, kOut);
  const LaneRows<S, kGated> rows(P, gr, gr.row0, g, BITS, K, group_shift);
  const bool has_x = g < M;
  const float* xr = x + int64_t(has_x ? g : 0) * K;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  const int64_t chunks = K / 32;
  for (int64_t s0 = warp; s0 * 4 < chunks; s0 += kWarps * kU) {
    uint32_t wd[kU][2][BITS];
    float sc[kU][2], bi[kU][2];
    rows.template load_pass<BITS, kU>(s0, kWarps, c, chunks, group_shift, wd, sc, bi);
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t ch = rows.pass_chunk(s0, u, kWarps, c);
      // A lane past the end of K, or without an x row, contributes zeros (the MMA is
      // warp-wide, so every lane takes part).
      __half2 w[2][16];
      unsigned bx[16];
      if (ch < chunks) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          chunk_q<BITS>(wd[u][i], w[i]);
          const __half2 s2 = __float2half2_rn(sc[u][i]), b2 = __float2half2_rn(bi[u][i]);
#pragma unroll
          for (int p = 0; p < 16; ++p) w[i][p] = __hfma2(w[i][p], s2, b2);
        }
      } else {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int p = 0; p < 16; ++p) w[i][p] = __float2half2_rn(0.0f);
      }
      if (has_x && ch < chunks) {
        float xv[32];
        const float4* xp = reinterpret_cast<const float4*>(xr + ch * 32);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float4 f = xp[j];
          xv[4 * j] = f.x, xv[4 * j + 1] = f.y, xv[4 * j + 2] = f.z, xv[4 * j + 3] = f.w;
        }
#pragma unroll
        for (int p = 0; p < 16; ++p) bx[p] = as_u32(__floats2half2_rn(xv[pair_lo<BITS>(p)], xv[pair_hi<BITS>(p)]));
      } else {
#pragma unroll
        for (int p = 0; p < 16; ++p) bx[p] = 0u;
      }
#pragma unroll
      for (int m = 0; m < 8; ++m) {
        const unsigned a[4] = {as_u32(w[0][2 * m]), as_u32(w[1][2 * m]), as_u32(w[0][2 * m + 1]),
                               as_u32(w[1][2 * m + 1])};
        mma<f16>(acc, a, bx[2 * m], bx[2 * m + 1]);
      }
    }
  }
  // acc: (row g, tokens 2c, 2c + 1) and (row g + 8, the same tokens).
  red[warp][g][2 * c] = acc[0];
  red[warp][g][2 * c + 1] = acc[1];
  red[warp][g + 8][2 * c] = acc[2];
  red[warp][g + 8][2 * c + 1] = acc[3];
  __syncthreads();
  const int r = threadIdx.x / 8, m = threadIdx.x % 8;
  if (r >= kOut || m >= M) return;
  const int64_t n = gr.row0 + r;
  if (n >= gr.N) return;
  float s = 0.0f;
#pragma unroll
  for (int q = 0; q < kWarps; ++q) s += red[q][r][m];
  if (P.bias[gr.part]) s += static_cast<const float*>(P.bias[gr.part])[n];
  if constexpr (kGated) {
    float up = 0.0f;
#pragma unroll
    for (int q = 0; q < kWarps; ++q) up += red[q][r + 8][m];
    if (P.bias[1]) up += static_cast<const float*>(P.bias[1])[n];
    s = act_any(Act(P.gate_act), s) * up;
  }
  static_cast<float*>(P.out[gr.part])[int64_t(m) * gr.N + n] = s;
}

template <int BITS, typename S>
void launch(const float* x, int M, GemvParts P, int64_t K, int shift, cudaStream_t st) {
  const bool gated = P.gate_act >= 0;
  const unsigned grid = plan_blocks(P, gated ? 8 : 16);
  if (gated) qgemv_mma_kernel<BITS, S, true><<<grid, kWarps * 32, 0, st>>>(x, M, P, K, shift);
  else qgemv_mma_kernel<BITS, S, false><<<grid, kWarps * 32, 0, st>>>(x, M, P, K, shift);
}

// ---- 4- and 8-bit products of 2-64 rows in bf16 on the tensor cores (qgemm_mma) ----------
// Design 6's chunk order with bf16 instead of f16 (no overflow for |x| > 65504). 4 bits: a
// nibble OR-ed into the mantissa of 128.0 is 128 + q exactly, one HSUB2 and one HFMA2
// (bf16) give s q + b. 8 bits (bf16 has no exact 128 + q past 127): bytes into f16 1024 + q,
// HSUB2, then s q + b in f32 and one rounding to bf16. x rows are rounded to bf16 pairs. A block holds RT tiles of 16 MMA rows; the
// 8 / RT warps of a tile split K; each A fragment serves ceil(M / 8) MMAs, one per group of
// 8 activation rows (MT groups at most).
__device__ __forceinline__ __nv_bfloat162 magic_sub_bf16(uint32_t v) {
  const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&v);
  return __hsub2(h, __bfloat162bfloat162(__ushort_as_bfloat16(0x4300)));
}

__device__ __forceinline__ unsigned as_u32(__nv_bfloat162 h) { return *reinterpret_cast<unsigned*>(&h); }

// x [M, K] f32 -> bf16 pairs in the kernel's lane order: xb[(row * chunks + chunk) * 16 + p]
// = (x[row, 32 chunk + pair_lo(p)], x[row, 32 chunk + pair_hi(p)]), done once per product
// instead of once per block.
template <int BITS>
__global__ void x_pairs_bf16_kernel(const float* __restrict__ x, int64_t M, int64_t K, unsigned* __restrict__ xb) {
  pdl_enter();
  const int64_t n = M * (K / 2);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / (K / 2), rem = i % (K / 2), ch = rem / 16;
    const int p = int(rem % 16);
    const float* xr = x + row * K + ch * 32;
    xb[i] = as_u32(__floats2bfloat162_rn(xr[pair_lo<BITS>(p)], xr[pair_hi<BITS>(p)]));
  }
}

template <int BITS, typename S, bool kGated, int MT, int RT>
__global__ void __launch_bounds__(kWarps * 32) qgemm_bf16_kernel(const unsigned* __restrict__ xb, int M,
                                                                 const GemvParts P, int64_t K, int group_shift) {
  constexpr int kOut = kGated ? 8 : 16;
  constexpr int KS = kWarps / RT;  // warps splitting K in a tile
  __shared__ float red[kWarps][16][8 * MT + 1];
  pdl_enter();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const int rt = warp / KS, ks = warp % KS;
  const GemvRows gr = gemv_rows(P, blockIdx.x, kOut * RT);
  const LaneRows<S, kGated> rows(P, gr, gr.row0 + int64_t(rt) * kOut, g, BITS, K, group_shift);
  const int groups = (M + 7) / 8;
  float acc[MT][4];
#pragma unroll
  for (int t = 0; t < MT; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
  const int64_t chunks = K / 32;
  for (int64_t s0 = ks; s0 * 4 < chunks; s0 += KS * kU) {
    uint32_t wd[kU][2][BITS];
    float sc[kU][2], bi[kU][2];
    rows.template load_pass<BITS, kU>(s0, KS, c, chunks, group_shift, wd, sc, bi);
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t ch = rows.pass_chunk(s0, u, KS, c);
      unsigned a[8][4];
      {
        __nv_bfloat162 w[2][16];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          if constexpr (BITS == 4) {
            const __nv_bfloat162 s2 = __float2bfloat162_rn(sc[u][i]), b2 = __float2bfloat162_rn(bi[u][i]);
#pragma unroll
            for (int q = 0; q < 4; ++q)
#pragma unroll
              for (int j = 0; j < 4; ++j) {
                const __nv_bfloat162 v = magic_sub_bf16(((wd[u][i][q] >> (4 * j)) & 0x000F000Fu) | 0x43004300u);
                w[i][4 * q + j] = ch < chunks ? __hfma2(v, s2, b2) : __float2bfloat162_rn(0.0f);
              }
          } else {
            __half2 q[16];
            chunk_q<8>(wd[u][i], q);
#pragma unroll
            for (int p = 0; p < 16; ++p) {
              const float2 f = __half22float2(q[p]);
              w[i][p] = ch < chunks ? __floats2bfloat162_rn(fmaf(f.x, sc[u][i], bi[u][i]), fmaf(f.y, sc[u][i], bi[u][i]))
                                    : __float2bfloat162_rn(0.0f);
            }
          }
        }
#pragma unroll
        for (int m = 0; m < 8; ++m) {
          a[m][0] = as_u32(w[0][2 * m]), a[m][1] = as_u32(w[1][2 * m]);
          a[m][2] = as_u32(w[0][2 * m + 1]), a[m][3] = as_u32(w[1][2 * m + 1]);
        }
      }
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        if (t >= groups) break;
        const int tok = t * 8 + g;
        unsigned bx[16];
        const bool valid = tok < M && ch < chunks;
        load_regs16(bx, xb + (int64_t(valid ? tok : 0) * chunks + (valid ? ch : 0)) * 16, valid);
#pragma unroll
        for (int m = 0; m < 8; ++m) mma<bf16>(acc[t], a[m], bx[2 * m], bx[2 * m + 1]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < MT; ++t) {
    red[warp][g][8 * t + 2 * c] = acc[t][0];
    red[warp][g][8 * t + 2 * c + 1] = acc[t][1];
    red[warp][g + 8][8 * t + 2 * c] = acc[t][2];
    red[warp][g + 8][8 * t + 2 * c + 1] = acc[t][3];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < RT * kOut * M; idx += kWarps * 32) {
    const int tr = idx / (kOut * M), r = (idx / M) % kOut, m = idx % M;
    const int64_t n = gr.row0 + int64_t(tr) * kOut + r;
    if (n >= gr.N) continue;
    float s = 0.0f;
#pragma unroll
    for (int q = 0; q < KS; ++q) s += red[tr * KS + q][r][m];
    if (P.bias[gr.part]) s += static_cast<const float*>(P.bias[gr.part])[n];
    if constexpr (kGated) {
      float up = 0.0f;
#pragma unroll
      for (int q = 0; q < KS; ++q) up += red[tr * KS + q][r + 8][m];
      if (P.bias[1]) up += static_cast<const float*>(P.bias[1])[n];
      s = act_any(Act(P.gate_act), s) * up;
    }
    static_cast<float*>(P.out[gr.part])[int64_t(m) * gr.N + n] = s;
  }
}

template <int BITS, typename S, int MT>
void launch_bf16(const unsigned* x, int M, GemvParts P, int64_t K, int shift, int device, cudaStream_t st) {
  const bool gated = P.gate_act >= 0;
  const int out = gated ? 8 : 16;
  // Fewer, taller blocks when there are row tiles to spare: each block reads x once.
  const unsigned tiles = plan_blocks(P, out);
  const int sms = sm_count(device);
  const int rt = tiles >= unsigned(8 * sms) ? 4 : tiles >= unsigned(4 * sms) ? 2 : 1;
  const unsigned grid = plan_blocks(P, out * rt);
#define MLXCEL_QGEMM_BF16(G, R) launch_pdl(qgemm_bf16_kernel<BITS, S, G, MT, R>, grid, kWarps * 32, 0, st, x, M, P, K, shift)
  if (gated) {
    if (rt == 4) MLXCEL_QGEMM_BF16(true, 4);
    else if (rt == 2) MLXCEL_QGEMM_BF16(true, 2);
    else MLXCEL_QGEMM_BF16(true, 1);
  } else {
    if (rt == 4) MLXCEL_QGEMM_BF16(false, 4);
    else if (rt == 2) MLXCEL_QGEMM_BF16(false, 2);
    else MLXCEL_QGEMM_BF16(false, 1);
  }
#undef MLXCEL_QGEMM_BF16
}

}  // namespace

namespace {
std::atomic<bool> g_qgemm_mma{[] {
  const char* e = std::getenv("MLXCEL_CUDA_QMMA");
  return !(e && e[0] == '0');
}()};

// kQgemmMaxRows, or MLXCEL_CUDA_QMMA_ROWS (2..64) for A/B runs.
int qgemm_mma_max_rows() {
  static const int rows = [] {
    const char* e = std::getenv("MLXCEL_CUDA_QMMA_ROWS");
    const int v = e && *e ? std::atoi(e) : kQgemmMaxRows;
    return v < 2 ? 2 : v > kQgemmMaxRows ? kQgemmMaxRows : v;
  }();
  return rows;
}

// What both tensor-core designs need: 4- or 8-bit weights in groups of 32+, whole chunks
// of K, and x and every part's words 16-byte aligned.
bool mma_operands_fit(const float* x, const GemvParts& P, int bits, int group_shift, int64_t K) {
  return (bits == 4 || bits == 8) && group_shift >= 5 && K % 32 == 0 && copy_aligned(x, P, false);
}
}  // namespace

bool set_qgemm_mma(bool on) { return g_qgemm_mma.exchange(on); }

bool qgemm_mma(const float* x, int M, GemvParts P, int bits, int group_shift, int64_t K, DType scale_dtype,
               cudaStream_t st) {
  if (!g_qgemm_mma.load(std::memory_order_relaxed) || M < 2 || M > qgemm_mma_max_rows() ||
      !mma_operands_fit(x, P, bits, group_shift, K))
    return false;
  const int device = current_device();
  if (compute_major(device) < 8) return false;
  unsigned* xb = static_cast<unsigned*>(scratch(size_t(M) * size_t(K) * 2, 5));
  const unsigned xgrid = grid_for(int64_t(M) * (K / 2), 256);
  if (bits == 4) launch_pdl(x_pairs_bf16_kernel<4>, xgrid, 256, 0, st, x, M, K, xb);
  else launch_pdl(x_pairs_bf16_kernel<8>, xgrid, 256, 0, st, x, M, K, xb);
  by_float_type(scale_dtype, "qgemm_mma: scales", [&](auto tag) {
    using S = decltype(tag);
    auto go = [&](auto bits_tag) {
      constexpr int B = decltype(bits_tag)::value;
      if (M <= 8) launch_bf16<B, S, 1>(xb, M, P, K, group_shift, device, st);
      else if (M <= 16) launch_bf16<B, S, 2>(xb, M, P, K, group_shift, device, st);
      else if (M <= 32) launch_bf16<B, S, 4>(xb, M, P, K, group_shift, device, st);
      else launch_bf16<B, S, 8>(xb, M, P, K, group_shift, device, st);
    };
    if (bits == 4) go(std::integral_constant<int, 4>{});
    else go(std::integral_constant<int, 8>{});
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
  return true;
}

bool qgemv_mma(const float* x, int M, GemvParts P, int bits, int group_shift, int64_t K, DType scale_dtype,
               cudaStream_t st) {
  if (M < 1 || M > 8 || !mma_operands_fit(x, P, bits, group_shift, K)) return false;
  by_float_type(scale_dtype, "qgemv_mma: scales", [&](auto tag) {
    using S = decltype(tag);
    if (bits == 4) launch<4, S>(x, M, P, K, group_shift, st);
    else launch<8, S>(x, M, P, K, group_shift, st);
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
  return true;
}

}  // namespace mlxcel::cuda
