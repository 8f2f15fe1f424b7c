#include "server/bridge.h"

#include <chrono>

#include "base/error.h"

namespace mlxcel::server {

void Generation::cancel() {
  if (cancelled_.exchange(true)) return;
  std::lock_guard<std::mutex> lk(mu_);
  for (RequestId id : ids_) engine_->cancel(id);
}

EngineBridge::EngineBridge(AsyncEngine& engine, const Tokenizer& tok, int max_active)
    : engine_(engine), tok_(tok), max_active_(max_active) {}

EngineBridge::~EngineBridge() { reap(true); }

void EngineBridge::reap(bool all) {
  std::list<std::pair<std::thread, std::shared_ptr<std::atomic<bool>>>> done;
  {
    std::lock_guard<std::mutex> lk(threads_mu_);
    for (auto it = threads_.begin(); it != threads_.end();) {
      if (all || it->second->load()) {
        done.splice(done.end(), threads_, it++);
      } else {
        ++it;
      }
    }
  }
  for (auto& [t, flag] : done)
    if (t.joinable()) t.join();
}

std::shared_ptr<Generation> EngineBridge::start(GenerationSpec spec, UpdateFn fn) {
  reap(false);
  const int n = spec.n;
  if (metrics_.active_choices.fetch_add(n) + n > max_active_) {
    metrics_.active_choices.fetch_sub(n);
    metrics_.rejected_busy_total++;
    throw_error(ErrorKind::resource_exhausted, "the server is busy ({} generations in flight); retry later", max_active_);
  }
  auto gen = std::make_shared<Generation>();
  gen->engine_ = &engine_;
  std::vector<std::shared_ptr<TokenStream>> streams;
  try {
    for (int i = 0; i < n; ++i) {
      GenerationRequest req = spec.request;
      req.sampling.seed = spec.request.sampling.seed + uint64_t(i);
      streams.push_back(engine_.submit(std::move(req)));
      std::lock_guard<std::mutex> lk(gen->mu_);
      gen->ids_.push_back(streams.back()->id());
    }
  } catch (...) {
    for (auto& s : streams) engine_.cancel(s->id());
    // The cancelled streams finish on their own; nobody reads them.
    metrics_.active_choices.fetch_sub(n);
    throw;
  }
  metrics_.requests_total++;
  metrics_.prompt_tokens_total += int64_t(spec.request.prompt.size());
  auto shared_spec = std::make_shared<GenerationSpec>(std::move(spec));
  auto shared_fn = std::make_shared<UpdateFn>(std::move(fn));
  std::lock_guard<std::mutex> lk(threads_mu_);
  for (int i = 0; i < n; ++i) {
    auto flag = std::make_shared<std::atomic<bool>>(false);
    std::thread t([this, gen, st = streams[i], i, shared_spec, shared_fn, flag] {
      pump(gen, st, i, *shared_spec, *shared_fn);
      metrics_.active_choices--;
      flag->store(true);
    });
    threads_.emplace_back(std::move(t), flag);
  }
  return gen;
}

void EngineBridge::pump(std::shared_ptr<Generation> gen, std::shared_ptr<TokenStream> st, int index,
                        const GenerationSpec& spec, const UpdateFn& fn) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::seconds(spec.timeout_s);
  bool stopped = false, timed_out = false, cancel_sent = false;
  int n_tokens = 0;
  std::unique_ptr<TextStream> ts;
  std::string text_error;
  try {
    ts = std::make_unique<TextStream>(tok_, spec.text);
  } catch (const std::exception& e) {
    text_error = e.what();
  }
  StepEvent ev;
  for (;;) {
    if (!st->next_for(ev, 100)) {
      if (!cancel_sent && (gen->cancelled_.load() || clock::now() > deadline)) {
        timed_out = !gen->cancelled_.load();
        engine_.cancel(st->id());
        cancel_sent = true;
      }
      continue;
    }
    ChoiceUpdate u;
    u.index = index;
    try {
      if (!stopped && ts) {
        for (int t : ev.new_tokens) {
          ++n_tokens;
          TextStream::Delta d = ts->push(t);
          u.content += d.content;
          u.reasoning += d.reasoning;
          if (d.stopped) {
            stopped = true;
            if (!cancel_sent) engine_.cancel(st->id());
            cancel_sent = true;
            break;
          }
        }
        if (ev.finished && !stopped) {
          TextStream::Delta d = ts->finish();
          u.content += d.content;
          u.reasoning += d.reasoning;
        }
      }
    } catch (const std::exception& e) {
      text_error = e.what();
      stopped = true;
      if (!cancel_sent) engine_.cancel(st->id());
      cancel_sent = true;
    }
    if (!stopped || ev.finished) metrics_.generated_tokens_total += int64_t(ev.new_tokens.size());
    u.n_tokens = n_tokens;
    if (ev.finished) {
      u.finished = true;
      if (!text_error.empty()) {
        u.finish_reason = "error";
        u.error = "detokenization failed: " + text_error;
      } else if (stopped) {
        u.finish_reason = "stop";
      } else if (timed_out) {
        u.finish_reason = "timeout";
      } else {
        switch (ev.reason) {
          case FinishReason::stop: u.finish_reason = "stop"; break;
          case FinishReason::length: u.finish_reason = "length"; break;
          case FinishReason::cancelled: u.finish_reason = "cancelled"; break;
          default:
            u.finish_reason = "error";
            u.error = ev.error.empty() ? "generation failed" : ev.error;
        }
      }
      if (u.finish_reason == "error") metrics_.errors_total++;
    }
    if (!u.content.empty() || !u.reasoning.empty() || u.finished) {
      try {
        fn(u);
      } catch (...) {
        // A failing consumer must not kill the pump; the request is cancelled instead.
        gen->cancel();
      }
    }
    if (ev.finished) return;
  }
}

}  // namespace mlxcel::server
