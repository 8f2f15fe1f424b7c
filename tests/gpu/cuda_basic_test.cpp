// CUDA backend vs the CPU kernels: runtime, copies, elementwise, norms, reductions,
// dense linear. Fresh random data for every check, poisoned outputs.
#include <cstring>
#include <limits>
#include <string>

#include "backends/cpu/kernels.h"
#include "backends/cpu/linear.h"
#include "backends/cuda/linear_impl.h"
#include "base/error.h"
#include "test_util.h"

namespace mlxcel {
namespace {

using namespace gputest;

TEST(CudaRuntime, RoundTripsAndStridedCopies) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    Tensor h = rand_host({5, 7, 9}, dt);
    EXPECT_TRUE(bytes_equal(host(gpu(h)), h));
    // Strided host source and strided device source.
    Tensor hs = h.slice(1, 2, 6);
    EXPECT_TRUE(bytes_equal(host(gpu(hs)), hs.clone()));
    Tensor d = gpu(h);
    Tensor ds = d.slice(2, 1, 8);
    Tensor out = poisoned(ds.shape(), dt);
    cuda::copy_strided(ds, out);
    EXPECT_TRUE(bytes_equal(out, h.slice(2, 1, 8).clone()));
    // Device to device copy.
    EXPECT_TRUE(bytes_equal(cuda::to_device(d, Device::cuda()), h));
  }
}

TEST(CudaRuntime, AllocatorCachesAndErrorsAreMlxcelErrors) {
  REQUIRE_GPU();
  for (int i = 0; i < 50; ++i) {
    Tensor t = Tensor::empty({1 << 20}, DType::f32, Device::cuda());
    cuda::fill_zero(t);
  }
  cuda::synchronize();
  EXPECT_LT(cuda::pool_reserved_bytes(), size_t(64) << 20);  // freed blocks were reused
  Tensor h = rand_host({3}, DType::f32);
  EXPECT_THROW(cuda::to_device(h, Device::cuda(97)), Error);
  try {
    cuda::to_device(h, Device::cuda(97));
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_request);
  }
}

TEST(CudaRuntime, MemoryInfoReportsTheDevice) {  // what `mlxcel inspect --device cuda` reads
  REQUIRE_GPU();
  size_t free_b = 0, total_b = 0;
  std::string name;
  ASSERT_TRUE(cuda::memory_info(0, &free_b, &total_b, &name));
  EXPECT_GT(total_b, size_t(1) << 30);
  EXPECT_GT(free_b, size_t(0));
  EXPECT_LE(free_b, total_b);
  EXPECT_FALSE(name.empty());
  EXPECT_FALSE(cuda::memory_info(97, &free_b, &total_b));
}

