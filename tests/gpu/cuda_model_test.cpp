// CUDA backend vs the CPU kernels (quantized) and simple references (rope, kv-cache
// writes, paged attention). Fresh random data for every check, poisoned outputs.
#include <algorithm>
#include <numeric>

#include "backends/cpu/attention.h"
#include "backends/cpu/kernels.h"
#include "backends/cpu/quantized.h"
#include "base/error.h"
#include "test_util.h"

namespace mlxcel {
namespace {

using namespace gputest;

struct QuantHost {
  Tensor packed, scales, biases;
  cpu::QuantMatrix m;
};

QuantHost quantize_host(const Tensor& w, int bits, int gs, DType sdt) {
  const int64_t N = w.dim(0), K = w.dim(1);
  QuantHost q;
  q.packed = Tensor::empty({N, K * bits / 32}, DType::u32);
  q.scales = Tensor::empty({N, K / gs}, sdt);
  q.biases = Tensor::empty({N, K / gs}, sdt);
  cpu::quantize(w, bits, gs, q.packed, q.scales, q.biases);
  q.m = {q.packed.data<uint32_t>(), q.scales.raw(), q.biases.raw(), sdt, bits, gs, N, K};
  return q;
}

// The same matrix with device pointers (the device tensors are kept alive in `keep`).
cpu::QuantMatrix to_gpu(const QuantHost& q, std::vector<Tensor>& keep) {
  keep = {gpu(q.packed), gpu(q.scales), gpu(q.biases)};
  cpu::QuantMatrix m = q.m;
  m.packed = keep[0].data<uint32_t>();
  m.scales = keep[1].raw();
  m.biases = keep[2].raw();
  return m;
}

TEST(CudaQuant, QlinearAllBitsAndGroups) {
  REQUIRE_GPU();
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    for (int gs : {32, 64, 128}) {
      for (DType sdt : {DType::f16, DType::bf16, DType::f32}) {
        for (int64_t M : {1, 5, 19}) {
          const int64_t N = 67, K = 384;
          QuantHost q = quantize_host(rand_host({N, K}), bits, gs, sdt);
          std::vector<Tensor> keep;
          cpu::QuantMatrix dm = to_gpu(q, keep);
          const bool with_bias = M != 5;
          Tensor x = rand_host({M, K}), bias = rand_host({N});
          Tensor want = Tensor::empty({M, N}, DType::f32);
          cpu::qlinear(x.data<float>(), M, q.m, with_bias ? bias.data<float>() : nullptr, want.data<float>());
          Tensor dx = gpu(x), db = gpu(bias), out = poisoned({M, N}, DType::f32);
          cuda::qlinear(dx.data<float>(), M, dm, with_bias ? db.data<float>() : nullptr, out.data<float>());
          // 2-64 rows of 4- and 8-bit weights: bf16 on the tensor cores (qgemm_mma) by default;
          // one row of 4-bit weights: x rounded to bf16 on the tensor cores too (design 8).
          const double tol = bits == 4 || (bits == 8 && M > 1) ? kTolBf16 : kTolQuant;
          EXPECT_LT(rel_err(out, want), tol)
              << "bits=" << bits << " gs=" << gs << " scales=" << dtype_name(sdt) << " M=" << M;
        }
      }
    }
  }
}

// 64+ rows: x and the dequantized weights are rounded to bf16 and multiplied on the
// tensor cores (f32 accumulation), so the bf16 tolerance applies.
TEST(CudaQuant, QlinearTensorCorePrefill) {
  REQUIRE_GPU();
  for (int bits : {4, 8}) {
    for (int64_t M : {64, 131}) {
      const int64_t N = 300, K = 512;
      QuantHost q = quantize_host(rand_host({N, K}), bits, 64, DType::bf16);
      std::vector<Tensor> keep;
      cpu::QuantMatrix dm = to_gpu(q, keep);
      Tensor x = rand_host({M, K}), bias = rand_host({N});
      Tensor want = Tensor::empty({M, N}, DType::f32);
      cpu::qlinear(x.data<float>(), M, q.m, bias.data<float>(), want.data<float>());
      Tensor dx = gpu(x), db = gpu(bias), out = poisoned({M, N}, DType::f32);
      cuda::qlinear(dx.data<float>(), M, dm, db.data<float>(), out.data<float>());
      EXPECT_LT(rel_err(out, want), kTolBf16) << "bits=" << bits << " M=" << M;
    }
  }
}

TEST(CudaQuant, DequantizeIsBitExact) {
  REQUIRE_GPU();
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    for (DType sdt : {DType::f16, DType::bf16, DType::f32}) {
      const int64_t N = 23, K = 256;
      QuantHost q = quantize_host(rand_host({N, K}), bits, 64, sdt);
      std::vector<Tensor> keep;
      cpu::QuantMatrix dm = to_gpu(q, keep);
      Tensor rows = rand_ids(9, int32_t(N));
      Tensor want = Tensor::empty({9, K}, DType::f32);
      cpu::dequantize_rows_f32(q.m, rows.data<int32_t>(), 9, want.data<float>());
      Tensor drows = gpu(rows), out = poisoned({9, K}, DType::f32);
      cuda::dequantize_rows_f32(dm, drows.data<int32_t>(), 9, out.data<float>());
      EXPECT_TRUE(bytes_equal(out, want)) << "bits=" << bits << " " << dtype_name(sdt);
      if (sdt != DType::f32) {
        Tensor sw = Tensor::empty({N, K}, sdt);
        cpu::dequantize_same_dtype(q.m, sw.raw());
        Tensor so = poisoned({N, K}, sdt);
        cuda::dequantize_same_dtype(dm, so.raw());
        EXPECT_TRUE(bytes_equal(so, sw)) << "same dtype, bits=" << bits << " " << dtype_name(sdt);
      }
      Tensor bad = gpu(Tensor::from_i32({2}, {0, int32_t(N)}));
      Tensor bo = poisoned({2, K}, DType::f32);
      EXPECT_THROW(cuda::dequantize_rows_f32(dm, bad.data<int32_t>(), 2, bo.data<float>()), Error);
    }
  }
}

