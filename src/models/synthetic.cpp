#include "models/synthetic.h"

#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "backends/cpu/gguf_quants.h"
#include "base/error.h"
#include "base/half.h"
#include "base/thread_pool.h"
#include "loader/gguf_model.h"

namespace mlxcel {

namespace {

using nlohmann::json;

json preset_json(const std::string& name) {
  auto llama3_rope = [](double factor) {
    return json{{"rope_type", "llama3"}, {"factor", factor}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                {"original_max_position_embeddings", 8192}};
  };
  if (name == "llama-3.1-8b")
    return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 128256},
            {"hidden_size", 4096}, {"intermediate_size", 14336}, {"num_hidden_layers", 32},
            {"num_attention_heads", 32}, {"num_key_value_heads", 8}, {"head_dim", 128},
            {"max_position_embeddings", 131072}, {"rms_norm_eps", 1e-5}, {"hidden_act", "silu"},
            {"tie_word_embeddings", false}, {"rope_theta", 500000.0}, {"rope_scaling", llama3_rope(8.0)},
            {"bos_token_id", 128000}, {"eos_token_id", 128001}};
  if (name == "llama-3.2-1b")
    return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 128256},
            {"hidden_size", 2048}, {"intermediate_size", 8192}, {"num_hidden_layers", 16},
            {"num_attention_heads", 32}, {"num_key_value_heads", 8}, {"head_dim", 64},
            {"max_position_embeddings", 131072}, {"rms_norm_eps", 1e-5}, {"hidden_act", "silu"},
            {"tie_word_embeddings", true}, {"rope_theta", 500000.0}, {"rope_scaling", llama3_rope(32.0)},
            {"bos_token_id", 128000}, {"eos_token_id", 128001}};
  auto qwen3 = [](int vocab, int hidden, int inter, int layers, int heads, int kv, bool tie) {
    return json{{"architectures", {"Qwen3ForCausalLM"}}, {"model_type", "qwen3"}, {"vocab_size", vocab},
                {"hidden_size", hidden}, {"intermediate_size", inter}, {"num_hidden_layers", layers},
                {"num_attention_heads", heads}, {"num_key_value_heads", kv}, {"head_dim", 128},
                {"max_position_embeddings", 40960}, {"rms_norm_eps", 1e-6}, {"hidden_act", "silu"},
                {"tie_word_embeddings", tie}, {"attention_bias", false}, {"rope_theta", 1000000.0},
                {"eos_token_id", 151645}};
  };
  if (name == "qwen3-0.6b") return qwen3(151936, 1024, 3072, 28, 16, 8, true);
  if (name == "qwen3-8b") return qwen3(151936, 4096, 12288, 36, 32, 8, false);
  if (name == "tiny") {
    json j = qwen3(512, 64, 128, 2, 4, 2, true);
    j["head_dim"] = 16;
    return j;
  }
  return nullptr;
}

bool is_dense(const std::string& f) { return f == "f32" || f == "f16" || f == "bf16"; }
int mlx_bits(const std::string& f) { return f == "q8" ? 8 : f == "q4" ? 4 : 0; }
bool is_gguf(const std::string& f) { return f == "q8_0" || f == "q4_0" || f == "q4_k"; }

void check_format(const std::string& f) {
  if (!is_dense(f) && !mlx_bits(f) && !is_gguf(f))
    invalid("unknown synthetic format '{}'; use f32, f16, bf16, q8, q4, q8_0, q4_0 or q4_k", f);
}

// xorshift64* per chunk: deterministic whatever the thread count.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull) {}
  uint64_t next() {
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    return s * 0x2545f4914f6cdd1dull;
  }
  float uniform(float a) { return a * (float(int64_t(next() >> 40) - (int64_t(1) << 23)) / float(1 << 23)); }
};

constexpr float kAmp = 0.02f;
constexpr int64_t kChunk = 1 << 16;

// Fills n items in chunks of kChunk on the thread pool; fn(rng, begin, end).
template <typename Fn>
void fill_chunks(int64_t n, uint64_t seed, const Fn& fn) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  ThreadPool::global().parallel_for(chunks, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      Rng r(seed * 1000003ull + uint64_t(c));
      fn(r, c * kChunk, std::min(n, (c + 1) * kChunk));
    }
  });
}

Tensor dense(const Shape& shape, DType dt, uint64_t seed) {
  Tensor t = Tensor::empty(shape, dt);
  const int64_t n = t.numel();
  fill_chunks(n, seed, [&](Rng& r, int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float v = r.uniform(kAmp);
      if (dt == DType::f32) t.data<float>()[i] = v;
      else if (dt == DType::f16) t.data<uint16_t>()[i] = f32_to_f16(v);
      else t.data<uint16_t>()[i] = f32_to_bf16(v);
    }
  });
  return t;
}

