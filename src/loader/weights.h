// WeightMap: a checkpoint's tensors by name (zero-copy views into the mapped
// safetensors files), and load_checkpoint_weights() that finds and maps them.
//
//   WeightMap w = load_checkpoint_weights("/models/qwen3-0.6b");
//   Tensor emb = w.get("model.embed_tokens.weight");   // Error(not_found) names both
//   if (auto q = w.get_quantized("model.layers.0.mlp.up_proj", spec)) ...
//   for (auto& n : w.notes()) fmt::print(stderr, "note: {}\n", n);
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ops/quant.h"
#include "tensor/tensor.h"

namespace mlxcel {

class WeightMap {
 public:
  WeightMap() = default;
  explicit WeightMap(std::string source) : source(std::move(source)) {}

  std::string source;  // the checkpoint (directory or file), for messages

  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // Throws Error(not_found) naming the checkpoint and the tensor.
  const Tensor& get(const std::string& name) const;
  // get() and erase() in one (lets a family consume weights and spot leftovers).
  Tensor take(const std::string& name);
  // The tensor or nullptr.
  const Tensor* find(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  size_t size() const { return tensors_.size(); }
  bool empty() const { return tensors_.empty(); }
  void insert(const std::string& name, Tensor t);  // replaces an existing entry
  bool erase(const std::string& name);             // true when it was there

  // An MLX quantized linear/embedding under `prefix` ("model.layers.0.mlp.up_proj"):
  // when `prefix.scales` exists, returns {prefix.weight (u32), prefix.scales,
  // prefix.biases, spec} after checking shapes and dtypes (check_quantized_shapes, then
  // ops::validate_quantized; Error(invalid_request) naming the checkpoint and the prefix,
  // Error(not_found) when weight or biases are missing); nullopt when there are no scales.
  std::optional<QuantizedWeight> get_quantized(const std::string& prefix, const QuantSpec& spec) const;

  // Things worth telling the user that did not stop loading (stale index, copies).
  const std::vector<std::string>& notes() const { return notes_; }
  void add_note(std::string note) { notes_.push_back(std::move(note)); }

  auto begin() const { return tensors_.begin(); }
  auto end() const { return tensors_.end(); }

 private:
  std::map<std::string, Tensor> tensors_;
  std::vector<std::string> notes_;
};

// Checks an MLX quantized weight: packed u32 [N, K*bits/32], scales and biases
// [N, K/group] of one float dtype. Throws Error(invalid_request) naming `what`.
void check_quantized_shapes(const QuantizedWeight& w, const std::string& what);

// Maps every tensor of a checkpoint directory (or a single .safetensors file):
//  - model.safetensors.index.json present: the shards its weight_map names. If the
//    index is stale (names a missing shard or tensor, or the directory holds shards
//    it does not list), falls back to every *.safetensors in the directory, with a note.
//  - else model.safetensors, else every *.safetensors in the directory.
// consolidated*.safetensors (Mistral's original-format copy) is ignored when other
// shards exist. A tensor name found in two shards is an error.
WeightMap load_checkpoint_weights(const std::string& dir);

}  // namespace mlxcel
