// The Gemma decoder shared by Gemma 1, 2 and 3 (text): embeddings scaled by
// sqrt(hidden), RMSNorm weights stored as w - 1 (norms use 1 + w); Gemma 2 and 3 wrap
// attention and MLP in pre- and post-norms; Gemma 3 adds per-head q/k RMSNorm.
// Soft-caps, windows and per-layer-type RoPE come from the config.
#pragma once

#include <memory>

#include "models/layers/decoder.h"

namespace mlxcel {

enum class GemmaGeneration { v1, v2, v3 };

std::unique_ptr<Model> build_gemma_decoder(const ModelConfig& cfg, const WeightMap& w, GemmaGeneration gen);

}  // namespace mlxcel
