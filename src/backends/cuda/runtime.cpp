// CUDA runtime glue: allocator registration (a stream-ordered caching pool per
// device), streams, cuBLAS handles, scratch buffers, host <-> device copies, errors.
#include "backends/cuda/runtime.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "backends/cpu/kernels.h"
#include "backends/cuda/kernels.h"
#include "base/error.h"

namespace mlxcel::cuda {

namespace {

struct DeviceState {
  bool ready = false;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  void* scratch[kScratchSlots] = {};
  size_t scratch_bytes[kScratchSlots] = {};
};

std::mutex g_mu;
std::atomic<uint64_t> g_scratch_generation{0};  // bumped whenever a scratch buffer moves
std::vector<DeviceState> g_devices;           // by device index
std::unordered_map<void*, int> g_owner;       // allocation -> device
std::once_flag g_init_once;

DeviceState& state_locked(int device) {
  if (device < 0) throw Error(ErrorKind::internal, fmt::format("bad CUDA device index {}", device));
  if (int(g_devices.size()) <= device) g_devices.resize(size_t(device) + 1);
  DeviceState& s = g_devices[size_t(device)];
  if (!s.ready) {
    int count = device_count();
    if (device >= count)
      throw Error(ErrorKind::invalid_request,
                  fmt::format("CUDA device {} does not exist ({} device(s) visible)", device, count));
    DeviceGuard g(device);
    MLXCEL_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    // Keep freed memory in the pool (a caching allocator) instead of returning it to
    // the driver at every synchronization.
    cudaMemPool_t pool;
    MLXCEL_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;
    MLXCEL_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    MLXCEL_CUBLAS_CHECK(cublasCreate(&s.cublas));
    MLXCEL_CUBLAS_CHECK(cublasSetStream(s.cublas, s.stream));
    MLXCEL_CUBLAS_CHECK(cublasSetMathMode(s.cublas, CUBLAS_DEFAULT_MATH));  // no TF32 for f32
    s.ready = true;
  }
  return s;
}

DeviceState& state(int device) {
  std::lock_guard<std::mutex> lk(g_mu);
  return state_locked(device);
}

void* device_alloc(size_t n) {
  const int dev = current_device();
  cudaStream_t st = stream_of(dev);
  void* p = nullptr;
  cudaError_t e = cudaMallocAsync(&p, n, st);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    // Return cached blocks to the driver once and retry before giving up.
    MLXCEL_CUDA_CHECK(cudaStreamSynchronize(st));
    cudaMemPool_t pool;
    MLXCEL_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
    MLXCEL_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
    e = cudaMallocAsync(&p, n, st);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      throw Error(ErrorKind::resource_exhausted,
                  fmt::format("out of memory on cuda:{} allocating {} bytes", dev, n));
    }
  }
  MLXCEL_CUDA_CHECK(e);
  std::lock_guard<std::mutex> lk(g_mu);
  g_owner[p] = dev;
  return p;
}

// Runs from destructors: never throws. Errors at process exit (runtime unloading) are ignored.
void device_free(void* p) noexcept {
  int dev = 0;
  cudaStream_t st = nullptr;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    auto it = g_owner.find(p);
    if (it == g_owner.end()) return;
    dev = it->second;
    g_owner.erase(it);
    if (dev < int(g_devices.size())) st = g_devices[size_t(dev)].stream;
  }
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
  if (prev != dev) (void)cudaSetDevice(dev);
  if (cudaFreeAsync(p, st) != cudaSuccess) (void)cudaGetLastError();
  if (prev >= 0 && prev != dev) (void)cudaSetDevice(prev);
}

}  // namespace

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line) {
  (void)cudaGetLastError();  // clear a sticky-free error so later calls are not blamed
  const ErrorKind kind = e == cudaErrorMemoryAllocation ? ErrorKind::resource_exhausted : ErrorKind::internal;
  throw Error(kind, fmt::format("CUDA error in {} at {}:{}: {} ({})", call, file, line, cudaGetErrorString(e),
                                cudaGetErrorName(e)));
}

[[noreturn]] void throw_cublas_error(cublasStatus_t s, const char* call, const char* file, int line) {
  const ErrorKind kind = s == CUBLAS_STATUS_ALLOC_FAILED ? ErrorKind::resource_exhausted : ErrorKind::internal;
  throw Error(kind, fmt::format("cuBLAS error in {} at {}:{}: {} ({})", call, file, line, cublasGetStatusString(s),
                                cublasGetStatusName(s)));
}

[[noreturn]] void throw_invalid(const std::string& message) { throw Error(ErrorKind::invalid_request, message); }
[[noreturn]] void throw_unsupported(const std::string& message) { throw Error(ErrorKind::unsupported, message); }
[[noreturn]] void throw_internal(const std::string& message) { throw Error(ErrorKind::internal, message); }

