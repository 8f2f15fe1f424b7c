// Routing: CORS (preflight answered before auth), API keys, the endpoint table, and the
// small endpoints (health, models, tokenize, detokenize, apply-template, props, slots,
// metrics). Every exception becomes an OpenAI-shaped error body.
#include <algorithm>

#include "chat/chat_template.h"
#include "models/model.h"
#include "server/state.h"

namespace mlxcel::server {

const Tokenizer& ServerState::tokenizer() const { return model.tokenizer->tokenizer; }

namespace {

bool constant_time_eq(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= (unsigned char)(a[i] ^ b[i % std::max<size_t>(1, b.size())]);
  return diff == 0;
}

bool authorized(const ServerState& s, const HttpRequest& req) {
  if (s.opts.api_keys.empty()) return true;
  std::string key = req.header("x-api-key");
  std::string auth = req.header("authorization");
  if (key.empty() && auth.size() > 7 && (auth.compare(0, 7, "Bearer ") == 0 || auth.compare(0, 7, "bearer ") == 0))
    key = auth.substr(7);
  if (key.empty()) return false;
  bool ok = false;
  for (auto& k : s.opts.api_keys) ok |= constant_time_eq(key, k);
  return ok;
}

void add_cors(const ServerState& s, const HttpRequest& req, const WriterPtr& w) {
  std::string origin = req.header("origin");
  if (origin.empty()) return;
  const auto& allowed = s.opts.allowed_origins;
  bool ok = allowed.empty() || std::find(allowed.begin(), allowed.end(), "*") != allowed.end() ||
            std::find(allowed.begin(), allowed.end(), origin) != allowed.end();
  if (!ok) return;
  w->add_header("Access-Control-Allow-Origin", origin);
  w->add_header("Access-Control-Allow-Credentials", "true");
  w->add_header("Vary", "Origin");
}

ApiError not_found_route(const HttpRequest& req) {
  return ApiError(404, "not_found_error", fmt::format("no endpoint {} {}", req.method, req.path), {}, "not_found");
}

json model_meta(const ServerState& s) {
  json meta = {{"n_ctx_train", s.model.model ? s.model.model->config().max_position_embeddings : 0},
               {"n_vocab", int64_t(s.tokenizer().vocab_size())}};
  return meta;
}

void handle_models(ServerState& s, const WriterPtr& w) {
  json m = {{"id", s.model_name}, {"object", "model"}, {"created", s.start_time}, {"owned_by", "mlxcel"}};
  if (s.ready) m["meta"] = model_meta(s);
  w->send(json_response({{"object", "list"}, {"data", json::array({m})}}));
}

void handle_tokenize(ServerState& s, const json& body, const WriterPtr& w) {
  auto content = get_string(body, "content");
  if (!content) bad_param("content", "'content' is required (a string)");
  bool add_special = get_bool(body, "add_special").value_or(false);
  bool parse_special = get_bool(body, "parse_special").value_or(true);
  bool with_pieces = get_bool(body, "with_pieces").value_or(false);
  auto ids = s.tokenizer().encode(*content, add_special, parse_special);
  json tokens = json::array();
  for (int32_t id : ids) {
    if (!with_pieces) {
      tokens.push_back(id);
      continue;
    }
    std::string piece = s.tokenizer().decode({id}, false);
    tokens.push_back({{"id", id}, {"piece", piece}});
  }
  w->send(json_response({{"tokens", tokens}}));
}

void handle_detokenize(ServerState& s, const json& body, const WriterPtr& w) {
  auto it = body.find("tokens");
  if (it == body.end() || !it->is_array()) bad_param("tokens", "'tokens' is required (an array of token ids)");
  std::vector<int32_t> ids;
  const int64_t vocab = int64_t(s.tokenizer().vocab_size());
  for (auto& x : *it) {
    if (!x.is_number_integer() && !x.is_number_unsigned()) bad_param("tokens", "'tokens' must hold integers");
    int64_t id = x.get<int64_t>();
    if (id < 0 || id >= vocab) bad_param("tokens", fmt::format("token id {} is outside the vocabulary (0..{})", id, vocab - 1));
    ids.push_back(int32_t(id));
  }
  w->send(json_response({{"content", s.tokenizer().decode(ids, false)}}));
}

void handle_apply_template(ServerState& s, const json& body, const WriterPtr& w) {
  ChatParams cp = parse_chat_params(body);
  if (!s.model.chat_template) throw ApiError(400, "invalid_request_error", "this model has no chat template");
  chat::ChatTemplateOptions o;
  o.add_generation_prompt = cp.add_generation_prompt;
  o.tools = cp.tools;
  const TokenizerBundle& tb = *s.model.tokenizer;
  if (tb.bos_token) o.extra["bos_token"] = *tb.bos_token;
  if (tb.eos_token) o.extra["eos_token"] = *tb.eos_token;
  for (auto& [k, v] : cp.template_kwargs.items()) o.extra[k] = v;
  w->send(json_response({{"prompt", s.model.chat_template->apply(cp.messages, o)}}));
}

json generation_settings(const ServerState& s) {
  const SamplingParams& p = s.defaults.sampling;
  return {{"n_ctx", s.n_ctx},
          {"params",
           {{"n_predict", s.defaults.n_predict},
            {"temperature", p.temperature},
            {"top_k", p.top_k},
            {"top_p", p.top_p},
            {"min_p", p.min_p},
            {"repeat_penalty", p.repetition_penalty},
            {"presence_penalty", p.presence_penalty},
            {"frequency_penalty", p.frequency_penalty},
            {"seed", s.defaults.seed_set ? json(p.seed) : json(-1)}}}};
}

void handle_props(ServerState& s, const WriterPtr& w) {
  json j = {{"default_generation_settings", generation_settings(s)},
            {"total_slots", s.opts.n_parallel},
            {"model_alias", s.model_name},
            {"model_path", s.model.path},
            {"chat_template", s.model.tokenizer ? s.model.tokenizer->chat_template : ""},
            {"build_info", "mlxcel 0.1.0"},
            {"modalities", {{"vision", false}, {"audio", false}}}};
  if (s.model.tokenizer) {
    if (s.model.tokenizer->bos_token) j["bos_token"] = *s.model.tokenizer->bos_token;
    if (s.model.tokenizer->eos_token) j["eos_token"] = *s.model.tokenizer->eos_token;
  }
  w->send(json_response(j));
}

void handle_slots(ServerState& s, const WriterPtr& w) {
  EngineStats st = s.engine->stats();
  json arr = json::array();
  for (int i = 0; i < s.opts.n_parallel; ++i)
    arr.push_back({{"id", i}, {"n_ctx", s.n_ctx}, {"is_processing", i < st.n_running}});
  w->send(json_response(arr));
}

void handle_metrics(ServerState& s, const WriterPtr& w) {
  EngineStats st = s.engine->stats();
  BridgeMetrics& m = s.bridge->metrics();
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n{0} {3}\n", name, help, type, v);
  };
  metric("llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.", double(m.prompt_tokens_total));
  metric("llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed.",
         double(m.generated_tokens_total));
  metric("llamacpp:requests_processing", "gauge", "Number of requests processing.", double(st.n_running));
  metric("llamacpp:requests_deferred", "gauge", "Number of requests deferred.", double(st.n_waiting));
  metric("llamacpp:kv_cache_usage_ratio", "gauge", "KV-cache usage. 1 means 100 percent usage.", st.kv_usage);
  metric("mlxcel_requests_total", "counter", "Generation requests accepted.", double(m.requests_total));
  metric("mlxcel_active_generations", "gauge", "Generations (choices) in flight, cancelled ones until they end.",
         double(m.active_choices));
  metric("mlxcel_requests_rejected_busy_total", "counter", "Requests refused with 503 (queue full).",
         double(m.rejected_busy_total));
  metric("mlxcel_generation_errors_total", "counter", "Generations that ended with an error.", double(m.errors_total));
  metric("mlxcel_http_requests_total", "counter", "HTTP requests received.", double(s.http_requests_total));
  metric("mlxcel_engine_steps_total", "counter", "Engine steps run.", double(st.steps));
  metric("mlxcel_preemptions_total", "counter", "Sequences preempted.", double(st.preemptions));
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4";
  r.body = std::move(out);
  w->send(std::move(r));
}

void route(ServerState& s, const HttpRequest& req, const WriterPtr& w) {
  const std::string& p = req.path;
  const bool get = req.method == "GET" || req.method == "HEAD", post = req.method == "POST";
  if (p == "/health" || p == "/v1/health") {
    if (!s.ready) {
      std::lock_guard<std::mutex> lk(s.mu);
      if (!s.load_error.empty())
        throw ApiError(500, "server_error", "the model failed to load: " + s.load_error, {}, "load_failed");
      throw ApiError(503, "unavailable_error", "Loading model", {}, "loading");
    }
    return w->send(json_response({{"status", "ok"}}));
  }
  if (!authorized(s, req))
    throw ApiError(401, "authentication_error", "Invalid API Key", {}, "invalid_api_key");
  if (get && (p == "/v1/models" || p == "/models")) return handle_models(s, w);
  if (!s.ready) {
    ApiError e(503, "unavailable_error", "Loading model", {}, "loading");
    e.retry_after_s = 1;
    throw e;
  }
  auto body = [&] { return parse_body(req.body, s.opts.max_json_depth); };
  if (post && (p == "/v1/chat/completions" || p == "/chat/completions")) return handle_chat_completions(s, body(), w);
  if (post && (p == "/v1/completions" || p == "/completions")) return handle_completions(s, body(), w, Flavor::openai_completion);
  if (post && p == "/completion") return handle_completions(s, body(), w, Flavor::llama_completion);
  if (post && p == "/tokenize") return handle_tokenize(s, body(), w);
  if (post && p == "/detokenize") return handle_detokenize(s, body(), w);
  if (post && p == "/apply-template") return handle_apply_template(s, body(), w);
  if (get && p == "/props") return handle_props(s, w);
  if (post && p == "/props") {
    if (!s.opts.endpoint_props) throw ApiError(501, "not_supported_error", "POST /props is disabled; start with --props");
    throw ApiError(501, "not_supported_error", "changing properties through POST /props is not implemented");
  }
  if (get && p == "/slots") {
    if (!s.opts.endpoint_slots) throw ApiError(501, "not_supported_error", "the /slots endpoint is disabled (--no-slots)");
    return handle_slots(s, w);
  }
  if (get && p == "/metrics") {
    if (!s.opts.endpoint_metrics)
      throw ApiError(501, "not_supported_error", "the /metrics endpoint is disabled; start the server with --metrics");
    return handle_metrics(s, w);
  }
  if (post && (p == "/v1/responses" || p == "/responses")) return handle_responses(s, body(), w);
  for (const char* prefix : {"/v1/responses/", "/responses/"}) {
    const size_t n = std::char_traits<char>::length(prefix);
    if (p.size() > n && p.compare(0, n, prefix) == 0 && p.find('/', n) == std::string::npos) {
      const std::string id = p.substr(n);
      if (get) return handle_get_response(s, id, w);
      if (req.method == "DELETE") return handle_delete_response(s, id, w);
    }
  }
  if (p == "/v1/embeddings" || p == "/embedding" || p == "/embeddings" || p == "/infill" ||
      p == "/v1/rerank" || p == "/rerank")
    throw ApiError(501, "not_supported_error", fmt::format("{} is not implemented by mlxcel-server yet", p), {},
                   "not_implemented");
  throw not_found_route(req);
}

}  // namespace

void handle_http(ServerState& s, HttpRequest req, WriterPtr w) {
  s.http_requests_total++;
  add_cors(s, req, w);
  if (req.method == "OPTIONS") {
    // Preflight: answered before auth (browsers send no credentials here).
    HttpResponse r;
    r.status = 204;
    r.content_type.clear();
    r.headers = {{"Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"},
                 {"Access-Control-Allow-Headers",
                  req.header("access-control-request-headers").empty() ? "Authorization, Content-Type, X-Api-Key"
                                                                       : req.header("access-control-request-headers")},
                 {"Access-Control-Max-Age", "86400"}};
    return w->send(std::move(r));
  }
  try {
    route(s, req, w);
  } catch (const ApiError& e) {
    w->send(error_response(e));
  } catch (const Error& e) {
    w->send(error_response(e));
  } catch (const json::exception& e) {
    w->send(error_response(ApiError(400, "invalid_request_error", e.what())));
  } catch (const std::exception& e) {
    w->send(error_response(ApiError(500, "server_error", e.what())));
  }
}

}  // namespace mlxcel::server
