#include "backends/cpu/rope.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/parallel.h"

namespace mlxcel::cpu {

void rope(const float* x, int64_t T, int64_t H, int64_t D, const int32_t* positions, const float* inv_freq, int rot,
          float attn_scale, bool interleaved, float* out) {
  const int half = rot / 2;
  parallel_for(T, H * D * 2 + half * 16, [&](int64_t t0, int64_t t1) {
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t t = t0; t < t1; ++t) {
      const float p = float(positions[t]);
      for (int i = 0; i < half; ++i) {
        // NOTE: transformers forms position * inv_freq in f32 and takes cos/sin of that
        // f32 angle, then scales by attention_scaling in f32.
        const float a = p * inv_freq[i];
        cs[size_t(i)] = float(std::cos(double(a))) * attn_scale;
        sn[size_t(i)] = float(std::sin(double(a))) * attn_scale;
      }
      for (int64_t h = 0; h < H; ++h) {
        const float* xi = x + (t * H + h) * D;
        float* o = out + (t * H + h) * D;
        if (interleaved) {
          for (int i = 0; i < half; ++i) {
            const float x1 = xi[2 * i], x2 = xi[2 * i + 1];
            o[2 * i] = x1 * cs[size_t(i)] - x2 * sn[size_t(i)];
            o[2 * i + 1] = x2 * cs[size_t(i)] + x1 * sn[size_t(i)];
          }
        } else {
          for (int i = 0; i < half; ++i) {
            const float x1 = xi[i], x2 = xi[i + half];
            o[i] = x1 * cs[size_t(i)] - x2 * sn[size_t(i)];
            o[i + half] = x2 * cs[size_t(i)] + x1 * sn[size_t(i)];
          }
        }
        if (o != xi && D > rot) std::memcpy(o + rot, xi + rot, size_t(D - rot) * sizeof(float));
      }
    }
  });
}

}  // namespace mlxcel::cpu
