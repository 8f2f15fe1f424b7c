// The op API on CUDA tensors (src/ops dispatch -> backends/cuda) against the same ops
// on the CPU. Fresh random data for every check.
#include <algorithm>
#include <random>
#include <tuple>

#include "backends/cpu/isa.h"
#include "base/error.h"
#include "ops/ops.h"
#include "ops/sample.h"
#include "test_util.h"

namespace mlxcel {
namespace {

using namespace gputest;

Tensor dev(const Tensor& t) { return ops::to_device(t, Device::cuda()); }
// RoPE over the first 16 of the head dims (base 10000), scaled by 1.1.
RopeParams partial_rope() {
  RopeParams rp;
  std::vector<float> inv(8);
  for (int i = 0; i < 8; ++i) inv[size_t(i)] = std::pow(10000.0f, -2.0f * i / 16);
  rp.inv_freq = Tensor::from_f32({8}, inv);
  rp.rotary_dim = 16;
  rp.attention_scaling = 1.1f;
  return rp;
}
std::vector<int32_t> ids_of(const Tensor& t) {
  const Tensor h = t.device().type == DeviceType::cpu ? t : host(t);
  return std::vector<int32_t>(h.data<int32_t>(), h.data<int32_t>() + h.numel());
}

TEST(CudaOps, DenseOpsMatchCpu) {
  REQUIRE_GPU();
  Tensor x = rand_host({5, 96}, DType::f32, -2.0f, 2.0f), w = rand_host({96}, DType::bf16);
  EXPECT_LT(rel_err(ops::rms_norm(dev(x), dev(w), 1e-6f), ops::rms_norm(x, w, 1e-6f)), kTolF32);
  EXPECT_LT(rel_err(ops::layer_norm(dev(x), dev(w), Tensor(), 1e-5f), ops::layer_norm(x, w, Tensor(), 1e-5f)), kTolF32);
  Tensor y = rand_host({5, 96});
  EXPECT_LT(rel_err(ops::add(dev(x), dev(y)), ops::add(x, y)), kTolF32);
  EXPECT_LT(rel_err(ops::mul(dev(x), dev(w)), ops::mul(x, w)), kTolF32);
  EXPECT_LT(rel_err(ops::scale(dev(x), 0.3f), ops::scale(x, 0.3f)), kTolF32);
  EXPECT_LT(rel_err(ops::gated(dev(x), dev(y), ops::Activation::silu), ops::gated(x, y, ops::Activation::silu)), kTolF32);
  EXPECT_LT(rel_err(ops::activate(dev(x), ops::Activation::gelu_tanh), ops::activate(x, ops::Activation::gelu_tanh)),
            kTolF32);
  EXPECT_LT(rel_err(ops::softcap(dev(x), 1.5f), ops::softcap(x, 1.5f)), kTolF32);
  EXPECT_LT(rel_err(ops::softmax(dev(x)), ops::softmax(x)), kTolF32);
  EXPECT_TRUE(bytes_equal(ops::argmax(dev(x)), ops::argmax(x)));
  Tensor dx = dev(x);
  ops::add_(dx, dev(y));
  EXPECT_LT(rel_err(dx, ops::add(x, y)), kTolF32);

  Tensor lw = rand_host({33, 96}, DType::bf16), lb = rand_host({33});
  for (int64_t M : {1, 20}) {
    Tensor lx = rand_host({M, 96});
    EXPECT_LT(rel_err(ops::linear(dev(lx), dev(lw), dev(lb)), ops::linear(lx, lw, lb)),
              M > cuda::dense_gemv_rows() ? kTolBf16 : kTolF32);
  }
  Tensor table = rand_host({50, 24}, DType::bf16), ids = rand_ids(7, 50);
  EXPECT_TRUE(bytes_equal(ops::embedding(dev(ids), dev(table)), ops::embedding(ids, table)));
  EXPECT_TRUE(bytes_equal(ops::take_rows(dev(table), dev(ids)), ops::take_rows(table, ids)));
  EXPECT_THROW(ops::embedding(dev(Tensor::from_i32({1}, {50})), dev(table)), Error);
  EXPECT_TRUE(bytes_equal(ops::astype(dev(table), DType::f32), ops::astype(table, DType::f32)));
  EXPECT_TRUE(bytes_equal(ops::slice_last(dev(x), 3, 40), ops::slice_last(x, 3, 40)));
  EXPECT_TRUE(bytes_equal(ops::contiguous(dev(x).slice(1, 2, 50)), ops::contiguous(x.slice(1, 2, 50))));
  EXPECT_EQ(rel_err(ops::zeros({3, 4}, DType::f32, Device::cuda()), Tensor::zeros({3, 4}, DType::f32)), 0.0);
}

TEST(CudaOps, QuantizedOpsMatchCpu) {
  REQUIRE_GPU();
  Tensor w = rand_host({40, 128});
  QuantizedWeight q = ops::quantize(w, QuantSpec{QuantFormat::mlx_affine, 4, 64}, DType::bf16);
  QuantizedWeight dq = q;
  dq.packed = dev(q.packed);
  dq.scales = dev(q.scales);
  dq.biases = dev(q.biases);
  // 4-bit weights take x in bf16 on the tensor cores by default: 1 row design 8, 12 rows
  // qgemm_mma.
  for (int64_t M : {1, 12}) {
    Tensor x = rand_host({M, 128});
    EXPECT_LT(rel_err(ops::qlinear(dev(x), dq), ops::qlinear(x, q)), kTolBf16);
  }
  Tensor ids = rand_ids(6, 40);
  EXPECT_TRUE(bytes_equal(ops::qembedding(dev(ids), dq), ops::qembedding(ids, q)));
  EXPECT_TRUE(bytes_equal(ops::dequantize(dq, DType::bf16), ops::dequantize(q, DType::bf16)));
  QuantizedWeight q2 = ops::quantize(dev(w), QuantSpec{QuantFormat::mlx_affine, 4, 64}, DType::bf16);
  EXPECT_TRUE(bytes_equal(q2.packed, q.packed));
  EXPECT_TRUE(bytes_equal(q2.scales, q.scales));
}

TEST(CudaOps, PagedAttentionAndRopeMatchCpu) {
  REQUIRE_GPU();
  const int64_t nb = 6, bs = 4, Hkv = 2, D = 32, H = 4, T = 3;
  for (DType cdt : {DType::f32, DType::bf16}) {
    // One sequence of 9 cached tokens; its last 3 are this step's.
    AttentionContext ctx;
    ctx.block_size = int(bs);
    ctx.q_start = Tensor::from_i32({2}, {0, int32_t(T)});
    ctx.kv_len = Tensor::from_i32({1}, {9});
    ctx.block_table = Tensor::from_i32({1, 3}, {4, 1, 5});
    ctx.slot_mapping = Tensor::from_i32({9}, {16, 17, 18, 19, 4, 5, 6, 7, 20});
    Tensor k = rand_host({9, Hkv, D}), v = rand_host({9, Hkv, D});
    Tensor kc = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cpu()), vc = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cpu());
    Tensor dkc = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda()), dvc = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda());
    ops::kv_cache_write(kc, vc, k, v, ctx);
    ops::kv_cache_write(dkc, dvc, dev(k), dev(v), ctx);
    EXPECT_TRUE(bytes_equal(dkc, kc));
    EXPECT_TRUE(bytes_equal(dvc, vc));
    AttentionParams p;
    p.scale = 0.17f;
    Tensor q = rand_host({T, H, D});
    // A bf16 cache takes the tensor-core kernel, which rounds q and the probabilities to bf16.
    EXPECT_LT(rel_err(ops::paged_attention(dev(q), dkc, dvc, ctx, p), ops::paged_attention(q, kc, vc, ctx, p)),
              cdt == DType::f32 ? kTolF32 : kTolBf16);
  }
  const RopeParams rp = partial_rope();
  Tensor x = rand_host({5, 3, 24}), pos = rand_ids(5, 3000);
  Tensor got;
  try {
    got = ops::rope(dev(x), dev(pos), rp);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::unsupported) GTEST_SKIP() << "rope's CUDA dispatch is not hooked up yet: " << e.what();
    throw;
  }
  EXPECT_LT(rel_err(got, ops::rope(x, pos, rp)), kTolF32);
}

