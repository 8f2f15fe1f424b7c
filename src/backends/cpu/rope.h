// Rotary position embedding kernel.
#pragma once

#include <cstdint>

namespace mlxcel::cpu {

// out [T, H, D] = x [T, H, D] with the first `rot` features of each head rotated by
// angle positions[t] * inv_freq[i] (the product in f32, as transformers computes it);
// cos and sin are multiplied by attn_scale. NeoX pairs (i, i + rot/2), or GPT-J
// pairs (2i, 2i + 1) when interleaved. Features past rot are copied. out may alias x.
void rope(const float* x, int64_t T, int64_t H, int64_t D, const int32_t* positions, const float* inv_freq, int rot,
          float attn_scale, bool interleaved, float* out);

}  // namespace mlxcel::cpu
