// Token sampling for one row of logits: logit bias, penalties, temperature, top-k, top-p,
// min-p, seeded. temperature <= 0 is greedy (argmax, lowest id on ties). On request it
// also reports log-probabilities (engine/logprobs.h) of the model's raw distribution:
// the log-softmax of the logits before bias, penalties and temperature (as vLLM's
// default `raw_logprobs`).
#pragma once

#include "backends/cpu/kernels.h"

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "engine/logprobs.h"

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
  // Added to the logit of a token id before the penalties and sampling (OpenAI
  // `logit_bias`); each bias in [-100, 100]. Ids are checked against the vocabulary by
  // Engine::validate.
  std::vector<std::pair<int, float>> logit_bias;
  // -1: off. n in [0, 20]: report the chosen token's log-probability and the n most
  // likely tokens for every sampled token.
  int logprobs = -1;
  // Validates ranges; throws Error(invalid_request) naming the field.
  void validate() const;
};

// Whether the engine and Generator sample on a GPU when they can (Sampler::device_row);
// MLXCEL_DEVICE_SAMPLING=0 keeps the host sampler (for measurements).
bool device_sampling_enabled();

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // Picks a token from logits [vocab]; `history` is every token so far (prompt and
  // generated) for the penalties. Modifies nothing outside.
  // With `lp` and logprobs >= 0 also fills *lp for the chosen token.
  int sample(const float* logits, int vocab, const std::vector<int>& history, TokenLogprobs* lp = nullptr);
  bool wants_logprobs() const { return p_.logprobs >= 0; }
  // Nothing that needs the host (no bias, penalties or logprobs): the device's sampler
  // (ops/sample.h) can take the row, with device_row() as its parameters.
  bool device_sampleable() const {
    return p_.repetition_penalty == 1.0f && p_.presence_penalty == 0.0f && p_.frequency_penalty == 0.0f &&
           p_.logit_bias.empty() && p_.logprobs < 0;
  }
  // The row for ops::sample: the filters and a uniform draw from this sampler's generator
  // (one draw per token, as sample() takes).
  cpu::SampleRow device_row();
  // Greedy with nothing that changes the argmax or needs the distribution (no bias,
  // penalties or logprobs): the token is argmax(logits), lowest id on ties, so the
  // device may pick it.
  bool plain_greedy() const { return p_.temperature <= 0.0f && device_sampleable(); }

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<float> work_;
  std::vector<int> idx_, idx_tmp_;
  std::vector<uint32_t> keys_, keys_tmp_;
  int sample_token(const float* logits, int vocab, const std::vector<int>& history);
  void fill_logprobs(const float* logits, int vocab, int token, TokenLogprobs& out);
};

// idx = 0..n-1 ordered by v descending, lower index first on ties (+0 and -0 tie), the
// order std::sort gives with that comparison, in O(n): a stable LSD radix sort on the
// float bits (3 passes of 11 bits). The scratch vectors are reused between calls.
void order_by_value_desc(const float* v, int n, std::vector<int>& idx, std::vector<int>& idx_tmp,
                         std::vector<uint32_t>& keys, std::vector<uint32_t>& keys_tmp);

}  // namespace mlxcel
