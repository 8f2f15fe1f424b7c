// ops::sample on the CPU (the reference the CUDA kernel follows; tests/gpu checks the
// kernel against it): the filters keep exactly the tokens engine/sampler.h keeps, the
// draw follows their probabilities, and bad rows are errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "base/error.h"
#include "ops/sample.h"

using namespace mlxcel;

namespace {

Tensor logits_of(const std::vector<std::vector<float>>& rows) {
  std::vector<float> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  return Tensor::from_f32({int64_t(rows.size()), int64_t(rows[0].size())}, flat);
}

std::vector<float> random_row(int64_t V, uint32_t seed, float scale = 3.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(V));
  for (auto& x : v) x = d(g);
  return v;
}

// The kept set, computed the slow way: sort by logit (ties: lower id), top-k, softmax,
// min-p, then the shortest prefix holding top_p (plus ties at its last value).
std::set<int> kept_set(const std::vector<float>& l, const ops::SampleRow& p) {
  std::vector<int> idx(l.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int a, int b) { return l[size_t(a)] > l[size_t(b)] || (l[size_t(a)] == l[size_t(b)] && a < b); });
  if (p.top_k > 0 && size_t(p.top_k) < idx.size()) idx.resize(size_t(p.top_k));
  const double m = l[size_t(idx[0])];
  std::vector<double> e;
  double z = 0;
  for (int i : idx) z += e.emplace_back(std::exp((l[size_t(i)] - m) / p.temperature));
  std::vector<int> keep;
  std::vector<double> ke;
  for (size_t j = 0; j < idx.size(); ++j)
    if (e[j] >= p.min_p) keep.push_back(idx[j]), ke.push_back(e[j]);
  if (p.top_p < 1.0f) {
    double acc = 0;
    for (size_t j = 0; j < keep.size(); ++j) {
      acc += ke[j];
      if (acc >= p.top_p * z) {
        const float t = l[size_t(keep[j])];
        while (keep.size() > j + 1 && l[size_t(keep.back())] < t) keep.pop_back();
        break;
      }
    }
  }
  return std::set<int>(keep.begin(), keep.end());
}

}  // namespace

TEST(OpsSample, ZeroTemperatureAndTopOneAreArgmax) {
  std::vector<float> l = random_row(1000, 1);
  l[17] = l[400] = 50.0f;  // a tie: the lower id
  Tensor x = logits_of({l, l, l});
  Tensor ids = ops::sample(x, {{.temperature = 0.0f}, {.temperature = 2.0f, .top_k = 1, .u = 0.99f},
                               {.temperature = 0.5f, .top_k = 1, .u = 0.0f}});
  for (int r = 0; r < 3; ++r) EXPECT_EQ(ids.data<int32_t>()[r], 17) << r;
}

TEST(OpsSample, FiltersKeepWhatTheSamplerKeeps) {
  const std::vector<ops::SampleRow> filters = {
      {.temperature = 1.0f, .top_k = 40},
      {.temperature = 0.7f, .top_p = 0.9f},
      {.temperature = 1.3f, .min_p = 0.05f},
      {.temperature = 0.8f, .top_k = 100, .top_p = 0.8f, .min_p = 0.02f},
      {.temperature = 5.0f, .top_p = 0.5f},
  };
  for (size_t f = 0; f < filters.size(); ++f) {
    std::vector<float> l = random_row(5000, 10 + uint32_t(f));
    const std::set<int> keep = kept_set(l, filters[f]);
    std::vector<std::vector<float>> rows(200, l);
    std::vector<ops::SampleRow> ps;
    std::set<int> seen;
    for (int i = 0; i < 200; ++i) {
      ops::SampleRow p = filters[f];
      p.u = (float(i) + 0.5f) / 200.0f;
      ps.push_back(p);
    }
    Tensor ids = ops::sample(logits_of(rows), ps);
    for (int i = 0; i < 200; ++i) {
      const int t = ids.data<int32_t>()[i];
      EXPECT_TRUE(keep.count(t)) << "filter " << f << " u " << ps[size_t(i)].u << " token " << t;
      seen.insert(t);
      if (i > 0) EXPECT_GE(t, ids.data<int32_t>()[i - 1]) << "ids in order of u";  // kept tokens walked by id
    }
    EXPECT_GT(seen.size(), 1u) << "filter " << f;
  }
}

TEST(OpsSample, DrawsFollowTheProbabilities) {
  // 8 tokens at temperature 0.7: over an even grid of u the share of each token is its
  // probability, to the grid's resolution.
  const std::vector<float> l = {1.0f, 0.5f, -0.2f, 2.0f, 0.0f, 1.5f, -1.0f, 0.3f};
  const float T = 0.7f;
  const int n = 20000;
  std::vector<ops::SampleRow> ps;
  for (int i = 0; i < n; ++i) ps.push_back({.temperature = T, .u = (float(i) + 0.5f) / float(n)});
  Tensor ids = ops::sample(logits_of(std::vector<std::vector<float>>(size_t(n), l)), ps);
  std::vector<int> count(8, 0);
  for (int i = 0; i < n; ++i) count[size_t(ids.data<int32_t>()[i])]++;
  double z = 0;
  for (float v : l) z += std::exp((v - 2.0) / T);
  for (int t = 0; t < 8; ++t) EXPECT_NEAR(double(count[size_t(t)]) / n, std::exp((l[size_t(t)] - 2.0) / T) / z, 2e-4) << t;
}

TEST(OpsSample, TopKTiesGoToLowerIds) {
  std::vector<float> l(10, 0.0f);
  l[2] = l[5] = l[7] = 1.0f;  // three tied at the top; top_k = 2 keeps ids 2 and 5
  std::vector<ops::SampleRow> ps;
  for (int i = 0; i < 100; ++i) ps.push_back({.temperature = 1.0f, .top_k = 2, .u = float(i) / 100.0f});
  Tensor ids = ops::sample(logits_of(std::vector<std::vector<float>>(100, l)), ps);
  std::set<int> seen;
  for (int i = 0; i < 100; ++i) seen.insert(ids.data<int32_t>()[i]);
  EXPECT_EQ(seen, (std::set<int>{2, 5}));
}

TEST(OpsSample, BadRowsAreErrors) {
  Tensor x = logits_of({{1.0f, 2.0f}});
  EXPECT_THROW(ops::sample(x, {}), Error);
  EXPECT_THROW(ops::sample(x, {{.temperature = 1.0f, .u = 1.0f}}), Error);
  EXPECT_THROW(ops::sample(x, {{.temperature = 1.0f, .top_p = 0.0f}}), Error);
  EXPECT_THROW(ops::sample(x, {{.temperature = 1.0f, .top_k = -1}}), Error);
  EXPECT_THROW(ops::sample(x, {{.temperature = NAN}}), Error);
  EXPECT_THROW(ops::sample(Tensor::from_i32({1, 2}, {1, 2}), {{}}), Error);
}
