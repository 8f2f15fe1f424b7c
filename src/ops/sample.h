// Token sampling on the logits' device: rows of logits in, one token id per row out.
// Only the ids need to leave the device (the engine's sampled rows on a GPU).
//
//   std::vector<ops::SampleRow> rows = {{.temperature = 0.8f, .top_p = 0.95f, .u = 0.37f}};
//   Tensor ids = ops::sample(logits, rows);  // i32 [R]
#pragma once

#include <vector>

#include "backends/cpu/kernels.h"
#include "tensor/tensor.h"

namespace mlxcel::ops {

// Per row: temperature (<= 0: argmax, lowest id on ties), top_k (0: off), top_p (1: off),
// min_p (0: off) and u, a uniform draw in [0, 1). The filters are engine/sampler.h's:
// the top-k logits (ties at the k-th value to the lower ids), their softmax at the
// temperature, min-p against the most likely token, then top-p: the largest logit
// threshold whose tokens hold at least top_p of that softmax's mass (tokens tied at the
// threshold all kept). The token is the one at u * (kept mass) with the kept tokens
// walked in id order: the same distribution as the host sampler (which walks them by
// probability), not the same token for a given u.
using SampleRow = cpu::SampleRow;

// logits f32 [R, V] (V >= 1), rows.size() == R, temperature finite, top_k >= 0,
// top_p in (0, 1], min_p in [0, 1], u in [0, 1) -> i32 [R] on the logits' device.
Tensor sample(const Tensor& logits, const std::vector<SampleRow>& rows);

}  // namespace mlxcel::ops
