// rope_frequencies and ops::rope against values recorded from transformers.
//
// rope_reference.inc holds, for each scaling type, the inverse frequencies,
// attention scaling, cos and rotated outputs that transformers 5.17 (torch 2.11,
// CPU) produced; tests/ops/gen_rope_reference.py wrote it on the GPU machine.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "test_util.h"

namespace mlxcel {
namespace {

using optest::expect_error;

struct RopeCase {
  const char* name;
  RopeConfig cfg;
  int64_t seq_len;
  int rot;
  std::vector<int32_t> positions;
  std::vector<float> inv_freq;
  float attention_scaling;
  std::vector<float> cos;  // [T, rot]
  std::vector<float> y;    // [T, H, D]
};

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"  // RopeConfig{.type = ...} lists set fields only
const RopeCase kCases[] = {
#include "rope_reference.inc"
};
#pragma GCC diagnostic pop

constexpr int kHeads = 2;

// The generator's input: x[t][h][d], exact in f32.
float x_value(int t, int h, int d) { return float(((t * 131 + h * 17 + d * 7) % 97) - 48) / 16.0f; }

TEST(RopeFrequencies, MatchTransformers) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    RopeParams p = rope_frequencies(c.cfg, c.seq_len);
    EXPECT_EQ(p.rotary_dim, c.rot);
    EXPECT_EQ(p.interleaved, c.cfg.interleaved);
    EXPECT_FLOAT_EQ(p.attention_scaling, c.attention_scaling);
    auto inv = p.inv_freq.to_f32_vector();
    ASSERT_EQ(inv.size(), c.inv_freq.size());
    double worst = 0;
    for (size_t i = 0; i < inv.size(); ++i) {
      EXPECT_NEAR(inv[i], c.inv_freq[i], 2.5e-7 * std::fabs(c.inv_freq[i])) << "inv_freq[" << i << "]";
      if (c.inv_freq[i] != 0) worst = std::max(worst, std::fabs(double(inv[i]) / c.inv_freq[i] - 1.0));
    }
    RecordProperty(std::string(c.name) + "_max_rel_err", std::to_string(worst));
    if (std::getenv("MLXCEL_VERBOSE")) std::printf("%-16s max rel err %.3g\n", c.name, worst);
  }
}

TEST(Rope, MatchesTransformersOutputs) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    const int T = int(c.positions.size()), D = c.cfg.head_dim;
    std::vector<float> xv;
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < kHeads; ++h)
        for (int d = 0; d < D; ++d) xv.push_back(x_value(t, h, d));
    RopeParams p = rope_frequencies(c.cfg, c.seq_len);
    Tensor y = ops::rope(Tensor::from_f32({T, kHeads, D}, xv), Tensor::from_i32({T}, c.positions), p);
    // |x| <= 3, angles up to ~1e4 rad: f32 cos/sin of the same f32 angle agree to ~1 ulp.
    optest::expect_close(y, c.y, 3e-6f, 1e-6f, c.name);
    // Features past rotary_dim are untouched.
    auto yv = y.to_f32_vector();
    for (size_t i = 0; i < xv.size(); ++i) {
      if (int(i % size_t(D)) >= c.rot) {
        EXPECT_EQ(yv[i], xv[i]);
      }
    }
  }
}

TEST(Rope, CosSinAtLargePositionsUseF32Angles) {
  // The cos table from transformers at the recorded positions, rebuilt from our
  // frequencies with the f32 product, and applied to unit vectors.
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    if (c.cfg.interleaved) continue;
    RopeParams p = rope_frequencies(c.cfg, c.seq_len);
    const int T = int(c.positions.size()), D = c.cfg.head_dim, half = c.rot / 2;
    std::vector<float> xv(size_t(T * D), 0.0f);
    for (int t = 0; t < T; ++t) xv[size_t(t * D + t % half)] = 1.0f;  // e_i: output[i] = cos_i
    auto yv = ops::rope(Tensor::from_f32({T, 1, D}, xv), Tensor::from_i32({T}, c.positions), p).to_f32_vector();
    for (int t = 0; t < T; ++t) EXPECT_NEAR(yv[size_t(t * D + t % half)], c.cos[size_t(t * c.rot + t % half)], 3e-7);
  }
}

