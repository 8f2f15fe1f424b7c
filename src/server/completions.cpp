// POST /v1/chat/completions, /v1/completions and llama-server's /completion: request ->
// prompt ids -> EngineBridge, and the bridge's text updates -> one JSON response or an
// SSE stream (first chat delta carries the role, one id per stream, data: [DONE],
// stream_options.include_usage adds a final usage chunk).
#include <algorithm>
#include <cmath>

#include "chat/chat_template.h"
#include "models/model.h"
#include "server/state.h"
#include "server/tool_calls.h"

namespace mlxcel::server {

namespace {

enum class Kind { chat, completion, llama, responses };

std::string lstrip(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b);
}
std::string rstrip(const std::string& s) {
  size_t e = s.find_last_not_of(" \t\r\n");
  return e == std::string::npos ? "" : s.substr(0, e + 1);
}

struct Choice {
  std::string content, reasoning;
  ToolCallFilter tools;  // streaming: holds text that may be a tool call
  bool role_sent = false, done = false;
  bool reasoning_started = false, content_started = false;  // for trimming the joins
  std::string finish, error;
  int n_tokens = 0;
  std::vector<ToolCall> calls;
  json logprobs;        // accumulated (non-streaming): chat content[] or the legacy arrays
  int64_t text_offset = 0;  // legacy text_offset: code points of the tokens so far
};

// Log-probabilities as JSON: -inf (a masked logit) becomes -9999 as in vLLM.
double lp_value(float lp) { return std::isfinite(lp) ? double(lp) : -9999.0; }
json bytes_array(const std::string& b) {
  json arr = json::array();
  for (unsigned char c : b) arr.push_back(int(c));
  return arr;
}
// Chat: choices[].logprobs.content[] entries.
json chat_logprobs(const std::vector<TokenInfo>& toks) {
  json content = json::array();
  for (const TokenInfo& t : toks) {
    json top = json::array();
    for (const TokenAlt& a : t.top)
      top.push_back({{"token", a.text}, {"logprob", lp_value(a.logprob)}, {"bytes", bytes_array(a.bytes)}});
    content.push_back({{"token", t.chosen.text},
                       {"logprob", lp_value(t.chosen.logprob)},
                       {"bytes", bytes_array(t.chosen.bytes)},
                       {"top_logprobs", top}});
  }
  return content;
}
// Legacy completions: {tokens, token_logprobs, top_logprobs, text_offset}; the top
// dict holds the n alternatives plus the chosen token. Offsets count code points of
// the generated text.
json legacy_logprobs(const std::vector<TokenInfo>& toks, int64_t& offset) {
  json out = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  for (const TokenInfo& t : toks) {
    out["tokens"].push_back(t.chosen.text);
    out["token_logprobs"].push_back(lp_value(t.chosen.logprob));
    json top = json::object();
    for (const TokenAlt& a : t.top) top[a.text] = lp_value(a.logprob);
    if (!top.contains(t.chosen.text)) top[t.chosen.text] = lp_value(t.chosen.logprob);
    out["top_logprobs"].push_back(top);
    out["text_offset"].push_back(offset);
    for (unsigned char c : t.chosen.bytes) offset += (c & 0xC0) != 0x80;
  }
  return out;
}
void append_logprobs(json& acc, const json& part, bool chat) {
  if (acc.is_null()) {
    acc = chat ? json{{"content", json::array()}, {"refusal", nullptr}} : part;
    if (!chat) return;
  }
  if (chat) {
    for (auto& e : part) acc["content"].push_back(e);
  } else {
    for (const char* k : {"tokens", "token_logprobs", "top_logprobs", "text_offset"})
      for (auto& e : part[k]) acc[k].push_back(e);
  }
}

struct Job {
  std::mutex mu;
  WriterPtr w;
  Kind kind = Kind::chat;
  std::string id, model, prompt_text;
  int64_t created = 0;
  bool stream = false, include_usage = false, parse_tools = false, want_logprobs = false;
  int n_prompt = 0, n_done = 0, timeout_s = 0;
  std::vector<Choice> choices;
  // Responses API: the output builder, the request, and the store (null: store false).
  std::unique_ptr<ResponseBuilder> rb;
  std::shared_ptr<const ResponseRequest> response_req;
  ResponseStore* store = nullptr;

