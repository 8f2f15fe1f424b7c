// Round trips of every family fixture: safetensors -> our GGUF writer (f16, q8_0, q4_0)
// -> our loader -> logits against the transformers reference (tests/fixtures/<family>/
// reference.json/.safetensors), within the format's tolerance; once with the embedded
// config.json and once from the llama.cpp metadata keys alone.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "loader/gguf.h"
#include "loader/gguf_model.h"
#include "loader/gguf_writer.h"
#include "loader/weights.h"
#include "models/model.h"
#include "../common/family_fixtures.h"

namespace mlxcel {
namespace {

namespace fs = std::filesystem;
using namespace testing_fixtures;

fs::path tmp_dir() {
  fs::path d = fs::temp_directory_path() / ("mlxcel_gguf_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

// Logits at every position of one prompt (one sequence, consecutive cache blocks).
Tensor prefill(Model& model, const std::vector<int>& prompt) {
  const int T = int(prompt.size()), bs = 16, nb = (T + bs - 1) / bs;
  KvCache cache = model.make_cache(nb, bs);
  std::vector<int32_t> ids(prompt.begin(), prompt.end()), pos, slots, rows, table;
  for (int i = 0; i < T; ++i) pos.push_back(i), slots.push_back(i), rows.push_back(i);
  for (int b = 0; b < nb; ++b) table.push_back(b);
  Batch b;
  b.token_ids = Tensor::from_i32({T}, ids);
  b.positions = Tensor::from_i32({T}, pos);
  b.max_position = T - 1;
  b.attn.q_start = Tensor::from_i32({2}, {0, T});
  b.attn.kv_len = Tensor::from_i32({1}, {T});
  b.attn.block_table = Tensor::from_i32({1, nb}, table);
  b.attn.slot_mapping = Tensor::from_i32({T}, slots);
  b.attn.block_size = bs;
  b.logit_rows = Tensor::from_i32({T}, rows);
  return model.forward(b, cache);
}

double model_err(Model& model, const Reference& ref) {
  double worst = 0;
  for (size_t p = 0; p < ref.prompts.size(); ++p) {
    Tensor logits = prefill(model, ref.prompts[p]);
    worst = std::max(worst, rel_err(logits.to_f32_vector(), ref.logits[p]));
  }
  return worst;
}

struct Case {
  GgufQuant quant;
  const char* name;
  double tol;         // dequantized GGUF model vs the fp32 transformers reference
  double packed_tol;  // packed kernels vs the dequantized GGUF model
};
// NOTE: errors are max |diff| / max |ref| over all logits of the random-weight fixtures
// (hidden size 64), which amplify weight noise: f32 checks the structure (names, Q/K
// permutation, Gemma norms, config) tightly; f16/q8_0/q4_0 are bounded against the fp32
// reference, and the packed Q8_0/Q4_0 kernels (which also quantize activations to 8 bits,
// as ggml does) against the same weights dequantized.
const Case kCases[] = {{GgufQuant::f32, "f32", 1e-4, 1e-6}, {GgufQuant::f16, "f16", 1e-2, 1e-6},
                       {GgufQuant::q8_0, "q8_0", 0.2, 0.15}, {GgufQuant::q4_0, "q4_0", 1.5, 0.15}};

std::vector<std::vector<float>> all_logits(Model& model, const Reference& ref) {
  std::vector<std::vector<float>> out;
  for (const auto& p : ref.prompts) out.push_back(prefill(model, p).to_f32_vector());
  return out;
}

class GgufFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufFamily, RoundTripMatchesReference) {
  const fs::path dir = fixtures_dir() / GetParam();
  const Reference ref = load_reference(dir);
  const fs::path tmp = tmp_dir();
  for (const Case& c : kCases) {
    const fs::path out = tmp / (GetParam() + "-" + c.name + ".gguf");
    GgufConvertOptions opts;
    opts.quant = c.quant;
    convert_to_gguf(dir.string(), out.string(), opts);
    std::vector<std::vector<float>> deq, packed;
    for (bool keep_packed : {false, true}) {
      GgufLoadOptions lo;
      lo.keep_packed = keep_packed;
      lo.dequant_dtype = DType::f32;
      GgufCheckpoint ck = load_gguf_checkpoint(out.string(), lo);
      auto model = build_model(ck.config, ck.weights);
      (keep_packed ? packed : deq) = all_logits(*model, ref);
    }
    double err = 0, perr = 0;
    for (size_t p = 0; p < ref.prompts.size(); ++p) {
      err = std::max(err, rel_err(deq[p], ref.logits[p]));
      perr = std::max(perr, rel_err(packed[p], deq[p]));
    }
    EXPECT_LE(err, c.tol) << GetParam() << " " << c.name << " vs reference";
    EXPECT_LE(perr, c.packed_tol) << GetParam() << " " << c.name << " packed vs dequantized";
    std::fprintf(stderr, "[gguf] %-12s %-5s rel err vs reference %.2e, packed vs dequantized %.2e\n",
                 GetParam().c_str(), c.name, err, perr);
  }
  // The CLI path: load_model on the file, and on a folder holding only that file.
  auto m = load_model((tmp / (GetParam() + "-f32.gguf")).string());
  EXPECT_LE(model_err(*m, ref), 1e-4);
  const fs::path only = tmp / "only";
  fs::create_directories(only);
  fs::copy_file(tmp / (GetParam() + "-q8_0.gguf"), only / "model-q8_0.gguf");
  EXPECT_EQ(gguf_model_file(only.string()), (only / "model-q8_0.gguf").string());
  EXPECT_NO_THROW(load_model(only.string()));
  fs::copy_file(tmp / (GetParam() + "-q4_0.gguf"), only / "model-q4_0.gguf");
  EXPECT_THROW(load_model(only.string()), Error);  // two files: which one?
  EXPECT_EQ(gguf_model_file(dir.string()), "");   // a safetensors checkpoint
  fs::remove_all(tmp);
}

// Without mlxcel.hf_config the config comes from llama.cpp's keys (and rope tensors).
TEST_P(GgufFamily, ConfigFromLlamaCppKeysAlone) {
  const fs::path dir = fixtures_dir() / GetParam();
  const fs::path tmp = tmp_dir();
  const fs::path out = tmp / (GetParam() + ".gguf");
  GgufConvertOptions opts;
  opts.quant = GgufQuant::f32;
  opts.embed_hf_config = false;
  convert_to_gguf(dir.string(), out.string(), opts);
  GgufLoadOptions lo;
  lo.use_embedded_config = false;
  GgufCheckpoint ck = load_gguf_checkpoint(out.string(), lo);
  auto model = build_model(ck.config, ck.weights);
  const double err = model_err(*model, load_reference(dir));
  std::fprintf(stderr, "[gguf] %-12s keys-only config rel err %.2e\n", GetParam().c_str(), err);
  // NOTE: GGUF has no key for query_pre_attn_scalar; llama.cpp (and so mlxcel, reading
  // a GGUF without mlxcel.hf_config) uses head_dim, which the gemma2/gemma3 fixtures
  // deliberately differ from.
  // smollm3's fixture drops RoPE on layer 2 (no_rope_layers [1, 1, 0, 1]); llama.cpp only
  // knows "every 4th layer".
  if (GetParam() == "gemma2" || GetParam() == "gemma3_text" || GetParam() == "smollm3") EXPECT_GT(err, 1e-4);
  else EXPECT_LE(err, 1e-4) << GetParam();
  fs::remove_all(tmp);
}

INSTANTIATE_TEST_SUITE_P(All, GgufFamily, ::testing::ValuesIn(families()), [](const auto& info) { return info.param; });

}  // namespace
}  // namespace mlxcel
