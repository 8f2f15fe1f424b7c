#include "loader/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "base/error.h"
#include "loader/json_checks.h"

namespace mlxcel {

using nlohmann::json;

namespace {

// Limits past which a value is certainly corrupt (and would make us allocate absurdly).
constexpr int64_t kMaxLayers = 100000;
constexpr int64_t kMaxHidden = int64_t(1) << 20;
constexpr int64_t kMaxIntermediate = int64_t(1) << 22;
constexpr int64_t kMaxHeads = int64_t(1) << 16;
constexpr int64_t kMaxHeadDim = int64_t(1) << 16;
constexpr int64_t kMaxVocab = int64_t(1) << 24;
constexpr int64_t kMaxPositions = int64_t(1) << 31;  // exclusive; fits an int
constexpr double kMaxTheta = 1e12;

constexpr int kMaxConfigDepth = 64;

// Reads fields of one JSON object and names them (with their path) in errors.
class Reader {
 public:
  Reader(const json& obj, std::string source, std::string prefix)
      : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

  const json& obj() const { return obj_; }
  std::string field(const std::string& key) const { return prefix_ + key; }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    invalid("{}: field '{}' {}", source_, field(key), what);
  }

  // The value of `key`, or nullptr when absent or null.
  const json* find(const std::string& key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool has(const std::string& key) const { return find(key) != nullptr; }

  std::optional<int64_t> opt_int(const std::string& key, int64_t lo, int64_t hi) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    return to_int(*v, key, lo, hi);
  }
  int64_t to_int(const json& v, const std::string& key, int64_t lo, int64_t hi) const {
    int64_t x = 0;
    if (v.is_number_unsigned()) {
      uint64_t u = v.get<uint64_t>();
      if (u > uint64_t(std::numeric_limits<int64_t>::max())) fail(key, fmt::format("is out of range ({})", u));
      x = int64_t(u);
    } else if (v.is_number_integer()) {
      x = v.get<int64_t>();
    } else if (v.is_number_float()) {
      double d = v.get<double>();
      if (!std::isfinite(d)) fail(key, "must be a finite integer");
      if (d != std::floor(d) || std::fabs(d) > 9.0e18) fail(key, fmt::format("must be an integer, got {}", d));
      x = int64_t(d);
    } else {
      fail(key, fmt::format("must be an integer, got {}", json_type_name(v)));
    }
    if (x < lo || x > hi) fail(key, fmt::format("is out of range: {} (expected {}..{})", x, lo, hi));
    return x;
  }
  std::optional<double> opt_num(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    return to_num(*v, key);
  }
  double to_num(const json& v, const std::string& key) const {
    if (!v.is_number()) fail(key, fmt::format("must be a number, got {}", json_type_name(v)));
    double d = v.get<double>();
    if (!std::isfinite(d)) fail(key, "must be a finite number");
    return d;
  }
  std::optional<bool> opt_bool(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) fail(key, fmt::format("must be a boolean, got {}", json_type_name(*v)));
    return v->get<bool>();
  }
  std::optional<std::string> opt_str(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) fail(key, fmt::format("must be a string, got {}", json_type_name(*v)));
    return v->get<std::string>();
  }
  const json* opt_obj(const std::string& key) const {
    const json* v = find(key);
    if (v && !v->is_object()) fail(key, fmt::format("must be an object, got {}", json_type_name(*v)));
    return v;
  }
  // An int or a list of ints (token ids).
  std::vector<int> int_list(const std::string& key) const {
    std::vector<int> out;
    const json* v = find(key);
    if (!v) return out;
    if (v->is_array()) {
      for (size_t i = 0; i < v->size(); ++i) {
        const json& e = (*v)[i];
        if (e.is_null()) continue;
        out.push_back(int(to_int(e, fmt::format("{}[{}]", key, i), 0, std::numeric_limits<int32_t>::max())));
      }
    } else {
      out.push_back(int(to_int(*v, key, 0, std::numeric_limits<int32_t>::max())));
    }
    return out;
  }
  std::vector<double> num_list(const json& v, const std::string& key) const {
    if (!v.is_array()) fail(key, fmt::format("must be an array of numbers, got {}", json_type_name(v)));
    std::vector<double> out;
    out.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) out.push_back(to_num(v[i], fmt::format("{}[{}]", key, i)));
    return out;
  }

 private:
  const json& obj_;
  std::string source_;
  std::string prefix_;
};