  json usage() const {
    int completion = 0;
    for (auto& c : choices) completion += c.n_tokens;
    return {{"prompt_tokens", n_prompt}, {"completion_tokens", completion}, {"total_tokens", n_prompt + completion}};
  }
  void emit(const json& j) { w->write("data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"); }
  json chunk(const json& choices_arr) const {
    json j = {{"id", id},
              {"object", kind == Kind::chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model},
              {"system_fingerprint", "mlxcel"},
              {"choices", choices_arr}};
    if (include_usage) j["usage"] = nullptr;
    return j;
  }
  // One streamed piece of text (or a finish) for choice i.
  void emit_delta(int i, const json& delta, const json& finish = nullptr, const json& logprobs = nullptr) {
    if (kind == Kind::chat) {
      emit(chunk(json::array({{{"index", i}, {"delta", delta}, {"logprobs", logprobs}, {"finish_reason", finish}}})));
    } else if (kind == Kind::completion) {
      emit(chunk(json::array(
          {{{"index", i}, {"text", delta.value("content", "")}, {"logprobs", logprobs}, {"finish_reason", finish}}})));
    } else if (!delta.value("content", "").empty()) {
      emit({{"content", delta["content"]}, {"stop", false}, {"index", i}, {"id_slot", -1}, {"tokens", json::array()}});
    }
  }
  static std::string openai_finish(const Choice& c) {
    if (!c.calls.empty()) return "tool_calls";
    return c.finish == "length" ? "length" : "stop";
  }
  json tool_calls_json(const Choice& c, bool streaming) const {
    json arr = json::array();
    for (size_t k = 0; k < c.calls.size(); ++k) {
      json tc = {{"id", c.calls[k].id},
                 {"type", "function"},
                 {"function", {{"name", c.calls[k].name}, {"arguments", c.calls[k].arguments}}}};
      if (streaming) tc["index"] = int(k);
      arr.push_back(tc);
    }
    return arr;
  }
  json llama_final(const Choice& c) const {
    std::string stop_type = c.finish == "length" ? "limit" : c.finish == "stop" ? "eos" : c.finish;
    return {{"content", stream ? "" : c.content},
            {"id_slot", 0},
            {"stop", true},
            {"model", model},
            {"tokens_predicted", c.n_tokens},
            {"tokens_evaluated", n_prompt},
            {"stop_type", stop_type},
            {"stopping_word", ""},
            {"tokens_cached", 0},
            {"truncated", false}};
  }

