#include "loader/gguf_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/cpu/gguf_quants.h"
#include "base/error.h"
#include "base/half.h"
#include "loader/config.h"
#include "loader/gguf_model.h"
#include "loader/weights.h"
#include "ops/rope.h"

namespace mlxcel {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

template <typename T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void put_str(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

}  // namespace

void GgufWriter::begin_kv(const std::string& key, GgufType type) {
  if (has_key(key)) invalid("[gguf] writer: duplicate key '{}'", key);
  keys_.push_back(key);
  ++n_kv_;
  put_str(kv_, key);
  put<uint32_t>(kv_, uint32_t(type));
}
bool GgufWriter::has_key(const std::string& key) const {
  return std::find(keys_.begin(), keys_.end(), key) != keys_.end();
}
void GgufWriter::add_u32(const std::string& k, uint32_t v) { begin_kv(k, GgufType::uint32); put(kv_, v); }
void GgufWriter::add_i32(const std::string& k, int32_t v) { begin_kv(k, GgufType::int32); put(kv_, v); }
void GgufWriter::add_u64(const std::string& k, uint64_t v) { begin_kv(k, GgufType::uint64); put(kv_, v); }
void GgufWriter::add_f32(const std::string& k, float v) { begin_kv(k, GgufType::float32); put(kv_, v); }
void GgufWriter::add_bool(const std::string& k, bool v) { begin_kv(k, GgufType::boolean); put<uint8_t>(kv_, v ? 1 : 0); }
void GgufWriter::add_string(const std::string& k, const std::string& v) { begin_kv(k, GgufType::string); put_str(kv_, v); }
void GgufWriter::add_string_array(const std::string& k, const std::vector<std::string>& v) {
  begin_kv(k, GgufType::array);
  put<uint32_t>(kv_, uint32_t(GgufType::string));
  put<uint64_t>(kv_, v.size());
  for (const auto& s : v) put_str(kv_, s);
}
void GgufWriter::add_i32_array(const std::string& k, const std::vector<int32_t>& v) {
  begin_kv(k, GgufType::array);
  put<uint32_t>(kv_, uint32_t(GgufType::int32));
  put<uint64_t>(kv_, v.size());
  for (int32_t x : v) put(kv_, x);
}
void GgufWriter::add_f32_array(const std::string& k, const std::vector<float>& v) {
  begin_kv(k, GgufType::array);
  put<uint32_t>(kv_, uint32_t(GgufType::float32));
  put<uint64_t>(kv_, v.size());
  for (float x : v) put(kv_, x);
}
void GgufWriter::add_bool_array(const std::string& k, const std::vector<bool>& v) {
  begin_kv(k, GgufType::array);
  put<uint32_t>(kv_, uint32_t(GgufType::boolean));
  put<uint64_t>(kv_, v.size());
  for (bool x : v) put<uint8_t>(kv_, x ? 1 : 0);
}

void GgufWriter::add_tensor(const std::string& name, const std::vector<int64_t>& shape, uint32_t type,
                            std::string data) {
  const size_t be = gguf::block_elems(type);
  if (be == 0) invalid("[gguf] writer: tensor '{}': unsupported type {}", name, type);
  if (shape.empty() || shape[0] % int64_t(be) != 0)
    invalid("[gguf] writer: tensor '{}': first dim is not a multiple of the block size {}", name, be);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const size_t want = size_t(n) / be * gguf::block_bytes(type);
  if (data.size() != want) invalid("[gguf] writer: tensor '{}' has {} bytes, expected {}", name, data.size(), want);
  for (const auto& t : tensors_)
    if (t.name == name) invalid("[gguf] writer: duplicate tensor '{}'", name);
  tensors_.push_back({name, shape, type, std::move(data)});
}

void GgufWriter::set_alignment(uint32_t a) {
  if (a == 0 || (a & (a - 1)) != 0) invalid("[gguf] writer: alignment {} is not a power of two", a);
  alignment_ = a;
}

std::string GgufWriter::serialize() const {
  std::string out;
  const bool al_key = alignment_ != 32 && !has_key("general.alignment");
  put<uint32_t>(out, 0x46554747);
  put<uint32_t>(out, 3);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, n_kv_ + (al_key ? 1 : 0));
  out += kv_;
  if (al_key) {
    put_str(out, "general.alignment");
    put<uint32_t>(out, uint32_t(GgufType::uint32));
    put<uint32_t>(out, alignment_);
  }
  uint64_t offset = 0;
  auto pad = [&](uint64_t x) { return (x + alignment_ - 1) / alignment_ * alignment_; };
  for (const auto& t : tensors_) {
    put_str(out, t.name);
    put<uint32_t>(out, uint32_t(t.shape.size()));
    for (int64_t d : t.shape) put<uint64_t>(out, uint64_t(d));
    put<uint32_t>(out, t.type);
    put<uint64_t>(out, offset);
    offset = pad(offset + t.data.size());
  }
  out.resize(pad(out.size()), '\0');
  for (const auto& t : tensors_) {
    out += t.data;
    out.resize(pad(out.size()), '\0');
  }
  return out;
}

