#include "models/convert.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "loader/safetensors.h"
#include "ops/ops.h"

namespace mlxcel {

namespace fs = std::filesystem;

bool is_quantizable(const std::string& name, const Tensor& t, const QuantSpec& spec) {
  const std::string suffix = ".weight";
  if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  return t.ndim() == 2 && is_floating(t.dtype()) && t.dim(1) % spec.group_size == 0;
}

WeightMap quantize_weights(const WeightMap& weights, const QuantSpec& spec, DType scale_dtype) {
  WeightMap out(weights.source);
  for (const auto& [name, t] : weights) {
    if (!is_quantizable(name, t, spec)) {
      out.insert(name, t);
      continue;
    }
    const std::string prefix = name.substr(0, name.size() - std::string(".weight").size());
    QuantizedWeight q = ops::quantize(t, spec, scale_dtype);
    out.insert(prefix + ".weight", q.packed);
    out.insert(prefix + ".scales", q.scales);
    out.insert(prefix + ".biases", q.biases);
  }
  return out;
}

void convert_checkpoint(const std::string& src_dir, const std::string& dst_dir, const ConvertOptions& opts) {
  std::error_code ec;
  if (fs::exists(dst_dir) && fs::equivalent(src_dir, dst_dir, ec)) invalid("convert: output folder is the input folder");
  const fs::path src(src_dir), dst(dst_dir);
  std::ifstream cin(src / "config.json");
  if (!cin) throw_error(ErrorKind::not_found, "convert: {} has no config.json", src_dir);
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(cin);
  } catch (const nlohmann::json::exception& e) {
    invalid("convert: {}/config.json is not valid JSON: {}", src_dir, e.what());
  }
  WeightMap weights = load_checkpoint_weights(src_dir);
  if (config.contains("quantization") && opts.quantize) invalid("convert: {} is already quantized", src_dir);
  if (opts.quantize) {
    weights = quantize_weights(weights, opts.spec, opts.scale_dtype);
    nlohmann::json q = {{"group_size", opts.spec.group_size}, {"bits", opts.spec.bits}};
    config["quantization"] = q;
    config["quantization_config"] = q;
  }
  fs::create_directories(dst, ec);
  if (ec) invalid("convert: cannot create {}: {}", dst_dir, ec.message());
  std::vector<std::pair<std::string, Tensor>> tensors(weights.begin(), weights.end());
  save_safetensors((dst / "model.safetensors").string(), tensors, {{"format", "mlx"}});
  {
    std::ofstream out(dst / "config.json");
    out << config.dump(2) << "\n";
    if (!out) invalid("convert: cannot write {}/config.json", dst_dir);
  }
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                        "chat_template.jinja", "chat_template.json"}) {
    if (fs::exists(src / f)) fs::copy_file(src / f, dst / f, fs::copy_options::overwrite_existing, ec);
    if (ec) invalid("convert: cannot copy {}: {}", f, ec.message());
  }
}

}  // namespace mlxcel
