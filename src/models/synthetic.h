// Synthetic checkpoints for benchmarks: the config.json of a known model (or any
// Llama/Qwen-style config) with random weights in a chosen storage format, so speed can
// be measured with real shapes and no download (`mlxcel bench --synthetic`).
//
//   ModelConfig cfg = synthetic_config("llama-3.1-8b", "q4");
//   WeightMap w = synthetic_weights(cfg, "q4");           // host tensors
//   place_weights(w, Device::cuda());                     // models/model.h
//   auto model = build_model(cfg, w);
#pragma once

#include <string>
#include <vector>

#include "loader/config.h"
#include "loader/weights.h"

namespace mlxcel {

// Preset names: llama-3.1-8b, llama-3.2-1b, qwen3-0.6b, qwen3-8b, tiny (a 2-layer Qwen3
// for tests). A path to a config.json is read instead.
std::vector<std::string> synthetic_presets();
// Formats: f32, f16, bf16 (dense); q8, q4 (MLX affine, group 64, bf16 scales); q8_0,
// q4_0 (GGUF blocks; packed on the CPU, MLX affine g32 elsewhere, see place_weights);
// q4_k (GGUF Q4_K blocks as a device load gives them: MLX affine 4-bit g32, f32 scales).
// `layers` > 0 cuts the model to that many layers. The config gets the dtype and the
// quantization block of the format.
ModelConfig synthetic_config(const std::string& preset_or_path, const std::string& format, int layers = 0);
// Random weights for the config's llama-style names (model.embed_tokens, q/k/v/o_proj,
// gate/up/down_proj, the norms, q_norm/k_norm for qwen3, lm_head unless tied). Values
// keep activations in range (|w| <= 0.02); norm weights are 1. Deterministic.
WeightMap synthetic_weights(const ModelConfig& cfg, const std::string& format);
// Bytes of weights a decode step reads: every tensor except the embedding table when
// it is not also the head (an embedding lookup reads only its rows).
int64_t decode_weight_bytes(const WeightMap& w, const ModelConfig& cfg);

}  // namespace mlxcel