void GgufWriter::write(const std::string& path) const {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) invalid("[gguf] cannot write {}", tmp);
    const std::string bytes = serialize();
    f.write(bytes.data(), std::streamsize(bytes.size()));
    if (!f) {
      std::remove(tmp.c_str());
      invalid("[gguf] cannot write {}", tmp);
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    invalid("[gguf] cannot rename {} to {}: {}", tmp, path, ec.message());
  }
}

GgufQuant parse_gguf_quant(const std::string& s) {
  if (s == "f32") return GgufQuant::f32;
  if (s == "f16") return GgufQuant::f16;
  if (s == "q8_0") return GgufQuant::q8_0;
  if (s == "q4_0") return GgufQuant::q4_0;
  if (s == "q4_1") return GgufQuant::q4_1;
  if (s == "q5_0") return GgufQuant::q5_0;
  if (s == "q5_1") return GgufQuant::q5_1;
  invalid("unknown GGUF quantization '{}' (choose f32, f16, q8_0, q4_0, q4_1, q5_0 or q5_1)", s);
}

// ---- tokenizer ----------------------------------------------------------------------

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The tokenizer.ggml.pre name llama.cpp's converter would pick, guessed from the split
// regex of the pre-tokenizer.
std::string guess_pre(const json& tok, const std::string& model_type) {
  const std::string dump = tok.contains("pre_tokenizer") ? tok["pre_tokenizer"].dump() : "";
  if (dump.find("\\\\p{N}{1,3}") != std::string::npos || dump.find("\\p{N}{1,3}") != std::string::npos) {
    if (model_type.rfind("qwen", 0) == 0 || dump.find("[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+") != std::string::npos)
      return model_type.rfind("qwen", 0) == 0 ? "qwen2" : "llama-bpe";
    return "llama-bpe";
  }
  if (model_type.rfind("qwen", 0) == 0) return "qwen2";
  if (model_type == "starcoder2") return "starcoder";
  if (model_type == "smollm3") return "llama-bpe";
  return "default";
}

}  // namespace

