// Every family fixture on CUDA, against the same transformers references as the CPU test
// (tests/models/family_fixture_test.cpp): logits at every prompt position, 16 greedy
// tokens, MLX q4/q8 copies, a GGUF Q8_0/Q4_0 copy (run as MLX affine on the device), and
// the engine's device-side greedy sampling. Skips without a GPU.
#include <algorithm>
#include <optional>
#include <sstream>
#include <fstream>
#include <cmath>
#include <filesystem>
#include <map>

#include <gtest/gtest.h>

#include "backends/cuda/kernels.h"
#include "engine/decode_graphs.h"
#include "engine/engine.h"
#include "engine/model_runner.h"
#include "engine/generator.h"
#include "loader/config.h"
#include "loader/weights.h"
#include "models/convert.h"
#include "models/model.h"
#include "models/synthetic.h"
#include "ops/ops.h"
#include "../common/family_fixtures.h"
#include "test_util.h"

namespace mlxcel {
namespace {

namespace fs = std::filesystem;
using namespace testing_fixtures;

double check_model(Model& model, const Reference& ref, double tol, const std::string& what) {
  double worst = 0;
  for (size_t p = 0; p < ref.prompts.size(); ++p) {
    Generator gen(model, 64);
    Tensor logits = gen.prefill(ref.prompts[p], /*all_logits=*/true);
    EXPECT_EQ(logits.device().type, DeviceType::cpu);
    double err = rel_err(logits.to_f32_vector(), ref.logits[p]);
    worst = std::max(worst, err);
    EXPECT_LE(err, tol) << what << " prompt " << p << ": logits relative error " << err;
    gen.reset();
    auto tokens = gen.generate(ref.prompts[p], 16, SamplingParams{});
    EXPECT_EQ(tokens, ref.greedy[p]) << what << " prompt " << p << ": greedy tokens differ";
  }
  return worst;
}

class CudaFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaFamily, Fp32MatchesTransformers) {
  REQUIRE_GPU();
  const fs::path dir = fixtures_dir() / GetParam();
  auto model = load_model(dir.string(), Device::cuda());
  EXPECT_EQ(model->device(), Device::cuda());
  const double err = check_model(*model, load_reference(dir, "reference"), 1e-4, GetParam() + " fp32 cuda");
  std::printf("[cuda fixture] %-12s fp32 max rel err %.2e\n", GetParam().c_str(), err);
}

// The exact batch-1 GEMV for quantized weights (design 0: f32 activations) against the
// reference, whatever MLXCEL_CUDA_GEMV says (design 4 rounds activations to int8).
struct ExactQuantizedGemv {
  int previous = cuda::set_gemv_variants(1, 0);
  bool qmma = cuda::set_qgemm_mma(false);  // prompt rows (9..63) in f32, not bf16
  ~ExactQuantizedGemv() {
    cuda::set_gemv_variants(previous / 16, previous % 16);
    cuda::set_qgemm_mma(qmma);
  }
};

void check_quantized(const std::string& family, int bits) {
  ExactQuantizedGemv exact;
  QuantizedFixture q = quantized_fixture(family, bits);
  place_weights(q.weights, Device::cuda());
  auto model = build_model(q.config, q.weights);
  const double err =
      check_model(*model, load_reference(fixtures_dir() / family, q.stem), 1e-3, family + " " + q.stem + " cuda");
  std::printf("[cuda fixture] %-12s q%d max rel err %.2e\n", family.c_str(), bits, err);
}

TEST_P(CudaFamily, MlxQ4MatchesDequantizedReference) {
  REQUIRE_GPU();
  check_quantized(GetParam(), 4);
}
// 4- and 8-bit products of 2-64 rows in bf16 on the tensor cores (qgemm_mma, the default)
// against the f32 path on the q4 and q8 fixtures: prompt logits (19-23 rows) within bf16 rounding, which
// the tiny random-weight fixtures amplify (through 2-4 layers of random weights).
TEST_P(CudaFamily, MlxQuantTensorCoreRowsTrackExact) {
  REQUIRE_GPU();
  for (int bits : {4, 8}) {
  QuantizedFixture q = quantized_fixture(GetParam(), bits);
  place_weights(q.weights, Device::cuda());
  auto model = build_model(q.config, q.weights);
  Reference ref = load_reference(fixtures_dir() / GetParam(), q.stem);
  const bool before = cuda::set_qgemm_mma(true);
  for (size_t p = 0; p < ref.prompts.size(); ++p) {
    Generator on(*model, 64), off(*model, 64);
    const std::vector<float> a = on.prefill(ref.prompts[p], true).to_f32_vector();
    cuda::set_qgemm_mma(false);
    const std::vector<float> b = off.prefill(ref.prompts[p], true).to_f32_vector();
    cuda::set_qgemm_mma(true);
    const double err = rel_err(a, b);
    // Measured on an H100: 1.2-2.4e-2 for most families, 3.5e-2 gemma3_text, 4.9e-2
    // smollm3, 9.2e-2 gemma2 (soft-capped logits, embeddings scaled by sqrt(hidden)).
    EXPECT_LE(err, GetParam() == "gemma2" ? 1.5e-1 : 8e-2) << GetParam() << " q" << bits << " prompt " << p;
    std::printf("[cuda fixture] %-12s q%d bf16 tensor-core prompt %zu: rel err %.2e vs f32\n", GetParam().c_str(), bits,
                p, err);
  }
  cuda::set_qgemm_mma(before);
  }
}

TEST_P(CudaFamily, MlxQ8MatchesDequantizedReference) {
  REQUIRE_GPU();
  check_quantized(GetParam(), 8);
}

// The engine on CUDA: two requests batched together, greedy (argmax on the device),
// give the reference's greedy tokens.
TEST_P(CudaFamily, EngineGreedyOnTheDevice) {
  REQUIRE_GPU();
  const fs::path dir = fixtures_dir() / GetParam();
  auto model = load_model(dir.string(), Device::cuda());
  Reference ref = load_reference(dir, "reference");
  for (DType kv : {DType::f32, DType::bf16}) {
    EngineConfig ec;
    ec.n_blocks = 64;
    ec.block_size = 4;
    ec.kv_dtype = kv;
    Engine engine(*model, ec);
    std::vector<RequestId> ids;
    for (const auto& p : ref.prompts) ids.push_back(engine.open({.prompt = p, .max_tokens = 16}));
    std::map<RequestId, std::vector<int>> got;
    while (engine.has_work())
      for (const StepEvent& ev : engine.step()) {
        EXPECT_TRUE(ev.error.empty()) << ev.error;
        got[ev.id].insert(got[ev.id].end(), ev.new_tokens.begin(), ev.new_tokens.end());
      }
    for (size_t p = 0; p < ids.size(); ++p) {
      if (kv == DType::f32) {
        EXPECT_EQ(got[ids[p]], ref.greedy[p]) << GetParam() << " prompt " << p;
      } else {
        // A bf16 cache rounds K and V; the random-weight fixtures have near-ties that this
        // flips (gemma2's third token on the H100), so only the first two tokens, which
        // read little of the rounded cache, must agree.
        ASSERT_EQ(got[ids[p]].size(), 16u);
        EXPECT_EQ(std::vector<int>(got[ids[p]].begin(), got[ids[p]].begin() + 2),
                  std::vector<int>(ref.greedy[p].begin(), ref.greedy[p].begin() + 2))
            << GetParam() << " bf16 KV prompt " << p;
      }
    }
  }
}

// The engine on CUDA with sampling (temperature, top-k/p, min-p): the device samples
// (ops::sample); the same seeds give the same tokens in a second engine, and different
// seeds of a hot temperature give different ones.
TEST_P(CudaFamily, EngineSamplesOnTheDevice) {
  REQUIRE_GPU();
  const fs::path dir = fixtures_dir() / GetParam();
  auto model = load_model(dir.string(), Device::cuda());
  Reference ref = load_reference(dir, "reference");
  auto run = [&](uint64_t seed0) {
    EngineConfig ec;
    ec.n_blocks = 64;
    ec.block_size = 4;
    ec.kv_dtype = DType::bf16;
    Engine engine(*model, ec);
    std::vector<RequestId> ids;
    for (size_t p = 0; p < ref.prompts.size(); ++p) {
      GenerationRequest req;
      req.prompt = ref.prompts[p];
      req.max_tokens = 12;
      req.sampling.temperature = p % 2 ? 1.5f : 0.8f;
      req.sampling.top_p = p % 2 ? 1.0f : 0.9f;
      req.sampling.top_k = p % 2 ? 0 : 20;
      req.sampling.min_p = 0.02f;
      req.sampling.seed = seed0 + p;
      ids.push_back(engine.open(std::move(req)));
    }
    std::map<RequestId, std::vector<int>> got;
    while (engine.has_work())
      for (const StepEvent& ev : engine.step()) {
        EXPECT_TRUE(ev.error.empty()) << ev.error;
        got[ev.id].insert(got[ev.id].end(), ev.new_tokens.begin(), ev.new_tokens.end());
      }
    std::vector<std::vector<int>> out;
    for (RequestId id : ids) out.push_back(got[id]);
    return out;
  };
  const auto a = run(11), b = run(11), c = run(1000);
  EXPECT_EQ(a, b) << GetParam();
  EXPECT_NE(a, c) << GetParam();
  for (const auto& toks : a) {
    EXPECT_EQ(toks.size(), 12u);
    for (int t : toks) EXPECT_TRUE(t >= 0 && t < model->config().vocab_size);
  }
}

// Generator (the CLI's path) on CUDA with temperature and top-p samples on the device,
// graphs on and off: the same seed gives the same tokens, another seed others.
TEST_P(CudaFamily, GeneratorSamplesOnTheDevice) {
  REQUIRE_GPU();
  const fs::path dir = fixtures_dir() / GetParam();
  auto model = load_model(dir.string(), Device::cuda());
  Reference ref = load_reference(dir, "reference");
  SamplingParams sp;
  sp.temperature = 1.2f;
  sp.top_p = 0.95f;
  auto run = [&](uint64_t seed, bool graphs) {
    Generator gen(*model, 64);
    gen.set_graphs(graphs);
    SamplingParams p = sp;
    p.seed = seed;
    return gen.generate(ref.prompts[0], 12, p);
  };
  for (bool graphs : {false, true}) {
    const auto a = run(5, graphs), b = run(5, graphs), c = run(77, graphs);
    EXPECT_EQ(a, b) << GetParam() << " graphs " << graphs;
    EXPECT_NE(a, c) << GetParam() << " graphs " << graphs;
    ASSERT_EQ(a.size(), 12u);
    for (int t : a) EXPECT_TRUE(t >= 0 && t < model->config().vocab_size);
  }
  EXPECT_EQ(run(5, false), run(5, true)) << GetParam() << ": graph replay samples like the plain path";
}

// Greedy decoding on CUDA takes the argmax on the device (generate with temperature 0,
// decode_greedy): the tokens of the host's argmax over the copied logits, graphs on and off.
TEST_P(CudaFamily, GreedyArgmaxOnTheDeviceMatchesTheHost) {
  REQUIRE_GPU();
  const fs::path dir = fixtures_dir() / GetParam();
  auto model = load_model(dir.string(), Device::cuda());
  Reference ref = load_reference(dir, "reference");
  for (bool graphs : {false, true}) {
    Generator dev(*model, 64), host(*model, 64), step(*model, 64);
    dev.set_graphs(graphs), host.set_graphs(graphs), step.set_graphs(graphs);
    const std::vector<int> got = dev.generate(ref.prompts[0], 10, SamplingParams{});
    std::vector<float> l = host.prefill(ref.prompts[0]).to_f32_vector();
    std::vector<int> want;
    for (int i = 0; i < 10; ++i) {
      want.push_back(int(std::max_element(l.begin(), l.end()) - l.begin()));
      if (i + 1 < 10) l = host.decode(want.back()).to_f32_vector();
    }
    EXPECT_EQ(got, want) << GetParam() << " graphs " << graphs;
    std::vector<float> l0 = step.prefill(ref.prompts[0]).to_f32_vector();
    int tok = int(std::max_element(l0.begin(), l0.end()) - l0.begin());
    std::vector<int> stepped{tok};
    for (int i = 1; i < 10; ++i) stepped.push_back(tok = step.decode_greedy(tok));
    EXPECT_EQ(stepped, want) << GetParam() << " graphs " << graphs << " (decode_greedy)";
    // Stops: the step queued behind the stopping token is dropped (n_past counts the
    // prompt and the tokens fed, not the last one), by on_token and by a stop id.
    const int64_t P = int64_t(ref.prompts[0].size());
    Generator g(*model, 64);
    g.set_graphs(graphs);
    int seen = 0;
    const std::vector<int> four = g.generate(ref.prompts[0], 10, SamplingParams{}, [&](int) { return ++seen < 4; });
    EXPECT_EQ(four, std::vector<int>(want.begin(), want.begin() + 4)) << GetParam();
    EXPECT_EQ(g.n_past(), P + 3) << GetParam();
    g.reset();
    const size_t first = size_t(std::find(want.begin(), want.end(), want[6]) - want.begin());
    const std::vector<int> upto = g.generate(ref.prompts[0], 10, SamplingParams{}, nullptr, {want[6]});
    EXPECT_EQ(upto, std::vector<int>(want.begin(), want.begin() + ptrdiff_t(first) + 1)) << GetParam();
    EXPECT_EQ(g.n_past(), P + int64_t(first)) << GetParam();
    // Generating on from there (the dropped step's slot is written again) continues the
    // host's sequence: the same steps in the same order.
    const std::vector<int> on = g.generate(std::vector<int>{upto.back()}, 3, SamplingParams{});
    EXPECT_EQ(on, std::vector<int>(want.begin() + ptrdiff_t(first) + 1, want.begin() + ptrdiff_t(first) + 4))
        << GetParam() << " graphs " << graphs;
  }
}

// Decode steps replayed from a recorded CUDA graph give the logits of the plain path,
// across steps, a reset and a longer second prompt (which may move scratch buffers and
// so force a new recording).
TEST_P(CudaFamily, GraphDecodeMatchesPlainDecode) {
  REQUIRE_GPU();
  const fs::path dir = fixtures_dir() / GetParam();
  auto model = load_model(dir.string(), Device::cuda());
  Reference ref = load_reference(dir, "reference");
  bool eligible = true;
  for (const auto& [key, rope] : model->config().rope)
    if (rope.type == "dynamic" || rope.type == "longrope") eligible = false;
  Generator graphed(*model, 96), plain(*model, 96);
  graphed.set_graphs(true);
  plain.set_graphs(false);
  for (size_t p = 0; p < ref.prompts.size(); ++p) {
    graphed.reset();
    plain.reset();
    std::vector<float> a = graphed.prefill(ref.prompts[p]).to_f32_vector();
    std::vector<float> b = plain.prefill(ref.prompts[p]).to_f32_vector();
    for (int step = 0; step < 10; ++step) {
      ASSERT_EQ(a, b) << GetParam() << " prompt " << p << " step " << step;
      const int tok = int(std::max_element(b.begin(), b.end()) - b.begin());
      a = graphed.decode(tok).to_f32_vector();
      b = plain.decode(tok).to_f32_vector();
    }
    EXPECT_EQ(a, b) << GetParam() << " prompt " << p;
  }
  EXPECT_EQ(graphed.graph_recorded(), eligible) << GetParam();
  EXPECT_FALSE(plain.graph_recorded());
}

// S sequences of the reference prompts (each 0-2 tokens shorter than the last), kBlocks
// cache blocks each, all sampling: the engine-step tests' batch.
std::vector<ScheduledSeq> engine_test_seqs(const Reference& ref, int S, int blocks) {
  std::vector<ScheduledSeq> seqs(static_cast<size_t>(S));
  for (int i = 0; i < S; ++i) {
    ScheduledSeq& s = seqs[size_t(i)];
    s.id = i + 1;
    const auto& p = ref.prompts[size_t(i) % ref.prompts.size()];
    s.token_ids.assign(p.begin(), p.begin() + std::max<ptrdiff_t>(1, ptrdiff_t(p.size()) - i % 3));
    for (int b = 0; b < blocks; ++b) s.block_table.push_back(i * blocks + b);
    s.sample = true;
  }
  return seqs;
}

// The next decode step of seqs: each sequence's greedy token from its row of logits.
void advance_greedy(std::vector<ScheduledSeq>& seqs, const std::vector<float>& logits, int vocab) {
  for (size_t i = 0; i < seqs.size(); ++i) {
    ScheduledSeq& s = seqs[i];
    const float* row = logits.data() + i * size_t(vocab);
    s.start += int(s.token_ids.size());
    s.token_ids = {int(std::max_element(row, row + vocab) - row)};
  }
}

std::vector<float> on_host(const Tensor& t) { return ops::to_device(t, Device::cpu()).to_f32_vector(); }

// The engine's decode steps replayed from graphs bucketed by batch size (the rows padded
// up to 4 / 12 / 24 with rows that write a reserved block) give the plain steps' logits:
// 3, 11 and 24 sequences of different lengths, prefilled together, then 6 decode steps
// fed the same tokens. The padded products may take other kernels than the unpadded
// ones (GEMV up to 8 rows, cuBLAS beyond), so the logits agree to f32 rounding, not
// bit for bit.
TEST_P(CudaFamily, EngineDecodeGraphsMatchPlainSteps) {
  REQUIRE_GPU();
  const fs::path dir = fixtures_dir() / GetParam();
  auto model = load_model(dir.string(), Device::cuda());
  Reference ref = load_reference(dir, "reference");
  const bool eligible = DecodeGraphs::supported(*model);
  for (int S : {3, 11, 24}) {
    constexpr int kBlocks = 10, kBs = 4;  // 40 tokens a sequence
    ModelRunner graphed(*model, S * kBlocks, kBs, DType::f32, S * kBlocks * kBs);
    ModelRunner plain(*model, S * kBlocks, kBs, DType::f32, S * kBlocks * kBs);
    graphed.set_graphs(true);
    plain.set_graphs(false);
    std::vector<ScheduledSeq> seqs = engine_test_seqs(ref, S, kBlocks);
    std::vector<float> a = on_host(graphed.execute(seqs)), b = on_host(plain.execute(seqs));
    ASSERT_EQ(a, b) << GetParam() << " S " << S << ": prefill (plain in both)";
    const int vocab = model->config().vocab_size;
    for (int step = 0; step < 6; ++step) {
      advance_greedy(seqs, b, vocab);
      a = on_host(graphed.execute(seqs));
      b = on_host(plain.execute(seqs));
      ASSERT_EQ(a.size(), size_t(S) * vocab);
      const double err = rel_err(a, b);
      EXPECT_LE(err, 1e-5) << GetParam() << " S " << S << " step " << step;
    }
    if (eligible) EXPECT_GE(graphed.graphs_recorded(), 1) << GetParam() << " S " << S;
    else EXPECT_EQ(graphed.graphs_recorded(), 0) << GetParam() << " S " << S;
    EXPECT_EQ(plain.graphs_recorded(), 0);
  }
}

// Programmatic dependent launch (opt-in, sm_90: MLXCEL_CUDA_PDL=1) only lets a kernel start early
// and read its weights before the previous kernel ends: decode logits are the same bits
// with it off, for f32 and MLX q4 weights (dense and quantized GEMVs), plain and graphed
// Generator steps, and engine steps over a bf16 cache (the tensor-core decode attention)
// replayed from graphs.
TEST_P(CudaFamily, ProgrammaticLaunchKeepsDecodeBits) {
  REQUIRE_GPU();
  const fs::path dir = fixtures_dir() / GetParam();
  Reference ref = load_reference(dir, "reference");
  auto f32_model = load_model(dir.string(), Device::cuda());
  QuantizedFixture q = quantized_fixture(GetParam(), 4);
  place_weights(q.weights, Device::cuda());
  auto q4_model = build_model(q.config, q.weights);
  struct Restore {
    bool pdl = cuda::set_pdl(true);
    ~Restore() { cuda::set_pdl(pdl); }
  } restore;
  for (Model* model : {f32_model.get(), q4_model.get()}) {
    const std::string what = GetParam() + (model == q4_model.get() ? " q4" : " f32");
    for (bool graphs : {false, true}) {
      auto run = [&](bool pdl) {
        cuda::set_pdl(pdl);
        Generator gen(*model, 96);
        gen.set_graphs(graphs);
        std::vector<float> all = gen.prefill(ref.prompts[0]).to_f32_vector();
        std::vector<float> last = all;
        for (int step = 0; step < 8; ++step) {
          const int tok = int(std::max_element(last.begin(), last.end()) - last.begin());
          last = gen.decode(tok).to_f32_vector();
          all.insert(all.end(), last.begin(), last.end());
        }
        return all;
      };
      const std::vector<float> off = run(false), on = run(true);
      EXPECT_EQ(on, off) << what << (graphs ? " graphed" : " plain");
    }
    auto engine_steps = [&](bool pdl) {
      cuda::set_pdl(pdl);
      constexpr int S = 5, kBlocks = 10, kBs = 4;
      ModelRunner runner(*model, S * kBlocks, kBs, DType::bf16, S * kBlocks * kBs);
      runner.set_graphs(true);
      std::vector<ScheduledSeq> seqs = engine_test_seqs(ref, S, kBlocks);
      std::vector<float> all = on_host(runner.execute(seqs)), last = all;
      const int vocab = model->config().vocab_size;
      for (int step = 0; step < 5; ++step) {
        advance_greedy(seqs, last, vocab);
        last = on_host(runner.execute(seqs));
        all.insert(all.end(), last.begin(), last.end());
      }
      return all;
    };
    const std::vector<float> off = engine_steps(false), on = engine_steps(true);
    EXPECT_EQ(on, off) << what << " engine steps, bf16 cache";
  }
}

// place_weights puts the dense q/k/v of an attention block (and their biases) end to end
// in one device allocation, bytes unchanged; quantized or lone projections stay apart.
TEST(CudaPlaceWeights, ColocatesQkv) {
  REQUIRE_GPU();
  WeightMap w("test");
  const std::string a = "model.layers.0.self_attn.", b = "model.layers.1.self_attn.";
  std::map<std::string, Tensor> orig;
  auto add = [&](const std::string& name, Tensor t) { orig[name] = t, w.insert(name, t); };
  for (const char* p : {"q_proj", "k_proj", "v_proj"}) {
    add(a + p + ".weight", gputest::rand_host({std::string(p) == "q_proj" ? 32 : 8, 16}, DType::bf16));
    add(a + p + ".bias", gputest::rand_host({std::string(p) == "q_proj" ? 32 : 8}, DType::f32));
    add(b + p + ".weight", gputest::rand_host({8, 16}, DType::bf16));
  }
  add(b + "q_proj.scales", gputest::rand_host({8, 1}, DType::bf16));  // layer 1's q is "quantized": no colocation
  place_weights(w, Device::cuda());
  auto get = [&](const std::string& p, const char* s) { return w.get(p + s); };
  EXPECT_TRUE(Tensor::adjacent_rows({get(a, "q_proj.weight"), get(a, "k_proj.weight"), get(a, "v_proj.weight")}).defined());
  EXPECT_TRUE(Tensor::adjacent_rows({get(a, "q_proj.bias"), get(a, "k_proj.bias"), get(a, "v_proj.bias")}).defined());
  EXPECT_FALSE(Tensor::adjacent_rows({get(b, "q_proj.weight"), get(b, "k_proj.weight"), get(b, "v_proj.weight")}).defined());
  for (const auto& [name, t] : orig) {
    const Tensor& d = w.get(name);
    EXPECT_EQ(d.device(), Device::cuda()) << name;
    const Tensor h = ops::to_device(d, Device::cpu());
    ASSERT_EQ(h.nbytes(), t.nbytes()) << name;
    EXPECT_EQ(std::memcmp(h.raw(), t.raw(), t.nbytes()), 0) << name;
  }
}

// The tensor-core quantized GEMVs against the exact design on the same model: decode
// logits over 8 steps (the GEMV runs in decode; prefill takes the GEMM). Design 6 rounds
// the weights and x to f16; design 8 (4-bit only; 8-bit launches fall back to design 0)
// rounds x to bf16 and keeps the weights exact. The tiny random fixtures amplify
// rounding: design 6 1-8e-3 for most families on an H200, 1.6e-2 for gemma2 q8
// (soft-capped logits, embeddings scaled by sqrt(hidden)).
TEST_P(CudaFamily, TensorCoreQuantizedGemvTracksExactDecode) {
  REQUIRE_GPU();
  const bool qmma = cuda::set_qgemm_mma(false);  // both prefills in f32: only the decode design differs
  for (int design : {6, 8})
  for (int bits : {4, 8}) {
    QuantizedFixture q = quantized_fixture(GetParam(), bits);
    place_weights(q.weights, Device::cuda());
    auto model = build_model(q.config, q.weights);
    Reference ref = load_reference(fixtures_dir() / GetParam(), q.stem);
    double worst = 0;
    for (size_t p = 0; p < ref.prompts.size(); ++p) {
      Generator exact(*model, 64), mma(*model, 64);
      exact.set_graphs(false);  // the design is read at launch: no recorded graphs
      mma.set_graphs(false);
      const int before = cuda::set_gemv_variants(1, 0);
      std::vector<float> a = exact.prefill(ref.prompts[p]).to_f32_vector();
      cuda::set_gemv_variants(1, design);
      std::vector<float> b = mma.prefill(ref.prompts[p]).to_f32_vector();
      for (int step = 0; step < 8; ++step) {
        const int tok = int(std::max_element(a.begin(), a.end()) - a.begin());
        cuda::set_gemv_variants(1, 0);
        a = exact.decode(tok).to_f32_vector();
        cuda::set_gemv_variants(1, design);
        b = mma.decode(tok).to_f32_vector();
        const double err = rel_err(b, a);
        worst = std::max(worst, err);
        EXPECT_LT(err, 3e-2) << GetParam() << " design " << design << " q" << bits << " prompt " << p << " step "
                             << step;
      }
      cuda::set_gemv_variants(before / 16, before % 16);
    }
    std::printf("[cuda fixture] %-12s q%d design %d decode max rel err %.2e\n", GetParam().c_str(), bits, design,
                worst);
  }
  cuda::set_qgemm_mma(qmma);
}

INSTANTIATE_TEST_SUITE_P(All, CudaFamily, ::testing::ValuesIn(families()), [](const auto& info) { return info.param; });

// GGUF Q8_0 / Q4_0 blocks run on CUDA as their MLX affine transcoding: the same f32
// computation as the CPU's MLX kernels on the same transcoded weights. (The CPU's packed
// GGUF kernels quantize activations to int8 as llama.cpp does, so they differ more;
// tests/models/device_test.cpp bounds that.)
TEST(CudaGguf, TranscodedBlocksMatchTheCpu) {
  REQUIRE_GPU();
  ExactQuantizedGemv exact;
  const std::vector<int> prompt{3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5};
  for (const char* f : {"q8_0", "q4_0"}) {
    ModelConfig c = synthetic_config("tiny", f);
    WeightMap cpu_w = synthetic_weights(c, f);
    transcode_gguf_blocks(cpu_w);
    WeightMap gpu_w = cpu_w;
    place_weights(gpu_w, Device::cuda());
    auto a = build_model(c, cpu_w);
    auto b = build_model(c, gpu_w);
    Generator ga(*a, 32), gb(*b, 32);
    const double err = rel_err(gb.prefill(prompt, true).to_f32_vector(), ga.prefill(prompt, true).to_f32_vector());
    EXPECT_LT(err, 1e-4) << f;
  }
}

// A 2-layer Llama config.json whose shapes design 11 takes (hidden 512, intermediate 1024,
// heads of 128, vocabulary 512), written to the temp folder as `name`.
fs::path write_llama512_config(const char* name) {
  const fs::path cfg = fs::temp_directory_path() / name;
  std::ofstream out(cfg);
  out << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512,
    "hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 128, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
    "hidden_act": "silu", "tie_word_embeddings": false, "rope_theta": 500000.0})";
  return cfg;
}

