// libFuzzer: any byte string as a template must parse and render (with small limits) or
// throw mlxcel::Error; never crash, hang or exhaust memory.
#include <cstddef>
#include <cstdint>
#include <string>

#include "chat/jinja.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string src(reinterpret_cast<const char*>(data), size);
  try {
    auto tpl = mlxcel::jinja::Template::parse(src);
    mlxcel::jinja::RenderOptions o;
    o.limits.max_steps = 20000;
    o.limits.max_output_bytes = 1 << 16;
    o.limits.max_call_depth = 64;
    o.limits.max_range = 1000;
    o.now = 0;
    nlohmann::ordered_json ctx = {
        {"messages", {{{"role", "user"}, {"content", "hi"}}, {{"role", "assistant"}, {"content", "yo"}}}},
        {"add_generation_prompt", true},
        {"tools", nullptr},
        {"bos_token", "<s>"}};
    (void)tpl.render(ctx, o);
  } catch (const mlxcel::Error&) {
  }
  return 0;
}
