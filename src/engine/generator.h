// Single-sequence generation on top of Model::forward: the CLI's path until the
// batching engine lands (it will use the same step API). The cache is one
// sequence's run of consecutive blocks.
//
//   Generator gen(*model, /*max_context=*/4096);
//   auto ids = gen.generate(prompt, 32, params, [](int id) { return true; });
#pragma once

#include <functional>
#include <vector>

#include "engine/sampler.h"
#include "models/model.h"

namespace mlxcel {

class Generator {
 public:
  Generator(Model& model, int max_context, int block_size = 16, DType kv_dtype = DType::f32);

  // Runs the prompt through the model; returns logits f32 [prompt.size(), vocab] for
  // every position when all_logits, else only for the last one.
  Tensor prefill(const std::vector<int>& prompt, bool all_logits = false);
  // Feeds one token; returns its logits [1, vocab].
  Tensor decode(int token);
  // Prompt + up to max_new sampled tokens. on_token returns false to stop early;
  // generation also stops after a token in stop_ids (which is included).
  std::vector<int> generate(const std::vector<int>& prompt, int max_new, const SamplingParams& params,
                            const std::function<bool(int)>& on_token = nullptr,
                            const std::vector<int>& stop_ids = {});
  void reset() { n_past_ = 0; }
  int n_past() const { return n_past_; }

 private:
  Tensor step(const std::vector<int>& tokens, bool all_logits);

  Model& model_;
  int max_context_;
  int block_size_;
  KvCache cache_;
  Tensor block_table_;
  int n_past_ = 0;
};

}  // namespace mlxcel
