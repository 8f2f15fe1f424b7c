// Memory needed to run a checkpoint, computed from its headers and config alone
// (nothing is loaded): exact weight bytes, KV cache by architecture, activations,
// times a headroom factor, against the memory available.
//
//   MemoryEstimate e = estimate_memory("/models/qwen3", {.max_tokens = 4096, .batch = 4});
//   if (!e.fits) ...
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "loader/config.h"
#include "tensor/dtype.h"

namespace mlxcel {

struct MemoryRequest {
  int64_t max_tokens = 4096;  // context per sequence; 0: the model's max_position_embeddings
  int64_t batch = 1;          // concurrent sequences
  int kv_bytes_per_elem = 4;  // the CPU cache is f32
  int64_t prefill_chunk = 512;
  // Where the model would run: "cpu" (system memory), "cuda" (GPU 0's free memory;
  // an error without a CUDA build or device) or "auto" (cuda when present, else cpu).
  std::string device = "auto";
};

struct MemoryEstimate {
  int64_t weight_bytes = 0;
  int64_t n_tensors = 0;
  std::string weights_note = "exact from the headers";  // how weight_bytes was counted
  int64_t kv_bytes = 0;
  int64_t kv_bytes_per_token = 0;   // summed over layers, before window capping
  int64_t activation_bytes = 0;
  double headroom = 1.2;
  int64_t total_bytes = 0;          // (weights + kv + activations) * headroom
  int64_t available_bytes = 0;
  std::string available_source;     // "/proc/meminfo MemAvailable", "cudaMemGetInfo ...", "MLXCEL_MEMORY_LIMIT"
  std::string device;               // "cpu" or "cuda"
  bool fits = false;
  std::string describe() const;     // the human report
  nlohmann::json to_json() const;
};

// model_dir: a checkpoint folder, or a GGUF file (or a folder holding one): its weights
// counted as they are once loaded for the device (gguf_loaded_bytes).
MemoryEstimate estimate_memory(const std::string& model_dir, const MemoryRequest& req);

// Bytes a GGUF tensor takes once loaded (docs/gguf.md, docs/cuda.md): F32/F16/BF16 as in
// the file; on the CPU packed Q8_0/Q4_0 (the others requantized to Q8_0) plus the x8
// decode copy when `product` (a weight some product reads: all but an untied embedding);
// on CUDA MLX affine (Q4_0 5 bits a weight, Q4_1/Q4_K 6, the rest 9).
struct GgufTensorInfo;
int64_t gguf_loaded_bytes(const GgufTensorInfo& t, bool cuda, bool product = true);

// Memory free now where a model runs: the GPU's free memory (cudaMemGetInfo) for a CUDA
// device, MemAvailable for the CPU; 0 when unknown.
int64_t free_device_bytes(Device d);
// KV cache bytes one token takes in every layer (K and V), in the cache's dtype.
int64_t kv_bytes_per_token(const ModelConfig& cfg, DType kv_dtype);

// Parses "8GB", "512MiB", "1073741824"; throws Error(invalid_request) otherwise.
int64_t parse_byte_size(const std::string& s);

}  // namespace mlxcel
