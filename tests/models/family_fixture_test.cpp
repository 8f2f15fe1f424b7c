// Every family against the transformers references in tests/fixtures/<family>/:
// logits at every prompt position (fp32 within 1e-4 relative), 16 greedy tokens
// identical, the same logits when both prompts share one ragged batch, and the MLX
// q4/q8 (g64) copies made by our own quantizer against references computed by
// transformers from the dequantized weights.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/generator.h"
#include "backends/cpu/isa.h"
#include "loader/config.h"
#include "loader/weights.h"
#include "models/convert.h"
#include "models/model.h"
#include "../common/family_fixtures.h"

namespace mlxcel {
namespace {

namespace fs = std::filesystem;
using namespace testing_fixtures;

void check_model(Model& model, const Reference& ref, double tol, const std::string& what) {
  for (size_t p = 0; p < ref.prompts.size(); ++p) {
    Generator gen(model, 64);
    Tensor logits = gen.prefill(ref.prompts[p], /*all_logits=*/true);
    double err = rel_err(logits.to_f32_vector(), ref.logits[p]);
    EXPECT_LE(err, tol) << what << " prompt " << p << ": logits relative error " << err;
    gen.reset();
    auto tokens = gen.generate(ref.prompts[p], 16, SamplingParams{});
    EXPECT_EQ(tokens, ref.greedy[p]) << what << " prompt " << p << ": greedy tokens differ";
  }
}

class FamilyFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(FamilyFixture, Fp32MatchesTransformers) {
  const fs::path dir = fixtures_dir() / GetParam();
  auto model = load_model(dir.string());
  check_model(*model, load_reference(dir, "reference"), 1e-4, GetParam() + " fp32");
}

// Both prompts in one ragged batch, sharing the cache through disjoint block tables
// (interleaved blocks, so the paged path is exercised), give the same logits as alone.
TEST_P(FamilyFixture, RaggedBatchMatchesSingleSequences) {
  const fs::path dir = fixtures_dir() / GetParam();
  auto model = load_model(dir.string());
  Reference ref = load_reference(dir, "reference");
  const int bs = 4;
  const int n0 = int(ref.prompts[0].size()), n1 = int(ref.prompts[1].size());
  const int blocks0 = (n0 + bs - 1) / bs, blocks1 = (n1 + bs - 1) / bs;
  const int max_blocks = std::max(blocks0, blocks1);
  KvCache cache = model->make_cache(blocks0 + blocks1 + 2, bs);
  // Sequence 0 takes odd blocks from the top, sequence 1 the rest: non-contiguous tables.
  std::vector<int32_t> table(2 * max_blocks, 0);
  std::vector<int> used(blocks0 + blocks1 + 2, 0);
  for (int b = 0; b < blocks0; ++b) table[b] = 2 * b + 1, used[2 * b + 1] = 1;
  for (int b = 0, next = 0; b < blocks1; ++b) {
    while (used[next]) ++next;
    table[max_blocks + b] = next;
    used[next] = 1;
  }
  std::vector<int32_t> ids, pos, slots, rows;
  for (int s = 0; s < 2; ++s) {
    const auto& pr = ref.prompts[s];
    for (int i = 0; i < int(pr.size()); ++i) {
      ids.push_back(pr[i]);
      pos.push_back(i);
      slots.push_back(table[s * max_blocks + i / bs] * bs + i % bs);
    }
  }
  rows.resize(ids.size());
  std::iota(rows.begin(), rows.end(), 0);
  Batch b;
  const int T = int(ids.size());
  b.token_ids = Tensor::from_i32({T}, ids);
  b.positions = Tensor::from_i32({T}, pos);
  b.max_position = std::max(n0, n1) - 1;
  b.attn.q_start = Tensor::from_i32({3}, {0, n0, n0 + n1});
  b.attn.kv_len = Tensor::from_i32({2}, {n0, n1});
  b.attn.block_table = Tensor::from_i32({2, max_blocks}, table);
  b.attn.slot_mapping = Tensor::from_i32({T}, slots);
  b.attn.block_size = bs;
  b.logit_rows = Tensor::from_i32({T}, rows);
  Tensor logits = model->forward(b, cache);
  const int64_t V = logits.dim(1);
  std::vector<float> all = logits.to_f32_vector();
  std::vector<float> l0(all.begin(), all.begin() + n0 * V), l1(all.begin() + n0 * V, all.end());
  // NOTE: phi3's longrope picks its factors from the longest sequence of the step; both
  // prompts exceed original_max_position_embeddings, so the batch changes nothing.
  EXPECT_LE(rel_err(l0, ref.logits[0]), 1e-4);
  EXPECT_LE(rel_err(l1, ref.logits[1]), 1e-4);
}

void check_quantized(const std::string& family, int bits) {
  const fs::path dir = fixtures_dir() / family;
  QuantizedFixture q = quantized_fixture(family, bits);
  ASSERT_TRUE(fs::exists(dir / (q.stem + ".json"))) << q.stem;
  auto model = build_model(q.config, q.weights);
  const Reference ref = load_reference(dir, q.stem);
  check_model(*model, ref, 1e-3, family + " " + q.stem);
  // x as f32 in the decode GEMV (the default rounds it to bf16 where the CPU has
  // AVX512_BF16): the same bound.
  const int before = cpu::set_q4_x_parts(0);
  check_model(*model, ref, 1e-3, family + " " + q.stem + " (x as f32)");
  // x as int16 per group (the default without AVX512_BF16): the same bound.
  cpu::set_q4_x_parts(cpu::kQ4XInt16);
  check_model(*model, ref, 1e-3, family + " " + q.stem + " (x as int16)");
  cpu::set_q4_x_parts(before);
}

TEST_P(FamilyFixture, MlxQ4MatchesDequantizedReference) { check_quantized(GetParam(), 4); }
TEST_P(FamilyFixture, MlxQ8MatchesDequantizedReference) { check_quantized(GetParam(), 8); }

INSTANTIATE_TEST_SUITE_P(All, FamilyFixture, ::testing::ValuesIn(families()),
                         [](const auto& info) { return info.param; });

TEST(FamilyFixtures, EveryRegisteredFamilyHasAFixture) {
  auto fams = families();
  for (const auto& t : supported_model_types())
    EXPECT_NE(std::find(fams.begin(), fams.end(), t), fams.end()) << "no fixture for " << t;
  EXPECT_GE(fams.size(), 12u);
}

}  // namespace
}  // namespace mlxcel
