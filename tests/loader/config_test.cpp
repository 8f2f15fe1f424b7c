#include "loader/config.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include <gtest/gtest.h>

#include "base/error.h"

using namespace mlxcel;
using nlohmann::json;

namespace {

ModelConfig parse(const std::string& text, const std::string& source = "cfg.json") {
  return parse_model_config(json::parse(text), source);
}

// Runs `fn`, expects Error of `kind` whose message holds every one of `parts`.
template <typename Fn>
void expect_error(Fn fn, ErrorKind kind, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
  }
}

void expect_bad(const std::string& text, std::initializer_list<std::string> parts) {
  expect_error([&] { parse(text, "bad/config.json"); }, ErrorKind::invalid_request, parts);
}

const char* kLlama32 = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
  "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "vocab_size": 128256
})";

}  // namespace

TEST(Config, Llama3RopeScaling) {
  ModelConfig c = parse(kLlama32);
  EXPECT_EQ(c.model_type, "llama");
  ASSERT_EQ(c.architectures.size(), 1u);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 8192);
  EXPECT_EQ(c.num_hidden_layers, 16);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_EQ(c.bos_token_ids, std::vector<int>{128000});
  EXPECT_EQ(c.eos_token_ids, (std::vector<int>{128001, 128008, 128009}));
  ASSERT_EQ(c.layer_types.size(), 16u);
  for (const auto& t : c.layer_types) EXPECT_EQ(t, "full_attention");
  const RopeConfig& r = c.rope_for("full_attention");
  EXPECT_EQ(r.type, "llama3");
  EXPECT_DOUBLE_EQ(r.theta, 500000.0);
  EXPECT_DOUBLE_EQ(r.factor, 32.0);
  EXPECT_DOUBLE_EQ(r.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(r.high_freq_factor, 4.0);
  EXPECT_EQ(r.original_max_position, 8192);
  EXPECT_EQ(r.max_position, 131072);
  EXPECT_EQ(r.head_dim, 64);
  EXPECT_EQ(r.rotary_dim, 64);
  EXPECT_FALSE(c.quantization.has_value());
  EXPECT_EQ(c.raw["rope_theta"], 500000.0);
}

TEST(Config, DefaultsHeadDimKvHeadsAndRope) {
  ModelConfig c = parse(R"({"model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 32,
      "num_attention_heads": 32, "vocab_size": 32000, "intermediate_size": 14336, "layer_norm_eps": 1e-6,
      "sliding_window": null, "eos_token_id": 2, "dtype": "float16"})");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_key_value_heads, 32);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.layer_types[0], "full_attention");
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{2});
  EXPECT_TRUE(c.bos_token_ids.empty());
  EXPECT_EQ(c.dtype, "float16");
  EXPECT_EQ(c.hidden_act, "silu");
  EXPECT_EQ(c.rope_for("anything").type, "default");
  EXPECT_DOUBLE_EQ(c.rope_for("anything").theta, 10000.0);
  EXPECT_EQ(c.rope_for("").rotary_dim, 128);
}

TEST(Config, MistralWindowWithoutPatternSlidesEveryLayer) {
  ModelConfig c = parse(R"({"model_type": "mistral", "hidden_size": 64, "num_hidden_layers": 3,
      "num_attention_heads": 4, "vocab_size": 100, "sliding_window": 4096})");
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.layer_types, std::vector<std::string>(3, "sliding_attention"));
}

TEST(Config, Gemma3Transformers5PerLayerTypeRope) {
  ModelConfig c = parse(R"({
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
    "hidden_size": 1152, "intermediate_size": 6912, "num_hidden_layers": 6, "num_attention_heads": 4,
    "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144, "rms_norm_eps": 1e-06,
    "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256, "sliding_window": 512,
    "final_logit_softcapping": null, "attn_logit_softcapping": null, "max_position_embeddings": 32768,
    "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
                    "sliding_attention", "full_attention"],
    "rope_parameters": {
      "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
      "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
    "dtype": "bfloat16", "eos_token_id": [1, 106], "bos_token_id": 2, "pad_token_id": 0})");
  EXPECT_EQ(c.hidden_act, "gelu_pytorch_tanh");
  EXPECT_EQ(c.num_key_value_heads, 1);
  EXPECT_EQ(c.sliding_window, 512);
  EXPECT_FLOAT_EQ(c.query_pre_attn_scalar, 256.0f);
  EXPECT_FLOAT_EQ(c.final_logit_softcapping, 0.0f);
  EXPECT_EQ(c.layer_types[5], "full_attention");
  EXPECT_EQ(c.layer_types[0], "sliding_attention");
  EXPECT_EQ(c.rope_for("full_attention").type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_for("full_attention").factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_for("full_attention").theta, 1e6);
  EXPECT_EQ(c.rope_for("sliding_attention").type, "default");
  EXPECT_DOUBLE_EQ(c.rope_for("sliding_attention").theta, 1e4);
  EXPECT_EQ(c.rope_for("sliding_attention").rotary_dim, 256);
  EXPECT_DOUBLE_EQ(c.rope_for("").theta, 1e6);  // the default is the global one
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_TRUE(c.tie_word_embeddings);  // gemma default
}

