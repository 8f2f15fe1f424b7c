// Engine bridge: submits a request's n choices to the AsyncEngine and turns each
// choice's token stream into text updates (TextStream: stop strings, reasoning split)
// on a small pump thread, so HTTP handlers never block or run model code. Bounds the
// requests in flight (-np + --max-queue), enforces the per-request timeout, cancels on
// client disconnect, and keeps the counters /metrics reports.
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/async_engine.h"
#include "engine/text_stream.h"

namespace mlxcel::server {

// One token as the logprobs fields show it: its text (decoded alone, invalid UTF-8 as
// U+FFFD), its raw bytes, and its log-probability.
struct TokenAlt {
  int id = -1;
  std::string text, bytes;
  float logprob = 0.0f;
};
struct TokenInfo {
  TokenAlt chosen;
  std::vector<TokenAlt> top;  // most likely first
};

struct ChoiceUpdate {
  int index = 0;
  std::string content, reasoning;  // new text since the last update
  std::vector<TokenInfo> logprobs; // the tokens of this update (when the request asked)
  int n_tokens = 0;                // tokens generated so far
  bool finished = false;
  std::string finish_reason;       // stop | length | cancelled | timeout | error
  std::string error;
};
// Called from a pump thread; calls for one choice are in order, choices interleave.
using UpdateFn = std::function<void(const ChoiceUpdate&)>;

struct GenerationSpec {
  GenerationRequest request;  // prompt, sampling (seed of choice i is seed + i), max_tokens
  int n = 1;
  TextStreamOptions text;
  int timeout_s = 600;
};

class Generation {
 public:
  void cancel();  // idempotent; every choice finishes with "cancelled"
 private:
  friend class EngineBridge;
  AsyncEngine* engine_ = nullptr;
  std::vector<RequestId> ids_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
};

struct BridgeMetrics {
  std::atomic<int64_t> requests_total{0}, prompt_tokens_total{0}, generated_tokens_total{0};
  std::atomic<int64_t> rejected_busy_total{0}, errors_total{0};
  std::atomic<int> active_choices{0};
};

class EngineBridge {
 public:
  EngineBridge(AsyncEngine& engine, const Tokenizer& tok, int max_active);
  ~EngineBridge();  // waits for the pump threads (stop the engine first)

  // Validates and queues; throws Error(invalid_request) or Error(resource_exhausted)
  // (too many requests in flight) before any update is produced.
  std::shared_ptr<Generation> start(GenerationSpec spec, UpdateFn fn);
  BridgeMetrics& metrics() { return metrics_; }
  int max_active() const { return max_active_; }

 private:
  void pump(std::shared_ptr<Generation> gen, std::shared_ptr<TokenStream> st, int index, const GenerationSpec& spec,
            const UpdateFn& fn);
  void reap(bool all);
  TokenAlt token_alt(int id, float logprob) const;

  AsyncEngine& engine_;
  const Tokenizer& tok_;
  int max_active_;
  BridgeMetrics metrics_;
  std::mutex threads_mu_;
  std::list<std::pair<std::thread, std::shared_ptr<std::atomic<bool>>>> threads_;
};

}  // namespace mlxcel::server
