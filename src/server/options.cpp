#include "server/options.h"

#include "engine/engine.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "base/error.h"

namespace mlxcel::server {

namespace {

enum class Arg { none, value, optional_value };

struct Flag {
  std::vector<std::string> names;
  std::string env;  // LLAMA_ARG_* / MLXCEL_* ("" = none)
  Arg arg;
  std::string help;
  std::function<void(ServerOptions&, const std::string&)> apply;
};

int to_int(const std::string& flag, const std::string& v) {
  size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != v.size() || x < -2147483647LL || x > 2147483647LL)
    invalid("{}: '{}' is not an integer", flag, v);
  return int(x);
}

float to_float(const std::string& flag, const std::string& v) {
  size_t used = 0;
  float x = 0;
  try {
    x = std::stof(v, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != v.size()) invalid("{}: '{}' is not a number", flag, v);
  return x;
}

bool to_bool(const std::string& flag, const std::string& v) {
  std::string s = v;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s.empty() || s == "1" || s == "true" || s == "on" || s == "yes" || s == "enabled") return true;
  if (s == "0" || s == "false" || s == "off" || s == "no" || s == "disabled") return false;
  invalid("{}: '{}' is not a boolean (true/false)", flag, v);
}

std::vector<std::string> split_list(const std::string& v) {
  std::vector<std::string> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ',')) {
    while (!item.empty() && std::isspace((unsigned char)item.back())) item.pop_back();
    size_t b = 0;
    while (b < item.size() && std::isspace((unsigned char)item[b])) ++b;
    if (b < item.size()) out.push_back(item.substr(b));
  }
  return out;
}

void read_key_file(ServerOptions& o, const std::string& path) {
  std::ifstream in(path);
  if (!in) throw_error(ErrorKind::not_found, "--api-key-file: cannot read {}", path);
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || std::isspace((unsigned char)line.back()))) line.pop_back();
    if (!line.empty() && line[0] != '#') o.api_keys.push_back(line);
  }
}

#define INT_FIELD(field) [](ServerOptions& o, const std::string& v) { o.field = to_int(#field, v); }
#define FLOAT_SAMPLING(field) [](ServerOptions& o, const std::string& v) { o.sampling.field = to_float(#field, v); }