// transformers class defaults for fields that real config files leave out (the
// Gemma 3 multimodal checkpoints only write a handful of text_config keys).
void apply_family_defaults(json& text, const std::string& mt) {
  auto set_default = [&](const char* key, json v) {
    if (!text.contains(key)) text[key] = std::move(v);
  };
  if (mt == "gemma3_text" || mt == "gemma3") {
    set_default("vocab_size", 262208);
    set_default("num_attention_heads", 8);
    set_default("num_key_value_heads", 4);
    set_default("head_dim", 256);
    set_default("hidden_activation", "gelu_pytorch_tanh");
    set_default("max_position_embeddings", 131072);
    set_default("rms_norm_eps", 1e-6);
    set_default("query_pre_attn_scalar", 256);
    set_default("sliding_window", 4096);
    set_default("tie_word_embeddings", true);
    if (!text.contains("rope_parameters")) {
      set_default("rope_theta", 1000000.0);
      set_default("rope_local_base_freq", 10000.0);
    }
    if (!text.contains("layer_types")) set_default("sliding_window_pattern", 6);
  } else if (mt == "gemma2") {
    set_default("vocab_size", 256000);
    set_default("num_attention_heads", 8);
    set_default("num_key_value_heads", 4);
    set_default("head_dim", 256);
    set_default("hidden_activation", "gelu_pytorch_tanh");
    set_default("query_pre_attn_scalar", 256);
    set_default("sliding_window", 4096);
    set_default("final_logit_softcapping", 30.0);
    set_default("attn_logit_softcapping", 50.0);
    set_default("tie_word_embeddings", true);
  } else if (mt == "gemma") {
    set_default("tie_word_embeddings", true);
    set_default("hidden_activation", "gelu_pytorch_tanh");
  }
}

std::string normalize_rope_type(std::string t) {
  if (t.empty()) return "default";
  if (t == "su") return "longrope";     // early Phi-3 configs
  if (t == "mrope") return "default";   // Qwen2-VL: sections are a family extra (raw)
  return t;
}

// Fills `rc` from one rope dict (4.x rope_scaling or a 5.x rope_parameters entry).
void read_rope_dict(const Reader& r, RopeConfig& rc, double* partial_factor) {
  if (auto t = r.opt_str("rope_type")) {
    rc.type = normalize_rope_type(*t);
  } else if (auto t2 = r.opt_str("type")) {
    rc.type = normalize_rope_type(*t2);
  }
  if (auto v = r.opt_num("rope_theta")) rc.theta = *v;
  if (auto v = r.opt_num("factor")) rc.factor = *v;
  if (auto v = r.opt_int("original_max_position_embeddings", 1, kMaxPositions - 1)) rc.original_max_position = int(*v);
  if (auto v = r.opt_num("low_freq_factor")) rc.low_freq_factor = *v;
  if (auto v = r.opt_num("high_freq_factor")) rc.high_freq_factor = *v;
  if (auto v = r.opt_num("beta_fast")) rc.beta_fast = *v;
  if (auto v = r.opt_num("beta_slow")) rc.beta_slow = *v;
  if (auto v = r.opt_num("mscale")) rc.mscale = *v;
  if (auto v = r.opt_num("mscale_all_dim")) rc.mscale_all_dim = *v;
  if (auto v = r.opt_num("attention_factor")) rc.attention_factor = *v;
  if (auto v = r.opt_bool("truncate")) rc.truncate = *v;
  if (const json* v = r.find("short_factor")) rc.short_factor = r.num_list(*v, "short_factor");
  if (const json* v = r.find("long_factor")) rc.long_factor = r.num_list(*v, "long_factor");
  if (partial_factor) {
    if (auto v = r.opt_num("partial_rotary_factor")) *partial_factor = *v;
  }
}

