#include "ops/quant.h"

#include <fmt/format.h>

namespace mlxcel {

std::string QuantSpec::describe() const { return fmt::format("mlx q{} g{}", bits, group_size); }

int64_t QuantizedWeight::cols() const { return packed.dim(1) * 32 / spec.bits; }

}  // namespace mlxcel
