// Engine: the step API over the scheduler, the KV block pool and a ModelRunner.
// Continuous batching, paged KV cache, automatic prefix caching, chunked prefill,
// preemption by recompute. Single-threaded: one caller drives step(); AsyncEngine
// (engine/async_engine.h) is the thread-safe front for the server.
//
//   Engine engine(*model, EngineConfig{.n_blocks = 1024});
//   RequestId id = engine.open({.prompt = ids, .max_tokens = 32});
//   while (engine.has_work())
//     for (const StepEvent& ev : engine.step()) { ...ev.new_tokens, ev.finished... }
#pragma once

#include <atomic>
#include <unordered_map>
#include <vector>

#include "engine/model_runner.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "models/model.h"

namespace mlxcel {

struct EngineConfig {
  int block_size = 16;
  int n_blocks = 0;                   // 0: room for 4 x min(max_model_len, 4096) tokens
  int max_num_seqs = 64;
  int max_num_batched_tokens = 2048;  // token budget per step
  int max_model_len = 0;              // 0: the model's max_position_embeddings (4096 if unset)
  bool enable_prefix_caching = true;
  bool enable_chunked_prefill = true;
  DType kv_dtype = DType::f32;
};

// The KV cache dtype for a --kv-dtype value: "f32", "f16", "bf16", or "auto" (bf16 on
// a GPU, f32 on the CPU). Throws Error(invalid_request) for anything else.
DType parse_kv_dtype(const std::string& name, Device device);

struct GenerationRequest {
  std::vector<int> prompt;
  SamplingParams sampling;           // temperature 0: greedy; seed per request
  int max_tokens = 16;
  std::vector<int> stop_token_ids;   // e.g. the tokenizer's EOS ids (the engine adds none)
  std::vector<ExtraKey> extra_keys;  // prefix-cache keys for non-text inputs
};

// New tokens of one request in a step, and whether it finished (and why).
using StepEvent = RequestOutput;

struct EngineStats {
  int64_t steps = 0;
  int64_t scheduled_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t preemptions = 0;
  int64_t failed_rows = 0;
  PrefixCacheStats prefix;
  int n_waiting = 0, n_running = 0;
  double kv_usage = 0;  // fraction of blocks in use
  // Wall time of the parts of step(), summed over steps (seconds): scheduling, building
  // the batch and queueing the forward pass (on a device this returns before the device
  // finishes), sampling (on a device: waiting for the step, then the ids), bookkeeping.
  double schedule_s = 0, forward_s = 0, sample_s = 0, update_s = 0;
};

class Engine {
 public:
  Engine(Model& model, const EngineConfig& cfg);

  // Throws Error(invalid_request) naming the problem: empty prompt, token ids outside
  // the vocabulary, a prompt that leaves no room in the context, bad sampling params.
  // Reads only immutable state: safe from any thread.
  void validate(const GenerationRequest& req) const;
  // Queues a request; returns its id. Throws like validate().
  RequestId open(GenerationRequest req);
  // A fresh id (thread-safe), for open_as.
  RequestId reserve_id() { return next_id_++; }
  void open_as(RequestId id, GenerationRequest req);
  // Schedules and runs one step; returns the new tokens and finished requests, plus
  // the requests closed since the last step (finished, cancelled). A row that fails
  // (forward or sampling) ends its own request with FinishReason::error.
  std::vector<StepEvent> step();
  // Cancels a request and frees its blocks now. False when it is unknown/finished.
  bool close(RequestId id);

  bool has_work() const { return scheduler_.has_unfinished() || !pending_.empty(); }
  EngineStats stats() const;
  int max_model_len() const { return scheduler_.max_len(); }
  const Scheduler& scheduler() const { return scheduler_; }
  ModelRunner& runner() { return runner_; }
  const EngineConfig& config() const { return cfg_; }

 private:
  std::vector<RowResult> run(const SchedulerOutput& out);
  void sample_rows(const std::vector<const ScheduledSeq*>& seqs, const Tensor& logits, std::vector<RowResult>& rows);

  EngineConfig cfg_;
  int vocab_;
  Scheduler scheduler_;
  ModelRunner runner_;
  std::unordered_map<RequestId, Sampler> samplers_;
  std::vector<StepEvent> pending_;
  std::atomic<RequestId> next_id_{1};
  EngineStats stats_;
};

}  // namespace mlxcel
