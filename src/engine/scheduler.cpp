#include "engine/scheduler.h"

#include <algorithm>

#include "base/error.h"

namespace mlxcel {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::none: return "none";
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::cancelled: return "cancelled";
    case FinishReason::error: return "error";
  }
  return "?";
}

Scheduler::Scheduler(const SchedulerConfig& cfg, const KvCacheConfig& kv) : cfg_(cfg), kv_(kv) {
  if (cfg.max_num_seqs <= 0) invalid("[scheduler] max_num_seqs must be positive, got {}", cfg.max_num_seqs);
  if (cfg.max_num_batched_tokens <= 0)
    invalid("[scheduler] max_num_batched_tokens must be positive, got {}", cfg.max_num_batched_tokens);
  if (cfg.max_model_len <= 1) invalid("[scheduler] max_model_len must be at least 2, got {}", cfg.max_model_len);
  max_len_ = std::min(cfg.max_model_len, kv_.n_blocks() * kv_.block_size());
}

void Scheduler::add_request(Request req) {
  const int n = int(req.tokens.size());
  if (n == 0) invalid("the prompt is empty");
  if (n >= max_len_)
    invalid("the prompt has {} tokens but the context holds {} (prompt plus at least one generated token)", n,
            max_len_);
  if (!cfg_.enable_chunked_prefill && n > cfg_.max_num_batched_tokens)
    invalid("the prompt has {} tokens, more than max_num_batched_tokens ({}) without chunked prefill", n,
            cfg_.max_num_batched_tokens);
  if (req.max_tokens < 1) invalid("max_tokens must be at least 1, got {}", req.max_tokens);
  if (requests_.count(req.id)) invalid("request id {} is already in use", req.id);
  req.n_prompt = n;
  req.n_computed = 0;
  req.status = RequestStatus::waiting;
  req.finish_reason = FinishReason::none;
  auto owned = std::make_unique<Request>(std::move(req));
  waiting_.push_back(owned.get());
  requests_.emplace(owned->id, std::move(owned));
}

const Request* Scheduler::find(RequestId id) const {
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : it->second.get();
}

ScheduledSeq Scheduler::make_seq(const Request& r, int n_new) const {
  ScheduledSeq s;
  s.id = r.id;
  s.start = r.n_computed;
  s.token_ids.assign(r.tokens.begin() + r.n_computed, r.tokens.begin() + r.n_computed + n_new);
  s.block_table = kv_.block_table(r.id);
  s.sample = r.n_computed + n_new == r.n_tokens();
  return s;
}

void Scheduler::preempt(Request& r) {
  kv_.free(r.id);
  r.n_computed = 0;
  r.status = RequestStatus::waiting;
  ++r.n_preemptions;
  ++n_preemptions_;
  waiting_.push_front(&r);
}

SchedulerOutput Scheduler::schedule() {
  SchedulerOutput out;
  int budget = cfg_.max_num_batched_tokens;

  // Running requests, oldest first.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Request& r = *running_[i];
    const int n_new = std::min(r.n_tokens() - r.n_computed, budget);
    MLXCEL_CHECK(n_new > 0, "running request {} has nothing to compute", r.id);
    bool ok = true;
    while (!kv_.allocate_slots(r.id, r.n_computed, n_new)) {
      Request* victim = running_.back();
      running_.pop_back();
      preempt(*victim);
      out.preempted.push_back(victim->id);
      if (victim == &r) {
        ok = false;
        break;
      }
    }
    if (!ok) break;
    out.seqs.push_back(make_seq(r, n_new));
    out.n_tokens += n_new;
    budget -= n_new;
    ++i;
  }

  // Waiting requests, FIFO; none are admitted in a step that had to preempt.
  while (out.preempted.empty() && !waiting_.empty() && budget > 0 && int(running_.size()) < cfg_.max_num_seqs) {
    Request& r = *waiting_.front();
    CachedPrefix hit = kv_.find_cached_prefix(r.id, r.tokens, r.extra_keys);
    int n_new = r.n_tokens() - hit.n_tokens;
    if (!cfg_.enable_chunked_prefill && n_new > budget) break;
    n_new = std::min(n_new, budget);
    if (!kv_.allocate_slots(r.id, hit.n_tokens, n_new, hit.blocks)) break;
    waiting_.pop_front();
    if (r.n_cached_prompt < 0) {
      r.n_cached_prompt = std::min(hit.n_tokens, r.n_prompt);
      kv_.record_lookup(r.n_prompt, r.n_cached_prompt);
    }
    r.n_computed = hit.n_tokens;
    r.status = RequestStatus::running;
    running_.push_back(&r);
    out.seqs.push_back(make_seq(r, n_new));
    out.n_tokens += n_new;
    budget -= n_new;
  }
  return out;
}

bool Scheduler::finish_request(RequestId id, FinishReason reason, const std::string& error) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return false;
  Request* r = it->second.get();
  if (auto w = std::find(waiting_.begin(), waiting_.end(), r); w != waiting_.end()) waiting_.erase(w);
  if (auto q = std::find(running_.begin(), running_.end(), r); q != running_.end()) running_.erase(q);
  kv_.free(id);
  requests_.erase(it);
  return true;
}

std::vector<RequestOutput> Scheduler::update(const SchedulerOutput& out, const std::vector<RowResult>& rows) {
  std::unordered_map<RequestId, const RowResult*> by_id;
  for (const auto& row : rows) by_id[row.id] = &row;
  std::vector<RequestOutput> result;
  std::vector<RequestId> done;
  for (const auto& s : out.seqs) {
    auto it = requests_.find(s.id);
    if (it == requests_.end()) continue;  // finished meanwhile
    Request& r = *it->second;
    if (r.status != RequestStatus::running || r.n_computed != s.start) continue;  // preempted meanwhile
    auto row_it = by_id.find(s.id);
    const RowResult* row = row_it == by_id.end() ? nullptr : row_it->second;
    RequestOutput o;
    o.id = r.id;
    if (row && !row->error.empty()) {
      o.finished = true;
      o.reason = FinishReason::error;
      o.error = row->error;
    } else {
      r.n_computed += int(s.token_ids.size());
      kv_.cache_computed(r.id, r.tokens, r.n_computed, r.extra_keys);
      if (s.sample) {
        MLXCEL_CHECK(row != nullptr && row->token >= 0, "no sampled token for request {}", r.id);
        const int tok = row->token;
        r.tokens.push_back(tok);
        o.new_tokens.push_back(tok);
        if (row->has_logprobs) o.logprobs.push_back(row->logprobs);
        if (std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), tok) != r.stop_token_ids.end())
          o.finished = true, o.reason = FinishReason::stop;
        else if (r.n_output() >= r.max_tokens || r.n_tokens() >= max_len_)
          o.finished = true, o.reason = FinishReason::length;
      }
    }
    if (o.finished) {
      r.status = RequestStatus::finished;
      r.finish_reason = o.reason;
      r.error = o.error;
      done.push_back(r.id);
    }
    if (o.finished || !o.new_tokens.empty()) result.push_back(std::move(o));
  }
  for (RequestId id : done) finish_request(id, FinishReason::none);
  return result;
}

}  // namespace mlxcel