TEST(CudaCopy, ConvertGatherSliceZero) {
  REQUIRE_GPU();
  const DType fl[] = {DType::f32, DType::f16, DType::bf16};
  for (DType s : fl) {
    for (DType d : fl) {
      Tensor h = rand_host({3, 37}, s, -300.0f, 300.0f);
      Tensor want = Tensor::empty(h.shape(), d);
      cpu::convert(h, want);
      Tensor out = poisoned(h.shape(), d);
      cuda::convert(gpu(h), out);
      EXPECT_TRUE(bytes_equal(out, want)) << dtype_name(s) << "->" << dtype_name(d);
    }
  }
  Tensor ih = rand_ids(41, 100000);
  Tensor iw = Tensor::empty({41}, DType::f32);
  cpu::convert(ih, iw);
  Tensor io = poisoned({41}, DType::f32);
  cuda::convert(gpu(ih), io);
  EXPECT_TRUE(bytes_equal(io, iw));

  for (DType dt : fl) {
    Tensor x = rand_host({29, 13}, dt);
    Tensor idx = rand_ids(17, 29);
    Tensor want = Tensor::empty({17, 13}, dt);
    cpu::gather_rows(x, idx.data<int32_t>(), 17, want);
    Tensor out = poisoned({17, 13}, dt);
    Tensor didx = gpu(idx);
    cuda::gather_rows(gpu(x), didx.data<int32_t>(), 17, out);
    EXPECT_TRUE(bytes_equal(out, want));

    Tensor want32 = Tensor::empty({17, 13}, DType::f32);
    cpu::gather_rows_f32(x, idx.data<int32_t>(), 17, want32);
    Tensor out32 = poisoned({17, 13}, DType::f32);
    cuda::gather_rows_f32(gpu(x), didx.data<int32_t>(), 17, out32);
    EXPECT_TRUE(bytes_equal(out32, want32));

    Tensor sw = Tensor::empty({29, 6}, dt);
    cpu::slice_last(x, 4, 10, sw);
    Tensor so = poisoned({29, 6}, dt);
    cuda::slice_last(gpu(x), 4, 10, so);
    EXPECT_TRUE(bytes_equal(so, sw));
  }
  // A bad index is an invalid_request, not a crash.
  Tensor x = gpu(rand_host({4, 3}));
  Tensor bad = gpu(Tensor::from_i32({3}, {0, 4, 1}));
  Tensor out = poisoned({3, 3}, DType::f32);
  EXPECT_THROW(cuda::gather_rows_f32(x, bad.data<int32_t>(), 3, out), Error);
  Tensor z = poisoned({5, 3}, DType::bf16);
  cuda::fill_zero(z);
  EXPECT_EQ(rel_err(z, Tensor::zeros({5, 3}, DType::f32)), 0.0);
}

TEST(CudaElementwise, MatchesCpu) {
  REQUIRE_GPU();
  const Shape shape{7, 131};
  for (DType bdt : {DType::f32, DType::f16, DType::bf16}) {
    for (bool bcast : {false, true}) {
      for (auto op : {cpu::BinaryOp::add, cpu::BinaryOp::mul}) {
        Tensor a = rand_host(shape), b = rand_host(bcast ? Shape{131} : shape, bdt);
        Tensor want = Tensor::empty(shape, DType::f32);
        cpu::binary(a, b, op, want);
        Tensor out = poisoned(shape, DType::f32);
        cuda::binary(gpu(a), gpu(b), op, out);
        EXPECT_LT(rel_err(out, want), kTolF32);
      }
    }
  }
  // In place (out aliases a).
  Tensor a = rand_host(shape), b = rand_host(shape);
  Tensor want = Tensor::empty(shape, DType::f32);
  cpu::binary(a, b, cpu::BinaryOp::add, want);
  Tensor da = gpu(a);
  cuda::binary(da, gpu(b), cpu::BinaryOp::add, da);
  EXPECT_LT(rel_err(da, want), kTolF32);

  Tensor x = rand_host(shape, DType::f32, -6.0f, 6.0f);
  Tensor sw = Tensor::empty(shape, DType::f32);
  cpu::scale(x, 0.37f, sw);
  Tensor so = poisoned(shape, DType::f32);
  cuda::scale(gpu(x), 0.37f, so);
  EXPECT_LT(rel_err(so, sw), kTolF32);

  for (auto act : {cpu::Act::silu, cpu::Act::gelu_tanh, cpu::Act::gelu_erf, cpu::Act::relu, cpu::Act::relu2}) {
    Tensor g = rand_host(shape, DType::f32, -6.0f, 6.0f), u = rand_host(shape);
    Tensor aw = Tensor::empty(shape, DType::f32), gw = Tensor::empty(shape, DType::f32);
    cpu::activate(g, act, aw);
    cpu::gated(g, u, act, gw);
    Tensor ao = poisoned(shape, DType::f32), go = poisoned(shape, DType::f32);
    Tensor dg = gpu(g);
    cuda::activate(dg, act, ao);
    cuda::gated(dg, gpu(u), act, go);
    EXPECT_LT(rel_err(ao, aw), kTolF32) << int(act);
    EXPECT_LT(rel_err(go, gw), kTolF32) << int(act);
  }
  Tensor c = rand_host(shape, DType::f32, -80.0f, 80.0f);
  Tensor cw = Tensor::empty(shape, DType::f32);
  cpu::softcap(c, 30.0f, cw);
  Tensor co = poisoned(shape, DType::f32);
  cuda::softcap(gpu(c), 30.0f, co);
  EXPECT_LT(rel_err(co, cw), kTolF32);
}