// Reference rope in f32, the transformers formula.
Tensor rope_ref(const Tensor& x32, const std::vector<int32_t>& pos, const std::vector<float>& inv, int rd, bool inter,
                float sc) {
  const int64_t T = x32.dim(0), H = x32.dim(1), D = x32.dim(2);
  Tensor out = x32.clone();
  const float* xp = x32.data<float>();
  float* o = out.data<float>();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int i = 0; i < rd / 2; ++i) {
        const float ang = float(pos[size_t(t)]) * inv[size_t(i)];
        const float c = std::cos(ang) * sc, s = std::sin(ang) * sc;
        const int64_t base = (t * H + h) * D;
        const int64_t ia = inter ? 2 * i : i, ib = inter ? 2 * i + 1 : i + rd / 2;
        o[base + ia] = xp[base + ia] * c - xp[base + ib] * s;
        o[base + ib] = xp[base + ib] * c + xp[base + ia] * s;
      }
  return out;
}

TEST(CudaRope, NeoxInterleavedPartialScaled) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::bf16}) {
    for (bool inter : {false, true}) {
      for (int rd : {64, 32}) {
        const int64_t T = 7, H = 3, D = 80;
        Tensor x = rand_host({T, H, D}, dt, -2.0f, 2.0f);
        Tensor pos = rand_ids(T, 5000);
        std::vector<float> inv(size_t(rd / 2));
        for (int i = 0; i < rd / 2; ++i) inv[size_t(i)] = std::pow(10000.0f, -2.0f * i / rd);
        RopeParams p;
        p.inv_freq = Tensor::from_f32({rd / 2}, inv);
        p.rotary_dim = rd;
        p.interleaved = inter;
        p.attention_scaling = 1.25f;
        Tensor x32 = Tensor::empty(x.shape(), DType::f32);
        cpu::convert(x, x32);
        std::vector<int32_t> pv(pos.data<int32_t>(), pos.data<int32_t>() + T);
        Tensor want = rope_ref(x32, pv, inv, rd, inter, 1.25f);
        Tensor out = poisoned({T, H, D}, dt);
        cuda::rope(gpu(x), gpu(pos), p, out);
        EXPECT_LT(rel_err(out, want), dt == DType::f32 ? kTolF32 : kTolBf16)
            << dtype_name(dt) << " inter=" << inter << " rd=" << rd;
        if (dt == DType::f32) {  // positions given on the host work too
          Tensor out2 = poisoned({T, H, D}, dt);
          cuda::rope(gpu(x), pos, p, out2);
          EXPECT_TRUE(bytes_equal(out2, out));
        }
      }
    }
  }
}

