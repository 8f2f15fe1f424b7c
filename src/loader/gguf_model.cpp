#include "loader/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "backends/cpu/gguf_quants.h"
#include "base/error.h"
#include "ops/ops.h"

namespace mlxcel {

namespace {

using json = nlohmann::json;

struct ArchInfo {
  const char* arch;
  const char* model_type;
};
// GGUF general.architecture <-> Hugging Face model_type, for the families mlxcel runs.
constexpr ArchInfo kArchs[] = {
    {"llama", "llama"},   {"qwen2", "qwen2"},   {"qwen3", "qwen3"},           {"gemma", "gemma"},
    {"gemma2", "gemma2"}, {"gemma3", "gemma3_text"}, {"phi3", "phi3"},        {"starcoder2", "starcoder2"},
    {"granite", "granite"}, {"olmo2", "olmo2"}, {"smollm3", "smollm3"},
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_gemma(const std::string& mt) { return mt == "gemma" || mt == "gemma2" || mt == "gemma3_text"; }

// Per-layer module names: GGUF suffix (after blk.N.) <-> HF suffix (after model.layers.N.).
std::vector<std::pair<std::string, std::string>> layer_map(const std::string& mt) {
  std::vector<std::pair<std::string, std::string>> m = {
      {"attn_q", "self_attn.q_proj"},          {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},          {"attn_output", "self_attn.o_proj"},
      {"attn_q_norm", "self_attn.q_norm"},     {"attn_k_norm", "self_attn.k_norm"},
      {"ffn_gate", "mlp.gate_proj"},           {"ffn_down", "mlp.down_proj"},
  };
  if (mt == "gemma2" || mt == "gemma3_text") {
    m.insert(m.end(), {{"attn_norm", "input_layernorm"},
                       {"post_attention_norm", "post_attention_layernorm"},
                       {"ffn_norm", "pre_feedforward_layernorm"},
                       {"post_ffw_norm", "post_feedforward_layernorm"}});
  } else if (mt == "olmo2") {
    m.insert(m.end(), {{"post_attention_norm", "post_attention_layernorm"},
                       {"post_ffw_norm", "post_feedforward_layernorm"}});
  } else {
    m.insert(m.end(), {{"attn_norm", "input_layernorm"}, {"ffn_norm", "post_attention_layernorm"}});
  }
  if (mt == "phi3") {
    m.insert(m.end(), {{"attn_qkv", "self_attn.qkv_proj"}, {"ffn_up", "mlp.gate_up_proj"}});
  } else if (mt == "starcoder2") {
    m.insert(m.end(), {{"ffn_up", "mlp.c_fc"}});
    for (auto& [g, h] : m)
      if (g == "ffn_down") h = "mlp.c_proj";
  } else {
    m.insert(m.end(), {{"ffn_up", "mlp.up_proj"}});
  }
  return m;
}

// "blk.12.attn_q.weight" -> {12, "attn_q", ".weight"}.
bool split_block_name(const std::string& name, const std::string& prefix, int64_t& layer, std::string& module,
                      std::string& suffix) {
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  size_t p = prefix.size(), q = p;
  while (q < name.size() && name[q] >= '0' && name[q] <= '9') ++q;
  if (q == p || q - p > 6 || q >= name.size() || name[q] != '.') return false;
  layer = std::stoll(name.substr(p, q - p));
  std::string rest = name.substr(q + 1);
  size_t dot = rest.rfind('.');
  if (dot == std::string::npos) return false;
  module = rest.substr(0, dot);
  suffix = rest.substr(dot);
  return true;
}

// ---- metadata helpers ---------------------------------------------------------------

struct Meta {
  const GgufFile& f;
  std::string arch;
  std::string key(const std::string& k) const { return arch + "." + k; }
  const GgufValue* find(const std::string& k) const { return f.find(key(k)); }
  int64_t int_or(const std::string& k, int64_t fallback) const {
    const GgufValue* v = find(k);
    if (!v) return fallback;
    if (v->type() == GgufType::array) {  // per-layer values (head_count_kv): the first
      const GgufArray& a = v->as_array();
      if (a.ints.empty()) invalid("[gguf] {}: {} is an empty or non-integer array", f.path(), key(k));
      return a.ints[0];
    }
    return v->as_int();
  }
  int64_t require_int(const std::string& k) const {
    if (!find(k)) throw_error(ErrorKind::invalid_request, "[gguf] {}: missing metadata key '{}'", f.path(), key(k));
    return int_or(k, 0);
  }
  std::optional<double> num(const std::string& k) const {
    const GgufValue* v = find(k);
    if (!v) return std::nullopt;
    return v->as_float();
  }
};

const GgufTensorInfo* find_tensor(const GgufFile& f, const std::string& name) {
  for (const auto& t : f.tensors())
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<float> tensor_f32(const GgufFile& f, const GgufTensorInfo& t) {
  if (!gguf::can_dequantize(t.ggml_type))
    unsupported("[gguf] {}: tensor '{}' has type {}, which mlxcel cannot read", f.path(), t.name,
                ggml_type_name(t.ggml_type));
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  std::vector<float> out(static_cast<size_t>(n));
  gguf::dequantize_row(t.ggml_type, f.tensor_data(t), out.data(), n);
  return out;
}

// Recovers llama3 RoPE parameters from llama.cpp's rope_freqs tensor (per-pair factors
// by which each inverse frequency is divided). factor = the largest; the other three
// from the candidates Meta's checkpoints use, picking the best match.
json llama3_rope_from_factors(const std::vector<float>& ff, double theta, int rotary_dim) {
  double factor = 1;
  for (float v : ff) factor = std::max(factor, double(v));
  double best_err = 1e30;
  json best;
  for (double low : {1.0, 2.0}) {
    for (double high : {4.0, 2.0, 8.0}) {
      for (int orig : {8192, 4096, 2048, 16384, 32768, 65536, 131072, 16, 32, 64, 128, 256, 512, 1024}) {
        const double low_wl = orig / low, high_wl = orig / high;
        double err = 0;
        for (size_t i = 0; i < ff.size(); ++i) {
          const double inv = 1.0 / std::pow(theta, double(2 * i) / rotary_dim);
          const double wl = 2 * M_PI / inv;
          double want;
          if (wl < high_wl) want = 1;
          else if (wl > low_wl) want = factor;
          else {
            const double smooth = (orig / wl - low) / (high - low);
            want = 1.0 / ((1 - smooth) / factor + smooth);
          }
          err = std::max(err, std::fabs(want - ff[i]) / want);
        }
        if (err < best_err) {
          best_err = err;
          best = {{"rope_type", "llama3"}, {"rope_theta", theta}, {"factor", factor}, {"low_freq_factor", low},
                  {"high_freq_factor", high}, {"original_max_position_embeddings", orig}};
        }
      }
    }
  }
  return best;
}

}  // namespace

std::string gguf_arch_to_model_type(const std::string& arch) {
  for (const auto& a : kArchs)
    if (arch == a.arch) return a.model_type;
  return "";
}

std::string model_type_to_gguf_arch(const std::string& mt) {
  if (mt == "mistral") return "llama";  // as convert_hf_to_gguf.py writes MistralForCausalLM
  for (const auto& a : kArchs)
    if (mt == a.model_type) return a.arch;
  return "";
}

bool gguf_arch_permutes_qk(const std::string& arch) {
  return arch == "llama" || arch == "granite" || arch == "smollm3";
}

// The tensors outside the blocks: {GGUF name, HF name} (both without ".weight").
constexpr std::pair<const char*, const char*> kTopLevelNames[] = {
    {"token_embd", "model.embed_tokens"}, {"output_norm", "model.norm"}, {"output", "lm_head"}};

// `name` ("<module>.<suffix>") with its module renamed through kTopLevelNames (from GGUF to
// HF when `to_hf`), or nullopt when the module is not a top-level one.
static std::optional<std::string> rename_top_level(const std::string& name, bool to_hf) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return std::nullopt;
  const std::string module = name.substr(0, dot);
  for (const auto& [gguf, hf] : kTopLevelNames)
    if (module == (to_hf ? gguf : hf)) return std::string(to_hf ? hf : gguf) + name.substr(dot);
  return std::nullopt;
}

std::optional<std::string> gguf_to_hf_tensor_name(const std::string& mt, const std::string& name) {
  if (auto top = rename_top_level(name, /*to_hf=*/true)) return top;
  int64_t layer;
  std::string module, suffix;
  if (!split_block_name(name, "blk.", layer, module, suffix)) return std::nullopt;
  for (const auto& [g, h] : layer_map(mt))
    if (g == module) return fmt::format("model.layers.{}.{}{}", layer, h, suffix);
  return std::nullopt;
}

std::string hf_to_gguf_tensor_name(const std::string& mt, const std::string& name) {
  if (auto top = rename_top_level(name, /*to_hf=*/false)) return *top;
  int64_t layer;
  std::string module, suffix;
  if (!split_block_name(name, "model.layers.", layer, module, suffix)) return "";
  const std::string type = mt == "mistral" ? "llama" : mt;
  for (const auto& [g, h] : layer_map(type))
    if (h == module) return fmt::format("blk.{}.{}{}", layer, g, suffix);
  return "";
}

void permute_qk_rows(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes, int n_heads, bool to_gguf) {
  if (n_heads <= 0 || rows % (2 * n_heads) != 0)
    invalid("[gguf] cannot permute {} rows over {} heads (need an even head_dim)", rows, n_heads);
  const int64_t hd = rows / n_heads, half = hd / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t hf_row = h * hd + j * half + i;   // transformers: halves
        const int64_t gg_row = h * hd + i * 2 + j;      // llama.cpp: interleaved pairs
        const int64_t from = to_gguf ? hf_row : gg_row, to = to_gguf ? gg_row : hf_row;
        std::memcpy(dst + size_t(to) * row_bytes, src + size_t(from) * row_bytes, row_bytes);
      }
    }
  }
}

