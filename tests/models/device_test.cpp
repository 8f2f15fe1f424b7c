// Device placement on any build: GGUF blocks turned into MLX affine weights bit-exactly,
// --device parsing, synthetic benchmark models, and the in-place copy used by the KV
// cache's copy-on-write. (The CUDA side of the same paths runs in tests/gpu.)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "backends/cpu/gguf_quants.h"
#include "base/error.h"
#include "base/half.h"
#include "engine/generator.h"
#include "models/model.h"
#include "models/synthetic.h"
#include "ops/ops.h"
#include "ops/quant.h"

namespace mlxcel {
namespace {

// Random GGUF blocks of `type` (8: Q8_0, 2: Q4_0) for an [N, K] matrix, with scales
// that cover the corners: negative, subnormal, zero and (when big) ones whose bias
// overflows f16.
Tensor random_blocks(int type, int64_t N, int64_t K, uint64_t seed, bool big) {
  const int64_t bb = type == 8 ? 34 : 18, nb = K / 32;
  Tensor t = Tensor::empty({N, nb * bb}, DType::u8);
  auto* p = static_cast<uint8_t*>(t.raw());
  std::mt19937_64 r(seed);
  const float scales[] = {0.0123f, -0.5f, 6.0e-8f, 0.0f, 3.75f, big ? 600.0f : 1.0f, big ? -9000.0f : -2.0f};
  for (int64_t b = 0; b < N * nb; ++b) {
    uint8_t* blk = p + b * bb;
    const uint16_t d = f32_to_f16(scales[r() % 7]);
    std::memcpy(blk, &d, 2);
    for (int64_t j = 2; j < bb; ++j) blk[j] = uint8_t(r());
  }
  return t;
}

TEST(GgufToMlx, DequantizesToTheSameValues) {
  for (int type : {8, 2}) {
    for (bool big : {false, true}) {
      const int64_t N = 7, K = 96;
      QuantizedWeight g;
      g.packed = random_blocks(type, N, K, uint64_t(type * 10 + big), big);
      g.spec = type == 8 ? QuantSpec{QuantFormat::gguf_q8_0, 8, 32} : QuantSpec{QuantFormat::gguf_q4_0, 4, 32};
      QuantizedWeight m = ops::gguf_to_mlx_affine(g, "test");
      EXPECT_EQ(m.spec.format, QuantFormat::mlx_affine);
      EXPECT_EQ(m.spec.bits, type == 8 ? 8 : 4);
      EXPECT_EQ(m.spec.group_size, 32);
      EXPECT_EQ(m.scales.dtype(), big ? DType::f32 : DType::f16) << "type " << type;
      std::vector<float> want(size_t(N * K));
      for (int64_t r = 0; r < N; ++r)
        gguf::dequantize_row(uint32_t(type), static_cast<const uint8_t*>(g.packed.raw()) + r * g.packed.dim(1),
                             want.data() + r * K, K);
      Tensor got = ops::dequantize(m, DType::f32);
      ASSERT_EQ(got.numel(), N * K);
      for (int64_t i = 0; i < N * K; ++i)
        ASSERT_EQ(got.data<float>()[i], want[size_t(i)]) << "type " << type << " big " << big << " at " << i;
    }
  }
}

// Packed K-quants, Q4_1, Q5_0 and Q5_1 (what a CPU load keeps) on their way to a device: Q4_K
// and Q4_1 as MLX affine 4-bit g32 with f32 scales, the same values; Q2_K, Q3_K, Q5_K, Q6_K,
// Q5_0 and Q5_1 (no 4-bit MLX form) through Q8_0, each value within Q8_0's rounding (amax /
// 254 of its 32-value block).
TEST(GgufToMlx, PackedBlocksBecomeMlxAffine) {
  const int64_t N = 5, K = 512;
  std::mt19937_64 r(5);
  for (uint32_t type : {uint32_t(gguf::kQ2_K), uint32_t(gguf::kQ3_K), uint32_t(gguf::kQ4_K), uint32_t(gguf::kQ5_K),
                        uint32_t(gguf::kQ6_K), uint32_t(gguf::kQ4_1), uint32_t(gguf::kQ5_0), uint32_t(gguf::kQ5_1)}) {
    const size_t bb = gguf::block_bytes(type);
    const int64_t blocks = K / int64_t(gguf::block_elems(type));
    QuantizedWeight g;
    g.packed = Tensor::empty({N, int64_t(blocks * bb)}, DType::u8);
    auto* p = static_cast<uint8_t*>(g.packed.raw());
    for (int64_t i = 0; i < g.packed.numel(); ++i) p[i] = uint8_t(r());
    for (int64_t b = 0; b < N * blocks; ++b) {
      const uint16_t d = f32_to_f16(0.001f + 0.01f * float(r() % 100) / 100.0f);
      const bool d_only = type == gguf::kQ6_K || type == gguf::kQ3_K || type == gguf::kQ5_0;  // d (and dmin / m after it)
      const int64_t at = type == gguf::kQ6_K || type == gguf::kQ3_K ? int64_t(bb) - 2 : type == gguf::kQ2_K ? int64_t(bb) - 4 : 0;
      std::memcpy(p + b * int64_t(bb) + at, &d, 2);
      if (!d_only) std::memcpy(p + b * int64_t(bb) + at + 2, &d, 2);
    }
    g.spec = type == gguf::kQ4_K   ? QuantSpec{QuantFormat::gguf_q4_k, 4, 32}
             : type == gguf::kQ5_K ? QuantSpec{QuantFormat::gguf_q5_k, 5, 32}
             : type == gguf::kQ3_K ? QuantSpec{QuantFormat::gguf_q3_k, 3, 16}
             : type == gguf::kQ2_K ? QuantSpec{QuantFormat::gguf_q2_k, 2, 16}
             : type == gguf::kQ4_1 ? QuantSpec{QuantFormat::gguf_q4_1, 4, 32}
             : type == gguf::kQ5_0 ? QuantSpec{QuantFormat::gguf_q5_0, 5, 32}
             : type == gguf::kQ5_1 ? QuantSpec{QuantFormat::gguf_q5_1, 5, 32}
                                   : QuantSpec{QuantFormat::gguf_q6_k, 6, 16};
    const bool affine4 = type == gguf::kQ4_K || type == gguf::kQ4_1;
    EXPECT_EQ(g.cols(), K);
    QuantizedWeight m = ops::gguf_to_mlx_affine(g, "test");
    EXPECT_EQ(m.spec.format, QuantFormat::mlx_affine);
    EXPECT_EQ(m.spec.bits, affine4 ? 4 : 8);
    EXPECT_EQ(m.spec.group_size, 32);
    std::vector<float> want(size_t(N * K));
    for (int64_t i = 0; i < N; ++i) gguf::dequantize_row(type, p + i * g.packed.dim(1), want.data() + i * K, K);
    Tensor got = ops::dequantize(m, DType::f32);
    for (int64_t b0 = 0; b0 < N * K; b0 += 32) {
      float amax = 0;
      for (int64_t i = b0; i < b0 + 32; ++i) amax = std::max(amax, std::fabs(want[size_t(i)]));
      const float tol = affine4 ? 0.0f : amax / 254 * 1.01f + amax * 1e-3f;
      for (int64_t i = b0; i < b0 + 32; ++i)
        ASSERT_LE(std::fabs(got.data<float>()[i] - want[size_t(i)]), tol) << "type " << type << " at " << i;
    }
  }
}

TEST(GgufToMlx, RejectsWhatIsNotGguf) {
  QuantizedWeight q = ops::quantize(Tensor::from_f32({2, 64}, std::vector<float>(128, 0.5f)), {}, DType::f16);
  EXPECT_THROW(ops::gguf_to_mlx_affine(q, "mlx"), Error);
  QuantizedWeight g;
  g.packed = Tensor::empty({2, 35}, DType::u8);  // not a whole number of 34-byte blocks
  g.spec = {QuantFormat::gguf_q8_0, 8, 32};
  EXPECT_THROW(ops::gguf_to_mlx_affine(g, "ragged"), Error);
}

TEST(ParseDevice, NamesAndErrors) {
  EXPECT_EQ(parse_device("cpu"), Device::cpu());
  EXPECT_EQ(parse_device("none"), Device::cpu());
  if (!ops::cuda_built() || ops::cuda_device_count() == 0) {
    EXPECT_EQ(parse_device("auto"), Device::cpu());
    try {
      parse_device("cuda");
      FAIL() << "cuda without a GPU must fail";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::unsupported);
      EXPECT_NE(std::string(e.what()).find("--device cuda"), std::string::npos) << e.what();
    }
    EXPECT_THROW(parse_device("CUDA0"), Error);
  } else {
    EXPECT_EQ(parse_device("auto"), Device::cuda(0));
    EXPECT_EQ(parse_device("CUDA0"), Device::cuda(0));
    EXPECT_THROW(parse_device("cuda:99"), Error);
  }
  for (const char* bad : {"gpu", "", "cuda:x", "cuda:-1", "CPU"}) EXPECT_THROW(parse_device(bad), Error) << bad;
}

std::vector<float> last_logits(Model& m, const std::vector<int>& prompt) {
  Generator g(m, 64);
  return g.prefill(prompt).to_f32_vector();
}

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * double(a[i] - b[i]), den += double(b[i]) * b[i];
  return std::sqrt(num / std::max(den, 1e-30));
}

