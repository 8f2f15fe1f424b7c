// Hermes/Qwen-style tool calls in generated text:
//   <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>
// -> OpenAI tool_calls. Text outside the tags stays content; a block whose JSON does not
// parse (or has no name) is left in the content unchanged.
#pragma once

#include <string>
#include <vector>

namespace mlxcel::server {

struct ToolCall {
  std::string id;         // "call_<random>"
  std::string name;
  std::string arguments;  // a JSON text (OpenAI sends arguments as a string)
};

struct ParsedToolCalls {
  std::string content;
  std::vector<ToolCall> calls;
};

inline constexpr const char* kToolCallOpen = "<tool_call>";
inline constexpr const char* kToolCallClose = "</tool_call>";

ParsedToolCalls parse_tool_calls(const std::string& text);

// Streaming side: push() returns the text that can be shown now; text that may begin a
// <tool_call> (and everything after one begins) is held until finish() parses it.
class ToolCallFilter {
 public:
  std::string push(const std::string& text);
  ParsedToolCalls finish();  // the held text, parsed

 private:
  std::string held_;
  bool in_tool_ = false;
};

}  // namespace mlxcel::server
