// The device pointers of a decode step's RoPE and K/V cache write when a q/k/v launch
// takes them in its epilogue (ops::detail::rope_kv_target fills it, backends/cuda's
// qgemv_rf reads it). A plain struct with no fmt: CUDA sources include it.
#pragma once

#include <cstdint>

#include "tensor/dtype.h"

namespace mlxcel::ops::detail {

struct RopeKvTarget {
  const int32_t* pos = nullptr;
  const int32_t* slot = nullptr;
  const float* inv_freq = nullptr;
  float attn_scale = 1.0f;
  int head_dim = 0;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  DType cache_dtype = DType::f32;
  int64_t n_slots = 0;
};

}  // namespace mlxcel::ops::detail
