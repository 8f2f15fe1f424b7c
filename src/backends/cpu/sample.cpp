// Token sampling over rows of logits (ops/sample.h): the reference the CUDA kernel
// (backends/cuda/sample.cu) follows step by step. Per row:
//   1. m = max logit; temperature <= 0: argmax (lowest id on ties).
//   2. top-k: the k largest logits, ties at the k-th value to the lower ids.
//   3. e_i = exp((l_i - m) / T) over them, Z = sum e_i.
//   4. min-p: e_i >= min_p (p_i >= min_p * p_max).
//   5. top-p: the largest threshold t with mass(l_i >= t) >= top_p * Z among the tokens
//      left (all of them tie-included); none when their mass is below it.
//   6. The token at u * (kept mass), the kept tokens walked in id order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cpu/parallel.h"

namespace mlxcel::cpu {

namespace {

int32_t sample_row(const float* l, int64_t V, const SampleRow& p) {
  int64_t best = 0;
  for (int64_t i = 1; i < V; ++i)
    if (l[i] > l[best]) best = i;
  if (p.temperature <= 0.0f) return int32_t(best);
  const float m = l[best];
  // 2. top-k: the k-th largest key, and how many of the tied ones (lowest ids) are in.
  std::vector<uint8_t> in(size_t(V), 1);
  if (p.top_k > 0 && p.top_k < V) {
    std::vector<uint32_t> keys(static_cast<size_t>(V));
    for (int64_t i = 0; i < V; ++i) keys[size_t(i)] = float_key(l[i]);
    std::vector<uint32_t> sorted = keys;
    std::nth_element(sorted.begin(), sorted.begin() + (p.top_k - 1), sorted.end(), std::greater<uint32_t>());
    const uint32_t tk = sorted[size_t(p.top_k - 1)];
    int64_t above = 0;
    for (uint32_t k : keys) above += k > tk;
    int64_t ties_left = p.top_k - above;
    for (int64_t i = 0; i < V; ++i) {
      const uint32_t k = keys[size_t(i)];
      in[size_t(i)] = k > tk || (k == tk && ties_left-- > 0);
    }
  }
  // 3-4. weights, min-p.
  std::vector<float> e(size_t(V), 0.0f);
  const float inv_t = 1.0f / p.temperature;
  double z = 0.0;
  for (int64_t i = 0; i < V; ++i)
    if (in[size_t(i)]) z += e[size_t(i)] = std::exp((l[i] - m) * inv_t);
  if (p.min_p > 0.0f)
    for (int64_t i = 0; i < V; ++i)
      if (in[size_t(i)] && e[size_t(i)] < p.min_p) in[size_t(i)] = 0;
  // 5. top-p threshold.
  if (p.top_p < 1.0f) {
    std::vector<int64_t> order;
    for (int64_t i = 0; i < V; ++i)
      if (in[size_t(i)]) order.push_back(i);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    const double target = double(p.top_p) * z;
    double acc = 0.0;
    for (size_t j = 0; j < order.size(); ++j) {
      acc += e[size_t(order[j])];
      if (acc >= target) {
        const float t = l[order[j]];
        for (size_t r = j + 1; r < order.size(); ++r)
          if (l[order[r]] < t) in[size_t(order[r])] = 0;
        break;
      }
    }
  }
  // 6. the draw, in id order.
  double total = 0.0;
  int64_t last = best;
  for (int64_t i = 0; i < V; ++i)
    if (in[size_t(i)]) total += e[size_t(i)], last = i;
  const double r = double(p.u) * total;
  double acc = 0.0;
  for (int64_t i = 0; i < V; ++i) {
    if (!in[size_t(i)]) continue;
    acc += e[size_t(i)];
    if (r < acc) return int32_t(i);
  }
  return int32_t(last);
}

}  // namespace

void sample(const Tensor& logits, const SampleRow* rows, Tensor& out) {
  const int64_t V = logits.dim(-1);
  const int64_t R = V ? logits.numel() / V : 0;
  const float* x = logits.data<float>();
  int32_t* o = out.data<int32_t>();
  parallel_for(R, V * 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) o[r] = sample_row(x + r * V, V, rows[r]);
  });
}

}  // namespace mlxcel::cpu
