// mlxcel-server's command line: llama-server flags (and their LLAMA_ARG_* environment
// variables) plus mlxcel's own (MLXCEL_*). The command line wins over the environment.
// `mlxcel serve` and `mlxcel-server` share this parser; docs/server.md lists every flag.
//
//   ServerOptions o = parse_server_args({"-m", "models/mlxcel-demo", "--port", "8081"});
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampler.h"

namespace mlxcel::server {

struct ServerOptions {
  // Model.
  std::string model;               // -m: id, path (empty: the CLI's default model)
  std::string models_dir;          // --models-dir
  std::string alias;               // -a: the model name the API reports
  std::string chat_template_file;  // --chat-template-file
  std::string reasoning_format = "auto";  // --reasoning-format: auto|deepseek|none
  // Engine.
  int ctx_size = 0;       // -c: 0 = the model's context
  int n_parallel = 4;     // -np: sequences decoded together
  int n_predict = -1;     // -n: default max tokens (-1: until the context is full)
  int n_batch = 2048;     // -b: tokens per engine step
  int threads = 0;        // -t: CPU threads (0: all cores)
  std::string device = "auto";  // --device: cpu, cuda, cuda:N or auto (a CUDA GPU when present)
  std::string kv_dtype = "auto";  // --kv-dtype / -ctk: auto (bf16 on CUDA, f32 on the CPU), f32, f16, bf16
  int kv_tokens = 0;      // --kv-tokens: KV cache tokens shared by the slots (0: see server.cpp kv_pool_tokens)
  int max_queue = 64;     // --max-queue: requests waiting beyond -np before 503
  int responses_store = 1024;  // --responses-store: stored /v1/responses (LRU), 0: none
  SamplingParams sampling;  // --temp, --top-k, ... (request defaults)
  bool seed_set = false;
  // Transport.
  std::string host = "127.0.0.1";  // a name ending in .sock listens on a Unix socket
  int port = 8080;
  int threads_http = 0;            // 0: min(4, cores)
  int timeout_s = 600;             // -to: read/write and per-request timeout
  std::string ssl_key_file, ssl_cert_file;
  size_t max_body_bytes = 8u << 20;  // --max-body-size
  int max_json_depth = 64;           // --max-json-depth
  // Security.
  std::vector<std::string> api_keys;   // --api-key (comma-separated), --api-key-file lines
  std::vector<std::string> allowed_origins;  // empty: reflect any Origin
  // Endpoints.
  bool endpoint_metrics = false;  // --metrics
  bool endpoint_props = false;    // --props (POST /props)
  bool endpoint_slots = true;     // --slots / --no-slots
  bool help = false;
  std::vector<std::string> inert;  // accepted llama-server flags that change nothing here
};

// Parses argv-style arguments (without the program name). `getenv` defaults to
// std::getenv. Throws Error(invalid_request) naming the flag on bad input.
ServerOptions parse_server_args(const std::vector<std::string>& args,
                                const std::function<const char*(const char*)>& getenv = {});

// The --help text.
std::string server_usage();

}  // namespace mlxcel::server
