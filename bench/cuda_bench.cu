// CUDA decode GEMV benchmark: the card's copy bandwidth, then y = x @ W^T for M = 1
// over the projections of one Llama-3.1-8B layer, with bf16, MLX q4 g64 and MLX q8 g64
// weights, each as a share of the measured bandwidth (same run). cuBLAS bf16 GEMV
// (x rounded to bf16) is the anchor. Then bf16 products of 16-64 rows (engine decode
// steps): cuBLASLt against skinny_gemm.cu.
//
//   cuda_bench [--reps N] [--skinny-only] [--only FMT] [--layers]   prints a markdown report
//   (--only q4: the copy bandwidth and the formats whose name contains FMT, no skinny section;
//   --layers: only the graphed-layers section, below)
//
// --layers: the four batch-1 launches of a Llama-3.1-8B decode layer as the model makes
// them (q/k/v as one 3-part launch, o, gate/up gated, down; MLX q4 / q8 g64, bf16 scales),
// 16 layers of their own weights captured in one CUDA graph and replayed, through the
// project's dispatch (design 11 unless MLXCEL_CUDA_QGEMV says otherwise): each launch alone
// (16 of it a graph), the layer, the layer with the residual add + RMSNorm folded in, and
// a plain read of the same bytes by resident blocks (the ceiling of any read), also as one
// launch a layer without and with grid barriers between the four parts (flat or a tree;
// 1,056 blocks of 256 threads or 264 of 1024: what a persistent chain of the products
// could gain; bench/results/cuda_models.md, session 28). The figure
// bench/qgemv_lab.cu gives for its standalone p16 form is the one to compare.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/cuda/kernels.h"
#include "backends/cuda/runtime.h"

using namespace mlxcel;

namespace {

__global__ void fill_random_u32(uint32_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    h *= 0x297a2d39u;
    h ^= h >> 15;
    p[i] = h;
  }
}

// Random 16-bit floats of small magnitude: a uniform mantissa, exponent fixed near 2^-3.
// f16: sign | 01100 | mantissa;  bf16: sign | 01111100 | mantissa.
__global__ void to_half_range(uint16_t* p, size_t n, bool bf16) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint16_t r = p[i];
    p[i] = bf16 ? uint16_t((r & 0x807f) | 0x3e00) : uint16_t((r & 0x83ff) | 0x3000);
  }
}

void fill(void* p, size_t bytes, uint32_t seed) {
  fill_random_u32<<<1024, 256, 0, cuda::current_stream()>>>(static_cast<uint32_t*>(p), bytes / 4, seed);
  MLXCEL_CUDA_LAUNCH_CHECK();
}

Tensor dev_random(const Shape& s, DType dt, uint32_t seed) {
  Tensor t = Tensor::empty(s, dt, Device::cuda());
  fill(t.raw(), t.nbytes(), seed);
  if (dt == DType::bf16 || dt == DType::f16) {
    to_half_range<<<1024, 256, 0, cuda::current_stream()>>>(static_cast<uint16_t*>(t.raw()), size_t(t.numel()),
                                                            dt == DType::bf16);
    MLXCEL_CUDA_LAUNCH_CHECK();
  }
  return t;
}

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    MLXCEL_CUDA_CHECK(cudaEventCreate(&a));
    MLXCEL_CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  // Median over `trials` of the mean time (ms) of `reps` calls of f(i).
  template <typename F>
  double median_ms(int trials, int reps, F&& f) {
    std::vector<double> v;
    cudaStream_t st = cuda::current_stream();
    for (int i = 0; i < 3; ++i) f(i);  // warm-up
    for (int t = 0; t < trials; ++t) {
      MLXCEL_CUDA_CHECK(cudaEventRecord(a, st));
      for (int i = 0; i < reps; ++i) f(i);
      MLXCEL_CUDA_CHECK(cudaEventRecord(b, st));
      MLXCEL_CUDA_CHECK(cudaEventSynchronize(b));
      float ms = 0;
      MLXCEL_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      v.push_back(double(ms) / reps);
    }
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }
};

