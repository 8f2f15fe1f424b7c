// GGUF tensor infos: the writer's files parse back (names, dims, types, offsets, alignment,
// bytes); lying tensor infos (offsets, dims, types, overlaps, past EOF) fail cleanly with
// Error; metadata -> config and the name map.
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backends/cpu/gguf_quants.h"
#include "base/error.h"
#include "loader/gguf.h"
#include "loader/gguf_model.h"
#include "loader/gguf_writer.h"

namespace mlxcel {
namespace {

template <typename T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void put_str(std::string& s, const std::string& v) {
  put<uint64_t>(s, v.size());
  s += v;
}

struct RawTensor {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t type;
  uint64_t offset;
};

// A hand-made GGUF v3 image: no metadata, the given tensor infos, `data_bytes` of data.
std::string raw_gguf(const std::vector<RawTensor>& ts, size_t data_bytes) {
  std::string s;
  put<uint32_t>(s, 0x46554747);
  put<uint32_t>(s, 3);
  put<uint64_t>(s, ts.size());
  put<uint64_t>(s, 0);
  for (const auto& t : ts) {
    put_str(s, t.name);
    put<uint32_t>(s, uint32_t(t.dims.size()));
    for (uint64_t d : t.dims) put<uint64_t>(s, d);
    put<uint32_t>(s, t.type);
    put<uint64_t>(s, t.offset);
  }
  s.resize((s.size() + 31) / 32 * 32, '\0');
  s.append(data_bytes, '\x01');
  return s;
}

GgufFile parse(const std::string& s) {
  return GgufFile::parse(reinterpret_cast<const uint8_t*>(s.data()), s.size(), "test.gguf");
}

void expect_invalid(const std::string& s, const std::string& needle) {
  try {
    parse(s);
    FAIL() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(GgufTensors, WriterRoundTrip) {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.block_count", 2);
  w.add_f32_array("x", {1.0f, 2.0f});
  w.add_bool_array("b", {true, false});
  std::string q8(34 * 2, '\0');
  q8[0] = 0x00;
  q8[1] = 0x3c;  // d = 1.0
  q8[2] = 5;
  w.add_tensor("a.weight", {32, 2}, gguf::kQ8_0, q8);
  w.add_tensor("n.weight", {3}, gguf::kF32, std::string(12, '\0'));
  w.set_alignment(64);
  std::string bytes = w.serialize();
  GgufFile f = parse(bytes);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  ASSERT_EQ(f.tensors().size(), 2u);
  const auto& a = f.tensors()[0];
  EXPECT_EQ(a.name, "a.weight");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{32, 2}));
  EXPECT_EQ(a.ggml_type, uint32_t(gguf::kQ8_0));
  EXPECT_EQ(a.n_bytes, 68u);
  EXPECT_EQ(f.tensors()[1].offset % 64, 0u);
  float y[64];
  gguf::dequantize_row(a.ggml_type, f.tensor_data(a), y, 64);
  EXPECT_EQ(y[0], 5.0f);
  EXPECT_EQ(f.at("b").as_array().ints, (std::vector<int64_t>{1, 0}));
  EXPECT_THROW(w.add_u32("llama.block_count", 3), Error);                       // duplicate key
  EXPECT_THROW(w.add_tensor("a.weight", {32}, gguf::kQ8_0, std::string(34, 0)), Error);  // duplicate
  EXPECT_THROW(w.add_tensor("c", {31}, gguf::kQ8_0, std::string(34, 0)), Error);  // not a block multiple
  EXPECT_THROW(w.add_tensor("c", {32}, gguf::kQ8_0, std::string(33, 0)), Error);  // wrong size
}

TEST(GgufTensors, LyingInfosFailCleanly) {
  // Valid baseline.
  EXPECT_NO_THROW(parse(raw_gguf({{"a", {32, 2}, 0, 0}}, 256)));
  // Past EOF.
  expect_invalid(raw_gguf({{"a", {32, 4}, 0, 0}}, 256), "past the end");
  expect_invalid(raw_gguf({{"a", {32}, 0, 1u << 20}}, 256), "past the end");
  expect_invalid(raw_gguf({{"a", {32}, 0, ~uint64_t(0) & ~uint64_t(31)}}, 256), "past the end");
  // Misaligned offset.
  expect_invalid(raw_gguf({{"a", {8}, 0, 4}}, 256), "not aligned");
  // Overlapping tensors.
  expect_invalid(raw_gguf({{"a", {32}, 0, 0}, {"b", {32}, 0, 64}}, 256), "overlap");
  // Duplicate names.
  expect_invalid(raw_gguf({{"a", {8}, 0, 0}, {"a", {8}, 0, 32}}, 256), "duplicate tensor");
  // Absurd dims (overflowing products) and too many dims.
  expect_invalid(raw_gguf({{"a", {uint64_t(1) << 40, uint64_t(1) << 40}, 0, 0}}, 256), "absurd");
  expect_invalid(raw_gguf({{"a", {1, 1, 1, 1, 1, 1, 1, 1, 1}, 0, 0}}, 256), "dims");
  // Rows that are not whole blocks.
  expect_invalid(raw_gguf({{"a", {31}, gguf::kQ8_0, 0}}, 256), "block size");
  // A count far beyond the file.
  std::string s = raw_gguf({{"a", {8}, 0, 0}}, 64);
  uint64_t lie = uint64_t(1) << 40;
  std::memcpy(s.data() + 8, &lie, 8);
  expect_invalid(s, "tensor count");
  // Truncated in the middle of the tensor infos.
  std::string t = raw_gguf({{"a", {8}, 0, 0}}, 64);
  EXPECT_THROW(parse(t.substr(0, 30)), Error);
}

TEST(GgufTensors, UnknownTypesParseButDoNotLoad) {
  // IQ2_XXS (16) has a known size: parses; loading it as a model tensor is unsupported.
  std::string s = raw_gguf({{"token_embd.weight", {256, 1}, 16, 0}}, 256);
  EXPECT_NO_THROW(parse(s));
  // A type id nobody knows parses (n_bytes 0) and is refused at load.
  std::string u = raw_gguf({{"token_embd.weight", {32, 1}, 999, 0}}, 256);
  GgufFile f = parse(u);
  EXPECT_EQ(f.tensors()[0].n_bytes, 0u);
}

TEST(GgufNames, MapBothWays) {
  EXPECT_EQ(*gguf_to_hf_tensor_name("llama", "blk.3.attn_q.weight"), "model.layers.3.self_attn.q_proj.weight");
  EXPECT_EQ(*gguf_to_hf_tensor_name("llama", "token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(*gguf_to_hf_tensor_name("llama", "output.weight"), "lm_head.weight");
  EXPECT_EQ(*gguf_to_hf_tensor_name("llama", "blk.0.ffn_norm.weight"), "model.layers.0.post_attention_layernorm.weight");
  EXPECT_EQ(*gguf_to_hf_tensor_name("gemma2", "blk.0.ffn_norm.weight"), "model.layers.0.pre_feedforward_layernorm.weight");
  EXPECT_EQ(*gguf_to_hf_tensor_name("gemma2", "blk.1.post_ffw_norm.weight"),
            "model.layers.1.post_feedforward_layernorm.weight");
  EXPECT_EQ(*gguf_to_hf_tensor_name("phi3", "blk.0.attn_qkv.weight"), "model.layers.0.self_attn.qkv_proj.weight");
  EXPECT_EQ(*gguf_to_hf_tensor_name("phi3", "blk.0.ffn_up.weight"), "model.layers.0.mlp.gate_up_proj.weight");
  EXPECT_EQ(*gguf_to_hf_tensor_name("starcoder2", "blk.0.ffn_up.bias"), "model.layers.0.mlp.c_fc.bias");
  EXPECT_EQ(*gguf_to_hf_tensor_name("qwen3", "blk.0.attn_k_norm.weight"), "model.layers.0.self_attn.k_norm.weight");
  EXPECT_FALSE(gguf_to_hf_tensor_name("llama", "blk.x.attn_q.weight"));
  EXPECT_FALSE(gguf_to_hf_tensor_name("llama", "blk.0.mystery.weight"));
  for (const char* mt : {"llama", "qwen2", "gemma3_text", "olmo2", "phi3", "starcoder2"}) {
    for (const char* n : {"blk.0.attn_q.weight", "blk.7.ffn_down.weight", "output_norm.weight"}) {
      auto hf = gguf_to_hf_tensor_name(mt, n);
      ASSERT_TRUE(hf) << mt << " " << n;
      EXPECT_EQ(hf_to_gguf_tensor_name(mt, *hf), n) << mt;
    }
  }
  EXPECT_EQ(hf_to_gguf_tensor_name("mistral", "model.layers.0.self_attn.k_proj.weight"), "blk.0.attn_k.weight");
  EXPECT_EQ(model_type_to_gguf_arch("mistral"), "llama");
  EXPECT_EQ(gguf_arch_to_model_type("gemma3"), "gemma3_text");
  EXPECT_TRUE(gguf_arch_permutes_qk("llama"));
  EXPECT_FALSE(gguf_arch_permutes_qk("qwen2"));
}

TEST(GgufNames, QkPermutationMatchesConverterAndInverts) {
  // LlamaModel.permute: reshape(n_head, 2, hd/2, ...).swapaxes(1, 2): row h*hd + i*2 + j of
  // the output is row h*hd + j*hd/2 + i of the input.
  const int heads = 2, hd = 6;
  std::vector<uint8_t> rows(heads * hd), out(rows.size()), back(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = uint8_t(i);
  permute_qk_rows(rows.data(), out.data(), heads * hd, 1, heads, /*to_gguf=*/true);
  EXPECT_EQ(out, (std::vector<uint8_t>{0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11}));
  permute_qk_rows(out.data(), back.data(), heads * hd, 1, heads, /*to_gguf=*/false);
  EXPECT_EQ(back, rows);
  EXPECT_THROW(permute_qk_rows(rows.data(), out.data(), 10, 1, 3, true), Error);
}

TEST(GgufConfig, MetadataBecomesHfConfig) {
  GgufWriter w;
  w.add_string("general.architecture", "qwen3");
  w.add_u32("qwen3.embedding_length", 1024);
  w.add_u32("qwen3.feed_forward_length", 3072);
  w.add_u32("qwen3.block_count", 28);
  w.add_u32("qwen3.attention.head_count", 16);
  w.add_u32("qwen3.attention.head_count_kv", 8);
  w.add_u32("qwen3.attention.key_length", 128);
  w.add_u32("qwen3.context_length", 40960);
  w.add_f32("qwen3.attention.layer_norm_rms_epsilon", 1e-6f);
  w.add_f32("qwen3.rope.freq_base", 1000000.0f);
  w.add_string_array("tokenizer.ggml.tokens", std::vector<std::string>(151936, "x"));
  w.add_u32("tokenizer.ggml.eos_token_id", 151645);
  std::string bytes = w.serialize();
  GgufFile f = parse(bytes);
  auto c = gguf_hf_config(f);
  EXPECT_EQ(c["model_type"], "qwen3");
  EXPECT_EQ(c["head_dim"], 128);
  EXPECT_EQ(c["num_key_value_heads"], 8);
  EXPECT_EQ(c["vocab_size"], 151936);
  EXPECT_EQ(c["tie_word_embeddings"], true);
  EXPECT_EQ(c["rope_parameters"]["rope_theta"], 1000000.0);
  ModelConfig cfg = parse_model_config(c);
  EXPECT_EQ(cfg.num_hidden_layers, 28);
  EXPECT_EQ(cfg.eos_token_ids, (std::vector<int>{151645}));

  GgufWriter bad;
  bad.add_string("general.architecture", "mamba");
  std::string b2 = bad.serialize();
  EXPECT_THROW(gguf_hf_config(parse(b2)), Error);
  GgufWriter missing;
  missing.add_string("general.architecture", "llama");
  std::string b3 = missing.serialize();
  EXPECT_THROW(gguf_hf_config(parse(b3)), Error);
}

// Metadata written by llama.cpp's own converter: the vocab-only GGUFs in llama.cpp's
// models/ folder carry the hyperparameters of the models they came from.
TEST(GgufConfig, LlamaCppWrittenMetadata) {
  const std::string dir = std::string(MLXCEL_SOURCE_DIR) + "/.testdata/llama.cpp/models/";
  struct Want {
    const char* file;
    const char* model_type;
    int hidden, layers, heads, kv_heads, ffn, head_dim, vocab;
    double theta;
  };
  for (const Want& w : {Want{"ggml-vocab-llama-bpe.gguf", "llama", 4096, 32, 32, 8, 14336, 128, 128256, 500000.0},
                        Want{"ggml-vocab-qwen2.gguf", "qwen2", 4096, 32, 32, 32, 11008, 128, 151936, 1000000.0},
                        Want{"ggml-vocab-phi-3.gguf", "phi3", 3072, 32, 32, 32, 8192, 96, 32064, 10000.0}}) {
    std::ifstream probe(dir + w.file);
    if (!probe) GTEST_SKIP() << "no test data " << dir << w.file;
    GgufFile f = GgufFile::open(dir + w.file);
    ModelConfig cfg = parse_model_config(gguf_hf_config(f), w.file);
    EXPECT_EQ(cfg.model_type, w.model_type) << w.file;
    EXPECT_EQ(cfg.hidden_size, w.hidden) << w.file;
    EXPECT_EQ(cfg.num_hidden_layers, w.layers) << w.file;
    EXPECT_EQ(cfg.num_attention_heads, w.heads) << w.file;
    EXPECT_EQ(cfg.num_key_value_heads, w.kv_heads) << w.file;
    EXPECT_EQ(cfg.intermediate_size, w.ffn) << w.file;
    EXPECT_EQ(cfg.head_dim, w.head_dim) << w.file;
    EXPECT_EQ(cfg.vocab_size, w.vocab) << w.file;
    EXPECT_EQ(cfg.rope_for("full_attention").theta, w.theta) << w.file;
  }
}

}  // namespace
}  // namespace mlxcel