TEST(CudaReduce, SoftmaxAndArgmax) {
  REQUIRE_GPU();
  for (int64_t D : {1, 5, 255, 1000, 4099}) {
    Tensor x = rand_host({6, D}, DType::f32, -20.0f, 20.0f);
    Tensor want = Tensor::empty({6, D}, DType::f32);
    cpu::softmax(x, want);
    Tensor out = poisoned({6, D}, DType::f32);
    cuda::softmax(gpu(x), out);
    EXPECT_LT(rel_err(out, want), kTolF32) << D;
  }
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    for (int64_t D : {1, 7, 300, 32001}) {
      Tensor x = rand_host({9, D}, dt, -4.0f, 4.0f);
      if (D > 10) {  // ties: the lowest index wins
        std::vector<float> v = x.to_f32_vector();
        v[size_t(D + 3)] = 100.0f;
        v[size_t(D + 8)] = 100.0f;
        x = host_from(x.shape(), dt, v);
      }
      Tensor want = Tensor::empty({9}, DType::i32);
      cpu::argmax(x, want);
      Tensor out = poisoned({9}, DType::i32);
      cuda::argmax(gpu(x), out);
      EXPECT_TRUE(bytes_equal(out, want)) << dtype_name(dt) << " D=" << D;
    }
  }
  // Vocabulary-sized rows split across blocks: ties and NaNs placed in different parts
  // (the lowest index wins a tie, NaN beats everything, the first NaN wins).
  for (int64_t rows : {1, 3, 64, 300}) {
    const int64_t D = 128256;
    Tensor x = rand_host({rows, D}, DType::f32, -4.0f, 4.0f);
    std::vector<float> v = x.to_f32_vector();
    v[size_t(D - 1)] = 50.0f;  // row 0: a late winner
    if (rows > 1) {
      v[size_t(D + 70000)] = 9.0f, v[size_t(D + 5)] = 9.0f, v[size_t(D + 120000)] = 9.0f;  // row 1: tie
    }
    if (rows > 2) {
      v[size_t(2 * D + 90000)] = std::numeric_limits<float>::quiet_NaN();
      v[size_t(2 * D + 100000)] = std::numeric_limits<float>::quiet_NaN();
      v[size_t(2 * D + 7)] = 1e30f;
    }
    x = host_from(x.shape(), DType::f32, v);
    Tensor want = Tensor::empty({rows}, DType::i32);
    cpu::argmax(x, want);
    Tensor out = poisoned({rows}, DType::i32);
    cuda::argmax(gpu(x), out);
    EXPECT_TRUE(bytes_equal(out, want)) << "rows=" << rows;
    Tensor h = host(out);
    EXPECT_EQ(h.data<int32_t>()[0], int32_t(D - 1));
    if (rows > 1) {
      EXPECT_EQ(h.data<int32_t>()[1], 5);
    }
    if (rows > 2) {
      EXPECT_EQ(h.data<int32_t>()[2], 90000);
    }
  }
}

