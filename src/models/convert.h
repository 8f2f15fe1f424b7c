// Checkpoint conversion: MLX affine quantization of a Hugging Face checkpoint into
// the mlx-community layout (`mlxcel convert --quantize`).
//
// Which tensors: like mlx-lm, every Linear and Embedding weight, i.e. every 2-D
// float tensor named "*.weight" whose input dimension is a multiple of the group
// size. Norms, biases and anything else stay as they are. The output's config.json
// gains "quantization": {"group_size": g, "bits": b} (and the same under
// "quantization_config", as mlx-lm writes it).
#pragma once

#include <string>

#include "loader/weights.h"
#include "ops/quant.h"

namespace mlxcel {

struct ConvertOptions {
  bool quantize = false;
  QuantSpec spec;                     // bits, group size
  DType scale_dtype = DType::f16;     // dtype of scales and biases
};

// True for the tensors that quantize_weights() quantizes under `spec`.
bool is_quantizable(const std::string& name, const Tensor& t, const QuantSpec& spec);

// Returns a new map where every quantizable "<prefix>.weight" is replaced by the
// MLX triple <prefix>.weight (u32), <prefix>.scales, <prefix>.biases.
WeightMap quantize_weights(const WeightMap& weights, const QuantSpec& spec, DType scale_dtype);

// Reads the checkpoint in src_dir, writes dst_dir (created; must not be src_dir):
// model.safetensors, config.json with the quantization block, and copies of the
// tokenizer/generation files that exist.
void convert_checkpoint(const std::string& src_dir, const std::string& dst_dir, const ConvertOptions& opts);

}  // namespace mlxcel