// Words [begin, n) of p read grid-stride by this thread (4 loads in flight), XOR-ed into acc.
__device__ __forceinline__ void read_range(const uint4* __restrict__ p, size_t begin, size_t n, unsigned& acc) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = begin + blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = __ldg(p + i + j * stride);
#pragma unroll
    for (int j = 0; j < 4; ++j) acc ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = __ldg(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
}

// A plain read of n 16-byte words by resident blocks (each thread 4 loads in flight), the
// words XOR-ed into one store so the loads stay: the ceiling of any read of those bytes.
__global__ void __launch_bounds__(256) read_words(const uint4* __restrict__ p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  read_range(p, 0, n, acc);
  if (acc == 0x9E3779B9u) *sink = acc;
}

// A grid-wide barrier for kernels whose blocks are all resident (count returns to 0 at
// every barrier, gen counts them, so no reset between launches is needed).
__device__ __forceinline__ void grid_barrier(unsigned* count, unsigned* gen) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned g = *reinterpret_cast<volatile unsigned*>(gen);
    __threadfence();
    if (atomicAdd(count, 1u) == gridDim.x - 1) {
      *reinterpret_cast<volatile unsigned*>(count) = 0;
      __threadfence();
      atomicAdd(gen, 1u);
    } else {
      while (*reinterpret_cast<volatile unsigned*>(gen) == g) __nanosleep(32);
    }
    __threadfence();
  }
  __syncthreads();
}

// The same barrier as a two-level tree: blocks arrive on the counter of their group of
// kGroup (bar[2 + group]), the last of a group on the root (bar[1]), the last group bumps
// the generation (bar[0]); waiters spin on it without sleeping. Fewer arrivals a counter
// than grid_barrier's one counter for every block.
constexpr unsigned kGroup = 16;
__device__ __forceinline__ void grid_barrier_tree(unsigned* bar) {
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile unsigned* vbar = bar;
    const unsigned g = vbar[0];
    const unsigned grp = blockIdx.x / kGroup, ngroups = (gridDim.x + kGroup - 1) / kGroup;
    const unsigned in_grp = min(kGroup, gridDim.x - grp * kGroup);
    __threadfence();
    if (atomicAdd(bar + 2 + grp, 1u) == in_grp - 1) {
      vbar[2 + grp] = 0;
      __threadfence();
      if (atomicAdd(bar + 1, 1u) == ngroups - 1) {
        vbar[1] = 0;
        __threadfence();
        atomicAdd(bar, 1u);
      }
    }
    while (vbar[0] == g) {
    }
    __threadfence();
  }
  __syncthreads();
}

// The layer's four parts read by one launch of resident blocks of kThreads with a grid
// barrier between them (the ceiling of a persistent decode GEMV chain). kBarrier: 0 none
// (one read), 1 the flat barrier, 2 the tree, 3 the flat one with each thread's first 4
// words of the next part asked of L2 before it waits.
template <int kThreads, int kBarrier>
__global__ void __launch_bounds__(kThreads) read_chain(const uint4* __restrict__ p, const size_t* ends, int parts,
                                                       unsigned* sink, unsigned* bar) {
  unsigned acc = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x, me = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  size_t begin = 0;
  for (int k = 0; k < parts; ++k) {
    const size_t n = ends[k];
    read_range(p, begin, n, acc);
    if (k + 1 < parts) {
      if (kBarrier == 3)
        for (int j = 0; j < 4; ++j)
          if (n + me + j * stride < ends[k + 1]) asm volatile("prefetch.global.L2 [%0];" ::"l"(p + n + me + j * stride));
      if (kBarrier == 1 || kBarrier == 3) grid_barrier(bar, bar + 1);
      if (kBarrier == 2) grid_barrier_tree(bar);
    }
    begin = n;
  }
  if (acc == 0x9E3779B9u) *sink = acc;
}

