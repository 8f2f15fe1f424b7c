#include "engine/engine.h"

#include <chrono>

#include "ops/ops.h"
#include "ops/sample.h"

#include <algorithm>

#include "base/error.h"

namespace mlxcel {

namespace {
EngineConfig resolve(const Model& model, EngineConfig cfg) {
  if (cfg.block_size <= 0) invalid("[engine] block_size must be positive, got {}", cfg.block_size);
  if (cfg.max_model_len <= 0)
    cfg.max_model_len = model.config().max_position_embeddings > 0 ? model.config().max_position_embeddings : 4096;
  // NOTE: a placeholder until the server sizes the pool from free memory.
  if (cfg.n_blocks <= 0) cfg.n_blocks = 4 * ((std::min(cfg.max_model_len, 4096) + cfg.block_size - 1) / cfg.block_size);
  return cfg;
}
SchedulerConfig scheduler_config(const EngineConfig& c) {
  SchedulerConfig s;
  s.max_num_seqs = c.max_num_seqs;
  s.max_num_batched_tokens = c.max_num_batched_tokens;
  s.max_model_len = c.max_model_len;
  s.enable_chunked_prefill = c.enable_chunked_prefill;
  return s;
}
KvCacheConfig kv_config(const EngineConfig& c) { return {c.n_blocks, c.block_size, c.enable_prefix_caching}; }
}  // namespace

Engine::Engine(Model& model, const EngineConfig& cfg)
    : cfg_(resolve(model, cfg)),
      vocab_(model.config().vocab_size),
      scheduler_(scheduler_config(cfg_), kv_config(cfg_)),
      runner_(model, cfg_.n_blocks, cfg_.block_size, cfg_.kv_dtype, cfg_.max_model_len) {}

void Engine::validate(const GenerationRequest& req) const {
  const int n = int(req.prompt.size());
  if (n == 0) invalid("the prompt is empty");
  if (n >= scheduler_.max_len())
    invalid("the prompt has {} tokens but the context holds {} (prompt plus at least one generated token)", n,
            scheduler_.max_len());
  for (int t : req.prompt)
    if (t < 0 || t >= vocab_) invalid("prompt token id {} is outside the vocabulary [0, {})", t, vocab_);
  if (req.max_tokens < 1) invalid("max_tokens must be at least 1, got {}", req.max_tokens);
  req.sampling.validate();
  for (const auto& [t, bias] : req.sampling.logit_bias)
    if (t >= vocab_) invalid("logit_bias token id {} is outside the vocabulary [0, {})", t, vocab_);
}

RequestId Engine::open(GenerationRequest req) {
  const RequestId id = reserve_id();
  open_as(id, std::move(req));
  return id;
}

void Engine::open_as(RequestId id, GenerationRequest req) {
  validate(req);
  Request r;
  r.id = id;
  r.tokens = std::move(req.prompt);
  r.max_tokens = req.max_tokens;
  r.stop_token_ids = std::move(req.stop_token_ids);
  r.extra_keys = std::move(req.extra_keys);
  scheduler_.add_request(std::move(r));
  samplers_.emplace(id, Sampler(req.sampling));
}

bool Engine::close(RequestId id) {
  if (!scheduler_.finish_request(id, FinishReason::cancelled)) return false;
  samplers_.erase(id);
  StepEvent ev;
  ev.id = id;
  ev.finished = true;
  ev.reason = FinishReason::cancelled;
  pending_.push_back(ev);
  return true;
}

DType parse_kv_dtype(const std::string& name, Device device) {
  if (name == "auto") return device.type == DeviceType::cpu ? DType::f32 : DType::bf16;
  if (name == "f32") return DType::f32;
  if (name == "f16") return DType::f16;
  if (name == "bf16") return DType::bf16;
  invalid("--kv-dtype: '{}' is not one of auto, f32, f16, bf16", name);
}

void Engine::sample_rows(const std::vector<const ScheduledSeq*>& seqs, const Tensor& logits,
                         std::vector<RowResult>& rows) {
  const int vocab = int(logits.dim(-1));
  if (logits.device().type != DeviceType::cpu) {
    // Logits on a device: when every row is plain greedy, only the argmax ids come back;
    // otherwise the rows are copied to the host for the sampler.
    // When every row is device-sampleable (temperature, top-k/p, min-p only) the device
    // samples them (ops::sample) and again only the ids come back.
    bool greedy = true, device = device_sampling_enabled();
    for (const ScheduledSeq* s : seqs) {
      if (!s->sample) continue;
      auto it = samplers_.find(s->id);
      if (it == samplers_.end() || !it->second.plain_greedy()) greedy = false;
      if (it == samplers_.end() || !it->second.device_sampleable()) device = false;
    }
    if (!greedy && !device) return sample_rows(seqs, ops::to_device(logits, Device::cpu()), rows);
    Tensor dev_ids;
    if (greedy) {
      dev_ids = ops::argmax(logits);
    } else {
      std::vector<ops::SampleRow> params;
      for (const ScheduledSeq* s : seqs)
        if (s->sample) params.push_back(samplers_.at(s->id).device_row());
      dev_ids = ops::sample(logits.dtype() == DType::f32 ? logits : ops::astype(logits, DType::f32), params);
    }
    const Tensor ids = ops::to_device(dev_ids, Device::cpu());
    int row = 0;
    for (const ScheduledSeq* s : seqs) {
      if (!s->sample) continue;
      RowResult r;
      r.id = s->id;
      r.token = ids.data<int32_t>()[row++];
      if (r.token < 0 || r.token >= vocab_) r.error = fmt::format("the device picked token {} outside the vocabulary", r.token);
      rows.push_back(std::move(r));
    }
    return;
  }
  std::vector<float> host;
  const float* data = nullptr;
  if (logits.dtype() == DType::f32 && logits.is_contiguous()) {
    data = logits.data<float>();
  } else {
    host = logits.to_f32_vector();
    data = host.data();
  }
  int row = 0;
  for (const ScheduledSeq* s : seqs) {
    if (!s->sample) continue;
    RowResult r;
    r.id = s->id;
    try {
      const Request* req = scheduler_.find(s->id);
      MLXCEL_CHECK(req != nullptr, "sampling unknown request {}", s->id);
      Sampler& sampler = samplers_.at(s->id);
      r.token = sampler.sample(data + size_t(row) * vocab, vocab, req->tokens, &r.logprobs);
      r.has_logprobs = sampler.wants_logprobs();
    } catch (const std::exception& e) {
      r.error = e.what();
    }
    rows.push_back(std::move(r));
    ++row;
  }
}

std::vector<RowResult> Engine::run(const SchedulerOutput& out) {
  std::vector<RowResult> rows;
  std::vector<const ScheduledSeq*> all;
  for (const auto& s : out.seqs) all.push_back(&s);
  try {
    auto t0 = std::chrono::steady_clock::now();
    Tensor logits = runner_.execute(all);
    auto t1 = std::chrono::steady_clock::now();
    sample_rows(all, logits, rows);
    stats_.forward_s += std::chrono::duration<double>(t1 - t0).count();
    stats_.sample_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    return rows;
  } catch (const std::exception& e) {
    if (all.size() == 1) {
      rows.push_back({all[0]->id, -1, e.what()});
      return rows;
    }
  }
  // NOTE: the batch failed; rerun each sequence alone so that only the failing ones
  // end. Rewriting the same K/V into the same slots is harmless.
  rows.clear();
  for (const ScheduledSeq* s : all) {
    std::vector<const ScheduledSeq*> one{s};
    try {
      Tensor logits = runner_.execute(one);
      sample_rows(one, logits, rows);
    } catch (const std::exception& e) {
      rows.push_back({s->id, -1, e.what()});
    }
  }
  return rows;
}

std::vector<StepEvent> Engine::step() {
  std::vector<StepEvent> events = std::move(pending_);
  pending_.clear();
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  SchedulerOutput out = scheduler_.schedule();
  if (out.empty()) return events;
  runner_.copy_blocks(out.block_copies);
  stats_.schedule_s += std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<RowResult> rows = run(out);
  auto t1 = Clock::now();
  ++stats_.steps;
  stats_.scheduled_tokens += out.n_tokens;
  for (const auto& r : rows)
    if (!r.error.empty()) ++stats_.failed_rows;
  for (auto& o : scheduler_.update(out, rows)) {
    stats_.generated_tokens += int64_t(o.new_tokens.size());
    if (o.finished) samplers_.erase(o.id);
    events.push_back(std::move(o));
  }
  stats_.update_s += std::chrono::duration<double>(Clock::now() - t1).count();
  return events;
}

EngineStats Engine::stats() const {
  EngineStats s = stats_;
  s.preemptions = scheduler_.n_preemptions();
  s.prefix = scheduler_.kv().stats();
  s.n_waiting = scheduler_.n_waiting();
  s.n_running = scheduler_.n_running();
  s.kv_usage = scheduler_.kv().pool().usage();
  return s;
}

}  // namespace mlxcel
