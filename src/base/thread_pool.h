// A fixed pool of worker threads for CPU kernels. One global pool sized to the
// physical cores (MLXCEL_NUM_THREADS overrides); kernels split work with parallel_for.
//
//   ThreadPool::global().parallel_for(n_rows, [&](int64_t begin, int64_t end) { ... });
//
// Waiting. A decode step issues hundreds of short jobs back to back, and waking a
// sleeping thread costs tens of microseconds each time, so between jobs the workers
// (and a caller waiting for the workers' chunks) first spin for a bounded time and only
// then sleep (a futex). The spin polls with the CPU's pause
// instruction for the first couple of microseconds and then yields the CPU between
// polls (sched_yield), so on a loaded machine a spinning thread hands its core to
// whatever else is runnable there instead of burning the time slice. When such a yield
// does hand the core away (it returns only after tens of microseconds), the machine has
// no idle core: that spin ends and the whole pool sleeps at once for the next 5 ms
// (then probes again), so on a loaded machine the pool behaves like a plain sleeping
// one and neither our other thread nor other processes lose time to spinning. The spin
// budget is MLXCEL_SPIN_US microseconds (default kDefaultSpinUs; 0 = always sleep).
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mlxcel {

class ThreadPool {
 public:
  static constexpr int kDefaultSpinUs = 100;

  // spin_us < 0: MLXCEL_SPIN_US, else kDefaultSpinUs.
  explicit ThreadPool(int n_threads, int spin_us = -1);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  static ThreadPool& global();
  // Replaces the global pool (call before any kernel runs, e.g. from `-t N`).
  static void set_global_threads(int n_threads);

  int size() const { return n_threads_; }
  int spin_us() const { return int(spin_ns_ / 1000); }

  // Runs fn over [0, n) split into at most size() contiguous chunks of at least `grain`
  // items; the calling thread takes a chunk too. Blocks until all chunks finish.
  // Exceptions thrown by fn are rethrown on the caller (the first one). A call from
  // inside a chunk (of any pool) runs inline on that thread. Calls from several threads
  // at once are serialized.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

  // A hint for idle workers: bytes [p, p + n) will be read by the next job. One worker
  // that finds itself idle (the caller runs serial code between jobs) pulls them into
  // the cache with prefetch instructions, 1 KB at a time, and stops as soon as a job is
  // published. A later hint replaces one not taken yet. Prefetches never fault, so a
  // stale or wrong range costs only bandwidth. MLXCEL_IDLE_PREFETCH=0 turns hints off.
  void prefetch_when_idle(const void* p, size_t n);

 private:
  void worker_loop();
  // Runs chunks of the current job until none is left.
  void run_chunks();

  const int n_threads_;
  const int64_t spin_ns_;
  std::vector<std::thread> workers_;

  // The current job. Its fields are published by the release store of next_, which
  // holds the job's chunk count (high 32 bits) and the next chunk to take (low 32 bits):
  // a thread takes a chunk with one fetch_add and finds the count in the same word, so
  // a worker that is late for one job can only ever take a chunk of the job now
  // published (and then reads that job's fields), never an old index for a new job.
  std::atomic<const std::function<void(int64_t, int64_t)>*> job_{nullptr};
  std::atomic<int64_t> job_n_{0}, job_chunk_{0};
  std::atomic<uint64_t> next_{0};
  // Chunks of the current job not finished yet; the caller waits for 0.
  std::atomic<uint32_t> pending_{0};
  // Bumped once per job (and at shutdown); idle workers wait for it to change.
  std::atomic<uint32_t> generation_{0};
  // Workers asleep (or about to sleep) on generation_, and whether the caller sleeps on
  // pending_: the other side skips the wake-up system call when nobody sleeps.
  std::atomic<int32_t> sleepers_{0};
  std::atomic<bool> caller_sleeps_{false};
  std::atomic<bool> stop_{false};
  // No spinning before this time (ns, steady clock): set when a spinning thread's yield
  // handed its core to another task, i.e. the machine has no idle core.
  std::atomic<int64_t> backoff_until_{0};

  // The pending prefetch hint (see prefetch_when_idle): the size is stored before the
  // pointer, and a worker takes the pointer with an exchange.
  std::atomic<const char*> hint_p_{nullptr};
  std::atomic<size_t> hint_n_{0};
  const bool hints_on_;

  std::mutex error_mu_;
  std::exception_ptr error_;  // guarded by error_mu_
  std::mutex run_mu_;         // one parallel_for at a time
};

// Number of physical cores (falls back to hardware_concurrency).
int physical_core_count();

}  // namespace mlxcel
