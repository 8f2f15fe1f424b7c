// ModelRunner: turns a SchedulerOutput into one Batch for Model::forward over a paged
// KvCache that it owns. Attention reads the blocks in place (no gather copy). On CUDA,
// steps that only decode (one token per sequence, every one sampled) replay recorded
// graphs bucketed by batch size (engine/decode_graphs.h); the cache then holds one more
// block than asked for, which the padding rows of those steps write.
//
//   ModelRunner runner(model, /*n_blocks=*/512, /*block_size=*/16);
//   Tensor logits = runner.execute(out.seqs);   // f32 [n sampling seqs, vocab]
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "engine/decode_graphs.h"
#include "engine/scheduler.h"
#include "models/model.h"

namespace mlxcel {

class ModelRunner {
 public:
  // max_model_len bounds the block tables of graph-replayed steps (0: n_blocks' tokens).
  ModelRunner(Model& model, int n_blocks, int block_size, DType kv_dtype = DType::f32, int max_model_len = 0);

  // The flat batch of seqs: their new tokens back to back, positions start.., slots
  // from their block tables, and one logit row (the last) per sampling seq.
  Batch build_batch(std::span<const ScheduledSeq* const> seqs) const;
  // Runs the forward; logits f32 [R, vocab] (on the model's device) whose first rows are
  // the seqs with sample, in seqs order (a step with none has one extra row, to be ignored).
  Tensor execute(std::span<const ScheduledSeq* const> seqs);
  Tensor execute(const std::vector<ScheduledSeq>& seqs);
  // Copies whole blocks (every layer's K and V) for copy-on-write.
  void copy_blocks(const std::vector<BlockCopy>& copies);

  Model& model() { return model_; }
  KvCache& cache() { return cache_; }
  // Decode steps from recorded graphs (on by default where DecodeGraphs::supported;
  // MLXCEL_CUDA_GRAPHS=0 turns them off).
  void set_graphs(bool on) { graphs_on_ = on; }
  int graphs_recorded() const { return graphs_ ? graphs_->n_recorded() : 0; }

 private:
  Model& model_;
  KvCache cache_;
  int n_blocks_;  // the blocks the pool hands out; cache_ may hold one more (padding)
  bool graphs_on_ = DecodeGraphs::enabled_by_default();
  std::unique_ptr<DecodeGraphs> graphs_;
};

}  // namespace mlxcel
