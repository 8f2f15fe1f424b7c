// Mistral: Llama whose config carries one sliding_window for every layer (without
// layer_types; the loader then marks every layer sliding).
#include "models/layers/decoder.h"

namespace mlxcel {
namespace {

std::unique_ptr<Model> build_mistral(const ModelConfig& cfg, const WeightMap& w) {
  auto m = build_pre_norm_decoder(cfg, w);
  m->finalize();
  return m;
}

const bool registered = register_model_family("mistral", build_mistral);

}  // namespace
}  // namespace mlxcel