void validate_rope(const RopeConfig& rc, const std::string& source, const std::string& where) {
  auto bad = [&](const std::string& what) { invalid("{}: field '{}' {}", source, where, what); };
  static const std::set<std::string> known = {"default", "linear", "dynamic", "llama3", "yarn", "longrope"};
  if (!known.count(rc.type)) {
    throw_error(ErrorKind::unsupported, "{}: field '{}': unsupported rope type '{}'", source, where, rc.type);
  }
  if (!(rc.theta > 0) || rc.theta > kMaxTheta) bad(fmt::format("has an invalid rope_theta {}", rc.theta));
  if (!(rc.factor > 0) || rc.factor > 1e6) bad(fmt::format("has an invalid factor {}", rc.factor));
  if (rc.type == "llama3") {
    if (!(rc.low_freq_factor > 0) || !(rc.high_freq_factor > rc.low_freq_factor))
      bad(fmt::format("llama3 needs 0 < low_freq_factor < high_freq_factor (got {}, {})", rc.low_freq_factor,
                      rc.high_freq_factor));
    if (rc.original_max_position <= 0) bad("llama3 needs original_max_position_embeddings");
  }
  if (rc.type == "yarn" && !(rc.beta_fast > 0 && rc.beta_slow > 0)) bad("yarn needs positive beta_fast and beta_slow");
  if (rc.mscale < 0 || rc.mscale_all_dim < 0 || rc.attention_factor < 0) bad("has a negative mscale/attention_factor");
  if (rc.type == "longrope") {
    size_t half = size_t(rc.rotary_dim / 2);
    if (rc.short_factor.size() != half || rc.long_factor.size() != half) {
      bad(fmt::format("longrope needs short_factor and long_factor of length rotary_dim/2 = {} (got {} and {})",
                      half, rc.short_factor.size(), rc.long_factor.size()));
    }
    for (double f : rc.short_factor)
      if (!(f > 0)) bad("longrope short_factor values must be positive");
    for (double f : rc.long_factor)
      if (!(f > 0)) bad("longrope long_factor values must be positive");
  }
}

std::optional<QuantSpec> read_spec(const json& obj, const std::string& source, const std::string& where,
                                   const QuantSpec* base) {
  Reader r(obj, source, where + ".");
  QuantSpec s = base ? *base : QuantSpec{};
  if (auto mode = r.opt_str("mode")) {
    if (*mode != "affine")
      throw_error(ErrorKind::unsupported, "{}: field '{}mode': unsupported quantization mode '{}'", source,
                  where + ".", *mode);
  }
  auto bits = r.opt_int("bits", std::numeric_limits<int>::min(), std::numeric_limits<int>::max());
  auto group = r.opt_int("group_size", std::numeric_limits<int>::min(), std::numeric_limits<int>::max());
  if (!base) {
    if (!bits) r.fail("bits", "is required");
    if (!group) r.fail("group_size", "is required");
  }
  if (bits) s.bits = int(*bits);
  if (group) s.group_size = int(*group);
  if (!(s.bits == 2 || s.bits == 3 || s.bits == 4 || s.bits == 5 || s.bits == 6 || s.bits == 8))
    r.fail("bits", fmt::format("must be one of 2, 3, 4, 5, 6, 8 (got {})", s.bits));
  if (!(s.group_size == 32 || s.group_size == 64 || s.group_size == 128))
    r.fail("group_size", fmt::format("must be one of 32, 64, 128 (got {})", s.group_size));
  return s;
}

std::optional<QuantConfig> read_quant(const json& root, const json& text, const std::string& source) {
  const json* q = nullptr;
  std::string where;
  for (const json* obj : {&root, &text}) {
    auto it = obj->find("quantization");
    if (it != obj->end() && !it->is_null()) {
      q = &*it;
      where = "quantization";
      break;
    }
  }
  if (!q) {
    for (const json* obj : {&root, &text}) {
      auto it = obj->find("quantization_config");
      if (it == obj->end() || it->is_null()) continue;
      if (!it->is_object()) invalid("{}: field 'quantization_config' must be an object", source);
      std::string method;
      if (auto m = it->find("quant_method"); m != it->end() && !m->is_null()) {
        if (!m->is_string()) invalid("{}: field 'quantization_config.quant_method' must be a string", source);
        method = m->get<std::string>();
      }
      bool mlx_style = it->contains("bits") && it->contains("group_size");
      if (!method.empty() && method != "mlx") {
        throw_error(ErrorKind::unsupported, "{}: quantization_config.quant_method '{}' is not supported (only MLX "
                    "affine quantization is)", source, method);
      }
      if (!mlx_style) {
        throw_error(ErrorKind::unsupported, "{}: quantization_config without bits/group_size is not supported",
                    source);
      }
      q = &*it;
      where = "quantization_config";
      break;
    }
  }
  if (!q) return std::nullopt;
  if (!q->is_object()) invalid("{}: field '{}' must be an object, got {}", source, where, json_type_name(*q));
  QuantConfig qc;
  qc.base = *read_spec(*q, source, where, nullptr);
  for (auto it = q->begin(); it != q->end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (v.is_object()) {
      qc.overrides[key] = read_spec(v, source, where + "." + key, &qc.base);
    } else if (v.is_boolean()) {
      qc.overrides[key] = v.get<bool>() ? std::optional<QuantSpec>(qc.base) : std::nullopt;
    }
    // Scalars (bits, group_size, mode, quant_method, ...) are base fields.
  }
  return qc;
}

}  // namespace

