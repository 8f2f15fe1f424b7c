// engine_bench: serving-engine throughput and time to first token.
//
// Builds a model with the shapes of Qwen3-0.6B (random weights, f32; --layers cuts the
// depth), or loads a checkpoint with --model DIR (e.g. models/mlxcel-demo), and
// measures, through the Engine step API:
//  - aggregate decode tok/s with 1, 4, 16, 64 concurrent sequences (all past their
//    prompt; only decode steps are timed), and the ratio to 1 sequence;
//  - time to first token of a 2,000-token shared prefix + 16-token suffix, cold and
//    with the prefix already in the prefix cache, and their ratio.
//
//   engine_bench [--model DIR | --layers 28] [--concurrency 1,4,16,64] [--decode-steps 8]
//                [--prompt 32] [--prefix 2000] [--block-size 16]
// NOTE: designated initializers leave the other fields defaulted on purpose.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "engine/engine.h"
#include "loader/config.h"
#include "models/model.h"
#include "synthetic.h"

using namespace mlxcel;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Args {
  std::string model;  // a checkpoint folder instead of synthetic weights
  int layers = 28;
  std::vector<int> concurrency{1, 4, 16, 64};
  int decode_steps = 8;
  int prompt = 32;
  int prefix = 2000;
  int block_size = 16;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) invalid("{} needs a value", k);
      return argv[++i];
    };
    if (k == "--model") a.model = val();
    else if (k == "--layers") a.layers = std::stoi(val());
    else if (k == "--decode-steps") a.decode_steps = std::stoi(val());
    else if (k == "--prompt") a.prompt = std::stoi(val());
    else if (k == "--prefix") a.prefix = std::stoi(val());
    else if (k == "--block-size") a.block_size = std::stoi(val());
    else if (k == "--concurrency") {
      a.concurrency.clear();
      std::stringstream ss(val());
      for (std::string t; std::getline(ss, t, ',');) a.concurrency.push_back(std::stoi(t));
    } else invalid("unknown argument {}", k);
  }
  return a;
}

std::vector<int> tokens(int n, int seed, int vocab) {
  std::vector<int> t(n);
  for (int i = 0; i < n; ++i) t[i] = int((uint64_t(seed) * 2654435761u + uint64_t(i) * 40503u) % uint64_t(vocab));
  return t;
}

// Aggregate decode tok/s with c sequences, all past their prompts.
double decode_tok_s(Model& model, const Args& a, int c) {
  const int per_seq = a.prompt + a.decode_steps + 2;
  EngineConfig cfg;
  cfg.block_size = a.block_size;
  cfg.n_blocks = c * ((per_seq + a.block_size - 1) / a.block_size) + 4;
  cfg.max_num_seqs = c;
  cfg.max_num_batched_tokens = std::max(2048, c * a.prompt);
  cfg.enable_prefix_caching = false;
  Engine e(model, cfg);
  const int vocab = model.config().vocab_size;
  for (int i = 0; i < c; ++i) e.open({.prompt = tokens(a.prompt, 1000 + i, vocab), .max_tokens = a.decode_steps + 2});
  e.step();  // every prompt, one step (the budget covers them all)
  e.step();  // warm-up decode
  int64_t generated = 0;
  auto t0 = Clock::now();
  for (int s = 0; s < a.decode_steps; ++s)
    for (const auto& ev : e.step()) generated += int64_t(ev.new_tokens.size());
  const double dt = seconds_since(t0);
  if (generated != int64_t(c) * a.decode_steps)
    fmt::print(stderr, "warning: {} tokens generated, expected {}\n", generated, int64_t(c) * a.decode_steps);
  return double(generated) / dt;
}

// Seconds from open() to the first token event.
double ttft(Engine& e, const std::vector<int>& prompt) {
  auto t0 = Clock::now();
  RequestId id = e.open({.prompt = prompt, .max_tokens = 1});
  for (;;)
    for (const auto& ev : e.step())
      if (ev.id == id && !ev.new_tokens.empty()) {
        const double dt = seconds_since(t0);
        while (e.has_work()) e.step();
        return dt;
      }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args a = parse(argc, argv);
    auto t0 = Clock::now();
    std::unique_ptr<Model> model;
    if (!a.model.empty()) {
      model = load_model(a.model);
      fmt::print("model: {} ({} layers, loaded in {:.1f} s)\n", a.model, model->config().num_hidden_layers,
                 seconds_since(t0));
    } else {
      ModelConfig c = bench::qwen3_0_6b_config(a.layers);
      model = build_model(c, bench::synthetic_qwen3_weights(c));
      fmt::print("model: Qwen3-0.6B shapes, {} layers, f32 synthetic weights (built in {:.1f} s)\n", a.layers,
                 seconds_since(t0));
    }
    const ModelConfig& cfg = model->config();
    fmt::print("\n| concurrent sequences | decode tok/s | vs 1 sequence |\n| ---: | ---: | ---: |\n");
    double base = 0;
    for (int c : a.concurrency) {
      const double r = decode_tok_s(*model, a, c);
      if (base == 0) base = r;
      fmt::print("| {} | {:.2f} | {:.2f}x |\n", c, r, r / base);
      std::fflush(stdout);
    }
    const int vocab = cfg.vocab_size;
    const std::vector<int> prefix = tokens(a.prefix, 7, vocab);
    auto with_suffix = [&](int seed) {
      auto p = prefix;
      auto s = tokens(16, seed, vocab);
      p.insert(p.end(), s.begin(), s.end());
      return p;
    };
    EngineConfig ec;
    ec.block_size = a.block_size;
    ec.n_blocks = 2 * ((a.prefix + 64) / a.block_size + 2);
    ec.max_num_batched_tokens = std::max(2048, a.prefix + 64);
    Engine e(*model, ec);
    const double cold = ttft(e, with_suffix(1));
    const double warm = ttft(e, with_suffix(2));
    const auto st = e.stats();
    fmt::print("\n| TTFT, {}-token shared prefix + 16 tokens | seconds |\n| --- | ---: |\n", a.prefix);
    fmt::print("| cold (prefix not cached) | {:.3f} |\n| warm (prefix cached: {} of {} prompt tokens hit) | {:.3f} |\n",
               cold, st.prefix.hit_tokens, a.prefix + 16, warm);
    fmt::print("| cold / warm | {:.1f}x |\n", cold / warm);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "engine_bench: {}\n", e.what());
    return 1;
  }
}