TEST(Config, Gemma3Transformers4NestedTextConfigWithDefaults) {
  // As google/gemma-3-4b-it ships it: a sparse text_config, the rest class defaults.
  ModelConfig c = parse(R"({
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
    "eos_token_id": [1, 106], "torch_dtype": "bfloat16",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "vision_config": {"hidden_size": 1152, "model_type": "siglip_vision_model"}})");
  EXPECT_EQ(c.model_type, "gemma3_text");
  EXPECT_EQ(c.architectures[0], "Gemma3ForConditionalGeneration");
  EXPECT_EQ(c.hidden_size, 2560);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.vocab_size, 262208);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int>{1, 106}));
  EXPECT_EQ(c.dtype, "bfloat16");
  ASSERT_EQ(c.layer_types.size(), 34u);
  EXPECT_EQ(c.layer_types[4], "sliding_attention");
  EXPECT_EQ(c.layer_types[5], "full_attention");
  EXPECT_EQ(c.layer_types[11], "full_attention");
  EXPECT_EQ(c.rope_for("full_attention").type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_for("full_attention").theta, 1e6);
  EXPECT_EQ(c.rope_for("sliding_attention").type, "default");
  EXPECT_DOUBLE_EQ(c.rope_for("sliding_attention").theta, 1e4);
  EXPECT_DOUBLE_EQ(c.rope_for("sliding_attention").factor, 1.0);
  EXPECT_EQ(c.raw["hidden_size"], 2560);
  EXPECT_EQ(c.raw["query_pre_attn_scalar"], 256);  // defaults land in raw too
  EXPECT_TRUE(c.raw_root.contains("vision_config"));
}

TEST(Config, Gemma3Transformers4RopeLocalBaseFreq) {
  ModelConfig c = parse(R"({"model_type": "gemma3_text", "hidden_size": 640, "num_hidden_layers": 18,
      "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144,
      "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": null,
      "sliding_window": 512, "sliding_window_pattern": 6})");
  EXPECT_EQ(c.rope_for("full_attention").type, "default");
  EXPECT_DOUBLE_EQ(c.rope_for("full_attention").theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rope_for("sliding_attention").theta, 1e4);
  EXPECT_EQ(c.layer_types[5], "full_attention");
  EXPECT_EQ(c.layer_types[6], "sliding_attention");
  EXPECT_EQ(c.layer_types[17], "full_attention");
}

TEST(Config, Gemma2Alternation) {
  ModelConfig c = parse(R"({"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
      "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 4, "num_attention_heads": 8,
      "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 256000, "hidden_act": "gelu_pytorch_tanh",
      "hidden_activation": "gelu_pytorch_tanh", "attn_logit_softcapping": 50.0,
      "final_logit_softcapping": 30.0, "query_pre_attn_scalar": 224, "sliding_window": 4096,
      "rms_norm_eps": 1e-06, "rope_theta": 10000.0})");
  EXPECT_EQ(c.layer_types, (std::vector<std::string>{"sliding_attention", "full_attention", "sliding_attention",
                                                      "full_attention"}));
  EXPECT_FLOAT_EQ(c.attn_logit_softcapping, 50.0f);
  EXPECT_FLOAT_EQ(c.final_logit_softcapping, 30.0f);
  EXPECT_FLOAT_EQ(c.query_pre_attn_scalar, 224.0f);
  EXPECT_EQ(c.hidden_act, "gelu_pytorch_tanh");
}

