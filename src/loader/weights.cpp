#include "loader/weights.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "loader/safetensors.h"

namespace mlxcel {

namespace fs = std::filesystem;
using nlohmann::json;

const Tensor& WeightMap::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    throw_error(ErrorKind::not_found, "{}: tensor '{}' not found in the checkpoint ({} tensors)",
                source.empty() ? std::string("checkpoint") : source, name, tensors_.size());
  }
  return it->second;
}

Tensor WeightMap::take(const std::string& name) {
  Tensor t = get(name);
  tensors_.erase(name);
  return t;
}

const Tensor* WeightMap::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> WeightMap::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [k, v] : tensors_) out.push_back(k);
  return out;
}

void WeightMap::insert(const std::string& name, Tensor t) { tensors_[name] = std::move(t); }

bool WeightMap::erase(const std::string& name) { return tensors_.erase(name) != 0; }

void check_quantized_shapes(const QuantizedWeight& w, const std::string& what) {
  const QuantSpec& s = w.spec;
  if (!(s.bits == 2 || s.bits == 3 || s.bits == 4 || s.bits == 5 || s.bits == 6 || s.bits == 8))
    invalid("{}: unsupported quantization bits {}", what, s.bits);
  if (!(s.group_size == 32 || s.group_size == 64 || s.group_size == 128))
    invalid("{}: unsupported quantization group size {}", what, s.group_size);
  if (!w.packed.defined() || !w.scales.defined() || !w.biases.defined())
    invalid("{}: quantized weight needs weight, scales and biases", what);
  if (w.packed.dtype() != DType::u32)
    invalid("{}: quantized weight must be u32, got {} ({})", what, w.packed.describe(), s.describe());
  if (w.packed.ndim() != 2) invalid("{}: quantized weight must be 2-D, got {}", what, w.packed.describe());
  if (!is_floating(w.scales.dtype()) || w.scales.dtype() == DType::f64)
    invalid("{}: scales must be f16, bf16 or f32, got {}", what, w.scales.describe());
  if (w.biases.dtype() != w.scales.dtype())
    invalid("{}: biases ({}) and scales ({}) differ in dtype", what, w.biases.describe(), w.scales.describe());
  int64_t n = w.packed.dim(0);
  int64_t words = w.packed.dim(1);
  if ((words * 32) % s.bits != 0)
    invalid("{}: {} packed words per row do not hold a whole number of {}-bit values", what, words, s.bits);
  int64_t k = words * 32 / s.bits;
  if (k % s.group_size != 0)
    invalid("{}: {} columns are not a multiple of group size {} ({})", what, k, s.group_size, s.describe());
  Shape want = {n, k / s.group_size};
  if (w.scales.shape() != want)
    invalid("{}: scales are {} but weight {} with {} needs {}", what, w.scales.describe(), w.packed.describe(),
            s.describe(), shape_str(want));
  if (w.biases.shape() != want)
    invalid("{}: biases are {} but weight {} with {} needs {}", what, w.biases.describe(), w.packed.describe(),
            s.describe(), shape_str(want));
}

std::optional<QuantizedWeight> WeightMap::get_quantized(const std::string& prefix, const QuantSpec& spec) const {
  const Tensor* scales = find(prefix + ".scales");
  if (!scales) return std::nullopt;
  std::string what = fmt::format("{}: quantized weight '{}'", source.empty() ? "checkpoint" : source, prefix);
  const Tensor* w = find(prefix + ".weight");
  const Tensor* b = find(prefix + ".biases");
  if (!w) throw_error(ErrorKind::not_found, "{}: has scales but no '{}.weight'", what, prefix);
  if (!b) throw_error(ErrorKind::not_found, "{}: has scales but no '{}.biases'", what, prefix);
  QuantizedWeight q{*w, *scales, *b, spec};
  check_quantized_shapes(q, what);
  ops::validate_quantized(q, what);  // the kernels' own rules, so a bad weight fails at load
  return q;
}

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw_error(ErrorKind::not_found, "cannot open {}", p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool is_consolidated(const std::string& file) { return file.rfind("consolidated", 0) == 0; }

// *.safetensors in `dir`, sorted; consolidated* dropped when others exist.
std::vector<std::string> glob_shards(const fs::path& dir) {
  std::vector<std::string> all, main;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string f = e.path().filename().string();
    if (f.size() > 12 && f.compare(f.size() - 12, 12, ".safetensors") == 0 && e.is_regular_file(ec)) all.push_back(f);
  }
  if (ec) invalid("cannot list {}: {}", dir.string(), ec.message());
  std::sort(all.begin(), all.end());
  for (const auto& f : all)
    if (!is_consolidated(f)) main.push_back(f);
  return main.empty() ? all : main;
}