  void on_update(const ChoiceUpdate& u) {
    std::lock_guard<std::mutex> lk(mu);
    Choice& c = choices[u.index];
    c.n_tokens = u.n_tokens;
    json lp;  // this update's logprobs
    if (want_logprobs && !u.logprobs.empty() && (kind == Kind::chat || kind == Kind::completion)) {
      if (kind == Kind::chat) lp = chat_logprobs(u.logprobs);
      else lp = legacy_logprobs(u.logprobs, c.text_offset);
      if (!stream) append_logprobs(c.logprobs, lp, kind == Kind::chat);
      if (stream && kind == Kind::chat) lp = {{"content", lp}, {"refusal", nullptr}};
    }
    // Whitespace around <think>...</think> belongs to neither part (as llama-server).
    std::string reasoning = c.reasoning_started ? u.reasoning : lstrip(u.reasoning);
    if (!reasoning.empty()) c.reasoning_started = true;
    c.reasoning += reasoning;
    if (stream && kind == Kind::responses) {
      rb->reasoning(reasoning);
      std::string visible = parse_tools ? c.tools.push(u.content) : u.content;
      if (c.reasoning_started && !c.content_started) visible = lstrip(visible);
      if (!visible.empty()) c.content_started = true, rb->text(visible);
    } else if (stream) {
      if (kind == Kind::chat && !c.role_sent) {
        emit_delta(u.index, {{"role", "assistant"}, {"content", ""}});
        c.role_sent = true;
      }
      std::string visible = parse_tools ? c.tools.push(u.content) : u.content;
      if (c.reasoning_started && !c.content_started) visible = lstrip(visible);
      if (!visible.empty()) c.content_started = true;
      // The update's logprobs ride on its last chunk (an empty delta when the text is
      // held back).
      if (!reasoning.empty() && kind == Kind::chat)
        emit_delta(u.index, {{"reasoning_content", reasoning}}, nullptr, visible.empty() ? lp : json());
      if (!visible.empty()) emit_delta(u.index, {{"content", visible}}, nullptr, lp);
      if (!lp.is_null() && visible.empty() && (reasoning.empty() || kind != Kind::chat))
        emit_delta(u.index, kind == Kind::chat ? json::object() : json{{"content", ""}}, nullptr, lp);
    } else {
      c.content += u.content;
    }
    if (!u.finished) return;
    c.done = true;
    if (!stream) {
      c.reasoning = rstrip(c.reasoning);
      if (!c.reasoning.empty()) c.content = lstrip(c.content);
    }
    c.finish = u.finish_reason;
    c.error = u.error;
    if (parse_tools) {
      ParsedToolCalls p = stream ? c.tools.finish() : parse_tool_calls(c.content);
      c.calls = std::move(p.calls);
      if (stream && !p.content.empty()) {
        if (kind == Kind::responses) rb->text(c.content_started ? p.content : lstrip(p.content));
        else emit_delta(u.index, {{"content", p.content}});
      }
      if (!stream) c.content = p.content;
      if (stream && !c.calls.empty() && kind != Kind::responses)
        emit_delta(u.index, {{"tool_calls", tool_calls_json(c, true)}});
    }
    if (stream && kind == Kind::responses) {
      // response.completed/incomplete/failed come from finish_all.
    } else if (stream) {
      if (c.finish == "error" || c.finish == "timeout") {
        std::string msg = c.finish == "timeout" ? fmt::format("generation timed out after {} s", timeout_s) : c.error;
        emit({{"error", {{"message", msg}, {"type", "server_error"}, {"param", nullptr}, {"code", c.finish}}}});
      } else if (kind == Kind::llama) {
        emit(llama_final(c));
      } else {
        emit_delta(u.index, json::object(), openai_finish(c));
      }
    }
    if (++n_done < int(choices.size())) return;
    finish_all();
  }

  // Responses: the final object (stored unless store is false), streamed or sent.
  void finish_responses() {
    Choice& c = choices[0];
    if (c.finish == "error" || c.finish == "timeout") {
      std::string msg = c.finish == "timeout" ? fmt::format("generation timed out after {} s", timeout_s) : c.error;
      if (stream) {
        rb->fail(c.finish == "timeout" ? "timeout" : "server_error", msg);
        return w->end();
      }
      if (c.finish == "timeout") return w->send(error_response(ApiError(504, "timeout_error", msg, {}, "timeout")));
      return w->send(error_response(ApiError(500, "server_error", msg)));
    }
    if (!stream) {
      rb->reasoning(c.reasoning);
      if (!c.content.empty()) rb->text(c.content);
    }
    json r = rb->finish(c.calls, c.finish == "length", n_prompt, c.n_tokens);
    if (store) {
      ordered_json conv = response_req->conversation;
      conv.push_back(assistant_message(stream ? rb->text_so_far() : c.content, c.calls));
      json stored = r;
      store->put(id, stored, conv);
    }
    if (stream) return w->end();
    w->send(json_response(r));
  }

