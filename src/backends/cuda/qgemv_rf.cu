// Batch-1 decode GEMV of MLX affine 4- and 8-bit weights, groups 32 and 64, with the weights
// loaded straight into registers and multiplied on the tensor cores in f16 (gemv_variant
// 11; linear_impl.h qgemv_rf): y [1, N] = x [1, K] @ dequant(w)^T.
//
// Why (bench/results/cuda_gemv.md run 10, bench/qgemv_lab.cu): designs 0-10 stream each
// matrix with short-lived blocks or through a shared-memory ring with a barrier a stage,
// and a plain read of the same bytes in their shape of work already stops near 57% of the
// copy bandwidth over a Llama-3.1-8B layer; a read by resident blocks that never leave
// reaches 71% there. So this design keeps its blocks resident and its loads flowing, and
// spends as few instructions a weight as it can:
//   - Blocks of K / 512 warps stay resident and walk 16-row tiles (blockIdx.x, + gridDim.x,
//     ...). Warp w owns values [512 w, 512 w + 512) of K in every tile, as two steps of
//     256; its x is converted once a launch. A lane (g, c) takes rows g and g + 8 of the
//     tile and group c of the step: 32 bytes of each row, straight from global memory
//     into registers, the next step's issued before the current one is multiplied.
//   - A nibble OR-ed under f16 1024.0 is 1024 + q exactly, and left at bits 4-7 it is
//     1024 + 16 q: one shift and four LOP3 give a word's eight weights as four f16 pairs
//     (bf16's 7-bit mantissa cannot take the second form). The slots of the 16 q pairs
//     see x / 16 instead (exact). 8 bits: one PRMT puts two bytes under 1024 (exact
//     1024 + q for q < 256); a step is then 128 values (lane c: half of group c / 2).
//   - Groups of 32 (GGUF Q4_0 / Q8_0 as MLX affine): D's columns hold the 8 groups of 256
//     values and are folded after them (K <= 8192: more values stay live).
//   - mma.sync.m16n8k16 (f16, f32 accumulation): A's 16 rows are the tile's rows, B's
//     column n holds the x of group n of the warp's 512 values (zero on the other lanes),
//     so each column of D belongs to one group and is folded once a tile in f32:
//       y += s (D - C) + b X,  C = 1024 (sum of x over the plain slots + sum of x / 16
//     over the others), X = the sum of the x the MMA saw, both made once a launch.
//   - x goes to f16 per group (32 or 64) after a power-of-two scale that puts the group's
//     largest value in [2^13, 2^14) (the scale comes back in the fold): finer than bf16
//     (2^-12 relative rounding), no overflow for any finite x and no subnormals for tiny
//     x. The weights stay exact.
//   - The warps' sums of a tile meet in shared memory behind one barrier a tile, in warp
//     order (deterministic).
// Multi-part launches (q/k/v) number their tiles part after part; gated ones (gate/up)
// take 8 rows of gate as rows 0-7 of a tile and the same 8 rows of up as rows 8-15.
// The forms of K <= 4096 also take a decode step's folds (session 25): the residual add
// and RMSNorm before the products (KNorm) and, for q/k/v, RoPE and the K/V cache write in
// the epilogue (KRope).
#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "backends/cuda/common.cuh"
#include "backends/cuda/gemv.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/linear_impl.h"
#include "backends/cuda/mma.cuh"

