#include "base/thread_pool.h"

#include <algorithm>
#include <climits>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <utility>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Sleeps while *word == expected (spurious returns are fine: callers loop).
// std::atomic::wait is not used: libstdc++ 12's version missed wake-ups here.
void futex_wait(std::atomic<uint32_t>& word, uint32_t expected) {
#if defined(__linux__)
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
#else
  word.wait(expected);
#endif
}

void futex_wake_all(std::atomic<uint32_t>& word) {
#if defined(__linux__)
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
#else
  word.notify_all();
#endif
}

int64_t spin_ns_for(int spin_us) {
  if (spin_us < 0) {
    spin_us = ThreadPool::kDefaultSpinUs;
    if (const char* env = std::getenv("MLXCEL_SPIN_US")) {
      char* end = nullptr;
      const long v = std::strtol(env, &end, 10);
      if (end != env && v >= 0) spin_us = int(std::min<long>(v, 1000000));
    }
  }
  return int64_t(spin_us) * 1000;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t env_or(const char* name, int64_t fallback) {
  if (const char* env = std::getenv(name)) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && v >= 0) return v;
  }
  return fallback;
}

// A yield that took this long means another task ran on this core in between.
const int64_t kPreemptedNs = env_or("MLXCEL_SPIN_PREEMPT_US", 30) * 1000;
// After that, nobody in the pool spins for this long (the machine is busy).
const int64_t kBackoffNs = env_or("MLXCEL_SPIN_BACKOFF_MS", 5) * 1000000;

// Polls pred() until it holds or spin_ns have passed; returns pred(). The first ~2 us
// poll with the pause instruction, later polls yield the CPU in between. A yield that
// hands the core to another task shows the machine is busy: then this spin ends, and
// no thread of the pool spins until `backoff_until` (ns, steady clock).
template <typename Pred>
bool spin_until(Pred&& pred, int64_t spin_ns, std::atomic<int64_t>& backoff_until) {
  if (pred()) return true;
  if (spin_ns <= 0) return false;
  const int64_t t0 = now_ns();
  if (t0 < backoff_until.load(std::memory_order_relaxed)) return false;
  constexpr int64_t kPauseOnlyNs = 2000;
  for (;;) {
    for (int i = 0; i < 16; ++i) {
      cpu_relax();
      if (pred()) return true;
    }
    const int64_t t = now_ns();
    if (t - t0 > spin_ns) return pred();
    if (t - t0 > kPauseOnlyNs) {
      std::this_thread::yield();
      if (pred()) return true;
      const int64_t t_after = now_ns();
      if (t_after - t > kPreemptedNs) {
        backoff_until.store(t_after + kBackoffNs, std::memory_order_relaxed);
        return pred();
      }
    }
  }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads, int spin_us)
    : n_threads_(std::max(1, n_threads)), spin_ns_(spin_ns_for(spin_us)), hints_on_(env_or("MLXCEL_IDLE_PREFETCH", 1) != 0) {
  workers_.reserve(size_t(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  futex_wake_all(generation_);
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks() {
  for (;;) {
    const uint64_t v = next_.fetch_add(1, std::memory_order_acq_rel);
    const int64_t c = int64_t(v & 0xFFFFFFFFu), n_chunks = int64_t(v >> 32);
    if (c >= n_chunks) return;
    const auto* fn = job_.load(std::memory_order_relaxed);
    const int64_t chunk = job_chunk_.load(std::memory_order_relaxed);
    const int64_t b = c * chunk, e = std::min(job_n_.load(std::memory_order_relaxed), b + chunk);
    try {
      (*fn)(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> g(error_mu_);
      if (!error_) error_ = std::current_exception();
    }
    // seq_cst: pairs with the caller's store of caller_sleeps_ and load of pending_.
    if (pending_.fetch_sub(1) == 1 && caller_sleeps_.load()) futex_wake_all(pending_);
  }
}

void ThreadPool::prefetch_when_idle(const void* p, size_t n) {
  if (!hints_on_ || n_threads_ < 2 || !p || n == 0) return;
  hint_n_.store(n, std::memory_order_relaxed);
  hint_p_.store(static_cast<const char*>(p), std::memory_order_release);
}

void ThreadPool::worker_loop() {
  InPool in_pool;
  // generation_ before any job, so a worker that starts late still runs the first one.
  uint32_t seen = 0;
  for (;;) {
    auto ready = [&] { return generation_.load(std::memory_order_acquire) != seen; };
    auto ready_or_hint = [&] { return ready() || hint_p_.load(std::memory_order_relaxed) != nullptr; };
    const bool woke = spin_until(ready_or_hint, spin_ns_, backoff_until_);
    if (woke && !ready()) {
      if (const char* p = hint_p_.exchange(nullptr, std::memory_order_acquire)) {
        const size_t n = hint_n_.load(std::memory_order_relaxed);
        for (size_t off = 0; off < n && !ready(); off += 1024)
          for (size_t i = off; i < std::min(n, off + 1024); i += 64) __builtin_prefetch(p + i, 0, 3);
      }
      continue;
    }
    if (!woke) {
      // seq_cst: either the caller's load of sleepers_ sees this increment (and it
      // notifies), or this load of generation_ sees its new value (and wait returns).
      sleepers_.fetch_add(1);
      while (generation_.load() == seen) futex_wait(generation_, seen);
      sleepers_.fetch_sub(1);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    run_chunks();
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t max_chunks = std::max<int64_t>(1, n / grain);
  const int chunks = int(std::min<int64_t>(n_threads_, max_chunks));
  if (chunks <= 1 || t_in_pool) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mu_);
  InPool in_pool;
  const int64_t chunk = (n + chunks - 1) / chunks;
  const int n_chunks = int((n + chunk - 1) / chunk);
  // Every chunk of the previous job has finished (its pending_ reached 0), so no thread
  // reads these fields until the store of next_ below publishes the new job.
  job_.store(&fn, std::memory_order_relaxed);
  job_n_.store(n, std::memory_order_relaxed);
  job_chunk_.store(chunk, std::memory_order_relaxed);
  pending_.store(n_chunks, std::memory_order_relaxed);
  next_.store(uint64_t(n_chunks) << 32, std::memory_order_release);
  generation_.fetch_add(1);  // seq_cst, see worker_loop
  if (sleepers_.load() > 0) futex_wake_all(generation_);
  // The caller works too.
  run_chunks();
  auto done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(done, spin_ns_, backoff_until_)) {
    caller_sleeps_.store(true);
    for (uint32_t p = pending_.load(); p != 0; p = pending_.load()) futex_wait(pending_, p);
    caller_sleeps_.store(false);
  }
  job_.store(nullptr, std::memory_order_relaxed);
  std::exception_ptr e;
  {
    std::lock_guard<std::mutex> g(error_mu_);
    e = std::exchange(error_, nullptr);
  }
  if (e) std::rethrow_exception(e);
}

}  // namespace mlxcel
