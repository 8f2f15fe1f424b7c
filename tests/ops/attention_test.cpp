// kv_cache_write + paged_attention against a naive dense attention in double.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "backends/cpu/simd.h"
#include "test_util.h"

namespace mlxcel {
namespace {

using optest::expect_error;
using optest::rand_vec;

struct Seq {
  int kv_len, q_len;
};

// A ragged batch over a paged cache whose blocks are handed out in shuffled order.
struct PagedBatch {
  int Hq, Hkv, D, Dv, block_size, n_blocks;
  DType cache_dtype;
  std::vector<Seq> seqs;
  int T = 0, max_blocks = 0;
  Tensor k_cache, v_cache, q;
  std::vector<std::vector<float>> k, v;  // per sequence [kv_len, Hkv, D|Dv], rounded to the cache dtype
  AttentionContext ctx;

  PagedBatch(int hq, int hkv, int d, int dv, int bs, DType cdt, std::vector<Seq> ss, uint32_t seed)
      : Hq(hq), Hkv(hkv), D(d), Dv(dv), block_size(bs), cache_dtype(cdt), seqs(std::move(ss)) {
    int total_blocks = 0;
    for (const auto& s : seqs) {
      const int nb = (s.kv_len + bs - 1) / bs;
      max_blocks = std::max(max_blocks, nb + 1);  // one spare column, padded with -1
      total_blocks += nb;
      T += s.q_len;
    }
    n_blocks = total_blocks + 3;
    std::vector<int32_t> perm(static_cast<size_t>(n_blocks));
    std::iota(perm.begin(), perm.end(), 0);
    std::mt19937 rng(seed);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int32_t> table(size_t(seqs.size() * max_blocks), -1), q_start{0}, kv_len;
    size_t next = 0;
    for (size_t s = 0; s < seqs.size(); ++s) {
      for (int b = 0; b * bs < seqs[s].kv_len; ++b) table[s * size_t(max_blocks) + size_t(b)] = perm[next++];
      q_start.push_back(q_start.back() + seqs[s].q_len);
      kv_len.push_back(seqs[s].kv_len);
    }
    k_cache = ops::zeros({n_blocks, bs, Hkv, D}, cdt, Device::cpu());
    v_cache = ops::zeros({n_blocks, bs, Hkv, Dv}, cdt, Device::cpu());
    ctx.block_size = bs;
    ctx.block_table = Tensor::from_i32({int64_t(seqs.size()), max_blocks}, table);
    ctx.q_start = Tensor::from_i32({int64_t(seqs.size() + 1)}, q_start);
    ctx.kv_len = Tensor::from_i32({int64_t(seqs.size())}, kv_len);
    // Two steps of writes: the cached prefix of every sequence, then this step's tokens.
    for (int step = 0; step < 2; ++step) {
      std::vector<float> kw, vw;
      std::vector<int32_t> slots;
      for (size_t s = 0; s < seqs.size(); ++s) {
        if (step == 0) {
          k.push_back(rand_vec(int64_t(seqs[s].kv_len) * Hkv * D, seed + 10 + uint32_t(s)));
          v.push_back(rand_vec(int64_t(seqs[s].kv_len) * Hkv * Dv, seed + 20 + uint32_t(s)));
        }
        const int begin = step == 0 ? 0 : seqs[s].kv_len - seqs[s].q_len;
        const int end = step == 0 ? seqs[s].kv_len - seqs[s].q_len : seqs[s].kv_len;
        for (int t = begin; t < end; ++t) {
          slots.push_back(table[s * size_t(max_blocks) + size_t(t / bs)] * bs + t % bs);
          kw.insert(kw.end(), k[s].begin() + int64_t(t) * Hkv * D, k[s].begin() + int64_t(t + 1) * Hkv * D);
          vw.insert(vw.end(), v[s].begin() + int64_t(t) * Hkv * Dv, v[s].begin() + int64_t(t + 1) * Hkv * Dv);
        }
      }
      AttentionContext wctx = ctx;
      const int64_t n = int64_t(slots.size());
      wctx.slot_mapping = Tensor::from_i32({n}, slots);
      ops::kv_cache_write(k_cache, v_cache, Tensor::from_f32({n, Hkv, D}, kw), Tensor::from_f32({n, Hkv, Dv}, vw),
                          wctx);
      if (step == 1) ctx.slot_mapping = wctx.slot_mapping;
    }
    for (auto& kk : k) kk = optest::round_to(kk, cdt);
    for (auto& vv : v) vv = optest::round_to(vv, cdt);
    q = optest::rand_f32({T, Hq, D}, seed + 99, -2.0f, 2.0f);
  }

