// Scheduler: continuous batching as pure policy over plain data (no tensors, no model).
//
// Each request has tokens (prompt + generated) and n_computed (how many of them are in
// the KV cache). A step gives each scheduled request n_new = tokens - n_computed tokens,
// cut to the step's token budget: a prompt is just many uncomputed tokens (chunked
// prefill), a decode is one. There is no prefill or decode phase, and a prefix-cache
// hit only starts n_computed higher.
//
//   Scheduler sched(SchedulerConfig{...}, KvCacheConfig{...});
//   sched.add_request(std::move(req));
//   SchedulerOutput out = sched.schedule();      // what to run this step
//   ... run the model, sample the rows with out.seqs[i].sample ...
//   auto done = sched.update(out, rows);         // new tokens, finished requests
//
// Policy: running requests first, in admission order (decodes and unfinished prompt
// chunks alike), then waiting requests FIFO while the budget, max_num_seqs and the free
// blocks allow (a request that does not fit blocks the ones behind it). When a running
// request needs a block and none is free, the newest running request is preempted by
// recompute: its blocks are released and it goes back to the head of the queue with
// n_computed = 0 (its cached blocks usually make the recompute a prefix hit).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/kv_cache_manager.h"
#include "engine/logprobs.h"

namespace mlxcel {

enum class RequestStatus { waiting, running, finished };
enum class FinishReason { none, stop, length, cancelled, error };
const char* finish_reason_name(FinishReason r);

struct Request {
  RequestId id = 0;
  std::vector<int> tokens;  // prompt, then generated tokens
  int n_prompt = 0;
  int max_tokens = 16;               // generated tokens at most
  std::vector<int> stop_token_ids;   // generation stops after one of these (kept)
  std::vector<ExtraKey> extra_keys;  // prefix-cache keys (image digests, ...)

  // Scheduler state.
  RequestStatus status = RequestStatus::waiting;
  FinishReason finish_reason = FinishReason::none;
  std::string error;
  int n_computed = 0;           // tokens whose K/V are in the cache
  int n_cached_prompt = -1;     // prompt tokens served by the prefix cache at first admission
  int n_preemptions = 0;

  int n_tokens() const { return int(tokens.size()); }
  int n_output() const { return int(tokens.size()) - n_prompt; }
};

struct SchedulerConfig {
  int max_num_seqs = 64;              // running requests at most
  int max_num_batched_tokens = 2048;  // token budget of one step
  int max_model_len = 4096;           // prompt + generated tokens at most
  bool enable_chunked_prefill = true; // false: a prompt is scheduled whole or not at all
};

// One request's share of a step.
struct ScheduledSeq {
  RequestId id = 0;
  int start = 0;                // n_computed before the step: position of token_ids[0]
  std::vector<int> token_ids;   // the tokens computed this step
  std::vector<int> block_table; // the request's blocks, covering start + token_ids.size()
  bool sample = false;          // the step completes the known tokens: sample the next one
};

struct SchedulerOutput {
  std::vector<ScheduledSeq> seqs;
  int n_tokens = 0;                      // sum of token_ids sizes
  std::vector<BlockCopy> block_copies;   // to do before the step (copy-on-write)
  std::vector<RequestId> preempted;      // released this step, back in the queue
  bool empty() const { return seqs.empty(); }
};

// The runner's result for one scheduled request: the sampled token of a sampling row,
// or an error that ends this request only.
struct RowResult {
  RequestId id = 0;
  int token = -1;
  std::string error;  // non-empty: the row failed
  bool has_logprobs = false;  // the request asked for them: `logprobs` is filled
  TokenLogprobs logprobs;
};

// What changed for one request in update() (or a cancellation).
struct RequestOutput {
  RequestId id = 0;
  std::vector<int> new_tokens;
  std::vector<TokenLogprobs> logprobs;  // one per new token when the request asked, else empty
  bool finished = false;
  FinishReason reason = FinishReason::none;
  std::string error;
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& cfg, const KvCacheConfig& kv);

  // Queues a request (FIFO). Throws Error(invalid_request) when the prompt is empty, does
  // not leave room for one generated token within max_model_len or the whole pool, when
  // max_tokens < 1, or when the id is already in use.
  void add_request(Request req);
  // Decides the next step. Mutates block tables and queues; the returned tables are
  // valid until the next schedule().
  SchedulerOutput schedule();
  // Applies a step's results: advances n_computed, appends sampled tokens, applies stop
  // conditions, caches full blocks, frees finished requests. rows has one entry per
  // sampling row (and any failed row); requests finished meanwhile are skipped.
  std::vector<RequestOutput> update(const SchedulerOutput& out, const std::vector<RowResult>& rows);
  // Ends a request now (cancel, error), releasing its blocks. False when unknown.
  bool finish_request(RequestId id, FinishReason reason, const std::string& error = {});

  const Request* find(RequestId id) const;
  int n_waiting() const { return int(waiting_.size()); }
  int n_running() const { return int(running_.size()); }
  bool has_unfinished() const { return !waiting_.empty() || !running_.empty(); }
  const SchedulerConfig& config() const { return cfg_; }
  const KvCacheManager& kv() const { return kv_; }
  KvCacheManager& kv() { return kv_; }
  int64_t n_preemptions() const { return n_preemptions_; }
  // Longest sequence a request may reach: min(max_model_len, pool capacity).
  int max_len() const { return max_len_; }

 private:
  void preempt(Request& r);
  ScheduledSeq make_seq(const Request& r, int n_new) const;

  SchedulerConfig cfg_;
  KvCacheManager kv_;
  int max_len_;
  std::unordered_map<RequestId, std::unique_ptr<Request>> requests_;
  std::deque<Request*> waiting_;
  std::vector<Request*> running_;  // admission order; the back is preempted first
  int64_t n_preemptions_ = 0;
};

}  // namespace mlxcel