json gguf_hf_config(const GgufFile& f, bool use_embedded_config) {
  const std::string arch = f.get_string("general.architecture", "");
  const std::string mt = gguf_arch_to_model_type(arch);
  if (use_embedded_config) {
    if (const GgufValue* v = f.find("mlxcel.hf_config")) {
      try {
        json j = json::parse(v->as_string());
        if (!j.is_object()) invalid("not an object");
        return j;
      } catch (const json::exception& e) {
        invalid("[gguf] {}: mlxcel.hf_config is not valid JSON: {}", f.path(), e.what());
      }
    }
  }
  if (mt.empty()) {
    std::string list;
    for (const auto& a : kArchs) list += (list.empty() ? "" : ", ") + std::string(a.arch);
    unsupported("[gguf] {}: architecture '{}' is not supported; supported: {}", f.path(), arch, list);
  }
  Meta m{f, arch};
  json c;
  c["model_type"] = mt;
  c["hidden_size"] = m.require_int("embedding_length");
  c["intermediate_size"] = m.require_int("feed_forward_length");
  c["num_hidden_layers"] = m.require_int("block_count");
  const int64_t heads = m.require_int("attention.head_count");
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = m.int_or("attention.head_count_kv", heads);
  if (heads <= 0) invalid("[gguf] {}: {}.attention.head_count must be positive", f.path(), arch);
  const int64_t hidden = c["hidden_size"].get<int64_t>();
  const int64_t head_dim = m.int_or("attention.key_length", hidden / heads);
  c["head_dim"] = head_dim;
  if (auto v = m.find("context_length")) c["max_position_embeddings"] = v->as_int();
  // Vocabulary: the explicit key, else the token list, else the embedding's rows.
  int64_t vocab = m.int_or("vocab_size", 0);
  if (vocab == 0) {
    if (const GgufValue* t = f.find("tokenizer.ggml.tokens")) vocab = int64_t(t->as_array().size());
    else if (const GgufTensorInfo* e = find_tensor(f, "token_embd.weight"); e && e->shape.size() == 2)
      vocab = e->shape[1];
  }
  c["vocab_size"] = vocab;
  if (auto v = m.num("attention.layer_norm_rms_epsilon")) c["rms_norm_eps"] = *v;
  else if (auto v2 = m.num("attention.layer_norm_epsilon")) c["norm_epsilon"] = *v2;
  c["tie_word_embeddings"] = find_tensor(f, "output.weight") == nullptr;
  if (find_tensor(f, "blk.0.attn_q.bias") || find_tensor(f, "blk.0.attn_qkv.bias")) c["attention_bias"] = true;
  if (is_gemma(mt) || mt == "starcoder2") c["hidden_act"] = "gelu_pytorch_tanh";
  else c["hidden_act"] = "silu";
  if (is_gemma(mt)) c["hidden_activation"] = "gelu_pytorch_tanh";
  if (auto v = f.find("tokenizer.ggml.bos_token_id")) c["bos_token_id"] = v->as_int();
  {
    json eos = json::array();
    for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
      if (auto v = f.find(k)) {
        int64_t id = v->as_int();
        if (std::find(eos.begin(), eos.end(), json(id)) == eos.end()) eos.push_back(id);
      }
    if (!eos.empty()) c["eos_token_id"] = eos;
  }
  if (auto v = f.find("tokenizer.ggml.padding_token_id")) c["pad_token_id"] = v->as_int();

  // Attention pattern and scalars.
  const int64_t L = c["num_hidden_layers"].get<int64_t>();
  if (auto v = m.find("attention.sliding_window")) c["sliding_window"] = v->as_int();
  if (const GgufValue* pat = m.find("attention.sliding_window_pattern")) {
    if (pat->type() == GgufType::array) {
      const GgufArray& a = pat->as_array();
      if (int64_t(a.ints.size()) == L) {
        json lt = json::array();
        for (int64_t b : a.ints) lt.push_back(b ? "sliding_attention" : "full_attention");
        c["layer_types"] = lt;
      }
    } else {
      c["sliding_window_pattern"] = pat->as_int();
    }
  }
  if (mt == "gemma3_text" && !c.contains("layer_types") && !c.contains("sliding_window_pattern"))
    c["sliding_window_pattern"] = 6;
  if (auto v = m.num("attn_logit_softcapping")) c["attn_logit_softcapping"] = *v;
  if (auto v = m.num("final_logit_softcapping")) c["final_logit_softcapping"] = *v;
  if (mt == "gemma2" || mt == "gemma3_text") {
    // llama.cpp scales by 1/sqrt(head_dim), except the 27B models (hidden / heads).
    const bool is_27b = (mt == "gemma2" && L == 46) || (mt == "gemma3_text" && L == 62);
    c["query_pre_attn_scalar"] = is_27b ? hidden / heads : head_dim;
    if (mt == "gemma2" && !c.contains("attn_logit_softcapping")) c["attn_logit_softcapping"] = nullptr;
    if (mt == "gemma2" && !c.contains("final_logit_softcapping")) c["final_logit_softcapping"] = nullptr;
  }
  if (mt == "granite") {
    if (auto v = m.num("attention.scale")) c["attention_multiplier"] = *v;
    if (auto v = m.num("embedding_scale")) c["embedding_multiplier"] = *v;
    if (auto v = m.num("residual_scale")) c["residual_multiplier"] = *v;
    if (auto v = m.num("logit_scale")) c["logits_scaling"] = *v;
  }
  if (mt == "smollm3") c["no_rope_layer_interval"] = 4;

  // RoPE.
  const double theta = m.num("rope.freq_base").value_or(10000.0);
  const int64_t rot_dims = m.int_or("rope.dimension_count", head_dim);
  json rope = {{"rope_type", "default"}, {"rope_theta", theta}};
  if (rot_dims != head_dim && head_dim > 0) rope["partial_rotary_factor"] = double(rot_dims) / double(head_dim);
  const std::string scaling = f.get_string(m.key("rope.scaling.type"), "none");
  const auto factor = m.num("rope.scaling.factor");
  const auto orig_ctx = m.find("rope.scaling.original_context_length");
  if (scaling == "linear" && factor && *factor != 1.0) {
    rope["rope_type"] = "linear";
    rope["factor"] = *factor;
  } else if (scaling == "yarn") {
    rope["rope_type"] = "yarn";
    rope["factor"] = factor.value_or(1.0);
    if (orig_ctx) rope["original_max_position_embeddings"] = orig_ctx->as_int();
    if (auto v = m.num("rope.scaling.yarn_beta_fast")) rope["beta_fast"] = *v;
    if (auto v = m.num("rope.scaling.yarn_beta_slow")) rope["beta_slow"] = *v;
    if (auto v = m.num("rope.scaling.attn_factor")) rope["attention_factor"] = *v;
  }
  const GgufTensorInfo* long_f = find_tensor(f, "rope_factors_long.weight");
  const GgufTensorInfo* short_f = find_tensor(f, "rope_factors_short.weight");
  if (long_f && short_f) {
    auto lf = tensor_f32(f, *long_f), sf = tensor_f32(f, *short_f);
    rope["rope_type"] = "longrope";
    rope["long_factor"] = std::vector<double>(lf.begin(), lf.end());
    rope["short_factor"] = std::vector<double>(sf.begin(), sf.end());
    if (orig_ctx) {
      rope["original_max_position_embeddings"] = orig_ctx->as_int();
      c["original_max_position_embeddings"] = orig_ctx->as_int();
    }
    if (auto v = m.num("rope.scaling.attn_factor")) rope["attention_factor"] = *v;
  } else if (const GgufTensorInfo* rf = find_tensor(f, "rope_freqs.weight")) {
    json l3 = llama3_rope_from_factors(tensor_f32(f, *rf), theta, int(rot_dims));
    if (rope.contains("partial_rotary_factor")) l3["partial_rotary_factor"] = rope["partial_rotary_factor"];
    rope = l3;
  }
  if (mt == "gemma3_text") {
    json local = {{"rope_type", "default"}, {"rope_theta", m.num("rope.freq_base_swa").value_or(10000.0)}};
    c["rope_parameters"] = {{"full_attention", rope}, {"sliding_attention", local}};
  } else {
    c["rope_parameters"] = rope;
  }
  return c;
}

