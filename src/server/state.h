// Internal: the state the routes share, and the route entry points.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "engine/async_engine.h"
#include "server/bridge.h"
#include "server/http.h"
#include "server/responses.h"
#include "server/server.h"
#include "server/wire.h"

namespace mlxcel::server {

struct ServerState {
  ServerOptions opts;
  ModelLoader loader;
  std::atomic<bool> ready{false};
  mutable std::mutex mu;
  std::string load_error;
  ServedModel model;
  std::unique_ptr<AsyncEngine> engine;
  std::unique_ptr<EngineBridge> bridge;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<ResponseStore> responses;  // --responses-store
  std::thread load_thread;
  int n_ctx = 0;
  std::string model_name;  // --alias, else the model id
  bool reasoning_capable = false;  // the tokenizer knows <think>
  int64_t start_time = 0;
  RequestDefaults defaults;
  std::atomic<int64_t> http_requests_total{0};

  const Tokenizer& tokenizer() const;
};

// routes.cpp: the entry point for every request (CORS, auth, routing, errors).
void handle_http(ServerState& s, HttpRequest req, WriterPtr w);
// completions.cpp
void handle_chat_completions(ServerState& s, const json& body, WriterPtr w);
void handle_completions(ServerState& s, const json& body, WriterPtr w, Flavor flavor);
// A translated Responses request (a chat body) run as a chat job with Responses output.
void start_responses_job(ServerState& s, const json& chat, WriterPtr w, std::shared_ptr<ResponseRequest> req);
// responses.cpp
void handle_responses(ServerState& s, const json& body, WriterPtr w);
void handle_get_response(ServerState& s, const std::string& id, const WriterPtr& w);
void handle_delete_response(ServerState& s, const std::string& id, const WriterPtr& w);

}  // namespace mlxcel::server