Tensor filled(const Shape& shape, DType dt, float v) {
  Tensor t = Tensor::empty(shape, dt);
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (dt == DType::f32) t.data<float>()[i] = v;
    else if (dt == DType::f16) t.data<uint16_t>()[i] = f32_to_f16(v);
    else t.data<uint16_t>()[i] = f32_to_bf16(v);
  }
  return t;
}

void insert_matrix(WeightMap& w, const std::string& prefix, int64_t N, int64_t K, const std::string& f,
                   uint64_t seed) {
  if (is_dense(f)) {
    w.insert(prefix + ".weight", dense({N, K}, f == "f32" ? DType::f32 : f == "f16" ? DType::f16 : DType::bf16, seed));
    return;
  }
  if (const int bits = mlx_bits(f)) {
    if (K % 64) invalid("synthetic {}: K = {} is not a multiple of the group size 64", prefix, K);
    Tensor packed = Tensor::empty({N, K * bits / 32}, DType::u32);
    uint32_t* p = packed.data<uint32_t>();
    fill_chunks(packed.numel(), seed, [&](Rng& r, int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) p[i] = uint32_t(r.next() >> 32);
    });
    const float scale = 2.0f * kAmp / float((1 << bits) - 1);
    w.insert(prefix + ".weight", packed);
    w.insert(prefix + ".scales", filled({N, K / 64}, DType::bf16, scale));
    w.insert(prefix + ".biases", filled({N, K / 64}, DType::bf16, -kAmp));
    return;
  }
  if (f == "q4_k") {
    // GGUF Q4_K blocks of 256 in the form a device load gives them (GgufLoadOptions::
    // affine_4bit): MLX affine 4-bit words, f32 scales and biases in groups of 32, and the
    // Q4_K marker. Every sub-block's 6-bit scale and min are 32 (scale bytes 0xA0 x 8, 0
    // x 4), d = 2 kAmp / (15 * 32), dmin = kAmp / 32: values in [-kAmp, kAmp].
    if (K % 256) invalid("synthetic {}: K = {} is not a multiple of the block size 256", prefix, K);
    const int64_t nb = K / 256, W = K / 8, G = K / 32;
    Tensor words = Tensor::empty({N, W}, DType::u32);
    Tensor scales = Tensor::empty({N, G}, DType::f32), biases = Tensor::empty({N, G}, DType::f32);
    uint32_t* wp = words.data<uint32_t>();
    float* sp = scales.data<float>();
    float* bp = biases.data<float>();
    const uint16_t d = f32_to_f16(2.0f * kAmp / (15.0f * 32.0f)), dmin = f32_to_f16(kAmp / 32.0f);
    fill_chunks(N, seed, [&](Rng& r, int64_t b, int64_t e) {
      std::vector<uint8_t> row(size_t(nb) * 144);
      for (int64_t n = b; n < e; ++n) {
        for (int64_t k = 0; k < nb; ++k) {
          uint8_t* blk = row.data() + k * 144;
          std::memcpy(blk, &d, 2);
          std::memcpy(blk + 2, &dmin, 2);
          for (int j = 0; j < 12; ++j) blk[4 + j] = j < 8 ? 0xA0 : 0;
          for (int j = 0; j < 128; j += 8) {
            const uint64_t v = r.next();
            std::memcpy(blk + 16 + j, &v, 8);
          }
        }
        gguf::affine4_row(gguf::kQ4_K, row.data(), K, wp + n * W, sp + n * G, bp + n * G);
      }
    });
    w.insert(prefix + ".weight", words);
    w.insert(prefix + ".scales", scales);
    w.insert(prefix + ".biases", biases);
    w.insert(prefix + kGgufTypeSuffix, Tensor::from_i32({1}, {int32_t(gguf::kQ4_K)}));
    return;
  }
  // GGUF Q8_0 / Q4_0 blocks of 32: f16 d, then 32 int8 or 16 bytes of nibbles.
  if (K % 32) invalid("synthetic {}: K = {} is not a multiple of the block size 32", prefix, K);
  const bool q8 = f == "q8_0";
  const int64_t bb = q8 ? 34 : 18, nb = K / 32;
  Tensor packed = Tensor::empty({N, nb * bb}, DType::u8);
  uint8_t* p = static_cast<uint8_t*>(packed.raw());
  const uint16_t d = f32_to_f16(q8 ? kAmp / 127.0f : kAmp / 8.0f);
  fill_chunks(N * nb, seed, [&](Rng& r, int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      uint8_t* blk = p + i * bb;
      std::memcpy(blk, &d, 2);
      for (int64_t j = 2; j < bb; j += 8) {
        const uint64_t v = r.next();
        std::memcpy(blk + j, &v, size_t(std::min<int64_t>(8, bb - j)));
      }
    }
  });
  w.insert(prefix + ".weight", packed);
  w.insert(prefix + kGgufTypeSuffix, Tensor::from_i32({1}, {int32_t(q8 ? gguf::kQ8_0 : gguf::kQ4_0)}));
}

}  // namespace