TEST(Config, Qwen2SlidingWindow) {
  const char* base = R"({"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
      "num_hidden_layers": 4, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
      "max_window_layers": 2, "sliding_window": 32768, "use_sliding_window": %s, "rope_theta": 1000000.0,
      "attention_bias": true})";
  char buf[1024];
  std::snprintf(buf, sizeof buf, base, "false");
  ModelConfig off = parse(buf);
  EXPECT_EQ(off.sliding_window, 0);
  EXPECT_EQ(off.layer_types, std::vector<std::string>(4, "full_attention"));
  EXPECT_EQ(off.head_dim, 64);
  EXPECT_TRUE(off.attention_bias);
  std::snprintf(buf, sizeof buf, base, "true");
  ModelConfig on = parse(buf);
  EXPECT_EQ(on.sliding_window, 32768);
  EXPECT_EQ(on.layer_types, (std::vector<std::string>{"full_attention", "full_attention", "sliding_attention",
                                                      "sliding_attention"}));
}

TEST(Config, Phi3LongropePartialRotary) {
  json j = json::parse(R"({"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
      "num_hidden_layers": 2, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
      "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
      "partial_rotary_factor": 0.5, "rope_theta": 10000.0, "sliding_window": 262144,
      "rope_scaling": {"type": "longrope"}})");
  std::vector<double> s(24, 1.0), l(24, 2.5);
  j["rope_scaling"]["short_factor"] = s;
  j["rope_scaling"]["long_factor"] = l;
  ModelConfig c = parse_model_config(j);
  const RopeConfig& r = c.rope_for("full_attention");
  EXPECT_EQ(r.type, "longrope");
  EXPECT_EQ(r.head_dim, 96);
  EXPECT_EQ(r.rotary_dim, 48);
  EXPECT_EQ(r.original_max_position, 4096);
  EXPECT_EQ(r.max_position, 131072);
  EXPECT_EQ(r.long_factor.size(), 24u);
  EXPECT_DOUBLE_EQ(r.long_factor[3], 2.5);
  // "su" is the early name of longrope.
  j["rope_scaling"]["type"] = "su";
  EXPECT_EQ(parse_model_config(j).rope_for("").type, "longrope");
  // Factor lists must cover rotary_dim / 2.
  j["rope_scaling"]["long_factor"] = std::vector<double>(10, 1.0);
  expect_error([&] { parse_model_config(j, "phi3.json"); }, ErrorKind::invalid_request,
               {"phi3.json", "rope", "long_factor", "24"});
}

TEST(Config, Transformers5SingleRopeParametersWithPartial) {
  ModelConfig c = parse(R"({"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2,
      "num_attention_heads": 4, "vocab_size": 1000,
      "rope_parameters": {"rope_type": "yarn", "rope_theta": 50000.0, "factor": 4.0,
                          "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1,
                          "mscale": 1.0, "mscale_all_dim": 0.707, "truncate": false,
                          "partial_rotary_factor": 0.25}})");
  const RopeConfig& r = c.rope_for("full_attention");
  EXPECT_EQ(r.type, "yarn");
  EXPECT_DOUBLE_EQ(r.theta, 50000.0);
  EXPECT_DOUBLE_EQ(r.factor, 4.0);
  EXPECT_EQ(r.original_max_position, 4096);
  EXPECT_DOUBLE_EQ(r.mscale_all_dim, 0.707);
  EXPECT_FALSE(r.truncate);
  EXPECT_EQ(r.rotary_dim, 16);
}

TEST(Config, NestedTextConfigLlava) {
  ModelConfig c = parse(R"({"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
      "image_token_index": 32000, "tie_word_embeddings": false,
      "text_config": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
                      "num_attention_heads": 32, "vocab_size": 32064, "rms_norm_eps": 1e-5}})");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 32064);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.raw["model_type"], "llama");
  EXPECT_EQ(c.raw_root["model_type"], "llava");
  // Errors inside text_config name the nested field.
  expect_bad(R"({"model_type": "llava", "text_config": {"model_type": "llama", "hidden_size": 64,
      "num_hidden_layers": 2, "num_attention_heads": 4}})", {"bad/config.json", "text_config.vocab_size"});
}