namespace mlxcel::cuda {

namespace {

constexpr int kStep = 256;                // values of K a warp multiplies at once
constexpr int kWarpK = 2 * kStep;         // values of K a warp owns
constexpr int kMaxWarps = 28;             // K <= 14336: up to 28 warps a block (73 registers)
constexpr int kMaxWarps32 = 16;           // group 32 (more live values): K <= 8192
constexpr unsigned kMagic = 0x64006400u;  // f16 pair (1024, 1024)

// Shared memory (32-bit words): 32 zero words, each warp's x as B fragments [2 steps][4
// groups][32 pairs], the tile sums [2][warps][16] floats, the warps' sums of squares of x
// (a folded norm).
inline size_t smem_words(int warps) { return 32 + size_t(warps) * 256 + size_t(2) * warps * 16 + 32; }

// The residual add and RMSNorm folded into the launch (kernels.h RowNorm; h null: none).
// The kernel multiplies sum (w + w_offset) and scales the rows' results by 1 / rms(sum)
// at the end: W (sum * inv * w') = inv * W (sum * w'), so no block waits for the whole
// row's sum of squares before its first tile (it is complete by the first tile's barrier).
struct KNorm {
  const float* h;
  const void* w;
  int wdt;
  float eps, w_offset;
  float* sum;
};

// A decode step's RoPE and K/V cache write in the epilogue (kernels.h RopeKv; pos null:
// none). Parts 0 and 1 (q, k) then take rows i and i + D / 2 of a head into one tile (8 of
// each), so the rotated pairs meet in the tile's sums.
struct KRope {
  const int32_t* pos;
  const int32_t* slot;
  const float* inv_freq;
  float attn_scale;
  int D;
  void* kc;
  void* vc;
  int cdt;
  int64_t n_slots;
};

__device__ __forceinline__ uint4 ldg_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}
// (w & mask) | (1024, 1024) in one LOP3.
__device__ __forceinline__ unsigned f16_nibbles(uint32_t w, uint32_t mask) {
  unsigned r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(w), "r"(mask), "r"(kMagic));
  return r;
}

// A pair of scales (or biases) of groups gi, gi + 1 of one row, raw, and as floats.
template <typename S>
struct ScalePair {
  using Raw = std::conditional_t<sizeof(S) == 4, uint2, unsigned>;
  static __device__ __forceinline__ Raw load(const S* p) { return __ldg(reinterpret_cast<const Raw*>(p)); }
  static __device__ __forceinline__ float2 get(Raw r) {
    if constexpr (sizeof(S) == 4) return make_float2(__uint_as_float(r.x), __uint_as_float(r.y));
    else if constexpr (std::is_same_v<S, bf16>) return make_float2(__uint_as_float(r << 16), __uint_as_float(r & 0xFFFF0000u));
    else return __half22float2(*reinterpret_cast<const __half2*>(&r));
  }
};

// prmt.b32 of w and (1024, 1024), whose byte 5 is 0x64 (1024's high byte): two bytes of w
// as the f16 pair (1024 + b_i, 1024 + b_j); kSel 0x5150 takes bytes 0 and 1, 0x5352 bytes
// 2 and 3.
template <unsigned kSel>
__device__ __forceinline__ unsigned f16_bytes(uint32_t w) {
  unsigned r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(w), "r"(kMagic), "n"(kSel));
  return r;
}

