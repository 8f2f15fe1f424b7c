// Engine, ModelRunner and AsyncEngine with a fake model (no weights): the fake stores
// each token id in its KV slot and derives the logits from what it reads back through
// the block table, so batching, paging, prefix hits and preemption must all preserve
// every sequence's exact history for the generated tokens to match.
// NOTE: designated initializers leave the other fields defaulted on purpose.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <algorithm>
#include <cmath>
#include <chrono>
#include <map>
#include <thread>

#include <gtest/gtest.h>

#include "base/error.h"
#include "engine/async_engine.h"
#include "engine/decode_graphs.h"
#include "engine/engine.h"

namespace mlxcel {
namespace {

constexpr int kVocab = 97;
constexpr int kPoison = 96;  // a sequence holding this token makes forward throw

int next_token(const std::vector<int>& seq) {
  uint64_t h = 1469598103934665603ull;
  for (int t : seq) h = (h ^ uint64_t(t + 1)) * 1099511628211ull;
  return int(h % (kVocab - 1));  // never the poison token
}

std::vector<int> expected(std::vector<int> seq, int n) {
  std::vector<int> out;
  for (int i = 0; i < n; ++i) out.push_back(next_token(seq)), seq.push_back(out.back());
  return out;
}

class FakeModel : public Model {
 public:
  FakeModel() {
    config_.vocab_size = kVocab;
    config_.max_position_embeddings = 256;
    kv_layers_.push_back({1, 1, 1, 0});
  }
  int forwards = 0;
  int sleep_ms = 0;  // per forward, to give other threads time to act
  Tensor forward(const Batch& b, KvCache& cache) override {
    ++forwards;
    if (sleep_ms) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
    const int T = int(b.token_ids.dim(0));
    const int32_t* ids = b.token_ids.data<int32_t>();
    const int32_t* pos = b.positions.data<int32_t>();
    const int32_t* slot = b.attn.slot_mapping.data<int32_t>();
    const int32_t* qs = b.attn.q_start.data<int32_t>();
    const int32_t* kvl = b.attn.kv_len.data<int32_t>();
    const int32_t* table = b.attn.block_table.data<int32_t>();
    const int64_t width = b.attn.block_table.dim(1);
    const int bs = b.attn.block_size;
    float* k = cache.k[0].data<float>();
    int64_t max_pos = 0;
    for (int i = 0; i < T; ++i) k[slot[i]] = float(ids[i]), max_pos = std::max<int64_t>(max_pos, pos[i]);
    if (max_pos != b.max_position) throw Error(ErrorKind::internal, "max_position mismatch");
    const int R = int(b.logit_rows.dim(0));
    Tensor logits = Tensor::zeros({R, kVocab}, DType::f32);
    for (int r = 0; r < R; ++r) {
      const int row = b.logit_rows.data<int32_t>()[r];
      int s = 0;
      while (qs[s + 1] <= row) ++s;
      const int p = kvl[s] - (qs[s + 1] - row);
      if (p != pos[row]) throw Error(ErrorKind::internal, "position mismatch");
      std::vector<int> seq;
      for (int t = 0; t <= p; ++t) seq.push_back(int(k[table[s * width + t / bs] * bs + t % bs]));
      if (std::count(seq.begin(), seq.end(), kPoison)) throw Error(ErrorKind::invalid_request, "poisoned sequence");
      logits.data<float>()[size_t(r) * kVocab + next_token(seq)] = 1.0f;
    }
    return logits;
  }
};

std::vector<int> prompt(int n, int seed) {
  std::vector<int> p;
  for (int i = 0; i < n; ++i) p.push_back((seed * 13 + i * 5) % (kVocab - 1));
  return p;
}

struct RunResult {
  std::map<RequestId, std::vector<int>> tokens;
  std::map<RequestId, StepEvent> last;
};

RunResult drive(Engine& e) {
  RunResult r;
  for (int i = 0; i < 10000 && e.has_work(); ++i)
    for (auto& ev : e.step()) {
      auto& t = r.tokens[ev.id];
      t.insert(t.end(), ev.new_tokens.begin(), ev.new_tokens.end());
      if (ev.finished) r.last[ev.id] = ev;
    }
  EXPECT_FALSE(e.has_work());
  return r;
}

void expect_all_free(const Engine& e) {
  const auto& pool = e.scheduler().kv().pool();
  pool.check_invariants();
  EXPECT_EQ(pool.n_free(), pool.n_blocks());
  EXPECT_EQ(e.scheduler().kv().n_tables(), 0);
}

TEST(Engine, BatchedPagedPreemptedAndCachedSequencesMatchAlone) {
  FakeModel model;
  EngineConfig cfg;
  cfg.block_size = 4;
  cfg.n_blocks = 24;
  cfg.max_num_batched_tokens = 16;
  Engine e(model, cfg);
  std::vector<std::vector<int>> ps;
  std::vector<int> n_out;
  std::vector<RequestId> ids;
  auto shared = prompt(10, 42);
  for (int i = 0; i < 12; ++i) {
    auto p = i % 2 ? prompt(3 + i * 3, i) : shared;
    if (i % 2 == 0) p.push_back(i);
    ps.push_back(p);
    n_out.push_back(4 + i % 5 * 3);
    ids.push_back(e.open({.prompt = p, .max_tokens = n_out.back()}));
  }
  RunResult r = drive(e);
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(r.tokens[ids[i]], expected(ps[i], n_out[i])) << i;
    EXPECT_EQ(r.last[ids[i]].reason, FinishReason::length);
  }
  EngineStats st = e.stats();
  EXPECT_GT(st.preemptions, 0);
  EXPECT_GT(st.prefix.hit_tokens, 0);
  EXPECT_EQ(st.failed_rows, 0);
  expect_all_free(e);
}

TEST(Engine, OpenRejectsBadRequestsClearly) {
  FakeModel model;
  Engine e(model, EngineConfig{.block_size = 4, .n_blocks = 16, .max_model_len = 32});
  EXPECT_EQ(e.max_model_len(), 32);
  auto expect_invalid = [&](GenerationRequest req, const std::string& needle) {
    try {
      e.open(std::move(req));
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const Error& err) {
      EXPECT_EQ(err.kind(), ErrorKind::invalid_request);
      EXPECT_NE(std::string(err.what()).find(needle), std::string::npos) << err.what();
    }
  };
  expect_invalid({.prompt = prompt(40, 1)}, "context holds 32");
  expect_invalid({.prompt = {}}, "empty");
  expect_invalid({.prompt = {1, 2, kVocab}}, "outside the vocabulary");
  expect_invalid({.prompt = {1, -1}}, "outside the vocabulary");
  expect_invalid({.prompt = {1, 2}, .max_tokens = 0}, "max_tokens");
  expect_invalid({.prompt = {1, 2}, .sampling = {.temperature = -1}}, "temperature");
  EXPECT_FALSE(e.has_work());
  expect_all_free(e);
}

TEST(Engine, CloseCancelsAndReportsIt) {
  FakeModel model;
  Engine e(model, EngineConfig{.block_size = 4, .n_blocks = 16});
  RequestId a = e.open({.prompt = prompt(6, 1), .max_tokens = 50});
  RequestId b = e.open({.prompt = prompt(6, 2), .max_tokens = 5});
  std::vector<int> b_tokens;
  for (int i = 0; i < 2; ++i)
    for (auto& ev : e.step())
      if (ev.id == b) b_tokens.insert(b_tokens.end(), ev.new_tokens.begin(), ev.new_tokens.end());
  EXPECT_TRUE(e.close(a));
  EXPECT_FALSE(e.close(a));
  EXPECT_FALSE(e.close(12345));
  RunResult r = drive(e);
  b_tokens.insert(b_tokens.end(), r.tokens[b].begin(), r.tokens[b].end());
  r.tokens[b] = b_tokens;
  EXPECT_EQ(r.last[a].reason, FinishReason::cancelled);
  EXPECT_EQ(r.tokens[b], expected(prompt(6, 2), 5));
  expect_all_free(e);
}

TEST(Engine, AFailingRowEndsOnlyItsRequest) {
  FakeModel model;
  Engine e(model, EngineConfig{.block_size = 4, .n_blocks = 32});
  RequestId good1 = e.open({.prompt = prompt(7, 1), .max_tokens = 6});
  RequestId bad = e.open({.prompt = {1, 2, kPoison, 4}, .max_tokens = 6});
  RequestId good2 = e.open({.prompt = prompt(9, 2), .max_tokens = 6});
  RunResult r = drive(e);
  EXPECT_EQ(r.last[bad].reason, FinishReason::error);
  EXPECT_NE(r.last[bad].error.find("poisoned"), std::string::npos);
  EXPECT_EQ(r.tokens[good1], expected(prompt(7, 1), 6));
  EXPECT_EQ(r.tokens[good2], expected(prompt(9, 2), 6));
  EXPECT_EQ(e.stats().failed_rows, 1);
  expect_all_free(e);
}

TEST(Engine, StopTokensEndARequest) {
  FakeModel model;
  Engine e(model, EngineConfig{.block_size = 4, .n_blocks = 32});
  auto exp = expected(prompt(5, 3), 8);
  RequestId a = e.open({.prompt = prompt(5, 3), .max_tokens = 8, .stop_token_ids = {exp[3]}});
  RunResult r = drive(e);
  const auto stop_at = std::find(exp.begin(), exp.end(), exp[3]) - exp.begin();
  EXPECT_EQ(r.tokens[a], std::vector<int>(exp.begin(), exp.begin() + stop_at + 1));
  EXPECT_EQ(r.last[a].reason, FinishReason::stop);
  expect_all_free(e);
}

TEST(Engine, SeededSamplingIsPerRequest) {
  FakeModel model;
  SamplingParams sp{.temperature = 3.0f, .seed = 1234};
  auto p = prompt(8, 5);
  std::vector<int> alone;
  {
    Engine e(model, EngineConfig{.block_size = 4, .n_blocks = 64});
    RequestId id = e.open({.prompt = p, .sampling = sp, .max_tokens = 12});
    alone = drive(e).tokens[id];
  }
  Engine e(model, EngineConfig{.block_size = 4, .n_blocks = 64, .max_num_batched_tokens = 8});
  for (int i = 0; i < 3; ++i) e.open({.prompt = prompt(5 + i, i), .sampling = {.temperature = 1.0f, .seed = uint64_t(i)}, .max_tokens = 9});
  RequestId id = e.open({.prompt = p, .sampling = sp, .max_tokens = 12});
  EXPECT_EQ(drive(e).tokens[id], alone);
  EXPECT_EQ(alone.size(), 12u);
  expect_all_free(e);
}

// Independent reference: log-softmax of a row in long double.
std::vector<double> log_softmax(const std::vector<float>& l) {
  long double mx = *std::max_element(l.begin(), l.end()), sum = 0;
  for (float x : l) sum += std::exp((long double)x - mx);
  std::vector<double> out;
  for (float x : l) out.push_back(double((long double)x - mx - std::log(sum)));
  return out;
}

TEST(Sampler, LogitBiasSteersAndLogprobsAreTheRawLogSoftmax) {
  std::vector<float> logits = {1.0f, 3.5f, -2.0f, 0.25f, 3.5f, -7.0f, 2.0f};
  const int V = int(logits.size());
  const auto ref = log_softmax(logits);
  // Greedy: argmax is 1 (ties -> lower id). A +100 bias on 5 makes it win, a -100 on 1 makes 4 win.
  EXPECT_EQ(Sampler(SamplingParams{}).sample(logits.data(), V, {}), 1);
  EXPECT_EQ(Sampler(SamplingParams{.logit_bias = {{5, 100.0f}}}).sample(logits.data(), V, {}), 5);
  EXPECT_EQ(Sampler(SamplingParams{.logit_bias = {{1, -100.0f}}}).sample(logits.data(), V, {}), 4);
  // Sampling with a huge bias on one token always picks it.
  Sampler hot(SamplingParams{.temperature = 1.0f, .seed = 7, .logit_bias = {{2, 100.0f}}});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(hot.sample(logits.data(), V, {}), 2);
  // Logprobs: of the raw logits (before bias), top-n by logit, ties lower id first.
  Sampler s(SamplingParams{.logit_bias = {{5, 100.0f}}, .logprobs = 3});
  TokenLogprobs lp;
  EXPECT_EQ(s.sample(logits.data(), V, {}, &lp), 5);
  EXPECT_EQ(lp.token, 5);
  EXPECT_NEAR(lp.logprob, ref[5], 1e-5);
  ASSERT_EQ(lp.top.size(), 3u);
  EXPECT_EQ(lp.top[0].token, 1);
  EXPECT_EQ(lp.top[1].token, 4);
  EXPECT_EQ(lp.top[2].token, 6);
  for (auto& t : lp.top) EXPECT_NEAR(t.logprob, ref[t.token], 1e-5);
  // logprobs = 0: only the chosen token; off (-1): untouched.
  Sampler zero(SamplingParams{.logprobs = 0});
  TokenLogprobs z;
  EXPECT_EQ(zero.sample(logits.data(), V, {}, &z), 1);
  EXPECT_NEAR(z.logprob, ref[1], 1e-5);
  EXPECT_TRUE(z.top.empty());
  TokenLogprobs untouched;
  Sampler(SamplingParams{}).sample(logits.data(), V, {}, &untouched);
  EXPECT_EQ(untouched.token, -1);
  // Validation.
  EXPECT_THROW((SamplingParams{.logit_bias = {{1, 100.5f}}}.validate()), Error);
  EXPECT_THROW((SamplingParams{.logit_bias = {{-1, 1.0f}}}.validate()), Error);
  EXPECT_THROW((SamplingParams{.logit_bias = {{1, NAN}}}.validate()), Error);
  EXPECT_THROW(SamplingParams{.logprobs = 21}.validate(), Error);
  EXPECT_NO_THROW((SamplingParams{.logit_bias = {{0, -100.0f}, {3, 100.0f}}, .logprobs = 20}.validate()));
}

TEST(Engine, LogprobsComeWithEveryTokenAndBiasIdsAreChecked) {
  FakeModel model;
  Engine e(model, EngineConfig{.block_size = 4, .n_blocks = 32});
  auto p = prompt(5, 3);
  // The fake model's logits are one-hot (1 at the next token, 0 elsewhere).
  const double lp_hit = 1.0 - std::log(std::exp(1.0) + (kVocab - 1));
  const double lp_miss = -std::log(std::exp(1.0) + (kVocab - 1));
  RequestId with = e.open({.prompt = p, .sampling = {.logprobs = 2}, .max_tokens = 6});
  RequestId without = e.open({.prompt = p, .max_tokens = 6});
  // A +100 bias on token 0 makes greedy pick it; its logprob stays the raw one.
  RequestId biased = e.open({.prompt = p, .sampling = {.logit_bias = {{0, 100.0f}}, .logprobs = 1}, .max_tokens = 3});
  std::map<RequestId, std::vector<TokenLogprobs>> lps;
  std::map<RequestId, std::vector<int>> toks;
  while (e.has_work())
    for (auto& ev : e.step()) {
      if (ev.id != without) EXPECT_EQ(ev.logprobs.size(), ev.new_tokens.size());
      if (ev.id == without) EXPECT_TRUE(ev.logprobs.empty());
      lps[ev.id].insert(lps[ev.id].end(), ev.logprobs.begin(), ev.logprobs.end());
      toks[ev.id].insert(toks[ev.id].end(), ev.new_tokens.begin(), ev.new_tokens.end());
    }
  EXPECT_EQ(toks[with], expected(p, 6));
  ASSERT_EQ(lps[with].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(lps[with][i].token, toks[with][i]);
    EXPECT_NEAR(lps[with][i].logprob, lp_hit, 1e-5);
    ASSERT_EQ(lps[with][i].top.size(), 2u);
    EXPECT_EQ(lps[with][i].top[0].token, toks[with][i]);
    EXPECT_NEAR(lps[with][i].top[1].logprob, lp_miss, 1e-5);
  }
  EXPECT_EQ(toks[biased], std::vector<int>({0, 0, 0}));
  for (auto& lp : lps[biased]) EXPECT_NEAR(lp.logprob, lp_miss, 1e-5);
  EXPECT_THROW(e.open({.prompt = p, .sampling = {.logit_bias = {{kVocab, 1.0f}}}}), Error);
  expect_all_free(e);
}

TEST(ModelRunner, BuildsTheFlatBatch) {
  FakeModel model;
  ModelRunner runner(model, 8, 4);
  ScheduledSeq a{.id = 1, .start = 0, .token_ids = {5, 6, 7}, .block_table = {3}, .sample = true};
  ScheduledSeq b{.id = 2, .start = 6, .token_ids = {9}, .block_table = {0, 5}, .sample = true};
  ScheduledSeq c{.id = 3, .start = 0, .token_ids = {1, 2, 3, 4, 5}, .block_table = {1, 2}, .sample = false};
  std::vector<const ScheduledSeq*> seqs{&a, &b, &c};
  Batch batch = runner.build_batch(seqs);
  auto vec = [](const Tensor& t) {
    return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
  };
  EXPECT_EQ(vec(batch.token_ids), (std::vector<int32_t>{5, 6, 7, 9, 1, 2, 3, 4, 5}));
  EXPECT_EQ(vec(batch.positions), (std::vector<int32_t>{0, 1, 2, 6, 0, 1, 2, 3, 4}));
  EXPECT_EQ(vec(batch.attn.q_start), (std::vector<int32_t>{0, 3, 4, 9}));
  EXPECT_EQ(vec(batch.attn.kv_len), (std::vector<int32_t>{3, 7, 5}));
  EXPECT_EQ(vec(batch.attn.block_table), (std::vector<int32_t>{3, 0, 0, 5, 1, 2}));
  EXPECT_EQ(vec(batch.attn.slot_mapping), (std::vector<int32_t>{12, 13, 14, 22, 4, 5, 6, 7, 8}));
  EXPECT_EQ(vec(batch.logit_rows), (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(batch.max_position, 6);
  EXPECT_EQ(batch.attn.block_size, 4);
  // A step of prompt chunks only still asks for one (ignored) logit row.
  std::vector<const ScheduledSeq*> chunk_only{&c};
  EXPECT_EQ(vec(runner.build_batch(chunk_only).logit_rows), (std::vector<int32_t>{4}));
  // Copy-on-write copies whole blocks of every layer.
  float* k = runner.cache().k[0].data<float>();
  for (int i = 0; i < 4; ++i) k[3 * 4 + i] = float(10 + i);
  runner.copy_blocks({{3, 6}});
  for (int i = 0; i < 4; ++i) EXPECT_EQ(k[6 * 4 + i], float(10 + i));
}

// Graph buckets: a batch is padded by at most a third of its bucket beyond 8 rows, every
// size has a bucket at least as big, and block tables grow in powers of two within
// [min, max] (never below what the step needs). (Replay itself is tested on a GPU:
// tests/gpu/cuda_family_test.cpp EngineDecodeGraphsMatchPlainSteps.)
TEST(DecodeGraphs, BucketsCoverEverySizeWithLittlePadding) {
  int prev = 0;
  for (int n = 1; n <= 1000; ++n) {
    const int b = DecodeGraphs::bucket_rows(n);
    EXPECT_GE(b, n);
    EXPECT_GE(b, prev);
    if (n > 8) EXPECT_LE(3 * (b - n), b) << n;
    prev = b;
  }
  EXPECT_EQ(DecodeGraphs::bucket_rows(1), 1);
  EXPECT_EQ(DecodeGraphs::bucket_rows(3), 4);
  EXPECT_EQ(DecodeGraphs::bucket_rows(9), 12);
  EXPECT_EQ(DecodeGraphs::bucket_rows(13), 16);
  EXPECT_EQ(DecodeGraphs::bucket_rows(17), 24);
  EXPECT_EQ(DecodeGraphs::bucket_rows(64), 64);
  EXPECT_EQ(DecodeGraphs::bucket_rows(65), 96);
  EXPECT_EQ(DecodeGraphs::bucket_rows(256), 256);
  EXPECT_EQ(DecodeGraphs::bucket_width(1, 1, 256), 1);
  EXPECT_EQ(DecodeGraphs::bucket_width(5, 1, 256), 8);
  EXPECT_EQ(DecodeGraphs::bucket_width(200, 1, 256), 256);
  EXPECT_EQ(DecodeGraphs::bucket_width(200, 1, 220), 220);
  EXPECT_EQ(DecodeGraphs::bucket_width(3, 100, 100), 100);
  EXPECT_EQ(DecodeGraphs::bucket_width(300, 1, 256), 300);
}

// On the CPU there are no graphs: the cache holds exactly the blocks asked for.
TEST(ModelRunner, NoPaddingBlockOnTheCpu) {
  FakeModel model;
  ModelRunner runner(model, 12, 4);
  EXPECT_EQ(runner.cache().n_blocks, 12);
  EXPECT_EQ(runner.graphs_recorded(), 0);
}

TEST(AsyncEngine, StreamsTokensFromManyThreadsAndCancels) {
  FakeModel model;
  AsyncEngine eng(model, EngineConfig{.block_size = 4, .n_blocks = 40, .max_num_batched_tokens = 16});
  EXPECT_THROW(eng.submit({.prompt = {}}), Error);
  constexpr int kThreads = 6;
  std::vector<std::vector<int>> got(kThreads);
  std::vector<FinishReason> reasons(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      auto stream = eng.submit({.prompt = prompt(4 + t * 3, t), .max_tokens = 5 + t});
      StepEvent ev;
      while (stream->next(ev)) {
        got[t].insert(got[t].end(), ev.new_tokens.begin(), ev.new_tokens.end());
        if (ev.finished) reasons[t] = ev.reason;
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(got[t], expected(prompt(4 + t * 3, t), 5 + t)) << t;
    EXPECT_EQ(reasons[t], FinishReason::length);
  }
  // A long request cancelled midway ends with cancelled.
  model.sleep_ms = 2;
  auto stream = eng.submit({.prompt = prompt(5, 9), .max_tokens = 200});
  StepEvent ev;
  ASSERT_TRUE(stream->next(ev));
  eng.cancel(stream->id());
  FinishReason last = FinishReason::none;
  while (stream->next(ev)) last = ev.reason;
  EXPECT_EQ(last, FinishReason::cancelled);
  eng.stop();
  EXPECT_THROW(eng.submit({.prompt = {1}}), Error);
}

TEST(AsyncEngine, StopEndsOpenStreams) {
  FakeModel model;
  auto eng = std::make_unique<AsyncEngine>(model, EngineConfig{.block_size = 4, .n_blocks = 40});
  auto stream = eng->submit({.prompt = prompt(5, 1), .max_tokens = 200});
  eng.reset();
  StepEvent ev;
  FinishReason last = FinishReason::none;
  while (stream->next(ev)) last = ev.reason;
  EXPECT_TRUE(last == FinishReason::cancelled || last == FinishReason::length);
}

}  // namespace
}  // namespace mlxcel