  void finish_all() {
    if (kind == Kind::responses) return finish_responses();
    if (stream) {
      if (include_usage && kind != Kind::llama) {
        json j = chunk(json::array());
        j["usage"] = usage();
        emit(j);
      }
      if (kind != Kind::llama) w->write("data: [DONE]\n\n");
      w->end();
      return;
    }
    for (auto& c : choices) {
      if (c.finish == "error") return w->send(error_response(ApiError(500, "server_error", c.error)));
      if (c.finish == "timeout")
        return w->send(error_response(
            ApiError(504, "timeout_error", fmt::format("generation timed out after {} s", timeout_s), {}, "timeout")));
    }
    json out;
    if (kind == Kind::llama) {
      out = llama_final(choices[0]);
      out["prompt"] = prompt_text;
      return w->send(json_response(out));
    }
    json arr = json::array();
    for (size_t i = 0; i < choices.size(); ++i) {
      const Choice& c = choices[i];
      if (kind == Kind::chat) {
        json msg = {{"role", "assistant"}, {"content", c.content}};
        if (!c.reasoning.empty()) msg["reasoning_content"] = c.reasoning;
        if (!c.calls.empty()) {
          msg["tool_calls"] = tool_calls_json(c, false);
          if (c.content.empty()) msg["content"] = nullptr;
        }
        json lp = want_logprobs ? (c.logprobs.is_null() ? json{{"content", json::array()}, {"refusal", nullptr}} : c.logprobs)
                                : json(nullptr);
        arr.push_back({{"index", i}, {"message", msg}, {"logprobs", lp}, {"finish_reason", openai_finish(c)}});
      } else {
        int64_t zero = 0;
        json lp = want_logprobs ? (c.logprobs.is_null() ? legacy_logprobs({}, zero) : c.logprobs) : json(nullptr);
        arr.push_back({{"index", i}, {"text", c.content}, {"logprobs", lp}, {"finish_reason", openai_finish(c)}});
      }
    }
    out = {{"id", id},
           {"object", kind == Kind::chat ? "chat.completion" : "text_completion"},
           {"created", created},
           {"model", model},
           {"system_fingerprint", "mlxcel"},
           {"choices", arr},
           {"usage", usage()}};
    w->send(json_response(out));
  }
};

int check_context(ServerState& s, int n_prompt, int requested, const char* field) {
  if (n_prompt + 1 > s.n_ctx) {
    throw ApiError(400, "invalid_request_error",
                   fmt::format("the prompt is {} tokens long, but the context holds {} tokens (-c {}) and "
                               "at least 1 must be left to generate; shorten the prompt",
                               n_prompt, s.n_ctx, s.n_ctx),
                   field, "context_length_exceeded");
  }
  const int room = s.n_ctx - n_prompt;
  return requested < 0 ? room : std::min(requested, room);
}

void run_job(ServerState& s, std::shared_ptr<Job> job, const GenParams& gp, std::vector<int> prompt,
             TextStreamOptions text, const char* prompt_field) {
  job->n_prompt = int(prompt.size());
  job->created = unix_time();
  job->model = s.model_name;
  job->stream = gp.stream;
  job->include_usage = gp.include_usage;
  job->timeout_s = s.opts.timeout_s;
  job->want_logprobs = gp.sampling.logprobs >= 0;
  job->choices.resize(gp.n);
  const int vocab = s.model.model ? s.model.model->config().vocab_size : int(s.tokenizer().vocab_size());
  for (const auto& [t, bias] : gp.sampling.logit_bias)
    if (t >= vocab)
      bad_param("logit_bias", fmt::format("'logit_bias' token id {} is outside the vocabulary (0..{})", t, vocab - 1));
  GenerationSpec spec;
  spec.request.max_tokens = check_context(s, int(prompt.size()), gp.max_tokens, prompt_field);
  spec.request.prompt = std::move(prompt);
  spec.request.sampling = gp.sampling;
  if (!gp.ignore_eos) spec.request.stop_token_ids = s.model.stop_ids;
  spec.n = gp.n;
  spec.text = std::move(text);
  spec.text.stop = gp.stop;
  spec.timeout_s = s.opts.timeout_s;
  std::shared_ptr<Generation> gen;
  {
    // Holding the job's lock: no update is written before the stream's head.
    std::lock_guard<std::mutex> lk(job->mu);
    gen = s.bridge->start(std::move(spec), [job](const ChoiceUpdate& u) { job->on_update(u); });
    if (job->stream) {
      HttpResponse head;
      head.content_type = "text/event-stream";
      head.headers.emplace_back("X-Accel-Buffering", "no");
      job->w->start_stream(std::move(head));
      if (job->rb) job->rb->start();
    }
  }
  job->w->on_close([gen] { gen->cancel(); });
}

}  // namespace

