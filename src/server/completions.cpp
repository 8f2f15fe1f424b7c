// POST /v1/chat/completions, /v1/completions and llama-server's /completion: request ->
// prompt ids -> EngineBridge, and the bridge's text updates -> one JSON response or an
// SSE stream (first chat delta carries the role, one id per stream, data: [DONE],
// stream_options.include_usage adds a final usage chunk).
#include <algorithm>

#include "chat/chat_template.h"
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
};

struct Job {
  std::mutex mu;
  WriterPtr w;
  Kind kind = Kind::chat;
  std::string id, model, prompt_text;
  int64_t created = 0;
  bool stream = false, include_usage = false, parse_tools = false;
  int n_prompt = 0, n_done = 0, timeout_s = 0;
  std::vector<Choice> choices;

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
  void emit_delta(int i, const json& delta, const json& finish = nullptr) {
    if (kind == Kind::chat) {
      emit(chunk(json::array({{{"index", i}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", finish}}})));
    } else if (kind == Kind::completion) {
      emit(chunk(json::array(
          {{{"index", i}, {"text", delta.value("content", "")}, {"logprobs", nullptr}, {"finish_reason", finish}}})));
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
  // POST /v1/responses (non-streaming): one assistant message, reasoning as a
  // reasoning item, tool calls as function_call items.
  json responses_body(const Choice& c) const {
    json output = json::array();
    if (!c.reasoning.empty())
      output.push_back({{"type", "reasoning"},
                        {"id", random_id("rs_")},
                        {"summary", json::array()},
                        {"content", json::array({{{"type", "reasoning_text"}, {"text", c.reasoning}}})}});
    if (!c.content.empty() || c.calls.empty())
      output.push_back({{"type", "message"},
                        {"id", random_id("msg_")},
                        {"status", "completed"},
                        {"role", "assistant"},
                        {"content", json::array({{{"type", "output_text"}, {"text", c.content}, {"annotations", json::array()}}})}});
    for (const ToolCall& tc : c.calls)
      output.push_back({{"type", "function_call"}, {"id", random_id("fc_")}, {"call_id", tc.id}, {"name", tc.name},
                        {"arguments", tc.arguments}, {"status", "completed"}});
    const bool truncated = c.finish == "length";
    return {{"id", id},
            {"object", "response"},
            {"created_at", created},
            {"status", truncated ? "incomplete" : "completed"},
            {"incomplete_details", truncated ? json({{"reason", "max_output_tokens"}}) : json(nullptr)},
            {"model", model},
            {"output", output},
            {"output_text", c.content},
            {"usage",
             {{"input_tokens", n_prompt},
              {"output_tokens", c.n_tokens},
              {"total_tokens", n_prompt + c.n_tokens}}}};
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
    // Whitespace around <think>...</think> belongs to neither part (as llama-server).
    std::string reasoning = c.reasoning_started ? u.reasoning : lstrip(u.reasoning);
    if (!reasoning.empty()) c.reasoning_started = true;
    c.reasoning += reasoning;
    if (stream) {
      if (kind == Kind::chat && !c.role_sent) {
        emit_delta(u.index, {{"role", "assistant"}, {"content", ""}});
        c.role_sent = true;
      }
      if (!reasoning.empty() && kind == Kind::chat) emit_delta(u.index, {{"reasoning_content", reasoning}});
      std::string visible = parse_tools ? c.tools.push(u.content) : u.content;
      if (c.reasoning_started && !c.content_started) visible = lstrip(visible);
      if (!visible.empty()) c.content_started = true;
      if (!visible.empty()) emit_delta(u.index, {{"content", visible}});
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
      if (stream && !p.content.empty()) emit_delta(u.index, {{"content", p.content}});
      if (!stream) c.content = p.content;
      if (stream && !c.calls.empty()) emit_delta(u.index, {{"tool_calls", tool_calls_json(c, true)}});
    }
    if (stream) {
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

  void finish_all() {
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
    if (kind == Kind::responses) return w->send(json_response(responses_body(choices[0])));
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
        arr.push_back({{"index", i}, {"message", msg}, {"logprobs", nullptr}, {"finish_reason", openai_finish(c)}});
      } else {
        arr.push_back({{"index", i}, {"text", c.content}, {"logprobs", nullptr}, {"finish_reason", openai_finish(c)}});
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
  job->choices.resize(gp.n);
  GenerationSpec spec;
  spec.request.max_tokens = check_context(s, int(prompt.size()), gp.max_tokens, prompt_field);
  spec.request.prompt = std::move(prompt);
  spec.request.sampling = gp.sampling;
  spec.request.stop_token_ids = s.model.stop_ids;
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
    }
  }
  job->w->on_close([gen] { gen->cancel(); });
}

}  // namespace

namespace {
void start_chat(ServerState& s, const json& body, WriterPtr w, Kind kind);
}

void handle_chat_completions(ServerState& s, const json& body, WriterPtr w) {
  start_chat(s, body, std::move(w), Kind::chat);
}

void handle_responses(ServerState& s, const json& body, WriterPtr w) {
  if (get_bool(body, "stream").value_or(false))
    not_supported("stream", "streaming /v1/responses is not supported yet; use /v1/chat/completions with stream");
  if (body.contains("tools") && !body["tools"].is_null() && !body["tools"].empty())
    not_supported("tools", "tools in /v1/responses are not supported yet; use /v1/chat/completions");
  if (body.contains("previous_response_id") && !body["previous_response_id"].is_null())
    not_supported("previous_response_id", "stored responses are not supported (mlxcel keeps no state)");
  json chat = json::object();
  json msgs = json::array();
  if (auto ins = get_string(body, "instructions")) msgs.push_back({{"role", "system"}, {"content", *ins}});
  auto it = body.find("input");
  if (it == body.end() || it->is_null()) bad_param("input", "'input' is required");
  if (it->is_string()) {
    msgs.push_back({{"role", "user"}, {"content", *it}});
  } else if (it->is_array()) {
    for (const json& item : *it) {
      if (!item.is_object() || !item.contains("role") || item.value("type", "message") != "message")
        not_supported("input", "only message items (role + content) are supported in 'input'");
      json m = {{"role", item["role"]}};
      const json& content = item.contains("content") ? item["content"] : json(nullptr);
      if (content.is_array()) {
        json parts = json::array();
        for (const json& part : content) {
          std::string type = part.is_object() ? part.value("type", "") : "";
          if (type != "input_text" && type != "output_text" && type != "text")
            not_supported("input", fmt::format("content parts of type '{}' are not supported", type));
          parts.push_back({{"type", "text"}, {"text", part.value("text", "")}});
        }
        m["content"] = parts;
      } else {
        m["content"] = content;
      }
      msgs.push_back(m);
    }
  } else {
    bad_param("input", "'input' must be a string or an array of messages");
  }
  chat["messages"] = msgs;
  for (const char* f : {"temperature", "top_p", "top_k", "min_p", "seed", "model", "chat_template_kwargs"})
    if (body.contains(f)) chat[f] = body[f];
  if (body.contains("max_output_tokens")) chat["max_tokens"] = body["max_output_tokens"];
  start_chat(s, chat, std::move(w), Kind::responses);
}

namespace {
void start_chat(ServerState& s, const json& body, WriterPtr w, Kind kind) {
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
  if (kind == Kind::responses) gp.n = 1;
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
