// CPU kernel throughput against the machine's own read bandwidth, measured in the
// same run: GEMV (decode) and GEMM (prefill) for a 4096 x 4096 weight in bf16 and
// MLX q4 g64, plus paged attention decode.
//
//   cpu_kernels_bench [--threads N] [--seconds S] [--only SUBSTRING] [--shape NxK]
//
// GEMV is memory-bound, so its figure of merit is weight bytes streamed per second
// compared with a plain multi-threaded read of a buffer larger than the caches.
// "cold" cycles through enough weight copies to exceed the last-level cache.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "ops/ops.h"

using namespace mlxcel;
using Clock = std::chrono::steady_clock;

namespace {

double g_seconds = 1.0;
std::string g_only;  // run only the kernels whose label contains this

bool wanted(const std::string& label) { return g_only.empty() || label.find(g_only) != std::string::npos; }

// Median seconds per call of fn over repeated runs of about g_seconds in total.
double time_it(const std::function<void(int)>& fn) {
  fn(0);  // warm-up
  std::vector<double> t;
  const auto start = Clock::now();
  for (int i = 1; t.size() < 5 || std::chrono::duration<double>(Clock::now() - start).count() < g_seconds; ++i) {
    const auto a = Clock::now();
    fn(i);
    t.push_back(std::chrono::duration<double>(Clock::now() - a).count());
    if (t.size() > 10000) break;
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

Tensor random_f32(const Shape& shape, uint32_t seed) {
  Tensor t = Tensor::empty(shape, DType::f32);
  float* p = t.data<float>();
  uint32_t s = seed * 2654435761u + 1;
  for (int64_t i = 0; i < t.numel(); ++i) {
    s = s * 1664525u + 1013904223u;
    p[i] = float(int32_t(s >> 8) % 2001 - 1000) / 1000.0f;
  }
  return t;
}

// The paged-attention context of S sequences of L cached tokens each, in blocks of bs
// tokens scattered over the pool (block i of the table is pool block i * 7919 mod nb).
AttentionContext decode_context(int64_t S, int64_t L, int64_t bs) {
  const int64_t nb = S * L / bs;
  std::vector<int32_t> table(static_cast<size_t>(nb)), q_start, kv_len;
  for (int64_t i = 0; i < nb; ++i) table[size_t(i)] = int32_t((i * 7919) % nb);
  for (int64_t s = 0; s <= S; ++s) q_start.push_back(int32_t(s));
  for (int64_t s = 0; s < S; ++s) kv_len.push_back(int32_t(L));
  AttentionContext ctx;
  ctx.block_size = int(bs);
  ctx.q_start = Tensor::from_i32({S + 1}, q_start);
  ctx.kv_len = Tensor::from_i32({S}, kv_len);
  ctx.block_table = Tensor::from_i32({S, L / bs}, table);
  return ctx;
}

// Multi-threaded read of a buffer much larger than the caches (GB/s).
double read_bandwidth() {
  const int64_t n = int64_t(1) << 28;  // 1 GiB of floats
  std::vector<float> buf(size_t(n), 1.0f);
  std::vector<double> sums(size_t(ThreadPool::global().size() * 16));
  const double s = time_it([&](int) {
    ThreadPool::global().parallel_for(n, [&](int64_t b, int64_t e) {
      // 8 independent accumulators so the loop is load-bound, not add-latency-bound.
      float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t i = b; i + 8 <= e; i += 8)
        for (int k = 0; k < 8; ++k) a[k] += buf[size_t(i + k)];
      double t = 0;
      for (float v : a) t += v;
      sums[size_t(b * int64_t(sums.size()) / n)] = t;
    });
  });
  return double(n) * 4 / s / 1e9;
}

double memcpy_bandwidth() {
  const int64_t n = int64_t(1) << 29;  // 512 MiB each way
  std::vector<char> a(static_cast<size_t>(n), 1), b(static_cast<size_t>(n));
  const double s = time_it([&](int) {
    ThreadPool::global().parallel_for(n, [&](int64_t lo, int64_t hi) { std::memcpy(&b[size_t(lo)], &a[size_t(lo)], size_t(hi - lo)); },
                                      1 << 20);
  });
  return double(n) / s / 1e9;  // bytes read per second
}

void row(const std::string& what, const std::function<void(int)>& fn, double bytes, double flops, double read_gbs) {
  if (!wanted(what)) return;
  const double sec = time_it(fn);
  const double gbs = bytes / sec / 1e9;
  std::printf("| %-44s | %9.3f | %8.1f | %6.0f%% | %8.1f |\n", what.c_str(), sec * 1e3, gbs, 100.0 * gbs / read_gbs,
              flops / sec / 1e9);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t N = 4096, K = 4096;  // the products' N x K (--shape)
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) ThreadPool::set_global_threads(std::atoi(argv[++i]));
    if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) g_seconds = std::atof(argv[++i]);
    if (!std::strcmp(argv[i], "--only") && i + 1 < argc) g_only = argv[++i];
    if (!std::strcmp(argv[i], "--shape") && i + 1 < argc) std::sscanf(argv[++i], "%ldx%ld", &N, &K);
  }
  const std::string nk = std::to_string(N) + "x" + std::to_string(K);
  std::printf("threads: %d\n", ThreadPool::global().size());
  const double read_gbs = read_bandwidth();
  const double copy_gbs = memcpy_bandwidth();
  std::printf("read bandwidth (1 GiB, multi-threaded sum): %.1f GB/s\n", read_gbs);
  std::printf("memcpy bandwidth (512 MiB, bytes read/s):   %.1f GB/s\n\n", copy_gbs);
  std::printf("| %-44s | %9s | %8s | %7s | %8s |\n", "kernel", "ms/call", "GB/s", "of read", "GFLOP/s");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(11, '-').c_str(),
              std::string(10, '-').c_str(), std::string(9, '-').c_str(), std::string(10, '-').c_str());

  // bf16 weights: one hot copy, and enough copies (512 MiB) to miss the caches.
  const int n_copies = 16;
  std::vector<Tensor> wb;
  for (int c = 0; c < n_copies; ++c) wb.push_back(ops::astype(random_f32({N, K}, uint32_t(c)), DType::bf16));
  const double wbytes = double(N * K * 2);
  for (int64_t M : {1, 4, 8}) {
    Tensor x = random_f32({M, K}, 99);
    const std::string m = std::to_string(M);
    row("linear bf16 " + nk + " M=" + m + " (hot)", [&](int) { ops::linear(x, wb[0]); }, wbytes, 2.0 * M * N * K,
        read_gbs);
    row("linear bf16 " + nk + " M=" + m + " (cold)", [&](int i) { ops::linear(x, wb[size_t(i % n_copies)]); }, wbytes,
        2.0 * M * N * K, read_gbs);
  }
  for (int64_t M : {128, 512}) {
    Tensor x = random_f32({M, K}, 98);
    row("linear bf16 " + nk + " M=" + std::to_string(M) + " (GEMM)", [&](int) { ops::linear(x, wb[0]); }, wbytes,
        2.0 * M * N * K, read_gbs);
  }

  // MLX q4 g64 weights with bf16 scales: packed 8 MiB + scales/biases 1 MiB per copy.
  if (wanted("qlinear")) {
    // Enough copies (>= 576 MB) to miss the caches.
    const int q_copies = int(std::max<int64_t>(64, (int64_t(576) << 20) / (N * K * 9 / 16)));
    std::vector<QuantizedWeight> wq;
    for (int c = 0; c < q_copies; ++c)
      wq.push_back(ops::quantize(wb[size_t(c % n_copies)], {QuantFormat::mlx_affine, 4, 64}, DType::bf16));
    const double qbytes = double(wq[0].packed.nbytes() + wq[0].scales.nbytes() + wq[0].biases.nbytes());
    for (int64_t M : {1, 4, 8}) {
      Tensor x = random_f32({M, K}, 97);
      const std::string m = std::to_string(M);
      row("qlinear q4 g64 " + nk + " M=" + m + " (hot)", [&](int) { ops::qlinear(x, wq[0]); }, qbytes,
          2.0 * M * N * K, read_gbs);
      row("qlinear q4 g64 " + nk + " M=" + m + " (cold)", [&](int i) { ops::qlinear(x, wq[size_t(i % q_copies)]); },
          qbytes, 2.0 * M * N * K, read_gbs);
    }
    for (int64_t M : {48, 128, 512}) {  // 48: a short prompt, where a panel serves few rows
      Tensor x = random_f32({M, K}, 96);
      row("qlinear q4 g64 " + nk + " M=" + std::to_string(M) + " (GEMM)", [&](int) { ops::qlinear(x, wq[0]); }, qbytes,
          2.0 * M * N * K, read_gbs);
    }
    // 8-bit g64 at one row: hot against cold says whether the decode kernel or the memory
    // bounds it (session 25's lead for the MLX q8 copies, bench/results/gguf.md).
    wq.clear();
    const int q8_copies = int(std::max<int64_t>(32, (int64_t(576) << 20) / (N * K * 17 / 16)));
    for (int c = 0; c < q8_copies; ++c)
      wq.push_back(ops::quantize(wb[size_t(c % n_copies)], {QuantFormat::mlx_affine, 8, 64}, DType::bf16));
    const double q8bytes = double(wq[0].packed.nbytes() + wq[0].scales.nbytes() + wq[0].biases.nbytes());
    Tensor x1 = random_f32({1, K}, 95);
    row("qlinear q8 g64 " + nk + " M=1 (hot)", [&](int) { ops::qlinear(x1, wq[0]); }, q8bytes, 2.0 * N * K, read_gbs);
    row("qlinear q8 g64 " + nk + " M=1 (cold)", [&](int i) { ops::qlinear(x1, wq[size_t(i % q8_copies)]); }, q8bytes,
        2.0 * N * K, read_gbs);
  }

  // Paged attention decode of one sequence with Qwen3-0.6B's heads (16 q / 8 kv, d 128,
  // f16 cache): 2 query rows a kv head, the cache in the last-level cache at 512 tokens.
  for (const int64_t L : {int64_t(512), int64_t(4096)}) {
    const std::string label = "paged_attention decode 1x" + std::to_string(L) + " tok 16/8 heads f16 cache";
    if (!wanted(label)) continue;
    const int64_t bs = 16, Hq = 16, Hkv = 8, D = 128, nb = L / bs;
    Tensor kc = ops::astype(random_f32({nb, bs, Hkv, D}, 11), DType::f16);
    Tensor vc = ops::astype(random_f32({nb, bs, Hkv, D}, 12), DType::f16);
    const AttentionContext ctx = decode_context(1, L, bs);
    Tensor q = random_f32({1, Hq, D}, 6);
    AttentionParams p;
    p.scale = 0.088f;
    row(label, [&](int) { ops::paged_attention(q, kc, vc, ctx, p); }, double(2 * L * Hkv * D * 2), 4.0 * double(L * Hq * D),
        read_gbs);
  }

  // Paged attention decode: 8 sequences x 4096 cached tokens, 32 q heads / 8 kv heads, d 128, f32 cache.
  if (wanted("paged_attention")) {
    const int64_t S = 8, L = 4096, bs = 16, Hq = 32, Hkv = 8, D = 128;
    const int64_t nb = S * L / bs;
    Tensor kc = ops::zeros({nb, bs, Hkv, D}, DType::f32, Device::cpu());
    Tensor vc = ops::zeros({nb, bs, Hkv, D}, DType::f32, Device::cpu());
    const AttentionContext ctx = decode_context(S, L, bs);
    Tensor q = random_f32({S, Hq, D}, 5);
    AttentionParams p;
    p.scale = 0.088f;
    const double kv_bytes = double(2 * S * L * Hkv * D * 4);
    row("paged_attention decode 8x4096 tok f32 cache", [&](int) { ops::paged_attention(q, kc, vc, ctx, p); }, kv_bytes,
        4.0 * double(S * L * Hq * D), read_gbs);
  }
  return 0;
}