// A batch of sequences with paged caches, filled through kv_cache_write.
struct PagedBatch {
  AttentionContext ctx;   // host tensors
  std::vector<int> q_len, kv_len;
  Tensor k_cache, v_cache;  // device
  Tensor k_all, v_all;      // host f32 [total kv tokens, n_kv, D] per sequence, back to back
  std::vector<int64_t> kv_off;
};

PagedBatch make_batch(const std::vector<int>& q_len, const std::vector<int>& kv_len, int n_kv, int D, int Dv,
                      DType cdt, int bs) {
  PagedBatch b;
  b.q_len = q_len;
  b.kv_len = kv_len;
  const int S = int(q_len.size());
  int max_blocks = 0, total_blocks = 0;
  int64_t total_kv = 0;
  for (int s = 0; s < S; ++s) {
    max_blocks = std::max(max_blocks, (kv_len[size_t(s)] + bs - 1) / bs);
    total_blocks += (kv_len[size_t(s)] + bs - 1) / bs;
    b.kv_off.push_back(total_kv);
    total_kv += kv_len[size_t(s)];
  }
  // Blocks handed out in a shuffled order (+3 unused) so the tables are not contiguous.
  std::vector<int32_t> blocks(size_t(total_blocks + 3));
  std::iota(blocks.begin(), blocks.end(), 0);
  std::shuffle(blocks.begin(), blocks.end(), rng());
  std::vector<int32_t> table(size_t(S * std::max(max_blocks, 1)), 0), qs(size_t(S + 1), 0), kl(size_t(S), 0);
  size_t next = 0;
  for (int s = 0; s < S; ++s) {
    for (int j = 0; j < (kv_len[size_t(s)] + bs - 1) / bs; ++j) table[size_t(s * max_blocks + j)] = blocks[next++];
    qs[size_t(s + 1)] = qs[size_t(s)] + q_len[size_t(s)];
    kl[size_t(s)] = kv_len[size_t(s)];
  }
  b.ctx.block_size = bs;
  b.ctx.q_start = Tensor::from_i32({S + 1}, qs);
  b.ctx.kv_len = Tensor::from_i32({S}, kl);
  b.ctx.block_table = Tensor::from_i32({S, std::max(max_blocks, 1)}, table);
  // Write every token through kv_cache_write (plus one padding slot = -1).
  b.k_all = rand_host({total_kv, n_kv, D}, cdt);
  b.v_all = rand_host({total_kv, n_kv, Dv}, cdt);
  std::vector<int32_t> slots;
  for (int s = 0; s < S; ++s)
    for (int t = 0; t < kv_len[size_t(s)]; ++t)
      slots.push_back(table[size_t(s * max_blocks + t / bs)] * bs + t % bs);
  const int64_t n_blocks = int64_t(blocks.size());
  b.k_cache = poisoned({n_blocks, bs, n_kv, D}, cdt);
  b.v_cache = poisoned({n_blocks, bs, n_kv, Dv}, cdt);
  AttentionContext wctx = b.ctx;
  wctx.slot_mapping = Tensor::from_i32({int64_t(slots.size())}, slots);
  cuda::kv_cache_write(b.k_cache, b.v_cache, gpu(b.k_all), gpu(b.v_all), wctx);
  Tensor k32 = Tensor::empty(b.k_all.shape(), DType::f32), v32 = Tensor::empty(b.v_all.shape(), DType::f32);
  cpu::convert(b.k_all, k32);
  cpu::convert(b.v_all, v32);
  b.k_all = k32;
  b.v_all = v32;
  return b;
}