template <int kBits, int kGroup, typename S, bool kGated, int kMinB = 1, bool kXFirst = false>
__global__ void __launch_bounds__(kMinB > 1 ? 256 : (kGroup == 32 ? kMaxWarps32 : kMaxWarps) * 32, kMinB)
    qgemv_rf_kernel(const float* __restrict__ x, const GemvParts P, int K, unsigned tiles, const KNorm nm,
                    const KRope rp) {
  using SP = ScalePair<S>;
  static_assert(kGroup == 64 || kGroup == 32, "groups of 32 or 64");
  // A folded norm only in the forms of K <= 4096 (the 28-warp form has no registers for it).
  constexpr bool kNormable = kMinB > 1;
  const bool roped = kNormable && !kGated && rp.pos != nullptr;  // parts 0 and 1 rotate
  // A step: 256 values (4 bits) or 128 (8 bits) of the warp's 512; lane c takes 32 bytes
  // of each of its rows (group c of the step, half of group c / 2, or groups 2c, 2c + 1).
  constexpr int kSteps = kBits == 4 ? 2 : 4;
  // Group 64: D's 8 columns are the warp's 8 groups, folded once a tile; group 32: the 8
  // groups of 256 values (a 4-bit step, two 8-bit steps), folded after them.
  constexpr int kFolds = kGroup == 32 ? 2 : 1;
  constexpr int kStepsAFold = kSteps / kFolds;
  constexpr int kLanesAGroup = kGroup / 16;  // lanes converting one group of x
  extern __shared__ __align__(16) unsigned smem_rf[];
  const int warps = int(blockDim.x) >> 5;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  unsigned* zero = smem_rf;
  unsigned* xs = smem_rf + 32 + warp * 256;
  float* red = reinterpret_cast<float*>(smem_rf + 32 + warps * 256);
  float* ssq = red + 2 * warps * 16;  // [warps]: a folded norm's sums of squares
  const int groups = K / kGroup, words = K * kBits / 32, k0 = warp * kWarpK, kw0 = k0 * kBits / 32;

  // One step of a tile: rows g and g + 8, 8 words each (2 x 16 bytes); the scales and
  // biases of the lane's two folding groups ride with the step that folds them (group 64:
  // groups 2c, 2c + 1 of the warp's 512 values, the last step; group 32: those of the step).
  struct Step {
    uint4 w[4];
    typename SP::Raw sc[2], bi[2];
  };
  auto load = [&](unsigned tile, int s, Step& b) {
    constexpr int kOut = kGated ? 8 : 16;
    const GemvRows gr = gemv_rows(P, tile, kOut);
    int64_t r0 = gr.row0 + g, r1 = kGated ? r0 : r0 + 8;
    if (roped && gr.part < 2) {  // rows i, i + D / 2 of one head: tile j of head h takes i = 8 j + g
      const int64_t b = gr.row0 / rp.D * rp.D + gr.row0 % rp.D / 2;
      r0 = b + g, r1 = b + rp.D / 2 + g;
    }
    r0 = r0 < gr.N ? r0 : gr.N - 1, r1 = r1 < gr.N ? r1 : gr.N - 1;
    const int p0 = kGated ? 0 : gr.part, p1 = kGated ? 1 : gr.part;
    const uint4* w0 = reinterpret_cast<const uint4*>(static_cast<const uint32_t*>(P.w[p0]) + r0 * words + kw0 + s * 32) + 2 * c;
    const uint4* w1 = reinterpret_cast<const uint4*>(static_cast<const uint32_t*>(P.w[p1]) + r1 * words + kw0 + s * 32) + 2 * c;
    b.w[0] = ldg_stream(w0), b.w[1] = ldg_stream(w0 + 1), b.w[2] = ldg_stream(w1), b.w[3] = ldg_stream(w1 + 1);
    if (kGroup == 32 ? s % kStepsAFold == kStepsAFold - 1 : s == kSteps - 1) {
      const int gi = kGroup == 32 ? (k0 + s / kStepsAFold * 256) / 32 + 2 * c : k0 / 64 + 2 * c;
      b.sc[0] = SP::load(static_cast<const S*>(P.scales[p0]) + r0 * groups + gi);
      b.bi[0] = SP::load(static_cast<const S*>(P.biases[p0]) + r0 * groups + gi);
      b.sc[1] = SP::load(static_cast<const S*>(P.scales[p1]) + r1 * groups + gi);
      b.bi[1] = SP::load(static_cast<const S*>(P.biases[p1]) + r1 * groups + gi);
    }
  };
  Step bufs[2];
  unsigned t = blockIdx.x;
  // kXFirst (launches without PDL only: x is read before any wait): x's loads go out
  // before the first tile's, whose addresses wait on the parameter reads of gemv_rows.
  const int kx = k0 + (lane >> 2) * 64 + 16 * (lane & 3);  // this lane's 16 values of x
  float4 xv[4];
  if (kXFirst) {
    const float4* xp = reinterpret_cast<const float4*>(x + kx);
    xv[0] = xp[0], xv[1] = xp[1], xv[2] = xp[2], xv[3] = xp[3];
  }
  if (t < tiles) load(t, 0, bufs[0]);

  // x -> B fragments, once: lane (gl, h) converts values 16 h .. 16 h + 15 of group gl of
  // the warp's 512. 4 bits: pair p = 4 q + j of a group is (x[8 q + j], x[8 q + j + 4]),
  // / 16 for odd j (the order of a lane's MMA slots); 8 bits: pair p is (x[2 p], x[2 p +
  // 1]). The group's scale 2^-e puts its largest |x| in [2^13, 2^14).
  // A folded norm's weight is a weight (no kernel writes it): loaded before the wait.
  const bool w32 = nm.wdt == int(DType::f32);
  uint4 wr[4];
  if (kNormable && nm.h && nm.w) {
    const uint4* wp = w32 ? reinterpret_cast<const uint4*>(static_cast<const float*>(nm.w) + kx)
                          : reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(nm.w) + kx);
    wr[0] = wp[0], wr[1] = wp[1];
    if (w32) wr[2] = wp[2], wr[3] = wp[3];
  }
  pdl_wait();
  zero[lane] = 0u;
  float Eg[kFolds][2], Cg[kFolds][2], Xg[kFolds][2];  // this lane's folding groups: 2^e, C, 2^e X
  {
    const int gl = lane >> 2, h = lane & 3;
    if (!kXFirst) {
      const float4* xp = reinterpret_cast<const float4*>(x + kx);
      xv[0] = xp[0], xv[1] = xp[1], xv[2] = xp[2], xv[3] = xp[3];
    }
    const float4 v0 = xv[0], v1 = xv[1], v2 = xv[2], v3 = xv[3];
    float a[16] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w, v2.x, v2.y, v2.z, v2.w, v3.x, v3.y, v3.z, v3.w};
    if (kNormable && nm.h) {
      // sum = x + h (the first block writes it) and its sum of squares over the warp's 512
      // values (to shared memory); then x = sum (w + w_offset), w loaded before the wait.
      const float4* hp = reinterpret_cast<const float4*>(nm.h + kx);
      float ss = 0.0f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float4 hv = hp[i];
        a[4 * i] += hv.x, a[4 * i + 1] += hv.y, a[4 * i + 2] += hv.z, a[4 * i + 3] += hv.w;
        if (blockIdx.x == 0)
          reinterpret_cast<float4*>(nm.sum + kx)[i] = make_float4(a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]);
      }
