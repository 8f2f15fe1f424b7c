// Runtime dispatch of the CPU kernels by instruction-set level (backends/cpu/isa.h):
// the level picked for this CPU, switching it, and the builds agreeing with each other.
// (Every op test also runs with MLXCEL_CPU_ISA=generic and =avx2: tests/ops/CMakeLists.txt.)
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
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vnni");
  EXPECT_EQ(cpu::best_isa(), avx512 ? cpu::Isa::avx512 : avx2 ? cpu::Isa::avx2 : cpu::Isa::generic);
  EXPECT_EQ(cpu::has_avx512_bf16(), avx512 && __builtin_cpu_supports("avx512bf16"));
#else
  EXPECT_EQ(cpu::best_isa(), cpu::Isa::generic);
  EXPECT_FALSE(cpu::has_avx512_bf16());
#endif
  EXPECT_STREQ(cpu::isa_name(cpu::Isa::avx512), "avx512");
  EXPECT_STREQ(cpu::isa_name(cpu::Isa::avx2), "avx2");
  EXPECT_STREQ(cpu::isa_name(cpu::Isa::generic), "generic");
}

// What gguf::matmul_isa() names for each level.
const char* gguf_name(cpu::Isa level) {
  switch (level) {
    case cpu::Isa::avx512: return "avx512-vnni";
    case cpu::Isa::avx2: return "avx2";
    default: return "scalar";
  }
}

TEST(CpuIsa, SwitchesLevelsAndClampsToTheCpu) {
  {
    IsaScope g(cpu::Isa::generic);
    EXPECT_EQ(cpu::isa(), cpu::Isa::generic);
    EXPECT_STREQ(gguf::matmul_isa(), "scalar");
  }
  if (cpu::best_isa() >= cpu::Isa::avx2) {
    IsaScope a(cpu::Isa::avx2);
    EXPECT_EQ(cpu::isa(), cpu::Isa::avx2);
    EXPECT_STREQ(gguf::matmul_isa(), "avx2");
  }
  IsaScope best(cpu::Isa::avx512);  // clamped to what the CPU has
  EXPECT_EQ(cpu::isa(), cpu::best_isa());
  EXPECT_STREQ(gguf::matmul_isa(), gguf_name(cpu::best_isa()));
}

// The same products on every level: dense f32/bf16 (GEMV and GEMM sizes), GGUF
// Q8_0/Q4_0 (decode and prompt sizes), softmax and RMSNorm agree to f32 rounding.
// (The MLX quantized product has the op tests' generic runs.)
TEST(CpuIsa, LevelsAgree) {
  auto run_all = [] {
    std::vector<std::vector<float>> r;
    for (int64_t M : {1, 3, 45}) {
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
          gguf::quantize_row(t, wv.data() + n * 128, packed.data() + n * rb, 128);
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
  // Products in bf16 (AVX512_BF16) have their own tests (linear_test, quant_test).
  const bool bf16_before = cpu::set_bf16_products(false);
  std::vector<std::vector<float>> generic;
  {
    IsaScope g(cpu::Isa::generic);
    generic = run_all();
  }
  for (cpu::Isa level : {cpu::Isa::avx2, cpu::Isa::avx512}) {
    if (level > cpu::best_isa()) continue;
    IsaScope l(level);
    const std::vector<std::vector<float>> got = run_all();
    ASSERT_EQ(got.size(), generic.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i].size(), generic[i].size()) << cpu::isa_name(level) << " product " << i;
      double worst = 0, scale = 0;
      for (size_t j = 0; j < got[i].size(); ++j) {
        worst = std::max(worst, std::fabs(double(got[i][j]) - generic[i][j]));
        scale = std::max(scale, std::fabs(double(generic[i][j])));
      }
      // Only the order of f32 sums differs (GGUF products below 64 rows quantize x to 8
      // bits in every build).
      EXPECT_LE(worst, 1e-5 * scale + 1e-6) << cpu::isa_name(level) << " product " << i;
    }
  }
  cpu::set_bf16_products(bf16_before);
}

}  // namespace
}  // namespace mlxcel
