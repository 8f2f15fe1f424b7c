// Paged attention and KV cache writes.
#include "backends/cpu/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "backends/cpu/parallel.h"
#include "backends/cpu/simd.h"
#include "base/error.h"

// One build per ISA level (isa.h); dispatch.cpp defines the public mlxcel::cpu functions.
namespace mlxcel::cpu::MLXCEL_CPU_NS {

namespace {

// Query rows handled together: each cache block is read once for all of them.
constexpr int64_t kRowBlock = 16;

// Flat query rows [row_begin, row_end) of sequence seq, for the q heads [h0, h0 + nh)
// of one kv head: the rows of an item are (token, head) pairs, so the q heads that share
// a kv head read each K/V block once.
struct WorkItem {
  int32_t seq, row_begin, row_end, h0, nh;
};

// Keys handled together inside a cache block: their scores for all rows of the row
// block are computed first, then one online-softmax update per row, then P V with the
// output rows held in registers across the keys.
constexpr int64_t kKeyChunk = 16;

// Per-thread scratch of attend().
struct Scratch {
  std::vector<float> acc, m, l, s, corr;
  explicit Scratch(int64_t dv)
      : acc(size_t(kRowBlock * dv)), m(kRowBlock), l(kRowBlock), s(size_t(kRowBlock * kKeyChunk)), corr(kRowBlock) {}
};

// Sums of 4 vectors.
inline void hsum4(simd::VecF a0, simd::VecF a1, simd::VecF a2, simd::VecF a3, float* out) {
#if defined(MLXCEL_SIMD_AVX2)
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
#else
  out[0] = simd::hsum(a0);
  out[1] = simd::hsum(a1);
  out[2] = simd::hsum(a2);
  out[3] = simd::hsum(a3);
#endif
}

// Scores of R query rows q[0..R) against K keys k[0..K): t[i * K + j] = q_i . k_j
// (unscaled). Each key vector is loaded once per d step for all R rows and each row once
// for all K keys; R * K is a multiple of 4 (the horizontal sums go 4 at a time).
template <int R, int K, typename C>
void scores_rk(const float* const* q, const C* const* k, int64_t D, float* t) {
  using namespace simd;
  static_assert(R * K % 4 == 0, "hsum4 groups");
  VecF a[R * K];
  for (int i = 0; i < R * K; ++i) a[i] = zero();
  int64_t d = 0;
  for (; d + kWidth <= D; d += kWidth) {
    VecF x[K];
    for (int j = 0; j < K; ++j) x[j] = load(k[j] + d);
    for (int i = 0; i < R; ++i) {
      const VecF qv = load(q[i] + d);
      for (int j = 0; j < K; ++j) a[i * K + j] = fma(qv, x[j], a[i * K + j]);
    }
  }
  for (int i = 0; i < R * K; i += 4) hsum4(a[i], a[i + 1], a[i + 2], a[i + 3], t + i);
  for (; d < D; ++d)
    for (int j = 0; j < K; ++j) {
      const float x = to_f32(k[j][d]);
      for (int i = 0; i < R; ++i) t[i * K + j] += q[i][d] * x;
    }
}

// Scores of rows [r, r + R) (R at a time while they last) against keys [0, nk), K keys
// at a time; leftover keys one by one.
template <int R, int K, typename C>
int64_t chunk_scores_rk(const float* const* q, int64_t r, int64_t n_rows, const C* const* keys, int64_t nk, int64_t D,
                        float scale, float* s) {
  for (; r + R <= n_rows; r += R) {
    int64_t j = 0;
    for (; j + K <= nk; j += K) {
      float t[R * K];
      scores_rk<R, K>(q + r, keys + j, D, t);
      for (int i = 0; i < R; ++i)
        for (int jj = 0; jj < K; ++jj) s[(r + i) * kKeyChunk + j + jj] = t[i * K + jj] * scale;
    }
    for (; j < nk; ++j)
      for (int i = 0; i < R; ++i) s[(r + i) * kKeyChunk + j] = simd::dot(q[r + i], keys[j], D) * scale;
  }
  return r;
}

// s[r * kKeyChunk + j] = scale * q_r . k_j for r < n_rows, j < nk: 4 rows x 2 keys, then
// 2 rows x 4 keys (decode with 2 query heads a kv head: Qwen3), then 1 row x 4 keys.
template <typename C>
void chunk_scores(const float* const* q, int64_t n_rows, const C* const* keys, int64_t nk, int64_t D, float scale,
                  float* s) {
  int64_t r = chunk_scores_rk<4, 2>(q, 0, n_rows, keys, nk, D, scale, s);
  r = chunk_scores_rk<2, 4>(q, r, n_rows, keys, nk, D, scale, s);
  chunk_scores_rk<1, 4>(q, r, n_rows, keys, nk, D, scale, s);
}

// acc_r = acc_r * corr_r + sum_j p_rj v_j for the RB rows at acc (p = s after the
// softmax step); RB is a template argument so the accumulators stay in registers.
template <int RB, typename C>
void pv_rows(const float* p, const float* corr, const C* const* vals, int64_t nk, int64_t Dv, float* acc) {
  using namespace simd;
  int64_t d = 0;
  for (; d + 2 * kWidth <= Dv; d += 2 * kWidth) {
    VecF c[RB][2];
    for (int i = 0; i < RB; ++i) {
      const VecF cr = set1(corr[i]);
      c[i][0] = mul(load(acc + i * Dv + d), cr);
      c[i][1] = mul(load(acc + i * Dv + d + kWidth), cr);
    }
    for (int64_t j = 0; j < nk; ++j) {
      const VecF v0 = load(vals[j] + d), v1 = load(vals[j] + d + kWidth);
      for (int i = 0; i < RB; ++i) {
        const VecF pj = set1(p[i * kKeyChunk + j]);
        c[i][0] = fma(pj, v0, c[i][0]);
        c[i][1] = fma(pj, v1, c[i][1]);
      }
    }
    for (int i = 0; i < RB; ++i) {
      store(acc + i * Dv + d, c[i][0]);
      store(acc + i * Dv + d + kWidth, c[i][1]);
    }
  }
  for (; d < Dv; ++d) {
    for (int i = 0; i < RB; ++i) {
      float v = acc[i * Dv + d] * corr[i];
      for (int64_t j = 0; j < nk; ++j) v += p[i * kKeyChunk + j] * to_f32(vals[j][d]);
      acc[i * Dv + d] = v;
    }
  }
}

template <typename C>
void chunk_pv(const float* p, const float* corr, int64_t n_rows, const C* const* vals, int64_t nk, int64_t Dv,
              float* acc) {
  int64_t r = 0;
  for (; r + 4 <= n_rows; r += 4) pv_rows<4>(p + r * kKeyChunk, corr + r, vals, nk, Dv, acc + r * Dv);
  switch (n_rows - r) {
    case 3: pv_rows<3>(p + r * kKeyChunk, corr + r, vals, nk, Dv, acc + r * Dv); break;
    case 2: pv_rows<2>(p + r * kKeyChunk, corr + r, vals, nk, Dv, acc + r * Dv); break;
    case 1: pv_rows<1>(p + r * kKeyChunk, corr + r, vals, nk, Dv, acc + r * Dv); break;
    default: break;
  }
}

template <typename C>
void attend(const PagedAttentionArgs& a, const WorkItem& w, Scratch& sc) {
  const int64_t D = a.head_dim, Dv = a.v_head_dim, bs = a.block_size;
  const int64_t group = a.n_heads / a.n_kv_heads, kvh = w.h0 / group, nh = w.nh;
  const int64_t q0 = a.q_start[w.seq], q_len = a.q_start[w.seq + 1] - q0, kv_len = a.kv_len[w.seq];
  const int32_t* table = a.block_table + int64_t(w.seq) * a.max_blocks;
  const C* kc = static_cast<const C*>(a.k_cache);
  const C* vc = static_cast<const C*>(a.v_cache);
  const int64_t n_rows = (w.row_end - w.row_begin) * nh;  // row r = token r / nh, head h0 + r % nh
  const float neg_inf = -std::numeric_limits<float>::infinity();
  float* acc = sc.acc.data();
  float* m = sc.m.data();
  float* l = sc.l.data();
  float* s = sc.s.data();
  float* corr = sc.corr.data();

  // Visible keys [lo, hi) of each row.
  int64_t lo_min = kv_len, hi_max = 0;
  int64_t lo[kRowBlock], hi[kRowBlock];
  const float* qrow[kRowBlock];
  for (int64_t r = 0; r < n_rows; ++r) {
    const int64_t t = w.row_begin + r / nh;
    qrow[r] = a.q + (t * a.n_heads + w.h0 + r % nh) * D;
    const int64_t pos = kv_len - q_len + (t - q0);
    hi[r] = a.causal ? std::min(pos + 1, kv_len) : kv_len;
    lo[r] = a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
    lo_min = std::min(lo_min, lo[r]);
    hi_max = std::max(hi_max, hi[r]);
    m[r] = neg_inf;
    l[r] = 0.0f;
    std::fill(acc + r * Dv, acc + (r + 1) * Dv, 0.0f);
  }

  const C* keys[kKeyChunk];
  const C* vals[kKeyChunk];
  const int64_t last_block = (hi_max - 1) / bs;
  for (int64_t b = lo_min / bs; b * bs < hi_max; ++b) {
    const int64_t base = int64_t(table[b]) * bs;  // flat slot of the block's first token
    // NOTE: a head's keys are n_kv_heads * head_dim apart (often a page), which the
    // hardware prefetcher does not follow: fetch the next block's rows ahead.
    // (Prefill rows reuse each block from cache across rows and heads: decode only.)
    if (b < last_block && w.row_end - w.row_begin <= 4) {
      const int64_t next = int64_t(table[b + 1]) * bs;
      for (int64_t j = 0; j < bs; ++j) {
        const char* kp = reinterpret_cast<const char*>(kc + ((next + j) * a.n_kv_heads + kvh) * D);
        const char* vp = reinterpret_cast<const char*>(vc + ((next + j) * a.n_kv_heads + kvh) * Dv);
        for (int64_t off = 0; off < D * int64_t(sizeof(C)); off += 64) __builtin_prefetch(kp + off);
        for (int64_t off = 0; off < Dv * int64_t(sizeof(C)); off += 64) __builtin_prefetch(vp + off);
      }
    }
    const int64_t jb0 = std::max(lo_min, b * bs), jb1 = std::min(hi_max, (b + 1) * bs);
    for (int64_t c0 = jb0; c0 < jb1; c0 += kKeyChunk) {
      const int64_t nk = std::min(kKeyChunk, jb1 - c0);
      for (int64_t j = 0; j < nk; ++j) {
        const int64_t slot = base + (c0 + j - b * bs);
        keys[j] = kc + (slot * a.n_kv_heads + kvh) * D;
        vals[j] = vc + (slot * a.n_kv_heads + kvh) * Dv;
      }
      chunk_scores(qrow, n_rows, keys, nk, D, a.scale, s);
      // Online softmax per row; p overwrites s (0 outside the row's visible keys).
      for (int64_t r = 0; r < n_rows; ++r) {
        float* sr = s + r * kKeyChunk;
        const int64_t j0 = std::max<int64_t>(0, lo[r] - c0), j1 = std::min<int64_t>(nk, hi[r] - c0);
        if (j0 >= j1) {
          std::fill(sr, sr + kKeyChunk, 0.0f);
          corr[r] = 1.0f;
          continue;
        }
        if (a.softcap > 0.0f)
          for (int64_t j = j0; j < j1; ++j) sr[j] = std::tanh(sr[j] / a.softcap) * a.softcap;
        // A whole chunk of visible keys (most of a prefill's): max and sum as vectors; the
        // scalar loops' dependent chains took about a fifth of prefill attention.
        const bool whole = j0 == 0 && j1 == kKeyChunk && simd::kWidth > 1;
        float block_max = neg_inf;
        if (whole) {
          simd::VecF mx = simd::load(sr);
          for (int64_t j = simd::kWidth; j < kKeyChunk; j += simd::kWidth) mx = simd::max(mx, simd::load(sr + j));
          block_max = simd::hmax(mx);
        } else {
          for (int64_t j = j0; j < j1; ++j) block_max = std::max(block_max, sr[j]);
        }
        const float m_new = std::max(m[r], block_max);
        corr[r] = m[r] == neg_inf ? 1.0f : std::exp(m[r] - m_new);
        m[r] = m_new;
        const simd::VecF mv = simd::set1(m_new);
        int64_t j = 0;
        for (; j + simd::kWidth <= nk; j += simd::kWidth) simd::store(sr + j, simd::exp(simd::sub(simd::load(sr + j), mv)));
        for (; j < nk; ++j) sr[j] = std::exp(sr[j] - m_new);
        float sum = 0.0f;
        if (whole) {
          simd::VecF sv = simd::load(sr);
          for (int64_t jj = simd::kWidth; jj < kKeyChunk; jj += simd::kWidth) sv = simd::add(sv, simd::load(sr + jj));
          sum = simd::hsum(sv);
        } else {
          std::fill(sr, sr + j0, 0.0f);
          std::fill(sr + j1, sr + kKeyChunk, 0.0f);
          for (int64_t jj = j0; jj < j1; ++jj) sum += sr[jj];
        }
        l[r] = l[r] * corr[r] + sum;
      }
      chunk_pv(s, corr, n_rows, vals, nk, Dv, acc);
    }
  }

  for (int64_t r = 0; r < n_rows; ++r) {
    float* o = a.out + ((w.row_begin + r / nh) * a.n_heads + w.h0 + r % nh) * Dv;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    for (int64_t d = 0; d < Dv; ++d) o[d] = acc[r * Dv + d] * inv;
  }
}

template <typename C>
void paged_attention_typed(const PagedAttentionArgs& a) {
  // Items of (kv head, q heads of its group, tokens): up to kRowBlock (token, head) rows.
  const int64_t group = a.n_heads / a.n_kv_heads;
  const int32_t nh = int32_t(std::min<int64_t>(group, kRowBlock));
  const int32_t tokens = int32_t(kRowBlock / nh);
  std::vector<WorkItem> items;
  // NOTE: items are pulled dynamically in (kv head, tokens, head chunk) order: causal
  // prefill stays balanced (later rows see more keys), and neighbouring items read the
  // same K/V blocks while they are in the shared cache.
  for (int64_t kvh = 0; kvh < a.n_kv_heads; ++kvh)
    for (int64_t s = 0; s < a.n_seqs; ++s)
      for (int32_t r = a.q_start[s]; r < a.q_start[s + 1]; r += tokens)
        for (int32_t h = 0; h < group; h += nh)
          items.push_back({int32_t(s), r, std::min<int32_t>(r + tokens, a.q_start[s + 1]),
                           int32_t(kvh * group + h), std::min<int32_t>(nh, int32_t(group) - h)});
  const int64_t total = int64_t(items.size());
  std::atomic<int64_t> next{0};
  const int workers = int(std::min<int64_t>(ThreadPool::global().size(), total));
  ThreadPool::global().parallel_for(workers, [&](int64_t, int64_t) {
    Scratch sc(a.v_head_dim);
    for (int64_t i = next.fetch_add(1); i < total; i = next.fetch_add(1)) attend<C>(a, items[size_t(i)], sc);
  });
}

template <typename C>
void write_typed(C* cache, const float* src, int64_t T, int64_t row, const int32_t* slots) {
  parallel_for(T, row, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      C* dst = cache + int64_t(slots[t]) * row;
      const float* s = src + t * row;
      for (int64_t i = 0; i < row; ++i) dst[i] = from_f32<C>(s[i]);
    }
  });
}

}  // namespace