// GGUF Q4_K as a device load gives it (GgufLoadOptions::affine_4bit: MLX affine 4-bit in
// groups of 32 with f32 scales and biases; synthetic format q4_k): on CUDA it tracks the
// CPU on the same weights, with the tests' exact products (1e-4) and with the defaults
// (design 11: x in f16 per group; prompt rows in bf16: 1e-2) over a prefill and four
// greedy steps.
TEST(CudaGguf, Q4_KAsMlxAffineTracksTheCpu) {
  REQUIRE_GPU();
  const fs::path cfg = write_llama512_config("mlxcel_q4k_llama.json");
  const std::vector<int> prompt{3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5};
  ModelConfig c = synthetic_config(cfg.string(), "q4_k");
  WeightMap cpu_w = synthetic_weights(c, "q4_k");
  WeightMap gpu_w = cpu_w;
  place_weights(gpu_w, Device::cuda());
  auto a = build_model(c, cpu_w);
  auto b = build_model(c, gpu_w);
  for (int variant : {0, 9}) {
    std::optional<ExactQuantizedGemv> exact;  // design 0, and f32 prompt rows (not bf16)
    if (variant == 0) exact.emplace();
    const int previous = cuda::set_gemv_variants(1, variant);
    Generator ga(*a, 64), gb(*b, 64);
    std::vector<float> want = ga.prefill(prompt).to_f32_vector();
    std::vector<float> got = gb.prefill(prompt).to_f32_vector();
    const double tol = variant == 0 ? 1e-4 : 1e-2;
    for (int step = 0; step < 4; ++step) {
      EXPECT_LT(rel_err(got, want), tol) << "variant " << variant << " step " << step;
      const int tok = int(std::max_element(want.begin(), want.end()) - want.begin());
      want = ga.decode(tok).to_f32_vector();
      got = gb.decode(tok).to_f32_vector();
    }
    cuda::set_gemv_variants(previous / 16, previous % 16);
  }
  fs::remove(cfg);
}

