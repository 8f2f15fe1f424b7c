#include "server/tool_calls.h"

#include <nlohmann/json.hpp>

#include "engine/text_stream.h"
#include "server/wire.h"

namespace mlxcel::server {

namespace {

bool parse_one(const std::string& body, ToolCall& out) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(body);
  } catch (const nlohmann::json::exception&) {
    return false;
  }
  if (!j.is_object()) return false;
  auto name = j.find("name");
  if (name == j.end() || !name->is_string() || name->get<std::string>().empty()) return false;
  out.name = name->get<std::string>();
  auto args = j.find("arguments");
  if (args == j.end()) args = j.find("parameters");
  if (args == j.end() || args->is_null()) out.arguments = "{}";
  else if (args->is_string()) out.arguments = args->get<std::string>();
  else out.arguments = args->dump();
  out.id = random_id("call_");
  return true;
}

}  // namespace

ParsedToolCalls parse_tool_calls(const std::string& text) {
  ParsedToolCalls r;
  const std::string open = kToolCallOpen, close = kToolCallClose;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t a = text.find(open, pos);
    if (a == std::string::npos) break;
    size_t body_start = a + open.size();
    size_t b = text.find(close, body_start);
    // An unterminated last block (generation ended inside it) is still tried.
    size_t body_end = b == std::string::npos ? text.size() : b;
    size_t next = b == std::string::npos ? text.size() : b + close.size();
    ToolCall call;
    if (parse_one(text.substr(body_start, body_end - body_start), call)) {
      r.content += text.substr(pos, a - pos);
      r.calls.push_back(std::move(call));
    } else {
      r.content += text.substr(pos, next - pos);
    }
    pos = next;
  }
  if (pos < text.size()) r.content += text.substr(pos);
  if (!r.calls.empty()) {
    // Whitespace between calls is not content.
    size_t b = r.content.find_first_not_of(" \t\r\n");
    r.content = b == std::string::npos ? "" : r.content.substr(b, r.content.find_last_not_of(" \t\r\n") - b + 1);
  }
  return r;
}

std::string ToolCallFilter::push(const std::string& text) {
  held_ += text;
  if (in_tool_) return {};
  std::string out;
  size_t at = held_.find(kToolCallOpen);
  if (at != std::string::npos) {
    out = held_.substr(0, at);
    held_.erase(0, at);
    in_tool_ = true;
  } else {
    size_t keep = partial_suffix_len(held_, {kToolCallOpen});
    out = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
  }
  return out;
}

ParsedToolCalls ToolCallFilter::finish() {
  ParsedToolCalls r = parse_tool_calls(held_);
  held_.clear();
  return r;
}

}  // namespace mlxcel::server
