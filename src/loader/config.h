// config.json -> ModelConfig: the fields every family shares, typed and validated,
// plus the raw (text) config for family-specific extras. Accepts both
// serializations in the wild: transformers 4.x (rope_theta, rope_scaling,
// torch_dtype) and 5.x (rope_parameters, possibly per layer type; dtype), and a
// nested text_config (multimodal wrappers).
//
//   ModelConfig cfg = load_model_config("/models/qwen3/config.json");
//   RopeConfig rope = cfg.rope_for("full_attention");
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ops/quant.h"
#include "ops/rope.h"

namespace mlxcel {

// MLX quantization as written by mlx-lm in config.json:
//   "quantization": {"group_size": 64, "bits": 4,
//                    "model.embed_tokens": {"group_size": 32, "bits": 8},
//                    "lm_head": false}
struct QuantConfig {
  QuantSpec base;
  // Per-module overrides keyed by module path (no ".weight"); nullopt = left unquantized.
  std::map<std::string, std::optional<QuantSpec>> overrides;
  // The spec for a module path (e.g. "model.layers.0.self_attn.q_proj").
  std::optional<QuantSpec> spec_for(const std::string& module) const;
};

struct ModelConfig {
  std::string model_type;                 // of the text model when text_config is nested
  std::vector<std::string> architectures;
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;   // defaults to num_attention_heads
  int head_dim = 0;              // defaults to hidden_size / num_attention_heads
  int max_position_embeddings = 0;
  float norm_eps = 1e-6f;        // rms_norm_eps | layer_norm_eps | norm_epsilon | layer_norm_epsilon
  std::string hidden_act = "silu";  // hidden_act | hidden_activation
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  // Attention pattern. layer_types[i] is "full_attention" or "sliding_attention";
  // filled from layer_types, sliding_window_pattern or use_sliding_window when present,
  // otherwise all "full_attention".
  int sliding_window = 0;        // 0 = none
  std::vector<std::string> layer_types;
  float attn_logit_softcapping = 0.0f;   // 0 = off
  float final_logit_softcapping = 0.0f;  // 0 = off
  float query_pre_attn_scalar = 0.0f;    // 0 = unset (scale = 1/sqrt(head_dim))
  std::vector<int> bos_token_ids, eos_token_ids;
  int pad_token_id = -1;
  std::string dtype = "float32";         // dtype | torch_dtype
  // RoPE per layer type; the key "" holds the default. rope_for() falls back to it.
  std::map<std::string, RopeConfig> rope;
  std::optional<QuantConfig> quantization;
  nlohmann::json raw;       // the text model's config object (for family extras)
  nlohmann::json raw_root;  // the whole file

  const RopeConfig& rope_for(const std::string& layer_type) const;
};

// Parses and validates; throws Error(invalid_request) naming the file and the field
// for missing, mistyped, NaN or absurd values.
ModelConfig parse_model_config(const nlohmann::json& root, const std::string& source = "config.json");
ModelConfig load_model_config(const std::string& path);

}  // namespace mlxcel