// rope_kv_write on CUDA: the same q and the same cache bytes as rope, rope and
// kv_cache_write on CUDA (and the CPU within f32 rounding of cos/sin), with the slots on
// the host or mirrored on the device, partial rotary dims, Dv != D, f32 and bf16 caches.
TEST(CudaOps, RopeKvWriteMatchesComposition) {
  REQUIRE_GPU();
  const int64_t nb = 5, bs = 4, Hkv = 2, D = 24, Dv = 16, H = 6, T = 3;
  RopeParams rp = partial_rope();
  for (DType cdt : {DType::f32, DType::bf16}) {
    for (bool interleaved : {false, true}) {
      rp.interleaved = interleaved;
      AttentionContext ctx;
      ctx.block_size = int(bs);
      ctx.slot_mapping = Tensor::from_i32({T}, {9, 2, 17});
      Tensor q = rand_host({T, H, D}), k = rand_host({T, Hkv, D}), v = rand_host({T, Hkv, Dv});
      Tensor pos = Tensor::from_i32({T}, {7, 300, 4095});
      Tensor kc1 = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda()), vc1 = ops::zeros({nb, bs, Hkv, Dv}, cdt, Device::cuda());
      Tensor kc2 = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda()), vc2 = ops::zeros({nb, bs, Hkv, Dv}, cdt, Device::cuda());
      Tensor got = ops::rope_kv_write(dev(q), dev(k), dev(v), dev(pos), rp, kc1, vc1, ctx);
      Tensor want = ops::rope(dev(q), dev(pos), rp);
      ops::kv_cache_write(kc2, vc2, ops::rope(dev(k), dev(pos), rp), dev(v), ctx);
      EXPECT_TRUE(bytes_equal(got, want)) << dtype_name(cdt) << interleaved;
      EXPECT_TRUE(bytes_equal(kc1, kc2)) << dtype_name(cdt) << interleaved;
      EXPECT_TRUE(bytes_equal(vc1, vc2)) << dtype_name(cdt) << interleaved;
      EXPECT_LT(rel_err(got, ops::rope(q, pos, rp)), kTolF32);
      AttentionContext dctx = ctx;  // slots mirrored on the device, as a decode graph has them
      dctx.slot_mapping_device = dev(ctx.slot_mapping);
      Tensor kc3 = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda()), vc3 = ops::zeros({nb, bs, Hkv, Dv}, cdt, Device::cuda());
      ops::rope_kv_write(dev(q), dev(k), dev(v), dev(pos), rp, kc3, vc3, dctx);
      EXPECT_TRUE(bytes_equal(kc3, kc2));
      EXPECT_TRUE(bytes_equal(vc3, vc2));
    }
  }
}

// A quantized weight with its arrays on the device.
QuantizedWeight dev_quant(const QuantizedWeight& q) {
  QuantizedWeight d = q;
  d.packed = dev(q.packed), d.scales = dev(q.scales), d.biases = dev(q.biases);
  return d;
}

// Three random quantized weights of one spec and K (N, n2 and N rows: the parts of a q/k/v
// launch, the first and third also a gate/up pair) on the host (q*) and on the device (d*).
struct QuantParts {
  QuantizedWeight q1, q2, q3, d1, d2, d3;
};
QuantParts quant_parts(const QuantSpec& spec, DType sdt, int64_t N, int64_t K, int64_t n2 = 64) {
  QuantParts p{ops::quantize(rand_host({N, K}), spec, sdt), ops::quantize(rand_host({n2, K}), spec, sdt),
               ops::quantize(rand_host({N, K}), spec, sdt)};
  p.d1 = dev_quant(p.q1), p.d2 = dev_quant(p.q2), p.d3 = dev_quant(p.q3);
  return p;
}

// Design 7 (weights streamed through shared memory by bulk copies) gives design 0's bits:
// one and several 4096-value tiles per row, a last partial tile, a partial last row group,
// batches of groups a block, the multi-part (q/k/v) and gated launches, 4 and 8 bits,
// bf16/f16/f32 scales.
TEST(CudaOps, StreamedQuantizedGemvIsDesign0) {
  REQUIRE_GPU();
  struct Case {
    int bits, group;
    DType sdt;
    int64_t K, N;
  };
  // N = 9000: several row groups a block, so batches of groups run tile by tile.
  for (const Case cs : {Case{4, 64, DType::bf16, 4608, 301}, Case{4, 32, DType::f16, 1024, 301},
                        Case{4, 128, DType::f32, 9216, 301}, Case{8, 64, DType::bf16, 4608, 301},
                        Case{8, 32, DType::f16, 2048, 301}, Case{4, 64, DType::bf16, 4352, 301},
                        Case{4, 64, DType::bf16, 4608, 9000}, Case{8, 64, DType::f16, 4608, 9000}}) {
    SCOPED_TRACE(std::to_string(cs.bits) + " bits g" + std::to_string(cs.group) + " K " + std::to_string(cs.K) +
                 " N " + std::to_string(cs.N));
    const QuantSpec spec{QuantFormat::mlx_affine, cs.bits, cs.group};
    auto [q1, q2, q3, d1, d2, d3] = quant_parts(spec, cs.sdt, cs.N, cs.K);
    Tensor b1 = rand_host({cs.N}), x = rand_host({1, cs.K});
    auto run = [&](int variant) {
      const int previous = cuda::set_gemv_variants(1, variant);
      std::vector<Tensor> out = ops::qlinear_multi(dev(x), {&d1, &d2, &d3}, {dev(b1), Tensor(), Tensor()});
      out.push_back(ops::qlinear(dev(x), d1, dev(b1)));
      out.push_back(ops::qlinear_gated(dev(x), d1, d3, ops::Activation::silu, dev(b1)));
      cuda::set_gemv_variants(previous / 16, previous % 16);
      return out;
    };
    const std::vector<Tensor> streamed = run(7), design0 = run(0);
    ASSERT_EQ(streamed.size(), design0.size());
    for (size_t i = 0; i < streamed.size(); ++i) EXPECT_TRUE(bytes_equal(streamed[i], design0[i])) << "output " << i;
    EXPECT_LT(rel_err(streamed[1], ops::qlinear(x, q2)), kTolQuant);
    EXPECT_LT(rel_err(streamed[4], ops::gated(ops::qlinear(x, q1, b1), ops::qlinear(x, q3), ops::Activation::silu)),
              kTolQuant);
  }
}

// Design 8 (4-bit weights and bf16 x on the tensor cores, scales in f32) gives the CPU's
// f32 product of x rounded to bf16 (the only rounding it adds): group sizes 32/64/128
// (1-4 groups in an MMA's columns), bf16/f16/f32 scales, a partial last tile, K split
// over 1-8 warps, a last chunk of K cut short and rows of an odd number of groups (K =
// 320, 96), tile groups looping in a block (N = 9000 and an LM-head-sized N), the
// multi-part and gated launches, and 1..8 / G rows of x. Each row of a batch gets the
// same bits as when it runs alone.
TEST(CudaOps, TensorCoreQuantizedGemvMatchesBf16X) {
  REQUIRE_GPU();
  struct Case {
    int group;
    DType sdt;
    int64_t K, N;
    int max_rows;  // rows of x whose bf16 copy fits the kernel's shared memory
  };
  for (const Case cs : {Case{64, DType::bf16, 4096, 301, 4}, Case{32, DType::f16, 1024, 301, 2},
                        Case{128, DType::f32, 2048, 301, 8}, Case{64, DType::bf16, 14336, 520, 2},
                        Case{64, DType::bf16, 4096, 9000, 4}, Case{64, DType::f16, 256, 40000, 4},
                        Case{128, DType::f32, 384, 77, 8}, Case{32, DType::bf16, 320, 33, 2},
                        Case{32, DType::f32, 96, 50, 2}}) {
    SCOPED_TRACE("g" + std::to_string(cs.group) + " K " + std::to_string(cs.K) + " N " + std::to_string(cs.N));
    const QuantSpec spec{QuantFormat::mlx_affine, 4, cs.group};
    auto [q1, q2, q3, d1, d2, d3] = quant_parts(spec, cs.sdt, cs.N, cs.K);
    Tensor b1 = rand_host({cs.N});
    for (int M : {1, cs.max_rows}) {
      SCOPED_TRACE("M " + std::to_string(M));
      Tensor x = rand_host({M, cs.K});
      Tensor xr = ops::astype(ops::astype(x, DType::bf16), DType::f32);  // what the MMA sees
      const int previous = cuda::set_gemv_variants(1, 8);
      std::vector<Tensor> got = ops::qlinear_multi(dev(x), {&d1, &d2, &d3}, {dev(b1), Tensor(), Tensor()});
      Tensor single = ops::qlinear(dev(x), d1, dev(b1));
      Tensor gated = ops::qlinear_gated(dev(x), d1, d3, ops::Activation::silu, dev(b1));
      std::vector<Tensor> rows;
      for (int m = 0; m < M && M > 1; ++m) rows.push_back(ops::qlinear(dev(x.slice(0, m, m + 1)), d1, dev(b1)));
      cuda::set_gemv_variants(previous / 16, previous % 16);
      constexpr double kTol = 2e-5;  // f32 sums in another order; the weights are exact
      EXPECT_LT(rel_err(got[0], ops::qlinear(xr, q1, b1)), kTol);
      EXPECT_LT(rel_err(got[1], ops::qlinear(xr, q2)), kTol);
      EXPECT_LT(rel_err(got[2], ops::qlinear(xr, q3)), kTol);
      EXPECT_LT(rel_err(single, ops::qlinear(xr, q1, b1)), kTol);
      EXPECT_LT(rel_err(gated, ops::gated(ops::qlinear(xr, q1, b1), ops::qlinear(xr, q3), ops::Activation::silu)),
                kTol);
      for (int m = 0; m < int(rows.size()); ++m)
        EXPECT_TRUE(bytes_equal(rows[size_t(m)], host(single).slice(0, m, m + 1).clone())) << "row " << m;
    }
  }
}

