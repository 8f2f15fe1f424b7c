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
  // Feeds one token; returns its logits [1, vocab] (on the host).
  Tensor decode(int token);
  // Feeds one token; returns the argmax of its logits (lowest id on ties). On a GPU the
  // argmax runs there and only the id comes back (no copy of the vocabulary's logits).
  int decode_greedy(int token);
  // Prompt + up to max_new sampled tokens. on_token returns false to stop early;
  // generation also stops after a token in stop_ids (which is included). On a GPU, a
  // sampler that needs only temperature / top-k / top-p / min-p samples there
  // (ops::sample, only the id comes back; Sampler::device_row's draw, so a seed is
  // reproducible on the device but picks other tokens than the host sampler), and plain
  // greedy decoding takes the argmax there (the host's token, ties to the lowest id).
  // Device-picked tokens decode with the next step queued before the host reads the
  // token (replayed graphs take it from the device), so on_token runs while the device
  // computes the next step; a stop discards that step.
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
  // The argmax of one row of logits on their device; only the id comes back.
  static int device_argmax(const Tensor& logits);
  // A decode step whose token is ids[0] on the device (the step before it picked it),
  // replayed from a graph and queued without waiting; the logits stay on the device.
  // Undefined (nothing queued) where graphs cannot serve the model.
  Tensor step_queued(const Tensor& ids);

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
