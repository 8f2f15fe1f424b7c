// `mlxcel bench`: prompt processing (ppN), generation (tgN) and aggregate decode of many
// concurrent sequences through the engine, on synthetic weights with real shapes
// (--synthetic PRESET --format F) or on a checkpoint (-m). On a CUDA device the same run
// measures the card's read bandwidth and bf16 GEMM rate, and reports each figure as a
// share of them (weights bytes read per token x tok/s / bandwidth; 2 x matmul params x
// tok/s / GEMM rate).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "cli/commands.h"
#include "engine/engine.h"
#include "engine/generator.h"
#include "loader/gguf_model.h"
#include "models/model.h"
#include "models/synthetic.h"
#include "ops/ops.h"

#ifdef MLXCEL_WITH_CUDA
#include "backends/cuda/kernels.h"
#endif

namespace mlxcel::cli {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct BenchArgs {
  std::string synthetic, model, format = "bf16", device = "auto", kv = "auto";
  int layers = 0;
  std::vector<int> pp{512};
  int tg = 128;
  int reps = 3;
  std::vector<int> concurrency;
  std::vector<int> gemv;  // batch-1 GEMV designs to time tg with (CUDA)
  float temperature = 0.0f;  // > 0: also time sampled generation
  bool host_logits = false;  // also time tg with every step's logits copied to the host
  int conc_prompt = 128, conc_gen = 128;
  bool probe = true;
  std::string json_out, md_out;
};

// 2 x (sum of N x K over the matmuls a token goes through, the head included).
double flops_per_token(const ModelConfig& c) {
  const double H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const double nq = c.num_attention_heads * hd, nkv = c.num_key_value_heads * hd;
  const double layer = nq * H * 2 + nkv * H * 2 + 3 * I * H;
  return 2.0 * (layer * c.num_hidden_layers + double(c.vocab_size) * H);
}

// With MLXCEL_CUDA_PROFILE=1: the GPU time per op of the part just measured.
void print_profile(const char* what) {
#ifdef MLXCEL_WITH_CUDA
  if (cuda::profiling()) fmt::print("-- {}: {}", what, cuda::profile_report());
#else
  (void)what;
#endif
}

std::vector<int> random_prompt(int n, int vocab, uint64_t seed) {
  std::mt19937_64 r(seed);
  std::vector<int> ids(n);
  for (int& t : ids) t = int(r() % uint64_t(std::max(vocab - 1, 1)));
  return ids;
}

int argmax_row(const Tensor& logits) {
  const float* p = logits.data<float>();
  return int(std::max_element(p, p + logits.dim(-1)) - p);
}

struct PpResult { int n; double best_s, tok_s; };
struct TgResult { int n; double s, tok_s; };
struct ConcResult { int seqs; double wall_s, agg_tok_s, decode_tok_s; int64_t generated; };

void run_bench(const BenchArgs& a) {
  if (a.synthetic.empty() == a.model.empty()) invalid("pass exactly one of --synthetic PRESET and -m MODEL");
  const Device dev = parse_device(a.device);
  const DType kv = parse_kv_dtype(a.kv, dev);
  // ---- model
  auto t0 = Clock::now();
  ModelConfig cfg;
  WeightMap w;
  std::string what;
  if (!a.synthetic.empty()) {
    cfg = synthetic_config(a.synthetic, a.format, a.layers);
    w = synthetic_weights(cfg, a.format);
    what = fmt::format("synthetic {} ({} layers), {}", a.synthetic, cfg.num_hidden_layers, a.format);
  } else if (std::string g = gguf_model_file(a.model); !g.empty()) {
    GgufCheckpoint ck = load_gguf_checkpoint(g, gguf_load_options(dev));  // as load_model does
    cfg = ck.config;
    w = std::move(ck.weights);
    what = g;
  } else {
    cfg = load_model_config(a.model + "/config.json");
    w = load_checkpoint_weights(a.model);
    what = a.model;
  }
  place_weights(w, dev);
  const int64_t wbytes = decode_weight_bytes(w, cfg);
  std::unique_ptr<Model> model = build_model(cfg, w);
  w = WeightMap();
  const double load_s = seconds_since(t0);
  const double fpt = flops_per_token(cfg);

  // ---- hardware probes (same run)
  double bw = 0, gemm = 0;
  std::string card = device_name(dev);
  if (dev.type == DeviceType::cpu) card += fmt::format(" ({} kernels)", ops::cpu_kernel_isa());
#ifdef MLXCEL_WITH_CUDA
  if (dev.type == DeviceType::cuda) {
    size_t free_b = 0, total_b = 0;
    cuda::memory_info(dev.index, &free_b, &total_b, &card);
  }
  if (dev.type == DeviceType::cuda && a.probe) {
    bw = cuda::read_bandwidth(dev.index);
    gemm = cuda::bf16_gemm_flops(dev.index);
  }
#endif
  fmt::print("mlxcel bench: {} on {} (KV {}), loaded in {:.1f} s\n", what, card, dtype_name(kv), load_s);
  fmt::print("weights read per decode step: {:.3f} GB; matmul FLOPs per token: {:.3f} G\n", wbytes / 1e9, fpt / 1e9);
  if (bw > 0) fmt::print("device: read bandwidth {:.0f} GB/s, bf16 GEMM {:.0f} TFLOP/s (8192^3, cuBLAS)\n", bw / 1e9, gemm / 1e12);

  const int vocab = cfg.vocab_size;
  std::vector<PpResult> pps;
  std::vector<TgResult> tgs;
  std::vector<ConcResult> concs;
  // ---- prompt processing
  for (int n : a.pp) {
    Generator gen(*model, n + 1, 16, kv);
    const std::vector<int> prompt = random_prompt(n, vocab, uint64_t(n));
    gen.prefill(prompt);  // warm-up (allocator pools, cuBLAS heuristics)
    double best = 1e30;
    for (int r = 0; r < std::max(a.reps, 1); ++r) {
      gen.reset();
      auto t = Clock::now();
      Tensor logits = gen.prefill(prompt);
      best = std::min(best, seconds_since(t));
    }
    pps.push_back({n, best, n / best});
    fmt::print("pp{:<5} {:9.1f} tok/s  ({:.4f} s){}\n", n, n / best, best,
               gemm > 0 ? fmt::format("  {:.2f} of the bf16 GEMM rate", fpt * n / best / gemm) : "");
  }
  print_profile("prompt processing");
  // ---- generation, batch 1 (once per --gemv design on CUDA, else once)
  std::vector<int> designs = a.gemv.empty() ? std::vector<int>{-1} : a.gemv;
  for (int design : a.tg > 0 ? designs : std::vector<int>{}) {
#ifdef MLXCEL_WITH_CUDA
    const int previous = design >= 0 ? cuda::set_gemv_variants(design, design) : -1;
#else
    if (design >= 0) invalid("--gemv needs a CUDA build");
#endif
    const int prompt_len = 16;
    Generator gen(*model, prompt_len + a.tg + 9, 16, kv);
    const std::vector<int> prompt = random_prompt(prompt_len, vocab, 7);
    // Greedy decoding as `mlxcel run` does it (Generator::generate: the argmax on the
    // model's device, the next step queued before the host reads the token), timed from
    // the first new token to the last (a.tg decode steps). --host-logits adds the step-by-
    // step forms: decode_greedy (the argmax on the device, the host waits for each id
    // before the next step) and decode (each step's logits copied to the host, the argmax
    // there; the form this bench timed before session 26).
    const int modes = a.host_logits ? 3 : 1;
    for (int mode = 0; mode < modes; ++mode) {
      double s = 0;
      for (int pass = 0; pass < 2; ++pass) {  // a warm-up pass (records the graph), then the timed one
        gen.reset();
        if (mode == 0) {
          std::vector<Clock::time_point> ts;
          gen.generate(prompt, a.tg + 1, SamplingParams{}, [&](int) {
            ts.push_back(Clock::now());
            return true;
          });
          if (int(ts.size()) != a.tg + 1) invalid("bench: generation stopped after {} of {} tokens", ts.size(), a.tg + 1);
          s = std::chrono::duration<double>(ts.back() - ts.front()).count();
        } else {
          int tok = argmax_row(gen.prefill(prompt));
          auto t = Clock::now();
          for (int i = 0; i < (pass ? a.tg : 8); ++i) tok = mode == 1 ? gen.decode_greedy(tok) : argmax_row(gen.decode(tok));
          s = seconds_since(t);
        }
      }
      if (mode == 0) tgs.push_back({a.tg, s, a.tg / s});
      const char* how[] = {"", "  [step by step, argmax on the device]", "  [step by step, logits to the host]"};
      fmt::print("tg{:<5} {:9.1f} tok/s  ({:.2f} ms per token, {:.0f} GB/s of weights){}{}{}\n", a.tg, a.tg / s,
                 1e3 * s / a.tg, wbytes * a.tg / s / 1e9,
                 bw > 0 ? fmt::format("  {:.2f} of the read bandwidth", wbytes * a.tg / s / bw) : "",
                 design >= 0 ? fmt::format("  [gemv design {}]", design) : "", how[mode]);
    }
#ifdef MLXCEL_WITH_CUDA
    if (design >= 0) cuda::set_gemv_variants(previous / 16, previous % 16);
#endif
    print_profile("generation");
  }
  // ---- sampled generation, batch 1 (--temp): Generator::generate with top_p 0.95
  if (a.temperature > 0.0f && a.tg > 0) {
    const int prompt_len = 16;
    Generator gen(*model, prompt_len + a.tg + 1, 16, kv);
    const std::vector<int> prompt = random_prompt(prompt_len, vocab, 7);
    SamplingParams sp;
    sp.temperature = a.temperature;
    sp.top_p = 0.95f;
    sp.seed = 1;
    (void)gen.generate(prompt, 8, sp);  // warm-up
    gen.reset();
    auto t = Clock::now();
    const size_t n = gen.generate(prompt, a.tg, sp).size();
    const double s = seconds_since(t);
    fmt::print("tg{:<5} {:9.1f} tok/s  sampled (temperature {}, top_p 0.95, prompt included), sampler on the {}\n", n,
               double(n) / s, a.temperature, device_sampling_enabled() && dev.type != DeviceType::cpu ? "device" : "host");
  }
  // ---- aggregate decode through the engine
  for (int n : a.concurrency) {
    EngineConfig ec;
    ec.block_size = 16;
    ec.max_num_seqs = n;
    ec.max_num_batched_tokens = std::max(2048, n);
    ec.max_model_len = a.conc_prompt + a.conc_gen + 16;
    ec.n_blocks = n * ((ec.max_model_len + 15) / 16) + 16;
    ec.enable_prefix_caching = false;
    ec.kv_dtype = kv;
    Engine engine(*model, ec);
    for (int i = 0; i < n; ++i) {
      GenerationRequest req;
      req.prompt = random_prompt(a.conc_prompt, vocab, 1000 + uint64_t(i));
      req.max_tokens = a.conc_gen;
      engine.open(std::move(req));
    }
    std::vector<int> got(size_t(n) + 1, 0);
    int64_t generated = 0, decode_tokens = 0;
    double decode_s = 0;
    auto t = Clock::now();
    EngineStats before{};
    int64_t decode_steps = 0;
    while (engine.has_work()) {
      const bool all_started = std::all_of(got.begin() + 1, got.end(), [](int g) { return g > 0; });
      if (all_started && decode_steps++ == 0) before = engine.stats();
      auto ts = Clock::now();
      int64_t step_tokens = 0;
      for (const StepEvent& ev : engine.step()) {
        if (!ev.error.empty()) invalid("bench: request {} failed: {}", ev.id, ev.error);
        if (ev.id > 0 && size_t(ev.id) <= size_t(n)) got[size_t(ev.id)] += int(ev.new_tokens.size());
        step_tokens += int64_t(ev.new_tokens.size());
      }
      generated += step_tokens;
      if (all_started) decode_s += seconds_since(ts), decode_tokens += step_tokens;
    }
    const double wall = seconds_since(t);
    concs.push_back({n, wall, generated / wall, decode_s > 0 ? decode_tokens / decode_s : 0.0, generated});
    fmt::print("{:4} seqs x ({} prompt + {} new): {:9.1f} tok/s aggregate ({:.2f} s), {:9.1f} tok/s in the decode phase\n",
               n, a.conc_prompt, a.conc_gen, generated / wall, wall, concs.back().decode_tok_s);
    if (decode_steps > 0) {
      // Where a decode step's time goes (engine.h EngineStats): ms per step.
      const EngineStats after = engine.stats();
      const double k = 1e3 / double(decode_steps);
      fmt::print("     decode step {:.2f} ms: schedule {:.2f}, forward queued {:.2f}, sample (waits for the device) {:.2f}, "
                 "update {:.2f}\n",
                 decode_s * k, (after.schedule_s - before.schedule_s) * k, (after.forward_s - before.forward_s) * k,
                 (after.sample_s - before.sample_s) * k, (after.update_s - before.update_s) * k);
    }
    print_profile("engine run");
  }

  // ---- results
  nlohmann::json j = {{"what", what}, {"device", card}, {"kv_dtype", dtype_name(kv)}, {"format", a.format},
                      {"weight_bytes_per_token", wbytes}, {"matmul_flops_per_token", fpt},
                      {"read_bandwidth_Bps", bw}, {"bf16_gemm_flops", gemm}};
  for (const auto& p : pps) j["pp"].push_back({{"n", p.n}, {"seconds", p.best_s}, {"tok_s", p.tok_s}});
  for (const auto& g : tgs) j["tg"].push_back({{"n", g.n}, {"seconds", g.s}, {"tok_s", g.tok_s}});
  for (const auto& c : concs)
    j["concurrency"].push_back({{"seqs", c.seqs}, {"prompt", a.conc_prompt}, {"new", a.conc_gen}, {"wall_s", c.wall_s},
                                {"aggregate_tok_s", c.agg_tok_s}, {"decode_tok_s", c.decode_tok_s},
                                {"generated", c.generated}});
  if (!a.json_out.empty()) {
    std::ofstream o(a.json_out, std::ios::app);
    if (!o) throw_error(ErrorKind::not_found, "cannot write {}", a.json_out);
    o << j.dump() << "\n";
  }
  if (!a.md_out.empty()) {
    std::ofstream o(a.md_out, std::ios::app);
    if (!o) throw_error(ErrorKind::not_found, "cannot write {}", a.md_out);
    std::string pp_cells, tg_cell = "-";
    for (const auto& p : pps) pp_cells += fmt::format("pp{} {:.0f}; ", p.n, p.tok_s);
    if (!tgs.empty())
      tg_cell = fmt::format("{:.1f}{}", tgs[0].tok_s, bw > 0 ? fmt::format(" ({:.2f} BW)", wbytes * tgs[0].tok_s / bw) : "");
    std::string conc_cells;
    for (const auto& c : concs) conc_cells += fmt::format("{}: {:.0f}; ", c.seqs, c.decode_tok_s);
    o << fmt::format("| {} | {} | {} | {} | {} | {} |\n", what, card, a.format, pp_cells, tg_cell,
                     conc_cells.empty() ? "-" : conc_cells);
  }
}

std::vector<int> parse_int_list(const std::string& s, const char* flag, int min_value = 1) {
  std::vector<int> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    const std::string item = s.substr(i, j - i);
    if (item.empty() || item.size() > 7 || item.find_first_not_of("0123456789") != std::string::npos || std::stoi(item) < min_value)
      invalid("{}: expected integers >= {} separated by commas, got '{}'", flag, min_value, s);
    out.push_back(std::stoi(item));
    i = j + 1;
  }
  return out;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto pp = std::make_shared<std::string>("512");
  auto conc = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure prompt processing, generation and batched decode speed");
  cmd->add_option("--synthetic", a->synthetic,
                  "Random weights with the shapes of: llama-3.1-8b, llama-3.2-1b, qwen3-0.6b, qwen3-8b, tiny, or a config.json");
  cmd->add_option("-m,--model", a->model, "A checkpoint folder or GGUF file instead");
  cmd->add_option("--format", a->format, "Synthetic weight format: f32, f16, bf16, q8, q4 (MLX g64), q8_0, q4_0, q4_k (GGUF)")
      ->capture_default_str();
  cmd->add_option("--layers", a->layers, "Cut the synthetic model to this many layers")->check(CLI::Range(1, 1000));
  cmd->add_option("--device", a->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_option("--kv-dtype", a->kv, "KV cache dtype: auto (bf16 on CUDA, f32 on the CPU), f32, f16, bf16")
      ->check(CLI::IsMember({"auto", "f32", "f16", "bf16"}))
      ->capture_default_str();
  cmd->add_option("-p,--prompt", *pp, "Prompt lengths to time (comma-separated)")->capture_default_str();
  cmd->add_option("-n,--gen", a->tg, "Tokens to generate one by one (0: skip)")->check(CLI::Range(0, 1 << 20))->capture_default_str();
  cmd->add_option("--reps", a->reps, "Timed repetitions of each prompt (best is kept)")->check(CLI::Range(1, 1000));
  cmd->add_option("--concurrency", *conc, "Concurrent sequences for engine runs (comma-separated, e.g. 64,256)");
  cmd->add_option("--conc-prompt", a->conc_prompt, "Prompt tokens per sequence in engine runs")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--conc-gen", a->conc_gen, "New tokens per sequence in engine runs")->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("!--no-probe", a->probe, "Skip the bandwidth and GEMM probes");
  auto gemv = std::make_shared<std::string>();
  cmd->add_option("--gemv", *gemv, "CUDA: time tg once per batch-1 GEMV design (comma-separated, 0-6)");
  cmd->add_option("--temp", a->temperature, "Also time tg sampled at this temperature (top_p 0.95)")
      ->check(CLI::Range(0.0, 10.0));
  cmd->add_flag("--host-logits", a->host_logits,
                "Also time tg step by step: the argmax on the device, and each step's logits copied to the host");
  cmd->add_option("--json", a->json_out, "Append the results as one JSON line to this file");
  cmd->add_option("--md", a->md_out, "Append the results as one markdown table row to this file");
  cmd->callback([a, pp, conc, gemv] {
    a->pp = pp->empty() ? std::vector<int>{} : parse_int_list(*pp, "--prompt");
    a->concurrency = conc->empty() ? std::vector<int>{} : parse_int_list(*conc, "--concurrency");
    a->gemv = gemv->empty() ? std::vector<int>{} : parse_int_list(*gemv, "--gemv", 0);
    for (int d : a->gemv)
      if (d < 0 || d > 6) invalid("--gemv: designs are 0 to 6, got {}", d);
    run_bench(*a);
  });
}

}  // namespace mlxcel::cli
