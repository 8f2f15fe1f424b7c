// RoPE frequencies (transformers' ROPE_INIT_FUNCTIONS) and the rope op.
//
// NOTE: transformers computes the frequencies with float32 tensors, one rounded op at
// a time (python scalars are cast to float32 when they meet a tensor), and some
// scalars in python doubles. Each formula below follows the same split so the
// result agrees to about one float32 ulp; this file is built without FMA contraction.
#include <cmath>
#include <vector>

#include "backends/cpu/rope.h"
#include "backends/cuda/dispatch.h"
#include "ops/ops_internal.h"
#include "ops/rope.h"

namespace mlxcel {

namespace {

constexpr const char* kFreqOp = "rope_frequencies";

// float32 pow, correctly rounded from double (torch's powf is within an ulp).
float pow_f32(float b, float e) { return float(std::pow(double(b), double(e))); }

// torch.arange(0, dim, 2).float() / dim, element i.
float exponent(int i, int dim) { return float(2 * i) / float(dim); }

// 1 / base ** (arange(0, dim, 2) / dim) with a float32 base.
std::vector<float> default_inv_freq(float base, int dim) {
  std::vector<float> inv(size_t(dim / 2));
  for (int i = 0; i < dim / 2; ++i) inv[size_t(i)] = 1.0f / pow_f32(base, exponent(i, dim));
  return inv;
}

std::vector<float> llama3(const RopeConfig& c, int dim) {
  std::vector<float> inv = default_inv_freq(float(c.theta), dim);
  if (c.original_max_position <= 0) invalid("[{}] llama3 rope needs original_max_position_embeddings", kFreqOp);
  const float factor = float(c.factor), lo = float(c.low_freq_factor);
  const double old_ctx = double(c.original_max_position);
  const float low_wavelen = float(old_ctx / c.low_freq_factor), high_wavelen = float(old_ctx / c.high_freq_factor);
  const float two_pi = float(2.0 * M_PI);
  for (auto& f : inv) {
    const float wavelen = two_pi / f;
    const float llama = wavelen > low_wavelen ? f / factor : f;
    const float smooth = (float(old_ctx) / wavelen - lo) / float(c.high_freq_factor - c.low_freq_factor);
    const float smoothed = ((1.0f - smooth) * llama) / factor + smooth * llama;
    const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
    f = medium ? smoothed : llama;
  }
  return inv;
}

double yarn_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

std::vector<float> yarn(const RopeConfig& c, int dim, float& attention) {
  const double base = c.theta;
  double factor = c.factor;
  const int omp = c.original_max_position > 0 ? c.original_max_position : c.max_position;
  if (omp <= 0) invalid("[{}] yarn rope needs original_max_position_embeddings", kFreqOp);
  if (!(factor > 0.0)) factor = double(c.max_position) / double(omp);
  if (c.attention_factor > 0.0) {
    attention = float(c.attention_factor);
  } else if (c.mscale != 0.0 && c.mscale_all_dim != 0.0) {
    attention = float(yarn_mscale(factor, c.mscale) / yarn_mscale(factor, c.mscale_all_dim));
  } else {
    attention = float(yarn_mscale(factor, 1.0));
  }
  const double beta_fast = c.beta_fast != 0.0 ? c.beta_fast : 32.0;
  const double beta_slow = c.beta_slow != 0.0 ? c.beta_slow : 1.0;
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(double(omp) / (rotations * 2.0 * M_PI))) / (2.0 * std::log(base));
  };
  double low = correction_dim(beta_fast), high = correction_dim(beta_slow);
  if (c.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;  // transformers: "prevent singularity"
  const float low_f = float(low), range_f = float(high - low);
  std::vector<float> inv(size_t(dim / 2));
  for (int i = 0; i < dim / 2; ++i) {
    const float pos_freq = pow_f32(float(base), exponent(i, dim));
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (float(factor) * pos_freq);
    const float ramp = std::min(std::max((float(i) - low_f) / range_f, 0.0f), 1.0f);
    const float extra_factor = 1.0f - ramp;
    inv[size_t(i)] = interpolation * (1.0f - extra_factor) + extrapolation * extra_factor;
  }
  return inv;
}

std::vector<float> longrope(const RopeConfig& c, int dim, int64_t seq_len, float& attention) {
  const int omp = c.original_max_position > 0 ? c.original_max_position : c.max_position;
  if (omp <= 0) invalid("[{}] longrope needs original_max_position_embeddings", kFreqOp);
  // NOTE: factor 1.0 (RopeConfig's default) means "unset" here, as in transformers
  // where it then comes from max_position_embeddings / original_max_position_embeddings.
  double factor = c.factor;
  if (factor == 1.0 || !(factor > 0.0)) factor = c.max_position > 0 ? double(c.max_position) / double(omp) : 1.0;
  if (c.attention_factor > 0.0) {
    attention = float(c.attention_factor);
  } else {
    attention = factor <= 1.0 ? 1.0f : float(std::sqrt(1.0 + std::log(factor) / std::log(double(omp))));
  }
  const std::vector<double>& ext = seq_len > omp ? c.long_factor : c.short_factor;
  if (int64_t(c.short_factor.size()) != dim / 2 || int64_t(c.long_factor.size()) != dim / 2)
    invalid("[{}] longrope short_factor and long_factor need {} values (rotary_dim / 2), got {} and {}", kFreqOp,
            dim / 2, c.short_factor.size(), c.long_factor.size());
  std::vector<float> inv(size_t(dim / 2));
  for (int i = 0; i < dim / 2; ++i)
    inv[size_t(i)] = 1.0f / (float(ext[size_t(i)]) * pow_f32(float(c.theta), exponent(i, dim)));
  return inv;
}

std::vector<float> dynamic_ntk(const RopeConfig& c, int dim, int64_t seq_len) {
  if (c.max_position <= 0) invalid("[{}] dynamic rope needs max_position_embeddings", kFreqOp);
  if (seq_len <= c.max_position) return default_inv_freq(float(c.theta), dim);
  if (dim <= 2) invalid("[{}] dynamic rope needs rotary_dim > 2, got {}", kFreqOp, dim);
  // transformers runs this update with seq_len as a tensor, so everything is float32.
  float t = (float(c.factor) * float(seq_len)) / float(c.max_position);
  t = t - float(c.factor - 1.0);
  const float base = float(c.theta) * pow_f32(t, float(double(dim) / double(dim - 2)));
  return default_inv_freq(base, dim);
}

}  // namespace

