// `mlxcel generate`: raw completion. With -p TEXT it prints the generated text (with
// --chat the prompt goes through the chat template first); with --prompt-ids it prints
// the generated token ids, comma-separated, on one line.
#include <chrono>
#include <climits>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/session.h"
#include "engine/generator.h"
#include "engine/text_stream.h"

namespace mlxcel::cli {

namespace {

std::vector<int> parse_ids(const std::string& s) {
  std::vector<int> ids;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    std::string tok = s.substr(i, j - i);
    size_t used = 0;
    long v = 0;
    try {
      v = std::stol(tok, &used);
    } catch (...) {
      used = 0;
    }
    if (used == 0 || used != tok.size() || v < 0 || v > INT32_MAX) invalid("--prompt-ids: '{}' is not a token id", tok);
    ids.push_back(int(v));
    i = j + 1;
  }
  if (ids.empty()) invalid("--prompt-ids is empty");
  return ids;
}

struct GenerateArgs {
  ModelArgs model;
  std::string prompt, prompt_ids;
  bool chat = false;
  bool no_thinking = false;
  bool show_reasoning = false;
  std::vector<std::string> stop;
  int n = 16;
  int max_kv = 4096;
  bool verbose = false;
  SamplingParams sampling;
};

void run_generate(const GenerateArgs& a) {
  if (a.prompt.empty() == a.prompt_ids.empty()) invalid("pass exactly one of -p/--prompt and --prompt-ids");
  auto t0 = std::chrono::steady_clock::now();
  ModelArgs margs = a.model;
  margs.kv_tokens = a.max_kv;
  LoadedModel lm = open_model(margs);
  std::vector<int> prompt;
  std::string prompt_text = a.prompt;
  if (!a.prompt_ids.empty()) {
    prompt = parse_ids(a.prompt_ids);
  } else {
    if (a.chat) {
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      messages.push_back({{"role", "user"}, {"content", a.prompt}});
      prompt_text = lm.render_chat(messages, !a.no_thinking);
    }
    prompt = lm.encode(prompt_text, a.chat);
  }
  if (int(prompt.size()) >= a.max_kv)
    invalid("the prompt has {} tokens but the context holds {} (--max-kv-size)", prompt.size(), a.max_kv);
  Generator gen(*lm.model, std::min<int>(a.max_kv, int(prompt.size()) + std::max(a.n, 1)));
  auto t1 = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point t_first = t1;
  size_t n_out = 0;
  std::vector<int> out;
  if (!a.prompt_ids.empty()) {
    out = gen.generate(prompt, a.n, a.sampling, [&](int id) {
      if (n_out++ == 0) t_first = std::chrono::steady_clock::now();
      std::printf(n_out == 1 ? "%d" : ",%d", id);
      std::fflush(stdout);
      return true;
    }, lm.stop_ids);
    std::printf("\n");
  } else {
    TextStreamOptions so;
    so.stop = a.stop;
    so.split_reasoning = a.chat;
    TextStream ts(lm.tokenizer(), so);
    auto emit = [&](const TextStream::Delta& d) {
      if (a.show_reasoning && !d.reasoning.empty()) std::fputs(d.reasoning.c_str(), stderr);
      std::fputs(d.content.c_str(), stdout);
      std::fflush(stdout);
    };
    out = gen.generate(prompt, a.n, a.sampling, [&](int id) {
      if (n_out++ == 0) t_first = std::chrono::steady_clock::now();
      auto d = ts.push(id);
      emit(d);
      return !d.stopped;
    }, lm.stop_ids);
    emit(ts.finish());
    std::printf("\n");
  }
  auto t2 = std::chrono::steady_clock::now();
  if (a.verbose && !out.empty()) {
    double load_s = std::chrono::duration<double>(t1 - t0).count();
    double prefill_s = std::chrono::duration<double>(t_first - t1).count();
    double decode_s = std::chrono::duration<double>(t2 - t_first).count();
    std::fprintf(stderr, "load %.2f s | prompt %zu tokens, %.1f tok/s | decode %zu tokens, %.1f tok/s\n", load_s,
                 prompt.size(), prompt.size() / prefill_s, out.size() - 1,
                 out.size() > 1 ? (out.size() - 1) / decode_s : 0.0);
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Raw completion (text, or token ids with --prompt-ids)");
  cmd->add_option("-m,--model", a->model.model, "Model id or checkpoint folder")->required();
  cmd->add_option("-p,--prompt", a->prompt, "Prompt text");
  cmd->add_option("--prompt-ids", a->prompt_ids, "Prompt as comma-separated token ids (prints ids)");
  cmd->add_flag("--chat", a->chat, "Apply the chat template to the prompt (one user message)");
  cmd->add_flag("--no-thinking", a->no_thinking, "Pass enable_thinking=false to the template");
  cmd->add_flag("--show-reasoning", a->show_reasoning, "Print <think> reasoning to stderr");
  cmd->add_option("--stop", a->stop, "Stop string (repeatable)");
  cmd->add_option("-n,--max-tokens", a->n, "Tokens to generate")->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--max-kv-size", a->max_kv, "KV cache size in tokens")->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--models-dir", a->model.models_dir, "Model store folder");
  cmd->add_option("--chat-template-file", a->model.chat_template_file, "Jinja chat template to use instead");
  cmd->add_option("-t,--threads", a->model.threads, "CPU threads (default: physical cores)");
  cmd->add_option("--temp,--temperature", a->sampling.temperature, "Sampling temperature (0: greedy)");
  cmd->add_option("--top-k", a->sampling.top_k, "Top-k (0: off)");
  cmd->add_option("--top-p", a->sampling.top_p, "Top-p (1: off)");
  cmd->add_option("--min-p", a->sampling.min_p, "Min-p (0: off)");
  cmd->add_option("--repeat-penalty,--repetition-penalty", a->sampling.repetition_penalty, "Repetition penalty");
  cmd->add_option("--presence-penalty", a->sampling.presence_penalty, "Presence penalty");
  cmd->add_option("--frequency-penalty", a->sampling.frequency_penalty, "Frequency penalty");
  cmd->add_option("--seed", a->sampling.seed, "Sampling seed");
  add_memory_flags(cmd, a->model);
  cmd->add_flag("-v,--verbose", a->verbose, "Print prompt and decode speed at the end");
  cmd->callback([a] { run_generate(*a); });
}

}  // namespace mlxcel::cli
