#include "server/bridge.h"

#include <chrono>

#include "base/error.h"
#include "tokenizer/unicode.h"

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

TokenAlt EngineBridge::token_alt(int id, float logprob) const {
  TokenAlt a;
  a.id = id;
  a.logprob = logprob;
  a.text = tok_.decode({int32_t(id)}, /*skip_special_tokens=*/false);
  a.bytes = a.text;
  if (a.text.find("\xEF\xBF\xBD") == std::string::npos) return a;
  // Part of a character: recover the raw bytes from the vocabulary entry, either a
  // SentencePiece byte-fallback piece (<0xE2>) or GPT-2 byte-level characters.
  std::optional<std::string> piece = tok_.id_to_token(int32_t(id));
  if (!piece) return a;
  if (piece->size() == 6 && piece->compare(0, 3, "<0x") == 0 && piece->back() == '>') {
    try {
      a.bytes = std::string(1, char(std::stoi(piece->substr(3, 2), nullptr, 16)));
    } catch (...) {
    }
    return a;
  }
  std::string raw;
  for (char32_t c : unicode::decode(*piece)) {
    int b = unicode::unicode_to_byte(c);
    if (b < 0) return a;
    raw.push_back(char(b));
  }
  a.bytes = std::move(raw);
  return a;
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
    // The deadline and a cancel are checked whether or not events keep coming (a slow
    // generation streams tokens right up to its deadline).
    if (!cancel_sent && (gen->cancelled_.load() || clock::now() > deadline)) {
      timed_out = !gen->cancelled_.load();
      engine_.cancel(st->id());
      cancel_sent = true;
    }
    if (!st->next_for(ev, 100)) continue;
    ChoiceUpdate u;
    u.index = index;
    try {
      if (!stopped && ts) {
        for (size_t k = 0; k < ev.new_tokens.size(); ++k) {
          const int t = ev.new_tokens[k];
          ++n_tokens;
          if (k < ev.logprobs.size()) {
            const TokenLogprobs& lp = ev.logprobs[k];
            TokenInfo info;
            info.chosen = token_alt(lp.token, lp.logprob);
            for (const TokenLogprob& alt : lp.top) info.top.push_back(token_alt(alt.token, alt.logprob));
            u.logprobs.push_back(std::move(info));
          }
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
    if (!u.content.empty() || !u.reasoning.empty() || !u.logprobs.empty() || u.finished) {
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
