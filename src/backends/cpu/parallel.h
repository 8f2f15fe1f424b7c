// Work splitting for the CPU kernels. Internal to backends/cpu.
#pragma once

#include <algorithm>
#include <atomic>
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

// How many threads share n items pulled in chunks of at least `chunk`: no more than the
// pool has, the chunks, or ~32K units of work (item_cost units per item) each allow.
inline int64_t pull_workers(int64_t n, int64_t chunk, int64_t item_cost) {
  constexpr int64_t kMinWork = int64_t(1) << 15;
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  const int64_t by_work = std::max<int64_t>(1, n * std::max<int64_t>(1, item_cost) / kMinWork);
  return std::min<int64_t>({int64_t(ThreadPool::global().size()), n_chunks, by_work});
}

// Runs fn(begin, end) over [0, n) items in chunks of `chunk` items that the threads
// pull from a shared counter, with at least ~32K units of work (item_cost units per
// item) per thread. The calling thread starts at once and a worker that wakes late (or
// is preempted on a busy machine) only joins for the chunks left, instead of the caller
// waiting for a fixed half of the work.
inline void parallel_dynamic(int64_t n, int64_t chunk, int64_t item_cost,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(1, chunk);
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  const int64_t workers = pull_workers(n, chunk, item_cost);
  if (workers <= 1) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  ThreadPool::global().parallel_for(workers, [&](int64_t, int64_t) {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < n_chunks;
         c = next.fetch_add(1, std::memory_order_relaxed))
      fn(c * chunk, std::min(n, (c + 1) * chunk));
  });
}

// As parallel_dynamic, but the chunks shrink as the work runs out ("guided"): each pull
// takes max(min_chunk, remaining / (2 * workers)) items, so the first chunks are long
// contiguous runs (one stream the hardware prefetcher follows for a long time) and the
// last ones are short enough to balance a late or preempted thread.
inline void parallel_guided(int64_t n, int64_t min_chunk, int64_t item_cost,
                            const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  const int64_t workers = pull_workers(n, min_chunk, item_cost);
  if (workers <= 1) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  ThreadPool::global().parallel_for(workers, [&](int64_t, int64_t) {
    int64_t begin = next.load(std::memory_order_relaxed);
    while (begin < n) {
      const int64_t take = std::max(min_chunk, (n - begin) / (2 * workers));
      if (!next.compare_exchange_weak(begin, begin + take, std::memory_order_relaxed)) continue;
      fn(begin, std::min(n, begin + take));
      begin = next.load(std::memory_order_relaxed);
    }
  });
}

}  // namespace mlxcel::cpu