// Dense reference in double precision.
Tensor attention_ref(const Tensor& q, const PagedBatch& b, const AttentionParams& p, int n_kv, int Dv) {
  const int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2);
  const int G = int(H) / n_kv;
  Tensor out = Tensor::zeros({T, H, Dv}, DType::f32);
  const float* qp = q.data<float>();
  const float* kp = b.k_all.data<float>();
  const float* vp = b.v_all.data<float>();
  int64_t row = 0;
  for (size_t s = 0; s < b.q_len.size(); ++s) {
    const int L = b.kv_len[s], ql = b.q_len[s];
    for (int i = 0; i < ql; ++i, ++row) {
      const int pos = L - ql + i;
      const int hi = p.causal ? std::min(pos + 1, L) : L;
      const int lo = p.sliding_window > 0 ? std::max(0, pos - p.sliding_window + 1) : 0;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kvh = h / G;
        std::vector<double> sc;
        double mx = -INFINITY;
        for (int j = lo; j < hi; ++j) {
          const float* kr = kp + ((b.kv_off[s] + j) * n_kv + kvh) * D;
          double d = 0;
          for (int64_t e = 0; e < D; ++e) d += double(qp[(row * H + h) * D + e]) * kr[e];
          d *= p.scale;
          if (p.softcap > 0) d = std::tanh(d / p.softcap) * p.softcap;
          sc.push_back(d);
          mx = std::max(mx, d);
        }
        double sum = 0;
        for (auto& v : sc) sum += (v = std::exp(v - mx));
        for (int e = 0; e < Dv; ++e) {
          double acc = 0;
          for (int j = lo; j < hi; ++j) acc += sc[size_t(j - lo)] * vp[((b.kv_off[s] + j) * n_kv + kvh) * Dv + e];
          out.data<float>()[(row * H + h) * Dv + e] = sc.empty() ? 0.0f : float(acc / sum);
        }
      }
    }
  }
  return out;
}

TEST(CudaAttention, KvCacheWriteIsExact) {
  REQUIRE_GPU();
  PagedBatch b = make_batch({1, 4}, {5, 33}, 2, 24, 16, DType::bf16, 8);
  // Read back every written token through the block tables.
  Tensor kc = host(b.k_cache);
  std::vector<float> kcf = kc.to_f32_vector();
  const std::vector<float> ka = b.k_all.to_f32_vector();
  const int32_t* table = b.ctx.block_table.data<int32_t>();
  const int64_t mb = b.ctx.block_table.dim(1);
  for (size_t s = 0; s < 2; ++s)
    for (int t = 0; t < b.kv_len[s]; ++t) {
      const int64_t slot = int64_t(table[s * mb + t / 8]) * 8 + t % 8;
      for (int e = 0; e < 2 * 24; ++e)
        ASSERT_EQ(kcf[size_t(slot * 48 + e)], ka[size_t((b.kv_off[s] + t) * 48 + e)]);
    }
}

