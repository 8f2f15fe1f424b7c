// Work splitting for the CPU kernels. Internal to backends/cpu.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>

#include "base/thread_pool.h"

namespace mlxcel::cpu {

// Runs fn(begin, end) over [0, n) items on the global pool, with chunks of at
// least ~32K units of work (item_cost units per item) so small ops stay inline.
inline void parallel_for(int64_t n, int64_t item_cost, const std::function<void(int64_t, int64_t)>& fn) {
  constexpr int64_t kMinWork = int64_t(1) << 15;
  int64_t grain = std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, item_cost));
  ThreadPool::global().parallel_for(n, fn, grain);
}

}  // namespace mlxcel::cpu
