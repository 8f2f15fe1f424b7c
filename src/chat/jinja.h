// Jinja2 template engine that renders Hugging Face chat templates byte-for-byte like
// transformers (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
// raise_exception, strftime_now and transformers' tojson).
//
//   auto tpl = mlxcel::jinja::Template::parse("{% for m in messages %}{{ m.content }}{% endfor %}");
//   nlohmann::ordered_json ctx = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}};
//   std::string out = tpl.render(ctx);   // "hi"
#pragma once

#include <ctime>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "chat/interp.h"
#include "chat/value.h"

namespace mlxcel::jinja {

// Thrown when a template calls raise_exception(msg); what() is msg verbatim.
class TemplateRaisedError : public Error {
 public:
  explicit TemplateRaisedError(const std::string& msg) : Error(ErrorKind::invalid_request, msg) {}
};

struct RenderOptions {
  Limits limits;
  std::optional<std::time_t> now;  // clock for strftime_now(); nullopt: the real clock
};

class Template {
 public:
  // Compiles `source`; throws Error(invalid_request) "template line L, column C: ...".
  static Template parse(const std::string& source);

  // Renders with the variables of `context` (a dict Value); throws Error naming line and
  // column, or TemplateRaisedError for raise_exception().
  std::string render(const Value& context, const RenderOptions& opts = {}) const;
  std::string render(const nlohmann::ordered_json& context, const RenderOptions& opts = {}) const;

 private:
  std::shared_ptr<const NodeList> ast_;
};

}  // namespace mlxcel::jinja
