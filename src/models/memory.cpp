#include "models/memory.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include <fmt/format.h>

#include "base/error.h"
#include "backends/cpu/gguf_quants.h"
#include "loader/config.h"
#include "loader/gguf.h"
#include "loader/gguf_model.h"
#include "loader/weights.h"
#ifdef MLXCEL_WITH_CUDA
#include "backends/cuda/kernels.h"
#endif

namespace mlxcel {

namespace {

std::string human(int64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(b);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  return fmt::format("{:.2f} {}", v, units[u]);
}

int64_t mem_available() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return 0;
}

}  // namespace

int64_t gguf_loaded_bytes(const GgufTensorInfo& t, bool cuda, bool product) {
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  const uint32_t ty = t.ggml_type;
  if (ty == gguf::kF32 || ty == gguf::kF16 || ty == gguf::kBF16) return int64_t(t.n_bytes);  // views of the mapping
  if (t.shape.size() != 2) return n * 4;                                                   // vectors: f32
  if (t.shape[0] % 32 != 0) return n * 2;                                                  // f16 copies
  const int64_t groups = n / 32;
  if (!cuda) {
    // Packed (the kept_packed formats as in the file, the rest requantized to Q8_0), plus
    // the decode-time x8 copy for a product's weight (gguf::x8_bytes: groups of 8 rows).
    const bool as_is = gguf::kept_packed(ty);
    const uint32_t held = as_is ? ty : uint32_t(gguf::kQ8_0);
    return (as_is ? int64_t(t.n_bytes) : groups * 34) +
           (product ? int64_t(gguf::x8_bytes(held, t.shape[1], t.shape[0])) : 0);
  }
  // MLX affine on the device: 4 bits + f16 scale and bias a group for Q4_0, 4 bits + f32
  // ones for Q4_1 / Q4_K, 8 bits + f16 ones for Q8_0 and the requantized rest.
  if (ty == gguf::kQ4_0) return n / 2 + groups * 4;
  if (ty == gguf::kQ4_1 || ty == gguf::kQ4_K) return n / 2 + groups * 8;
  return n + groups * 4;
}

int64_t free_device_bytes(Device d) {
  if (d.type == DeviceType::cuda) {
#ifdef MLXCEL_WITH_CUDA
    size_t free_b = 0, total_b = 0;
    std::string name;
    if (cuda::memory_info(d.index, &free_b, &total_b, &name)) return int64_t(free_b);
#endif
    return 0;
  }
  return mem_available();
}

int64_t kv_bytes_per_token(const ModelConfig& cfg, DType kv_dtype) {
  return 2LL * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * int64_t(dtype_size(kv_dtype));
}

int64_t parse_byte_size(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) invalid("'{}' is not a byte size (e.g. 8GB, 512MiB)", s);
  double v = std::atof(s.substr(0, i).c_str());
  std::string u = s.substr(i);
  for (auto& c : u) c = char(std::tolower(static_cast<unsigned char>(c)));
  double mult = 1;
  if (u.empty() || u == "b") mult = 1;
  else if (u == "k" || u == "kb") mult = 1e3;
  else if (u == "kib") mult = 1024.0;
  else if (u == "m" || u == "mb") mult = 1e6;
  else if (u == "mib") mult = 1024.0 * 1024;
  else if (u == "g" || u == "gb") mult = 1e9;
  else if (u == "gib") mult = 1024.0 * 1024 * 1024;
  else if (u == "t" || u == "tb") mult = 1e12;
  else if (u == "tib") mult = 1024.0 * 1024 * 1024 * 1024;
  else invalid("'{}' is not a byte size (unknown unit '{}')", s, u);
  double r = v * mult;
  if (!std::isfinite(r) || r < 0 || r > 9e18) invalid("'{}' is not a byte size", s);
  return int64_t(r);
}

