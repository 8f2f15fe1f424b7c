// Internal: the OpenAI Responses API (POST /v1/responses, GET/DELETE /v1/responses/{id}).
// A request becomes a chat request (instructions -> system message, input items ->
// messages, function tools -> chat tools); ResponseBuilder turns the generated text into
// output items (reasoning, message, function_call) and, when streaming, into the
// Responses SSE event sequence; ResponseStore keeps finished responses for
// previous_response_id and GET (bounded LRU).
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "server/tool_calls.h"
#include "server/wire.h"

namespace mlxcel::server {

// What a Responses request carries through generation to its final object.
struct ResponseRequest {
  json echo = json::object();  // request fields echoed in the response object
  ordered_json conversation = ordered_json::array();  // prior turns + this input, without instructions
  bool store = true;
};

// Builds one response's output items. With an emit function it also writes the
// streaming events (`event: <type>` + `data: {...}` with sequence_number) as they happen:
// response.created, response.in_progress, then per item output_item.added,
// content_part.added, *.delta..., *.done, content_part.done, output_item.done, and
// finally response.completed (response.incomplete at the token limit, response.failed
// on an error).
class ResponseBuilder {
 public:
  using Emit = std::function<void(const std::string&)>;
  ResponseBuilder(std::string id, int64_t created, std::string model, std::shared_ptr<const ResponseRequest> req,
                  Emit emit);
  void start();                              // created + in_progress (streaming)
  void reasoning(const std::string& delta);  // opens the reasoning item on first text
  void text(const std::string& delta);       // closes reasoning; opens the message item
  // Closes open items, appends the function calls, emits the final lifecycle event and
  // returns the response object.
  json finish(const std::vector<ToolCall>& calls, bool truncated, int n_prompt, int n_output);
  // An error after the stream started: response.failed with the error.
  void fail(const std::string& code, const std::string& message);
  const std::string& id() const { return id_; }
  const std::string& text_so_far() const { return text_; }

 private:
  json response(const std::string& status) const;
  void event(const std::string& type, json data);
  void close_reasoning();
  void close_message();

  std::string id_, model_;
  int64_t created_;
  std::shared_ptr<const ResponseRequest> req_;
  Emit emit_;
  int64_t seq_ = 0;
  json output_ = json::array();  // finished items
  json usage_;                   // null until finish
  // The open item (at most one): its index in output order and id.
  enum class Open { none, reasoning, message } open_ = Open::none;
  std::string open_id_, reasoning_, text_;
  bool reasoning_done_ = false, message_done_ = false;
};

// Finished responses by id, least recently used evicted beyond max_entries (and a total
// of 64 MiB of JSON). Thread-safe. max_entries 0 stores nothing.
class ResponseStore {
 public:
  explicit ResponseStore(size_t max_entries, size_t max_bytes = size_t(64) << 20)
      : max_entries_(max_entries), max_bytes_(max_bytes) {}
  void put(const std::string& id, const json& response, const ordered_json& conversation);
  std::optional<json> response(const std::string& id);
  std::optional<ordered_json> conversation(const std::string& id);
  bool erase(const std::string& id);
  size_t size() const;

 private:
  struct Entry {
    std::string id;
    json response;
    ordered_json conversation;
    size_t bytes = 0;
  };
  Entry* find(const std::string& id);  // touches; under mu_
  size_t max_entries_, max_bytes_, bytes_ = 0;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recent first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

// The assistant turn of a finished response, as a chat message for the next turn.
ordered_json assistant_message(const std::string& content, const std::vector<ToolCall>& calls);

}  // namespace mlxcel::server
