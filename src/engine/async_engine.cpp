#include "engine/async_engine.h"

#include <chrono>

#include "base/error.h"

namespace mlxcel {

bool TokenStream::next(StepEvent& ev) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return !events_.empty() || drained_; });
  if (events_.empty()) return false;
  ev = std::move(events_.front());
  events_.pop_front();
  if (ev.finished) drained_ = true;
  return true;
}

bool TokenStream::next_for(StepEvent& ev, int timeout_ms) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return !events_.empty() || drained_; }))
    return false;
  if (events_.empty()) return false;
  ev = std::move(events_.front());
  events_.pop_front();
  if (ev.finished) drained_ = true;
  return true;
}

void TokenStream::push(StepEvent ev) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    closed_ = ev.finished;
    events_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

AsyncEngine::AsyncEngine(Model& model, const EngineConfig& cfg, size_t max_queue)
    : engine_(model, cfg), max_queue_(max_queue) {
  thread_ = std::thread([this] { loop(); });
}

AsyncEngine::~AsyncEngine() { stop(); }

std::shared_ptr<TokenStream> AsyncEngine::submit(GenerationRequest req) {
  engine_.validate(req);
  const RequestId id = engine_.reserve_id();
  auto stream = std::make_shared<TokenStream>(id);
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_) throw_error(ErrorKind::resource_exhausted, "the engine is stopped");
    if (incoming_.size() >= max_queue_)
      throw_error(ErrorKind::resource_exhausted, "the request queue is full ({} requests)", max_queue_);
    incoming_.push_back({id, std::move(req), stream});
  }
  cv_.notify_all();
  return stream;
}

void AsyncEngine::cancel(RequestId id) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    cancels_.push_back(id);
  }
  cv_.notify_all();
}

void AsyncEngine::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

EngineStats AsyncEngine::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void AsyncEngine::loop() {
  auto finish = [](const std::shared_ptr<TokenStream>& s, FinishReason reason, const std::string& error) {
    StepEvent ev;
    ev.id = s->id();
    ev.finished = true;
    ev.reason = reason;
    ev.error = error;
    s->push(std::move(ev));
  };
  for (;;) {
    std::deque<Incoming> incoming;
    std::vector<RequestId> cancels;
    bool stopping;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !incoming_.empty() || !cancels_.empty() || engine_.has_work(); });
      incoming.swap(incoming_);
      cancels.swap(cancels_);
      stopping = stop_;
    }
    for (auto& in : incoming) {
      try {
        engine_.open_as(in.id, std::move(in.req));
        streams_[in.id] = in.stream;
      } catch (const Error& e) {
        finish(in.stream, FinishReason::error, e.what());
      }
    }
    for (RequestId id : cancels) engine_.close(id);
    if (stopping) {
      for (auto& [id, s] : streams_) {
        engine_.close(id);
        finish(s, FinishReason::cancelled, {});
      }
      streams_.clear();
      return;
    }
    std::vector<StepEvent> events;
    try {
      events = engine_.step();
    } catch (const std::exception& e) {
      // NOTE: step() ends failing rows itself; reaching here is an engine bug. End
      // every open request rather than spin on the same failure.
      for (auto& [id, s] : streams_) {
        engine_.close(id);
        finish(s, FinishReason::error, e.what());
      }
      streams_.clear();
      engine_.step();  // drain the close events
    }
    for (auto& ev : events) {
      auto it = streams_.find(ev.id);
      if (it == streams_.end()) continue;
      const bool done = ev.finished;
      it->second->push(std::move(ev));
      if (done) streams_.erase(it);
    }
    std::lock_guard<std::mutex> lk(mu_);
    stats_ = engine_.stats();
  }
}

}  // namespace mlxcel
