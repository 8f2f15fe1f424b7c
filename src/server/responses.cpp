// POST /v1/responses, GET and DELETE /v1/responses/{id}: request translation, output
// items and streaming events (ResponseBuilder), and the stored responses (ResponseStore).
#include "server/responses.h"

#include "server/state.h"

namespace mlxcel::server {

// ---- ResponseBuilder ----------------------------------------------------------------

ResponseBuilder::ResponseBuilder(std::string id, int64_t created, std::string model,
                                 std::shared_ptr<const ResponseRequest> req, Emit emit)
    : id_(std::move(id)), model_(std::move(model)), created_(created), req_(std::move(req)), emit_(std::move(emit)) {}

json ResponseBuilder::response(const std::string& status) const {
  json r = {{"id", id_},
            {"object", "response"},
            {"created_at", created_},
            {"status", status},
            {"error", nullptr},
            {"incomplete_details", nullptr},
            {"model", model_},
            {"output", output_},
            {"parallel_tool_calls", true},
            {"reasoning", {{"effort", nullptr}, {"summary", nullptr}}},
            {"text", {{"format", {{"type", "text"}}}}},
            {"truncation", "disabled"},
            {"metadata", json::object()},
            {"usage", usage_}};
  for (auto& [k, v] : req_->echo.items()) r[k] = v;
  r["store"] = req_->store;
  return r;
}

void ResponseBuilder::event(const std::string& type, json data) {
  if (!emit_) return;
  data["type"] = type;
  data["sequence_number"] = seq_++;
  emit_("event: " + type + "\ndata: " + data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n");
}

void ResponseBuilder::start() {
  event("response.created", {{"response", response("in_progress")}});
  event("response.in_progress", {{"response", response("in_progress")}});
}

void ResponseBuilder::reasoning(const std::string& delta) {
  if (delta.empty() || reasoning_done_) return;
  const int index = int(output_.size());
  if (open_ == Open::none) {
    open_ = Open::reasoning;
    open_id_ = random_id("rs_");
    event("response.output_item.added",
          {{"output_index", index},
           {"item", {{"id", open_id_}, {"type", "reasoning"}, {"summary", json::array()}, {"content", json::array()}}}});
    event("response.content_part.added", {{"item_id", open_id_},
                                          {"output_index", index},
                                          {"content_index", 0},
                                          {"part", {{"type", "reasoning_text"}, {"text", ""}}}});
  }
  if (open_ != Open::reasoning) return;
  reasoning_ += delta;
  event("response.reasoning_text.delta",
        {{"item_id", open_id_}, {"output_index", index}, {"content_index", 0}, {"delta", delta}});
}

void ResponseBuilder::close_reasoning() {
  if (open_ != Open::reasoning) return;
  const int index = int(output_.size());
  size_t e = reasoning_.find_last_not_of(" \t\r\n");
  std::string text = e == std::string::npos ? "" : reasoning_.substr(0, e + 1);
  json part = {{"type", "reasoning_text"}, {"text", text}};
  event("response.reasoning_text.done",
        {{"item_id", open_id_}, {"output_index", index}, {"content_index", 0}, {"text", text}});
  event("response.content_part.done",
        {{"item_id", open_id_}, {"output_index", index}, {"content_index", 0}, {"part", part}});
  json item = {{"id", open_id_}, {"type", "reasoning"}, {"summary", json::array()}, {"content", json::array({part})}};
  event("response.output_item.done", {{"output_index", index}, {"item", item}});
  output_.push_back(item);
  open_ = Open::none;
  reasoning_done_ = true;
}

void ResponseBuilder::text(const std::string& delta) {
  if (message_done_) return;
  close_reasoning();
  const int index = int(output_.size());
  if (open_ == Open::none) {
    open_ = Open::message;
    open_id_ = random_id("msg_");
    event("response.output_item.added", {{"output_index", index},
                                         {"item",
                                          {{"id", open_id_},
                                           {"type", "message"},
                                           {"status", "in_progress"},
                                           {"role", "assistant"},
                                           {"content", json::array()}}}});
    event("response.content_part.added",
          {{"item_id", open_id_},
           {"output_index", index},
           {"content_index", 0},
           {"part", {{"type", "output_text"}, {"text", ""}, {"annotations", json::array()}, {"logprobs", json::array()}}}});
  }
  if (delta.empty()) return;
  text_ += delta;
  event("response.output_text.delta", {{"item_id", open_id_},
                                       {"output_index", index},
                                       {"content_index", 0},
                                       {"delta", delta},
                                       {"logprobs", json::array()}});
}

void ResponseBuilder::close_message() {
  if (open_ != Open::message) return;
  const int index = int(output_.size());
  json part = {{"type", "output_text"}, {"text", text_}, {"annotations", json::array()}, {"logprobs", json::array()}};
  event("response.output_text.done", {{"item_id", open_id_},
                                      {"output_index", index},
                                      {"content_index", 0},
                                      {"text", text_},
                                      {"logprobs", json::array()}});
  event("response.content_part.done",
        {{"item_id", open_id_}, {"output_index", index}, {"content_index", 0}, {"part", part}});
  json item = {{"id", open_id_},
               {"type", "message"},
               {"status", "completed"},
               {"role", "assistant"},
               {"content", json::array({part})}};
  event("response.output_item.done", {{"output_index", index}, {"item", item}});
  output_.push_back(item);
  open_ = Open::none;
  message_done_ = true;
}

json ResponseBuilder::finish(const std::vector<ToolCall>& calls, bool truncated, int n_prompt, int n_output) {
  close_reasoning();
  // Always a message unless the answer is only tool calls.
  if (calls.empty() && !message_done_ && open_ == Open::none) text("");
  close_message();
  for (const ToolCall& tc : calls) {
    const int index = int(output_.size());
    const std::string item_id = random_id("fc_");
    json item = {{"id", item_id}, {"type", "function_call"}, {"status", "in_progress"},
                 {"call_id", tc.id}, {"name", tc.name},     {"arguments", ""}};
    event("response.output_item.added", {{"output_index", index}, {"item", item}});
    event("response.function_call_arguments.delta",
          {{"item_id", item_id}, {"output_index", index}, {"delta", tc.arguments}});
    event("response.function_call_arguments.done",
          {{"item_id", item_id}, {"output_index", index}, {"name", tc.name}, {"arguments", tc.arguments}});
    item["status"] = "completed";
    item["arguments"] = tc.arguments;
    event("response.output_item.done", {{"output_index", index}, {"item", item}});
    output_.push_back(item);
  }
  usage_ = {{"input_tokens", n_prompt},
            {"input_tokens_details", {{"cached_tokens", 0}}},
            {"output_tokens", n_output},
            {"output_tokens_details", {{"reasoning_tokens", 0}}},
            {"total_tokens", n_prompt + n_output}};
  json r = response(truncated ? "incomplete" : "completed");
  if (truncated) r["incomplete_details"] = {{"reason", "max_output_tokens"}};
  event(truncated ? "response.incomplete" : "response.completed", {{"response", r}});
  r["output_text"] = text_;
  return r;
}

void ResponseBuilder::fail(const std::string& code, const std::string& message) {
  close_reasoning();
  close_message();
  json r = response("failed");
  r["error"] = {{"code", code}, {"message", message}};
  event("response.failed", {{"response", r}});
}

ordered_json assistant_message(const std::string& content, const std::vector<ToolCall>& calls) {
  ordered_json m = {{"role", "assistant"}, {"content", content}};
  if (!calls.empty()) {
    ordered_json arr = ordered_json::array();
    for (const ToolCall& tc : calls)
      arr.push_back({{"id", tc.id}, {"type", "function"}, {"function", {{"name", tc.name}, {"arguments", tc.arguments}}}});
    m["tool_calls"] = arr;
  }
  return m;
}

// ---- ResponseStore ------------------------------------------------------------------

ResponseStore::Entry* ResponseStore::find(const std::string& id) {
  auto it = index_.find(id);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return &*it->second;
}

void ResponseStore::put(const std::string& id, const json& response, const ordered_json& conversation) {
  if (max_entries_ == 0) return;
  Entry e{id, response, conversation, 0};
  e.bytes = response.dump(-1, ' ', false, json::error_handler_t::replace).size() +
            conversation.dump(-1, ' ', false, ordered_json::error_handler_t::replace).size();
  std::lock_guard<std::mutex> lk(mu_);
  if (auto it = index_.find(id); it != index_.end()) {
    bytes_ -= it->second->bytes;
    lru_.erase(it->second);
    index_.erase(it);
  }
  bytes_ += e.bytes;
  lru_.push_front(std::move(e));
  index_[id] = lru_.begin();
  while (!lru_.empty() && (lru_.size() > max_entries_ || (bytes_ > max_bytes_ && lru_.size() > 1))) {
    bytes_ -= lru_.back().bytes;
    index_.erase(lru_.back().id);
    lru_.pop_back();
  }
}

std::optional<json> ResponseStore::response(const std::string& id) {
  std::lock_guard<std::mutex> lk(mu_);
  Entry* e = find(id);
  if (!e) return std::nullopt;
  return e->response;
}

std::optional<ordered_json> ResponseStore::conversation(const std::string& id) {
  std::lock_guard<std::mutex> lk(mu_);
  Entry* e = find(id);
  if (!e) return std::nullopt;
  return e->conversation;
}

bool ResponseStore::erase(const std::string& id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = index_.find(id);
  if (it == index_.end()) return false;
  bytes_ -= it->second->bytes;
  lru_.erase(it->second);
  index_.erase(it);
  return true;
}

size_t ResponseStore::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return lru_.size();
}

// ---- routes ---------------------------------------------------------------------------

namespace {

std::string text_of_parts(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_null()) return "";
  if (!content.is_array()) bad_param(where, where + " must be a string or an array of content parts");
  std::string text;
  for (const json& part : content) {
    std::string type = part.is_object() ? part.value("type", "") : "";
    if (type != "input_text" && type != "output_text" && type != "text")
      not_supported(where, fmt::format("content parts of type '{}' are not supported", type));
    if (!part.contains("text") || !part["text"].is_string()) bad_param(where, where + " parts need a string 'text'");
    text += part["text"].get<std::string>();
  }
  return text;
}

// Input items -> chat messages: messages (developer -> system), function_call items
// (joined into one assistant turn) and function_call_output items (tool messages);
// reasoning items are dropped.
void append_input(ordered_json& msgs, const json& input) {
  if (input.is_string()) {
    msgs.push_back({{"role", "user"}, {"content", input.get<std::string>()}});
    return;
  }
  if (!input.is_array()) bad_param("input", "'input' must be a string or an array of items");
  for (size_t i = 0; i < input.size(); ++i) {
    const json& item = input[i];
    const std::string where = fmt::format("input[{}]", i);
    if (!item.is_object()) bad_param(where, where + " must be an object");
    const std::string type = item.contains("type") && item["type"].is_string() ? item["type"].get<std::string>()
                                                                              : "message";
    if (type == "message") {
      if (!item.contains("role") || !item["role"].is_string()) bad_param(where + ".role", where + ".role must be a string");
      std::string role = item["role"].get<std::string>();
      if (role == "developer") role = "system";
      if (role != "user" && role != "system" && role != "assistant")
        bad_param(where + ".role", fmt::format("{}.role must be user, assistant, system or developer, not '{}'", where, role));
      msgs.push_back({{"role", role}, {"content", text_of_parts(item.value("content", json()), where + ".content")}});
    } else if (type == "function_call") {
      for (const char* f : {"call_id", "name", "arguments"})
        if (!item.contains(f) || !item[f].is_string()) bad_param(where + "." + f, fmt::format("{}.{} must be a string", where, f));
      ordered_json call = {{"id", item["call_id"].get<std::string>()},
                           {"type", "function"},
                           {"function", {{"name", item["name"].get<std::string>()},
                                         {"arguments", item["arguments"].get<std::string>()}}}};
      if (!msgs.empty() && msgs.back()["role"] == "assistant" && msgs.back().contains("tool_calls")) {
        msgs.back()["tool_calls"].push_back(call);
      } else {
        msgs.push_back({{"role", "assistant"}, {"content", ""}, {"tool_calls", ordered_json::array({call})}});
      }
    } else if (type == "function_call_output") {
      if (!item.contains("call_id") || !item["call_id"].is_string())
        bad_param(where + ".call_id", where + ".call_id must be a string");
      const json& out = item.value("output", json());
      std::string text = out.is_string() ? out.get<std::string>() : text_of_parts(out, where + ".output");
      msgs.push_back({{"role", "tool"}, {"tool_call_id", item["call_id"].get<std::string>()}, {"content", text}});
    } else if (type == "reasoning") {
      continue;
    } else {
      not_supported(where, fmt::format("input items of type '{}' are not supported", type));
    }
  }
}

// Responses tools ({type, name, description, parameters}) -> chat tools.
json chat_tools(const json& tools) {
  if (!tools.is_array()) bad_param("tools", "'tools' must be an array");
  json out = json::array();
  for (const json& t : tools) {
    if (!t.is_object()) bad_param("tools", "each tool must be an object");
    std::string type = t.value("type", "");
    if (type != "function")
      not_supported("tools", fmt::format("tools of type '{}' are not supported (only 'function')", type));
    if (!t.contains("name") || !t["name"].is_string()) bad_param("tools", "a function tool needs a string 'name'");
    json fn = {{"name", t["name"]}};
    if (t.contains("description")) fn["description"] = t["description"];
    fn["parameters"] = t.contains("parameters") && !t["parameters"].is_null() ? t["parameters"] : json::object();
    out.push_back({{"type", "function"}, {"function", fn}});
  }
  return out;
}

}  // namespace

