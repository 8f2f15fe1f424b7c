// ggml's CPU mul_mat on the shapes gguf_bench kernel measures, for a side-by-side kernel
// check with llama.cpp on the same machine in the same minutes (issue 9). NOT built by
// CMake and not part of mlxcel: it needs ggml from the llama.cpp source that
// scripts/fetch_testdata.sh unpacks into .testdata/llama.cpp (never committed).
//
//   cmake -S .testdata/llama.cpp -B /tmp/llama-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
//     -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF \
//     -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
//     -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_APP=OFF
//   ninja -C /tmp/llama-build ggml ggml-cpu ggml-base          # about 2 minutes, -j1
//   g++ -O2 -std=c++17 -I.testdata/llama.cpp/ggml/include bench/ggml_matmul_bench.cpp \
//     -o /tmp/ggml_matmul_bench /tmp/llama-build/ggml/src/libggml{,-cpu,-base}.a -lpthread -ldl
//   NT=1 /tmp/ggml_matmul_bench <N> <K> <M> q4_0|q8_0 [repack]
//
// "repack" puts the weight in ggml's CPU_REPACK buffer type (what llama.cpp uses for
// Q4_0 on AVX2: rows interleaved 8 at a time). NT sets the threads (default 2); ggml's
// thread pool spins at its barriers, so on a loaded machine compare NT=1 with
// MLXCEL_NUM_THREADS=1 gguf_bench kernel.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

static double cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char** argv) {
  const int64_t N = atoll(argv[1]), K = atoll(argv[2]), M = atoll(argv[3]);
  const ggml_type type = std::string(argv[4]) == "q8_0" ? GGML_TYPE_Q8_0 : GGML_TYPE_Q4_0;
  const bool repack = argc > 5 && std::string(argv[5]) == "repack";
  ggml_backend_t be = ggml_backend_cpu_init();
  const int nt = getenv("NT") ? atoi(getenv("NT")) : 2;
  ggml_backend_cpu_set_n_threads(be, nt);
  ggml_threadpool_params tpp = ggml_threadpool_params_default(nt);
  ggml_threadpool* tp = ggml_threadpool_new(&tpp);
  ggml_backend_cpu_set_threadpool(be, tp);
  ggml_backend_dev_t dev = ggml_backend_get_device(be);
  ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
  auto fn = (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
  ggml_backend_buffer_type_t buft = ggml_backend_get_default_buffer_type(be);
  if (repack && fn) {
    ggml_backend_buffer_type_t* e = fn(dev);
    if (e && *e) buft = *e;
  }
  ggml_init_params wp = {ggml_tensor_overhead() * 4, nullptr, true};
  ggml_context* wctx = ggml_init(wp);
  ggml_tensor* W = ggml_new_tensor_2d(wctx, type, K, N);
  ggml_backend_buffer_t wbuf = ggml_backend_alloc_ctx_tensors_from_buft(wctx, buft);
  (void)wbuf;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 0.02f);
  std::vector<float> wf(size_t(N * K));
  for (auto& v : wf) v = nd(rng);
  std::vector<uint8_t> q(ggml_row_size(type, K) * N);
  ggml_quantize_chunk(type, wf.data(), q.data(), 0, N, K, nullptr);
  ggml_backend_tensor_set(W, q.data(), 0, q.size());
  ggml_init_params cp = {ggml_tensor_overhead() * 16 + ggml_graph_overhead(), nullptr, true};
  ggml_context* cctx = ggml_init(cp);
  ggml_tensor* X = ggml_new_tensor_2d(cctx, GGML_TYPE_F32, K, M);
  ggml_tensor* Y = ggml_mul_mat(cctx, W, X);
  ggml_cgraph* gf = ggml_new_graph(cctx);
  ggml_build_forward_expand(gf, Y);
  ggml_gallocr_t ga = ggml_gallocr_new(ggml_backend_get_default_buffer_type(be));
  ggml_gallocr_alloc_graph(ga, gf);
  std::vector<float> xf(size_t(M * K), 0.5f);
  for (auto& v : xf) v = nd(rng) * 50;
  ggml_backend_tensor_set(X, xf.data(), 0, xf.size() * 4);
  ggml_backend_graph_compute(be, gf);
  int reps = 0;
  const double c0 = cpu_s();
  auto t0 = std::chrono::steady_clock::now();
  double sec = 0;
  while (sec < 0.5 || reps < 3) {
    ggml_backend_graph_compute(be, gf);
    ++reps;
    sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double per = sec / reps, cpu = (cpu_s() - c0) / reps, flop = 2.0 * M * N * K;
  printf("ggml %s %s N=%lld K=%lld M=%lld: %8.3f ms  %6.1f GB/s  %6.1f GFLOP/s  (%.1f per CPU s)\n",
         type == GGML_TYPE_Q8_0 ? "Q8_0" : "Q4_0", ggml_backend_buft_name(buft), (long long)N, (long long)K,
         (long long)M, per * 1e3, q.size() / per / 1e9, flop / per / 1e9, flop / cpu / 1e9);
  return 0;
}