TEST(CudaNorm, RmsNormFusedAndLayerNorm) {
  REQUIRE_GPU();
  for (int64_t D : {7, 64, 1000, 4096}) {
    for (DType wdt : {DType::f32, DType::bf16}) {
      for (float off : {0.0f, 1.0f}) {
        Tensor x = rand_host({5, D}, DType::f32, -3.0f, 3.0f), w = rand_host({D}, wdt);
        Tensor want = Tensor::empty({5, D}, DType::f32);
        cpu::rms_norm(x, w, 1e-6f, off, want);
        Tensor out = poisoned({5, D}, DType::f32);
        cuda::rms_norm(gpu(x), gpu(w), 1e-6f, off, out);
        EXPECT_LT(rel_err(out, want), kTolF32) << D;

        // Fused residual add.
        Tensor r = rand_host({5, D}, DType::f32, -3.0f, 3.0f);
        Tensor sum = Tensor::empty({5, D}, DType::f32);
        cpu::binary(x, r, cpu::BinaryOp::add, sum);
        cpu::rms_norm(sum, w, 1e-6f, off, want);
        Tensor so = poisoned({5, D}, DType::f32), fo = poisoned({5, D}, DType::f32);
        cuda::add_rms_norm(gpu(x), gpu(r), gpu(w), 1e-6f, off, so, fo);
        EXPECT_LT(rel_err(so, sum), kTolF32);
        EXPECT_LT(rel_err(fo, want), kTolF32);
      }
    }
    Tensor x = rand_host({5, D}, DType::f32, -3.0f, 3.0f);
    Tensor none = Tensor();
    Tensor want = Tensor::empty({5, D}, DType::f32);
    cpu::rms_norm(x, none, 1e-5f, 0.0f, want);
    Tensor out = poisoned({5, D}, DType::f32);
    cuda::rms_norm(gpu(x), none, 1e-5f, 0.0f, out);
    EXPECT_LT(rel_err(out, want), kTolF32);

    for (bool affine : {false, true}) {
      Tensor w = affine ? rand_host({D}, DType::bf16) : Tensor(), b = affine ? rand_host({D}) : Tensor();
      Tensor lw = Tensor::empty({5, D}, DType::f32);
      cpu::layer_norm(x, w, b, 1e-5f, lw);
      Tensor lo = poisoned({5, D}, DType::f32);
      cuda::layer_norm(gpu(x), gpu(w), gpu(b), 1e-5f, lo);
      EXPECT_LT(rel_err(lo, lw), kTolF32);
    }
  }
}

TEST(CudaLinear, GemvAndGemmMatchCpu) {
  REQUIRE_GPU();
  struct Case { int64_t M, N, K; };
  for (Case c : {Case{1, 257, 333}, Case{3, 64, 512}, Case{8, 129, 1024}, Case{37, 200, 333}, Case{64, 96, 512}}) {
    for (DType wdt : {DType::f32, DType::f16, DType::bf16}) {
      for (bool with_bias : {false, true}) {
        for (DType xdt : {DType::f32, DType::bf16}) {
          Tensor x = rand_host({c.M, c.K}, xdt), w = rand_host({c.N, c.K}, wdt);
          Tensor bias = with_bias ? rand_host({c.N}, wdt) : Tensor();
          Tensor x32 = Tensor::empty(x.shape(), DType::f32);
          cpu::convert(x, x32);
          Tensor want = Tensor::empty({c.M, c.N}, DType::f32);
          cpu::linear(x32, w, bias, want);
          Tensor out = poisoned({c.M, c.N}, DType::f32);
          cuda::linear(gpu(x), gpu(w), gpu(bias), out);
          // The GEMV widens weights to f32; the cuBLAS path rounds x to a 16-bit weight dtype.
          const bool rounded_x = c.M > cuda::dense_gemv_rows() && wdt != DType::f32;
          EXPECT_LT(rel_err(out, want), rounded_x ? kTolBf16 : kTolF32)
              << "M=" << c.M << " N=" << c.N << " K=" << c.K << " w=" << dtype_name(wdt) << " x=" << dtype_name(xdt);
        }
      }
    }
  }
  // bf16 output.
  Tensor x = rand_host({2, 300}), w = rand_host({77, 300}, DType::bf16);
  Tensor want = Tensor::empty({2, 77}, DType::f32);
  cpu::linear(x, w, Tensor(), want);
  Tensor out = poisoned({2, 77}, DType::bf16);
  cuda::linear(gpu(x), gpu(w), Tensor(), out);
  EXPECT_LT(rel_err(out, want), kTolBf16);
}