#pragma unroll
      for (int i = 0; i < 16; ++i) ss = fmaf(a[i], a[i], ss);
#pragma unroll
      for (int o = 16; o; o >>= 1) ss += __shfl_xor_sync(0xFFFFFFFFu, ss, o);
      if (lane == 0) ssq[warp] = ss;
      if (nm.w && w32) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          a[4 * i] *= __uint_as_float(wr[i].x) + nm.w_offset, a[4 * i + 1] *= __uint_as_float(wr[i].y) + nm.w_offset;
          a[4 * i + 2] *= __uint_as_float(wr[i].z) + nm.w_offset, a[4 * i + 3] *= __uint_as_float(wr[i].w) + nm.w_offset;
        }
      } else if (nm.w) {
        const bool is_bf16 = nm.wdt == int(DType::bf16);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const unsigned u[4] = {wr[i].x, wr[i].y, wr[i].z, wr[i].w};
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float2 f = is_bf16 ? make_float2(__uint_as_float(u[j] << 16), __uint_as_float(u[j] & 0xFFFF0000u))
                                     : __half22float2(*reinterpret_cast<const __half2*>(&u[j]));
            a[8 * i + 2 * j] *= f.x + nm.w_offset, a[8 * i + 2 * j + 1] *= f.y + nm.w_offset;
          }
        }
      } else {
#pragma unroll
        for (int i = 0; i < 16; ++i) a[i] *= 1.0f + nm.w_offset;
      }
    }
    float m = 0.0f;
