#include "base/thread_pool.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace mlxcel {

TEST(ThreadPool, CoversEveryIndexOnce) {
  ThreadPool pool(4);
  for (int64_t n : {1, 3, 4, 5, 1000, 12345}) {
    std::vector<std::atomic<int>> hits(n);
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i]++;
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(ThreadPool, RethrowsOnCaller) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(100, [](int64_t b, int64_t) {
    if (b > 0) throw std::runtime_error("boom");
  }),
               std::runtime_error);
  // The pool stays usable.
  std::atomic<int64_t> sum{0};
  pool.parallel_for(100, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 100);
}

TEST(ThreadPool, NestedCallRunsInline) {
  ThreadPool& pool = ThreadPool::global();
  std::atomic<int64_t> sum{0};
  pool.parallel_for(8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pool.parallel_for(10, [&](int64_t b2, int64_t e2) { sum += e2 - b2; });
  });
  EXPECT_EQ(sum.load(), 80);
}

TEST(ThreadPool, SpinBudget) {
  EXPECT_EQ(ThreadPool(2, 0).spin_us(), 0);
  EXPECT_EQ(ThreadPool(2, 37).spin_us(), 37);
  setenv("MLXCEL_SPIN_US", "12", 1);
  EXPECT_EQ(ThreadPool(2).spin_us(), 12);
  setenv("MLXCEL_SPIN_US", "junk", 1);
  EXPECT_EQ(ThreadPool(2).spin_us(), ThreadPool::kDefaultSpinUs);
  unsetenv("MLXCEL_SPIN_US");
  EXPECT_EQ(ThreadPool(2).spin_us(), ThreadPool::kDefaultSpinUs);
}

// Many short jobs back to back (a worker still finishing one job while the next is
// published), with every wait sleeping (0), a short spin, and a spin long enough that the
// workers never sleep.
TEST(ThreadPool, BackToBackJobsNeverMixUp) {
  for (int spin : {0, 5, 100000}) {
    for (int threads : {2, 3, 8}) {
      ThreadPool pool(threads, spin);
      std::vector<std::atomic<int>> hits(64);
      for (int it = 0; it < 5000; ++it) {
        const int64_t n = 2 + it % 13;
        pool.parallel_for(n, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1, std::memory_order_relaxed);
        });
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(hits[size_t(i)].exchange(0), 1)
              << "spin " << spin << " threads " << threads << " it " << it;
      }
    }
  }
}

// Jobs separated by pauses longer than the spin budget, so the workers go to sleep and
// must be woken for the next one.
TEST(ThreadPool, WakesSleepingWorkers) {
  ThreadPool pool(3, 1);
  for (int it = 0; it < 50; ++it) {
    std::this_thread::sleep_for(std::chrono::microseconds(200 + 37 * (it % 5)));
    std::atomic<int64_t> sum{0};
    pool.parallel_for(3, [&](int64_t b, int64_t e) { sum += e - b; });
    ASSERT_EQ(sum.load(), 3);
  }
}

// The first exception of a job reaches the caller, whichever thread threw it, under
// back-to-back jobs; the jobs after it run normally.
TEST(ThreadPool, ExceptionsUnderStress) {
  for (int spin : {0, 100000}) {
    ThreadPool pool(4, spin);
    for (int it = 0; it < 2000; ++it) {
      const int64_t thrower = it % 4;
      if (it % 3 == 0) {
        EXPECT_THROW(pool.parallel_for(4, [&](int64_t b, int64_t) {
          if (b == thrower) throw std::runtime_error("boom");
        }),
                     std::runtime_error);
      } else {
        std::atomic<int64_t> sum{0};
        pool.parallel_for(4, [&](int64_t b, int64_t e) { sum += e - b; });
        ASSERT_EQ(sum.load(), 4);
      }
    }
  }
}

// Several threads share one pool: their jobs are serialized and each sees only its own.
TEST(ThreadPool, ConcurrentCallers) {
  ThreadPool pool(3, 50);
  std::vector<std::thread> callers;
  std::atomic<int> bad{0};
  for (int t = 0; t < 3; ++t)
    callers.emplace_back([&, t] {
      for (int it = 0; it < 2000; ++it) {
        const int64_t n = 3 + (it + t) % 7;
        std::atomic<int64_t> sum{0};
        pool.parallel_for(n, [&](int64_t b, int64_t e) { sum += e - b; });
        if (sum.load() != n) bad++;
      }
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(bad.load(), 0);
}

// Destroying a pool whose workers spin, sleep, or never got a job returns promptly.
TEST(ThreadPool, Shutdown) {
  for (int spin : {0, 100, 1000000}) {
    for (int round = 0; round < 20; ++round) {
      ThreadPool pool(4, spin);
      if (round % 2) {
        std::atomic<int64_t> sum{0};
        pool.parallel_for(100, [&](int64_t b, int64_t e) { sum += e - b; });
        EXPECT_EQ(sum.load(), 100);
      }
      if (round % 4 == 3) std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  }
}

// One thread: everything inline on the caller.
// Prefetch hints between jobs: a worker may pull them into the cache while idle; jobs
// still run right, whether the hint is taken, replaced, stale or never taken (and a
// hint to unmapped memory is harmless: prefetches never fault).
TEST(ThreadPool, PrefetchHintsBetweenJobs) {
  for (int spin : {0, 100000}) {
    ThreadPool pool(3, spin);
    std::vector<char> buf(size_t(4) << 20, 1);
    for (int round = 0; round < 300; ++round) {
      std::vector<std::atomic<int>> hits(97);
      pool.parallel_for(97, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
      });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1);
      pool.prefetch_when_idle(buf.data() + (round % 7) * 4096, size_t(1) << 20);
      if (round % 5 == 0) pool.prefetch_when_idle(reinterpret_cast<const void*>(uintptr_t(64)), 4096);
      if (round % 11 == 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    pool.prefetch_when_idle(nullptr, 100);  // ignored
    pool.prefetch_when_idle(buf.data(), 0);
  }
  ThreadPool one(1);
  one.prefetch_when_idle(nullptr, 1);
  std::atomic<int64_t> sum{0};
  one.parallel_for(10, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 10);
}

TEST(ThreadPool, SingleThread) {
  ThreadPool pool(1);
  const auto self = std::this_thread::get_id();
  int calls = 0;
  pool.parallel_for(10, [&](int64_t b, int64_t e) {
    EXPECT_EQ(std::this_thread::get_id(), self);
    EXPECT_EQ(b, 0);
    EXPECT_EQ(e, 10);
    ++calls;
  });
  EXPECT_EQ(calls, 1);
}

}  // namespace mlxcel