std::optional<QuantSpec> QuantConfig::spec_for(const std::string& module) const {
  auto it = overrides.find(module);
  if (it == overrides.end() && module.size() > 7 && module.compare(module.size() - 7, 7, ".weight") == 0) {
    it = overrides.find(module.substr(0, module.size() - 7));
  }
  if (it != overrides.end()) return it->second;
  return base;
}

const RopeConfig& ModelConfig::rope_for(const std::string& layer_type) const {
  auto it = rope.find(layer_type);
  if (it != rope.end()) return it->second;
  it = rope.find("");
  if (it != rope.end()) return it->second;
  static const RopeConfig kDefault;
  return kDefault;
}

ModelConfig parse_model_config(const json& root, const std::string& source) {
  if (!root.is_object()) invalid("{}: the config must be a JSON object, got {}", source, json_type_name(root));
  ModelConfig cfg;
  cfg.raw_root = root;

  // The text model's config: text_config (multimodal wrappers) or the root itself.
  std::string prefix;
  json text = root;
  {
    auto it = root.find("text_config");
    if (it != root.end() && !it->is_null()) {
      if (!it->is_object()) invalid("{}: field 'text_config' must be an object, got {}", source, json_type_name(*it));
      text = *it;
      prefix = "text_config.";
      // Fields the wrappers keep at the root only.
      for (const char* key : {"eos_token_id", "bos_token_id", "pad_token_id", "tie_word_embeddings", "torch_dtype",
                              "dtype", "vocab_size"}) {
        if (!text.contains(key) && root.contains(key)) text[key] = root[key];
      }
    }
  }
  {
    Reader rt(text, source, prefix);
    if (auto mt = rt.opt_str("model_type")) cfg.model_type = *mt;
    else if (auto mt2 = Reader(root, source, "").opt_str("model_type")) cfg.model_type = *mt2;
    if (!cfg.model_type.empty()) text["model_type"] = cfg.model_type;
  }
  apply_family_defaults(text, cfg.model_type);
  cfg.raw = text;
  Reader r(text, source, prefix);
  Reader rr(root, source, "");

  if (const json* a = rr.find("architectures")) {
    if (!a->is_array()) rr.fail("architectures", "must be an array of strings");
    for (const auto& e : *a) {
      if (!e.is_string()) rr.fail("architectures", "must be an array of strings");
      cfg.architectures.push_back(e.get<std::string>());
    }
  }

  auto required = [&](const char* key, int64_t hi) -> int {
    auto v = r.opt_int(key, 1, hi);
    if (!v) r.fail(key, "is required");
    return int(*v);
  };
  cfg.hidden_size = required("hidden_size", kMaxHidden);
  cfg.num_hidden_layers = required("num_hidden_layers", kMaxLayers);
  cfg.num_attention_heads = required("num_attention_heads", kMaxHeads);
  cfg.vocab_size = required("vocab_size", kMaxVocab);
  if (auto v = r.opt_int("intermediate_size", 0, kMaxIntermediate)) cfg.intermediate_size = int(*v);
  cfg.num_key_value_heads = int(r.opt_int("num_key_value_heads", 1, kMaxHeads).value_or(cfg.num_attention_heads));
  if (cfg.num_attention_heads % cfg.num_key_value_heads != 0) {
    invalid("{}: field '{}' ({}) must divide '{}' ({})", source, r.field("num_key_value_heads"),
            cfg.num_key_value_heads, r.field("num_attention_heads"), cfg.num_attention_heads);
  }
  if (auto v = r.opt_int("head_dim", 1, kMaxHeadDim)) {
    cfg.head_dim = int(*v);
  } else {
    if (cfg.hidden_size % cfg.num_attention_heads != 0) {
      invalid("{}: field '{}' is missing and '{}' ({}) is not divisible by '{}' ({})", source, r.field("head_dim"),
              r.field("hidden_size"), cfg.hidden_size, r.field("num_attention_heads"), cfg.num_attention_heads);
    }
    cfg.head_dim = cfg.hidden_size / cfg.num_attention_heads;
  }
  if (int64_t(cfg.head_dim) * cfg.num_attention_heads > (int64_t(1) << 22)) {
    r.fail("head_dim", fmt::format("({}) times num_attention_heads ({}) is absurdly large", cfg.head_dim,
                                   cfg.num_attention_heads));
  }
  if (auto v = r.opt_int("max_position_embeddings", 1, kMaxPositions - 1)) cfg.max_position_embeddings = int(*v);

  for (const char* key : {"rms_norm_eps", "layer_norm_eps", "norm_epsilon", "layer_norm_epsilon"}) {
    if (auto v = r.opt_num(key)) {
      // Stored as a float: a value that would round to 0 (or a denormal) is as bad as 0.
      if (!(*v >= double(std::numeric_limits<float>::min())) || *v >= 1)
        r.fail(key, fmt::format("must be in (0, 1) and representable as a float, got {}", *v));
      cfg.norm_eps = float(*v);
      break;
    }
  }
  // Gemma's hidden_activation overrides its (legacy) hidden_act, as in transformers.
  if (auto v = r.opt_str("hidden_activation")) cfg.hidden_act = *v;
  else if (auto v2 = r.opt_str("hidden_act")) cfg.hidden_act = *v2;
  if (auto v = r.opt_bool("tie_word_embeddings")) cfg.tie_word_embeddings = *v;
  if (auto v = r.opt_bool("attention_bias")) cfg.attention_bias = *v;
  if (auto v = r.opt_bool("mlp_bias")) cfg.mlp_bias = *v;
  auto softcap = [&](const char* key) -> float {
    auto v = r.opt_num(key);
    if (!v) return 0.0f;
    if (*v < 0 || *v > 1e30) r.fail(key, fmt::format("must be in [0, 1e30], got {}", *v));
    return float(*v);
  };
  cfg.attn_logit_softcapping = softcap("attn_logit_softcapping");
  cfg.final_logit_softcapping = softcap("final_logit_softcapping");
  cfg.query_pre_attn_scalar = softcap("query_pre_attn_scalar");

  // Attention pattern.
  bool use_sliding = r.opt_bool("use_sliding_window").value_or(true);
  if (auto v = r.opt_int("sliding_window", 0, kMaxPositions - 1)) cfg.sliding_window = int(*v);
  if (!use_sliding) cfg.sliding_window = 0;
  const int L = cfg.num_hidden_layers;
  if (const json* lt = r.find("layer_types")) {
    if (!lt->is_array()) r.fail("layer_types", fmt::format("must be an array of strings, got {}", json_type_name(*lt)));
    if (int64_t(lt->size()) != L)
      r.fail("layer_types", fmt::format("has {} entries for {} layers", lt->size(), L));
    for (size_t i = 0; i < lt->size(); ++i) {
      const json& e = (*lt)[i];
      if (!e.is_string() || e.get<std::string>().empty())
        r.fail(fmt::format("layer_types[{}]", i), "must be a non-empty string");
      cfg.layer_types.push_back(e.get<std::string>());
    }
  } else if (auto pat = r.opt_int("sliding_window_pattern", 1, kMaxLayers)) {
    // Gemma 3 / Cohere 2: every pattern-th layer is global, the others slide.
    for (int i = 0; i < L; ++i)
      cfg.layer_types.push_back((i + 1) % *pat == 0 ? "full_attention" : "sliding_attention");
  } else if (cfg.model_type == "gemma2") {
    for (int i = 0; i < L; ++i) cfg.layer_types.push_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
  } else if (r.has("use_sliding_window")) {
    // Qwen2 family: layers from max_window_layers on slide (when enabled).
    int mwl = int(r.opt_int("max_window_layers", 0, kMaxLayers).value_or(L));
    for (int i = 0; i < L; ++i)
      cfg.layer_types.push_back(use_sliding && cfg.sliding_window > 0 && i >= mwl ? "sliding_attention"
                                                                                   : "full_attention");
  } else if (cfg.sliding_window > 0) {
    // Mistral / Phi-3: a window with no pattern applies to every layer (as in transformers).
    cfg.layer_types.assign(size_t(L), "sliding_attention");
  } else {
    cfg.layer_types.assign(size_t(L), "full_attention");
  }
  // A sliding layer without a window attends to everything (transformers drops the
  // window when use_sliding_window is false or sliding_window is null).
  if (cfg.sliding_window <= 0) {
    for (auto& t : cfg.layer_types)
      if (t == "sliding_attention") t = "full_attention";
  }

  cfg.bos_token_ids = r.int_list("bos_token_id");
  cfg.eos_token_ids = r.int_list("eos_token_id");
  if (const json* v = r.find("pad_token_id")) {
    if (v->is_array()) {
      auto ids = r.int_list("pad_token_id");
      if (!ids.empty()) cfg.pad_token_id = ids[0];
    } else {
      cfg.pad_token_id = int(r.to_int(*v, "pad_token_id", -1, std::numeric_limits<int32_t>::max()));
    }
  }
  if (auto v = r.opt_str("dtype")) cfg.dtype = *v;
  else if (auto v2 = r.opt_str("torch_dtype")) cfg.dtype = *v2;

  // RoPE.
  RopeConfig base;
  base.head_dim = cfg.head_dim;
  base.max_position = cfg.max_position_embeddings;
  double partial = 1.0;
  if (auto v = r.opt_num("rope_theta")) base.theta = *v;
  if (auto v = r.opt_num("partial_rotary_factor")) partial = *v;
  if (auto v = r.opt_int("original_max_position_embeddings", 1, kMaxPositions - 1))
    base.original_max_position = int(*v);

  auto finish = [&](RopeConfig rc, double pf, const std::string& where) {
    if (!(pf > 0) || pf > 1) invalid("{}: field '{}partial_rotary_factor' must be in (0, 1], got {}", source, where, pf);
    rc.rotary_dim = int(double(rc.head_dim) * pf);
    rc.rotary_dim -= rc.rotary_dim % 2;
    if (rc.rotary_dim <= 0) invalid("{}: field '{}partial_rotary_factor' leaves no rotary dimensions", source, where);
    validate_rope(rc, source, where.empty() ? prefix + "rope" : where.substr(0, where.size() - 1));
    return rc;
  };

  if (const json* rp = r.find("rope_parameters")) {
    if (!rp->is_object()) r.fail("rope_parameters", fmt::format("must be an object, got {}", json_type_name(*rp)));
    bool single = rp->empty();
    for (auto it = rp->begin(); it != rp->end(); ++it) {
      if (!it.value().is_object()) single = true;
    }
    if (single) {
      Reader pr(*rp, source, prefix + "rope_parameters.");
      RopeConfig rc = base;
      double pf = partial;
      read_rope_dict(pr, rc, &pf);
      cfg.rope[""] = finish(rc, pf, prefix + "rope_parameters.");
    } else {
      for (auto it = rp->begin(); it != rp->end(); ++it) {
        std::string where = prefix + "rope_parameters." + it.key() + ".";
        Reader pr(it.value(), source, where);
        RopeConfig rc = base;
        double pf = partial;
        read_rope_dict(pr, rc, &pf);
        cfg.rope[it.key()] = finish(rc, pf, where);
      }
      if (cfg.rope.count("full_attention")) cfg.rope[""] = cfg.rope["full_attention"];
      else cfg.rope[""] = cfg.rope.begin()->second;
    }
  } else {
    RopeConfig rc = base;
    double pf = partial;
    if (const json* rs = r.find("rope_scaling")) {
      if (!rs->is_object()) r.fail("rope_scaling", fmt::format("must be an object, got {}", json_type_name(*rs)));
      Reader sr(*rs, source, prefix + "rope_scaling.");
      read_rope_dict(sr, rc, &pf);
    }
    cfg.rope[""] = finish(rc, pf, std::string());
    if (auto local = r.opt_num("rope_local_base_freq")) {
      RopeConfig lc = base;
      lc.theta = *local;
      cfg.rope["sliding_attention"] = finish(lc, partial, prefix + "rope_local_base_freq.");
    }
  }

  cfg.quantization = read_quant(root, text, source);
  return cfg;
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_error(ErrorKind::not_found, "cannot open model config {}", path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  // Real configs nest a few levels; a hostile one could nest deep enough for the
  // recursive json copy/destroy to exhaust the stack.
  if (json_nesting_depth(text, kMaxConfigDepth) > kMaxConfigDepth)
    invalid("{}: JSON nests deeper than {} levels", path, kMaxConfigDepth);
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    invalid("{}: not valid JSON: {}", path, e.what());
  }
  return parse_model_config(root, path);
}

}  // namespace mlxcel
