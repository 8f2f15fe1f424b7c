// Per-token log-probabilities that a request may ask the sampler for (OpenAI `logprobs`
// / `top_logprobs`): the log-softmax of the model's raw logits for the chosen token and
// the most likely alternatives. Only requests with SamplingParams::logprobs >= 0 pay.
#pragma once

#include <vector>

namespace mlxcel {

struct TokenLogprob {
  int token = -1;
  float logprob = 0.0f;
};

// One generated token: its own log-probability and the top-n alternatives, most
// likely first (ties: lower id first). `top` may or may not contain the chosen token.
struct TokenLogprobs {
  int token = -1;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;
};

}  // namespace mlxcel
