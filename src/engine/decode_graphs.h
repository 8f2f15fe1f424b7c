// Decode steps (one new token for each sequence) replayed from recorded CUDA graphs.
//
// A graph holds the shapes it was recorded with, so steps are bucketed: the rows are
// padded up to a bucket size (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, ...) and the block
// tables up to a power-of-two width, and one graph is kept per (rows, width). A padding
// row reads token 0 at position 0, writes its K/V into a cache block that no sequence
// owns (`pad_block`) and attends to that one slot, so it cannot disturb a real sequence.
// The inputs of a step (ids, positions, slots, KV lengths, row offsets, block tables) go
// to the device in one copy into the graph's own buffer; the logits come back in the
// graph's output buffer.
//
// The first step of a bucket runs the padded batch without recording (it sizes the
// device's scratch buffers); the second records it; later ones replay it. A step that
// cannot be recorded (an op that must wait for the device, a scratch buffer that would
// grow) turns the graphs off for good and says so by returning an undefined tensor.
//
//   DecodeGraphs graphs(/*block_size=*/16, /*pad_block=*/n_blocks, /*max_width=*/256);
//   Tensor logits = graphs.run(model, cache, rows);   // [rows.size(), vocab] on the device
//   if (!logits.defined()) ... run the step plainly ...
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <utility>

#include "models/model.h"
#include "ops/ops.h"

namespace mlxcel {

struct DecodeRow {
  int token = 0;
  int position = 0;                  // of the new token; kv_len after the step = position + 1
  std::span<const int32_t> blocks;   // the sequence's block table (covers position)
};

class DecodeGraphs {
 public:
  // pad_block < 0: no padding row may be added (the row count must be a bucket size by
  // itself, as for the single-sequence Generator: 1 row). Block tables are padded to a
  // power of two between min_width and max_width (attention plans its key splits from
  // the width, so a fixed width gives the splits of a plain step of that width).
  DecodeGraphs(int block_size, int pad_block, int max_width, int min_width = 1);

  // Whether graphs can serve this model: on a CUDA device, with RoPE frequencies that do
  // not depend on the step's positions. MLXCEL_CUDA_GRAPHS=0 turns them off everywhere.
  static bool supported(const Model& model);
  static bool enabled_by_default();

  // The step's logits f32 [rows.size(), vocab] on the model's device (a view of the
  // graph's buffer: read it before the next run of the same bucket), or an undefined
  // tensor when this step could not be recorded (graphs are then off). device_tokens
  // (i32 [rows.size()] on the model's device): the rows' token ids are taken from it, in
  // stream order, instead of DecodeRow::token (a step queued before the host has seen the
  // token the step before it picked).
  Tensor run(Model& model, KvCache& cache, std::span<const DecodeRow> rows, const Tensor* device_tokens = nullptr);

  bool disabled() const { return disabled_; }
  int n_recorded() const;  // graphs held now
  // Padded sizes (exposed for tests).
  static int bucket_rows(int n);
  static int bucket_width(int blocks, int min_width, int max_width);

 private:
  struct Entry {
    bool warm = false;
    std::unique_ptr<ops::DeviceGraph> graph;  // declared first: outlives the buffers below
    Tensor io, logits;
  };
  int block_size_, pad_block_, max_width_, min_width_;
  bool disabled_ = false;
  std::map<std::pair<int, int>, Entry> entries_;  // (rows, width)
};

}  // namespace mlxcel