MemoryEstimate estimate_memory(const std::string& model_dir, const MemoryRequest& req) {
  if (req.max_tokens < 0 || req.batch <= 0) invalid("inspect: --max-tokens and --batch must be positive");
  MemoryEstimate e;
  if (req.device != "cpu" && req.device != "cuda" && req.device != "auto")
    invalid("--device must be cpu, cuda or auto (got '{}')", req.device);
  e.device = "cpu";
  e.available_bytes = mem_available();
  e.available_source = "/proc/meminfo MemAvailable";
  if (req.device != "cpu") {
#ifdef MLXCEL_WITH_CUDA
    size_t free_b = 0, total_b = 0;
    std::string name;
    if (cuda::memory_info(0, &free_b, &total_b, &name)) {
      e.device = "cuda";
      e.available_bytes = int64_t(free_b);
      e.available_source = fmt::format("cudaMemGetInfo free on {} ({} total)", name, human(int64_t(total_b)));
    } else if (req.device == "cuda") {
      throw_error(ErrorKind::unsupported, "--device cuda: no CUDA device is present");
    }
#else
    if (req.device == "cuda") throw_error(ErrorKind::unsupported, "--device cuda: this build has no CUDA backend");
#endif
  }
  ModelConfig cfg;
  if (const std::string gguf = gguf_model_file(model_dir); !gguf.empty()) {
    const GgufFile f = GgufFile::open(gguf);  // maps the file; reads the header only
    cfg = parse_model_config(gguf_hf_config(f), gguf + " (GGUF metadata)");
    bool tied = true;  // no output.weight: the embedding is the LM head too
    for (const GgufTensorInfo& t : f.tensors()) tied = tied && t.name != "output.weight";
    for (const GgufTensorInfo& t : f.tensors()) {
      // What the loader keeps: not the RoPE tensors (folded into the config) nor tensors
      // without an mlxcel counterpart.
      if (is_gguf_rope_tensor(t.name) || !gguf_to_hf_tensor_name(cfg.model_type, t.name)) continue;
      e.weight_bytes += gguf_loaded_bytes(t, e.device == "cuda", tied || t.name != "token_embd.weight");
      e.n_tensors++;
    }
    e.weights_note = "the GGUF headers, as loaded for the device";
  } else {
    cfg = load_model_config(model_dir + "/config.json");
    WeightMap w = load_checkpoint_weights(model_dir);  // maps the files; reads headers only
    for (const auto& [name, t] : w) {
      e.weight_bytes += int64_t(t.nbytes());
      e.n_tensors++;
    }
  }
  // 0: the model's own context.
  const int64_t max_tokens =
      req.max_tokens > 0 ? req.max_tokens : (cfg.max_position_embeddings > 0 ? cfg.max_position_embeddings : 4096);
  // KV: every layer keeps K and V for its window (or the whole context).
  const int64_t per_tok_layer = 2LL * cfg.num_key_value_heads * cfg.head_dim * req.kv_bytes_per_elem;
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
    const bool sliding = i < int(cfg.layer_types.size()) && cfg.layer_types[i] == "sliding_attention" &&
                         cfg.sliding_window > 0;
    const int64_t toks = sliding ? std::min<int64_t>(max_tokens, cfg.sliding_window) : max_tokens;
    e.kv_bytes += per_tok_layer * toks * req.batch;
    e.kv_bytes_per_token += per_tok_layer;
  }
  // Activations of one prefill chunk (f32): residual stream, q/k/v/o, MLP, logits row.
  const int64_t chunk = std::min(req.prefill_chunk, max_tokens) * 1;
  const int64_t q_dim = int64_t(cfg.num_attention_heads) * cfg.head_dim;
  const int64_t per_token = 4LL * (4 * cfg.hidden_size + 2 * q_dim + 3LL * std::max(cfg.intermediate_size, cfg.hidden_size));
  e.activation_bytes = chunk * per_token + req.batch * int64_t(cfg.vocab_size) * 4 * 2;
  if (const char* h = std::getenv("MLXCEL_HEADROOM_FACTOR")) {
    e.headroom = std::atof(h);
    if (!(e.headroom >= 1.0 && e.headroom <= 100.0)) invalid("MLXCEL_HEADROOM_FACTOR must be in [1, 100], got '{}'", h);
  }
  e.total_bytes = int64_t(double(e.weight_bytes + e.kv_bytes + e.activation_bytes) * e.headroom);
  if (const char* lim = std::getenv("MLXCEL_MEMORY_LIMIT")) {
    int64_t l = parse_byte_size(lim);
    if (e.available_bytes == 0 || l < e.available_bytes) {
      e.available_bytes = l;
      e.available_source = "MLXCEL_MEMORY_LIMIT";
    }
  }
  e.fits = e.total_bytes <= e.available_bytes;
  return e;
}

std::string MemoryEstimate::describe() const {
  return fmt::format(
      "weights      {:>12}  ({} tensors, {})\n"
      "kv cache     {:>12}  ({} per token over all layers, before sliding-window capping)\n"
      "activations  {:>12}\n"
      "headroom     {:>12.2f}x (MLXCEL_HEADROOM_FACTOR)\n"
      "total        {:>12}\n"
      "available    {:>12}  ({}; device {})\n"
      "verdict      {}\n",
      human(weight_bytes), n_tensors, weights_note, human(kv_bytes), human(kv_bytes_per_token), human(activation_bytes), headroom,
      human(total_bytes), human(available_bytes), available_source, device, fits ? "fits" : "does NOT fit");
}

nlohmann::json MemoryEstimate::to_json() const {
  return {{"weight_bytes", weight_bytes},       {"n_tensors", n_tensors},
          {"kv_bytes", kv_bytes},               {"kv_bytes_per_token", kv_bytes_per_token},
          {"activation_bytes", activation_bytes}, {"headroom", headroom},
          {"total_bytes", total_bytes},         {"available_bytes", available_bytes},
          {"available_source", available_source}, {"device", device}, {"fits", fits}};
}

}  // namespace mlxcel
