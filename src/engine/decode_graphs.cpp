#include "engine/decode_graphs.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "base/error.h"

namespace mlxcel {

namespace {
// More recorded shapes than this and the oldest ones are dropped (each holds its own
// output buffer; an engine sees a handful of buckets in practice).
constexpr size_t kMaxGraphs = 48;
}  // namespace

DecodeGraphs::DecodeGraphs(int block_size, int pad_block, int max_width, int min_width)
    : block_size_(block_size),
      pad_block_(pad_block),
      max_width_(std::max(1, max_width)),
      min_width_(std::clamp(min_width, 1, max_width_)) {
  MLXCEL_CHECK(block_size > 0, "decode graphs: block size {}", block_size);
}

bool DecodeGraphs::enabled_by_default() {
  static const bool on = [] {
    const char* e = std::getenv("MLXCEL_CUDA_GRAPHS");
    return !(e && e[0] == '0');
  }();
  return on;
}

bool DecodeGraphs::supported(const Model& model) {
  if (model.device().type != DeviceType::cuda) return false;
  for (const auto& [key, rope] : model.config().rope)  // position-dependent frequencies change per step
    if (rope.type == "dynamic" || rope.type == "longrope") return false;
  return true;
}

int DecodeGraphs::bucket_rows(int n) {
  MLXCEL_CHECK(n > 0, "decode graphs: {} rows", n);
  if (n <= 8) return n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : 8;
  // 12, 16, 24, 32, 48, 64, 96, 128, ...: at most a third of a bucket is padding.
  int b = 8;
  while (true) {
    if (n <= b) return b;
    if (n <= b + b / 2) return b + b / 2;
    b *= 2;
  }
}

int DecodeGraphs::bucket_width(int blocks, int min_width, int max_width) {
  int w = std::max(1, min_width);
  while (w < blocks) w *= 2;
  return std::max(std::min(w, max_width), blocks);
}

int DecodeGraphs::n_recorded() const {
  int n = 0;
  for (const auto& [key, e] : entries_) n += e.graph != nullptr;
  return n;
}

Tensor DecodeGraphs::run(Model& model, KvCache& cache, std::span<const DecodeRow> rows, const Tensor* device_tokens) {
  if (disabled_ || rows.empty()) return Tensor();
  const int n = int(rows.size());
  if (device_tokens && (device_tokens->device() != model.device() || device_tokens->dtype() != DType::i32 ||
                        device_tokens->numel() != n))
    invalid("decode graphs: device tokens {} must be i32 [{}] on {}", device_tokens->describe(), n,
            device_name(model.device()));
  const int B = pad_block_ >= 0 ? bucket_rows(n) : n;
  size_t need = 1;
  for (const DecodeRow& r : rows) {
    MLXCEL_CHECK(r.position >= 0 && size_t(r.position / block_size_) < r.blocks.size(),
                 "decode graphs: position {} outside its {} blocks", r.position, r.blocks.size());
    need = std::max(need, size_t(r.position / block_size_ + 1));
  }
  const int W = bucket_width(int(need), min_width_, max_width_);

  // io = [ids B][positions B][slots B][kv_len B][q_start B+1][block tables B x W]
  const size_t o_pos = size_t(B), o_slot = 2 * size_t(B), o_len = 3 * size_t(B), o_qs = 4 * size_t(B),
               o_table = 5 * size_t(B) + 1;
  std::vector<int32_t> io(o_table + size_t(B) * W, 0);
  for (int i = 0; i < B; ++i) {
    if (i < n) {
      const DecodeRow& r = rows[size_t(i)];
      io[size_t(i)] = r.token;
      io[o_pos + i] = r.position;
      io[o_slot + i] = r.blocks[size_t(r.position / block_size_)] * block_size_ + r.position % block_size_;
      io[o_len + i] = r.position + 1;
      const size_t used = std::min(r.blocks.size(), size_t(W));
      std::copy(r.blocks.begin(), r.blocks.begin() + ptrdiff_t(used), io.begin() + ptrdiff_t(o_table + size_t(i) * W));
    } else {  // padding: token 0 at position 0, alone in the reserved block
      io[o_slot + i] = pad_block_ * block_size_;
      io[o_len + i] = 1;
      std::fill_n(io.begin() + ptrdiff_t(o_table + size_t(i) * W), W, pad_block_);
    }
    io[o_qs + i] = i;
  }
  io[o_qs + B] = B;
  const Tensor host_io = Tensor::from_i32({int64_t(io.size())}, io);

  const auto key = std::make_pair(B, W);
  if (!entries_.count(key) && entries_.size() >= kMaxGraphs) entries_.clear();
  Entry& e = entries_[key];
  if (e.graph && e.graph->stale()) e.graph.reset();  // a scratch buffer moved since the recording
  auto view = [&](size_t off, int64_t len) { return e.io.slice(0, int64_t(off), int64_t(off) + len); };
  auto make_batch = [&] {
    Batch b;
    b.token_ids = view(0, B);
    b.positions = view(o_pos, B);
    int64_t max_pos = 0;
    for (const DecodeRow& r : rows) max_pos = std::max<int64_t>(max_pos, r.position);
    b.max_position = max_pos;  // (only dynamic RoPE reads it, and those models take no graphs)
    // Host copies for the ops' validation; the kernels read the device views.
    auto host = [&](size_t off, std::initializer_list<int64_t> shape) {
      int64_t len = 1;
      for (int64_t d : shape) len *= d;
      return Tensor::from_i32(Shape(shape), std::vector<int32_t>(io.begin() + ptrdiff_t(off), io.begin() + ptrdiff_t(off + len)));
    };
    b.attn.q_start = host(o_qs, {B + 1});
    b.attn.kv_len = host(o_len, {B});
    b.attn.block_table = host(o_table, {B, W});
    b.attn.slot_mapping = host(o_slot, {B});
    b.attn.block_size = block_size_;
    b.attn.q_start_device = view(o_qs, B + 1);
    b.attn.kv_len_device = view(o_len, B);
    b.attn.block_table_device = view(o_table, int64_t(B) * W);
    b.attn.slot_mapping_device = view(o_slot, B);
    // No logit_rows: every row's logits in order, without a gather.
    return b;
  };
  auto first_rows = [&](const Tensor& logits) { return n == B ? logits : logits.slice(0, 0, n); };
  // The ids from the device, queued behind whatever wrote them (a pipelined decode loop).
  auto feed_tokens = [&] {
    if (!device_tokens) return;
    Tensor ids = e.io.slice(0, 0, n);
    ops::copy_(ids, device_tokens->reshape({n}));
  };

  if (!e.graph) {
    e.io = ops::to_device(host_io, model.device());
    feed_tokens();
    const Batch b = make_batch();
    if (!e.warm) {
      // The bucket's first step runs unrecorded: it sizes every scratch buffer.
      e.warm = true;
      return first_rows(model.forward(b, cache));
    }
    try {
      e.graph = ops::capture_graph(model.device(), [&] { e.logits = model.forward(b, cache); });
    } catch (const std::exception&) {
      // Not recordable here: decode without graphs from now on.
      disabled_ = true;
      entries_.clear();
      return Tensor();
    }
  } else {
    ops::copy_from_host(e.io, host_io);
    feed_tokens();
  }
  e.graph->launch();
  return first_rows(e.logits);
}

}  // namespace mlxcel