TEST(CudaAttention, PagedMatchesDenseReference) {
  REQUIRE_GPU();
  struct Case {
    std::vector<int> q_len, kv_len;
    int n_heads, n_kv, D, Dv, window;
    float softcap;
    bool causal;
    DType cdt, qdt;
  };
  const std::vector<Case> cases = {
      {{1, 1, 1}, {17, 300, 1000}, 8, 2, 64, 64, 0, 0.0f, true, DType::f32, DType::f32},     // decode, GQA, splits
      {{5, 1, 12}, {5, 40, 30}, 8, 2, 64, 64, 0, 0.0f, true, DType::f32, DType::f32},        // prefill + mixed
      {{9, 3}, {20, 11}, 12, 1, 128, 128, 6, 0.0f, true, DType::bf16, DType::f32},            // MQA, 12 heads, window
      {{7}, {7}, 4, 4, 96, 80, 0, 0.7f, true, DType::f16, DType::f32},                        // MHA, softcap, Dv != D
      {{4, 2}, {4, 9}, 6, 3, 256, 256, 0, 0.0f, false, DType::bf16, DType::bf16},             // non-causal, D = 256
      {{1, 2}, {0, 2}, 4, 2, 32, 32, 0, 0.0f, true, DType::f32, DType::f32},                  // empty sequence
      {{1, 1, 1, 1}, {2000, 33, 1, 95}, 32, 8, 128, 128, 0, 0.0f, true, DType::bf16, DType::f32},  // Llama-8B-like decode
      {{1, 3}, {50, 7}, 4, 2, 20, 20, 0, 0.0f, true, DType::bf16, DType::f32},              // D % 8 != 0: attn_kernel
      // Prompt-shaped steps (>= 64 rows, >= 16 per sequence): the tiled prefill kernel.
      {{70, 100}, {70, 150}, 8, 2, 64, 64, 0, 0.0f, true, DType::f32, DType::f32},          // cached prefix, tails
      {{130}, {130}, 12, 4, 128, 128, 33, 0.0f, true, DType::bf16, DType::f32},             // window
      {{65, 1, 64}, {65, 10, 200}, 4, 4, 96, 80, 0, 0.7f, true, DType::f16, DType::f32},   // softcap, Dv != D, a decode row
      {{80}, {80}, 6, 3, 256, 256, 0, 0.0f, false, DType::bf16, DType::bf16},               // non-causal, D = 256
      // Shapes of the tensor-core kernels (bf16/f16 caches, D = Dv in {32, 64, 80, 96, 128}).
      {{300, 1, 77}, {300, 500, 90}, 32, 8, 128, 128, 0, 0.0f, true, DType::bf16, DType::f32},  // Llama-8B-like
      {{96, 70}, {96, 170}, 16, 2, 64, 64, 0, 0.0f, true, DType::f16, DType::bf16},           // G = 8, f16 cache
      {{129}, {129}, 10, 2, 80, 80, 40, 0.0f, true, DType::bf16, DType::f32},                // G = 5, D = 80, window
      {{100, 3}, {100, 3}, 6, 6, 96, 96, 0, 0.9f, true, DType::bf16, DType::f32},            // MHA, D = 96, softcap
      {{1, 1, 2}, {1200, 64, 65}, 40, 2, 32, 32, 0, 0.0f, true, DType::bf16, DType::f32},    // G = 20 (two head groups)
      {{70}, {70}, 8, 4, 64, 64, 0, 0.0f, false, DType::bf16, DType::f32},                   // non-causal prefill
      {{1, 1}, {9000, 17}, 8, 8, 64, 64, 100, 0.0f, true, DType::f16, DType::f32},           // window, long context
  };
  // attn_kernel, attn_decode_kernel for decode rows, then the tensor-core kernels (which
  // round q and the probabilities to the cache's type: the bf16 tolerance for them); each
  // with decode rows' splits taking all their keys, at least 1 and at least 64 of them
  // (set_split_keys: rows of one batch then use different numbers of splits).
  for (int split_keys : {0, 1, 64}) {
  SCOPED_TRACE("split_keys " + std::to_string(split_keys));
  const int previous_keys = cuda::set_split_keys(split_keys);
  for (int variant : {0, 1, 2}) {
  SCOPED_TRACE(variant == 0 ? "attn_kernel" : variant == 1 ? "attn_decode_kernel" : "flash");
  const bool previous = cuda::set_decode_attention(variant == 1);
  const bool previous_flash = cuda::set_flash_attention(variant == 2);
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& c = cases[ci];
    int qlen0 = c.q_len[0];
    if (c.kv_len[0] == 0) qlen0 = 0;
    std::vector<int> ql = c.q_len;
    ql[0] = qlen0;
    PagedBatch b = make_batch(ql, c.kv_len, c.n_kv, c.D, c.Dv, c.cdt, 16);
    const int64_t T = std::accumulate(ql.begin(), ql.end(), int64_t(0));
    Tensor q = rand_host({T, c.n_heads, c.D}, c.qdt, -1.5f, 1.5f);
    Tensor q32 = Tensor::empty(q.shape(), DType::f32);
    cpu::convert(q, q32);
    AttentionParams p;
    p.scale = 1.0f / std::sqrt(float(c.D));
    p.sliding_window = c.window;
    p.softcap = c.softcap;
    p.causal = c.causal;
    Tensor want = attention_ref(q32, b, p, c.n_kv, c.Dv);
    Tensor out = poisoned({T, c.n_heads, c.Dv}, c.qdt);
    // Context on the host for this call and on the device for the next.
    cuda::paged_attention(gpu(q), b.k_cache, b.v_cache, b.ctx, p, out);
    const bool tensor_cores = variant == 2 && c.cdt != DType::f32 && c.D == c.Dv && c.D <= 128 && c.D % 16 == 0;
    const double tol = c.qdt == DType::f32 && !tensor_cores ? kTolF32 : kTolBf16;
    EXPECT_LT(rel_err(out, want), tol) << "case " << ci;
    AttentionContext dctx = b.ctx;
    dctx.q_start = gpu(b.ctx.q_start);
    dctx.kv_len = gpu(b.ctx.kv_len);
    dctx.block_table = gpu(b.ctx.block_table);
    Tensor out2 = poisoned({T, c.n_heads, c.Dv}, c.qdt);
    cuda::paged_attention(gpu(q), b.k_cache, b.v_cache, dctx, p, out2);
    EXPECT_LT(rel_err(out2, want), tol) << "case " << ci << " (device context)";
  }
  cuda::set_decode_attention(previous);
  cuda::set_flash_attention(previous_flash);
  }
  cuda::set_split_keys(previous_keys);
  }
}