RopeParams rope_frequencies(const RopeConfig& cfg, int64_t seq_len) {
  if (cfg.head_dim <= 0) invalid("[{}] head_dim must be positive, got {}", kFreqOp, cfg.head_dim);
  const int dim = cfg.rotary_dim > 0 ? cfg.rotary_dim : cfg.head_dim;
  if (dim % 2 != 0 || dim > cfg.head_dim)
    invalid("[{}] rotary_dim must be even and at most head_dim {}, got {}", kFreqOp, cfg.head_dim, dim);
  if (!(cfg.theta > 0.0)) invalid("[{}] rope theta must be positive, got {}", kFreqOp, cfg.theta);
  RopeParams p;
  p.rotary_dim = dim;
  p.interleaved = cfg.interleaved;
  std::vector<float> inv;
  float attention = 1.0f;
  const std::string& t = cfg.type;
  if (t == "default" || t.empty()) {
    inv = default_inv_freq(float(cfg.theta), dim);
  } else if (t == "linear") {
    inv = default_inv_freq(float(cfg.theta), dim);
    for (auto& f : inv) f = f / float(cfg.factor);
  } else if (t == "dynamic") {
    inv = dynamic_ntk(cfg, dim, seq_len);
  } else if (t == "llama3") {
    inv = llama3(cfg, dim);
  } else if (t == "yarn") {
    inv = yarn(cfg, dim, attention);
  } else if (t == "longrope" || t == "su") {
    inv = longrope(cfg, dim, seq_len, attention);
  } else if (t == "proportional") {
    // Frequencies over the whole head (exponents / head_dim); the non-rotated pairs
    // get frequency 0, so the rotation spans head_dim with NeoX pairs (i, i + head_dim/2).
    const int hd = cfg.head_dim, angles = dim / 2;
    inv.assign(size_t(hd / 2), 0.0f);
    for (int i = 0; i < angles; ++i) inv[size_t(i)] = 1.0f / pow_f32(float(cfg.theta), exponent(i, hd));
    for (auto& f : inv) f = f / float(cfg.factor);
    p.rotary_dim = hd - hd % 2;
  } else {
    unsupported("[{}] unsupported rope type '{}'", kFreqOp, t);
  }
  p.attention_scaling = attention;
  p.inv_freq = Tensor::from_f32({int64_t(inv.size())}, inv);
  return p;
}