  std::vector<float> reference(const AttentionParams& p) const {
    std::vector<float> out(size_t(T) * size_t(Hq) * size_t(Dv), 0.0f);
    auto qv = q.to_f32_vector();
    int row = 0;
    for (size_t s = 0; s < seqs.size(); ++s) {
      const int kv = seqs[s].kv_len, ql = seqs[s].q_len;
      for (int i = 0; i < ql; ++i, ++row) {
        const int pos = kv - ql + i;
        for (int h = 0; h < Hq; ++h) {
          const int kvh = h / (Hq / Hkv);
          std::vector<double> sc;
          std::vector<int> keys;
          for (int j = 0; j < kv; ++j) {
            if (p.causal && j > pos) continue;
            if (p.sliding_window > 0 && j <= pos - p.sliding_window) continue;
            double d = 0;
            for (int c = 0; c < D; ++c)
              d += double(qv[size_t((row * Hq + h) * D + c)]) * k[s][size_t((j * Hkv + kvh) * D + c)];
            d *= p.scale;
            if (p.softcap > 0) d = std::tanh(d / p.softcap) * p.softcap;
            sc.push_back(d);
            keys.push_back(j);
          }
          if (keys.empty()) continue;
          const double m = *std::max_element(sc.begin(), sc.end());
          double z = 0;
          for (double& x : sc) z += (x = std::exp(x - m));
          for (int c = 0; c < Dv; ++c) {
            double acc = 0;
            for (size_t n = 0; n < keys.size(); ++n) acc += sc[n] * v[s][size_t((keys[n] * Hkv + kvh) * Dv + c)];
            out[size_t((row * Hq + h) * Dv + c)] = float(acc / z);
          }
        }
      }
    }
    return out;
  }
};

const std::vector<Seq> kRagged = {{40, 37}, {9, 1}, {23, 5}};  // chunked prefill, decode, speculative

TEST(PagedAttention, MatchesDenseReference) {
  struct Heads {
    int hq, hkv;
  } heads[] = {{6, 2}, {4, 1}, {3, 3}, {20, 1}};  // GQA, MQA, MHA; a group wider than a 16-row work item
  uint32_t seed = 1;
  for (DType cdt : optest::kFloatDTypes)
    for (const auto& hd : heads)
      for (int bs : {4, 16}) {
        PagedBatch st(hd.hq, hd.hkv, 20, 12, bs, cdt, kRagged, seed++);
        for (bool causal : {true, false})
          for (int window : {0, 5})
            for (float cap : {0.0f, 20.0f}) {
              AttentionParams p;
              p.scale = 1.0f / std::sqrt(20.0f);
              p.causal = causal;
              p.sliding_window = window;
              p.softcap = cap;
              Tensor o = ops::paged_attention(st.q, st.k_cache, st.v_cache, st.ctx, p);
              ASSERT_EQ(o.shape(), (Shape{st.T, hd.hq, 12}));
              optest::expect_close(o, st.reference(p), 2e-5f, 1e-5f,
                                   fmt::format("{} H{}/{} bs{} causal{} window{} cap{}", dtype_name(cdt), hd.hq,
                                               hd.hkv, bs, causal, window, cap));
            }
      }
}

TEST(PagedAttention, DecodeSeesWholeSequenceAndBatchesAreIndependent) {
  // Attention of one sequence alone equals its rows inside the ragged batch.
  PagedBatch all(4, 2, 16, 16, 8, DType::f32, kRagged, 77);
  AttentionParams p;
  p.scale = 0.25f;
  auto batched = ops::paged_attention(all.q, all.k_cache, all.v_cache, all.ctx, p).to_f32_vector();
  auto ref = all.reference(p);
  optest::expect_close(batched, ref, 2e-5f, 1e-5f);
  // Same rows computed with a context of just sequence 1 (a single decode row).
  AttentionContext one = all.ctx;
  const int32_t* table = all.ctx.block_table.data<int32_t>();
  one.q_start = Tensor::from_i32({2}, {0, 1});
  one.kv_len = Tensor::from_i32({1}, {9});
  one.block_table = Tensor::from_i32(
      {1, all.max_blocks}, std::vector<int32_t>(table + all.max_blocks, table + 2 * all.max_blocks));
  Tensor q1 = ops::contiguous(all.q.slice(0, 37, 38));
  auto alone = ops::paged_attention(q1, all.k_cache, all.v_cache, one, p).to_f32_vector();
  std::vector<float> want(batched.begin() + 37 * 4 * 16, batched.begin() + 38 * 4 * 16);
  EXPECT_EQ(alone, want);
}

// Model-sized heads (D = Dv = 128, GQA 2:1, a 70-row prefill chunk after a 30-token
// prefix): several 16-row blocks, 4-row groups with a remainder, 16-key chunks, and
// block boundaries inside the causal diagonal.
TEST(PagedAttention, ModelSizedHeadsMatchDenseReference) {
  for (DType cdt : {DType::f32, DType::bf16}) {
    PagedBatch st(4, 2, 128, 128, 16, cdt, {{100, 70}, {37, 1}}, 123);
    for (int window : {0, 21}) {
      AttentionParams p;
      p.scale = 1.0f / std::sqrt(128.0f);
      p.sliding_window = window;
      Tensor o = ops::paged_attention(st.q, st.k_cache, st.v_cache, st.ctx, p);
      optest::expect_close(o, st.reference(p), 2e-5f, 1e-5f, fmt::format("{} window {}", dtype_name(cdt), window));
    }
  }
}

// The vector exp the attention softmax uses, against std::exp over the range it sees.
TEST(CpuSimd, ExpMatchesStdExp) {
  using namespace cpu::simd;
  float worst = 0.0f;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    float in[kWidth], out[kWidth];
    for (int i = 0; i < kWidth; ++i) in[i] = x + 0.001f * float(i);
    store(out, exp(load(in)));
    for (int i = 0; i < kWidth; ++i) {
      const double want = std::exp(double(in[i]));
      worst = std::max(worst, float(std::fabs(out[i] - want) / want));
    }
  }
  EXPECT_LT(worst, 4e-7f);
  float in[kWidth], out[kWidth];
  for (int i = 0; i < kWidth; ++i) in[i] = i % 2 ? 0.0f : -1000.0f;
  store(out, exp(load(in)));
  for (int i = 0; i < kWidth; ++i) EXPECT_TRUE(i % 2 ? out[i] == 1.0f : out[i] < 1e-37f) << i << " " << out[i];
}

TEST(PagedAttention, RejectsBadContexts) {
  PagedBatch st(4, 2, 8, 8, 4, DType::f32, {{6, 2}, {5, 5}}, 5);
  AttentionParams p;
  auto run = [&](const AttentionContext& c) { ops::paged_attention(st.q, st.k_cache, st.v_cache, c, p); };
  AttentionContext c = st.ctx;
  c.kv_len = Tensor::from_i32({2}, {6, 4});  // kv_len < q_len
  expect_error([&] { run(c); }, ErrorKind::invalid_request, "kv_len");
  c = st.ctx;
  c.kv_len = Tensor::from_i32({2}, {6, 13});  // beyond the block table
  expect_error([&] { run(c); }, ErrorKind::invalid_request, "block table");
  c = st.ctx;
  std::vector<int32_t> table(st.ctx.block_table.data<int32_t>(),
                             st.ctx.block_table.data<int32_t>() + st.ctx.block_table.numel());
  table[0] = st.n_blocks;  // out of range
  c.block_table = Tensor::from_i32(st.ctx.block_table.shape(), table);
  expect_error([&] { run(c); }, ErrorKind::invalid_request, "block_table[0][0]");
  table[0] = -1;
  c.block_table = Tensor::from_i32(st.ctx.block_table.shape(), table);
  expect_error([&] { run(c); }, ErrorKind::invalid_request, "block_table");
  c = st.ctx;
  c.q_start = Tensor::from_i32({3}, {0, 2, 6});  // does not end at T = 7
  expect_error([&] { run(c); }, ErrorKind::invalid_request, "q_start");
  c = st.ctx;
  c.q_start = Tensor::from_i32({2}, {0, 2});  // wrong length
  expect_error([&] { run(c); }, ErrorKind::invalid_request, "q_start");
  c = st.ctx;
  c.block_size = 8;
  expect_error([&] { run(c); }, ErrorKind::invalid_request, "block_size");
  expect_error([&] { ops::paged_attention(optest::rand_f32({7, 3, 8}, 1), st.k_cache, st.v_cache, st.ctx, p); },
               ErrorKind::invalid_request, "multiple");
  expect_error([&] { ops::paged_attention(optest::rand_f32({7, 4, 9}, 1), st.k_cache, st.v_cache, st.ctx, p); },
               ErrorKind::invalid_request, "head_dim");

  // kv_cache_write: slots outside the cache, mismatched shapes.
  AttentionContext w = st.ctx;
  w.slot_mapping = Tensor::from_i32({1}, {int32_t(st.n_blocks * 4)});
  Tensor k1 = optest::rand_f32({1, 2, 8}, 1), v1 = optest::rand_f32({1, 2, 8}, 2);
  expect_error([&] { ops::kv_cache_write(st.k_cache, st.v_cache, k1, v1, w); }, ErrorKind::invalid_request,
               "slot_mapping[0]");
  w.slot_mapping = Tensor::from_i32({1}, {-1});
  expect_error([&] { ops::kv_cache_write(st.k_cache, st.v_cache, k1, v1, w); }, ErrorKind::invalid_request,
               "slot_mapping");
  w.slot_mapping = Tensor::from_i32({1}, {0});
  expect_error([&] { ops::kv_cache_write(st.k_cache, st.v_cache, optest::rand_f32({1, 2, 7}, 1), v1, w); },
               ErrorKind::invalid_request, "[kv_cache_write] k");
  expect_error([&] { ops::kv_cache_write(st.k_cache, st.v_cache, k1, optest::rand_f32({2, 2, 8}, 1), w); },
               ErrorKind::invalid_request, "[kv_cache_write] v");
}

// rope_kv_write (ops/fused.h) is rope, rope and kv_cache_write on the CPU, bit for bit,
// and checks its arguments like them.
TEST(RopeKvWrite, EqualsTheCompositionOnTheCpu) {
  RopeParams rp;
  std::vector<float> inv(4);
  for (int i = 0; i < 4; ++i) inv[size_t(i)] = std::pow(10000.0f, -2.0f * i / 8);
  rp.inv_freq = Tensor::from_f32({4}, inv);
  rp.rotary_dim = 8;
  AttentionContext ctx;
  ctx.block_size = 2;
  ctx.slot_mapping = Tensor::from_i32({2}, {5, 0});
  Tensor q = optest::rand_f32({2, 4, 12}, 1), k = optest::rand_f32({2, 2, 12}, 2), v = optest::rand_f32({2, 2, 6}, 3);
  Tensor pos = Tensor::from_i32({2}, {3, 40});
  Tensor kc1 = Tensor::zeros({4, 2, 2, 12}, DType::f32), vc1 = Tensor::zeros({4, 2, 2, 6}, DType::f32);
  Tensor kc2 = Tensor::zeros({4, 2, 2, 12}, DType::f32), vc2 = Tensor::zeros({4, 2, 2, 6}, DType::f32);
  Tensor got = ops::rope_kv_write(q, k, v, pos, rp, kc1, vc1, ctx);
  ops::kv_cache_write(kc2, vc2, ops::rope(k, pos, rp), v, ctx);
  EXPECT_EQ(got.to_f32_vector(), ops::rope(q, pos, rp).to_f32_vector());
  EXPECT_EQ(kc1.to_f32_vector(), kc2.to_f32_vector());
  EXPECT_EQ(vc1.to_f32_vector(), vc2.to_f32_vector());
  AttentionContext bad = ctx;
  bad.slot_mapping = Tensor::from_i32({2}, {5, 16});
  expect_error([&] { ops::rope_kv_write(q, k, v, pos, rp, kc1, vc1, bad); }, ErrorKind::invalid_request,
               "slot_mapping[1] = 16");
  expect_error([&] { ops::rope_kv_write(q, k, v, Tensor::from_i32({1}, {3}), rp, kc1, vc1, ctx); },
               ErrorKind::invalid_request, "positions");
}

}  // namespace
}  // namespace mlxcel