TEST(Synthetic, EveryFormatBuildsAndRuns) {
  const std::vector<int> prompt{1, 5, 9, 300, 7};
  for (const char* f : {"f32", "f16", "bf16", "q8", "q4", "q8_0", "q4_0"}) {
    ModelConfig c = synthetic_config("tiny", f);
    WeightMap w = synthetic_weights(c, f);
    EXPECT_GT(decode_weight_bytes(w, c), 0) << f;
    auto m = build_model(c, w);
    std::vector<float> l = last_logits(*m, prompt);
    ASSERT_EQ(l.size(), size_t(c.vocab_size)) << f;
    for (float v : l) ASSERT_TRUE(std::isfinite(v)) << f;
  }
}

TEST(Synthetic, GgufBlocksGiveTheSameLogitsPackedOrTranscoded) {
  // The CPU runs Q8_0/Q4_0 packed; CUDA runs their MLX affine transcoding. Same weight
  // values, but the packed kernels quantize activations to int8 per block of 32 (as
  // llama.cpp does), which moves the logits by a few 1e-3 (3.5e-3 measured).
  const std::vector<int> prompt{3, 1, 4, 1, 5, 9, 2, 6};
  for (const char* f : {"q8_0", "q4_0"}) {
    ModelConfig c = synthetic_config("tiny", f);
    WeightMap packed = synthetic_weights(c, f);
    WeightMap trans = packed;
    transcode_gguf_blocks(trans);
    EXPECT_TRUE(trans.contains("model.layers.0.mlp.up_proj.scales")) << f;
    auto a = build_model(c, packed);
    auto b = build_model(c, trans);
    EXPECT_LT(rel_err(last_logits(*b, prompt), last_logits(*a, prompt)), 2e-2) << f;
  }
}

