#include "base/thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <set>
#include <string>

namespace mlxcel {

int physical_core_count() {
  // Count distinct (physical id, core id) pairs in /proc/cpuinfo.
  std::ifstream in("/proc/cpuinfo");
  std::set<std::pair<int, int>> cores;
  std::string line;
  int phys = 0;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    if (key == "physical id") phys = std::atoi(line.c_str() + colon + 1);
    if (key == "core id") cores.insert({phys, std::atoi(line.c_str() + colon + 1)});
  }
  int hw = int(std::max(1u, std::thread::hardware_concurrency()));
  if (cores.empty()) return hw;
  return std::min(hw, int(cores.size()));
}

namespace {
// NOTE: a parallel_for issued from inside a chunk runs inline; the pool is not re-entrant.
thread_local bool t_in_pool = false;
struct InPool {
  InPool() { t_in_pool = true; }
  ~InPool() { t_in_pool = false; }
};

std::unique_ptr<ThreadPool>& global_slot() {
  static std::unique_ptr<ThreadPool> pool;
  return pool;
}
int default_threads() {
  if (const char* env = std::getenv("MLXCEL_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return physical_core_count();
}
}  // namespace

ThreadPool& ThreadPool::global() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (!global_slot()) global_slot() = std::make_unique<ThreadPool>(default_threads());
  });
  return *global_slot();
}

void ThreadPool::set_global_threads(int n_threads) {
  global();  // make sure the once-flag has fired
  global_slot() = std::make_unique<ThreadPool>(std::max(1, n_threads));
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int) {
  InPool in_pool;
  uint64_t seen = 0;
  for (;;) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_work_.wait(lk, [&] { return stop_ || (generation_ != seen && next_chunk_ < n_chunks_); });
    if (stop_) return;
    while (next_chunk_ < n_chunks_) {
      int c = next_chunk_++;
      const auto* fn = job_;
      int64_t b = c * job_chunk_, e = std::min(job_n_, b + job_chunk_);
      lk.unlock();
      try {
        (*fn)(b, e);
      } catch (...) {
        std::lock_guard<std::mutex> g(mu_);
        if (!error_) error_ = std::current_exception();
      }
      lk.lock();
      if (--pending_ == 0) cv_done_.notify_all();
    }
    seen = generation_;
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int64_t max_chunks = std::max<int64_t>(1, n / grain);
  int chunks = int(std::min<int64_t>(n_threads_, max_chunks));
  if (chunks <= 1 || t_in_pool) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mu_);
  InPool in_pool;
  std::unique_lock<std::mutex> lk(mu_);
  job_ = &fn;
  job_n_ = n;
  job_chunk_ = (n + chunks - 1) / chunks;
  n_chunks_ = int((n + job_chunk_ - 1) / job_chunk_);
  next_chunk_ = 0;
  pending_ = n_chunks_;
  error_ = nullptr;
  ++generation_;
  cv_work_.notify_all();
  // The caller works too.
  while (next_chunk_ < n_chunks_) {
    int c = next_chunk_++;
    int64_t b = c * job_chunk_, e = std::min(job_n_, b + job_chunk_);
    lk.unlock();
    try {
      fn(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> g(mu_);
      if (!error_) error_ = std::current_exception();
    }
    lk.lock();
    --pending_;
  }
  cv_done_.wait(lk, [&] { return pending_ == 0; });
  job_ = nullptr;
  if (error_) {
    auto e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

}  // namespace mlxcel
