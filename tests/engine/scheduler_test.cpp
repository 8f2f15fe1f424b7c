// Scheduler policy with a fake runner (no model): admission, chunked prefill,
// preemption and resume, eviction, cancellation, prefix hits, stop conditions, failed
// rows. The fake runner keeps a token per KV slot and derives the next token from what
// it reads back through the block table, so a wrong table, a bad prefix hit or a write
// into another sequence's block changes the generated tokens.
// NOTE: designated initializers leave the other fields defaulted on purpose.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <algorithm>
#include <map>

#include <gtest/gtest.h>

#include "base/error.h"
#include "engine/scheduler.h"

namespace mlxcel {
namespace {

constexpr int kVocab = 101;

int next_token(const std::vector<int>& seq) {
  uint64_t h = 1469598103934665603ull;
  for (int t : seq) h = (h ^ uint64_t(t + 1)) * 1099511628211ull;
  return int(h % kVocab);
}

std::vector<int> expected(std::vector<int> seq, int n) {
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(next_token(seq));
    seq.push_back(out.back());
  }
  return out;
}

std::vector<int> prompt(int n, int seed) {
  std::vector<int> p;
  for (int i = 0; i < n; ++i) p.push_back((seed * 31 + i * 7) % kVocab);
  return p;
}

class SchedulerTest : public ::testing::Test {
 protected:
  void make(SchedulerConfig sc, KvCacheConfig kc) {
    sched = std::make_unique<Scheduler>(sc, kc);
    slots.assign(size_t(kc.n_blocks) * kc.block_size, -1);
  }
  void TearDown() override {
    if (!sched) return;
    EXPECT_FALSE(sched->has_unfinished());
    sched->kv().pool().check_invariants();
    EXPECT_EQ(sched->kv().pool().n_free(), sched->kv().n_blocks()) << "blocks leaked";
    EXPECT_EQ(sched->kv().n_tables(), 0);
  }
  RequestId add(std::vector<int> tokens, int max_tokens, std::vector<int> stop = {}) {
    Request r;
    r.id = next_id;
    r.tokens = std::move(tokens);
    r.max_tokens = max_tokens;
    r.stop_token_ids = std::move(stop);
    sched->add_request(std::move(r));
    return next_id++;
  }
  // Runs the step through the fake cache; fail_ids get an error row.
  std::vector<RowResult> run(const SchedulerOutput& out, const std::vector<RequestId>& fail_ids = {}) {
    const int bs = sched->kv().block_size();
    for (const auto& s : out.seqs)
      for (size_t j = 0; j < s.token_ids.size(); ++j) {
        const int p = s.start + int(j);
        slots[size_t(s.block_table.at(p / bs)) * bs + p % bs] = s.token_ids[j];
      }
    std::vector<RowResult> rows;
    for (const auto& s : out.seqs) {
      if (std::count(fail_ids.begin(), fail_ids.end(), s.id)) {
        rows.push_back({s.id, -1, "injected failure"});
        continue;
      }
      if (!s.sample) continue;
      std::vector<int> seq;
      for (int p = 0; p < s.start + int(s.token_ids.size()); ++p)
        seq.push_back(slots[size_t(s.block_table.at(p / bs)) * bs + p % bs]);
      rows.push_back({s.id, next_token(seq), {}});
    }
    return rows;
  }
  // Steps until idle; returns the tokens and finish reason of every request.
  void run_all(int max_steps = 10000) {
    for (int step = 0; step < max_steps && sched->has_unfinished(); ++step) {
      SchedulerOutput out = sched->schedule();
      ASSERT_FALSE(out.empty()) << "no progress with unfinished requests";
      EXPECT_LE(out.n_tokens, sched->config().max_num_batched_tokens);
      EXPECT_LE(sched->n_running(), sched->config().max_num_seqs);
      n_preempted += int(out.preempted.size());
      for (auto& o : sched->update(out, run(out))) record(o);
      sched->kv().pool().check_invariants();
    }
    EXPECT_FALSE(sched->has_unfinished());
  }
  void record(const RequestOutput& o) {
    auto& t = tokens[o.id];
    t.insert(t.end(), o.new_tokens.begin(), o.new_tokens.end());
    if (o.finished) reasons[o.id] = o.reason;
  }