// Design 10 (qgemv_ks.cu: K split over blocks, the slices added by the last block of a row
// group). 4 bits: the CPU's f32 product of x rounded to bf16 (design 8's numerics); 8 bits:
// x scaled per column by a power of two into f16 (finer than bf16), so within 5e-4 of the
// exact f32 product, also for x far outside f16's range. Group sizes 32/64/128, f16/bf16/f32
// scales, one slice (K <= 1024, K = 320 and 96 cut a chunk short) and many (K = 14336),
// row groups of one tile and of many (N = 33 .. 40000), the multi-part and gated launches,
// 1..8 / G rows of x, and a batch row equal in bits to the row alone. Launched twice: the
// row-group counters are reset by each launch.
TEST(CudaOps, KSplitQuantizedGemvMatchesCpu) {
  REQUIRE_GPU();
  struct Case {
    int bits, group;
    DType sdt;
    int64_t K, N;
    int max_rows;
    float xscale;  // x's magnitude (8 bits: past f16's range)
  };
  for (const Case cs : {Case{4, 64, DType::bf16, 4096, 301, 4, 1.0f}, Case{8, 64, DType::bf16, 4096, 301, 4, 1.0f},
                        Case{4, 32, DType::f16, 1024, 301, 2, 1.0f}, Case{8, 32, DType::f16, 1024, 301, 2, 3e5f},
                        Case{4, 128, DType::f32, 2048, 301, 8, 1.0f}, Case{8, 128, DType::f32, 2048, 77, 8, 1e-6f},
                        Case{4, 64, DType::bf16, 14336, 520, 2, 1.0f}, Case{8, 64, DType::bf16, 14336, 520, 2, 1.0f},
                        Case{4, 64, DType::bf16, 4096, 9000, 4, 1.0f}, Case{8, 64, DType::f16, 256, 40000, 4, 1.0f},
                        Case{4, 128, DType::f32, 384, 77, 8, 1.0f}, Case{8, 32, DType::bf16, 320, 33, 2, 1.0f},
                        Case{4, 32, DType::f32, 96, 50, 2, 1.0f}, Case{8, 32, DType::f32, 96, 50, 2, 1.0f},
                        Case{4, 64, DType::bf16, 5120, 33, 4, 1.0f}}) {
    SCOPED_TRACE(std::to_string(cs.bits) + " bits g" + std::to_string(cs.group) + " K " + std::to_string(cs.K) +
                 " N " + std::to_string(cs.N));
    const QuantSpec spec{QuantFormat::mlx_affine, cs.bits, cs.group};
    auto [q1, q2, q3, d1, d2, d3] = quant_parts(spec, cs.sdt, cs.N, cs.K);
    Tensor b1 = rand_host({cs.N});
    for (int M : {1, cs.max_rows}) {
      SCOPED_TRACE("M " + std::to_string(M));
      Tensor x = ops::scale(rand_host({M, cs.K}), cs.xscale);
      // What the MMA sees: 4 bits x rounded to bf16; 8 bits compares with the exact x.
      Tensor xr = cs.bits == 4 ? ops::astype(ops::astype(x, DType::bf16), DType::f32) : x;
      const int previous = cuda::set_gemv_variants(1, 10);
      std::vector<Tensor> got, again;
      for (int rep = 0; rep < 2; ++rep) {
        std::vector<Tensor>& o = rep ? again : got;
        o = ops::qlinear_multi(dev(x), {&d1, &d2, &d3}, {dev(b1), Tensor(), Tensor()});
        o.push_back(ops::qlinear(dev(x), d1, dev(b1)));
        o.push_back(ops::qlinear_gated(dev(x), d1, d3, ops::Activation::silu, dev(b1)));
      }
      std::vector<Tensor> rows;
      for (int m = 0; m < M && M > 1; ++m) rows.push_back(ops::qlinear(dev(x.slice(0, m, m + 1)), d1, dev(b1)));
      cuda::set_gemv_variants(previous / 16, previous % 16);
      const int cpu_parts = cpu::set_q4_x_parts(0);  // the CPU's exact f32 product as the reference
      const double tol = cs.bits == 4 ? 2e-5 : 5e-4;
      EXPECT_LT(rel_err(got[0], ops::qlinear(xr, q1, b1)), tol);
      EXPECT_LT(rel_err(got[1], ops::qlinear(xr, q2)), tol);
      EXPECT_LT(rel_err(got[2], ops::qlinear(xr, q3)), tol);
      EXPECT_LT(rel_err(got[3], ops::qlinear(xr, q1, b1)), tol);
      // SiLU gating doubles the relative error of short rows (5.9e-4 seen at 8 bits, K = 96);
      // silu of huge / tiny sums: it grows more.
      EXPECT_LT(rel_err(got[4], ops::gated(ops::qlinear(xr, q1, b1), ops::qlinear(xr, q3), ops::Activation::silu)),
                cs.xscale == 1.0f ? 2 * tol : 1e-2);
      for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(bytes_equal(got[i], again[i])) << "output " << i;
      for (int m = 0; m < int(rows.size()); ++m)
        EXPECT_TRUE(bytes_equal(rows[size_t(m)], host(got[3]).slice(0, m, m + 1).clone())) << "row " << m;
      cpu::set_q4_x_parts(cpu_parts);
    }
  }
}

// Design 11 (qgemv_rf.cu: 4- and 8-bit g32/g64, one row, weights straight into registers, x to f16
// per group after a power-of-two scale, resident blocks of K / 512 warps). Against the
// exact f32 product (weights dequantized in f32, x unrounded): f16 x is within about
// 2^-12 a value, for x of any magnitude (3e5 is past f16's range, 1e-6 under its normal
// range). f16/bf16/f32 scales; K from one warp (512) to 28 (14336); tiles cut short (N =
// 33, 301) and many (40000); q/k/v parts of different N, gated, with and without biases;
// two launches equal in bits. Shapes it does not take (K % 512, group 128; group 32 past
// K = 8192) fall back.
TEST(CudaOps, RegisterFedQuantizedGemvMatchesExact) {
  REQUIRE_GPU();
  struct Case {
    DType sdt;
    int64_t K, N;
    float xscale;
  };
  for (const Case cs : {Case{DType::bf16, 4096, 301, 1.0f}, Case{DType::f16, 512, 33, 1.0f},
                        Case{DType::f32, 1024, 301, 1.0f}, Case{DType::bf16, 14336, 520, 1.0f},
                        Case{DType::bf16, 3072, 40000, 1.0f}, Case{DType::bf16, 4096, 301, 3e5f},
                        Case{DType::f16, 2048, 77, 1e-6f}, Case{DType::bf16, 12288, 16, 1.0f},
                        Case{DType::f16, 8192, 100, 1.0f}}) {
  for (auto [bits, group] : {std::pair{4, 64}, std::pair{8, 64}, std::pair{4, 32}, std::pair{8, 32}}) {
    SCOPED_TRACE(std::to_string(bits) + " bits g" + std::to_string(group) + " " + dtype_name(cs.sdt) +
                 std::string(" K ") + std::to_string(cs.K) + " N " + std::to_string(cs.N) + " x " +
                 std::to_string(cs.xscale));
    const QuantSpec spec{QuantFormat::mlx_affine, bits, group};
    auto [q1, q2, q3, d1, d2, d3] = quant_parts(spec, cs.sdt, cs.N, cs.K);
    Tensor w1 = ops::dequantize(q1), w2 = ops::dequantize(q2), w3 = ops::dequantize(q3);
    Tensor b1 = rand_host({cs.N}), b3 = rand_host({cs.N});
    Tensor x = ops::scale(rand_host({1, cs.K}), cs.xscale);
    const int previous = cuda::set_gemv_variants(1, 11);
    std::vector<Tensor> got, again;
    for (int rep = 0; rep < 2; ++rep) {
      std::vector<Tensor>& o = rep ? again : got;
      o = ops::qlinear_multi(dev(x), {&d1, &d2, &d3}, {dev(b1), Tensor(), Tensor()});
      o.push_back(ops::qlinear(dev(x), d1, dev(b1)));
      o.push_back(ops::qlinear_gated(dev(x), d1, d3, ops::Activation::silu, dev(b1), dev(b3)));
      o.push_back(ops::qlinear_gated(dev(x), d1, d3, ops::Activation::gelu_tanh));
    }
    cuda::set_gemv_variants(previous / 16, previous % 16);
    constexpr double kTol = 1e-3;
    const Tensor y1 = ops::linear(x, w1, b1), y3 = ops::linear(x, w3), y3b = ops::linear(x, w3, b3);
    EXPECT_LT(rel_err(got[0], y1), kTol);
    EXPECT_LT(rel_err(got[1], ops::linear(x, w2)), kTol);
    EXPECT_LT(rel_err(got[2], y3), kTol);
    EXPECT_LT(rel_err(got[3], y1), kTol);
    // The activation multiplies the relative error of a negative sum by about |sum| (silu(y)
    // ~ y e^y), and 16 rows leave the norm to a few of them: 2.9e-3 seen at N = 16, K =
    // 12288 (the products themselves within 1e-3 above).
    const double gtol = cs.xscale == 1.0f && cs.N >= 64 ? kTol : 1e-2;
    EXPECT_LT(rel_err(got[4], ops::gated(y1, y3b, ops::Activation::silu)), gtol);
    EXPECT_LT(rel_err(got[5], ops::gated(ops::linear(x, w1), y3, ops::Activation::gelu_tanh)), gtol);
    for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(bytes_equal(got[i], again[i])) << "output " << i;
  }
  }
  // Shapes outside it run another design: same answers.
  for (const QuantSpec spec : {QuantSpec{QuantFormat::mlx_affine, 4, 128}, QuantSpec{QuantFormat::mlx_affine, 4, 64}}) {
    const int64_t K = spec.group_size == 128 ? 1024 : 4352;
    QuantizedWeight q = ops::quantize(rand_host({99, K}), spec, DType::bf16);
    Tensor x = rand_host({1, K});
    const int previous = cuda::set_gemv_variants(1, 11);
    Tensor y = ops::qlinear(dev(x), dev_quant(q));
    cuda::set_gemv_variants(previous / 16, previous % 16);
    EXPECT_LT(rel_err(y, ops::linear(x, ops::dequantize(q))), 1e-4) << spec.group_size;
  }
}