#pragma unroll
    for (int i = 0; i < 16; ++i) m = fmaxf(m, fabsf(a[i]));
    m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, 1));
    if (kLanesAGroup == 4) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, 2));
    const int e = min(max(int((__float_as_uint(m) >> 23) & 0xFF) - 127 - 13, -126), 126);
    const float down = __uint_as_float(uint32_t(127 - e) << 23), up = __uint_as_float(uint32_t(127 + e) << 23);
    unsigned pr[8];
    float se = 0.0f, so = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int qq = i / 4, j = i % 4;
      const float f = kBits == 4 && (j & 1) ? 0.0625f * down : down;
      const float lo = kBits == 4 ? a[8 * qq + j] : a[2 * i], hi = kBits == 4 ? a[8 * qq + j + 4] : a[2 * i + 1];
      const __half2 hv = __floats2half2_rn(lo * f, hi * f);
      pr[i] = *reinterpret_cast<const unsigned*>(&hv);
      const float2 back = __half22float2(hv);
      if (kBits == 4 && (j & 1)) so += back.x + back.y;
      else se += back.x + back.y;
    }
    uint4* dst = reinterpret_cast<uint4*>(xs + gl * 32 + 8 * h);
    dst[0] = make_uint4(pr[0], pr[1], pr[2], pr[3]);
    dst[1] = make_uint4(pr[4], pr[5], pr[6], pr[7]);
    se += __shfl_xor_sync(0xFFFFFFFFu, se, 1), so += __shfl_xor_sync(0xFFFFFFFFu, so, 1);
    if (kLanesAGroup == 4) se += __shfl_xor_sync(0xFFFFFFFFu, se, 2), so += __shfl_xor_sync(0xFFFFFFFFu, so, 2);
    const float X = up * (se + 16.0f * so), C = 1024.0f * (se + so);
