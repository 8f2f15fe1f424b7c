// A fixed pool of worker threads for CPU kernels. One global pool sized to the
// physical cores (MLXCEL_NUM_THREADS overrides); kernels split work with parallel_for.
//
//   ThreadPool::global().parallel_for(n_rows, [&](int64_t begin, int64_t end) { ... });
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mlxcel {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  static ThreadPool& global();
  // Replaces the global pool (call before any kernel runs, e.g. from `-t N`).
  static void set_global_threads(int n_threads);

  int size() const { return n_threads_; }

  // Runs fn over [0, n) split into at most size() contiguous chunks of at least `grain`
  // items; the calling thread takes a chunk too. Blocks until all chunks finish.
  // Exceptions thrown by fn are rethrown on the caller (the first one).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  void worker_loop(int idx);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0, job_chunk_ = 0;
  int n_chunks_ = 0, next_chunk_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::mutex run_mu_;  // one parallel_for at a time
};

// Number of physical cores (falls back to hardware_concurrency).
int physical_core_count();

}  // namespace mlxcel