void paged_attention(const PagedAttentionArgs& a) {
  switch (a.cache_dtype) {
    case DType::f32: paged_attention_typed<float>(a); break;
    case DType::f16: paged_attention_typed<f16_t>(a); break;
    case DType::bf16: paged_attention_typed<bf16_t>(a); break;
    default: MLXCEL_CHECK(false, "paged_attention with a {} cache", dtype_name(a.cache_dtype));
  }
}

void kv_cache_write(void* k_cache, void* v_cache, DType cache_dtype, const float* k, const float* v, int64_t T,
                    int64_t n_kv_heads, int64_t head_dim, int64_t v_head_dim, const int32_t* slots) {
  const int64_t krow = n_kv_heads * head_dim, vrow = n_kv_heads * v_head_dim;
  switch (cache_dtype) {
    case DType::f32:
      write_typed(static_cast<float*>(k_cache), k, T, krow, slots);
      write_typed(static_cast<float*>(v_cache), v, T, vrow, slots);
      break;
    case DType::f16:
      write_typed(static_cast<f16_t*>(k_cache), k, T, krow, slots);
      write_typed(static_cast<f16_t*>(v_cache), v, T, vrow, slots);
      break;
    case DType::bf16:
      write_typed(static_cast<bf16_t*>(k_cache), k, T, krow, slots);
      write_typed(static_cast<bf16_t*>(v_cache), v, T, vrow, slots);
      break;
    default: MLXCEL_CHECK(false, "kv_cache_write to a {} cache", dtype_name(cache_dtype));
  }
}

}  // namespace mlxcel::cpu::MLXCEL_CPU_NS