// A norm-fold test's results: the multi-part call's sum and outputs, the gated call's sum
// and output, and (folded calls) the profile of both.
struct NormFoldRun {
  Tensor sum, gsum, g;
  std::vector<Tensor> outs;
  std::string report;
};
// The folded calls against the composition: the sums bit for bit, the products within tol,
// add_rms_norm in the profile exactly where the call was expected to compose.
void expect_norm_fold(const NormFoldRun& got, const NormFoldRun& want, double tol, bool composed) {
  EXPECT_TRUE(bytes_equal(got.sum, want.sum));
  EXPECT_TRUE(bytes_equal(got.gsum, want.sum));
  ASSERT_EQ(got.outs.size(), want.outs.size());
  for (size_t i = 0; i < got.outs.size(); ++i) EXPECT_LT(rel_err(got.outs[i], want.outs[i]), tol) << "output " << i;
  EXPECT_LT(rel_err(got.g, want.g), tol);
  EXPECT_EQ(got.report.find("add_rms_norm ") != std::string::npos, composed) << got.report;
}

// The residual add and RMSNorm folded into design 11 (ops::add_rms_norm_qlinear_multi /
// _gated, one row): the sum bit for bit that of add_rms_norm, the products within 1e-3 of
// add_rms_norm followed by the products on the device (the folded launch rounds
// sum * w to f16 and scales by 1 / rms at the end, the composition rounds the normed
// values: each rounding is 2^-12 relative, in other places), for f32 and bf16 norm
// weights, Gemma's 1 + w and none; one launch (the profile shows no add_rms_norm). Under
// design 0, and for K > 4096 (design 11's 28-warp form has no registers for the fold), the
// same call composes.
TEST(CudaOps, NormFoldedIntoQuantizedGemv) {
  REQUIRE_GPU();
  for (auto [bits, group, K] : {std::tuple{4, 64, int64_t(4096)}, std::tuple{8, 64, int64_t(4096)},
                                std::tuple{8, 64, int64_t(14336)}, std::tuple{4, 32, int64_t(2048)},
                                std::tuple{8, 32, int64_t(1024)}, std::tuple{4, 64, int64_t(512)}}) {
    SCOPED_TRACE(std::to_string(bits) + " bits g" + std::to_string(group) + " K " + std::to_string(K));
    const QuantSpec spec{QuantFormat::mlx_affine, bits, group};
    QuantizedWeight q = dev_quant(ops::quantize(rand_host({301, K}), spec, DType::bf16));
    QuantizedWeight k = dev_quant(ops::quantize(rand_host({64, K}), spec, DType::bf16));
    QuantizedWeight u = dev_quant(ops::quantize(rand_host({301, K}), spec, DType::bf16));
    Tensor x = dev(rand_host({1, K})), h = dev(rand_host({1, K})), b = dev(rand_host({301}));
    for (int wform = 0; wform < 3; ++wform) {
      SCOPED_TRACE("norm weight form " + std::to_string(wform));
      const Tensor w = wform == 2 ? Tensor() : dev(rand_host({K}, wform == 0 ? DType::f32 : DType::bf16));
      const float offset = wform == 1 ? 1.0f : 0.0f;
      for (int variant : {9, 0}) {
        SCOPED_TRACE("variant " + std::to_string(variant));
        const int previous = cuda::set_gemv_variants(1, variant);
        cuda::set_profiling(true);
        cuda::profile_report(true);
        NormFoldRun got;
        std::tie(got.sum, got.outs) = ops::add_rms_norm_qlinear_multi(x, h, w, 1e-5f, offset, {&q, &k}, {b, Tensor()});
        std::tie(got.gsum, got.g) = ops::add_rms_norm_qlinear_gated(x, h, w, 1e-5f, offset, q, u, ops::Activation::silu, b);
        got.report = cuda::profile_report(true);
        cuda::set_profiling(false);
        NormFoldRun want;
        Tensor normed;
        std::tie(want.sum, normed) = ops::add_rms_norm(x, h, w, 1e-5f, offset);
        want.outs = ops::qlinear_multi(normed, {&q, &k}, {b, Tensor()});
        want.g = ops::qlinear_gated(normed, q, u, ops::Activation::silu, b);
        cuda::set_gemv_variants(previous / 16, previous % 16);
        expect_norm_fold(got, want, 1e-3, variant == 0 || K > 4096);
      }
    }
  }
}

// A decode step's RoPE for the folded q/k/v tests: NeoX over whole heads of D, frequencies
// mirrored on the device, attention scaling 1.1, position 1234 (on the device), slot 13 of
// caches in blocks of bs (with its device mirror).
struct RopeStep {
  RopeParams rp;
  AttentionContext ctx;
  Tensor pos;
  std::vector<float> inv;
  RopeStep(int64_t D, int64_t bs) : inv(size_t(D / 2)) {
    for (int i = 0; i < D / 2; ++i) inv[size_t(i)] = std::pow(10000.0f, -2.0f * i / float(D));
    rp.inv_freq = Tensor::from_f32({D / 2}, inv);
    rp.inv_freq_device = dev(rp.inv_freq);
    rp.rotary_dim = int(D);
    rp.attention_scaling = 1.1f;
    ctx.block_size = int(bs);
    ctx.slot_mapping = Tensor::from_i32({1}, {13});
    ctx.slot_mapping_device = dev(ctx.slot_mapping);
    pos = dev(Tensor::from_i32({1}, {1234}));
  }
};

// A folded q/k/v launch's outputs (got; caches kc1 / vc1) against the same products without
// the fold (plain) followed by rope_kv_write into kc2 / vc2 (zeros like kc1 / vc1 before):
// q and k rotated alike, v unchanged, the whole caches alike (slot 13 written, every other
// slot still zero in both).
void expect_rope_kv_folded(const std::vector<Tensor>& got, const std::vector<Tensor>& plain, const RopeStep& step,
                           int64_t H, int64_t Hkv, int64_t D, const Tensor& kc1, const Tensor& vc1, Tensor& kc2,
                           Tensor& vc2) {
  const Tensor want_q = ops::rope_kv_write(plain[0].reshape({1, H, D}), plain[1].reshape({1, Hkv, D}),
                                           plain[2].reshape({1, Hkv, D}), step.pos, step.rp, kc2, vc2, step.ctx);
  const Tensor want_k = ops::rope(plain[1].reshape({1, Hkv, D}), step.pos, step.rp);
  EXPECT_LT(rel_err(got[0].reshape({1, H, D}), want_q), 1e-5);
  EXPECT_LT(rel_err(got[1].reshape({1, Hkv, D}), want_k), 1e-5);
  EXPECT_LT(rel_err(got[2], plain[2]), 1e-5);
  const double tol = kc1.dtype() == DType::f32 ? 1e-5 : 1e-3;
  EXPECT_LT(rel_err(kc1, kc2), tol);
  EXPECT_LT(rel_err(vc1, vc2), tol);
  EXPECT_GT(rel_err(kc1, ops::zeros(kc1.shape(), kc1.dtype(), Device::cuda())), 0.0);
}