// Parses model.safetensors.index.json: tensor -> shard file.
std::map<std::string, std::string> read_index(const fs::path& path) {
  json j;
  try {
    j = json::parse(read_text(path));
  } catch (const json::exception& e) {
    invalid("{}: not valid JSON: {}", path.string(), e.what());
  }
  if (!j.is_object()) invalid("{}: the index must be a JSON object", path.string());
  auto it = j.find("weight_map");
  if (it == j.end() || !it->is_object()) invalid("{}: field 'weight_map' is missing or not an object", path.string());
  std::map<std::string, std::string> out;
  for (auto e = it->begin(); e != it->end(); ++e) {
    if (!e.value().is_string())
      invalid("{}: field 'weight_map.{}' must be a shard file name", path.string(), e.key());
    std::string shard = e.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
        shard == "." || shard == "..")
      invalid("{}: field 'weight_map.{}' names an invalid shard '{}'", path.string(), e.key(), shard);
    out[e.key()] = shard;
  }
  return out;
}

void add_file(WeightMap& w, const fs::path& file, std::map<std::string, std::string>& origin) {
  SafetensorsFile f = open_safetensors(file.string());
  std::string shard = file.filename().string();
  for (auto& [name, t] : f.tensors) {
    auto [it, fresh] = origin.emplace(name, shard);
    if (!fresh) invalid("{}: tensor '{}' appears in two shards: {} and {}", w.source, name, it->second, shard);
    w.insert(name, std::move(t));
  }
  if (f.copied)
    w.add_note(fmt::format("{}: {} tensors had misaligned data and were copied into memory", file.string(), f.copied));
}

}  // namespace

WeightMap load_checkpoint_weights(const std::string& dir_or_file) {
  fs::path p(dir_or_file);
  std::error_code ec;
  if (fs::is_regular_file(p, ec)) {
    WeightMap w(dir_or_file);
    std::map<std::string, std::string> origin;
    add_file(w, p, origin);
    return w;
  }
  if (!fs::is_directory(p, ec)) throw_error(ErrorKind::not_found, "checkpoint {} does not exist", dir_or_file);
  WeightMap w(dir_or_file);
  std::map<std::string, std::string> origin;
  std::vector<std::string> shards;

  fs::path index_path = p / "model.safetensors.index.json";
  std::vector<std::string> on_disk = glob_shards(p);
  if (fs::exists(index_path, ec)) {
    auto index = read_index(index_path);
    std::set<std::string> listed;
    for (const auto& [name, shard] : index) listed.insert(shard);
    std::string stale;
    for (const auto& s : listed) {
      if (!fs::is_regular_file(p / s, ec)) {
        stale = fmt::format("it names shard {} which is missing", s);
        break;
      }
    }
    if (stale.empty()) {
      for (const auto& s : on_disk) {
        if (!listed.count(s)) {
          stale = fmt::format("shard {} is not listed in it", s);
          break;
        }
      }
    }
    if (stale.empty()) {
      for (const auto& s : listed) add_file(w, p / s, origin);
      // Every indexed tensor should be in the shard the index names. All shards on
      // disk are loaded already, so a mismatch is only worth a note.
      for (const auto& [name, shard] : index) {
        auto it = origin.find(name);
        if (it == origin.end() || it->second != shard) {
          w.add_note(fmt::format(
              "{} is stale: {}", index_path.string(),
              it == origin.end() ? fmt::format("it lists tensor '{}' which no shard holds", name)
                                 : fmt::format("it puts tensor '{}' in {} but it is in {}", name, shard, it->second)));
          break;
        }
      }
      return w;
    }
    w.add_note(fmt::format("{} is stale ({}); loading every *.safetensors in {} instead", index_path.string(), stale,
                           dir_or_file));
    shards = on_disk;
  } else if (fs::is_regular_file(p / "model.safetensors", ec)) {
    shards = {"model.safetensors"};
  } else {
    shards = on_disk;
  }
  if (shards.empty()) throw_error(ErrorKind::not_found, "{}: no .safetensors files in the checkpoint", dir_or_file);
  for (const auto& s : shards) add_file(w, p / s, origin);
  return w;
}

}  // namespace mlxcel
