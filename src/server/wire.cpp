#include "server/wire.h"

#include <cctype>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>

namespace mlxcel::server {

void bad_param(const std::string& param, const std::string& message) {
  throw ApiError(400, "invalid_request_error", message, param);
}

void not_supported(const std::string& param, const std::string& message) {
  throw ApiError(400, "invalid_request_error", message, param, "not_supported");
}

HttpResponse json_response(const json& body, int status) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

HttpResponse error_response(const ApiError& e) {
  json err = {{"message", e.what()},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  HttpResponse r = json_response({{"error", err}}, e.status);
  if (e.retry_after_s > 0) r.headers.emplace_back("Retry-After", std::to_string(e.retry_after_s));
  return r;
}

HttpResponse error_response(const Error& e) {
  switch (e.kind()) {
    case ErrorKind::invalid_request:
      return error_response(ApiError(400, "invalid_request_error", e.what()));
    case ErrorKind::not_found:
      return error_response(ApiError(404, "not_found_error", e.what()));
    case ErrorKind::unsupported:
      return error_response(ApiError(400, "invalid_request_error", e.what(), {}, "not_supported"));
    case ErrorKind::resource_exhausted: {
      ApiError a(503, "unavailable_error", e.what(), {}, "server_busy");
      a.retry_after_s = 1;
      return error_response(a);
    }
    case ErrorKind::internal:
      break;
  }
  return error_response(ApiError(500, "server_error", e.what()));
}

namespace {

// Nesting depth of a JSON text (brackets outside strings); cheap and runs before parsing.
int json_depth(const std::string& s) {
  int depth = 0, max_depth = 0;
  bool in_str = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (in_str) {
      if (c == '\\') ++i;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

const char* type_name(const json& v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<double> get_number(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad_param(name, fmt::format("'{}' must be a number, not {}", name, type_name(*v)));
  double x = v->get<double>();
  if (!std::isfinite(x)) bad_param(name, fmt::format("'{}' must be finite", name));
  return x;
}

std::optional<int64_t> get_int(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_number_unsigned()) {
    uint64_t u = v->get<uint64_t>();
    return u > uint64_t(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max() : int64_t(u);
  }
  if (v->is_number_float()) {
    double x = v->get<double>();
    if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 9e15) return int64_t(x);
  }
  bad_param(name, fmt::format("'{}' must be an integer, not {}", name, type_name(*v)));
}

// logit_bias: {"token id": bias} (OpenAI), or for llama-server also [[id, bias], ...]
// with `false` for "never" (-100 here).
void parse_logit_bias(const json& body, Flavor flavor, SamplingParams& s) {
  const json* lb = field(body, "logit_bias");
  if (!lb) return;
  const char* name = "logit_bias";
  auto add = [&](int64_t id, const json& v) {
    if (id < 0 || id > std::numeric_limits<int>::max())
      bad_param(name, fmt::format("'logit_bias' token id {} is out of range", id));
    float bias;
    if (flavor == Flavor::llama_completion && v.is_boolean() && !v.get<bool>()) {
      bias = -100.0f;
    } else if (v.is_number()) {
      double b = v.get<double>();
      if (!std::isfinite(b) || b < -100.0 || b > 100.0)
        bad_param(name, fmt::format("'logit_bias' values must be between -100 and 100 (token {} has {})", id, v.dump()));
      bias = float(b);
    } else {
      bad_param(name, fmt::format("'logit_bias' values must be numbers (token {} has {})", id, type_name(v)));
    }
    s.logit_bias.emplace_back(int(id), bias);
  };
  if (lb->is_object()) {
    if (lb->size() > 1024) bad_param(name, "'logit_bias' holds at most 1024 tokens");
    for (auto& [key, v] : lb->items()) {
      size_t used = 0;
      int64_t id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (...) {
        used = 0;
      }
      if (key.empty() || used != key.size() || !std::isdigit((unsigned char)key[0]))
        bad_param(name, fmt::format("'logit_bias' keys must be token ids (non-negative integers), got '{}'", key));
      add(id, v);
    }
  } else if (lb->is_array() && flavor == Flavor::llama_completion) {
    if (lb->size() > 1024) bad_param(name, "'logit_bias' holds at most 1024 tokens");
    for (auto& pair : *lb) {
      if (!pair.is_array() || pair.size() != 2 || !(pair[0].is_number_integer() || pair[0].is_number_unsigned()))
        bad_param(name, "'logit_bias' entries must be [token id, bias] pairs");
      add(pair[0].get<int64_t>(), pair[1]);
    }
  } else {
    bad_param(name, "'logit_bias' must be an object mapping token ids to biases");
  }
}

// Chat: logprobs (bool) + top_logprobs (0..20). Completions: logprobs (0..20, the number
// of alternatives). SamplingParams::logprobs = the number of alternatives, -1 off.
void parse_logprobs(const json& body, Flavor flavor, SamplingParams& s) {
  if (flavor == Flavor::openai_chat) {
    bool on = get_bool(body, "logprobs").value_or(false);
    auto top = get_int(body, "top_logprobs");
    if (top && (*top < 0 || *top > 20))
      bad_param("top_logprobs", fmt::format("'top_logprobs' must be between 0 and 20 (got {})", *top));
    if (top && !on) bad_param("top_logprobs", "'top_logprobs' requires 'logprobs': true");
    if (on) s.logprobs = top ? int(*top) : 0;
  } else if (flavor == Flavor::openai_completion) {
    if (auto n = get_int(body, "logprobs")) {
      if (*n < 0 || *n > 20) bad_param("logprobs", fmt::format("'logprobs' must be between 0 and 20 (got {})", *n));
      s.logprobs = int(*n);
    }
  }
}

}  // namespace

std::optional<bool> get_bool(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad_param(name, fmt::format("'{}' must be a boolean, not {}", name, type_name(*v)));
  return v->get<bool>();
}

std::optional<std::string> get_string(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_string()) bad_param(name, fmt::format("'{}' must be a string, not {}", name, type_name(*v)));
  return v->get<std::string>();
}

json parse_body(const std::string& body, int max_depth) {
  if (body.empty()) bad_param("", "the request body is empty (expected a JSON object)");
  if (json_depth(body) > max_depth)
    bad_param("", fmt::format("the request JSON is nested deeper than the limit of {}", max_depth));
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    bad_param("", fmt::format("the request body is not valid JSON: {}", e.what()));
  }
  if (!j.is_object()) bad_param("", "the request body must be a JSON object");
  return j;
}

GenParams parse_gen_params(const json& body, const RequestDefaults& d, Flavor flavor) {
  GenParams p;
  p.sampling = d.sampling;
  if (!d.seed_set) p.sampling.seed = std::random_device{}();
  p.max_tokens = d.n_predict;
  p.stream = get_bool(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) bad_param("stream_options", "'stream_options' must be an object");
    p.include_usage = get_bool(*so, "include_usage").value_or(false);
  }
  p.model = get_string(body, "model").value_or("");
  p.ignore_eos = get_bool(body, "ignore_eos").value_or(false);
  if (auto n = get_int(body, "n")) {
    if (*n < 1 || *n > 16) bad_param("n", fmt::format("'n' must be between 1 and 16 (got {})", *n));
    p.n = int(*n);
  }
  // Token limit: max_completion_tokens > max_tokens > n_predict (llama-server).
  std::optional<int64_t> mt;
  const char* mt_name = "max_tokens";
  if (auto v = get_int(body, "max_tokens")) mt = v;
  if (auto v = get_int(body, "max_completion_tokens")) mt = v, mt_name = "max_completion_tokens";
  if (flavor == Flavor::llama_completion)
    if (auto v = get_int(body, "n_predict")) {
      mt = v, mt_name = "n_predict";
      if (*v < 0) mt = std::nullopt, p.max_tokens = -1;  // -1: no limit
    }
  if (mt) {
    if (*mt < 1) bad_param(mt_name, fmt::format("'{}' must be at least 1 (got {})", mt_name, *mt));
    p.max_tokens = *mt > std::numeric_limits<int>::max() ? std::numeric_limits<int>::max() : int(*mt);
  }
  SamplingParams& s = p.sampling;
  if (auto v = get_number(body, "temperature")) s.temperature = float(*v);
  if (auto v = get_number(body, "top_p")) s.top_p = float(*v);
  if (auto v = get_int(body, "top_k")) s.top_k = *v < 0 ? 0 : int(std::min<int64_t>(*v, 1 << 30));
  if (auto v = get_number(body, "min_p")) s.min_p = float(*v);
  if (auto v = get_number(body, "presence_penalty")) s.presence_penalty = float(*v);
  if (auto v = get_number(body, "frequency_penalty")) s.frequency_penalty = float(*v);
  if (auto v = get_number(body, "repetition_penalty")) s.repetition_penalty = float(*v);
  if (auto v = get_number(body, "repeat_penalty")) s.repetition_penalty = float(*v);
  if (auto v = get_int(body, "seed")) {
    if (!(flavor == Flavor::llama_completion && *v == -1)) s.seed = uint64_t(*v);
  }
  try {
    s.validate();
  } catch (const Error& e) {
    bad_param("", e.what());
  }
  if (const json* st = field(body, "stop")) {
    if (st->is_string()) {
      p.stop.push_back(st->get<std::string>());
    } else if (st->is_array()) {
      if (st->size() > 16) bad_param("stop", "'stop' holds at most 16 strings");
      for (auto& x : *st) {
        if (!x.is_string()) bad_param("stop", "'stop' must be a string or an array of strings");
        p.stop.push_back(x.get<std::string>());
      }
    } else {
      bad_param("stop", "'stop' must be a string or an array of strings");
    }
    std::erase_if(p.stop, [](const std::string& x) { return x.empty(); });
  }
  parse_logit_bias(body, flavor, s);
  parse_logprobs(body, flavor, s);
  // Features mlxcel does not implement yet: a clear 400, never ignored.
  if (auto v = get_int(body, "n_probs"); v && *v > 0) not_supported("n_probs", "'n_probs' is not supported by mlxcel yet");
  if (const json* rf = field(body, "response_format")) {
    if (!rf->is_object()) bad_param("response_format", "'response_format' must be an object");
    std::string t = get_string(*rf, "type").value_or("text");
    if (t != "text")
      not_supported("response_format", fmt::format("response_format type '{}' is not supported: structured output is not implemented yet", t));
  }
  for (const char* f : {"grammar", "json_schema"})
    if (field(body, f)) not_supported(f, fmt::format("'{}' is not supported: structured output is not implemented yet", f));
  if (auto v = get_bool(body, "echo"); v && *v) not_supported("echo", "'echo' is not supported by mlxcel");
  if (auto v = get_string(body, "suffix"); v && !v->empty()) not_supported("suffix", "'suffix' is not supported by mlxcel");
  if (auto v = get_int(body, "best_of"); v && *v > p.n) not_supported("best_of", "'best_of' greater than 'n' is not supported");
  return p;
}

ChatParams parse_chat_params(const json& body) {
  ChatParams c;
  const json* msgs = field(body, "messages");
  if (!msgs) bad_param("messages", "'messages' is required");
  if (!msgs->is_array()) bad_param("messages", "'messages' must be an array");
  if (msgs->empty()) bad_param("messages", "'messages' must not be empty");
  c.messages = ordered_json::array();
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) bad_param(where, where + " must be an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) bad_param(where + ".role", where + ".role must be a string");
    ordered_json out = ordered_json::parse(m.dump());
    auto content = m.find("content");
    if (content != m.end() && content->is_array()) {
      std::string text;
      for (auto& part : *content) {
        if (!part.is_object()) bad_param(where + ".content", where + ".content parts must be objects");
        std::string type = part.value("type", "");
        if (type == "text" && part.contains("text") && part["text"].is_string()) {
          text += part["text"].get<std::string>();
        } else if (type == "image_url" || type == "input_audio" || type == "image" || type == "file") {
          not_supported(where + ".content", fmt::format("content parts of type '{}' are not supported by this model", type));
        } else {
          bad_param(where + ".content", fmt::format("{}.content has a part of unknown type '{}'", where, type));
        }
      }
      out["content"] = text;
    } else if (content != m.end() && !content->is_string() && !content->is_null()) {
      bad_param(where + ".content", where + ".content must be a string, an array of parts, or null");
    }
    c.messages.push_back(std::move(out));
  }
  if (const json* tools = field(body, "tools")) {
    if (!tools->is_array()) bad_param("tools", "'tools' must be an array");
    for (auto& t : *tools)
      if (!t.is_object()) bad_param("tools", "each tool must be an object");
    if (!tools->empty()) c.tools = ordered_json::parse(tools->dump());
  }
  if (const json* tc = field(body, "tool_choice")) {
    if (tc->is_string()) {
      std::string v = tc->get<std::string>();
      if (v == "none") c.tools = nullptr;
      else if (v != "auto") not_supported("tool_choice", fmt::format("tool_choice '{}' is not supported (use 'auto' or 'none')", v));
    } else {
      not_supported("tool_choice", "forcing a specific tool is not supported (use 'auto' or 'none')");
    }
  }
  if (const json* kw = field(body, "chat_template_kwargs")) {
    if (!kw->is_object()) bad_param("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    c.template_kwargs = ordered_json::parse(kw->dump());
  }
  if (auto v = get_bool(body, "add_generation_prompt")) c.add_generation_prompt = *v;
  return c;
}

PromptInput parse_prompt(const json& body, const char* name) {
  PromptInput p;
  const json* v = field(body, name);
  if (!v) bad_param(name, fmt::format("'{}' is required", name));
  auto take_ids = [&](const json& arr) {
    for (auto& x : arr) {
      if (!x.is_number_integer() && !x.is_number_unsigned())
        bad_param(name, fmt::format("'{}' must be a string or an array of token ids", name));
      int64_t id = x.get<int64_t>();
      if (id < 0 || id > std::numeric_limits<int>::max()) bad_param(name, fmt::format("token id {} is out of range", id));
      p.ids.push_back(int(id));
    }
    p.is_ids = true;
  };
  if (v->is_string()) {
    p.text = v->get<std::string>();
  } else if (v->is_array() && v->size() == 1 && (*v)[0].is_string()) {
    p.text = (*v)[0].get<std::string>();
  } else if (v->is_array() && !v->empty() && (*v)[0].is_number()) {
    take_ids(*v);
  } else if (v->is_array() && v->size() > 1) {
    not_supported(name, "several prompts in one request are not supported; send one request per prompt");
  } else {
    bad_param(name, fmt::format("'{}' must be a string or an array of token ids", name));
  }
  return p;
}

std::string random_id(const std::string& prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string s = prefix;
  for (int i = 0; i < 24; ++i) s += abc[rng() % 62];
  return s;
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace mlxcel::server
