// AsyncEngine: the thread-safe front of Engine for the server. Requests arrive through
// a bounded queue, one thread runs the step loop, and each request's tokens come back
// through its own TokenStream. Cancelling (client disconnect) is a queued close().
//
//   AsyncEngine eng(*model, EngineConfig{.n_blocks = 1024});
//   auto stream = eng.submit({.prompt = ids, .max_tokens = 64});
//   StepEvent ev;
//   while (stream->next(ev)) { ...ev.new_tokens...; if (ev.finished) break; }
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "engine/engine.h"

namespace mlxcel {

// One request's channel of events: written by the engine thread, read by one consumer.
class TokenStream {
 public:
  explicit TokenStream(RequestId id) : id_(id) {}
  RequestId id() const { return id_; }
  // Blocks for the next event; false once the finishing event has been returned.
  bool next(StepEvent& ev);
  // Like next() but gives up after timeout_ms (returns false, ev untouched).
  bool next_for(StepEvent& ev, int timeout_ms);
  void push(StepEvent ev);  // engine side

 private:
  RequestId id_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StepEvent> events_;
  bool closed_ = false;  // the finishing event was pushed
  bool drained_ = false; // and returned
};

class AsyncEngine {
 public:
  // Starts the step-loop thread. max_queue bounds requests not yet taken by the loop.
  AsyncEngine(Model& model, const EngineConfig& cfg, size_t max_queue = 4096);
  ~AsyncEngine();  // stop()
  AsyncEngine(const AsyncEngine&) = delete;
  AsyncEngine& operator=(const AsyncEngine&) = delete;

  // Validates (throws Error(invalid_request)) and queues a request; throws
  // Error(resource_exhausted) when the queue is full or the engine is stopped.
  std::shared_ptr<TokenStream> submit(GenerationRequest req);
  // Cancels a request; its stream ends with FinishReason::cancelled.
  void cancel(RequestId id);
  // Ends the loop; open streams finish with FinishReason::cancelled. Idempotent.
  void stop();
  EngineStats stats() const;

 private:
  struct Incoming {
    RequestId id;
    GenerationRequest req;
    std::shared_ptr<TokenStream> stream;
  };
  void loop();

  Engine engine_;
  size_t max_queue_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Incoming> incoming_;
  std::vector<RequestId> cancels_;
  bool stop_ = false;
  EngineStats stats_;  // copied after each step, under mu_
  std::unordered_map<RequestId, std::shared_ptr<TokenStream>> streams_;  // loop thread only
  std::thread thread_;
};

}  // namespace mlxcel