#pragma unroll
    for (int f = 0; f < kFolds; ++f)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        // the first lane of the group: group 64: group 2c + i of the warp's values; group
        // 32: group 2c + i of step f (values 256 f + 64 c + 32 i)
        const int src = kGroup == 64 ? 8 * c + 4 * i : 16 * f + 4 * c + 2 * i;
        Eg[f][i] = __shfl_sync(0xFFFFFFFFu, up, src), Cg[f][i] = __shfl_sync(0xFFFFFFFFu, C, src);
        Xg[f][i] = __shfl_sync(0xFFFFFFFFu, X, src);
      }
  }
  pdl_trigger();
  __syncwarp();

  int parity = 0;
  // D (row g / g + 8, columns 2c, 2c + 1) = this lane's folding groups, into y0 / y1.
  auto fold = [&](const Step& sb, int f, float (&acc)[4], float& y0, float& y1) {
    const float2 sa = SP::get(sb.sc[0]), ba = SP::get(sb.bi[0]), s8 = SP::get(sb.sc[1]), b8 = SP::get(sb.bi[1]);
    y0 = fmaf(sa.x, Eg[f][0] * (acc[0] - Cg[f][0]), fmaf(ba.x, Xg[f][0], y0));
    y0 = fmaf(sa.y, Eg[f][1] * (acc[1] - Cg[f][1]), fmaf(ba.y, Xg[f][1], y0));
    y1 = fmaf(s8.x, Eg[f][0] * (acc[2] - Cg[f][0]), fmaf(b8.x, Xg[f][0], y1));
    y1 = fmaf(s8.y, Eg[f][1] * (acc[3] - Cg[f][1]), fmaf(b8.y, Xg[f][1], y1));
    acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
  };
  while (t < tiles) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float y0 = 0.0f, y1 = 0.0f;
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      Step& cur = bufs[s & 1];
      if (s + 1 < kSteps) load(t, s + 1, bufs[(s + 1) & 1]);
      else if (t + gridDim.x < tiles) load(t + gridDim.x, 0, bufs[0]);
      // B: column n of D is group n of the warp's values (of the fold's 256 for group 32);
      // only the lane of row n of each quad whose values lie in group n holds x, the others
      // read zeros (4 bits: group c of step s is group 4 s + c, and with group 32 lane c's
      // words 0-3 are group 2c of the step, words 4-7 group 2c + 1; 8 bits: lane c's half
      // group is group 2 s + c / 2, its group of 32 column 4 (s % 2) + c).
      const bool data = kBits == 4 ? g == 4 * s + c : kGroup == 64 ? g == 2 * s + (c >> 1) : g == 4 * (s & 1) + c;
      const uint4* bp = reinterpret_cast<const uint4*>(data ? xs + (kBits == 4 ? (s * 4 + c) * 32 : s * 64 + c * 16) : zero);
      const uint4* bp32[2] = {reinterpret_cast<const uint4*>(g == 2 * c ? xs + (s * 4 + c) * 32 : zero),
                              reinterpret_cast<const uint4*>(g == 2 * c + 1 ? xs + (s * 4 + c) * 32 + 16 : zero)};
      const uint32_t wa[8] = {cur.w[0].x, cur.w[0].y, cur.w[0].z, cur.w[0].w, cur.w[1].x, cur.w[1].y, cur.w[1].z, cur.w[1].w};
      const uint32_t wb[8] = {cur.w[2].x, cur.w[2].y, cur.w[2].z, cur.w[2].w, cur.w[3].x, cur.w[3].y, cur.w[3].z, cur.w[3].w};
      if constexpr (kBits == 4) {
#pragma unroll
        for (int v = 0; v < 8; ++v) {
          // pairs 4v .. 4v + 3: word v's two MMAs
          const uint4 bq = kGroup == 64 ? bp[data ? v : 0] : bp32[v >> 2][g == 2 * c + (v >> 2) ? (v & 3) : 0];
          const uint32_t a8 = wa[v] >> 8, b8 = wb[v] >> 8;
          const unsigned A0[4] = {f16_nibbles(wa[v], 0x000F000Fu), f16_nibbles(wb[v], 0x000F000Fu),
                                  f16_nibbles(wa[v], 0x00F000F0u), f16_nibbles(wb[v], 0x00F000F0u)};
          mma<f16>(acc, A0, bq.x, bq.y);
          const unsigned A1[4] = {f16_nibbles(a8, 0x000F000Fu), f16_nibbles(b8, 0x000F000Fu),
                                  f16_nibbles(a8, 0x00F000F0u), f16_nibbles(b8, 0x00F000F0u)};
          mma<f16>(acc, A1, bq.z, bq.w);
        }
      } else {
#pragma unroll
        for (int v = 0; v < 4; ++v) {
          const uint4 bq = bp[data ? v : 0];  // pairs 4v .. 4v + 3: words 2v, 2v + 1, an MMA each
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const uint32_t u = wa[2 * v + h], d = wb[2 * v + h];
            const unsigned A[4] = {f16_bytes<0x5150>(u), f16_bytes<0x5150>(d), f16_bytes<0x5352>(u), f16_bytes<0x5352>(d)};
            mma<f16>(acc, A, h ? bq.z : bq.x, h ? bq.w : bq.y);
          }
        }
      }
      if (kGroup == 32 && s % kStepsAFold == kStepsAFold - 1) fold(cur, s / kStepsAFold, acc, y0, y1);
    }
    if (kGroup == 64) fold(bufs[1], 0, acc, y0, y1);
    y0 += __shfl_xor_sync(0xFFFFFFFFu, y0, 1), y1 += __shfl_xor_sync(0xFFFFFFFFu, y1, 1);
    y0 += __shfl_xor_sync(0xFFFFFFFFu, y0, 2), y1 += __shfl_xor_sync(0xFFFFFFFFu, y1, 2);
    float* rb = red + parity * warps * 16;
    if (c == 0) rb[warp * 16 + g] = y0, rb[warp * 16 + g + 8] = y1;
    __syncthreads();  // rb is written again two tiles on, after the next tile's barrier
    constexpr int kOut = kGated ? 8 : 16;
    if (int(threadIdx.x) < kOut) {
      const GemvRows o = gemv_rows(P, t, kOut);
      const int r = int(threadIdx.x);
      const bool rot = roped && o.part < 2;
      // A rotated tile's row r is i = 8 j + r % 8 of its head, or i + D / 2 for r >= 8.
      const int64_t rb0 = rot ? o.row0 / rp.D * rp.D + o.row0 % rp.D / 2 : o.row0;
      const int64_t n = rot ? rb0 + (r & 7) + (r >= 8 ? rp.D / 2 : 0) : o.row0 + r;
      if (n < o.N) {
        float inv = 1.0f;
        if (kNormable && nm.h) {  // the folded norm's 1 / rms (the warps' sums of squares, in warp order)
          float tot = 0.0f;
          for (int w = 0; w < warps; ++w) tot += ssq[w];
          inv = 1.0f / sqrtf(tot / float(K) + nm.eps);
        }
        float sum = 0.0f, upv = 0.0f;
        for (int w = 0; w < warps; ++w) {
          sum += rb[w * 16 + r];
          if constexpr (kGated) upv += rb[w * 16 + r + 8];
        }
        if (kNormable && nm.h) sum *= inv, upv *= inv;
        if (P.bias[o.part]) sum += static_cast<const float*>(P.bias[o.part])[n];
        if constexpr (kGated) {
          if (P.bias[1]) upv += static_cast<const float*>(P.bias[1])[n];
          sum = act_any(Act(P.gate_act), sum) * upv;
        }
        if (rot) {
          // The partner row (r ^ 8) the same way, then rope_kv_write's rotation of the pair
          // (first half a, second half b): a c - b s, b c + a s.
          const int64_t pn = n + (r >= 8 ? -rp.D / 2 : rp.D / 2);
          float other = 0.0f;
          for (int w = 0; w < warps; ++w) other += rb[w * 16 + (r ^ 8)];
          if (kNormable && nm.h) other *= inv;
          if (P.bias[o.part]) other += static_cast<const float*>(P.bias[o.part])[pn];
          const int i = int(n % rp.D) % (rp.D / 2);
          const float ang = float(rp.pos[0]) * rp.inv_freq[i];
          const float c = cosf(ang) * rp.attn_scale, sn = sinf(ang) * rp.attn_scale;
          const float a = r < 8 ? sum : other, b = r < 8 ? other : sum;
          sum = r < 8 ? a * c - b * sn : b * c + a * sn;
        }
        static_cast<float*>(P.out[o.part])[n] = sum;
        if (roped && o.part > 0) {  // k (rotated) and v into the caches at this token's slot
          const int64_t slot = rp.slot[0];
          if (slot >= 0 && slot < rp.n_slots) store_any(o.part == 1 ? rp.kc : rp.vc, rp.cdt, slot * o.N + n, sum);
        }
      }
    }
    t += gridDim.x, parity ^= 1;
  }
}