// q4_k: GGUF Q4_K blocks as a device load gives them (MLX affine 4-bit g32, f32 scales and
// biases, the Q4_K marker): 6 bits a weight; rows must be whole 256-value blocks.
TEST(Synthetic, Q4_KIsMlxAffineOfGroup32) {
  ModelConfig c = synthetic_config("qwen3-0.6b", "q4_k", 1);
  WeightMap w = synthetic_weights(c, "q4_k");
  const Tensor& s = w.get("model.layers.0.mlp.down_proj.scales");
  EXPECT_EQ(s.dtype(), DType::f32);
  EXPECT_EQ(s.shape(), (Shape{c.hidden_size, c.intermediate_size / 32}));
  EXPECT_EQ(w.get("model.layers.0.mlp.down_proj.weight").shape(), (Shape{c.hidden_size, c.intermediate_size / 8}));
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t params = V * H + 3 * H * I + H * (c.num_attention_heads + 2 * c.num_key_value_heads) * 128 +
                         c.num_attention_heads * 128 * H;
  EXPECT_NEAR(double(decode_weight_bytes(w, c)) * 8 / double(params), 6.0, 0.05);
  auto m = build_model(c, w);
  std::vector<float> l = last_logits(*m, {1, 5, 9, 300, 7});
  ASSERT_EQ(l.size(), size_t(V));
  for (float v : l) ASSERT_TRUE(std::isfinite(v));
  EXPECT_THROW(synthetic_weights(synthetic_config("tiny", "q4_k"), "q4_k"), Error);  // hidden 64
}

TEST(Synthetic, PresetsAndErrors) {
  for (const std::string& p : synthetic_presets()) {
    ModelConfig c = synthetic_config(p, "q4", 2);
    EXPECT_EQ(c.num_hidden_layers, 2) << p;
    ASSERT_TRUE(c.quantization.has_value()) << p;
  }
  ModelConfig l8 = synthetic_config("llama-3.1-8b", "bf16");
  EXPECT_EQ(l8.hidden_size, 4096);
  EXPECT_EQ(l8.num_hidden_layers, 32);
  EXPECT_FALSE(l8.tie_word_embeddings);
  EXPECT_THROW(synthetic_config("gpt-9", "bf16"), Error);
  EXPECT_THROW(synthetic_config("tiny", "q3"), Error);
}

TEST(CopyInPlace, SlicesAndErrors) {
  Tensor t = Tensor::from_f32({3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor dst = t.slice(0, 2, 3);
  ops::copy_(dst, t.slice(0, 0, 1));
  EXPECT_EQ(t.to_f32_vector(), (std::vector<float>{1, 2, 3, 4, 1, 2}));
  Tensor wrong = Tensor::from_f32({2}, {0, 0});
  EXPECT_THROW(ops::copy_(wrong, Tensor::from_f32({3}, {1, 2, 3})), Error);
}

}  // namespace
}  // namespace mlxcel