TEST(Rope, InterleavedPairsAndScaling) {
  // GPT-J pairs (2i, 2i + 1) against a direct formula, with attention scaling.
  RopeParams p;
  p.rotary_dim = 6;
  p.interleaved = true;
  p.attention_scaling = 1.5f;
  p.inv_freq = Tensor::from_f32({3}, {1.0f, 0.1f, 0.01f});
  const int D = 8;
  auto xv = optest::rand_vec(2 * 3 * D, 3);
  std::vector<int32_t> pos = {7, 1234};
  auto y = ops::rope(Tensor::from_f32({2, 3, D}, xv), Tensor::from_i32({2}, pos), p).to_f32_vector();
  std::vector<float> want = xv;
  for (int t = 0; t < 2; ++t)
    for (int h = 0; h < 3; ++h)
      for (int i = 0; i < 3; ++i) {
        const float a = float(pos[size_t(t)]) * p.inv_freq.data<float>()[i];
        const double c = std::cos(double(a)) * 1.5, s = std::sin(double(a)) * 1.5;
        const size_t o = size_t((t * 3 + h) * D + 2 * i);
        want[o] = float(xv[o] * c - xv[o + 1] * s);
        want[o + 1] = float(xv[o + 1] * c + xv[o] * s);
      }
  optest::expect_close(y, want, 1e-6f, 1e-6f);
}

TEST(RopeFrequencies, ProportionalAndErrors) {
  RopeConfig c;
  c.type = "proportional";
  c.head_dim = 16;
  c.rotary_dim = 8;  // partial_rotary_factor 0.5
  c.theta = 10000.0;
  RopeParams p = rope_frequencies(c, 1);
  EXPECT_EQ(p.rotary_dim, 16);
  auto inv = p.inv_freq.to_f32_vector();
  ASSERT_EQ(inv.size(), 8u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(inv[size_t(i)], 1.0 / std::pow(10000.0, 2.0 * i / 16.0), 1e-7);
  for (int i = 4; i < 8; ++i) EXPECT_EQ(inv[size_t(i)], 0.0f);

  RopeConfig bad;
  bad.head_dim = 16;
  bad.type = "mystery";
  expect_error([&] { rope_frequencies(bad, 1); }, ErrorKind::unsupported, "mystery");
  bad.type = "default";
  bad.rotary_dim = 7;
  expect_error([&] { rope_frequencies(bad, 1); }, ErrorKind::invalid_request, "rotary_dim");
  bad.rotary_dim = 0;
  bad.head_dim = 0;
  expect_error([&] { rope_frequencies(bad, 1); }, ErrorKind::invalid_request, "head_dim");
  bad.head_dim = 16;
  bad.type = "longrope";
  bad.original_max_position = 100;
  bad.short_factor = {1.0};
  expect_error([&] { rope_frequencies(bad, 1); }, ErrorKind::invalid_request, "longrope");

  RopeConfig plain;
  plain.head_dim = 16;
  RopeParams ok = rope_frequencies(plain, 1);
  Tensor x = optest::rand_f32({3, 2, 16}, 1);
  expect_error([&] { ops::rope(x, Tensor::from_i32({2}, {0, 1}), ok); }, ErrorKind::invalid_request, "[rope]");
  expect_error([&] { ops::rope(optest::rand_f32({3, 2, 14}, 1), Tensor::from_i32({3}, {0, 1, 2}), ok); },
               ErrorKind::invalid_request, "[rope]");
  expect_error([&] { ops::rope(x.reshape({6, 16}), Tensor::from_i32({6}, {0, 1, 2, 3, 4, 5}), ok); },
               ErrorKind::invalid_request, "[rope]");
}

}  // namespace
}  // namespace mlxcel