// The weight-streaming kernel for 9..64 rows (skinny_gemm.cu): against the CPU and
// cuBLAS, over 1..8 blocks splitting K, with K not a multiple of its 64-wide chunks, N not
// a multiple of its 64-row tiles, biases and bf16 outputs; and the same bits for a row
// whatever the batch around it, run after run.
TEST(CudaLinear, SkinnyGemmMatchesCpuAndCublasAndIsBatchInvariant) {
  REQUIRE_GPU();
  if (cuda::skinny_gemm_split(1000, 4096, 0) == 1) GTEST_SKIP() << "card too small for a K split";
  const int mode = cuda::set_skinny_gemm(2);  // every shape, not only narrow weights
  EXPECT_GT(cuda::skinny_gemm_split(1000, 4096, 0), 2);
  EXPECT_EQ(cuda::skinny_gemm_split(128256, 4096, 0), 1);
  struct Case { int64_t M, N, K; };
  for (Case c : {Case{9, 1000, 4096}, Case{16, 200, 520}, Case{33, 130, 2056}, Case{64, 4100, 1024},
                 Case{40, 64, 64}, Case{64, 77, 8}}) {
    for (DType wdt : {DType::bf16, DType::f16}) {
      for (bool with_bias : {false, true}) {
        Tensor x = rand_host({c.M, c.K}, wdt), w = rand_host({c.N, c.K}, wdt);
        Tensor bias = with_bias ? rand_host({c.N}, DType::bf16) : Tensor();
        Tensor x32 = Tensor::empty(x.shape(), DType::f32);
        cpu::convert(x, x32);
        Tensor want = Tensor::empty({c.M, c.N}, DType::f32);
        cpu::linear(x32, w, bias, want);
        // linear takes x as f32 or bf16; f16 values in f32 convert back exactly.
        Tensor xd = gpu(wdt == DType::bf16 ? x : x32), wd = gpu(w), bd = gpu(bias);
        Tensor out = poisoned({c.M, c.N}, DType::f32), again = poisoned({c.M, c.N}, DType::f32);
        cuda::linear(xd, wd, bd, out);
        cuda::linear(xd, wd, bd, again);
        const std::string what = "M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) + " K=" +
                                 std::to_string(c.K) + " w=" + dtype_name(wdt) + (with_bias ? " bias" : "");
        EXPECT_LT(rel_err(out, want), kTolF32) << what;  // x is exact in wdt here
        Tensor h = host(out), h2 = host(again);
        EXPECT_EQ(std::memcmp(h.raw(), h2.raw(), h.nbytes()), 0) << what << ": two runs differ";
        // cuBLAS on the same operands: f32 accumulation in another order.
        cuda::set_skinny_gemm(0);
        Tensor ref = poisoned({c.M, c.N}, DType::f32);
        cuda::linear(xd, wd, bd, ref);
        cuda::set_skinny_gemm(2);
        EXPECT_LT(rel_err(out, host(ref)), kTolF32) << what << " vs cuBLAS";
        // The first 9 rows alone give the same bits.
        const Tensor& xh = wdt == DType::bf16 ? x : x32;
        Tensor x9h = Tensor::empty({9, c.K}, xh.dtype());
        std::memcpy(x9h.raw(), xh.raw(), x9h.nbytes());
        Tensor x9 = gpu(x9h);
        Tensor out9 = poisoned({9, c.N}, DType::f32);
        cuda::linear(x9, wd, bd, out9);
        Tensor h9 = host(out9);
        EXPECT_EQ(std::memcmp(h9.raw(), h.raw(), h9.nbytes()), 0) << what << ": 9 rows differ from the batch";
        // bf16 output.
        Tensor ob = poisoned({c.M, c.N}, DType::bf16);
        cuda::linear(xd, wd, bd, ob);
        EXPECT_LT(rel_err(ob, want), kTolBf16) << what << " bf16 out";
      }
    }
  }
  cuda::set_skinny_gemm(mode);
}

}  // namespace
}  // namespace mlxcel