const std::vector<Flag>& flags() {
  static const std::vector<Flag> table = {
      {{"-m", "--model"}, "LLAMA_ARG_MODEL", Arg::value, "model id or checkpoint folder",
       [](ServerOptions& o, const std::string& v) { o.model = v; }},
      {{"--models-dir"}, "MLXCEL_MODELS_DIR", Arg::value, "model store folder",
       [](ServerOptions& o, const std::string& v) { o.models_dir = v; }},
      {{"-a", "--alias"}, "LLAMA_ARG_ALIAS", Arg::value, "model name reported by the API",
       [](ServerOptions& o, const std::string& v) { o.alias = v; }},
      {{"--chat-template-file"}, "LLAMA_ARG_CHAT_TEMPLATE_FILE", Arg::value, "Jinja chat template overriding the model's",
       [](ServerOptions& o, const std::string& v) { o.chat_template_file = v; }},
      {{"--reasoning-format"}, "LLAMA_ARG_REASONING_FORMAT", Arg::value,
       "auto|deepseek: <think> text goes to reasoning_content; none: left in content",
       [](ServerOptions& o, const std::string& v) {
         if (v != "auto" && v != "deepseek" && v != "none" && v != "deepseek-legacy")
           invalid("--reasoning-format: '{}' is not one of auto, deepseek, none", v);
         o.reasoning_format = v;
       }},
      {{"-c", "--ctx-size"}, "LLAMA_ARG_CTX_SIZE", Arg::value, "context length (0: the model's)", INT_FIELD(ctx_size)},
      {{"-np", "--parallel"}, "LLAMA_ARG_N_PARALLEL", Arg::value, "sequences decoded together", INT_FIELD(n_parallel)},
      {{"-n", "--predict", "--n-predict"}, "LLAMA_ARG_N_PREDICT", Arg::value, "default max tokens (-1: context)",
       INT_FIELD(n_predict)},
      {{"-b", "--batch-size"}, "LLAMA_ARG_BATCH", Arg::value, "tokens per engine step", INT_FIELD(n_batch)},
      {{"-t", "--threads"}, "LLAMA_ARG_THREADS", Arg::value, "CPU threads (0: all)", INT_FIELD(threads)},
      {{"-dev", "--device"}, "LLAMA_ARG_DEVICE", Arg::value, "where the model runs: cpu, cuda, cuda:N or auto",
       [](ServerOptions& o, const std::string& v) { o.device = v; }},
      {{"-ctk", "--cache-type-k", "--kv-dtype"}, "LLAMA_ARG_CACHE_TYPE_K", Arg::value,
       "KV cache dtype: auto (bf16 on CUDA, f32 on the CPU), f32, f16, bf16",
       [](ServerOptions& o, const std::string& v) {
         (void)parse_kv_dtype(v, Device::cpu());  // validates; the device picks "auto" later
         o.kv_dtype = v;
       }},
      {{"--kv-tokens"}, "MLXCEL_KV_TOKENS", Arg::value,
       "KV cache size in tokens, shared by all slots (0: every slot's context, min(-c, 4096) each, "
       "within half of the memory free after loading)",
       INT_FIELD(kv_tokens)},
      {{"--max-queue"}, "MLXCEL_MAX_QUEUE", Arg::value, "requests waiting beyond -np before 503", INT_FIELD(max_queue)},
      {{"--responses-store"}, "MLXCEL_RESPONSES_STORE", Arg::value,
       "responses kept for previous_response_id and GET /v1/responses/{id} (LRU; 0: none)",
       INT_FIELD(responses_store)},
      {{"--temp", "--temperature"}, "", Arg::value, "default temperature", FLOAT_SAMPLING(temperature)},
      {{"--top-k"}, "LLAMA_ARG_TOP_K", Arg::value, "default top-k",
       [](ServerOptions& o, const std::string& v) { o.sampling.top_k = to_int("--top-k", v); }},
      {{"--top-p"}, "", Arg::value, "default top-p", FLOAT_SAMPLING(top_p)},
      {{"--min-p"}, "", Arg::value, "default min-p", FLOAT_SAMPLING(min_p)},
      {{"--repeat-penalty"}, "", Arg::value, "default repetition penalty", FLOAT_SAMPLING(repetition_penalty)},
      {{"--presence-penalty"}, "", Arg::value, "default presence penalty", FLOAT_SAMPLING(presence_penalty)},
      {{"--frequency-penalty"}, "", Arg::value, "default frequency penalty", FLOAT_SAMPLING(frequency_penalty)},
      {{"-s", "--seed"}, "", Arg::value, "default seed",
       [](ServerOptions& o, const std::string& v) {
         long long s = to_int("--seed", v);
         o.sampling.seed = s < 0 ? 0 : uint64_t(s);
         o.seed_set = s >= 0;
       }},
      {{"--host"}, "LLAMA_ARG_HOST", Arg::value, "listen address; a path ending in .sock = Unix socket",
       [](ServerOptions& o, const std::string& v) { o.host = v; }},
      {{"--port"}, "LLAMA_ARG_PORT", Arg::value, "listen port (0: any free port)", INT_FIELD(port)},
      {{"--threads-http"}, "LLAMA_ARG_THREADS_HTTP", Arg::value, "HTTP io threads", INT_FIELD(threads_http)},
      {{"-to", "--timeout"}, "LLAMA_ARG_TIMEOUT", Arg::value, "read/write and per-request timeout, seconds",
       INT_FIELD(timeout_s)},
      {{"--ssl-key-file"}, "LLAMA_ARG_SSL_KEY_FILE", Arg::value, "PEM private key (TLS)",
       [](ServerOptions& o, const std::string& v) { o.ssl_key_file = v; }},
      {{"--ssl-cert-file"}, "LLAMA_ARG_SSL_CERT_FILE", Arg::value, "PEM certificate (TLS)",
       [](ServerOptions& o, const std::string& v) { o.ssl_cert_file = v; }},
      {{"--max-body-size"}, "MLXCEL_MAX_BODY_SIZE", Arg::value, "request body limit in bytes (413 above)",
       [](ServerOptions& o, const std::string& v) {
         int n = to_int("--max-body-size", v);
         if (n <= 0) invalid("--max-body-size must be positive");
         o.max_body_bytes = size_t(n);
       }},
      {{"--max-json-depth"}, "MLXCEL_MAX_JSON_DEPTH", Arg::value, "JSON nesting limit", INT_FIELD(max_json_depth)},
      {{"--api-key"}, "LLAMA_API_KEY", Arg::value, "API key(s), comma-separated",
       [](ServerOptions& o, const std::string& v) {
         for (auto& k : split_list(v)) o.api_keys.push_back(k);
       }},
      {{"--api-key-file"}, "LLAMA_ARG_API_KEY_FILE", Arg::value, "file with one API key per line",
       [](ServerOptions& o, const std::string& v) { read_key_file(o, v); }},
      {{"--allowed-origins", "--cors-origins"}, "MLXCEL_ALLOWED_ORIGINS", Arg::value,
       "CORS origins, comma-separated ('*' or unset: reflect the request's Origin)",
       [](ServerOptions& o, const std::string& v) { o.allowed_origins = split_list(v); }},
      {{"--metrics"}, "LLAMA_ARG_ENDPOINT_METRICS", Arg::none, "enable GET /metrics (Prometheus)",
       [](ServerOptions& o, const std::string& v) { o.endpoint_metrics = to_bool("--metrics", v); }},
      {{"--props"}, "LLAMA_ARG_ENDPOINT_PROPS", Arg::none, "enable POST /props",
       [](ServerOptions& o, const std::string& v) { o.endpoint_props = to_bool("--props", v); }},
      {{"--slots"}, "LLAMA_ARG_ENDPOINT_SLOTS", Arg::none, "enable GET /slots (default)",
       [](ServerOptions& o, const std::string& v) { o.endpoint_slots = to_bool("--slots", v); }},
      {{"--no-slots"}, "", Arg::none, "disable GET /slots",
       [](ServerOptions& o, const std::string&) { o.endpoint_slots = false; }},
      {{"-h", "--help"}, "", Arg::none, "this help", [](ServerOptions& o, const std::string&) { o.help = true; }},
      // Accepted for llama-server compatibility; they change nothing in mlxcel.
      {{"--jinja", "--no-jinja"}, "LLAMA_ARG_JINJA", Arg::none, "inert: templates are always Jinja", nullptr},
      {{"-ngl", "--gpu-layers", "--n-gpu-layers"}, "LLAMA_ARG_N_GPU_LAYERS", Arg::value, "inert", nullptr},
      {{"-fa", "--flash-attn"}, "LLAMA_ARG_FLASH_ATTN", Arg::optional_value, "inert", nullptr},
      {{"-ub", "--ubatch-size"}, "LLAMA_ARG_UBATCH", Arg::value, "inert", nullptr},
      {{"-cb", "--cont-batching", "-nocb", "--no-cont-batching"}, "LLAMA_ARG_CONT_BATCHING", Arg::none,
       "inert: batching is always continuous", nullptr},
      {{"--mlock", "--no-mmap", "--mmap"}, "", Arg::none, "inert", nullptr},
      {{"--no-webui", "--webui"}, "", Arg::none, "inert: no web UI", nullptr},
      {{"-v", "--verbose", "--log-disable"}, "", Arg::none, "inert", nullptr},
  };
  return table;
}

}  // namespace