// The decode step's RoPE and K/V cache write taken by the folded q/k/v launch
// (ops::RopeKvWrite): q and k as rope_kv_write rotates them, and the caches as it writes
// them (other slots untouched), against add_rms_norm_qlinear_multi without it followed by
// rope_kv_write on other caches; f32 and bf16 caches, head dims 64 and 128, a linear bias
// on q and k, attention scaling 1.1. Where the step does not allow it (partial rotary
// dims, positions on the host, no device mirror of the slot, design 0) done stays false
// and the products come back unrotated.
TEST(CudaOps, RopeKvWriteFoldedIntoQkvGemv) {
  REQUIRE_GPU();
  for (auto [bits, D] : {std::pair{4, 64}, std::pair{8, 128}, std::pair{4, 128}}) {
    const int64_t K = 1024, H = 4, Hkv = 2, nb = 6, bs = 8;
    const QuantSpec spec{QuantFormat::mlx_affine, bits, 64};
    QuantizedWeight wq = dev_quant(ops::quantize(rand_host({H * D, K}), spec, DType::bf16));
    QuantizedWeight wk = dev_quant(ops::quantize(rand_host({Hkv * D, K}), spec, DType::bf16));
    QuantizedWeight wv = dev_quant(ops::quantize(rand_host({Hkv * D, K}), spec, DType::bf16));
    const Tensor bq = dev(rand_host({H * D})), bk = dev(rand_host({Hkv * D}));
    const Tensor x = dev(rand_host({1, K})), h = dev(rand_host({1, K})), nw = dev(rand_host({K}));
    const RopeStep step(D, bs);
    const RopeParams& rp = step.rp;
    const AttentionContext& ctx = step.ctx;
    const Tensor& pos = step.pos;
    const std::vector<float>& inv = step.inv;
    const int previous = cuda::set_gemv_variants(1, 9);  // the default (tests run design 0)
    for (DType cdt : {DType::f32, DType::bf16}) {
      SCOPED_TRACE(std::to_string(bits) + " bits D " + std::to_string(D) + " " + dtype_name(cdt));
      Tensor kc1 = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda()), vc1 = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda());
      Tensor kc2 = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda()), vc2 = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda());
      ops::RopeKvWrite rw;
      rw.positions = &pos, rw.rope = &rp, rw.k_cache = &kc1, rw.v_cache = &vc1, rw.ctx = &ctx, rw.head_dim = int(D);
      auto [sum, got] = ops::add_rms_norm_qlinear_multi(x, h, nw, 1e-5f, 0.0f, {&wq, &wk, &wv}, {bq, bk, Tensor()}, &rw);
      EXPECT_TRUE(rw.done);
      auto [sum2, plain] = ops::add_rms_norm_qlinear_multi(x, h, nw, 1e-5f, 0.0f, {&wq, &wk, &wv}, {bq, bk, Tensor()});
      EXPECT_TRUE(bytes_equal(sum, sum2));
      expect_rope_kv_folded(got, plain, step, H, Hkv, D, kc1, vc1, kc2, vc2);
    }
    // Declined: partial rotary dims, positions on the host, no slot mirror, design 0.
    Tensor kc = ops::zeros({nb, bs, Hkv, D}, DType::bf16, Device::cuda()), vc = ops::zeros({nb, bs, Hkv, D}, DType::bf16, Device::cuda());
    const Tensor host_pos = Tensor::from_i32({1}, {1234});
    AttentionContext no_mirror = ctx;
    no_mirror.slot_mapping_device = Tensor();
    RopeParams partial = rp;
    partial.rotary_dim = int(D / 2);
    partial.inv_freq = Tensor::from_f32({D / 4}, std::vector<float>(inv.begin(), inv.begin() + D / 4));
    partial.inv_freq_device = dev(partial.inv_freq);
    for (int c = 0; c < 4; ++c) {
      ops::RopeKvWrite rw;
      rw.positions = c == 1 ? &host_pos : &pos, rw.rope = c == 0 ? &partial : &rp, rw.k_cache = &kc, rw.v_cache = &vc;
      rw.ctx = c == 2 ? &no_mirror : &ctx, rw.head_dim = int(D);
      cuda::set_gemv_variants(1, c == 3 ? 0 : 9);
      auto [s3, outs] = ops::add_rms_norm_qlinear_multi(x, h, nw, 1e-5f, 0.0f, {&wq, &wk, &wv}, {bq, bk, Tensor()}, &rw);
      cuda::set_gemv_variants(1, 9);
      EXPECT_FALSE(rw.done) << c;
      Tensor plain_q = ops::add_rms_norm_qlinear_multi(x, h, nw, 1e-5f, 0.0f, {&wq}, {bq}).second[0];
      EXPECT_LT(rel_err(outs[0], plain_q), 1e-3) << c;
    }
    EXPECT_TRUE(bytes_equal(kc, ops::zeros({nb, bs, Hkv, D}, DType::bf16, Device::cuda())));
    cuda::set_gemv_variants(previous / 16, previous % 16);
  }
}

// The same folds for dense weights (ops::add_rms_norm_linear_multi / _gated, the warp GEMV
// of linear.cu): the sum bit for bit that of add_rms_norm, the products within 1e-5 of
// add_rms_norm followed by the products (both in f32: only the order of the rounding
// differs), for bf16, f16 and f32 weights, f32 / bf16 norm weights, Gemma's 1 + w and
// none, with the K split over a block's warps (301 rows) and one warp per row set (9,000
// rows); one launch (no add_rms_norm in the profile). Under dense design 2 the same calls
// compose.
TEST(CudaOps, NormFoldedIntoDenseGemv) {
  REQUIRE_GPU();
  for (auto [wdt, N, K] : {std::tuple{DType::bf16, int64_t(301), int64_t(4096)},
                           std::tuple{DType::bf16, int64_t(9000), int64_t(1024)},
                           std::tuple{DType::f16, int64_t(301), int64_t(2048)},
                           std::tuple{DType::f32, int64_t(301), int64_t(1000)}}) {
    SCOPED_TRACE(std::string(dtype_name(wdt)) + " N " + std::to_string(N) + " K " + std::to_string(K));
    const Tensor q = dev(rand_host({N, K}, wdt)), k = dev(rand_host({64, K}, wdt)), u = dev(rand_host({N, K}, wdt));
    const Tensor x = dev(rand_host({1, K})), h = dev(rand_host({1, K})), b = dev(rand_host({N}));
    for (int wform = 0; wform < 3; ++wform) {
      SCOPED_TRACE("norm weight form " + std::to_string(wform));
      const Tensor w = wform == 2 ? Tensor() : dev(rand_host({K}, wform == 0 ? DType::f32 : DType::bf16));
      const float offset = wform == 1 ? 1.0f : 0.0f;
      for (int variant : {1, 2}) {
        SCOPED_TRACE("variant " + std::to_string(variant));
        const int previous = cuda::set_gemv_variants(variant, 9);
        cuda::set_profiling(true);
        cuda::profile_report(true);
        NormFoldRun got;
        std::tie(got.sum, got.outs) = ops::add_rms_norm_linear_multi(x, h, w, 1e-5f, offset, {q, k}, {b, Tensor()});
        std::tie(got.gsum, got.g) = ops::add_rms_norm_linear_gated(x, h, w, 1e-5f, offset, q, u, ops::Activation::silu, b);
        got.report = cuda::profile_report(true);
        cuda::set_profiling(false);
        NormFoldRun want;
        Tensor normed;
        std::tie(want.sum, normed) = ops::add_rms_norm(x, h, w, 1e-5f, offset);
        want.outs = ops::linear_multi(normed, {q, k}, {b, Tensor()});
        want.g = ops::linear_gated(normed, q, u, ops::Activation::silu, b);
        cuda::set_gemv_variants(previous / 16, previous % 16);
        expect_norm_fold(got, want, 1e-5, variant == 2);
      }
    }
  }
}

