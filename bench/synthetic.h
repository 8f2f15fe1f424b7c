// Synthetic checkpoints for the benchmarks: the shapes of Qwen3-0.6B with random f32
// weights (xorshift, fixed seed), so speed can be measured without downloading a model.
// Shared by engine_bench and server_bench.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "loader/config.h"
#include "loader/weights.h"
#include "tensor/tensor.h"

namespace mlxcel::bench {

// Qwen3-0.6B's config.json (the fields the builder reads), cut to `layers` layers.
inline ModelConfig qwen3_0_6b_config(int layers, int vocab = 151936) {
  nlohmann::json j = {
      {"architectures", {"Qwen3ForCausalLM"}}, {"model_type", "qwen3"}, {"vocab_size", vocab},
      {"hidden_size", 1024}, {"intermediate_size", 3072}, {"num_hidden_layers", layers},
      {"num_attention_heads", 16}, {"num_key_value_heads", 8}, {"head_dim", 128},
      {"max_position_embeddings", 40960}, {"rms_norm_eps", 1e-6}, {"hidden_act", "silu"},
      {"tie_word_embeddings", true}, {"attention_bias", false}, {"rope_theta", 1000000.0},
      {"dtype", "float32"}};
  return parse_model_config(j, "synthetic Qwen3-0.6B");
}

inline Tensor random_tensor(const Shape& shape, float scale, uint64_t& state) {
  Tensor t = Tensor::empty(shape, DType::f32);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    p[i] = scale * (float(int64_t(state >> 40) - (int64_t(1) << 23)) / float(1 << 23));
  }
  return t;
}

// Random weights for a Qwen3 config (norm weights 1, tied embeddings).
inline WeightMap synthetic_qwen3_weights(const ModelConfig& c) {
  WeightMap w("synthetic");
  uint64_t s = 0x9e3779b97f4a7c15ull;
  const int H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int nq = c.num_attention_heads * hd, nkv = c.num_key_value_heads * hd;
  auto ones = [](int n) { return Tensor::from_f32({n}, std::vector<float>(size_t(n), 1.0f)); };
  w.insert("model.embed_tokens.weight", random_tensor({c.vocab_size, H}, 0.05f, s));
  w.insert("model.norm.weight", ones(H));
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    w.insert(p + "input_layernorm.weight", ones(H));
    w.insert(p + "post_attention_layernorm.weight", ones(H));
    w.insert(p + "self_attn.q_norm.weight", ones(hd));
    w.insert(p + "self_attn.k_norm.weight", ones(hd));
    w.insert(p + "self_attn.q_proj.weight", random_tensor({nq, H}, 0.03f, s));
    w.insert(p + "self_attn.k_proj.weight", random_tensor({nkv, H}, 0.03f, s));
    w.insert(p + "self_attn.v_proj.weight", random_tensor({nkv, H}, 0.03f, s));
    w.insert(p + "self_attn.o_proj.weight", random_tensor({H, nq}, 0.03f, s));
    w.insert(p + "mlp.gate_proj.weight", random_tensor({I, H}, 0.03f, s));
    w.insert(p + "mlp.up_proj.weight", random_tensor({I, H}, 0.03f, s));
    w.insert(p + "mlp.down_proj.weight", random_tensor({H, I}, 0.03f, s));
  }
  return w;
}

}  // namespace mlxcel::bench