std::vector<std::string> synthetic_presets() { return {"llama-3.1-8b", "llama-3.2-1b", "qwen3-0.6b", "qwen3-8b", "tiny"}; }

ModelConfig synthetic_config(const std::string& preset_or_path, const std::string& format, int layers) {
  check_format(format);
  json j = preset_json(preset_or_path);
  std::string source = "synthetic " + preset_or_path;
  if (j.is_null()) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(preset_or_path, ec)) {
      std::string list;
      for (const auto& p : synthetic_presets()) list += (list.empty() ? "" : ", ") + p;
      invalid("unknown synthetic model '{}': use one of {} or a path to a config.json", preset_or_path, list);
    }
    std::ifstream in(preset_or_path);
    try {
      j = json::parse(in);
    } catch (const json::exception& e) {
      invalid("{}: not valid JSON: {}", preset_or_path, e.what());
    }
    source = preset_or_path;
    j.erase("quantization");
    j.erase("quantization_config");
  }
  if (layers > 0) j["num_hidden_layers"] = layers;
  j["torch_dtype"] = format == "f32" ? "float32" : format == "f16" ? "float16" : "bfloat16";
  if (j.contains("dtype")) j.erase("dtype");
  if (const int bits = mlx_bits(format)) j["quantization"] = {{"group_size", 64}, {"bits", bits}};
  ModelConfig cfg = parse_model_config(j, source);
  if (cfg.model_type != "llama" && cfg.model_type != "qwen3" && cfg.model_type != "qwen2" &&
      cfg.model_type != "mistral")
    unsupported("synthetic weights are made for llama, mistral, qwen2 and qwen3 layouts, not '{}'", cfg.model_type);
  return cfg;
}

WeightMap synthetic_weights(const ModelConfig& c, const std::string& f) {
  check_format(f);
  WeightMap w("synthetic " + c.model_type);
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = int64_t(c.num_attention_heads) * hd, nkv = int64_t(c.num_key_value_heads) * hd;
  const DType norm_dt = f == "f32" ? DType::f32 : f == "f16" ? DType::f16 : DType::bf16;
  uint64_t seed = 1;
  insert_matrix(w, "model.embed_tokens", c.vocab_size, H, f, seed++);
  w.insert("model.norm.weight", filled({H}, norm_dt, 1.0f));
  const bool qk_norm = c.model_type == "qwen3";
  const bool qkv_bias = c.model_type == "qwen2";
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    w.insert(p + "input_layernorm.weight", filled({H}, norm_dt, 1.0f));
    w.insert(p + "post_attention_layernorm.weight", filled({H}, norm_dt, 1.0f));
    if (qk_norm) {
      w.insert(p + "self_attn.q_norm.weight", filled({hd}, norm_dt, 1.0f));
      w.insert(p + "self_attn.k_norm.weight", filled({hd}, norm_dt, 1.0f));
    }
    insert_matrix(w, p + "self_attn.q_proj", nq, H, f, seed++);
    insert_matrix(w, p + "self_attn.k_proj", nkv, H, f, seed++);
    insert_matrix(w, p + "self_attn.v_proj", nkv, H, f, seed++);
    insert_matrix(w, p + "self_attn.o_proj", H, nq, f, seed++);
    if (qkv_bias) {
      w.insert(p + "self_attn.q_proj.bias", filled({nq}, norm_dt, 0.0f));
      w.insert(p + "self_attn.k_proj.bias", filled({nkv}, norm_dt, 0.0f));
      w.insert(p + "self_attn.v_proj.bias", filled({nkv}, norm_dt, 0.0f));
    }
    insert_matrix(w, p + "mlp.gate_proj", I, H, f, seed++);
    insert_matrix(w, p + "mlp.up_proj", I, H, f, seed++);
    insert_matrix(w, p + "mlp.down_proj", H, I, f, seed++);
  }
  if (!c.tie_word_embeddings) insert_matrix(w, "lm_head", c.vocab_size, H, f, seed++);
  return w;
}

int64_t decode_weight_bytes(const WeightMap& w, const ModelConfig& c) {
  int64_t total = 0;
  for (const auto& [name, t] : w) {
    if (!c.tie_word_embeddings && name.rfind("model.embed_tokens.", 0) == 0) continue;
    if (is_gguf_type_marker(name)) continue;
    total += int64_t(t.nbytes());
  }
  return total;
}

}  // namespace mlxcel