namespace ops {

using namespace detail;

void detail::check_rope(const char* kOp, const Tensor& x, const Tensor& positions, const RopeParams& p) {
  check_defined(kOp, x, "x");
  check_defined(kOp, positions, "positions");
  check_dtype(kOp, x, "x", {DType::f32});
  check_dtype(kOp, positions, "positions", {DType::i32});
  if (x.ndim() != 3) invalid("[{}] x must be [T, H, D], got {}", kOp, x.describe());
  if (positions.ndim() != 1 || positions.dim(0) != x.dim(0))
    invalid("[{}] positions must be i32 [{}], got {}", kOp, x.dim(0), positions.describe());
  check_same_device(kOp, x, positions, "positions");
  const int rot = p.rotary_dim;
  if (rot <= 0 || rot % 2 != 0 || rot > x.dim(2))
    invalid("[{}] rotary_dim {} must be even, positive and at most the head dim {}", kOp, rot, x.dim(2));
  if (!p.inv_freq.defined() || p.inv_freq.dtype() != DType::f32 || p.inv_freq.numel() != rot / 2 ||
      p.inv_freq.device().type != DeviceType::cpu)
    invalid("[{}] inv_freq must be a host f32 [{}] (rotary_dim / 2), got {}", kOp, rot / 2, p.inv_freq.describe());
}

const float* detail::rope_freq_mirror(const RopeParams& p, Device d) {
  const bool mirror = p.inv_freq_device.defined() && p.inv_freq_device.device() == d &&
                      p.inv_freq_device.numel() == p.rotary_dim / 2 && p.inv_freq_device.dtype() == DType::f32 &&
                      p.inv_freq_device.is_contiguous();
  return mirror ? p.inv_freq_device.data<float>() : nullptr;
}

const float* detail::rope_freq_on(const RopeParams& p, Device d, const Tensor& host_freq) {
  const float* mirror = rope_freq_mirror(p, d);
  return mirror ? mirror : host_freq.data<float>();
}

Tensor rope(const Tensor& x, const Tensor& positions, const RopeParams& p) {
  constexpr const char* kOp = "rope";
  check_rope(kOp, x, positions, p);
  const int rot = p.rotary_dim;
  check_backend(kOp, x.device());
  Tensor xc = contiguous_input(x), pc = contiguous_input(positions), fc = contiguous_input(p.inv_freq);
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  switch (x.device().type) {
    case DeviceType::cpu:
      cpu::rope(xc.data<float>(), x.dim(0), x.dim(1), x.dim(2), pc.data<int32_t>(), fc.data<float>(), rot,
                p.attention_scaling, p.interleaved, out.data<float>());
      break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, {
      cuda::rope(xc.data<float>(), x.dim(0), x.dim(1), x.dim(2), pc.data<int32_t>(), rope_freq_on(p, x.device(), fc),
                 rot, p.attention_scaling, p.interleaved, out.data<float>());
    }); break;
  }
  return out;
}

}  // namespace ops
}  // namespace mlxcel
