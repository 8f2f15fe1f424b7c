#include "models/model.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>

#include "base/error.h"
#include "loader/gguf_model.h"
#include "ops/ops.h"

namespace mlxcel {

KvCache Model::make_cache(int n_blocks, int block_size, DType dtype) const {
  if (n_blocks <= 0 || block_size <= 0) invalid("make_cache: n_blocks and block_size must be positive");
  KvCache c;
  c.n_blocks = n_blocks;
  c.block_size = block_size;
  for (const auto& l : kv_layers_) {
    c.k.push_back(ops::zeros({n_blocks, block_size, l.n_kv_heads, l.head_dim}, dtype, device_));
    c.v.push_back(ops::zeros({n_blocks, block_size, l.n_kv_heads, l.v_head_dim}, dtype, device_));
  }
  return c;
}

namespace {
std::map<std::string, ModelBuilder>& registry() {
  static std::map<std::string, ModelBuilder> r;
  return r;
}
std::mutex& registry_mu() {
  static std::mutex mu;
  return mu;
}
}  // namespace

bool register_model_family(const std::string& model_type, ModelBuilder builder) {
  std::lock_guard<std::mutex> lk(registry_mu());
  registry()[model_type] = std::move(builder);
  return true;
}

std::vector<std::string> supported_model_types() {
  std::lock_guard<std::mutex> lk(registry_mu());
  std::vector<std::string> out;
  for (const auto& [k, _] : registry()) out.push_back(k);
  return out;
}

std::unique_ptr<Model> build_model(const ModelConfig& cfg, const WeightMap& weights) {
  ModelBuilder b;
  {
    std::lock_guard<std::mutex> lk(registry_mu());
    auto it = registry().find(cfg.model_type);
    if (it != registry().end()) b = it->second;
  }
  if (!b) {
    auto types = supported_model_types();
    std::string list;
    for (const auto& t : types) list += (list.empty() ? "" : ", ") + t;
    unsupported("unsupported model_type '{}'; supported: {}", cfg.model_type, list);
  }
  std::unique_ptr<Model> m = b(cfg, weights);
  // The device of the weights (markers such as "<prefix>.gguf_type" stay on the host).
  for (const auto& [name, t] : weights) {
    if (t.device().type != DeviceType::cpu) {
      m->device_ = t.device();
      break;
    }
  }
  return m;
}

void transcode_gguf_blocks(WeightMap& w) {
  const size_t suffix = std::string(kGgufTypeSuffix).size();
  for (const std::string& name : w.names()) {
    if (!is_gguf_type_marker(name)) continue;
    const std::string prefix = name.substr(0, name.size() - suffix);
    if (w.contains(prefix + ".scales")) continue;  // already transcoded
    QuantizedWeight q;
    q.packed = w.get(prefix + ".weight");
    q.spec = packed_gguf_spec(w.get(name), w.source + ": " + prefix);
    QuantizedWeight m = ops::gguf_to_mlx_affine(q, w.source + ": " + prefix);
    w.insert(prefix + ".weight", m.packed);
    w.insert(prefix + ".scales", m.scales);
    w.insert(prefix + ".biases", m.biases);
  }
}

namespace {
// The dense q/k/v projections of one attention block in one device allocation (weights,
// and biases when all three have them), each a row view of it: a prompt-sized step then
// runs them as one product (ops::linear_multi), which keeps the narrow k and v weights
// from each under-filling the card. Nothing is copied twice; other weights are left.
void colocate_qkv(WeightMap& w, Device device) {
  if (const char* e = std::getenv("MLXCEL_COLOCATE_QKV"); e && e[0] == '0') return;  // for A/B runs
  constexpr std::string_view kQ = ".q_proj.weight";
  for (const std::string& name : w.names()) {
    if (name.size() <= kQ.size() || name.compare(name.size() - kQ.size(), kQ.size(), kQ) != 0) continue;
    const std::string p = name.substr(0, name.size() - kQ.size());
    const std::string proj[3] = {p + ".q_proj", p + ".k_proj", p + ".v_proj"};
    std::vector<Tensor> ws, bs;
    for (const std::string& q : proj) {
      const Tensor* t = w.find(q + ".weight");
      if (!t || w.contains(q + ".scales") || w.contains(q + std::string(kGgufTypeSuffix))) break;
      ws.push_back(*t);
      if (const Tensor* b = w.find(q + ".bias")) bs.push_back(*b);
    }
    if (ws.size() != 3 || (!bs.empty() && bs.size() != 3)) continue;
    bool ok = true;
    for (const Tensor& t : ws)
      ok = ok && t.device().type == DeviceType::cpu && t.is_contiguous() && t.ndim() == 2 &&
           t.dim(1) == ws[0].dim(1) && t.dtype() == ws[0].dtype() && is_floating(t.dtype());
    for (const Tensor& b : bs)
      ok = ok && b.device().type == DeviceType::cpu && b.is_contiguous() && b.ndim() == 1 && b.dtype() == bs[0].dtype();
    for (size_t i = 0; ok && i < bs.size(); ++i) ok = bs[i].dim(0) == ws[i].dim(0);
    if (!ok) continue;
    auto place = [&](const std::vector<Tensor>& parts, const char* suffix) {
      Shape shape = parts[0].shape();
      shape[0] = 0;
      for (const Tensor& t : parts) shape[0] += t.dim(0);
      Tensor all = ops::zeros(shape, parts[0].dtype(), device);  // (ops: sets up the device's allocator)
      int64_t row = 0;
      for (size_t i = 0; i < parts.size(); ++i) {
        Tensor dst = all.slice(0, row, row + parts[i].dim(0));
        ops::copy_from_host(dst, parts[i]);
        w.insert(proj[i] + suffix, dst);
        row += parts[i].dim(0);
      }
    };
    place(ws, ".weight");
    if (!bs.empty()) place(bs, ".bias");
  }
}
}  // namespace

void place_weights(WeightMap& w, Device device) {
  if (device.type == DeviceType::cpu) return;
  transcode_gguf_blocks(w);
  colocate_qkv(w, device);
  for (const std::string& name : w.names()) {
    const Tensor& t = w.get(name);
    if (is_gguf_type_marker(name) || t.device() == device) continue;
    w.insert(name, ops::to_device(t, device));
  }
}

GgufLoadOptions gguf_load_options(Device device) {
  GgufLoadOptions lo;
  lo.affine_4bit = device.type != DeviceType::cpu;
  return lo;
}

std::unique_ptr<Model> load_model(const std::string& dir, Device device) {
  if (std::string gguf = gguf_model_file(dir); !gguf.empty()) {  // metadata -> config, HF tensor names
    GgufCheckpoint ck = load_gguf_checkpoint(gguf, gguf_load_options(device));
    place_weights(ck.weights, device);
    return build_model(ck.config, ck.weights);
  }
  ModelConfig cfg = load_model_config(dir + "/config.json");
  WeightMap weights = load_checkpoint_weights(dir);
  place_weights(weights, device);
  return build_model(cfg, weights);
}

Batch batch_on(const Batch& batch, Device device) {
  auto move = [&](const Tensor& t) { return !t.defined() || t.device() == device ? t : ops::to_device(t, device); };
  Batch b = batch;
  b.token_ids = move(batch.token_ids);
  b.positions = move(batch.positions);
  b.logit_rows = move(batch.logit_rows);
  if (device.type != DeviceType::cpu) {
    b.attn.q_start_device = move(batch.attn.q_start);
    b.attn.kv_len_device = move(batch.attn.kv_len);
    b.attn.block_table_device = move(batch.attn.block_table);
    b.attn.slot_mapping_device = move(batch.attn.slot_mapping);
  }
  return b;
}

Tensor Model::forward_to_host(const Batch& batch, KvCache& cache) {
  Tensor logits = forward(batch, cache);
  return logits.device().type == DeviceType::cpu ? logits : ops::to_device(logits, Device::cpu());
}

Device parse_device(const std::string& name_in) {
  // llama-server spells devices CUDA0, CUDA1 ... and "none" for the CPU.
  std::string name = name_in;
  if (name.size() > 4 && name.compare(0, 4, "CUDA") == 0) name = "cuda:" + name.substr(4);
  if (name == "cpu" || name == "none") return Device::cpu();
  if (name == "auto") return ops::cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    int index = 0;
    if (name.size() > 5) {
      const std::string n = name.substr(5);
      if (n.empty() || n.size() > 3 || n.find_first_not_of("0123456789") != std::string::npos)
        invalid("--device {}: expected cuda:N with N a GPU index", name_in);
      index = std::stoi(n);
    }
    if (!ops::cuda_built()) unsupported("--device {}: this build of mlxcel has no CUDA backend (-DMLXCEL_CUDA=ON)", name_in);
    const int n = ops::cuda_device_count();
    if (n == 0) unsupported("--device {}: no CUDA GPU is present (or no driver)", name_in);
    if (index >= n) invalid("--device {}: there are {} CUDA GPU(s)", name_in, n);
    return Device::cuda(index);
  }
  invalid("--device must be cpu, cuda, cuda:N or auto (got '{}')", name_in);
}

}  // namespace mlxcel