// Section --layers (see the top of the file).
void graphed_layers(double bw, Timer& timer) {
  constexpr int L = 16;
  cudaStream_t st = cuda::current_stream();
  int sms = 0;
  MLXCEL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  std::printf("\n## Graphed decode layers (Llama-3.1-8B, %d layers a replay, batch 1)\n\n", L);
  std::printf("| format | launch | us a launch | %% of copy BW |\n| --- | --- | ---: | ---: |\n");
  const int64_t H = 4096, Q = 4096, KV = 1024, I = 14336;
  for (int bits : {4, 8}) {
    struct Mat {
      Tensor w, s, b;
      cpu::QuantMatrix q;
    };
    auto make = [&](int64_t N, int64_t K, uint32_t seed) {
      Mat m;
      m.w = dev_random({N, K * bits / 32}, DType::u32, seed);
      m.s = dev_random({N, K / 64}, DType::bf16, seed + 1);
      m.b = dev_random({N, K / 64}, DType::bf16, seed + 2);
      m.q = {m.w.data<uint32_t>(), m.s.raw(), m.b.raw(), DType::bf16, bits, 64, N, K};
      return m;
    };
    struct Layer {
      Mat q, k, v, o, gate, up, down;
    };
    std::vector<Layer> layers;
    for (int l = 0; l < L; ++l) {
      const uint32_t s0 = 1000 + 100 * uint32_t(l);
      layers.push_back({make(Q, H, s0), make(KV, H, s0 + 10), make(KV, H, s0 + 20), make(H, Q, s0 + 30),
                        make(I, H, s0 + 40), make(I, H, s0 + 50), make(H, I, s0 + 60)});
    }
    Tensor x = Tensor::empty({I}, DType::f32, Device::cuda()), h = Tensor::empty({H}, DType::f32, Device::cuda());
    Tensor sum = Tensor::empty({H}, DType::f32, Device::cuda()), y = Tensor::empty({3, I}, DType::f32, Device::cuda());
    Tensor nw = dev_random({H}, DType::bf16, 77), xb = dev_random({I}, DType::bf16, 78);
    cuda::convert(xb, x);
    cuda::convert(xb.slice(0, 0, H), h);
    float* yq = y.data<float>();
    float *yk = yq + Q, *yv = yk + KV;
    const cuda::RowNorm norm{h.data<float>(), nw.raw(), DType::bf16, 1e-5f, 0.0f, sum.data<float>()};
    auto mbytes = [&](const Mat& m) { return double(m.q.N) * m.q.K * (bits / 8.0 + 4.0 / 64); };
    // The lab's shapes: q/k/v as one 6144-row matrix, gate/up as one 28672-row matrix
    // (plain, not gated): what the multi-part and gated forms cost over single matrices.
    std::vector<Mat> qkv1, gu1;
    for (int l = 0; l < L; ++l) {
      qkv1.push_back(make(Q + 2 * KV, H, 5000 + 10 * uint32_t(l)));
      gu1.push_back(make(2 * I, H, 7000 + 10 * uint32_t(l)));
    }
    Tensor ybig = Tensor::empty({2 * I}, DType::f32, Device::cuda());
    enum { kQkv, kO, kGateUp, kDown, kLayer, kLayerNormed, kQkv1, kGateUp1, kLayer1 };
    auto issue = [&](const Layer& ly, int what) {
      const float* xp = x.data<float>();
      if (what == kQkv || what == kLayer)
        cuda::qlinear_multi(xp, 1, {ly.q.q, ly.k.q, ly.v.q}, {nullptr, nullptr, nullptr}, {yq, yk, yv});
      if (what == kLayerNormed &&
          !cuda::qlinear_multi_normed(xp, norm, {ly.q.q, ly.k.q, ly.v.q}, {nullptr, nullptr, nullptr}, {yq, yk, yv}))
        throw std::runtime_error("the norm fold declined q/k/v");
      if (what == kO || what >= kLayer) cuda::qlinear(xp, 1, ly.o.q, nullptr, yq);
      if (what == kGateUp || what == kLayer) cuda::qlinear_gated(xp, 1, ly.gate.q, ly.up.q, nullptr, nullptr, cpu::Act::silu, yq);
      if (what == kLayerNormed && !cuda::qlinear_gated_normed(xp, norm, ly.gate.q, ly.up.q, nullptr, nullptr, cpu::Act::silu, yq))
        throw std::runtime_error("the norm fold declined gate/up");
      if (what == kDown || (what >= kLayer && what <= kLayerNormed)) cuda::qlinear(xp, 1, ly.down.q, nullptr, yq);
    };
    auto issue1 = [&](int l, int what) {  // the lab's single matrices
      const float* xp = x.data<float>();
      if (what == kQkv1 || what == kLayer1) cuda::qlinear(xp, 1, qkv1[size_t(l)].q, nullptr, ybig.data<float>());
      if (what == kLayer1) cuda::qlinear(xp, 1, layers[size_t(l)].o.q, nullptr, yq);
      if (what == kGateUp1 || what == kLayer1) cuda::qlinear(xp, 1, gu1[size_t(l)].q, nullptr, ybig.data<float>());
      if (what == kLayer1) cuda::qlinear(xp, 1, layers[size_t(l)].down.q, nullptr, yq);
    };
    auto bytes_of = [&](const Layer& ly, int what) {
      const double qkv = mbytes(ly.q) + mbytes(ly.k) + mbytes(ly.v), gu = mbytes(ly.gate) + mbytes(ly.up);
      return what == kQkv || what == kQkv1 ? qkv
             : what == kO                  ? mbytes(ly.o)
             : what == kGateUp || what == kGateUp1 ? gu
             : what == kDown                       ? mbytes(ly.down)
                                                   : qkv + mbytes(ly.o) + gu + mbytes(ly.down);
    };
    auto replay_us = [&](auto&& body) {
      cudaGraph_t g;
      cudaGraphExec_t ge;
      MLXCEL_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
      body();
      MLXCEL_CUDA_CHECK(cudaStreamEndCapture(st, &g));
      MLXCEL_CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
      const double ms = timer.median_ms(11, 3, [&](int) { MLXCEL_CUDA_CHECK(cudaGraphLaunch(ge, st)); });
      MLXCEL_CUDA_CHECK(cudaGraphExecDestroy(ge));
      MLXCEL_CUDA_CHECK(cudaGraphDestroy(g));
      return ms * 1e3 / L;
    };
    const char* names[] = {"q/k/v (3 parts, 6144 x 4096)", "o 4096 x 4096", "gate/up (gated, 2 x 14336 x 4096)",
                           "down 4096 x 14336", "**layer** (the four)", "layer, norm folded into q/k/v and gate/up",
                           "q/k/v as one 6144 x 4096 matrix", "gate/up as one 28672 x 4096 matrix (not gated)",
                           "layer of the four single matrices (the lab's shapes)"};
    const std::string fmt = bits == 4 ? "mlx q4 g64" : "mlx q8 g64";
    for (int what = kQkv; what <= kLayer1; ++what) {
      const double us = replay_us([&] {
        for (int l = 0; l < L; ++l) what >= kQkv1 ? issue1(l, what) : issue(layers[size_t(l)], what);
      });
      const double b = bytes_of(layers[0], what);
      std::printf("| %s | %s | %.1f | %.1f%% |\n", fmt.c_str(), names[what], us, 100.0 * b / (us * 1e-6) / 1e9 / bw);
    }
    // The ceiling: a plain read of the layer's bytes in the four launches' sizes, from one
    // buffer a layer (bench/qgemv_lab.cu's "stream").
    Tensor sink = Tensor::empty({1}, DType::u32, Device::cuda());
    const Layer& l0 = layers[0];
    const double part[4] = {mbytes(l0.q) + mbytes(l0.k) + mbytes(l0.v), mbytes(l0.o), mbytes(l0.gate) + mbytes(l0.up),
                            mbytes(l0.down)};
    const double b = bytes_of(l0, kLayer);
    std::vector<Tensor> flat;
    for (int l = 0; l < L; ++l) flat.push_back(dev_random({int64_t(b / 16) + 4, 4}, DType::u32, 9000 + uint32_t(l)));
    const double us = replay_us([&] {
      for (const Tensor& fl : flat) {
        const uint4* p = static_cast<const uint4*>(fl.raw());
        for (double pb : part) {
          const size_t n = size_t(pb / 16);
          read_words<<<unsigned(std::min<size_t>(size_t(sms) * 8, (n + 255) / 256)), 256, 0, st>>>(p, n, sink.data<unsigned>());
          p += n;
        }
      }
    });
    std::printf("| %s | plain read of the layer's bytes (4 launches of the four's sizes) | %.1f | %.1f%% |\n", fmt.c_str(),
                us, 100.0 * b / (us * 1e-6) / 1e9 / bw);
    // The same bytes as one launch a layer: no barrier (one read), and the four parts with a
    // grid barrier between them, without and with an L2 prefetch of the next part.
    Tensor ends_t = Tensor::empty({8}, DType::i64, Device::cuda()), bar = Tensor::empty({2}, DType::u32, Device::cuda());
    MLXCEL_CUDA_CHECK(cudaMemset(bar.raw(), 0, 8));
    size_t ends_h[4], acc_n = 0;
    for (int k = 0; k < 4; ++k) ends_h[k] = acc_n += size_t(part[k] / 16);
    MLXCEL_CUDA_CHECK(cudaMemcpy(ends_t.raw(), ends_h, sizeof ends_h, cudaMemcpyHostToDevice));
    // 256-thread blocks (up to 8 an SM) and 1024-thread ones (two an SM: fewer arrivals).
    int per_sm = 0, big_per_sm = 0;
    MLXCEL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, read_chain<256, 3>, 256, 0));
    MLXCEL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&big_per_sm, read_chain<1024, 2>, 1024, 0));
    Tensor tree = Tensor::empty({64}, DType::u32, Device::cuda());
    MLXCEL_CUDA_CHECK(cudaMemset(tree.raw(), 0, 64 * 4));
    struct ChainForm {
      int threads, barrier;
      const char* name;
    };
    const ChainForm forms[] = {{256, 0, "one launch a layer, no barrier"},
                               {256, 1, "one launch a layer, grid barrier between the four"},
                               {256, 3, "one launch a layer, barriers, next part's first words prefetched to L2"},
                               {1024, 0, "one launch a layer, 1024-thread blocks, no barrier"},
                               {1024, 1, "one launch a layer, 1024-thread blocks, flat barriers"},
                               {1024, 2, "one launch a layer, 1024-thread blocks, tree barriers"}};
    const size_t* ends = static_cast<const size_t*>(ends_t.raw());
    for (const ChainForm& f : forms) {
      const unsigned grid = unsigned(sms * (f.threads == 256 ? std::min(per_sm, 8) : std::min(big_per_sm, 2)));
      unsigned* words = f.barrier == 2 ? tree.data<unsigned>() : bar.data<unsigned>();
      const size_t* e = f.barrier == 0 ? ends + 3 : ends;
      const int parts = f.barrier == 0 ? 1 : 4;
      const double cus = replay_us([&] {
        for (const Tensor& fl : flat) {
          const uint4* p = static_cast<const uint4*>(fl.raw());
          unsigned* sk = sink.data<unsigned>();
          if (f.threads == 256 && f.barrier == 0) read_chain<256, 0><<<grid, 256, 0, st>>>(p, e, parts, sk, words);
          if (f.threads == 256 && f.barrier == 1) read_chain<256, 1><<<grid, 256, 0, st>>>(p, e, parts, sk, words);
          if (f.threads == 256 && f.barrier == 3) read_chain<256, 3><<<grid, 256, 0, st>>>(p, e, parts, sk, words);
          if (f.threads == 1024 && f.barrier == 0) read_chain<1024, 0><<<grid, 1024, 0, st>>>(p, e, parts, sk, words);
          if (f.threads == 1024 && f.barrier == 1) read_chain<1024, 1><<<grid, 1024, 0, st>>>(p, e, parts, sk, words);
          if (f.threads == 1024 && f.barrier == 2) read_chain<1024, 2><<<grid, 1024, 0, st>>>(p, e, parts, sk, words);
        }
      });
      std::printf("| %s | plain read, %s (%u blocks) | %.1f | %.1f%% |\n", fmt.c_str(), f.name, grid, cus,
                  100.0 * b / (cus * 1e-6) / 1e9 / bw);
    }
  }
  std::printf("\nus a launch (a layer for the layer rows): median of 11 replays of 3 graph launches, / %d.\n", L);
}