// A decoder whose shapes design 11 (the default GEMV) takes (hidden 512, heads of 128, no
// q/k norms): from the second layer on, a decode step's residual add and RMSNorm run
// inside the q/k/v and gate/up launches, and RoPE and the cache write in the q/k/v
// launch's epilogue. Its greedy decode on CUDA, plain and graphed, tracks the same steps
// with the folds off within the f16 rounding of x (1e-3) and the CPU's within the bf16
// KV cache's rounding (1e-2), and the profile of a plain step shows one rope_kv_write
// (layer 0) instead of two. The same for bf16 weights (the dense warp GEMV's folds).
TEST(CudaDecode, FoldedNormAndRopeTrackTheCpu) {
  REQUIRE_GPU();
  const fs::path cfg = write_llama512_config("mlxcel_fold_llama.json");
  const std::vector<int> prompt{3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5};
  for (const std::string f : {"q4", "q8", "bf16"}) {
    const std::string fold = f == "bf16" ? "add_rms_norm_linear" : "add_rms_norm_qlinear";
    ModelConfig c = synthetic_config(cfg.string(), f);
    WeightMap cpu_w = synthetic_weights(c, f);
    WeightMap gpu_w = cpu_w;
    place_weights(gpu_w, Device::cuda());
    auto a = build_model(c, cpu_w);
    auto b = build_model(c, gpu_w);
    const int previous = cuda::set_gemv_variants(1, 9);  // the default (tests run design 0)
    Generator ga(*a, 64), gb(*b, 64), gg(*b, 64), gu(*b, 64);
    gb.set_graphs(false);
    gg.set_graphs(true);
    gu.set_graphs(false);
    std::vector<float> want = ga.prefill(prompt).to_f32_vector();
    std::vector<float> got = gb.prefill(prompt).to_f32_vector();
    std::vector<float> graphed = gg.prefill(prompt).to_f32_vector();
    std::vector<float> unfolded = gu.prefill(prompt).to_f32_vector();
    for (int step = 0; step < 8; ++step) {
      EXPECT_LT(rel_err(got, unfolded), 1e-3) << f << " step " << step;
      EXPECT_LT(rel_err(graphed, unfolded), 1e-3) << f << " step " << step;
      EXPECT_LT(rel_err(got, want), 1e-2) << f << " step " << step;
      const int tok = int(std::max_element(want.begin(), want.end()) - want.begin());
      want = ga.decode(tok).to_f32_vector();
      const int folds = cuda::set_decode_folds(0);
      unfolded = gu.decode(tok).to_f32_vector();
      cuda::set_decode_folds(folds);
      const bool profile = step == 3;
      if (profile) {
        cuda::set_profiling(true);
        cuda::profile_report(true);
      }
      got = gb.decode(tok).to_f32_vector();
      if (profile) {
        const std::string report = cuda::profile_report(true);
        cuda::set_profiling(false);
        EXPECT_NE(report.find(fold + "_multi"), std::string::npos) << report;
        EXPECT_NE(report.find(fold + "_gated"), std::string::npos) << report;
        // rope_kv_write's row: "rope_kv_write <ms> <calls> ..." with one call (layer 0).
        const size_t at = report.find("rope_kv_write");
        ASSERT_NE(at, std::string::npos) << report;
        std::istringstream row(report.substr(at + std::string("rope_kv_write").size()));
        double ms = 0.0;
        int calls = 0;
        row >> ms >> calls;
        EXPECT_EQ(calls, 1) << report;
      }
      graphed = gg.decode(tok).to_f32_vector();
    }
    cuda::set_gemv_variants(previous / 16, previous % 16);
  }
  fs::remove(cfg);
}

// Copy-on-write of KV blocks on the device (ModelRunner::copy_blocks -> ops::copy_).
TEST(CudaCopy, InPlaceSliceCopy) {
  REQUIRE_GPU();
  Tensor host = Tensor::from_f32({3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor d = ops::to_device(host, Device::cuda());
  Tensor dst = d.slice(0, 0, 1);
  ops::copy_(dst, d.slice(0, 2, 3));
  EXPECT_EQ(ops::to_device(d, Device::cpu()).to_f32_vector(), (std::vector<float>{5, 6, 3, 4, 5, 6}));
}

}  // namespace
}  // namespace mlxcel