namespace {

constexpr uint32_t kNotPacked = 0xFFFFFFFFu;

// The scales and biases of a matrix load_tensor turned into MLX affine words (affine_4bit).
struct AffineParts {
  Tensor scales, biases;
};

// A GGUF tensor as an HF-layout Tensor: [dims reversed], f32/f16/bf16 views when the
// bytes can be used as they are, f32 copies otherwise (dequantized, permuted, shifted).
Tensor load_tensor(const std::shared_ptr<const GgufFile>& file, const GgufTensorInfo& t, int permute_heads,
                   bool gemma_norm, const GgufLoadOptions& opts, uint32_t* packed_type, AffineParts* affine) {
  const GgufFile& f = *file;
  const bool keep_packed = opts.keep_packed;
  *packed_type = kNotPacked;
  if (!gguf::can_dequantize(t.ggml_type))
    unsupported("[gguf] {}: tensor '{}' has type {} ({}), which mlxcel cannot read", f.path(), t.name,
                ggml_type_name(t.ggml_type), t.ggml_type);
  if (t.shape.empty() || t.shape.size() > 4)
    invalid("[gguf] {}: tensor '{}' has {} dims", f.path(), t.name, t.shape.size());
  Shape shape(t.shape.rbegin(), t.shape.rend());
  const int64_t K = t.shape[0];
  int64_t rows = 1;
  for (size_t i = 1; i < t.shape.size(); ++i) rows *= t.shape[i];
  if (K == 0 || rows == 0) invalid("[gguf] {}: tensor '{}' is empty", f.path(), t.name);
  const size_t rb = gguf::row_bytes(t.ggml_type, K);
  if (rb * size_t(rows) != t.n_bytes)
    invalid("[gguf] {}: tensor '{}': size mismatch ({} bytes for {} rows of {})", f.path(), t.name, t.n_bytes, rows,
            rb);
  const uint8_t* src = f.tensor_data(t);
  std::vector<uint8_t> permuted;
  if (permute_heads > 0) {
    permuted.resize(t.n_bytes);
    permute_qk_rows(src, permuted.data(), rows, rb, permute_heads, /*to_gguf=*/false);
    src = permuted.data();
  }
  const bool is_matrix = t.shape.size() == 2;
  // What the CPU kernels take as it is (gguf::kept_packed); for other devices (affine_4bit)
  // only Q8_0 / Q4_0, which place_weights turns into MLX weights bit for bit.
  const bool as_is = gguf::kept_packed(t.ggml_type) &&
                     (!opts.affine_4bit || t.ggml_type == gguf::kQ8_0 || t.ggml_type == gguf::kQ4_0);
  if (keep_packed && is_matrix && as_is) {
    *packed_type = t.ggml_type;
    // Registered for the CPU kernels' decode-time x8 copy (gguf::repackable_owner).
    if (permuted.empty())
      return Tensor::view_of(src, {rows, int64_t(rb)}, DType::u8,
                             gguf::repackable_owner(src, t.n_bytes, std::const_pointer_cast<GgufFile>(file)));
    auto bytes = std::make_shared<std::vector<uint8_t>>(std::move(permuted));
    return Tensor::view_of(bytes->data(), {rows, int64_t(rb)}, DType::u8,
                           gguf::repackable_owner(bytes->data(), bytes->size(), bytes));
  }
  if (keep_packed && opts.affine_4bit && is_matrix && (t.ggml_type == gguf::kQ4_1 || t.ggml_type == gguf::kQ4_K)) {
    // Exactly MLX affine 4-bit groups of 32 (gguf::affine4_row), f32 scales and biases.
    *packed_type = t.ggml_type;
    QuantizedWeight a = ops::gguf_rows_to_affine4(t.ggml_type, src, rb, rows, K);
    affine->scales = std::move(a.scales);
    affine->biases = std::move(a.biases);
    return a.packed;
  }
  const bool dense = t.ggml_type == gguf::kF32 || t.ggml_type == gguf::kF16 || t.ggml_type == gguf::kBF16;
  if (keep_packed && is_matrix && !dense && K % 32 == 0) {
    // The block formats the CPU does not keep and the device has no MLX form of (with
    // affine_4bit: Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, Q6_K): requantized to Q8_0 and kept packed,
    // which place_weights turns into MLX 8-bit weights, instead of 16-bit copies. Q8_0's
    // rounding (at most amax / 254 of each 32-value block) is far below the source format's.
    *packed_type = gguf::kQ8_0;
    auto q8 = std::make_shared<Tensor>(ops::gguf_rows_to_q8_0(t.ggml_type, src, rb, rows, K));
    uint8_t* dst = q8->data<uint8_t>();
    return Tensor::view_of(dst, q8->shape(), DType::u8, gguf::repackable_owner(dst, q8->nbytes(), q8));
  }
  if (dense && permuted.empty() && !gemma_norm) {
    const DType dt = t.ggml_type == gguf::kF32 ? DType::f32 : t.ggml_type == gguf::kF16 ? DType::f16 : DType::bf16;
    if (reinterpret_cast<uintptr_t>(src) % dtype_size(dt) == 0)
      return Tensor::view_of(src, shape, dt, std::const_pointer_cast<GgufFile>(file));
  }
  Tensor out = Tensor::empty(shape, DType::f32);
  float* y = out.data<float>();
  for (int64_t r = 0; r < rows; ++r) gguf::dequantize_row(t.ggml_type, src + size_t(r) * rb, y + r * K, K);
  if (gemma_norm) {
    for (int64_t i = 0; i < rows * K; ++i) y[i] -= 1.0f;
  }
  // Matrices of block formats: the requested dtype (f16 by default); vectors stay f32.
  if (is_matrix && !dense && opts.dequant_dtype != DType::f32) return ops::astype(out, opts.dequant_dtype);
  return out;
}

}  // namespace