DeviceGuard::DeviceGuard(int index) {
  static const int count = device_count();
  if (index < 0 || index >= count)
    throw Error(ErrorKind::invalid_request,
                fmt::format("CUDA device {} does not exist ({} device(s) visible)", index, count));
  MLXCEL_CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != index) MLXCEL_CUDA_CHECK(cudaSetDevice(index));
}

DeviceGuard::~DeviceGuard() {
  int cur = -1;
  if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_ && prev_ >= 0) (void)cudaSetDevice(prev_);
}

int current_device() {
  int d = 0;
  MLXCEL_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

cudaStream_t stream_of(int device) { return state(device).stream; }
cudaStream_t current_stream() { return stream_of(current_device()); }
cublasHandle_t cublas_handle(int device) { return state(device).cublas; }

int sm_count(int device) {
  static std::atomic<int> cached[64] = {};
  if (device >= 0 && device < 64 && cached[device].load()) return cached[device].load();
  int n = 0;
  MLXCEL_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  if (device >= 0 && device < 64) cached[device].store(n);
  return n;
}

int compute_major(int device) {
  static std::atomic<int> cached[64] = {};
  if (device < 0 || device >= 64) return 0;
  if (!cached[device].load()) {
    int m = 0;
    MLXCEL_CUDA_CHECK(cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, device));
    cached[device].store(m);
  }
  return cached[device].load();
}

namespace {
// Off by default until measured on an H100 (docs/cuda.md): MLXCEL_CUDA_PDL=1 turns it on.
std::atomic<bool> g_pdl{[] {
  const char* e = std::getenv("MLXCEL_CUDA_PDL");
  return e && e[0] == '1';
}()};
}  // namespace

bool pdl_on() { return g_pdl.load(std::memory_order_relaxed) && compute_major(current_device()) >= 9; }
bool set_pdl(bool on) { return g_pdl.exchange(on); }

void* scratch(size_t bytes, int slot) {
  MLXCEL_CHECK(slot >= 0 && slot < kScratchSlots, "scratch slot {}", slot);
  const int dev = current_device();
  std::lock_guard<std::mutex> lk(g_mu);
  DeviceState& s = state_locked(dev);
  if (s.scratch_bytes[slot] < bytes) {
    // A recorded graph holds the scratch pointers: growing inside a capture would hand
    // it memory freed at its next launch, and growing afterwards makes it stale.
    if (capturing(dev)) throw_internal("scratch buffer growth while recording a CUDA graph");
    g_scratch_generation.fetch_add(1);
    if (s.scratch[slot]) MLXCEL_CUDA_CHECK(cudaFreeAsync(s.scratch[slot], s.stream));
    s.scratch[slot] = nullptr;
    s.scratch_bytes[slot] = 0;
    const size_t n = bytes < 4096 ? 4096 : bytes + bytes / 4;
    MLXCEL_CUDA_CHECK(cudaMallocAsync(&s.scratch[slot], n, s.stream));
    s.scratch_bytes[slot] = n;
  }
  return s.scratch[slot];
}

void init() {
  std::call_once(g_init_once, [] {
    Allocator a;
    a.alloc = [](size_t n) { return device_alloc(n); };
    a.free = [](void* p) { device_free(p); };
    register_allocator(DeviceType::cuda, std::move(a));
  });
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

bool available() { return device_count() > 0; }

bool memory_info(int index, size_t* free_bytes, size_t* total_bytes, std::string* name) {
  if (index < 0 || index >= device_count()) return false;
  DeviceGuard guard(index);
  if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  if (name) {
    cudaDeviceProp p{};
    *name = cudaGetDeviceProperties(&p, index) == cudaSuccess ? std::string(p.name) : "GPU " + std::to_string(index);
  }
  return true;
}

void synchronize(Device d) {
  init();
  MLXCEL_CUDA_CHECK(cudaStreamSynchronize(stream_of(d.index)));
}

size_t pool_reserved_bytes(Device d) {
  cudaMemPool_t pool;
  MLXCEL_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, d.index));
  uint64_t v = 0;
  MLXCEL_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &v));
  return size_t(v);
}