TEST(Config, Quantization) {
  ModelConfig c = parse(R"({"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 4, "vocab_size": 100,
      "quantization": {"group_size": 64, "bits": 4,
                       "model.embed_tokens": {"group_size": 32, "bits": 8},
                       "model.layers.0.mlp.down_proj": {"bits": 6},
                       "lm_head": false, "model.layers.1.self_attn.q_proj": true},
      "quantization_config": {"group_size": 64, "bits": 4}})");
  ASSERT_TRUE(c.quantization.has_value());
  const QuantConfig& q = *c.quantization;
  EXPECT_EQ(q.base.bits, 4);
  EXPECT_EQ(q.base.group_size, 64);
  auto e = q.spec_for("model.embed_tokens");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->bits, 8);
  EXPECT_EQ(e->group_size, 32);
  auto d = q.spec_for("model.layers.0.mlp.down_proj.weight");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->bits, 6);
  EXPECT_EQ(d->group_size, 64);  // inherits the base group size
  EXPECT_FALSE(q.spec_for("lm_head").has_value());
  EXPECT_EQ(q.spec_for("model.layers.1.self_attn.q_proj")->bits, 4);
  EXPECT_EQ(q.spec_for("model.layers.1.mlp.up_proj")->bits, 4);
  EXPECT_EQ(q.spec_for("model.layers.1.mlp.up_proj")->describe(), "mlx q4 g64");
}

TEST(Config, QuantizationConfigOnlyAndBadValues) {
  ModelConfig c = parse(R"({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
      "vocab_size": 100, "quantization_config": {"group_size": 32, "bits": 3}})");
  ASSERT_TRUE(c.quantization);
  EXPECT_EQ(c.quantization->base.bits, 3);
  EXPECT_EQ(c.quantization->base.group_size, 32);
  const char* head = R"({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, )";
  expect_bad(std::string(head) + R"("quantization": {"group_size": 64, "bits": 7}})", {"quantization.bits", "7"});
  expect_bad(std::string(head) + R"("quantization": {"group_size": 48, "bits": 4}})", {"quantization.group_size"});
  expect_bad(std::string(head) + R"("quantization": {"group_size": 64}})", {"quantization.bits", "required"});
  expect_bad(std::string(head) + R"("quantization": {"group_size": 64, "bits": "4"}})", {"quantization.bits", "string"});
  expect_bad(std::string(head) + R"("quantization": {"group_size": 64, "bits": 4, "lm_head": {"bits": 1}}})",
             {"quantization.lm_head.bits"});
  expect_error([&] { parse(std::string(head) + R"("quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}})"); },
               ErrorKind::unsupported, {"gptq"});
  expect_error([&] { parse(std::string(head) + R"("quantization": {"group_size": 32, "bits": 4, "mode": "mxfp4"}})"); },
               ErrorKind::unsupported, {"mxfp4"});
}