// The raw-pointer forms (the CPU kernels' signatures) against the CPU kernels themselves.
TEST(CudaAttention, PointerFormsMatchCpuKernels) {
  REQUIRE_GPU();
  for (DType cdt : {DType::f32, DType::bf16}) {
    const int n_kv = 2, D = 64, Dv = 48, H = 6;
    PagedBatch b = make_batch({3, 1}, {9, 40}, n_kv, D, Dv, cdt, 16);
    const int64_t T = 4;
    Tensor q = rand_host({T, H, D});
    Tensor kh = host(b.k_cache), vh = host(b.v_cache);
    cpu::PagedAttentionArgs a;
    a.q = q.data<float>();
    a.T = T;
    a.n_heads = H;
    a.head_dim = D;
    a.k_cache = kh.raw();
    a.v_cache = vh.raw();
    a.cache_dtype = cdt;
    a.block_size = 16;
    a.n_kv_heads = n_kv;
    a.v_head_dim = Dv;
    a.q_start = b.ctx.q_start.data<int32_t>();
    a.kv_len = b.ctx.kv_len.data<int32_t>();
    a.block_table = b.ctx.block_table.data<int32_t>();
    a.n_seqs = 2;
    a.max_blocks = b.ctx.block_table.dim(1);
    a.scale = 0.125f;
    a.sliding_window = 7;
    Tensor want = Tensor::empty({T, H, Dv}, DType::f32);
    a.out = want.data<float>();
    cpu::paged_attention(a);
    // Same call with device q / caches / out and the host context arrays.
    Tensor dq = gpu(q), out = poisoned({T, H, Dv}, DType::f32);
    a.q = dq.data<float>();
    a.k_cache = b.k_cache.raw();
    a.v_cache = b.v_cache.raw();
    a.out = out.data<float>();
    cuda::paged_attention(a);
    EXPECT_LT(rel_err(out, want), kTolF32) << dtype_name(cdt);

    // kv_cache_write, pointer form vs CPU kernel, on fresh caches.
    const int64_t nb = 3, bs = 4, nt = 5;
    Tensor k = rand_host({nt, n_kv, D}), v = rand_host({nt, n_kv, Dv});
    std::vector<int32_t> slots = {7, 0, 11, 3, 5};
    Tensor kw = Tensor::zeros({nb, bs, n_kv, D}, cdt), vw = Tensor::zeros({nb, bs, n_kv, Dv}, cdt);
    cpu::kv_cache_write(kw.raw(), vw.raw(), cdt, k.data<float>(), v.data<float>(), nt, n_kv, D, Dv, slots.data());
    Tensor kd = gpu(Tensor::zeros({nb, bs, n_kv, D}, cdt)), vd = gpu(Tensor::zeros({nb, bs, n_kv, Dv}, cdt));
    Tensor dk = gpu(k), dv = gpu(v);
    cuda::kv_cache_write(kd.raw(), vd.raw(), cdt, dk.data<float>(), dv.data<float>(), nt, n_kv, D, Dv, slots.data());
    EXPECT_TRUE(bytes_equal(kd, kw));
    EXPECT_TRUE(bytes_equal(vd, vw));
  }
  // rope, pointer form: host inv_freq, device positions.
  const int64_t T = 5, H = 2, D = 32;
  Tensor x = rand_host({T, H, D}), pos = rand_ids(T, 900);
  std::vector<float> inv(8);
  for (int i = 0; i < 8; ++i) inv[size_t(i)] = std::pow(10000.0f, -2.0f * i / 16);
  std::vector<int32_t> pv(pos.data<int32_t>(), pos.data<int32_t>() + T);
  Tensor want = rope_ref(x, pv, inv, 16, false, 1.0f);
  Tensor dx = gpu(x), dp = gpu(pos), out = poisoned({T, H, D}, DType::f32);
  cuda::rope(dx.data<float>(), T, H, D, dp.data<int32_t>(), inv.data(), 16, 1.0f, false, out.data<float>());
  EXPECT_LT(rel_err(out, want), kTolF32);
}

}  // namespace
}  // namespace mlxcel