Tensor to_device(const Tensor& x, Device device) {
  init();
  const Device from = x.device();
  if (from.type == DeviceType::cpu && device.type == DeviceType::cpu) {
    Tensor out = Tensor::empty(x.shape(), x.dtype(), device);
    cpu::copy_strided(x, out);
    return out;
  }
  if (from.type == DeviceType::cpu) {  // host -> device
    // A recorded graph would replay the bytes of this moment (or read freed host memory):
    // values that change per step must come from a device buffer the caller refreshes.
    if (capturing(device.index)) throw_internal("host-to-device upload while recording a CUDA graph");
    Tensor src = x.is_contiguous() ? x : x.clone();
    DeviceGuard g(device.index);
    Tensor out = Tensor::empty(x.shape(), x.dtype(), device);
    cudaStream_t st = stream_of(device.index);
    // NOTE: from pageable memory, cudaMemcpyAsync returns once the bytes sit in a staging
    // buffer, so the host tensor may be freed at once; no wait for the device.
    if (src.nbytes()) MLXCEL_CUDA_CHECK(cudaMemcpyAsync(out.raw(), src.raw(), src.nbytes(), cudaMemcpyHostToDevice, st));
    return out;
  }
  DeviceGuard g(from.index);
  Tensor src = x;
  if (!x.is_contiguous()) {
    src = Tensor::empty(x.shape(), x.dtype(), from);
    copy_strided(x, src);
  }
  cudaStream_t st = stream_of(from.index);
  if (device.type == DeviceType::cpu) {  // device -> host
    Tensor out = Tensor::empty(x.shape(), x.dtype(), device);
    if (src.nbytes()) MLXCEL_CUDA_CHECK(cudaMemcpyAsync(out.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToHost, st));
    MLXCEL_CUDA_CHECK(cudaStreamSynchronize(st));
    return out;
  }
  if (device.index == from.index) {
    Tensor out = Tensor::empty(x.shape(), x.dtype(), device);
    if (src.nbytes()) MLXCEL_CUDA_CHECK(cudaMemcpyAsync(out.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, st));
    return out;
  }
  Tensor out;
  {
    DeviceGuard g2(device.index);
    out = Tensor::empty(x.shape(), x.dtype(), device);
  }
  // Peer copy ordered after the source's stream; the destination's stream waits for it.
  if (src.nbytes()) MLXCEL_CUDA_CHECK(cudaMemcpyPeerAsync(out.raw(), device.index, src.raw(), from.index, src.nbytes(), st));
  MLXCEL_CUDA_CHECK(cudaStreamSynchronize(st));
  return out;
}

Tensor on_device_i32(const Tensor& t, int device) {
  if (t.device().type == DeviceType::cuda && t.device().index == device && t.is_contiguous()) return t;
  return to_device(t, Device::cuda(device));
}

// ---- CUDA graphs ------------------------------------------------------------------
struct GraphExec {
  cudaGraphExec_t exec = nullptr;
  int device = 0;
  uint64_t scratch_generation = 0;
  ~GraphExec() {
    if (exec) (void)cudaGraphExecDestroy(exec);
  }
};

namespace {
std::atomic<uint64_t> g_capturing{0};  // bit d: device d's stream is being captured
}  // namespace

bool capturing(int device) { return device >= 0 && device < 64 && ((g_capturing.load() >> device) & 1u); }

std::shared_ptr<GraphExec> capture_graph(int device, const std::function<void()>& fn) {
  init();
  if (device < 0 || device >= 64) throw_invalid("capture_graph: bad device index");
  DeviceGuard guard(device);
  cudaStream_t st = stream_of(device);
  MLXCEL_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed));
  g_capturing.fetch_or(uint64_t(1) << device);
  cudaGraph_t graph = nullptr;
  try {
    fn();
  } catch (...) {
    g_capturing.fetch_and(~(uint64_t(1) << device));
    (void)cudaStreamEndCapture(st, &graph);
    if (graph) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    throw;
  }
  g_capturing.fetch_and(~(uint64_t(1) << device));
  MLXCEL_CUDA_CHECK(cudaStreamEndCapture(st, &graph));
  auto g = std::make_shared<GraphExec>();
  g->device = device;
  g->scratch_generation = g_scratch_generation.load();
  const cudaError_t e = cudaGraphInstantiateWithFlags(&g->exec, graph, cudaGraphInstantiateFlagAutoFreeOnLaunch);
  (void)cudaGraphDestroy(graph);
  MLXCEL_CUDA_CHECK(e);
  return g;
}

bool graph_stale(const GraphExec& g) { return g.scratch_generation != g_scratch_generation.load(); }

void launch_graph(const GraphExec& g) {
  DeviceGuard guard(g.device);
  MLXCEL_CUDA_CHECK(cudaGraphLaunch(g.exec, stream_of(g.device)));
}

void copy_from_host(Tensor& dst, const Tensor& src) {
  init();
  if (dst.device().type != DeviceType::cuda || src.device().type != DeviceType::cpu || dst.dtype() != src.dtype() ||
      dst.numel() != src.numel() || !dst.is_contiguous())
    throw_invalid("copy_from_host: dst must be a contiguous CUDA tensor and src a host tensor of its dtype and size");
  const Tensor s = src.is_contiguous() ? src : src.clone();
  DeviceGuard guard(dst.device().index);
  MLXCEL_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), s.raw(), s.nbytes(), cudaMemcpyHostToDevice, stream_of(dst.device().index)));
}

