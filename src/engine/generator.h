// Single-sequence generation on top of Model::forward: the CLI's path until the
// batching engine lands (it will use the same step API). The cache is one
// sequence's run of consecutive blocks.
//
//   Generator gen(*model, /*max_context=*/4096);
//   auto ids = gen.generate(prompt, 32, params, [](int id) { return true; });
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "engine/decode_graphs.h"
#include "engine/sampler.h"
#include "models/model.h"
#include "ops/ops.h"

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
  // generation also stops after a token in stop_ids (which is included). On a GPU, a
  // sampler that needs only temperature / top-k / top-p / min-p samples there
  // (ops::sample, only the id comes back; Sampler::device_row's draw, so a seed is
  // reproducible on the device but picks other tokens than the host sampler).
  std::vector<int> generate(const std::vector<int>& prompt, int max_new, const SamplingParams& params,
                            const std::function<bool(int)>& on_token = nullptr,
                            const std::vector<int>& stop_ids = {});
  void reset() { n_past_ = 0; }
  int n_past() const { return n_past_; }
  // Decode steps on CUDA replay a recorded graph of the step (one launch instead of
  // hundreds; the first decode step runs unrecorded, the second records it), where it
  // applies: a CUDA model whose RoPE frequencies do not depend on the position
  // (engine/decode_graphs.h).
  // On by default (verified by test_cuda_models' GraphDecodeMatchesPlainDecode on the
  // H200: bit-identical logits); MLXCEL_CUDA_GRAPHS=0 or set_graphs(false) turns it off.
  void set_graphs(bool on) { graphs_ = on; }
  bool graph_recorded() const { return decode_graphs_.n_recorded() > 0; }

 private:
  // keep_on_device: the logits stay where the model runs (generate's device sampling).
  Tensor step(const std::vector<int>& tokens, bool all_logits, bool keep_on_device = false);

  Model& model_;
  int max_context_;
  int block_size_;
  KvCache cache_;
  Tensor block_table_;
  int n_past_ = 0;
  bool graphs_ = DecodeGraphs::enabled_by_default();
  DecodeGraphs decode_graphs_;
};

}  // namespace mlxcel
