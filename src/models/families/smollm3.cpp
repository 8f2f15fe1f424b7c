// SmolLM 3: Llama where some layers skip RoPE (no_rope_layers[i] == 0; by default
// every no_rope_layer_interval-th layer).
#include "base/error.h"
#include "models/layers/decoder.h"

namespace mlxcel {
namespace {

std::unique_ptr<Model> build_smollm3(const ModelConfig& cfg, const WeightMap& w) {
  auto m = build_pre_norm_decoder(cfg, w);
  const int n = cfg.num_hidden_layers;
  std::vector<int> use_rope(n, 1);
  if (cfg.raw.contains("no_rope_layers") && cfg.raw["no_rope_layers"].is_array() &&
      !cfg.raw["no_rope_layers"].empty()) {
    const auto& arr = cfg.raw["no_rope_layers"];
    if (int(arr.size()) != n) invalid("config.json: no_rope_layers has {} entries for {} layers", arr.size(), n);
    for (int i = 0; i < n; ++i) {
      if (!arr[i].is_number_integer()) invalid("config.json: no_rope_layers[{}] must be 0 or 1", i);
      use_rope[i] = arr[i].get<int>();
    }
  } else {
    const int interval = int(raw_float(cfg, "no_rope_layer_interval", 4.0f));
    if (interval <= 0) invalid("config.json: no_rope_layer_interval must be positive");
    for (int i = 0; i < n; ++i) use_rope[i] = (i + 1) % interval != 0;
  }
  for (int i = 0; i < n; ++i) m->blocks[i].attn.use_rope = use_rope[i] != 0;
  m->finalize();
  return m;
}

const bool registered = register_model_family("smollm3", build_smollm3);

}  // namespace
}  // namespace mlxcel
