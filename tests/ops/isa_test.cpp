// Runtime dispatch of the CPU kernels by instruction-set level (backends/cpu/isa.h):
// the level picked for this CPU, switching it, and the builds agreeing with each other.
// (Every op test also runs with MLXCEL_CPU_ISA=generic: tests/ops/CMakeLists.txt.)
#include <cmath>
#include <string>

#include "backends/cpu/gguf_quants.h"
#include "backends/cpu/isa.h"
#include "test_util.h"

namespace mlxcel {
namespace {

using optest::rand_vec;

struct IsaScope {
  cpu::Isa previous;
  explicit IsaScope(cpu::Isa level) : previous(cpu::set_isa(level)) {}
  ~IsaScope() { cpu::set_isa(previous); }
};

TEST(CpuIsa, PicksTheBestLevelThisCpuSupports) {
#if (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
  EXPECT_EQ(cpu::best_isa(), avx2 ? cpu::Isa::avx2 : cpu::Isa::generic);
#else
  EXPECT_EQ(cpu::best_isa(), cpu::Isa::generic);
#endif
  EXPECT_STREQ(cpu::isa_name(cpu::Isa::avx2), "avx2");
  EXPECT_STREQ(cpu::isa_name(cpu::Isa::generic), "generic");
}

TEST(CpuIsa, SwitchesLevelsAndClampsToTheCpu) {
  {
    IsaScope g(cpu::Isa::generic);
    EXPECT_EQ(cpu::isa(), cpu::Isa::generic);
    EXPECT_STREQ(gguf::matmul_isa(), "scalar");
  }
  IsaScope best(cpu::Isa::avx2);  // clamped to what the CPU has
  EXPECT_EQ(cpu::isa(), cpu::best_isa());
  EXPECT_STREQ(gguf::matmul_isa(), cpu::best_isa() == cpu::Isa::avx2 ? "avx2" : "scalar");
}

// The same products on every level: dense f32/bf16 (GEMV and GEMM sizes), GGUF
// Q8_0/Q4_0 (decode and prompt sizes), softmax and RMSNorm agree to f32 rounding.
// (The MLX quantized product has the op tests' generic runs.)
TEST(CpuIsa, LevelsAgree) {
  auto run_all = [] {
    std::vector<std::vector<float>> r;
    for (int64_t M : {1, 3, 40}) {
      for (DType wdt : {DType::f32, DType::bf16}) {
        Tensor x = Tensor::from_f32({M, 96}, rand_vec(M * 96, 11));
        Tensor w = optest::make_tensor({37, 96}, rand_vec(37 * 96, 12), wdt);
        r.push_back(ops::linear(x, w, Tensor()).to_f32_vector());
      }
      std::vector<float> xv = rand_vec(M * 128, 13), wv = rand_vec(19 * 128, 14);
      for (uint32_t t : {gguf::kQ8_0, gguf::kQ4_0}) {
        const size_t rb = gguf::row_bytes(t, 128);
        std::vector<uint8_t> packed(rb * 19);
        for (int64_t n = 0; n < 19; ++n) {
          if (t == gguf::kQ8_0) gguf::quantize_row_q8_0(wv.data() + n * 128, packed.data() + n * rb, 128);
          else gguf::quantize_row_q4_0(wv.data() + n * 128, packed.data() + n * rb, 128);
        }
        std::vector<float> y(size_t(M * 19));
        gguf::matmul_packed(t, xv.data(), M, 128, packed.data(), rb, 19, nullptr, y.data());
        r.push_back(y);
      }
      Tensor xs = Tensor::from_f32({M, 300}, rand_vec(M * 300, 15));
      r.push_back(ops::softmax(xs).to_f32_vector());
      Tensor nw = Tensor::from_f32({300}, rand_vec(300, 16));
      r.push_back(ops::rms_norm(xs, nw, 1e-5f).to_f32_vector());
    }
    return r;
  };
  std::vector<std::vector<float>> best = run_all(), generic;
  {
    IsaScope g(cpu::Isa::generic);
    generic = run_all();
  }
  ASSERT_EQ(best.size(), generic.size());
  for (size_t i = 0; i < best.size(); ++i) {
    ASSERT_EQ(best[i].size(), generic[i].size()) << "product " << i;
    double worst = 0, scale = 0;
    for (size_t j = 0; j < best[i].size(); ++j) {
      worst = std::max(worst, std::fabs(double(best[i][j]) - generic[i][j]));
      scale = std::max(scale, std::fabs(double(generic[i][j])));
    }
    // Only the order of f32 sums differs (GGUF products below 64 rows quantize x to 8
    // bits in both builds).
    EXPECT_LE(worst, 1e-5 * scale + 1e-6) << "product " << i;
  }
}

}  // namespace
}  // namespace mlxcel