TEST(Config, BadConfigs) {
  const std::string ok_tail = R"("num_attention_heads": 4, "vocab_size": 100})";
  expect_bad(R"({"num_hidden_layers": 2, )" + ok_tail, {"bad/config.json", "hidden_size", "required"});
  expect_bad(R"({"hidden_size": "64", "num_hidden_layers": 2, )" + ok_tail, {"hidden_size", "integer", "string"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": -2, )" + ok_tail, {"num_hidden_layers", "-2"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 0, )" + ok_tail, {"num_hidden_layers"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 20000000, )" + ok_tail, {"num_hidden_layers"});
  expect_bad(R"({"hidden_size": 64.5, "num_hidden_layers": 2, )" + ok_tail, {"hidden_size", "integer"});
  expect_bad(R"({"hidden_size": 4194304, "num_hidden_layers": 2, )" + ok_tail, {"hidden_size", "out of range"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "num_key_value_heads": 3, )" + ok_tail,
             {"num_key_value_heads", "num_attention_heads"});
  expect_bad(R"({"hidden_size": 66, "num_hidden_layers": 2, )" + ok_tail, {"head_dim", "divisible"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "rms_norm_eps": 0, )" + ok_tail, {"rms_norm_eps"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "rms_norm_eps": -1e-6, )" + ok_tail, {"rms_norm_eps"});
  // Found by config_fuzz: a positive double that is 0 as a float.
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "rms_norm_eps": 1e-85, )" + ok_tail, {"rms_norm_eps"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "final_logit_softcapping": 1e300, )" + ok_tail,
             {"final_logit_softcapping"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "query_pre_attn_scalar": -1, )" + ok_tail,
             {"query_pre_attn_scalar"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "rope_theta": 0, )" + ok_tail, {"rope_theta"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "rope_theta": "1e4", )" + ok_tail,
             {"rope_theta", "number"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "rope_scaling": {"rope_type": "linear", "factor": -2}, )" +
                 ok_tail,
             {"rope", "factor"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "rope_scaling": {"rope_type": "llama3", "factor": 8}, )" +
                 ok_tail,
             {"original_max_position_embeddings"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "rope_scaling": 3, )" + ok_tail, {"rope_scaling"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "partial_rotary_factor": 1.5, )" + ok_tail,
             {"partial_rotary_factor"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "tie_word_embeddings": "yes", )" + ok_tail,
             {"tie_word_embeddings", "boolean"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "layer_types": ["full_attention"], )" + ok_tail,
             {"layer_types", "1 entries for 2 layers"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "layer_types": ["full_attention", 3], )" + ok_tail,
             {"layer_types[1]"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "eos_token_id": [1, "x"], )" + ok_tail,
             {"eos_token_id[1]"});
  expect_bad(R"({"hidden_size": 64, "num_hidden_layers": 2, "text_config": [1], )" + ok_tail, {"text_config"});
  expect_bad(R"([1, 2])", {"bad/config.json", "object"});
  expect_error([&] { parse(R"({"hidden_size": 64, "num_hidden_layers": 2, "rope_scaling": {"type": "weird"}, )" +
                           ok_tail); },
               ErrorKind::unsupported, {"weird"});
  // NaN / inf cannot be written in JSON, but a json built in code can hold them.
  json j = json::parse(R"({"hidden_size": 64, "num_hidden_layers": 2, )" + ok_tail);
  j["rms_norm_eps"] = std::nan("");
  expect_error([&] { parse_model_config(j, "nan.json"); }, ErrorKind::invalid_request, {"nan.json", "rms_norm_eps"});
  j["rms_norm_eps"] = 1e-6;
  j["rope_theta"] = INFINITY;
  expect_error([&] { parse_model_config(j, "inf.json"); }, ErrorKind::invalid_request, {"inf.json", "rope_theta"});
  j["rope_theta"] = 1e4;
  j["num_hidden_layers"] = std::nan("");
  expect_error([&] { parse_model_config(j, "nan.json"); }, ErrorKind::invalid_request, {"num_hidden_layers"});
}

TEST(Config, LoadFromFile) {
  auto dir = std::filesystem::temp_directory_path() / ("mlxcel_cfg_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return (dir / name).string();
  };
  ModelConfig c = load_model_config(write("good.json", kLlama32));
  EXPECT_EQ(c.hidden_size, 2048);
  // 1e999 overflows a double: a JSON error naming the file.
  std::string huge = write("huge.json", R"({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
      "vocab_size": 100, "rms_norm_eps": 1e999})");
  expect_error([&] { load_model_config(huge); }, ErrorKind::invalid_request, {huge});
  std::string trunc = write("trunc.json", R"({"hidden_size": 64, )");
  expect_error([&] { load_model_config(trunc); }, ErrorKind::invalid_request, {trunc, "JSON"});
  std::string bad = write("bad.json", R"({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4})");
  expect_error([&] { load_model_config(bad); }, ErrorKind::invalid_request, {bad, "vocab_size"});
  expect_error([&] { load_model_config((dir / "missing.json").string()); }, ErrorKind::not_found, {"missing.json"});
  std::filesystem::remove_all(dir);
}

TEST(Config, GemmaHiddenActivationWins) {
  ModelConfig c = parse(R"({"model_type": "gemma", "hidden_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 4, "vocab_size": 100, "hidden_act": "gelu"})");
  EXPECT_EQ(c.hidden_act, "gelu_pytorch_tanh");
  EXPECT_TRUE(c.tie_word_embeddings);
}

