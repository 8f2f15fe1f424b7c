#include "ops/sample.h"

#include <cmath>

#include "backends/cuda/dispatch.h"
#include "ops/ops_internal.h"

namespace mlxcel::ops {

using namespace detail;

Tensor sample(const Tensor& logits, const std::vector<SampleRow>& rows) {
  constexpr const char* kOp = "sample";
  check_defined(kOp, logits, "logits");
  check_dtype(kOp, logits, "logits", {DType::f32});
  if (logits.ndim() != 2 || logits.dim(1) < 1)
    invalid("[{}] logits must be f32 [rows, vocab] with vocab >= 1, got {}", kOp, logits.describe());
  if (int64_t(rows.size()) != logits.dim(0))
    invalid("[{}] {} sampling rows for {} rows of logits", kOp, rows.size(), logits.dim(0));
  for (size_t i = 0; i < rows.size(); ++i) {
    const SampleRow& r = rows[i];
    if (!std::isfinite(r.temperature) || r.top_k < 0 || !(r.top_p > 0.0f && r.top_p <= 1.0f) ||
        !(r.min_p >= 0.0f && r.min_p <= 1.0f) || !(r.u >= 0.0f && r.u < 1.0f))
      invalid("[{}] row {}: temperature {}, top_k {}, top_p {}, min_p {}, u {} out of range", kOp, i, r.temperature,
              r.top_k, r.top_p, r.min_p, r.u);
  }
  check_backend(kOp, logits.device());
  Tensor xc = contiguous_input(logits);
  Tensor out = Tensor::empty({logits.dim(0)}, DType::i32, logits.device());
  if (rows.empty()) return out;
  switch (logits.device().type) {
    case DeviceType::cpu: cpu::sample(xc, rows.data(), out); break;
    case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::sample(xc, rows.data(), out)); break;
  }
  return out;
}

}  // namespace mlxcel::ops