struct Shape2 {
  const char* name;
  int64_t N, K;
  int count;  // matrices of this shape per layer
};

}  // namespace

int main(int argc, char** argv) {
  int reps = 40;
  bool skinny_only = false, layers_only = false, profile = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--reps" && i + 1 < argc) reps = std::atoi(argv[i + 1]);
    if (std::string(argv[i]) == "--skinny-only") skinny_only = true;
    if (std::string(argv[i]) == "--only" && i + 1 < argc) only = argv[i + 1];
    if (std::string(argv[i]) == "--layers") layers_only = true;
    if (std::string(argv[i]) == "--profile") profile = true;
  }
  try {
    cuda::init();
    if (!cuda::available()) {
      std::printf("no CUDA device\n");
      return 1;
    }
    cudaDeviceProp prop{};
    MLXCEL_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    if (profile) {
      // For a profiler (ncu --kernel-name regex:qgemv_rf): five plain launches each of the
      // o (4096 x 4096) and q/k/v (3 parts) batch-1 products, MLX q4 g64, bf16 scales.
      auto mat = [&](int64_t N, int64_t K, uint32_t seed, std::vector<Tensor>& keep) {
        keep.push_back(dev_random({N, K / 8}, DType::u32, seed));
        keep.push_back(dev_random({N, K / 64}, DType::bf16, seed + 1));
        keep.push_back(dev_random({N, K / 64}, DType::bf16, seed + 2));
        const size_t n = keep.size();
        return cpu::QuantMatrix{keep[n - 3].data<uint32_t>(), keep[n - 2].raw(), keep[n - 1].raw(), DType::bf16, 4, 64, N, K};
      };
      std::vector<Tensor> keep;
      const cpu::QuantMatrix o = mat(4096, 4096, 1, keep), q = mat(4096, 4096, 11, keep), k = mat(1024, 4096, 21, keep),
                             v = mat(1024, 4096, 31, keep);
      Tensor xb = dev_random({4096}, DType::bf16, 5), x = Tensor::empty({4096}, DType::f32, Device::cuda());
      cuda::convert(xb, x);
      Tensor y = Tensor::empty({3, 4096}, DType::f32, Device::cuda());
      float* yp = y.data<float>();
      for (int i = 0; i < 5; ++i) cuda::qlinear(x.data<float>(), 1, o, nullptr, yp);
      for (int i = 0; i < 5; ++i)
        cuda::qlinear_multi(x.data<float>(), 1, {q, k, v}, {nullptr, nullptr, nullptr}, {yp, yp + 4096, yp + 5120});
      cuda::synchronize();
      std::printf("profile launches done\n");
      return 0;
    }
    Timer timer;
    cudaStream_t st = cuda::current_stream();

    // 1. Bandwidth: a 2 GiB device-to-device copy, bytes read + written.
    const size_t copy_bytes = size_t(2) << 30;
    Tensor src = Tensor::empty({int64_t(copy_bytes)}, DType::u8, Device::cuda());
    Tensor dst = Tensor::empty({int64_t(copy_bytes)}, DType::u8, Device::cuda());
    fill(src.raw(), copy_bytes, 1);
    const double copy_ms = timer.median_ms(7, 5, [&](int) {
      MLXCEL_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), copy_bytes, cudaMemcpyDeviceToDevice, st));
    });
    const double bw = 2.0 * double(copy_bytes) / (copy_ms * 1e-3) / 1e9;  // GB/s
    src = Tensor();
    dst = Tensor();
    if (layers_only) {
      std::printf("device: %s, %d SMs; copy bandwidth (2 GiB D2D, read + write): %.0f GB/s\n", prop.name,
                  prop.multiProcessorCount, bw);
      graphed_layers(bw, timer);
      cuda::synchronize();
      return 0;
    }

    std::printf("## CUDA decode GEMV (M = 1), Llama-3.1-8B layer shapes\n\n");
    std::printf("device: %s, %d SMs, L2 %d MB\n\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
    std::printf("copy bandwidth (2 GiB D2D, read + write): %.0f GB/s (%.3f ms)\n\n", bw, copy_ms);
    std::printf("| matrix | N x K | format | MB moved | us | GB/s | %% of copy BW |\n");
    std::printf("| --- | --- | --- | ---: | ---: | ---: | ---: |\n");

    const Shape2 shapes[] = {{"q_proj/o_proj", 4096, 4096, 2},
                             {"k_proj/v_proj", 1024, 4096, 2},
                             {"gate_proj/up_proj", 14336, 4096, 2},
                             {"down_proj", 4096, 14336, 1}};
    const char* formats[] = {"bf16", "mlx q4 g64", "mlx q8 g64", "cuBLAS bf16"};
    for (int f = 0; f < (skinny_only ? 0 : 4); ++f) {
      if (!only.empty() && std::string(formats[f]).find(only) == std::string::npos) continue;
      double layer_us = 0, layer_bytes = 0;
      for (const Shape2& s : shapes) {
        const int bits = f == 1 ? 4 : 8;
        const bool quant = f == 1 || f == 2;
        const double wbytes = quant ? double(s.N) * s.K * bits / 8 + 2.0 * s.N * (s.K / 64) * 2 : double(s.N) * s.K * 2;
        const double bytes = wbytes + double(s.K) * (f == 3 ? 2 : 4) + double(s.N) * 4;
        // Enough copies that the rotation does not fit in L2 (>= 256 MB in all).
        const int copies = std::max(2, int(256e6 / wbytes) + 1);
        std::vector<Tensor> ws, ss, bs;
        std::vector<cpu::QuantMatrix> qm;
        for (int c = 0; c < copies; ++c) {
          if (quant) {
            ws.push_back(dev_random({s.N, s.K * bits / 32}, DType::u32, 100 + c));
            ss.push_back(dev_random({s.N, s.K / 64}, DType::f16, 200 + c));
            bs.push_back(dev_random({s.N, s.K / 64}, DType::f16, 300 + c));
            qm.push_back({ws.back().data<uint32_t>(), ss.back().raw(), bs.back().raw(), DType::f16, bits, 64, s.N, s.K});
          } else {
            ws.push_back(dev_random({s.N, s.K}, DType::bf16, 100 + c));
          }
        }
        Tensor x = dev_random({1, s.K}, DType::bf16, 7);
        Tensor x32 = Tensor::empty({1, s.K}, DType::f32, Device::cuda());
        cuda::convert(x, x32);
        Tensor y = Tensor::empty({1, s.N}, DType::f32, Device::cuda());
        const float one = 1.0f, zero = 0.0f;
        const double ms = timer.median_ms(5, reps, [&](int i) {
          const int c = i % copies;
          if (quant) {
            cuda::qlinear(x32.data<float>(), 1, qm[size_t(c)], nullptr, y.data<float>());
          } else if (f == 0) {
            cuda::linear(x32, ws[size_t(c)], Tensor(), y);
          } else {
            MLXCEL_CUBLAS_CHECK(cublasGemmEx(cuda::cublas_handle(0), CUBLAS_OP_T, CUBLAS_OP_N, int(s.N), 1, int(s.K),
                                             &one, ws[size_t(c)].raw(), CUDA_R_16BF, int(s.K), x.raw(), CUDA_R_16BF,
                                             int(s.K), &zero, y.raw(), CUDA_R_32F, int(s.N), CUBLAS_COMPUTE_32F,
                                             CUBLAS_GEMM_DEFAULT));
          }
        });
        const double gbs = bytes / (ms * 1e-3) / 1e9;
        std::printf("| %s | %lld x %lld | %s | %.1f | %.1f | %.0f | %.1f%% |\n", s.name, (long long)s.N,
                    (long long)s.K, formats[f], bytes / 1e6, ms * 1e3, gbs, 100.0 * gbs / bw);
        layer_us += ms * 1e3 * s.count;
        layer_bytes += bytes * s.count;
      }
      const double gbs = layer_bytes / (layer_us * 1e-6) / 1e9;
      std::printf("| **layer (7 matrices)** | | %s | %.1f | %.1f | %.0f | **%.1f%%** |\n", formats[f], layer_bytes / 1e6,
                  layer_us, gbs, 100.0 * gbs / bw);
    }
    std::printf("\nEach row: median of 5 trials of the mean over %d calls, rotating over enough weight copies to\n"
                "defeat the L2; bytes = weights (+ scales and biases) + x + y. One launch per call, no graph.\n",
                reps);

    // 2. Skinny products (an engine step of M sequences), bf16 weights and x, f32 y:
    // cuBLAS(Lt) against the weight-streaming kernel (skinny_gemm.cu), same weights.
    if (!only.empty()) {
      cuda::synchronize();
      return 0;
    }
    std::printf("\n## bf16 products of M = 16 / 32 / 64 rows (engine decode steps): cuBLASLt vs skinny_gemm\n\n");
    std::printf("| matrix | N x K | M | cuBLASLt us | %% of copy BW | skinny us | %% of copy BW | speed-up |\n");
    std::printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (int64_t M : {16, 32, 64}) {
      double layer[2] = {0, 0}, layer_bytes = 0;
      for (const Shape2& s : shapes) {
        const double bytes = double(s.N) * s.K * 2 + double(M) * s.K * 2 + double(M) * s.N * 4;
        const int copies = std::max(2, int(256e6 / (double(s.N) * s.K * 2)) + 1);
        std::vector<Tensor> ws;
        for (int c = 0; c < copies; ++c) ws.push_back(dev_random({s.N, s.K}, DType::bf16, 500 + c));
        Tensor x = dev_random({M, s.K}, DType::bf16, 9);
        Tensor y = Tensor::empty({M, s.N}, DType::f32, Device::cuda());
        double us[2];
        for (int k = 0; k < 2; ++k) {
          const int old = cuda::set_skinny_gemm(k == 1 ? 2 : 0);
          us[k] = 1e3 * timer.median_ms(5, reps, [&](int i) { cuda::linear(x, ws[size_t(i % copies)], Tensor(), y); });
          cuda::set_skinny_gemm(old);
          layer[k] += us[k] * s.count;
        }
        layer_bytes += bytes * s.count;
        auto pct = [&](double t) { return 100.0 * bytes / (t * 1e-6) / 1e9 / bw; };
        std::printf("| %s | %lld x %lld | %lld | %.1f | %.1f%% | %.1f | %.1f%% | %.2fx |\n", s.name, (long long)s.N,
                    (long long)s.K, (long long)M, us[0], pct(us[0]), us[1], pct(us[1]), us[0] / us[1]);
      }
      auto pct = [&](double t) { return 100.0 * layer_bytes / (t * 1e-6) / 1e9 / bw; };
      std::printf("| **layer (7 matrices)** | | %lld | %.1f | %.1f%% | %.1f | **%.1f%%** | %.2fx |\n", (long long)M,
                  layer[0], pct(layer[0]), layer[1], pct(layer[1]), layer[0] / layer[1]);
    }
    cuda::synchronize();
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  return 0;
}
