#include "engine/model_runner.h"

#include <algorithm>

#include "base/error.h"
#include "ops/ops.h"

namespace mlxcel {

ModelRunner::ModelRunner(Model& model, int n_blocks, int block_size, DType kv_dtype, int max_model_len)
    : model_(model),
      cache_(model.make_cache(n_blocks + (DecodeGraphs::supported(model) ? 1 : 0), block_size, kv_dtype)),
      n_blocks_(n_blocks) {
  if (cache_.n_blocks > n_blocks) {  // graphs possible: the extra block is the padding rows'
    const int tokens = max_model_len > 0 ? max_model_len : n_blocks * block_size;
    const int max_width = std::min(n_blocks, (tokens + block_size - 1) / block_size);
    graphs_ = std::make_unique<DecodeGraphs>(block_size, /*pad_block=*/n_blocks, max_width);
  }
}

Batch ModelRunner::build_batch(std::span<const ScheduledSeq* const> seqs) const {
  MLXCEL_CHECK(!seqs.empty(), "empty step");
  const int bs = cache_.block_size;
  int n_tokens = 0;
  size_t max_blocks = 1;
  for (const auto* s : seqs) {
    n_tokens += int(s->token_ids.size());
    max_blocks = std::max(max_blocks, s->block_table.size());
  }
  std::vector<int32_t> ids, pos, slots, q_start{0}, kv_len, rows;
  ids.reserve(n_tokens), pos.reserve(n_tokens), slots.reserve(n_tokens);
  // NOTE: padding entries point at block 0; attention never reads past kv_len.
  std::vector<int32_t> table(seqs.size() * max_blocks, 0);
  int64_t max_position = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const ScheduledSeq& s = *seqs[i];
    const int n = int(s.token_ids.size());
    MLXCEL_CHECK(n > 0, "request {} scheduled with no tokens", s.id);
    const int end = s.start + n;
    MLXCEL_CHECK(int(s.block_table.size()) * bs >= end, "request {}: {} blocks cannot hold {} tokens", s.id,
                 s.block_table.size(), end);
    std::copy(s.block_table.begin(), s.block_table.end(), table.begin() + i * max_blocks);
    for (int j = 0; j < n; ++j) {
      const int p = s.start + j;
      ids.push_back(s.token_ids[j]);
      pos.push_back(p);
      slots.push_back(s.block_table[p / bs] * bs + p % bs);
    }
    q_start.push_back(q_start.back() + n);
    kv_len.push_back(end);
    if (s.sample) rows.push_back(q_start.back() - 1);
    max_position = std::max<int64_t>(max_position, end - 1);
  }
  // NOTE: a step of prompt chunks only needs no logits, but forward's LM head does not
  // take 0 rows (gemv with 0 rows); one extra row is cheap and its logits are ignored.
  if (rows.empty()) rows.push_back(n_tokens - 1);
  const int n_seqs = int(seqs.size());
  Batch b;
  b.token_ids = Tensor::from_i32({n_tokens}, ids);
  b.positions = Tensor::from_i32({n_tokens}, pos);
  b.max_position = max_position;
  b.attn.q_start = Tensor::from_i32({n_seqs + 1}, q_start);
  b.attn.kv_len = Tensor::from_i32({n_seqs}, kv_len);
  b.attn.block_table = Tensor::from_i32({n_seqs, int64_t(max_blocks)}, table);
  b.attn.slot_mapping = Tensor::from_i32({n_tokens}, slots);
  b.attn.block_size = bs;
  b.logit_rows = Tensor::from_i32({int64_t(rows.size())}, rows);
  return b;
}

Tensor ModelRunner::execute(std::span<const ScheduledSeq* const> seqs) {
  if (graphs_ && graphs_on_ && !graphs_->disabled() && !seqs.empty()) {
    bool decode_only = true;
    for (const auto* s : seqs) decode_only = decode_only && s->token_ids.size() == 1 && s->sample;
    if (decode_only) {
      std::vector<DecodeRow> rows;
      rows.reserve(seqs.size());
      // (DecodeGraphs::run checks that each table covers its position.)
      for (const auto* s : seqs) rows.push_back({s->token_ids[0], s->start, std::span<const int32_t>(s->block_table)});
      Tensor logits = graphs_->run(model_, cache_, rows);
      if (logits.defined()) return logits;
    }
  }
  Batch b = build_batch(seqs);
  return model_.forward(b, cache_);
}

Tensor ModelRunner::execute(const std::vector<ScheduledSeq>& seqs) {
  std::vector<const ScheduledSeq*> ptrs;
  for (const auto& s : seqs) ptrs.push_back(&s);
  return execute(ptrs);
}

void ModelRunner::copy_blocks(const std::vector<BlockCopy>& copies) {
  if (copies.empty()) return;
  for (const auto& c : copies) {
    MLXCEL_CHECK(c.src >= 0 && c.src < n_blocks_ && c.dst >= 0 && c.dst < n_blocks_,
                 "block copy {} -> {} out of range", c.src, c.dst);
    for (auto* layers : {&cache_.k, &cache_.v}) {
      for (Tensor& t : *layers) {
        Tensor dst = t.slice(0, c.dst, c.dst + 1);
        ops::copy_(dst, t.slice(0, c.src, c.src + 1));
      }
    }
  }
}

}  // namespace mlxcel