template <int kBits, int kGroup, typename S, int kMinB, bool kXFirst>
void launch_x(const float* x, GemvParts P, int K, int dev, cudaStream_t st, const KNorm& nm, const KRope& rp) {
  const bool gated = P.gate_act >= 0;
  const unsigned tiles = plan_blocks(P, gated ? 8 : 16);
  const int warps = K / kWarpK;
  const size_t smem = smem_words(warps) * 4;
  const int per_sm = gated ? blocks_at_smem<qgemv_rf_kernel<kBits, kGroup, S, true, kMinB, kXFirst>>(smem, warps * 32, dev)
                           : blocks_at_smem<qgemv_rf_kernel<kBits, kGroup, S, false, kMinB, kXFirst>>(smem, warps * 32, dev);
  const unsigned grid = std::min(tiles, unsigned(sm_count(dev) * per_sm));
  if (gated)
    launch_pdl(qgemv_rf_kernel<kBits, kGroup, S, true, kMinB, kXFirst>, grid, warps * 32, smem, st, x, P, K, tiles, nm, rp);
  else
    launch_pdl(qgemv_rf_kernel<kBits, kGroup, S, false, kMinB, kXFirst>, grid, warps * 32, smem, st, x, P, K, tiles, nm, rp);
}
// Without PDL, x's loads go out first (kXFirst): +2.4% Llama-3.1-8B q4 tg128 on an H200
// (session 27, 499.0 / 497.3 against 487.0 / 485.9 tok/s), q8 +1.7% (354.1 / 354.3 against
// 348.3 / 347.4). With PDL x is read after the wait.
template <int kBits, int kGroup, typename S, int kMinB>
void launch_b(const float* x, GemvParts P, int K, int dev, cudaStream_t st, const KNorm& nm, const KRope& rp) {
  if (!pdl_on()) launch_x<kBits, kGroup, S, kMinB, true>(x, P, K, dev, st, nm, rp);
  else launch_x<kBits, kGroup, S, kMinB, false>(x, P, K, dev, st, nm, rp);
}
// K <= 4096: blocks of at most 8 warps, compiled for two an SM (8 bits and groups of 32:
// up to 128 registers) or three (4 bits g64: 80, the occupancy 72 registers gave, without
// the spills of the folded norm's prologue), against 72 registers for the 28-warp form. 8 bits: +1.4%
// Llama-3.1-8B q8 tg128 on an H200 (session 25, 310.4 / 309.0 against 305.7 / 304.7 tok/s);
// 4 bits within the noise either way (two: 409.6 / 406.6, three: 413.9 / 405.5, against
// 411.6 / 414.2).
template <int kBits, int kGroup, typename S>
void launch(const float* x, GemvParts P, int K, int dev, cudaStream_t st, const KNorm& nm, const KRope& rp) {
  constexpr int kSmall = kBits == 8 || kGroup == 32 ? 2 : 3;
  if (K <= 8 * kWarpK) launch_b<kBits, kGroup, S, kSmall>(x, P, K, dev, st, nm, rp);
  else launch_b<kBits, kGroup, S, 1>(x, P, K, dev, st, nm, rp);
}

}  // namespace

