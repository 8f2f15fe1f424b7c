// A model's chat template: messages (+ tools, flags) -> prompt text, exactly as
// transformers' tokenizer.apply_chat_template(..., tokenize=False) renders it.
//
//   ChatTemplate tpl(source);               // parses once; throws on syntax errors
//   ChatTemplateOptions o;
//   o.add_generation_prompt = true;
//   o.extra["enable_thinking"] = false;
//   std::string prompt = tpl.apply(messages, o);
#pragma once

#include <ctime>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "chat/jinja.h"

namespace mlxcel::chat {

struct ChatTemplateOptions {
  bool add_generation_prompt = false;
  nlohmann::ordered_json tools;      // null: no tools (the template sees None)
  nlohmann::ordered_json documents;  // null: no documents
  // Special tokens (bos_token, eos_token, ...) and template kwargs (enable_thinking, ...);
  // every key becomes a template variable.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  std::optional<std::time_t> now;  // strftime_now clock override (tests)
  jinja::Limits limits;
};

class ChatTemplate {
 public:
  explicit ChatTemplate(const std::string& source);
  // Renders `messages` (a JSON array of message objects). Throws Error(invalid_request)
  // when the template raises (message verbatim) or fails (with template line/column).
  std::string apply(const nlohmann::ordered_json& messages, const ChatTemplateOptions& opts) const;
  std::string apply(const nlohmann::json& messages, const ChatTemplateOptions& opts) const;

 private:
  jinja::Template tpl_;
};

}  // namespace mlxcel::chat
