// `mlxcel run [MODEL] [-p PROMPT]`: chat with a model. With -p, one answer and exit;
// otherwise a REPL: multi-turn through the chat template, tokens streamed as they
// come, /clear and /exit, Ctrl-C stops the current answer (not the program).
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/session.h"
#include "engine/generator.h"
#include "engine/text_stream.h"

namespace mlxcel::cli {

namespace {

std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }

struct RunArgs {
  ModelArgs model;
  std::string prompt;
  std::string system;
  int n = 512;
  int max_kv = 4096;
  bool show_reasoning = false;
  bool no_thinking = false;
  SamplingParams sampling;
};

// Generates one assistant answer for `messages`, streaming it to stdout. Returns the
// answer's content (reasoning excluded).
std::string answer(LoadedModel& lm, const RunArgs& a, const nlohmann::ordered_json& messages) {
  std::string prompt_text = lm.render_chat(messages, !a.no_thinking);
  std::vector<int> prompt = lm.encode(prompt_text, /*is_chat=*/true);
  const int ctx = std::min<int>(a.max_kv, int(prompt.size()) + a.n);
  if (int(prompt.size()) >= a.max_kv)
    invalid("the conversation has {} tokens, more than the context of {} (--max-kv-size; /clear starts over)",
            prompt.size(), a.max_kv);
  Generator gen(*lm.model, ctx);
  TextStreamOptions so;
  so.split_reasoning = true;
  std::string trimmed = prompt_text;
  while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == ' ')) trimmed.pop_back();
  so.starts_in_reasoning = trimmed.size() >= 7 && trimmed.compare(trimmed.size() - 7, 7, "<think>") == 0;
  TextStream ts(lm.tokenizer(), so);
  std::string content;
  bool in_reasoning_shown = false;
  auto emit = [&](const TextStream::Delta& d) {
    if (!d.reasoning.empty() && a.show_reasoning) {
      if (!in_reasoning_shown) std::fputs("\x1b[2m", stdout);  // dim
      in_reasoning_shown = true;
      std::fputs(d.reasoning.c_str(), stdout);
    }
    if (!d.content.empty()) {
      if (in_reasoning_shown) std::fputs("\x1b[0m\n", stdout), in_reasoning_shown = false;
      std::fputs(d.content.c_str(), stdout);
      content += d.content;
    }
    std::fflush(stdout);
  };
  g_interrupted = false;
  gen.generate(prompt, a.n, a.sampling, [&](int id) {
    auto d = ts.push(id);
    emit(d);
    return !d.stopped && !g_interrupted;
  }, lm.stop_ids);
  emit(ts.finish());
  if (in_reasoning_shown) std::fputs("\x1b[0m", stdout);
  std::fputs("\n", stdout);
  if (g_interrupted) std::fputs("[interrupted]\n", stderr);
  return content;
}

void run_repl(const RunArgs& a) {
  ModelArgs margs = a.model;
  margs.kv_tokens = a.max_kv;
  LoadedModel lm = open_model(margs);
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  auto reset = [&] {
    messages = nlohmann::ordered_json::array();
    if (!a.system.empty()) messages.push_back({{"role", "system"}, {"content", a.system}});
  };
  reset();
  if (!a.prompt.empty()) {
    messages.push_back({{"role", "user"}, {"content", a.prompt}});
    answer(lm, a, messages);
    return;
  }
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sa.sa_flags = SA_RESTART;  // Ctrl-C at the prompt must not end the read (and the REPL)
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  std::fprintf(stderr, "mlxcel: chatting with %s. /clear starts over, /exit (or Ctrl-D) quits, Ctrl-C stops an answer.\n",
               lm.repo_id.c_str());
  std::string line;
  for (;;) {
    std::fputs(">>> ", stdout);
    std::fflush(stdout);
    if (!std::getline(std::cin, line)) {  // Ctrl-D
      std::fputs("\n", stdout);
      break;
    }
    if (line == "/exit" || line == "/quit" || line == "/bye") break;
    if (line == "/clear") {
      reset();
      std::fputs("(conversation cleared)\n", stdout);
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    try {
      std::string reply = answer(lm, a, messages);
      messages.push_back({{"role", "assistant"}, {"content", reply}});
    } catch (const Error& e) {
      messages.erase(messages.end() - 1);
      std::fprintf(stderr, "error: %s\n", e.what());
    }
  }
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand("run", "Chat with a model (REPL, or one answer with -p)");
  cmd->add_option("model", a->model.model, "Model id (owner/name, name) or folder; default: the bundled demo");
  cmd->add_option("-p,--prompt", a->prompt, "Answer this one message and exit");
  cmd->add_option("-s,--system", a->system, "System message");
  cmd->add_option("-n,--max-tokens", a->n, "Most tokens per answer")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--max-kv-size", a->max_kv, "Context size in tokens")->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--models-dir", a->model.models_dir, "Model store folder");
  cmd->add_option("--chat-template-file", a->model.chat_template_file, "Jinja chat template to use instead");
  cmd->add_option("-t,--threads", a->model.threads, "CPU threads");
  add_memory_flags(cmd, a->model);
  cmd->add_flag("--show-reasoning", a->show_reasoning, "Print the model's <think> reasoning (dimmed)");
  cmd->add_flag("--no-thinking", a->no_thinking, "Pass enable_thinking=false to the template");
  cmd->add_option("--temp,--temperature", a->sampling.temperature, "Sampling temperature (0: greedy)");
  cmd->add_option("--top-k", a->sampling.top_k, "Top-k (0: off)");
  cmd->add_option("--top-p", a->sampling.top_p, "Top-p (1: off)");
  cmd->add_option("--min-p", a->sampling.min_p, "Min-p (0: off)");
  cmd->add_option("--seed", a->sampling.seed, "Sampling seed");
  cmd->callback([a] { run_repl(*a); });
}

}  // namespace mlxcel::cli
