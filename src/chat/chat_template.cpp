#include "chat/chat_template.h"

namespace mlxcel::chat {

ChatTemplate::ChatTemplate(const std::string& source) : tpl_(jinja::Template::parse(source)) {}

std::string ChatTemplate::apply(const nlohmann::ordered_json& messages, const ChatTemplateOptions& opts) const {
  using jinja::Value;
  Value ctx = Value::dict();
  auto& d = *ctx.as_dict();
  // Same order as transformers: special tokens and kwargs, then the named arguments.
  for (auto it = opts.extra.begin(); it != opts.extra.end(); ++it) d.set(Value(it.key()), Value::from_json(it.value()));
  d.set(Value("messages"), Value::from_json(messages));
  d.set(Value("tools"), Value::from_json(opts.tools));
  d.set(Value("documents"), Value::from_json(opts.documents));
  d.set(Value("add_generation_prompt"), Value(opts.add_generation_prompt));
  jinja::RenderOptions ro;
  ro.limits = opts.limits;
  ro.now = opts.now;
  return tpl_.render(ctx, ro);
}

std::string ChatTemplate::apply(const nlohmann::json& messages, const ChatTemplateOptions& opts) const {
  return apply(nlohmann::ordered_json::parse(messages.dump()), opts);
}

}  // namespace mlxcel::chat