// ---- queued device -> host copies (decode loops)
struct Readback {
  int device = 0;
  size_t bytes = 0;
  void* host = nullptr;
  cudaEvent_t done = nullptr;
  bool pending = false;
  ~Readback() {
    if (done) (void)cudaEventDestroy(done);
    if (host) (void)cudaFreeHost(host);
  }
};

std::shared_ptr<Readback> make_readback(int device, size_t bytes) {
  init();
  DeviceGuard guard(device);
  auto r = std::make_shared<Readback>();
  r->device = device;
  r->bytes = bytes;
  MLXCEL_CUDA_CHECK(cudaMallocHost(&r->host, bytes > 0 ? bytes : 1));
  MLXCEL_CUDA_CHECK(cudaEventCreateWithFlags(&r->done, cudaEventDisableTiming));
  return r;
}

void readback_start(Readback& r, const void* src, size_t bytes) {
  if (bytes > r.bytes) throw_invalid(fmt::format("readback: {} bytes into a buffer of {}", bytes, r.bytes));
  DeviceGuard guard(r.device);
  cudaStream_t st = stream_of(r.device);
  MLXCEL_CUDA_CHECK(cudaMemcpyAsync(r.host, src, bytes, cudaMemcpyDeviceToHost, st));
  MLXCEL_CUDA_CHECK(cudaEventRecord(r.done, st));
  r.pending = true;
}

const void* readback_wait(Readback& r) {
  if (r.pending) {
    MLXCEL_CUDA_CHECK(cudaEventSynchronize(r.done));
    r.pending = false;
  }
  return r.host;
}

// ---- per-op GPU time
namespace {

struct ProfileState {
  std::mutex mu;
  bool on = [] {
    const char* e = std::getenv("MLXCEL_CUDA_PROFILE");
    return e && e[0] == '1';
  }();
  struct Span {
    const char* op;
    cudaEvent_t a, b;
  };
  std::vector<Span> spans;
  std::vector<cudaEvent_t> free_events;
  cudaEvent_t take() {
    if (!free_events.empty()) {
      cudaEvent_t e = free_events.back();
      free_events.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    MLXCEL_CUDA_CHECK(cudaEventCreate(&e));
    return e;
  }
};

ProfileState& profile_state() {
  static ProfileState* s = new ProfileState();  // leaked: used from static destructors' time
  return *s;
}

}  // namespace

bool profiling() { return profile_state().on; }
void set_profiling(bool on) { profile_state().on = on; }

OpTimer::OpTimer(const char* op) {
  ProfileState& ps = profile_state();
  if (!ps.on || device_count() == 0) return;
  const int dev = current_device();
  if (capturing(dev)) return;
  std::lock_guard<std::mutex> lk(ps.mu);
  cudaEvent_t e = ps.take();
  MLXCEL_CUDA_CHECK(cudaEventRecord(e, stream_of(dev)));
  op_ = op;
  start_ = e;
}

OpTimer::~OpTimer() {
  if (!op_) return;
  ProfileState& ps = profile_state();
  std::lock_guard<std::mutex> lk(ps.mu);
  cudaEvent_t e = ps.take();
  if (cudaEventRecord(e, current_stream()) != cudaSuccess) return;
  ps.spans.push_back({op_, static_cast<cudaEvent_t>(start_), e});
}

std::string profile_report(bool reset) {
  ProfileState& ps = profile_state();
  std::lock_guard<std::mutex> lk(ps.mu);
  struct Row {
    double ms = 0;
    int64_t n = 0;
  };
  std::unordered_map<std::string, Row> rows;
  double total = 0;
  for (const auto& sp : ps.spans) {
    float ms = 0;
    if (cudaEventSynchronize(sp.b) == cudaSuccess && cudaEventElapsedTime(&ms, sp.a, sp.b) == cudaSuccess) {
      rows[sp.op].ms += ms;
      rows[sp.op].n += 1;
      total += ms;
    }
  }
  std::vector<std::pair<std::string, Row>> sorted(rows.begin(), rows.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& x, const auto& y) { return x.second.ms > y.second.ms; });
  std::string out = "GPU time per op (ms, calls, us per call, share):\n";
  for (const auto& [op, r] : sorted) {
    char line[160];
    std::snprintf(line, sizeof line, "  %-22s %10.3f %8lld %9.2f %6.1f%%\n", op.c_str(), r.ms, (long long)r.n,
                  1e3 * r.ms / double(r.n), total > 0 ? 100.0 * r.ms / total : 0.0);
    out += line;
  }
  if (reset) {
    for (const auto& sp : ps.spans) ps.free_events.push_back(sp.a), ps.free_events.push_back(sp.b);
    ps.spans.clear();
  }
  return out;
}

}  // namespace mlxcel::cuda