void handle_responses(ServerState& s, const json& body, WriterPtr w) {
  auto req = std::make_shared<ResponseRequest>();
  req->store = get_bool(body, "store").value_or(true);
  const bool stream = get_bool(body, "stream").value_or(false);
  if (body.contains("background") && get_bool(body, "background").value_or(false))
    not_supported("background", "background responses are not supported");
  if (body.contains("conversation") && !body["conversation"].is_null())
    not_supported("conversation", "conversations are not supported; use previous_response_id");
  ordered_json msgs = ordered_json::array();
  std::optional<std::string> prev = get_string(body, "previous_response_id");
  if (prev) {
    auto conv = s.responses->conversation(*prev);
    if (!conv)
      throw ApiError(400, "invalid_request_error", fmt::format("Previous response with id '{}' not found.", *prev),
                     "previous_response_id", "previous_response_not_found");
    msgs = std::move(*conv);
  }
  auto it = body.find("input");
  if (it == body.end() || it->is_null()) bad_param("input", "'input' is required");
  append_input(msgs, *it);
  req->conversation = msgs;
  json chat = json::object();
  json all = json::array();
  std::optional<std::string> instructions = get_string(body, "instructions");
  if (instructions) all.push_back({{"role", "system"}, {"content", *instructions}});
  for (auto& m : msgs) all.push_back(json::parse(m.dump()));
  chat["messages"] = all;
  for (const char* f : {"temperature", "top_p", "top_k", "min_p", "seed", "model", "chat_template_kwargs",
                        "presence_penalty", "frequency_penalty", "tool_choice"})
    if (body.contains(f)) chat[f] = body[f];
  if (body.contains("max_output_tokens")) chat["max_tokens"] = body["max_output_tokens"];
  json tools = json::array();
  if (body.contains("tools") && !body["tools"].is_null()) {
    tools = body["tools"];
    chat["tools"] = chat_tools(tools);
  }
  chat["stream"] = stream;
  if (const json* rf = body.contains("text") && body["text"].is_object() && body["text"].contains("format")
                           ? &body["text"]["format"] : nullptr;
      rf && rf->is_object() && rf->value("type", "text") != "text")
    not_supported("text.format", "structured output (text.format) is not implemented yet");
  // Echoed in the response object.
  req->echo = {{"instructions", instructions ? json(*instructions) : json(nullptr)},
               {"previous_response_id", prev ? json(*prev) : json(nullptr)},
               {"tools", tools},
               {"tool_choice", body.contains("tool_choice") ? body["tool_choice"] : json("auto")},
               {"temperature", body.contains("temperature") ? body["temperature"] : json(nullptr)},
               {"top_p", body.contains("top_p") ? body["top_p"] : json(nullptr)},
               {"max_output_tokens", body.contains("max_output_tokens") ? body["max_output_tokens"] : json(nullptr)}};
  if (body.contains("metadata") && body["metadata"].is_object()) req->echo["metadata"] = body["metadata"];
  start_responses_job(s, chat, std::move(w), std::move(req));
}

void handle_get_response(ServerState& s, const std::string& id, const WriterPtr& w) {
  auto r = s.responses->response(id);
  if (!r) throw ApiError(404, "invalid_request_error", fmt::format("Response with id '{}' not found.", id), {}, "not_found");
  w->send(json_response(*r));
}

void handle_delete_response(ServerState& s, const std::string& id, const WriterPtr& w) {
  if (!s.responses->erase(id))
    throw ApiError(404, "invalid_request_error", fmt::format("Response with id '{}' not found.", id), {}, "not_found");
  w->send(json_response({{"id", id}, {"object", "response.deleted"}, {"deleted", true}}));
}

}  // namespace mlxcel::server
