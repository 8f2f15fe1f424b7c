#include "chat/jinja.h"

#include "chat/parser.h"

namespace mlxcel::jinja {

Template Template::parse(const std::string& source) {
  Template t;
  t.ast_ = std::make_shared<const NodeList>(parse_template(source));
  return t;
}

std::string Template::render(const Value& context, const RenderOptions& opts) const {
  if (!context.is_dict()) throw Error(ErrorKind::invalid_request, "template context must be a mapping");
  auto root = std::make_shared<Scope>();
  for (const auto& [k, v] : context.as_dict()->items) {
    if (k.is_string()) root->vars[k.as_string()] = v;
  }
  Interpreter interp(opts.limits, opts.now);
  try {
    return interp.render(*ast_, root);
  } catch (const RaisedException& e) {
    throw TemplateRaisedError(e.what());
  } catch (const RenderError& e) {
    throw Error(ErrorKind::invalid_request, std::string("template: ") + e.what());
  } catch (const std::bad_alloc&) {
    throw Error(ErrorKind::resource_exhausted, "template: out of memory while rendering");
  }
}

std::string Template::render(const nlohmann::ordered_json& context, const RenderOptions& opts) const {
  return render(Value::from_json(context), opts);
}

}  // namespace mlxcel::jinja