namespace {
void start_chat(ServerState& s, const json& body, WriterPtr w, Kind kind,
                std::shared_ptr<ResponseRequest> responses = nullptr);
}

void handle_chat_completions(ServerState& s, const json& body, WriterPtr w) {
  start_chat(s, body, std::move(w), Kind::chat);
}

void start_responses_job(ServerState& s, const json& chat, WriterPtr w, std::shared_ptr<ResponseRequest> req) {
  start_chat(s, chat, std::move(w), Kind::responses, std::move(req));
}

namespace {
void start_chat(ServerState& s, const json& body, WriterPtr w, Kind kind, std::shared_ptr<ResponseRequest> responses) {
  GenParams gp = parse_gen_params(body, s.defaults, Flavor::openai_chat);
  ChatParams cp = parse_chat_params(body);
  if (!s.model.chat_template)
    throw ApiError(400, "invalid_request_error",
                   "this model has no chat template; use /v1/completions or start with --chat-template-file");
  chat::ChatTemplateOptions o;
  o.add_generation_prompt = cp.add_generation_prompt;
  o.tools = cp.tools;
  const TokenizerBundle& tb = *s.model.tokenizer;
  if (tb.bos_token) o.extra["bos_token"] = *tb.bos_token;
  if (tb.eos_token) o.extra["eos_token"] = *tb.eos_token;
  for (auto& [k, v] : cp.template_kwargs.items()) o.extra[k] = v;
  std::string prompt_text = s.model.chat_template->apply(cp.messages, o);
  auto ids = tb.tokenizer.encode(prompt_text, /*add_special_tokens=*/false);
  TextStreamOptions text;
  if (s.reasoning_capable && s.opts.reasoning_format != "none") {
    text.split_reasoning = true;
    std::string t = prompt_text;
    while (!t.empty() && std::isspace((unsigned char)t.back())) t.pop_back();
    text.starts_in_reasoning = t.size() >= 7 && t.compare(t.size() - 7, 7, "<think>") == 0;
  }
  auto job = std::make_shared<Job>();
  job->w = std::move(w);
  job->kind = kind;
  job->id = random_id(kind == Kind::responses ? "resp_" : "chatcmpl-");
  job->parse_tools = !cp.tools.is_null();
  if (kind == Kind::responses) {
    gp.n = 1;
    job->store = responses->store ? s.responses.get() : nullptr;
    job->response_req = responses;
    ResponseBuilder::Emit emit;
    if (gp.stream) emit = [w = job->w](const std::string& ev) { w->write(ev); };
    job->rb = std::make_unique<ResponseBuilder>(job->id, unix_time(), s.model_name, responses, std::move(emit));
  }
  run_job(s, job, gp, std::vector<int>(ids.begin(), ids.end()), std::move(text), "messages");
}
}  // namespace

void handle_completions(ServerState& s, const json& body, WriterPtr w, Flavor flavor) {
  GenParams gp = parse_gen_params(body, s.defaults, flavor);
  const char* field = (flavor == Flavor::llama_completion && !body.contains("prompt")) ? "content" : "prompt";
  PromptInput pi = parse_prompt(body, field);
  std::vector<int> ids = pi.ids;
  if (!pi.is_ids) {
    auto enc = s.tokenizer().encode(pi.text, /*add_special_tokens=*/true);
    ids.assign(enc.begin(), enc.end());
  }
  if (ids.empty()) bad_param(field, fmt::format("'{}' is empty", field));
  auto job = std::make_shared<Job>();
  job->w = std::move(w);
  job->kind = flavor == Flavor::llama_completion ? Kind::llama : Kind::completion;
  job->id = random_id("cmpl-");
  job->prompt_text = pi.text;
  if (job->kind == Kind::llama) gp.n = 1;
  run_job(s, job, gp, std::move(ids), TextStreamOptions{}, field);
}

}  // namespace mlxcel::server