GgufCheckpoint gguf_checkpoint(std::shared_ptr<const GgufFile> file, const GgufLoadOptions& opts) {
  const GgufFile& f = *file;
  GgufCheckpoint ck;
  ck.file = file;
  json hf = gguf_hf_config(f, opts.use_embedded_config);
  ck.config = parse_model_config(hf, f.path() + " (GGUF metadata)");
  const std::string mt = ck.config.model_type;
  const std::string arch = f.get_string("general.architecture", "");
  const bool permute = gguf_arch_permutes_qk(arch);
  ck.weights = WeightMap(f.path());
  for (const GgufTensorInfo& t : f.tensors()) {
    if (is_gguf_rope_tensor(t.name)) continue;  // folded into the RoPE config
    std::optional<std::string> hf_name = gguf_to_hf_tensor_name(mt, t.name);
    if (!hf_name) {
      ck.weights.add_note(fmt::format("ignored GGUF tensor '{}' (no mlxcel counterpart)", t.name));
      continue;
    }
    int heads = 0;
    if (permute) {
      if (ends_with(t.name, "attn_q.weight") || ends_with(t.name, "attn_q.bias")) heads = ck.config.num_attention_heads;
      if (ends_with(t.name, "attn_k.weight") || ends_with(t.name, "attn_k.bias")) heads = ck.config.num_key_value_heads;
    }
    const bool gemma_norm = is_gemma(mt) && ends_with(*hf_name, "norm.weight");
    uint32_t packed_type = kNotPacked;
    AffineParts affine;
    Tensor w = load_tensor(file, t, heads, gemma_norm, opts, &packed_type, &affine);
    if (packed_type != kNotPacked) {
      const std::string prefix = hf_name->substr(0, hf_name->size() - std::string(".weight").size());
      ck.weights.insert(prefix + kGgufTypeSuffix, Tensor::from_i32({1}, {int32_t(packed_type)}));
      if (affine.scales.defined()) {
        ck.weights.insert(prefix + ".scales", std::move(affine.scales));
        ck.weights.insert(prefix + ".biases", std::move(affine.biases));
      }
    }
    ck.weights.insert(*hf_name, std::move(w));
  }
  return ck;
}

