// Token sampling for one row of logits: penalties, temperature, top-k, top-p, min-p,
// seeded. temperature <= 0 is greedy (argmax, lowest id on ties).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace mlxcel {

struct SamplingParams {
  float temperature = 0.0f;
  int top_k = 0;               // 0: off
  float top_p = 1.0f;          // 1: off
  float min_p = 0.0f;          // 0: off
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint64_t seed = 0;
  // Validates ranges; throws Error(invalid_request) naming the field.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // Picks a token from logits [vocab]; `history` is every token so far (prompt and
  // generated) for the penalties. Modifies nothing outside.
  int sample(const float* logits, int vocab, const std::vector<int>& history);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<float> work_;
  std::vector<int> idx_;
};

}  // namespace mlxcel