bool qgemv_rf_takes(int bits, int group_shift, int64_t K, bool folded) {
  const bool fits = (bits == 4 || bits == 8) && (group_shift == 5 || group_shift == 6);
  if (!fits || K % kWarpK != 0 || K / kWarpK > (group_shift == 5 ? kMaxWarps32 : kMaxWarps)) return false;
  if (folded && K > 8 * kWarpK) return false;
  return compute_major(current_device()) >= 8;
}

bool qgemv_rf(const float* x, int M, GemvParts P, int bits, int group_shift, int64_t K, DType scale_dtype,
              cudaStream_t st, const RowNorm* norm, const RopeKv* rope) {
  if (M != 1 || !qgemv_rf_takes(bits, group_shift, K, norm || rope)) return false;
  const int dev = current_device();
  if (!copy_aligned(x, P, true)) return false;
  KNorm nm{nullptr, nullptr, 0, 0.0f, 0.0f, nullptr};
  if (norm) {
    if ((reinterpret_cast<uintptr_t>(norm->h) | reinterpret_cast<uintptr_t>(norm->sum) |
         reinterpret_cast<uintptr_t>(norm->w)) % 16 != 0)
      return false;
    nm = KNorm{norm->h, norm->w, int(norm->w_dtype), norm->eps, norm->w_offset, norm->sum};
  }
  KRope rp{nullptr, nullptr, nullptr, 1.0f, 0, nullptr, nullptr, 0, 0};
  if (rope) {
    // Whole heads of D (a multiple of 16: a tile's rows) rows in q and k.
    if (!rope_kv_takes(P, *rope, 16)) return false;
    rp = KRope{rope->pos, rope->slot, rope->inv_freq, rope->attn_scale, rope->head_dim, rope->k_cache, rope->v_cache,
               int(rope->cache_dtype), rope->n_slots};
  }
  if (scale_dtype == DType::f32)
    for (int i = 0; i < P.n; ++i)
      if ((reinterpret_cast<uintptr_t>(P.scales[i]) | reinterpret_cast<uintptr_t>(P.biases[i])) % 8 != 0) return false;
  by_float_type(scale_dtype, "qgemv_rf: scales", [&](auto tag) {
    if (bits == 8 && group_shift == 6) launch<8, 64, decltype(tag)>(x, P, int(K), dev, st, nm, rp);
    else if (bits == 8) launch<8, 32, decltype(tag)>(x, P, int(K), dev, st, nm, rp);
    else if (group_shift == 6) launch<4, 64, decltype(tag)>(x, P, int(K), dev, st, nm, rp);
    else launch<4, 32, decltype(tag)>(x, P, int(K), dev, st, nm, rp);
  });
  MLXCEL_CUDA_LAUNCH_CHECK();
  return true;
}

}  // namespace mlxcel::cuda
