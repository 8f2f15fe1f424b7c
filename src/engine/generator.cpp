#include "engine/generator.h"

#include <algorithm>
#include <numeric>

#include "base/error.h"

namespace mlxcel {

Generator::Generator(Model& model, int max_context, int block_size, DType kv_dtype)
    : model_(model), max_context_(max_context), block_size_(block_size) {
  if (max_context <= 0) invalid("max context must be positive, got {}", max_context);
  const int n_blocks = (max_context + block_size - 1) / block_size;
  cache_ = model.make_cache(n_blocks, block_size, kv_dtype);
  std::vector<int32_t> table(n_blocks);
  std::iota(table.begin(), table.end(), 0);
  block_table_ = Tensor::from_i32({1, n_blocks}, table);
}

Tensor Generator::step(const std::vector<int>& tokens, bool all_logits) {
  const int n = int(tokens.size());
  if (n == 0) invalid("empty prompt");
  if (n_past_ + n > max_context_)
    invalid("the sequence needs {} tokens but the context holds {}", n_past_ + n, max_context_);
  const int vocab = model_.config().vocab_size;
  std::vector<int32_t> ids(n), pos(n), slots(n);
  for (int i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) invalid("token id {} is outside the vocabulary [0, {})", tokens[i], vocab);
    ids[i] = tokens[i];
    pos[i] = n_past_ + i;
    slots[i] = n_past_ + i;  // consecutive blocks: slot == position
  }
  Batch b;
  b.token_ids = Tensor::from_i32({n}, ids);
  b.positions = Tensor::from_i32({n}, pos);
  b.max_position = n_past_ + n - 1;
  b.attn.q_start = Tensor::from_i32({2}, {0, n});
  b.attn.kv_len = Tensor::from_i32({1}, {n_past_ + n});
  b.attn.block_table = block_table_;
  b.attn.slot_mapping = Tensor::from_i32({n}, slots);
  b.attn.block_size = block_size_;
  if (all_logits) {
    std::vector<int32_t> rows(n);
    std::iota(rows.begin(), rows.end(), 0);
    b.logit_rows = Tensor::from_i32({n}, rows);
  } else {
    b.logit_rows = Tensor::from_i32({1}, {n - 1});
  }
  Tensor logits = model_.forward_to_host(b, cache_);
  n_past_ += n;
  return logits;
}

Tensor Generator::prefill(const std::vector<int>& prompt, bool all_logits) { return step(prompt, all_logits); }

Tensor Generator::decode(int token) { return step({token}, false); }

std::vector<int> Generator::generate(const std::vector<int>& prompt, int max_new, const SamplingParams& params,
                                     const std::function<bool(int)>& on_token, const std::vector<int>& stop_ids) {
  Sampler sampler(params);
  std::vector<int> history = prompt;
  std::vector<int> out;
  if (max_new <= 0) return out;
  Tensor logits = prefill(prompt);
  const int vocab = int(logits.dim(-1));
  for (int i = 0; i < max_new; ++i) {
    int tok = sampler.sample(logits.data<float>(), vocab, history);
    out.push_back(tok);
    history.push_back(tok);
    bool go_on = on_token ? on_token(tok) : true;
    if (!go_on || std::find(stop_ids.begin(), stop_ids.end(), tok) != stop_ids.end()) break;
    if (i + 1 < max_new) {
      if (n_past_ + 1 > max_context_) break;  // context full: stop, as llama.cpp does
      logits = decode(tok);
    }
  }
  return out;
}

}  // namespace mlxcel