// The transformers 5.17 fixtures (tests/fixtures/<family>/config.json).
TEST(Config, Fixtures) {
  std::string root = std::string(MLXCEL_SOURCE_DIR) + "/tests/fixtures/";
  auto load = [&](const std::string& family) { return load_model_config(root + family + "/config.json"); };
  if (!std::filesystem::exists(root + "llama/config.json")) GTEST_SKIP() << "no fixtures";

  ModelConfig llama = load("llama");
  EXPECT_EQ(llama.rope_for("full_attention").type, "llama3");
  EXPECT_EQ(llama.rope_for("full_attention").original_max_position, 16);
  EXPECT_EQ(llama.rope_for("full_attention").max_position, 128);
  EXPECT_DOUBLE_EQ(llama.rope_for("full_attention").theta, 5e5);
  EXPECT_EQ(llama.head_dim, 16);
  EXPECT_EQ(llama.num_key_value_heads, 2);
  EXPECT_FALSE(llama.tie_word_embeddings);
  EXPECT_TRUE(llama.eos_token_ids.empty());
  EXPECT_EQ(llama.pad_token_id, -1);

  ModelConfig mistral = load("mistral");
  EXPECT_EQ(mistral.sliding_window, 8);
  EXPECT_EQ(mistral.layer_types, std::vector<std::string>(2, "sliding_attention"));

  ModelConfig starcoder2 = load("starcoder2");
  EXPECT_EQ(starcoder2.layer_types, std::vector<std::string>(2, "sliding_attention"));
  EXPECT_FLOAT_EQ(starcoder2.norm_eps, 1e-5f);
  EXPECT_EQ(starcoder2.hidden_act, "gelu_pytorch_tanh");

  for (const char* f : {"qwen2", "qwen3", "smollm3"}) {
    ModelConfig c = load(f);
    EXPECT_EQ(c.sliding_window, 0) << f;
    for (const auto& t : c.layer_types) EXPECT_EQ(t, "full_attention") << f;
  }
  EXPECT_DOUBLE_EQ(load("qwen2").rope_for("").theta, 1e6);
  EXPECT_EQ(load("qwen3").head_dim, 32);

  ModelConfig gemma = load("gemma");
  EXPECT_EQ(gemma.num_key_value_heads, 1);
  EXPECT_EQ(gemma.head_dim, 32);
  EXPECT_EQ(gemma.hidden_act, "gelu_pytorch_tanh");

  ModelConfig gemma2 = load("gemma2");
  EXPECT_EQ(gemma2.layer_types, (std::vector<std::string>{"sliding_attention", "full_attention", "sliding_attention",
                                                           "full_attention"}));
  EXPECT_FLOAT_EQ(gemma2.attn_logit_softcapping, 50.0f);
  EXPECT_FLOAT_EQ(gemma2.final_logit_softcapping, 30.0f);
  EXPECT_FLOAT_EQ(gemma2.query_pre_attn_scalar, 24.0f);
  EXPECT_EQ(gemma2.sliding_window, 8);

  ModelConfig gemma3 = load("gemma3_text");
  EXPECT_EQ(gemma3.layer_types, (std::vector<std::string>{"sliding_attention", "sliding_attention",
                                                           "sliding_attention", "full_attention"}));
  EXPECT_EQ(gemma3.rope_for("full_attention").type, "linear");
  EXPECT_DOUBLE_EQ(gemma3.rope_for("full_attention").factor, 8.0);
  EXPECT_DOUBLE_EQ(gemma3.rope_for("full_attention").theta, 1e6);
  EXPECT_EQ(gemma3.rope_for("sliding_attention").type, "default");
  EXPECT_DOUBLE_EQ(gemma3.rope_for("sliding_attention").theta, 1e4);
  EXPECT_FLOAT_EQ(gemma3.final_logit_softcapping, 0.0f);
  EXPECT_FLOAT_EQ(gemma3.query_pre_attn_scalar, 48.0f);

  ModelConfig phi3 = load("phi3");
  const RopeConfig& pr = phi3.rope_for("full_attention");
  EXPECT_EQ(pr.type, "longrope");
  EXPECT_EQ(pr.head_dim, 16);
  EXPECT_EQ(pr.rotary_dim, 8);
  EXPECT_EQ(pr.original_max_position, 16);
  EXPECT_EQ(pr.max_position, 128);
  EXPECT_EQ(pr.long_factor, (std::vector<double>{1.0, 2.0, 3.5, 6.0}));
  EXPECT_EQ(phi3.sliding_window, 0);

  ModelConfig granite = load("granite");
  EXPECT_DOUBLE_EQ(granite.raw["embedding_multiplier"].get<double>(), 4.0);
  ModelConfig olmo2 = load("olmo2");
  EXPECT_DOUBLE_EQ(olmo2.rope_for("").theta, 5e5);
}