// The folds' queries (asked before the operands are made) say what the launches take: the
// dense fold for 16-byte loads of K and a row of at most 48 KB under dense designs 1 / 4+,
// the quantized one for design 11's 4- and 8-bit g32 / g64 shapes up to K = 4096 under the
// default or design 11; with the RoPE fold switched off, only the norm fold.
TEST(CudaOps, FoldQueriesFollowTheLaunches) {
  REQUIRE_GPU();
  const int previous = cuda::set_gemv_variants(1, 9);
  EXPECT_TRUE(cuda::linear_fold_takes(DType::bf16, 4096, true));
  EXPECT_TRUE(cuda::linear_fold_takes(DType::f32, 12288, false));
  EXPECT_FALSE(cuda::linear_fold_takes(DType::f32, 12292, false));  // 48 KB + 16 B
  EXPECT_FALSE(cuda::linear_fold_takes(DType::bf16, 4100, false));  // not whole 16-byte loads
  EXPECT_FALSE(cuda::linear_fold_takes(DType::u8, 4096, false));
  EXPECT_TRUE(cuda::qlinear_fold_takes(4, 64, 4096, true));
  EXPECT_TRUE(cuda::qlinear_fold_takes(8, 32, 1024, false));
  EXPECT_FALSE(cuda::qlinear_fold_takes(4, 64, 4608, false));  // design 11's 28-warp form
  EXPECT_FALSE(cuda::qlinear_fold_takes(4, 128, 4096, false));
  EXPECT_FALSE(cuda::qlinear_fold_takes(4, 64, 1000, false));
  const int folds = cuda::set_decode_folds(1);
  EXPECT_FALSE(cuda::linear_fold_takes(DType::bf16, 4096, true));
  EXPECT_TRUE(cuda::linear_fold_takes(DType::bf16, 4096, false));
  EXPECT_FALSE(cuda::qlinear_fold_takes(4, 64, 4096, true));
  EXPECT_TRUE(cuda::qlinear_fold_takes(4, 64, 4096, false));
  cuda::set_decode_folds(0);
  EXPECT_FALSE(cuda::linear_fold_takes(DType::bf16, 4096, false));
  EXPECT_FALSE(cuda::qlinear_fold_takes(4, 64, 4096, false));
  cuda::set_decode_folds(folds);
  cuda::set_gemv_variants(2, 0);
  EXPECT_FALSE(cuda::linear_fold_takes(DType::bf16, 4096, false));
  EXPECT_FALSE(cuda::qlinear_fold_takes(4, 64, 4096, false));
  cuda::set_gemv_variants(previous / 16, previous % 16);
}

// The RoPE and K/V cache write in the dense q/k/v launch: q and k as rope_kv_write
// rotates them, the caches as it writes them, against add_rms_norm_linear_multi without it
// followed by rope_kv_write on other caches; bf16 and f32 weights, f32 and bf16 caches,
// head dims 64 and 128 (rotated units are rows i, i + 1 and i + D / 2, i + D / 2 + 1), a
// bias on q and k, attention scaling 1.1; with a head count that leaves the K split over
// a block's warps (few rows) and one warp per row set (many).
TEST(CudaOps, RopeKvWriteFoldedIntoDenseQkvGemv) {
  REQUIRE_GPU();
  for (auto [wdt, D, H] : {std::tuple{DType::bf16, int64_t(64), int64_t(4)}, std::tuple{DType::f32, int64_t(128), int64_t(4)},
                           std::tuple{DType::bf16, int64_t(128), int64_t(96)}}) {
    const int64_t K = 1024, Hkv = 2, nb = 6, bs = 8;
    const Tensor wq = dev(rand_host({H * D, K}, wdt)), wk = dev(rand_host({Hkv * D, K}, wdt));
    const Tensor wv = dev(rand_host({Hkv * D, K}, wdt));
    const Tensor bq = dev(rand_host({H * D})), bk = dev(rand_host({Hkv * D}));
    const Tensor x = dev(rand_host({1, K})), h = dev(rand_host({1, K})), nw = dev(rand_host({K}));
    const RopeStep step(D, bs);
    const RopeParams& rp = step.rp;
    const AttentionContext& ctx = step.ctx;
    const Tensor& pos = step.pos;
    for (DType cdt : {DType::f32, DType::bf16}) {
      SCOPED_TRACE(std::string(dtype_name(wdt)) + " D " + std::to_string(D) + " H " + std::to_string(H) + " cache " +
                   dtype_name(cdt));
      Tensor kc1 = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda()), vc1 = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda());
      Tensor kc2 = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda()), vc2 = ops::zeros({nb, bs, Hkv, D}, cdt, Device::cuda());
      ops::RopeKvWrite rw;
      rw.positions = &pos, rw.rope = &rp, rw.k_cache = &kc1, rw.v_cache = &vc1, rw.ctx = &ctx, rw.head_dim = int(D);
      auto [sum, got] = ops::add_rms_norm_linear_multi(x, h, nw, 1e-5f, 0.0f, {wq, wk, wv}, {bq, bk, Tensor()}, &rw);
      EXPECT_TRUE(rw.done);
      auto [sum2, plain] = ops::add_rms_norm_linear_multi(x, h, nw, 1e-5f, 0.0f, {wq, wk, wv}, {bq, bk, Tensor()});
      EXPECT_TRUE(bytes_equal(sum, sum2));
      expect_rope_kv_folded(got, plain, step, H, Hkv, D, kc1, vc1, kc2, vc2);
    }
  }
}