void add_tokenizer_metadata(GgufWriter& w, const std::string& tokenizer_json, const std::string& tokenizer_config_json,
                            const std::string& model_type, int64_t vocab_size) {
  json tok;
  try {
    tok = json::parse(tokenizer_json);
  } catch (const json::exception& e) {
    invalid("[gguf] tokenizer.json is not valid JSON: {}", e.what());
  }
  json tcfg = json::object();
  if (!tokenizer_config_json.empty()) {
    try {
      tcfg = json::parse(tokenizer_config_json);
    } catch (const json::exception&) {
      tcfg = json::object();
    }
  }
  const json& model = tok.at("model");
  const std::string type = model.value("type", "");
  if (type != "BPE") unsupported("[gguf] tokenizer.json model '{}' cannot be written to GGUF (only BPE)", type);
  const bool byte_fallback = model.value("byte_fallback", false);
  // Tokens by id: the vocabulary, then added tokens (which may also extend it).
  std::map<int64_t, std::string> by_id;
  for (const auto& [piece, id] : model.at("vocab").items()) by_id[id.get<int64_t>()] = piece;
  std::map<int64_t, int32_t> types;  // 1 normal, 2 unknown, 3 control, 4 user defined, 6 byte
  if (tok.contains("added_tokens")) {
    for (const auto& a : tok["added_tokens"]) {
      const int64_t id = a.at("id").get<int64_t>();
      by_id[id] = a.at("content").get<std::string>();
      types[id] = a.value("special", false) ? 3 : 4;
    }
  }
  if (by_id.empty()) invalid("[gguf] tokenizer.json has no vocabulary");
  const int64_t n = std::max(by_id.rbegin()->first + 1, vocab_size);
  if (n > (int64_t(1) << 24)) invalid("[gguf] tokenizer.json: token id {} is absurd", n - 1);
  std::vector<std::string> tokens(static_cast<size_t>(n));
  std::vector<int32_t> token_type(static_cast<size_t>(n), 1);
  for (int64_t i = 0; i < n; ++i) {
    auto it = by_id.find(i);
    tokens[size_t(i)] = it != by_id.end() ? it->second : fmt::format("[PAD{}]", i);
    if (it == by_id.end()) token_type[size_t(i)] = 5;  // unused
    auto t = types.find(i);
    if (t != types.end()) token_type[size_t(i)] = t->second;
  }
  std::vector<std::string> merges;
  if (model.contains("merges")) {
    for (const auto& m : model["merges"]) {
      if (m.is_string()) merges.push_back(m.get<std::string>());
      else if (m.is_array() && m.size() == 2) merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    }
  }
  if (byte_fallback) {
    // SentencePiece-style: llama.cpp's "llama" vocabulary merges by score; a token made
    // by merge r gets score -r (earlier merges first).
    w.add_string("tokenizer.ggml.model", "llama");
    std::vector<float> scores(static_cast<size_t>(n), 0.0f);
    std::map<std::string, size_t> rank;
    for (size_t r = 0; r < merges.size(); ++r) {
      const std::string& m = merges[r];
      size_t sp = m.find(' ');
      if (sp == std::string::npos) continue;
      std::string merged = m.substr(0, sp) + m.substr(sp + 1);
      rank.emplace(merged, r);
    }
    for (int64_t i = 0; i < n; ++i) {
      const std::string& t = tokens[size_t(i)];
      if (t.size() == 6 && t.rfind("<0x", 0) == 0 && t.back() == '>') token_type[size_t(i)] = 6;
      auto it = rank.find(t);
      scores[size_t(i)] = it != rank.end() ? -float(it->second) : (token_type[size_t(i)] == 1 ? -1e9f : 0.0f);
    }
    w.add_string_array("tokenizer.ggml.tokens", tokens);
    w.add_f32_array("tokenizer.ggml.scores", scores);
    w.add_i32_array("tokenizer.ggml.token_type", token_type);
    const bool prepend = tok.contains("normalizer") && tok["normalizer"].dump().find("Prepend") != std::string::npos;
    w.add_bool("tokenizer.ggml.add_space_prefix", prepend);
  } else {
    w.add_string("tokenizer.ggml.model", "gpt2");
    w.add_string("tokenizer.ggml.pre", guess_pre(tok, model_type));
    w.add_string_array("tokenizer.ggml.tokens", tokens);
    w.add_i32_array("tokenizer.ggml.token_type", token_type);
    w.add_string_array("tokenizer.ggml.merges", merges);
  }
  // Special tokens from tokenizer_config.json.
  auto token_id = [&](const json& v) -> int64_t {
    std::string s;
    if (v.is_string()) s = v.get<std::string>();
    else if (v.is_object() && v.contains("content")) s = v["content"].get<std::string>();
    else return -1;
    for (int64_t i = 0; i < n; ++i)
      if (tokens[size_t(i)] == s) return i;
    return -1;
  };
  auto add_id = [&](const char* cfg_key, const char* gguf_key) {
    if (!tcfg.contains(cfg_key)) return;
    int64_t id = token_id(tcfg[cfg_key]);
    if (id >= 0) w.add_u32(gguf_key, uint32_t(id));
  };
  add_id("bos_token", "tokenizer.ggml.bos_token_id");
  add_id("eos_token", "tokenizer.ggml.eos_token_id");
  add_id("unk_token", "tokenizer.ggml.unknown_token_id");
  add_id("pad_token", "tokenizer.ggml.padding_token_id");
  if (tcfg.contains("add_bos_token") && tcfg["add_bos_token"].is_boolean())
    w.add_bool("tokenizer.ggml.add_bos_token", tcfg["add_bos_token"].get<bool>());
  else if (byte_fallback)
    w.add_bool("tokenizer.ggml.add_bos_token", true);
  else
    w.add_bool("tokenizer.ggml.add_bos_token", false);
  if (tcfg.contains("add_eos_token") && tcfg["add_eos_token"].is_boolean())
    w.add_bool("tokenizer.ggml.add_eos_token", tcfg["add_eos_token"].get<bool>());
  if (tcfg.contains("chat_template") && tcfg["chat_template"].is_string())
    w.add_string("tokenizer.chat_template", tcfg["chat_template"].get<std::string>());
}