bool is_gguf_type_marker(const std::string& name) { return ends_with(name, kGgufTypeSuffix); }

bool is_gguf_rope_tensor(const std::string& name) {
  return name == "rope_freqs.weight" || name == "rope_factors_long.weight" || name == "rope_factors_short.weight";
}

QuantSpec packed_gguf_spec(const Tensor& marker, const std::string& what) {
  const int32_t type = marker.dtype() == DType::i32 && marker.numel() == 1 ? *marker.data<int32_t>() : -1;
  if (type == int32_t(gguf::kQ8_0)) return {QuantFormat::gguf_q8_0, 8, 32};
  if (type == int32_t(gguf::kQ4_0)) return {QuantFormat::gguf_q4_0, 4, 32};
  // Q4_K: packed blocks for the CPU, or (next to scales: GgufLoadOptions::affine_4bit) MLX
  // affine words of groups of 32, the spec's bits and group size.
  if (type == int32_t(gguf::kQ4_K)) return {QuantFormat::gguf_q4_k, 4, 32};
  if (type == int32_t(gguf::kQ6_K)) return {QuantFormat::gguf_q6_k, 6, 16};
  if (type == int32_t(gguf::kQ5_K)) return {QuantFormat::gguf_q5_k, 5, 32};
  if (type == int32_t(gguf::kQ3_K)) return {QuantFormat::gguf_q3_k, 3, 16};
  if (type == int32_t(gguf::kQ2_K)) return {QuantFormat::gguf_q2_k, 2, 16};
  // Q4_1 (like Q4_K): packed blocks for the CPU, or MLX affine words next to their scales.
  if (type == int32_t(gguf::kQ4_1)) return {QuantFormat::gguf_q4_1, 4, 32};
  if (type == int32_t(gguf::kQ5_0)) return {QuantFormat::gguf_q5_0, 5, 32};
  if (type == int32_t(gguf::kQ5_1)) return {QuantFormat::gguf_q5_1, 5, 32};
  invalid("{} has GGUF type {}, which is not kept packed", what, type);
}

GgufCheckpoint load_gguf_checkpoint(const std::string& path, const GgufLoadOptions& opts) {
  auto file = std::make_shared<GgufFile>(GgufFile::open(path));
  return gguf_checkpoint(std::move(file), opts);
}

bool is_gguf_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  if (ends_with(path, ".gguf")) return true;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

std::string gguf_model_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (is_gguf_path(path)) return path;
  if (!fs::is_directory(path, ec) || fs::exists(fs::path(path) / "config.json", ec)) return "";
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(path, ec))
    if (e.is_regular_file(ec) && e.path().extension() == ".gguf") found.push_back(e.path().string());
  if (found.size() == 1) return found[0];
  if (found.size() > 1) {
    std::sort(found.begin(), found.end());
    std::string list;
    for (const auto& f : found) list += "\n  " + f;
    invalid("{} holds several GGUF files; pass one of them:{}", path, list);
  }
  return "";
}

}  // namespace mlxcel