  std::unique_ptr<Scheduler> sched;
  std::vector<int> slots;
  RequestId next_id = 1;
  std::map<RequestId, std::vector<int>> tokens;
  std::map<RequestId, FinishReason> reasons;
  int n_preempted = 0;
};

TEST_F(SchedulerTest, RejectsBadRequests) {
  make({.max_num_seqs = 4, .max_num_batched_tokens = 64, .max_model_len = 32}, {16, 4, true});
  EXPECT_THROW(add({}, 4), Error);
  EXPECT_THROW(add(prompt(32, 1), 4), Error);  // no room for a generated token
  EXPECT_THROW(add(prompt(4, 1), 0), Error);
  try {
    add(prompt(40, 1), 4);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_request);
    EXPECT_NE(std::string(e.what()).find("40 tokens"), std::string::npos) << e.what();
  }
  // The pool caps the context too: 4 blocks of 4 = 16 tokens.
  make({.max_num_seqs = 4, .max_num_batched_tokens = 64, .max_model_len = 1000}, {4, 4, true});
  EXPECT_EQ(sched->max_len(), 16);
  EXPECT_THROW(add(prompt(16, 1), 4), Error);
}

TEST_F(SchedulerTest, SingleRequestGeneratesExpectedTokens) {
  make({.max_num_seqs = 4, .max_num_batched_tokens = 64, .max_model_len = 128}, {32, 4, true});
  auto p = prompt(10, 3);
  RequestId id = add(p, 8);
  SchedulerOutput first = sched->schedule();
  ASSERT_EQ(first.seqs.size(), 1u);
  EXPECT_EQ(first.seqs[0].token_ids.size(), 10u);
  EXPECT_TRUE(first.seqs[0].sample);
  for (auto& o : sched->update(first, run(first))) record(o);
  SchedulerOutput second = sched->schedule();
  ASSERT_EQ(second.seqs.size(), 1u);
  EXPECT_EQ(second.seqs[0].start, 10);
  EXPECT_EQ(second.seqs[0].token_ids.size(), 1u);  // a decode is one token
  for (auto& o : sched->update(second, run(second))) record(o);
  run_all();
  EXPECT_EQ(tokens[id], expected(p, 8));
  EXPECT_EQ(reasons[id], FinishReason::length);
}

TEST_F(SchedulerTest, AdmissionRespectsMaxNumSeqsAndFifo) {
  make({.max_num_seqs = 2, .max_num_batched_tokens = 256, .max_model_len = 128}, {64, 4, true});
  std::vector<std::vector<int>> ps;
  for (int i = 0; i < 5; ++i) ps.push_back(prompt(5 + i, i)), add(ps.back(), 3);
  SchedulerOutput out = sched->schedule();
  ASSERT_EQ(out.seqs.size(), 2u);
  EXPECT_EQ(out.seqs[0].id, 1);
  EXPECT_EQ(out.seqs[1].id, 2);
  EXPECT_EQ(sched->n_waiting(), 3);
  for (auto& o : sched->update(out, run(out))) record(o);
  run_all();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(tokens[i + 1], expected(ps[i], 3)) << i;
}

TEST_F(SchedulerTest, ChunkedPrefillInterleavesWithDecode) {
  make({.max_num_seqs = 4, .max_num_batched_tokens = 8, .max_model_len = 128}, {64, 4, true});
  auto pa = prompt(5, 1), pb = prompt(30, 2);
  RequestId a = add(pa, 10);
  SchedulerOutput s1 = sched->schedule();  // a's prompt (5) + 3 tokens of nothing else yet
  ASSERT_EQ(s1.seqs.size(), 1u);
  for (auto& o : sched->update(s1, run(s1))) record(o);
  RequestId b = add(pb, 4);
  // Now a decodes one token per step and b's prompt is chunked into the remaining 7.
  int chunks = 0;
  while (sched->has_unfinished()) {
    SchedulerOutput out = sched->schedule();
    EXPECT_LE(out.n_tokens, 8);
    for (const auto& s : out.seqs) {
      if (s.id == a) {
        EXPECT_EQ(s.token_ids.size(), 1u);
      }
      if (s.id == b && !s.sample) {
        ++chunks;
        EXPECT_EQ(s.token_ids.size(), 7u);
      }
    }
    for (auto& o : sched->update(out, run(out))) record(o);
  }
  EXPECT_EQ(chunks, 4);  // 7+7+7+7 then the last 2 tokens sample
  EXPECT_EQ(tokens[a], expected(pa, 10));
  EXPECT_EQ(tokens[b], expected(pb, 4));
}

