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

namespace mlxcel::cpu {

namespace {

// Query rows handled together: each cache block is read once for all of them.
constexpr int64_t kRowBlock = 16;

struct WorkItem {
  int32_t seq, row_begin, row_end;  // flat rows [row_begin, row_end) of sequence seq
};

template <typename C>
void attend(const PagedAttentionArgs& a, int64_t h, const WorkItem& w, std::vector<float>& acc, std::vector<float>& m,
            std::vector<float>& l, std::vector<float>& scores) {
  const int64_t D = a.head_dim, Dv = a.v_head_dim, bs = a.block_size;
  const int64_t group = a.n_heads / a.n_kv_heads, kvh = h / group;
  const int64_t q0 = a.q_start[w.seq], q_len = a.q_start[w.seq + 1] - q0, kv_len = a.kv_len[w.seq];
  const int32_t* table = a.block_table + int64_t(w.seq) * a.max_blocks;
  const C* kc = static_cast<const C*>(a.k_cache);
  const C* vc = static_cast<const C*>(a.v_cache);
  const int64_t n_rows = w.row_end - w.row_begin;
  const float neg_inf = -std::numeric_limits<float>::infinity();

  // Visible keys [lo, hi) of each row.
  int64_t lo_min = kv_len, hi_max = 0;
  int64_t lo[kRowBlock], hi[kRowBlock];
  for (int64_t r = 0; r < n_rows; ++r) {
    const int64_t pos = kv_len - q_len + (w.row_begin + r - q0);
    hi[r] = a.causal ? std::min(pos + 1, kv_len) : kv_len;
    lo[r] = a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
    lo_min = std::min(lo_min, lo[r]);
    hi_max = std::max(hi_max, hi[r]);
    m[size_t(r)] = neg_inf;
    l[size_t(r)] = 0.0f;
    std::fill(acc.begin() + r * Dv, acc.begin() + (r + 1) * Dv, 0.0f);
  }

  const int64_t last_block = (hi_max - 1) / bs;
  for (int64_t b = lo_min / bs; b * bs < hi_max; ++b) {
    const int64_t base = int64_t(table[b]) * bs;  // flat slot of the block's first token
    // NOTE: a head's keys are n_kv_heads * head_dim apart (often a page), which the
    // hardware prefetcher does not follow: fetch the next block's rows ahead.
    if (b < last_block) {
      const int64_t next = int64_t(table[b + 1]) * bs;
      for (int64_t j = 0; j < bs; ++j) {
        const char* kp = reinterpret_cast<const char*>(kc + ((next + j) * a.n_kv_heads + kvh) * D);
        const char* vp = reinterpret_cast<const char*>(vc + ((next + j) * a.n_kv_heads + kvh) * Dv);
        for (int64_t off = 0; off < D * int64_t(sizeof(C)); off += 64) __builtin_prefetch(kp + off);
        for (int64_t off = 0; off < Dv * int64_t(sizeof(C)); off += 64) __builtin_prefetch(vp + off);
      }
    }
    for (int64_t r = 0; r < n_rows; ++r) {
      const int64_t j0 = std::max(lo[r], b * bs), j1 = std::min(hi[r], (b + 1) * bs);
      if (j0 >= j1) continue;
      const float* q = a.q + ((w.row_begin + r) * a.n_heads + h) * D;
      float block_max = neg_inf;
      for (int64_t j = j0; j < j1; ++j) {
        const C* k = kc + ((base + j - b * bs) * a.n_kv_heads + kvh) * D;
        float s = simd::dot(q, k, D) * a.scale;
        if (a.softcap > 0.0f) s = std::tanh(s / a.softcap) * a.softcap;
        scores[size_t(j - j0)] = s;
        block_max = std::max(block_max, s);
      }
      float* ar = acc.data() + r * Dv;
      const float m_new = std::max(m[size_t(r)], block_max);
      if (m[size_t(r)] != neg_inf && m_new > m[size_t(r)]) {
        const float corr = std::exp(m[size_t(r)] - m_new);
        l[size_t(r)] *= corr;
        simd::scale_inplace(ar, corr, Dv);
      }
      m[size_t(r)] = m_new;
      for (int64_t j = j0; j < j1; ++j) {
        const float p = std::exp(scores[size_t(j - j0)] - m_new);
        l[size_t(r)] += p;
        simd::axpy(ar, p, vc + ((base + j - b * bs) * a.n_kv_heads + kvh) * Dv, Dv);
      }
    }
  }

  for (int64_t r = 0; r < n_rows; ++r) {
    float* o = a.out + ((w.row_begin + r) * a.n_heads + h) * Dv;
    const float inv = l[size_t(r)] > 0.0f ? 1.0f / l[size_t(r)] : 0.0f;
    for (int64_t d = 0; d < Dv; ++d) o[d] = acc[size_t(r * Dv + d)] * inv;
  }
}

template <typename C>
void paged_attention_typed(const PagedAttentionArgs& a) {
  std::vector<WorkItem> items;
  for (int64_t s = 0; s < a.n_seqs; ++s) {
    for (int32_t r = a.q_start[s]; r < a.q_start[s + 1]; r += int32_t(kRowBlock))
      items.push_back({int32_t(s), r, std::min<int32_t>(r + int32_t(kRowBlock), a.q_start[s + 1])});
  }
  const int64_t n_items = int64_t(items.size()), group = a.n_heads / a.n_kv_heads;
  const int64_t total = a.n_heads * n_items;
  // NOTE: items are pulled dynamically in (kv head, rows, q head) order: causal
  // prefill stays balanced (later rows see more keys), and the q heads sharing a
  // kv head run at the same time, so their K/V reads hit the shared cache.
  std::atomic<int64_t> next{0};
  const int workers = int(std::min<int64_t>(ThreadPool::global().size(), total));
  ThreadPool::global().parallel_for(workers, [&](int64_t, int64_t) {
    std::vector<float> acc(size_t(kRowBlock * a.v_head_dim)), m(kRowBlock), l(kRowBlock),
        scores(size_t(a.block_size));
    for (int64_t i = next.fetch_add(1); i < total; i = next.fetch_add(1)) {
      const int64_t kvh = i / (n_items * group), rest = i % (n_items * group);
      const int64_t h = kvh * group + rest % group;
      attend<C>(a, h, items[size_t(rest / group)], acc, m, l, scores);
    }
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

}  // namespace mlxcel::cpu
