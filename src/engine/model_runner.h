// ModelRunner: turns a SchedulerOutput into one Batch for Model::forward over a paged
// KvCache that it owns. Attention reads the blocks in place (no gather copy).
//
//   ModelRunner runner(model, /*n_blocks=*/512, /*block_size=*/16);
//   Tensor logits = runner.execute(out.seqs);   // f32 [n sampling seqs, vocab]
#pragma once

#include <span>
#include <vector>

#include "engine/scheduler.h"
#include "models/model.h"

namespace mlxcel {

class ModelRunner {
 public:
  ModelRunner(Model& model, int n_blocks, int block_size, DType kv_dtype = DType::f32);

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

 private:
  Model& model_;
  KvCache cache_;
};

}  // namespace mlxcel