// The fused decode ops (ops/fused.h) on CUDA give, bit for bit, what the composition
// they replace gives on CUDA, and match the CPU; 9 rows take the composition path.
TEST(CudaOps, FusedOpsMatchComposition) {
  REQUIRE_GPU();
  // Every batch-1 GEMV design (kernels.h set_gemv_variants), with the dense GEMV up to 8
  // rows (the knob MLXCEL_CUDA_GEMV_ROWS) as well as only for 1 (the default).
  for (int gemv_rows : {8, 1})
  for (int variant = 0; variant <= 11; ++variant) {
  if (variant == 10) continue;  // KSplitQuantizedGemvMatchesCpu
  const int previous_rows = cuda::set_dense_gemv_rows(gemv_rows);
  SCOPED_TRACE("dense GEMV rows " + std::to_string(gemv_rows));
  // 4, 5 round x to int8 for 4- and 8-bit weights (llama.cpp's q8_1 activations): about
  // 1-4% relative error on these random rows (3.5% seen once after SiLU gating). 6 rounds
  // x and the dequantized weights to f16 (tensor cores): about 2^-11 each. 8 rounds x
  // to bf16 (2^-9; 3.4e-3 seen after SiLU gating); 11 rounds x to f16 after a power of
  // two per group; 9 (the default) is 11 or 8 for M = 1 where they take the shape.
  const double tol_q = variant == 6                    ? 3e-3
                       : variant == 8 || variant == 9 || variant == 11 ? kTolBf16
                       : variant == 4 || variant == 5 ? 6e-2
                                                      : kTolQuant;
  SCOPED_TRACE("gemv variant " + std::to_string(variant));
  const int previous = cuda::set_gemv_variants(variant, variant);
  for (DType wdt : {DType::f32, DType::f16, DType::bf16}) {
    for (int64_t K : {96, 100}) {  // 100: not a multiple of the 16-byte vector
      Tensor wq = rand_host({40, K}, wdt), wk = rand_host({24, K}, wdt), wv = rand_host({17, K}, wdt);
      Tensor bq = rand_host({40}), bv = rand_host({17});
      for (int64_t M : {1, 3, 8, 9}) {
        Tensor x = rand_host({M, K});
        std::vector<Tensor> got = ops::linear_multi(dev(x), {dev(wq), dev(wk), dev(wv)}, {dev(bq), Tensor(), dev(bv)});
        ASSERT_EQ(got.size(), 3u);
        EXPECT_TRUE(bytes_equal(got[0], ops::linear(dev(x), dev(wq), dev(bq)))) << dtype_name(wdt) << " M " << M;
        EXPECT_TRUE(bytes_equal(got[1], ops::linear(dev(x), dev(wk)))) << dtype_name(wdt) << " M " << M;
        EXPECT_TRUE(bytes_equal(got[2], ops::linear(dev(x), dev(wv), dev(bv)))) << dtype_name(wdt) << " M " << M;
        EXPECT_LT(rel_err(got[2], ops::linear(x, wv, bv)), M > cuda::dense_gemv_rows() ? kTolBf16 : kTolF32);
        for (auto act : {ops::Activation::silu, ops::Activation::gelu_tanh}) {
          Tensor wu = rand_host({40, K}, wdt), bu = rand_host({40});
          Tensor g = ops::linear_gated(dev(x), dev(wq), dev(wu), act, dev(bq), dev(bu));
          Tensor ref = ops::gated(ops::linear(dev(x), dev(wq), dev(bq)), ops::linear(dev(x), dev(wu), dev(bu)), act);
          EXPECT_TRUE(bytes_equal(g, ref)) << dtype_name(wdt) << " M " << M << " K " << K;
          EXPECT_LT(rel_err(g, ops::gated(ops::linear(x, wq, bq), ops::linear(x, wu, bu), act)),
                    M > cuda::dense_gemv_rows() ? kTolBf16 : kTolF32);
        }
      }
    }
  }
  for (int bits : {3, 4, 8}) {
    const QuantSpec spec{QuantFormat::mlx_affine, bits, bits == 8 ? 32 : 64};
    auto [q1, q2, q3, d1, d2, d3] = quant_parts(spec, DType::bf16, 40, 256, 24);
    Tensor b1 = rand_host({40});
    for (int64_t M : {1, 5, 9}) {
      Tensor x = rand_host({M, 256});
      std::vector<Tensor> got = ops::qlinear_multi(dev(x), {&d1, &d2}, {dev(b1), Tensor()});
      EXPECT_TRUE(bytes_equal(got[0], ops::qlinear(dev(x), d1, dev(b1)))) << bits << " M " << M;
      EXPECT_TRUE(bytes_equal(got[1], ops::qlinear(dev(x), d2))) << bits << " M " << M;
      // 4- and 8-bit weights from 2 rows on (design 0): bf16 on the tensor cores (qgemm_mma).
      const double tol_m = bits != 3 && M > 1 && (variant == 0 || variant == 9) ? kTolBf16 : bits == 3 ? kTolQuant : tol_q;
      EXPECT_LT(rel_err(got[1], ops::qlinear(x, q2)), tol_m);
      Tensor g = ops::qlinear_gated(dev(x), d1, d3, ops::Activation::silu, dev(b1));
      Tensor ref = ops::gated(ops::qlinear(dev(x), d1, dev(b1)), ops::qlinear(dev(x), d3), ops::Activation::silu);
      EXPECT_TRUE(bytes_equal(g, ref)) << bits << " M " << M;
      EXPECT_LT(rel_err(g, ops::gated(ops::qlinear(x, q1, b1), ops::qlinear(x, q3), ops::Activation::silu)), tol_m);
    }
  }
  {  // long rows: several passes of U loads per lane; N not a multiple of R
    Tensor w = rand_host({301, 4352}, DType::bf16), x = rand_host({1, 4352});
    for (bool ksplit : {true, false}) {  // the block's warps split K, or a warp per row set
      const bool before = cuda::set_gemv_ksplit(ksplit);
      EXPECT_LT(rel_err(ops::linear(dev(x), dev(w)), ops::linear(x, w)), kTolF32) << "ksplit " << ksplit;
      Tensor wu = rand_host({301, 4352}, DType::bf16);
      EXPECT_TRUE(bytes_equal(ops::linear_gated(dev(x), dev(w), dev(wu), ops::Activation::silu),
                              ops::gated(ops::linear(dev(x), dev(w)), ops::linear(dev(x), dev(wu)), ops::Activation::silu)))
          << "ksplit " << ksplit;
      cuda::set_gemv_ksplit(before);
    }
    QuantizedWeight q = ops::quantize(rand_host({101, 4352}), QuantSpec{QuantFormat::mlx_affine, 4, 64}, DType::f16);
    QuantizedWeight d = q;
    d.packed = dev(q.packed), d.scales = dev(q.scales), d.biases = dev(q.biases);
    EXPECT_LT(rel_err(ops::qlinear(dev(x), d), ops::qlinear(x, q)), tol_q);
    // 1-8 rows of x, 8-bit g32 and 4-bit g128 too (design 6 takes all of them).
    for (const QuantSpec spec : {QuantSpec{QuantFormat::mlx_affine, 8, 32}, QuantSpec{QuantFormat::mlx_affine, 4, 128}}) {
      QuantizedWeight q8 = ops::quantize(rand_host({77, 4352}), spec, DType::bf16);
      QuantizedWeight d8 = q8;
      d8.packed = dev(q8.packed), d8.scales = dev(q8.scales), d8.biases = dev(q8.biases);
      for (int64_t M : {2, 8}) {
        Tensor xm = rand_host({M, 4352});
        EXPECT_LT(rel_err(ops::qlinear(dev(xm), d8), ops::qlinear(xm, q8)),
                  variant == 0 ? kTolBf16 : tol_q)
            << spec.bits << " M " << M;
      }
    }
  }
  cuda::set_gemv_variants(previous / 16, previous % 16);
  cuda::set_dense_gemv_rows(previous_rows);
  }
  for (auto [M, D] : {std::pair<int64_t, int64_t>{1, 300}, {7, 300}, {3, 302}, {2, 9000}}) {  // 302: scalar kernel
    Tensor x = rand_host({M, D}), h = rand_host({M, D}), w = rand_host({D}, DType::bf16);
    auto [sum, normed] = ops::add_rms_norm(dev(x), dev(h), dev(w), 1e-6f, 1.0f);
    EXPECT_TRUE(bytes_equal(sum, ops::add(dev(x), dev(h))));
    EXPECT_LT(rel_err(normed, ops::rms_norm(ops::add(x, h), w, 1e-6f, 1.0f)), kTolF32);
  }
}

// Producers writing the bf16 their consumers read (ops::matmul_input_dtype): the same bits
// as their f32 result rounded by astype, and the products fed bf16 give what they gave
// when they rounded f32 x themselves.
// Weights that lie end to end in one allocation (place_weights' q/k/v) run prompt-sized
// steps as one product whose columns are split into the outputs (cuda::split_columns):
// the same values as separate products, contiguous outputs; biases too when they are
// adjacent, and separate products when they are not.
TEST(CudaOps, AdjacentWeightsRunAsOneProduct) {
  REQUIRE_GPU();
  for (DType wdt : {DType::f32, DType::bf16}) {
    for (int64_t nv : {16, 17}) {  // 17: widths that are not a multiple of the 16-byte vector
      const int64_t K = 96, nq = 40, nk = 24, N = nq + nk + nv;
      Tensor all = dev(rand_host({N, K}, wdt)), ball = dev(rand_host({N}));
      const std::vector<Tensor> ws = {all.slice(0, 0, nq), all.slice(0, nq, nq + nk), all.slice(0, nq + nk, N)};
      const std::vector<Tensor> bs = {ball.slice(0, 0, nq), ball.slice(0, nq, nq + nk), ball.slice(0, nq + nk, N)};
      ASSERT_TRUE(Tensor::adjacent_rows(ws).defined());
      for (int64_t M : {9, 24, 70}) {
        SCOPED_TRACE(std::string(dtype_name(wdt)) + " nv " + std::to_string(nv) + " M " + std::to_string(M));
        Tensor x = rand_host({M, K});
        for (int biased = 0; biased < 3; ++biased) {  // none, adjacent, not adjacent
          std::vector<Tensor> b = biased == 0 ? std::vector<Tensor>(3)
                                  : biased == 1 ? bs
                                                : std::vector<Tensor>{bs[0], Tensor(), bs[2]};
          const std::vector<Tensor> got = ops::linear_multi(dev(x), ws, b);
          ASSERT_EQ(got.size(), 3u);
          for (size_t i = 0; i < 3; ++i) {
            EXPECT_TRUE(got[i].is_contiguous());
            EXPECT_EQ(got[i].shape(), (Shape{M, ws[i].dim(0)}));
            const Tensor ref = ops::linear(x, host(ws[i]), b[i].defined() ? host(b[i]) : Tensor());
            EXPECT_LT(rel_err(got[i], ref), kTolBf16) << "part " << i << " bias " << biased;
          }
        }
      }
    }
  }
}