ServerOptions parse_server_args(const std::vector<std::string>& args,
                                const std::function<const char*(const char*)>& getenv_fn) {
  auto env = [&](const char* name) -> const char* { return getenv_fn ? getenv_fn(name) : std::getenv(name); };
  ServerOptions o;
  std::set<const Flag*> given;
  std::vector<std::pair<const Flag*, std::string>> cli;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i], value;
    bool has_inline = false;
    if (a.rfind("--", 0) == 0) {
      size_t eq = a.find('=');
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_inline = true;
      }
    }
    const Flag* f = nullptr;
    for (const Flag& fl : flags())
      if (std::find(fl.names.begin(), fl.names.end(), a) != fl.names.end()) f = &fl;
    if (!f) invalid("unknown argument '{}' (see --help)", a);
    if (f->arg == Arg::value && !has_inline) {
      if (i + 1 >= args.size()) invalid("{} needs a value", a);
      value = args[++i];
    } else if (f->arg == Arg::optional_value && !has_inline && i + 1 < args.size()) {
      static const std::set<std::string> words = {"on", "off", "auto", "true", "false", "1", "0"};
      if (words.count(args[i + 1])) value = args[++i];
    } else if (f->arg == Arg::none && !has_inline) {
      value = (a.rfind("--no-", 0) == 0) ? "false" : "true";
    }
    given.insert(f);
    cli.emplace_back(f, f->apply ? value : a);
  }
  // Environment first, then the command line (which wins).
  for (const Flag& f : flags()) {
    if (f.env.empty() || given.count(&f)) continue;
    const char* v = env(f.env.c_str());
    if (!v) continue;
    if (f.apply) f.apply(o, v);
    else o.inert.push_back(f.env);
  }
  for (auto& [f, v] : cli) {
    if (f->apply) f->apply(o, v);
    else o.inert.push_back(v);  // the spelling given
  }
  if (o.port < 0 || o.port > 65535) invalid("--port {} is out of range", o.port);
  if (o.n_parallel < 1) invalid("-np must be at least 1 (got {})", o.n_parallel);
  if (o.ctx_size < 0) invalid("-c must be >= 0 (got {})", o.ctx_size);
  if (o.n_batch < 1) invalid("-b must be at least 1 (got {})", o.n_batch);
  if (o.max_queue < 0) invalid("--max-queue must be >= 0");
  if (o.kv_tokens < 0) invalid("--kv-tokens must be >= 0 (got {})", o.kv_tokens);
  if (o.responses_store < 0) invalid("--responses-store must be >= 0");
  if (o.timeout_s < 1) invalid("--timeout must be at least 1 second");
  if (o.max_json_depth < 2) invalid("--max-json-depth must be at least 2");
  if (o.ssl_key_file.empty() != o.ssl_cert_file.empty())
    invalid("TLS needs both --ssl-key-file and --ssl-cert-file");
  o.sampling.validate();
  return o;
}

std::string server_usage() {
  std::string s =
      "usage: mlxcel-server [options]   (also: mlxcel serve [options])\n"
      "llama-server compatible flags; each LLAMA_ARG_* / MLXCEL_* variable sets its flag\n"
      "when the flag is not on the command line.\n\n";
  for (const Flag& f : flags()) {
    std::string names;
    for (auto& n : f.names) names += (names.empty() ? "" : ", ") + n;
    if (f.arg == Arg::value) names += " V";
    s += fmt::format("  {:<40} {}{}\n", names, f.help, f.env.empty() ? "" : " (env " + f.env + ")");
  }
  return s;
}

}  // namespace mlxcel::server
