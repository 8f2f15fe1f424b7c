// Rotary position embeddings. The scaling schemes (default, linear, dynamic NTK,
// llama3, yarn, longrope) only change the inverse frequencies and a scalar
// "attention scaling" applied to cos/sin; rope_frequencies() computes both on the
// host, the rope op applies them.
#pragma once

#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace mlxcel {

// Everything a config can say about RoPE, in transformers' terms.
struct RopeConfig {
  std::string type = "default";  // default|linear|dynamic|llama3|yarn|longrope
  double theta = 10000.0;
  int head_dim = 0;              // full head dimension
  int rotary_dim = 0;            // head_dim * partial_rotary_factor
  double factor = 1.0;
  int original_max_position = 0;   // original_max_position_embeddings
  int max_position = 0;            // max_position_embeddings of the model
  // llama3
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  // yarn
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 0.0, mscale_all_dim = 0.0;  // 0 = unset
  double attention_factor = 0.0;              // 0 = unset (yarn / longrope)
  bool truncate = true;                        // yarn: round the correction range
  // longrope
  std::vector<double> short_factor, long_factor;
  bool interleaved = false;  // GPT-J style pairs (x0,x1) instead of NeoX halves
};

struct RopeParams {
  Tensor inv_freq;           // f32 [rotary_dim / 2], on the host
  // Optional copy of inv_freq on the device of x (made once per step by the model): the
  // CUDA kernel reads it instead of uploading inv_freq at every call.
  Tensor inv_freq_device;
  float attention_scaling = 1.0f;
  int rotary_dim = 0;
  bool interleaved = false;
};

// Inverse frequencies for a step whose longest sequence has `seq_len` tokens
// (dynamic NTK and longrope depend on it). Matches transformers' ROPE_INIT_FUNCTIONS.
RopeParams rope_frequencies(const RopeConfig& cfg, int64_t seq_len);

namespace ops {
// Rotates the first rotary_dim features of each head: x [T, H, D], positions i32 [T].
// Returns a new tensor; features past rotary_dim pass through unchanged.
Tensor rope(const Tensor& x, const Tensor& positions, const RopeParams& p);
}  // namespace ops

}  // namespace mlxcel