// The bf16 tensor-core product of 2-64 rows of 4- and 8-bit weights (qgemm_mma) against the CPU
// (bf16 rounding of x and of the dequantized weights) and against its own f32 fallback:
// group sizes 32/64/128, bf16/f16/f32 scales, N not a multiple of 16, K of several
// passes, 1-8 activation groups, blocks of 1, 2 and 4 row tiles, bias, multi-part and
// gated forms (2-8 rows).
TEST(CudaOps, QuantizedTensorCoreProductsOfFewRows) {
  REQUIRE_GPU();
  ASSERT_TRUE(cuda::set_qgemm_mma(true));
  struct Case { int64_t N, K; int group; DType sdt; int bits; };
  for (Case c : {Case{301, 4352, 64, DType::bf16, 4}, Case{40, 256, 32, DType::f16, 4}, Case{96, 512, 128, DType::f32, 4},
                 Case{9000, 256, 64, DType::bf16, 4}, Case{17000, 128, 32, DType::bf16, 4},
                 Case{301, 4352, 64, DType::bf16, 8}, Case{40, 256, 32, DType::f16, 8}, Case{96, 512, 128, DType::f32, 8},
                 Case{9000, 256, 32, DType::bf16, 8}}) {
    const QuantSpec spec{QuantFormat::mlx_affine, c.bits, c.group};
    QuantizedWeight q = ops::quantize(rand_host({c.N, c.K}), spec, c.sdt);
    QuantizedWeight d = q;
    d.packed = dev(q.packed), d.scales = dev(q.scales), d.biases = dev(q.biases);
    Tensor b = rand_host({c.N});
    for (int64_t M : {2, 5, 8, 9, 16, 17, 33, 64}) {
      if (c.N * M > 2000000 && M != 9) continue;  // the widest weights: one size is enough
      SCOPED_TRACE(std::to_string(c.bits) + "-bit N " + std::to_string(c.N) + " K " + std::to_string(c.K) + " g" +
                   std::to_string(c.group) + " " + dtype_name(c.sdt) + " M " + std::to_string(M));
      Tensor x = rand_host({M, c.K});
      const Tensor got = ops::qlinear(dev(x), d, dev(b));
      EXPECT_LT(rel_err(got, ops::qlinear(x, q, b)), kTolBf16);
      cuda::set_qgemm_mma(false);
      const Tensor exact = ops::qlinear(dev(x), d, dev(b));
      cuda::set_qgemm_mma(true);
      EXPECT_LT(rel_err(got, host(exact)), kTolBf16);
    }
  }
  for (int bits : {4, 8}) {
  const QuantSpec mspec{QuantFormat::mlx_affine, bits, 64};
  QuantizedWeight q1 = ops::quantize(rand_host({72, 512}), mspec, DType::bf16);
  QuantizedWeight q2 = ops::quantize(rand_host({24, 512}), mspec, DType::bf16);
  QuantizedWeight q3 = ops::quantize(rand_host({72, 512}), mspec, DType::bf16);
  auto qd = [](const QuantizedWeight& q) {
    QuantizedWeight d = q;
    d.packed = dev(q.packed), d.scales = dev(q.scales), d.biases = dev(q.biases);
    return d;
  };
  QuantizedWeight d1 = qd(q1), d2 = qd(q2), d3 = qd(q3);
  Tensor b1 = rand_host({72});
  for (int64_t M : {2, 7, 8}) {
    Tensor x = rand_host({M, 512});
    std::vector<Tensor> got = ops::qlinear_multi(dev(x), {&d1, &d2}, {dev(b1), Tensor()});
    EXPECT_LT(rel_err(got[0], ops::qlinear(x, q1, b1)), kTolBf16) << bits << "-bit M " << M;
    EXPECT_LT(rel_err(got[1], ops::qlinear(x, q2)), kTolBf16) << bits << "-bit M " << M;
    Tensor g = ops::qlinear_gated(dev(x), d1, d3, ops::Activation::silu, dev(b1));
    EXPECT_LT(rel_err(g, ops::gated(ops::qlinear(x, q1, b1), ops::qlinear(x, q3), ops::Activation::silu)), kTolBf16)
        << bits << "-bit M " << M;
  }
  }
}

TEST(CudaOps, Bf16ActivationsMatchTheRoundingPass) {
  REQUIRE_GPU();
  Tensor w = dev(rand_host({96, 4096}, DType::bf16)), wu = dev(rand_host({96, 4096}, DType::bf16));
  Tensor down = dev(rand_host({4096, 96}, DType::bf16));
  for (int64_t M : {3, 9, 64, 300}) {
    Tensor x = dev(rand_host({M, 4096})), h = dev(rand_host({M, 4096})), nw = dev(rand_host({4096}, DType::bf16));
    const DType want = M > cuda::dense_gemv_rows() ? DType::bf16 : DType::f32;
    EXPECT_EQ(ops::matmul_input_dtype(x, w), want) << M;
    EXPECT_EQ(ops::matmul_input_dtype(x, dev(rand_host({96, 4096}))), DType::f32) << M;  // f32 weights
    for (int64_t D : {4096, 302}) {  // vector and scalar norm kernels
      Tensor xd = D == 4096 ? x : dev(rand_host({M, D})), hd = D == 4096 ? h : dev(rand_host({M, D}));
      Tensor wd = D == 4096 ? nw : dev(rand_host({D}, DType::bf16));
      auto [sum, normed] = ops::add_rms_norm(xd, hd, wd, 1e-6f, 0.0f, DType::bf16);
      auto [sum32, normed32] = ops::add_rms_norm(xd, hd, wd, 1e-6f);
      EXPECT_TRUE(bytes_equal(sum, sum32)) << M << " " << D;
      EXPECT_TRUE(bytes_equal(normed, ops::astype(normed32, DType::bf16))) << M << " " << D;
    }
    auto [sum, xb] = ops::add_rms_norm(x, h, nw, 1e-6f, 0.0f, want);
    auto [sum32, x32] = ops::add_rms_norm(x, h, nw, 1e-6f);
    for (auto act : {ops::Activation::silu, ops::Activation::gelu_tanh}) {
      Tensor g = ops::linear_gated(xb, w, wu, act, Tensor(), Tensor(), want);
      Tensor g32 = ops::linear_gated(x32, w, wu, act);
      EXPECT_TRUE(bytes_equal(g, want == DType::f32 ? g32 : ops::astype(g32, DType::bf16))) << M;
      EXPECT_TRUE(bytes_equal(ops::linear(g, down), ops::linear(g32, down))) << M;
    }
    std::vector<Tensor> a = ops::linear_multi(xb, {w, wu}), b = ops::linear_multi(x32, {w, wu});
    EXPECT_TRUE(bytes_equal(a[0], b[0])) << M;
    EXPECT_TRUE(bytes_equal(a[1], b[1])) << M;
    // Three products side by side (linear_concurrent), with a bias: each as linear alone.
    Tensor wk = dev(rand_host({24, 4096}, DType::bf16)), bk = dev(rand_host({24}, DType::bf16));
    std::vector<Tensor> c = ops::linear_multi(xb, {w, wk, wu}, {Tensor(), bk, Tensor()});
    EXPECT_TRUE(bytes_equal(c[0], ops::linear(xb, w))) << M;
    EXPECT_TRUE(bytes_equal(c[1], ops::linear(xb, wk, bk))) << M;
    EXPECT_TRUE(bytes_equal(c[2], ops::linear(xb, wu))) << M;
  }
}

// ops::sample on CUDA against the CPU reference (the same thresholds and id-order draw;
// sums in f32 on the device, f64 on the host, so a u within rounding of a token's edge
// may land on its neighbour): the same token for at least 99% of rows, argmax exactly for
// temperature 0 and top_k 1, and every device token inside the CPU's kept set.
TEST(CudaOps, SampleMatchesCpu) {
  REQUIRE_GPU();
  std::mt19937 g(7);
  for (int64_t V : {int64_t(9), int64_t(1000), int64_t(128256)}) {
    const int R = V > 1000 ? 64 : 300;
    Tensor x = rand_host({R, V}, DType::f32, -6.0f, 6.0f);
    std::vector<ops::SampleRow> rows;
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (int r = 0; r < R; ++r) {
      ops::SampleRow p;
      switch (r % 6) {
        case 0: p = {.temperature = 0.0f}; break;
        case 1: p = {.temperature = 1.7f, .top_k = 1}; break;
        case 2: p = {.temperature = 0.8f, .top_k = 40}; break;
        case 3: p = {.temperature = 1.0f, .top_p = 0.9f}; break;
        case 4: p = {.temperature = 0.6f, .min_p = 0.1f}; break;
        default: p = {.temperature = 1.2f, .top_k = 200, .top_p = 0.7f, .min_p = 0.01f}; break;
      }
      p.u = std::min(u(g), 0.999f);
      rows.push_back(p);
    }
    const std::vector<int32_t> want = ids_of(ops::sample(x, rows));
    const std::vector<int32_t> got = ids_of(ops::sample(dev(x), rows));
    const std::vector<int32_t> amax = ids_of(ops::argmax(x));
    int same = 0;
    for (int r = 0; r < R; ++r) {
      same += got[size_t(r)] == want[size_t(r)];
      if (r % 6 < 2) {
        EXPECT_EQ(got[size_t(r)], amax[size_t(r)]) << "V " << V << " row " << r;
      }
      // Inside the kept set: the CPU op at u = 0 and u -> 1 brackets it in id order.
      ops::SampleRow lo = rows[size_t(r)], hi = rows[size_t(r)];
      lo.u = 0.0f;
      hi.u = 0.9999f;
      Tensor one = Tensor::from_f32({1, V}, std::vector<float>(x.data<float>() + r * V, x.data<float>() + (r + 1) * V));
      const int32_t first = ids_of(ops::sample(one, {lo}))[0], last = ids_of(ops::sample(one, {hi}))[0];
      EXPECT_GE(got[size_t(r)], first) << "V " << V << " row " << r;
      EXPECT_LE(got[size_t(r)], last) << "V " << V << " row " << r;
    }
    EXPECT_GE(same, R * 99 / 100) << "V " << V;
  }
}

}  // namespace
}  // namespace mlxcel
