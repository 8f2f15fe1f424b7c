// Dense linear: GEMV for decode-sized batches, blocked GEMM otherwise.
#include "backends/cpu/linear.h"

#include <type_traits>
#include <vector>

#include "backends/cpu/gemm.h"
#include "backends/cpu/isa.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/simd.h"
#include "base/error.h"

// One build per ISA level (isa.h); dispatch.cpp defines the public mlxcel::cpu functions.
namespace mlxcel::cpu::MLXCEL_CPU_NS {

namespace {

// Columns of x per pass so that M rows of x stay in L1 (~24 KiB) while weight
// rows stream past; a multiple of 64 so only the last pass has a SIMD tail.
inline int64_t gemv_k_chunk(int64_t M, int64_t multiple) {
  const int64_t c = (int64_t(24 * 1024) / (4 * M)) / multiple * multiple;
  return std::max<int64_t>(multiple, c);
}

// How far ahead gemv_rows prefetches the weights into L2 (see there).
constexpr int64_t kGemvPrefetchBytes = 8192;

// y[m][n] (+)= dot(x[m][k0..k1), w[n][k0..k1)) for n in [n0, n1), all M rows at
// once: each weight row is read once. M x U independent accumulators keep the
// FMA pipes busy.
template <int M, typename T>
void gemv_rows(const float* x, int64_t K, const T* w, int64_t n0, int64_t n1, int64_t k0, int64_t k1, float* y,
               int64_t N, bool accumulate) {
  using namespace simd;
  constexpr int U = M <= 2 ? 4 : (M <= 4 ? 2 : 1);
  for (int64_t n = n0; n < n1; ++n) {
    const T* wr = w + n * K;
    VecF acc[M][U];
    for (int m = 0; m < M; ++m)
      for (int u = 0; u < U; ++u) acc[m][u] = zero();
    int64_t k = k0;
    for (; k + U * kWidth <= k1; k += U * kWidth) {
      // The weights kGemvPrefetchBytes ahead into L2, a line at a time (prefetches never
      // fault). Without huge pages the hardware prefetchers stop at every 4 KB page, and
      // demand misses alone run out of L1 miss buffers: Qwen3-0.6B F16 GGUF tg64, five
      // alternated runs, median 19.6 -> 23.8 tok/s (8 KB, L2); into L1 (prefetcht0) at 1-16
      // KB measured slower than none.
      const char* pf = reinterpret_cast<const char*>(wr + k) + kGemvPrefetchBytes;
      for (size_t b = 0; b < U * kWidth * sizeof(T); b += 64) __builtin_prefetch(pf + b, 0, 2);
      for (int u = 0; u < U; ++u) {
        const VecF wv = load(wr + k + u * kWidth);
        for (int m = 0; m < M; ++m) acc[m][u] = fma(load(x + m * K + k + u * kWidth), wv, acc[m][u]);
      }
    }
    for (; k + kWidth <= k1; k += kWidth) {
      const VecF wv = load(wr + k);
      for (int m = 0; m < M; ++m) acc[m][0] = fma(load(x + m * K + k), wv, acc[m][0]);
    }
    for (int m = 0; m < M; ++m) {
      VecF a = acc[m][0];
      for (int u = 1; u < U; ++u) a = add(a, acc[m][u]);
      float s = hsum(a);
      for (int64_t kk = k; kk < k1; ++kk) s += x[m * K + kk] * to_f32(wr[kk]);
      y[m * N + n] = accumulate ? y[m * N + n] + s : s;
    }
  }
}

// As gemv_rows for a full group of M rows, NB weight rows at a time: M x NB
// accumulators, and each x vector load feeds NB FMAs (NB + M loads per M * NB FMAs
// instead of 1 + M per M), which keeps a decode batch compute-bound rather than
// load-bound. Rows past the last multiple of NB go through gemv_rows.
template <int M, int NB, typename T>
void gemv_rows_blocked(const float* x, int64_t K, const T* w, int64_t n0, int64_t n1, int64_t k0, int64_t k1,
                       float* y, int64_t N, bool accumulate) {
  using namespace simd;
  int64_t n = n0;
  for (; n + NB <= n1; n += NB) {
    const T* wr[NB];
    for (int b = 0; b < NB; ++b) wr[b] = w + (n + b) * K;
    VecF acc[M][NB];
    for (int m = 0; m < M; ++m)
      for (int b = 0; b < NB; ++b) acc[m][b] = zero();
    int64_t k = k0;
    for (; k + kWidth <= k1; k += kWidth) {
      VecF wv[NB];
      for (int b = 0; b < NB; ++b) wv[b] = load(wr[b] + k);
      for (int m = 0; m < M; ++m) {
        const VecF xv = load(x + m * K + k);
        for (int b = 0; b < NB; ++b) acc[m][b] = fma(xv, wv[b], acc[m][b]);
      }
    }
    for (int m = 0; m < M; ++m)
      for (int b = 0; b < NB; ++b) {
        float s = hsum(acc[m][b]);
        for (int64_t kk = k; kk < k1; ++kk) s += x[m * K + kk] * to_f32(wr[b][kk]);
        float& out = y[m * N + n + b];
        out = accumulate ? out + s : s;
      }
  }
  if (n < n1) gemv_rows<M>(x, K, w, n, n1, k0, k1, y, N, accumulate);
}

template <int M, typename T>
void gemv_chunked(const float* x, int64_t K, const T* w, int64_t n0, int64_t n1, float* y, int64_t N) {
  const int64_t kc = gemv_k_chunk(M, 64);
  for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += kc) {
    const int64_t k1 = std::min(K, k0 + kc);
    if constexpr (M == gemm::kGemvGroup) gemv_rows_blocked<M, gemm::kGemvBlockN>(x, K, w, n0, n1, k0, k1, y, N, k0 > 0);
    else gemv_rows<M>(x, K, w, n0, n1, k0, k1, y, N, k0 > 0);
  }
}

template <typename T>
void gemv(const float* x, int64_t M, int64_t K, const T* w, int64_t N, float* y) {
  auto body = [&](int64_t n0, int64_t n1) {
    gemm::for_gemv_groups(M, n0, n1, [&](int64_t m0, int mr, int64_t t0, int64_t t1) {
      const float* xm = x + m0 * K;
      float* ym = y + m0 * N;
      switch (mr) {
        case 1: gemv_chunked<1>(xm, K, w, t0, t1, ym, N); break;
        case 2: gemv_chunked<2>(xm, K, w, t0, t1, ym, N); break;
        case 3: gemv_chunked<3>(xm, K, w, t0, t1, ym, N); break;
        case 4: gemv_chunked<4>(xm, K, w, t0, t1, ym, N); break;
        case 5: gemv_chunked<5>(xm, K, w, t0, t1, ym, N); break;
        case 6: gemv_chunked<6>(xm, K, w, t0, t1, ym, N); break;
        case 7: gemv_chunked<7>(xm, K, w, t0, t1, ym, N); break;
        case 8: gemv_chunked<8>(xm, K, w, t0, t1, ym, N); break;
        default: MLXCEL_CHECK(false, "gemv group of {} rows", mr);
      }
    });
  };
  // NOTE: chunks of >= 16 rows keep each thread on long sequential weight streams.
  ThreadPool::global().parallel_for(N, body, std::max<int64_t>(16, (int64_t(1) << 15) / std::max<int64_t>(1, K * M)));
}

// Dense weights [N, K] of T (f32, f16 or bf16), packed straight from the source.
template <typename T>
struct DenseSource {
  const T* w;
  int64_t K;
  void pack(int64_t n0, int64_t nb, int64_t k0, int64_t kb, float*, float* packed) const {
    gemm::pack_panel(w + n0 * K + k0, K, nb, kb, packed);
  }
#if defined(MLXCEL_SIMD_AVX512)
  // bf16 weights are their own pairs: run_bf16's panels are transposes of the rows.
  void pair_rows(int64_t n0, int64_t nb, int64_t k0, int64_t kb, float*, uint32_t* pairs) const
    requires std::is_same_v<T, bf16_t>
  {
    const T* base = w + n0 * K + k0;
    const int64_t ld = K;
    gemm::pack_pairs_from_rows([base, ld](int64_t j, int64_t kp0) { return _mm512_loadu_si512(base + j * ld + 2 * kp0); },
                               nb, kb, pairs);
  }
#endif
};

template <typename T>
void linear_typed(const float* x, int64_t M, int64_t K, const T* w, int64_t N, const float* bias, float* y) {
  if (M <= kGemvMaxRows) {
    gemv(x, M, K, w, N, y);
    if (bias) {
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) y[m * N + n] += bias[n];
    }
    return;
  }
#if defined(MLXCEL_SIMD_AVX512)
  if constexpr (std::is_same_v<T, bf16_t>) {
    if (bf16_products()) return gemm::run_bf16(x, M, K, N, DenseSource<T>{w, K}, bias, y);
  }
#endif
  gemm::run(x, M, K, N, DenseSource<T>{w, K}, bias, y);
}

}  // namespace

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out) {
  const int64_t K = x.dim(-1);
  int64_t M = 1;
  for (int i = 0; i + 1 < x.ndim(); ++i) M *= x.shape()[size_t(i)];
  const int64_t N = w.dim(0);
  std::vector<float> bias_f32;
  if (bias.defined()) bias_f32 = bias.to_f32_vector();
  const float* b = bias.defined() ? bias_f32.data() : nullptr;
  float* y = out.data<float>();
  const float* xp = x.data<float>();
  switch (w.dtype()) {
    case DType::f32: linear_typed(xp, M, K, w.data<float>(), N, b, y); break;
    case DType::f16: linear_typed(xp, M, K, w.data<f16_t>(), N, b, y); break;
    case DType::bf16: linear_typed(xp, M, K, w.data<bf16_t>(), N, b, y); break;
    default: MLXCEL_CHECK(false, "linear with weight {}", dtype_name(w.dtype()));
  }
}

}  // namespace mlxcel::cpu::MLXCEL_CPU_NS
