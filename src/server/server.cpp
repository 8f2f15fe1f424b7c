#include "server/server.h"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <limits>
#include <thread>

#include "models/memory.h"
#include "models/model.h"
#include "server/state.h"

namespace mlxcel::server {

namespace {

// The KV pool (EngineConfig::n_blocks) for -np slots: --kv-tokens when set; otherwise
// room for every slot's context (min(context, 4096) tokens each, at least 4 slots' worth
// as the engine's own default), but no more than half of the memory free now (after the
// weights), and never less than one full context.
int kv_pool_blocks(const ServerOptions& o, const Model& model, const EngineConfig& ec) {
  const ModelConfig& cfg = model.config();
  const int64_t ctx = ec.max_model_len > 0 ? ec.max_model_len
                      : cfg.max_position_embeddings > 0 ? cfg.max_position_embeddings
                                                        : 4096;
  const int64_t per_seq = std::min<int64_t>(ctx, 4096);
  int64_t tokens = o.kv_tokens;
  if (tokens <= 0) {
    tokens = int64_t(std::max(o.n_parallel, 4)) * per_seq;
    const int64_t per_token = kv_bytes_per_token(cfg, ec.kv_dtype);
    const int64_t free_b = free_device_bytes(model.device());
    if (per_token > 0 && free_b > 0) tokens = std::min(tokens, free_b / 2 / per_token);
    tokens = std::max(tokens, per_seq);
  }
  const int64_t blocks = (tokens + ec.block_size - 1) / ec.block_size;
  return int(std::min<int64_t>(blocks, std::numeric_limits<int>::max()));
}

void load_model_into(ServerState& s) {
  try {
    ServedModel m = s.loader();
    if (!m.model) invalid("the model loader returned no model");
    if (!m.tokenizer) invalid("{} has no tokenizer.json: mlxcel-server needs a tokenizer", m.path);
    EngineConfig ec;
    ec.max_num_seqs = s.opts.n_parallel;
    ec.max_num_batched_tokens = s.opts.n_batch;
    ec.max_model_len = s.opts.ctx_size;
    ec.kv_dtype = parse_kv_dtype(s.opts.kv_dtype, m.model->device());
    ec.n_blocks = kv_pool_blocks(s.opts, *m.model, ec);
    auto engine = std::make_unique<AsyncEngine>(*m.model, ec, size_t(s.opts.n_parallel + s.opts.max_queue));
    const int max_len = m.model->config().max_position_embeddings > 0 ? m.model->config().max_position_embeddings : 4096;
    s.n_ctx = s.opts.ctx_size > 0 ? s.opts.ctx_size : max_len;
    s.reasoning_capable = m.tokenizer->tokenizer.token_to_id("<think>").has_value() ||
                          m.tokenizer->chat_template.find("<think>") != std::string::npos;
    s.bridge = std::make_unique<EngineBridge>(*engine, m.tokenizer->tokenizer, s.opts.n_parallel + s.opts.max_queue);
    s.engine = std::move(engine);
    if (s.model_name.empty()) s.model_name = m.id.empty() ? m.path : m.id;
    s.model = std::move(m);
    s.ready = true;
    std::fprintf(stderr, "mlxcel-server: model %s loaded (context %d, %d slots, KV cache %lld tokens)\n",
                 s.model_name.c_str(), s.n_ctx, s.opts.n_parallel, (long long)ec.n_blocks * ec.block_size);
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lk(s.mu);
    s.load_error = e.what();
    std::fprintf(stderr, "mlxcel-server: error: the model failed to load: %s\n", e.what());
  }
}

}  // namespace

Server::Server(ServerOptions opts, ModelLoader load) : state_(std::make_shared<ServerState>()) {
  state_->opts = std::move(opts);
  state_->loader = std::move(load);
  state_->model_name = state_->opts.alias;
  state_->start_time = unix_time();
  state_->defaults.sampling = state_->opts.sampling;
  state_->defaults.seed_set = state_->opts.seed_set;
  state_->defaults.n_predict = state_->opts.n_predict;
  state_->responses = std::make_unique<ResponseStore>(size_t(state_->opts.responses_store));
}

Server::~Server() { stop(); }

void Server::start() {
  ServerState& s = *state_;
  HttpConfig hc;
  hc.host = s.opts.host;
  hc.port = s.opts.port;
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  hc.n_threads = s.opts.threads_http > 0 ? s.opts.threads_http : std::min(4, cores);
  hc.max_body_bytes = s.opts.max_body_bytes;
  hc.idle_timeout_s = s.opts.timeout_s;
  hc.ssl_key_file = s.opts.ssl_key_file;
  hc.ssl_cert_file = s.opts.ssl_cert_file;
  std::weak_ptr<ServerState> weak = state_;
  s.http = std::make_unique<HttpServer>(hc, [weak](HttpRequest req, WriterPtr w) {
    if (auto st = weak.lock()) handle_http(*st, std::move(req), std::move(w));
  });
  s.http->start();
  s.load_thread = std::thread([st = state_] { load_model_into(*st); });
}

int Server::port() const { return state_->http ? state_->http->port() : 0; }
bool Server::ready() const { return state_->ready; }
std::string Server::load_error() const {
  std::lock_guard<std::mutex> lk(state_->mu);
  return state_->load_error;
}

void Server::stop() {
  ServerState& s = *state_;
  if (s.load_thread.joinable()) s.load_thread.join();
  if (s.http) s.http->stop();
  if (s.engine) s.engine->stop();  // open streams end; the pumps return
  s.bridge.reset();
  s.http.reset();
  s.engine.reset();
}

void Server::wait() {
  if (state_->http) state_->http->wait();
}

int server_main(const std::vector<std::string>& args, const std::function<ServedModel(const ServerOptions&)>& load) {
  ServerOptions opts;
  try {
    opts = parse_server_args(args);
  } catch (const Error& e) {
    std::fprintf(stderr, "mlxcel-server: error: %s\n", e.what());
    return 1;
  }
  if (opts.help) {
    std::fputs(server_usage().c_str(), stdout);
    return 0;
  }
  for (auto& f : opts.inert) std::fprintf(stderr, "mlxcel-server: note: %s is accepted and has no effect\n", f.c_str());
  // SIGINT/SIGTERM are taken by sigwait below; every thread started from here blocks them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  Server srv(opts, [&load, opts] { return load(opts); });
  try {
    srv.start();
  } catch (const Error& e) {
    std::fprintf(stderr, "mlxcel-server: error: %s\n", e.what());
    return 1;
  }
  const bool is_unix = opts.host.size() > 5 && opts.host.ends_with(".sock");
  if (is_unix) std::fprintf(stderr, "mlxcel-server: listening on unix:%s\n", opts.host.c_str());
  else
    std::fprintf(stderr, "mlxcel-server: listening on %s://%s:%d\n", opts.ssl_key_file.empty() ? "http" : "https",
                 opts.host.c_str(), srv.port());
  int sig = 0;
  sigwait(&set, &sig);
  std::fprintf(stderr, "mlxcel-server: signal %d, shutting down\n", sig);
  srv.stop();
  return 0;
}

}  // namespace mlxcel::server