// ---- checkpoint conversion -------------------------------------------------------------

namespace {

uint32_t file_type_of(GgufQuant q) {
  switch (q) {
    case GgufQuant::f32: return 0;
    case GgufQuant::f16: return 1;
    case GgufQuant::q8_0: return 7;
    case GgufQuant::q4_0: return 2;
    case GgufQuant::q4_1: return 3;  // llama_ftype: MOSTLY_Q4_1
    case GgufQuant::q5_0: return 8;
    case GgufQuant::q5_1: return 9;
  }
  return 1;
}

// The ggml type of a converted matrix.
uint32_t matrix_type_of(GgufQuant q) {
  switch (q) {
    case GgufQuant::f32: return gguf::kF32;
    case GgufQuant::f16: return gguf::kF16;
    case GgufQuant::q8_0: return gguf::kQ8_0;
    case GgufQuant::q4_0: return gguf::kQ4_0;
    case GgufQuant::q4_1: return gguf::kQ4_1;
    case GgufQuant::q5_0: return gguf::kQ5_0;
    case GgufQuant::q5_1: return gguf::kQ5_1;
  }
  return gguf::kF16;
}

std::string encode_rows(const std::vector<float>& v, int64_t K, uint32_t type) {
  const int64_t rows = int64_t(v.size()) / K;
  std::string out(gguf::row_bytes(type, K) * size_t(rows), '\0');
  uint8_t* dst = reinterpret_cast<uint8_t*>(out.data());
  const size_t rb = gguf::row_bytes(type, K);
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = v.data() + r * K;
    uint8_t* d = dst + size_t(r) * rb;
    switch (type) {
      case gguf::kF32: std::memcpy(d, src, size_t(K) * 4); break;
      case gguf::kF16:
        for (int64_t i = 0; i < K; ++i) {
          uint16_t h = f32_to_f16(src[i]);
          std::memcpy(d + 2 * i, &h, 2);
        }
        break;
      default: gguf::quantize_row(type, src, d, K); break;  // the 32-value block formats
    }
  }
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

void convert_to_gguf(const std::string& src_dir, const std::string& dst_path, const GgufConvertOptions& opts) {
  const fs::path src(src_dir);
  const std::string config_text = read_text(src / "config.json");
  if (config_text.empty()) throw_error(ErrorKind::not_found, "convert: {} has no config.json", src_dir);
  json raw;
  try {
    raw = json::parse(config_text);
  } catch (const json::exception& e) {
    invalid("convert: {}/config.json is not valid JSON: {}", src_dir, e.what());
  }
  ModelConfig cfg = parse_model_config(raw, (src / "config.json").string());
  if (cfg.quantization) invalid("convert: {} is MLX-quantized; convert the original checkpoint to GGUF", src_dir);
  const std::string mt = cfg.model_type;
  const std::string arch = model_type_to_gguf_arch(mt);
  if (arch.empty()) unsupported("convert: model_type '{}' has no GGUF architecture in mlxcel", mt);
  WeightMap weights = load_checkpoint_weights(src_dir);

  GgufWriter w;
  const std::string A = arch + ".";
  w.add_string("general.architecture", arch);
  w.add_string("general.name", opts.name.empty() ? fs::absolute(src).filename().string() : opts.name);
  w.add_u32("general.file_type", file_type_of(opts.quant));
  w.add_u32("general.quantization_version", 2);
  if (cfg.max_position_embeddings > 0) w.add_u32(A + "context_length", uint32_t(cfg.max_position_embeddings));
  w.add_u32(A + "embedding_length", uint32_t(cfg.hidden_size));
  w.add_u32(A + "block_count", uint32_t(cfg.num_hidden_layers));
  w.add_u32(A + "feed_forward_length", uint32_t(cfg.intermediate_size));
  w.add_u32(A + "attention.head_count", uint32_t(cfg.num_attention_heads));
  w.add_u32(A + "attention.head_count_kv", uint32_t(cfg.num_key_value_heads));
  w.add_u32(A + "attention.key_length", uint32_t(cfg.head_dim));
  w.add_u32(A + "attention.value_length", uint32_t(cfg.head_dim));
  w.add_u32(A + "vocab_size", uint32_t(cfg.vocab_size));
  if (mt == "starcoder2") w.add_f32(A + "attention.layer_norm_epsilon", cfg.norm_eps);
  else w.add_f32(A + "attention.layer_norm_rms_epsilon", cfg.norm_eps);
  const RopeConfig& rope = cfg.rope_for("full_attention");
  w.add_f32(A + "rope.freq_base", float(rope.theta));
  w.add_u32(A + "rope.dimension_count", uint32_t(rope.rotary_dim > 0 ? rope.rotary_dim : cfg.head_dim));
  if (rope.type == "linear") {
    w.add_string(A + "rope.scaling.type", "linear");
    w.add_f32(A + "rope.scaling.factor", float(rope.factor));
  } else if (rope.type == "yarn") {
    w.add_string(A + "rope.scaling.type", "yarn");
    w.add_f32(A + "rope.scaling.factor", float(rope.factor));
    if (rope.original_max_position > 0)
      w.add_u32(A + "rope.scaling.original_context_length", uint32_t(rope.original_max_position));
  } else if (rope.type == "longrope" && rope.original_max_position > 0) {
    w.add_u32(A + "rope.scaling.original_context_length", uint32_t(rope.original_max_position));
    const double s = rope.factor > 1 ? rope.factor : double(cfg.max_position_embeddings) / rope.original_max_position;
    const double attn = rope.attention_factor > 0 ? rope.attention_factor
                        : s <= 1 ? 1.0 : std::sqrt(1 + std::log(s) / std::log(double(rope.original_max_position)));
    w.add_f32(A + "rope.scaling.attn_factor", float(attn));
  }
  if (mt == "gemma3_text") {
    auto it = cfg.rope.find("sliding_attention");
    if (it != cfg.rope.end()) w.add_f32(A + "rope.freq_base_swa", float(it->second.theta));
  }
  bool any_sliding = false;
  for (const auto& t : cfg.layer_types) any_sliding |= t == "sliding_attention";
  if (cfg.sliding_window > 0 && any_sliding) {
    w.add_u32(A + "attention.sliding_window", uint32_t(cfg.sliding_window));
    if (mt == "gemma3_text" || mt == "olmo2") {
      std::vector<bool> pat;
      for (const auto& t : cfg.layer_types) pat.push_back(t == "sliding_attention");
      w.add_bool_array(A + "attention.sliding_window_pattern", pat);
    }
  }
  if (cfg.attn_logit_softcapping > 0) w.add_f32(A + "attn_logit_softcapping", cfg.attn_logit_softcapping);
  if (cfg.final_logit_softcapping > 0) w.add_f32(A + "final_logit_softcapping", cfg.final_logit_softcapping);
  if (mt == "granite") {
    auto num = [&](const char* k) -> std::optional<float> {
      if (cfg.raw.contains(k) && cfg.raw[k].is_number()) return cfg.raw[k].get<float>();
      return std::nullopt;
    };
    if (auto v = num("attention_multiplier")) w.add_f32(A + "attention.scale", *v);
    if (auto v = num("embedding_multiplier")) w.add_f32(A + "embedding_scale", *v);
    if (auto v = num("residual_multiplier")) w.add_f32(A + "residual_scale", *v);
    if (auto v = num("logits_scaling")) w.add_f32(A + "logit_scale", *v);
  }
  if (opts.embed_hf_config) w.add_string("mlxcel.hf_config", raw.dump());

  // Tokenizer and chat template.
  const std::string tok_text = read_text(src / "tokenizer.json");
  if (!tok_text.empty()) {
    std::string tcfg = read_text(src / "tokenizer_config.json");
    add_tokenizer_metadata(w, tok_text, tcfg, mt, cfg.vocab_size);
    if (!w.has_key("tokenizer.chat_template")) {
      std::string tpl = read_text(src / "chat_template.jinja");
      if (!tpl.empty()) w.add_string("tokenizer.chat_template", tpl);
    }
  }
  if (!w.has_key("tokenizer.ggml.bos_token_id") && !cfg.bos_token_ids.empty())
    w.add_u32("tokenizer.ggml.bos_token_id", uint32_t(cfg.bos_token_ids[0]));
  if (!w.has_key("tokenizer.ggml.eos_token_id") && !cfg.eos_token_ids.empty())
    w.add_u32("tokenizer.ggml.eos_token_id", uint32_t(cfg.eos_token_ids[0]));

  // RoPE tensors llama.cpp reads its scaling from.
  if (rope.type == "llama3") {
    RopeConfig plain = rope;
    plain.type = "default";
    RopeParams scaled = rope_frequencies(rope, 1), base = rope_frequencies(plain, 1);
    auto s = scaled.inv_freq.to_f32_vector(), b = base.inv_freq.to_f32_vector();
    std::vector<float> ff(s.size());
    for (size_t i = 0; i < s.size(); ++i) ff[i] = b[i] / s[i];
    w.add_tensor("rope_freqs.weight", {int64_t(ff.size())}, gguf::kF32, encode_rows(ff, int64_t(ff.size()), gguf::kF32));
  } else if (rope.type == "longrope") {
    std::vector<float> lf(rope.long_factor.begin(), rope.long_factor.end());
    std::vector<float> sf(rope.short_factor.begin(), rope.short_factor.end());
    w.add_tensor("rope_factors_long.weight", {int64_t(lf.size())}, gguf::kF32, encode_rows(lf, int64_t(lf.size()), gguf::kF32));
    w.add_tensor("rope_factors_short.weight", {int64_t(sf.size())}, gguf::kF32, encode_rows(sf, int64_t(sf.size()), gguf::kF32));
  }

  const bool permute = gguf_arch_permutes_qk(arch);
  const bool gemma = mt == "gemma" || mt == "gemma2" || mt == "gemma3_text";
  const uint32_t mat_type = matrix_type_of(opts.quant);
  for (const auto& [name, t] : weights) {
    if (cfg.tie_word_embeddings && name == "lm_head.weight") continue;
    const std::string gname = hf_to_gguf_tensor_name(mt, name);
    if (gname.empty()) {
      if (ends_with(name, "rotary_emb.inv_freq")) continue;
      unsupported("convert: tensor '{}' has no GGUF name for {}", name, mt);
    }
    if (!is_floating(t.dtype())) invalid("convert: tensor '{}' has dtype {}", name, dtype_name(t.dtype()));
    std::vector<float> v = t.to_f32_vector();
    const int64_t K = t.ndim() == 0 ? 1 : t.dim(-1);
    const int64_t rows = K ? int64_t(v.size()) / K : 0;
    if (gemma && ends_with(name, "norm.weight"))
      for (float& x : v) x += 1.0f;
    if (permute && t.ndim() >= 1) {
      int heads = 0;
      if (ends_with(name, "q_proj.weight") || ends_with(name, "q_proj.bias")) heads = cfg.num_attention_heads;
      if (ends_with(name, "k_proj.weight") || ends_with(name, "k_proj.bias")) heads = cfg.num_key_value_heads;
      if (heads > 0) {
        const int64_t prow = t.ndim() == 1 ? int64_t(v.size()) : rows;
        const size_t rb = (t.ndim() == 1 ? 1 : size_t(K)) * sizeof(float);
        std::vector<float> p(v.size());
        permute_qk_rows(reinterpret_cast<const uint8_t*>(v.data()), reinterpret_cast<uint8_t*>(p.data()), prow, rb,
                        heads, /*to_gguf=*/true);
        v.swap(p);
      }
    }
    uint32_t type = gguf::kF32;
    if (t.ndim() == 2) {
      type = mat_type;
      if (type != gguf::kF32 && type != gguf::kF16 && K % 32 != 0) type = gguf::kF16;
    }
    std::vector<int64_t> shape;
    for (int i = t.ndim() - 1; i >= 0; --i) shape.push_back(t.dim(i));
    if (shape.empty()) shape.push_back(1);
    w.add_tensor(gname, shape, type, encode_rows(v, K, type));
  }
  w.write(dst_path);
}

}  // namespace mlxcel