TEST_F(SchedulerTest, WithoutChunkingAPromptWaitsForAFullBudget) {
  make({.max_num_seqs = 4, .max_num_batched_tokens = 8, .max_model_len = 64, .enable_chunked_prefill = false},
       {64, 4, true});
  EXPECT_THROW(add(prompt(9, 1), 2), Error);
  auto pa = prompt(6, 1), pb = prompt(6, 2);
  add(pa, 3);
  add(pb, 3);
  SchedulerOutput out = sched->schedule();
  ASSERT_EQ(out.seqs.size(), 1u);  // 6 + 6 > 8: b waits
  for (auto& o : sched->update(out, run(out))) record(o);
  run_all();
  EXPECT_EQ(tokens[1], expected(pa, 3));
  EXPECT_EQ(tokens[2], expected(pb, 3));
}

TEST_F(SchedulerTest, PreemptsNewestAndResumesWithTheSameTokens) {
  // 12 blocks of 4 = 48 slots; 4 requests of 6 + 14 tokens = 20 each need 5 blocks.
  make({.max_num_seqs = 8, .max_num_batched_tokens = 64, .max_model_len = 128}, {12, 4, false});
  std::vector<std::vector<int>> ps;
  for (int i = 0; i < 4; ++i) ps.push_back(prompt(6, 10 + i)), add(ps.back(), 14);
  run_all();
  EXPECT_GT(n_preempted, 0);
  EXPECT_GT(sched->n_preemptions(), 0);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(tokens[i + 1], expected(ps[i], 14)) << i;
    EXPECT_EQ(reasons[i + 1], FinishReason::length);
  }
}

TEST_F(SchedulerTest, PreemptionVictimIsTheNewestRunningRequest) {
  make({.max_num_seqs = 8, .max_num_batched_tokens = 64, .max_model_len = 128}, {6, 4, false});
  auto p1 = prompt(7, 1), p2 = prompt(7, 2), p3 = prompt(7, 3);
  add(p1, 12);
  add(p2, 12);
  add(p3, 12);
  SchedulerOutput out = sched->schedule();  // 2 blocks each
  ASSERT_EQ(out.seqs.size(), 3u);
  for (auto& o : sched->update(out, run(out))) record(o);
  out = sched->schedule();  // position 7 still fits the second block
  EXPECT_TRUE(out.preempted.empty());
  for (auto& o : sched->update(out, run(out))) record(o);
  out = sched->schedule();  // position 8 needs a third block each: 9 > 6
  ASSERT_FALSE(out.preempted.empty());
  EXPECT_EQ(out.preempted[0], 3);
  EXPECT_EQ(sched->find(3)->n_computed, 0);
  EXPECT_EQ(sched->find(3)->status, RequestStatus::waiting);
  for (auto& o : sched->update(out, run(out))) record(o);
  run_all();
  EXPECT_EQ(tokens[1], expected(p1, 12));
  EXPECT_EQ(tokens[2], expected(p2, 12));
  EXPECT_EQ(tokens[3], expected(p3, 12));
}

TEST_F(SchedulerTest, PrefixHitsReuseBlocksAndCount) {
  make({.max_num_seqs = 4, .max_num_batched_tokens = 64, .max_model_len = 128}, {32, 4, true});
  auto shared = prompt(13, 5);
  RequestId a = add(shared, 4);
  run_all();
  auto pb = shared;
  pb.push_back(3);
  pb.push_back(9);  // 15 tokens: 3 full shared blocks
  RequestId b = add(pb, 4);
  SchedulerOutput out = sched->schedule();
  ASSERT_EQ(out.seqs.size(), 1u);
  EXPECT_EQ(out.seqs[0].start, 12);
  EXPECT_EQ(out.seqs[0].token_ids.size(), 3u);
  EXPECT_EQ(sched->find(b)->n_cached_prompt, 12);
  for (auto& o : sched->update(out, run(out))) record(o);
  run_all();
  EXPECT_EQ(tokens[a], expected(shared, 4));
  EXPECT_EQ(tokens[b], expected(pb, 4));
  const auto& st = sched->kv().stats();
  EXPECT_EQ(st.hit_tokens, 12);
  EXPECT_EQ(st.query_tokens, 13 + 15);
  EXPECT_EQ(st.hits, 3);
}

