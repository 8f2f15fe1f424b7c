#include "engine/generator.h"

#include <algorithm>
#include <cstdlib>
#include <numeric>

#include "base/error.h"
#include "ops/sample.h"

namespace mlxcel {

namespace {
int blocks_for(int max_context, int block_size) {
  if (max_context <= 0) invalid("max context must be positive, got {}", max_context);
  if (block_size <= 0) invalid("block size must be positive, got {}", block_size);
  return (max_context + block_size - 1) / block_size;
}
}  // namespace

Generator::Generator(Model& model, int max_context, int block_size, DType kv_dtype)
    : model_(model),
      max_context_(max_context),
      block_size_(block_size),
      // One sequence over the whole table: no padding rows, and the plain step's width (so
      // the same attention splits: replayed logits are the plain path's bits).
      decode_graphs_(block_size, -1, blocks_for(max_context, block_size), blocks_for(max_context, block_size)) {
  const int n_blocks = blocks_for(max_context, block_size);
  cache_ = model.make_cache(n_blocks, block_size, kv_dtype);
  std::vector<int32_t> table(n_blocks);
  std::iota(table.begin(), table.end(), 0);
  block_table_ = Tensor::from_i32({1, n_blocks}, table);
}

Tensor Generator::step(const std::vector<int>& tokens, bool all_logits, bool keep_on_device) {
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
  if (n == 1 && !all_logits && graphs_ && DecodeGraphs::supported(model_)) {
    const DecodeRow row{tokens[0], n_past_, std::span<const int32_t>(block_table_.data<int32_t>(), size_t(block_table_.dim(1)))};
    Tensor logits = decode_graphs_.run(model_, cache_, std::span<const DecodeRow>(&row, 1));
    if (logits.defined()) {
      n_past_ += 1;
      // (On the device: the graph's own buffer, read before the next replay.)
      return keep_on_device ? logits : ops::to_device(logits, Device::cpu());
    }
    graphs_ = false;  // not recordable for this model: decode without graphs
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
  Tensor logits = keep_on_device ? model_.forward(b, cache_) : model_.forward_to_host(b, cache_);
  n_past_ += n;
  return logits;
}

Tensor Generator::prefill(const std::vector<int>& prompt, bool all_logits) { return step(prompt, all_logits); }

Tensor Generator::decode(int token) { return step({token}, false); }

namespace {
// A token id the device picked, checked against the vocabulary.
int device_token(int tok, int vocab) {
  if (tok < 0 || tok >= vocab) throw_error(ErrorKind::internal, "the device picked token {} outside the vocabulary", tok);
  return tok;
}
}  // namespace

int Generator::device_argmax(const Tensor& logits) {
  const int vocab = int(logits.dim(-1));
  return device_token(ops::to_device(ops::argmax(logits.reshape({1, vocab})), Device::cpu()).data<int32_t>()[0], vocab);
}

int Generator::decode_greedy(int token) {
  const bool gpu = model_.device().type != DeviceType::cpu;
  const Tensor logits = step({token}, false, gpu);
  if (gpu) return device_argmax(logits);
  const float* p = logits.data<float>();
  return int(std::max_element(p, p + logits.dim(-1)) - p);
}

Tensor Generator::step_queued(const Tensor& ids) {
  if (!graphs_ || !DecodeGraphs::supported(model_)) return Tensor();
  const DecodeRow row{0, n_past_, std::span<const int32_t>(block_table_.data<int32_t>(), size_t(block_table_.dim(1)))};
  Tensor logits = decode_graphs_.run(model_, cache_, std::span<const DecodeRow>(&row, 1), &ids);
  if (!logits.defined()) {
    graphs_ = false;  // not recordable for this model: decode without graphs
    return Tensor();
  }
  n_past_ += 1;
  return logits;
}

std::vector<int> Generator::generate(const std::vector<int>& prompt, int max_new, const SamplingParams& params,
                                     const std::function<bool(int)>& on_token, const std::vector<int>& stop_ids) {
  Sampler sampler(params);
  std::vector<int> out;
  if (max_new <= 0) return out;
  const bool gpu = model_.device().type != DeviceType::cpu;
  const bool greedy_on_device = gpu && sampler.plain_greedy();
  const bool on_device = greedy_on_device || (gpu && params.temperature > 0.0f && sampler.device_sampleable() &&
                                              device_sampling_enabled());
  Tensor logits = step(prompt, false, on_device);
  const int vocab = int(logits.dim(-1));
  auto stops = [&](int tok) {
    const bool go_on = on_token ? on_token(tok) : true;
    return !go_on || std::find(stop_ids.begin(), stop_ids.end(), tok) != stop_ids.end();
  };
  if (on_device) {
    // The device picks every token (argmax, or ops::sample with the sampler's draws in
    // token order) and the next step is queued before the host reads the token it
    // consumes (the graph takes it from the device): the device does not wait for the
    // host between steps. A step queued past a stop is dropped (n_past_ steps back).
    auto pick = [&](const Tensor& lg) {
      const Tensor f = (lg.dtype() == DType::f32 ? lg : ops::astype(lg, DType::f32)).reshape({1, vocab});
      return greedy_on_device ? ops::argmax(f) : ops::sample(f, {sampler.device_row()});
    };
    std::unique_ptr<ops::Readback> rb = ops::make_readback(model_.device(), 4);
    Tensor ids = pick(logits);
    rb->start(ids);
    for (int i = 0; i < max_new; ++i) {
      const bool more = i + 1 < max_new && n_past_ + 1 <= max_context_;
      Tensor next = more ? step_queued(ids) : Tensor();
      const bool queued = next.defined();
      if (queued) next = pick(next);
      const int tok = device_token(rb->wait().data<int32_t>()[0], vocab);
      out.push_back(tok);
      if (stops(tok) || !more) {
        if (queued) n_past_ -= 1;  // its K/V slot is written again by the next token there
        break;
      }
      if (!queued) next = pick(step({tok}, false, true));  // no graph for this step: the plain path
      ids = next;
      rb->start(ids);
    }
    return out;
  }
  std::vector<int> history = prompt;
  for (int i = 0; i < max_new; ++i) {
    const int tok = sampler.sample(logits.data<float>(), vocab, history);
    out.push_back(tok);
    history.push_back(tok);
    if (stops(tok)) break;
    if (i + 1 < max_new) {
      if (n_past_ + 1 > max_context_) break;  // context full: stop, as llama.cpp does
      logits = step({tok}, false, false);
    }
  }
  return out;
}

}  // namespace mlxcel
