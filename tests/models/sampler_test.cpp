#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "base/error.h"

namespace mlxcel {
namespace {

TEST(Sampler, GreedyPicksArgmaxLowestOnTies) {
  Sampler s({});
  std::vector<float> l = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(s.sample(l.data(), 4, {}), 1);
}

TEST(Sampler, SeededSamplingIsReproducible) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 1234;
  std::vector<float> l = {1.0f, 1.1f, 0.9f, 1.05f, 0.5f};
  Sampler a(p), b(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.sample(l.data(), 5, {}), b.sample(l.data(), 5, {}));
}

TEST(Sampler, TopKOneIsGreedyAndTopPRestricts) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 1;
  std::vector<float> l = {0.0f, 2.0f, 1.0f};
  Sampler s(p);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(l.data(), 3, {}), 1);
  p.top_k = 0;
  p.top_p = 0.5f;  // token 1 has p ~ 0.66 alone
  Sampler t(p);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(t.sample(l.data(), 3, {}), 1);
}

TEST(Sampler, DistributionFollowsSoftmax) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 7;
  std::vector<float> l = {0.0f, std::log(3.0f)};  // p = 0.25, 0.75
  Sampler s(p);
  int ones = 0;
  for (int i = 0; i < 20000; ++i) ones += s.sample(l.data(), 2, {});
  EXPECT_NEAR(ones / 20000.0, 0.75, 0.02);
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0.5f;
  std::vector<float> l = {5.0f, 0.0f, 0.0f, 0.0f};
  Sampler s(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(l.data(), 4, {}), 0);
}

TEST(Sampler, PenaltiesChangeGreedyChoice) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  std::vector<float> l = {2.0f, 1.5f};
  EXPECT_EQ(Sampler(p).sample(l.data(), 2, {0}), 1);  // 2.0 / 2 = 1.0 < 1.5
  SamplingParams q;
  q.frequency_penalty = 0.3f;
  EXPECT_EQ(Sampler(q).sample(l.data(), 2, {0, 0}), 1);  // 2.0 - 0.6 < 1.5
  EXPECT_EQ(Sampler(q).sample(l.data(), 2, {0}), 0);     // 2.0 - 0.3 > 1.5
}

TEST(Sampler, RejectsBadParameters) {
  SamplingParams p;
  p.top_p = 0.0f;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.temperature = -1.0f;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.min_p = 2.0f;
  EXPECT_THROW(Sampler{p}, Error);
}

// The O(n) order the sampler uses for the whole vocabulary is std::sort's order under
// (value descending, lower index first): ties, +0 / -0, infinities, denormals, 152K entries.
TEST(Sampler, RadixOrderIsTheComparisonSortOrder) {
  std::mt19937 g(5);
  for (int n : {0, 1, 2, 7, 1000, 151936}) {
    std::vector<float> v(static_cast<size_t>(n));
    std::uniform_int_distribution<int> pick(0, 9);
    std::normal_distribution<float> nd(0.0f, 4.0f);
    for (auto& x : v) {
      switch (pick(g)) {
        case 0: x = 0.0f; break;
        case 1: x = -0.0f; break;
        case 2: x = -std::numeric_limits<float>::infinity(); break;
        case 3: x = std::numeric_limits<float>::infinity(); break;
        case 4: x = 1e-40f * float(pick(g) - 5); break;  // denormals of both signs
        case 5: x = float(pick(g)) - 4.5f; break;        // many exact ties
        default: x = nd(g);
      }
    }
    std::vector<int> want(static_cast<size_t>(n));
    std::iota(want.begin(), want.end(), 0);
    std::sort(want.begin(), want.end(), [&](int a, int b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
    std::vector<int> got, it;
    std::vector<uint32_t> k, kt;
    order_by_value_desc(v.data(), n, got, it, k, kt);
    EXPECT_EQ(got, want) << "n " << n;
  }
}


}  // namespace
}  // namespace mlxcel