TEST_F(SchedulerTest, EvictsUnusedCachedBlocksWhenTheSpaceIsNeeded) {
  make({.max_num_seqs = 4, .max_num_batched_tokens = 64, .max_model_len = 64}, {8, 4, true});
  auto p1 = prompt(17, 1);
  add(p1, 2);  // 18 tokens -> 5 blocks, 4 cached afterwards
  run_all();
  EXPECT_EQ(sched->kv().pool().n_free(), 8);
  auto p2 = prompt(25, 2);  // needs 7 blocks: evicts cached ones
  RequestId b = add(p2, 3);
  run_all();
  EXPECT_EQ(tokens[b], expected(p2, 3));
  EXPECT_GT(sched->kv().stats().evictions, 0);
  // p1's blocks were freed tail first, so its later blocks were evicted first.
  RequestId c = add(p1, 2);
  SchedulerOutput out = sched->schedule();
  EXPECT_LT(out.seqs[0].start, 16);
  for (auto& o : sched->update(out, run(out))) record(o);
  run_all();
  EXPECT_EQ(tokens[c], expected(p1, 2));
}

TEST_F(SchedulerTest, CancellationFreesWaitingAndRunningRequests) {
  make({.max_num_seqs = 1, .max_num_batched_tokens = 64, .max_model_len = 64}, {16, 4, true});
  RequestId a = add(prompt(9, 1), 20);
  RequestId b = add(prompt(9, 2), 20);
  SchedulerOutput out = sched->schedule();
  for (auto& o : sched->update(out, run(out))) record(o);
  EXPECT_EQ(sched->n_running(), 1);
  EXPECT_TRUE(sched->finish_request(b, FinishReason::cancelled));  // waiting
  EXPECT_TRUE(sched->finish_request(a, FinishReason::cancelled));  // running
  EXPECT_FALSE(sched->finish_request(a, FinishReason::cancelled));
  EXPECT_FALSE(sched->has_unfinished());
  // Results for a request cancelled between schedule() and update() are dropped.
  RequestId c = add(prompt(5, 3), 4);
  out = sched->schedule();
  sched->finish_request(c, FinishReason::cancelled);
  EXPECT_TRUE(sched->update(out, run(out)).empty());
}

TEST_F(SchedulerTest, StopTokensAndModelLength) {
  make({.max_num_seqs = 4, .max_num_batched_tokens = 64, .max_model_len = 12}, {16, 4, true});
  auto p = prompt(6, 7);
  auto exp = expected(p, 6);
  RequestId a = add(p, 100, {exp[2]});
  RequestId b = add(prompt(8, 8), 100);
  run_all();
  EXPECT_EQ(tokens[a], std::vector<int>(exp.begin(), exp.begin() + 3));
  EXPECT_EQ(reasons[a], FinishReason::stop);
  EXPECT_EQ(tokens[b].size(), 4u);  // 8 + 4 = max_model_len
  EXPECT_EQ(reasons[b], FinishReason::length);
}

TEST_F(SchedulerTest, AFailedRowEndsOnlyItsRequest) {
  make({.max_num_seqs = 4, .max_num_batched_tokens = 64, .max_model_len = 64}, {16, 4, true});
  auto pa = prompt(6, 1), pb = prompt(6, 2);
  RequestId a = add(pa, 5);
  RequestId b = add(pb, 5);
  SchedulerOutput out = sched->schedule();
  for (auto& o : sched->update(out, run(out))) record(o);
  out = sched->schedule();
  for (auto& o : sched->update(out, run(out, {a}))) {
    record(o);
    if (o.id == a) {
      EXPECT_EQ(o.error, "injected failure");
    }
  }
  EXPECT_EQ(reasons[a], FinishReason::error);
  run_all();
  EXPECT_EQ(tokens[b], expected(pb, 5));
  EXPECT_EQ(tokens[a].size(), 1u);
}

TEST_F(SchedulerTest, ManyRequestsUnderPressureAllComplete) {
  make({.max_num_seqs = 6, .max_num_batched_tokens = 16, .max_model_len = 64}, {20, 4, true});
  std::vector<std::vector<int>> ps;
  std::vector<int> n_out;
  auto base = prompt(9, 99);
  for (int i = 0; i < 20; ++i) {
    auto p = i % 3 == 0 ? base : prompt(3 + (i * 5) % 17, i);
    if (i % 3 == 0) p.push_back(i);
    ps.push_back(p);
    n_out.push_back(1 + (i * 7) % 13);
    add(ps.back(), n_out.back());
  }
  run_all();
  for (int i = 0; i < 20; ++i) EXPECT_EQ(tokens[i + 1], expected(ps[i], n_out[i])) << i;
  EXPECT_GT(sched->kv().stats().hit_tokens, 0);
}

}  // namespace
}  // namespace mlxcel
