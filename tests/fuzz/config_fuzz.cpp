// libFuzzer target for config.json parsing (see docs/fuzzing.md): any input either
// parses or throws mlxcel::Error; a parsed config satisfies the documented invariants.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "loader/config.h"

using namespace mlxcel;

namespace {
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;
  }
  ModelConfig c;
  try {
    c = parse_model_config(j, "fuzz/config.json");
  } catch (const Error&) {
    return 0;
  }
  check(c.hidden_size > 0 && c.num_hidden_layers > 0 && c.num_attention_heads > 0 && c.vocab_size > 0, "sizes");
  check(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0, "kv heads");
  check(c.head_dim > 0, "head_dim");
  check(int(c.layer_types.size()) == c.num_hidden_layers, "layer_types length");
  check(c.norm_eps > 0, "eps");
  check(c.rope.count("") == 1, "default rope");
  for (const auto& [k, r] : c.rope) {
    check(r.theta > 0 && r.rotary_dim > 0 && r.rotary_dim <= r.head_dim && r.rotary_dim % 2 == 0, "rope");
  }
  for (const auto& t : c.layer_types) (void)c.rope_for(t);
  if (c.quantization) {
    auto s = c.quantization->spec_for("model.layers.0.mlp.up_proj");
    if (s) check(s->bits >= 2 && s->bits <= 8 && s->group_size >= 32, "quant spec");
  }
  return 0;
}
