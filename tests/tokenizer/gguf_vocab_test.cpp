// llama.cpp's vocabulary test vectors (.testdata/llama.cpp/models/ggml-vocab-*.gguf with
// .inp/.out, the format of llama.cpp tests/test-tokenizer-0.cpp): the inputs are separated by
// "\n__ggml_vocab_test__\n", each output line holds the expected ids. llama.cpp tokenizes
// them with add_special = false and parse_special = false.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "base/error.h"
#include "loader/gguf.h"
#include "tokenizer/tokenizer.h"

namespace mlxcel {
namespace {

namespace fs = std::filesystem;

fs::path models_dir() { return fs::path(MLXCEL_SOURCE_DIR) / ".testdata/llama.cpp/models"; }

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::pair<std::string, std::vector<int32_t>>> read_vectors(const fs::path& gguf) {
  std::string raw = slurp(gguf.string() + ".inp");
  std::vector<std::string> inputs;
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0; pos < raw.size();) {
    size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      inputs.push_back(raw.substr(pos));
      break;
    }
    inputs.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::ifstream out(gguf.string() + ".out");
  std::vector<std::pair<std::string, std::vector<int32_t>>> tests;
  std::string line;
  for (size_t i = 0; i < inputs.size() && std::getline(out, line); ++i) {
    std::vector<int32_t> ids;
    std::istringstream ls(line);
    for (int32_t id; ls >> id;) ids.push_back(id);
    tests.emplace_back(inputs[i], ids);
  }
  EXPECT_EQ(tests.size(), inputs.size()) << gguf;
  return tests;
}

// Vocabularies whose vectors we do not run, with the reason.
const std::map<std::string, std::string>& skipped() {
  static const std::map<std::string, std::string> s = {
  };
  return s;
}

class GgufVocab : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufVocab, MatchesLlamaCpp) {
  const std::string name = GetParam();
  fs::path gguf = models_dir() / ("ggml-vocab-" + name + ".gguf");
  if (!fs::exists(gguf)) GTEST_SKIP() << "no .testdata";
  if (skipped().count(name)) GTEST_SKIP() << skipped().at(name);
  Tokenizer tok = Tokenizer::from_gguf(GgufFile::open(gguf.string()));
  int n_fail = 0;
  auto tests = read_vectors(gguf);
  for (const auto& [text, want] : tests) {
    auto got = tok.encode(text, /*add_special_tokens=*/false, /*parse_special=*/false);
    EXPECT_EQ(got, want) << name << ": '" << text << "'";
    if (got != want) ++n_fail;
  }
  EXPECT_EQ(n_fail, 0) << name << ": " << n_fail << " of " << tests.size() << " vectors differ";
}

std::vector<std::string> vocab_names() {
  std::vector<std::string> names;
  if (!fs::exists(models_dir())) return {"none"};
  for (const auto& e : fs::directory_iterator(models_dir())) {
    std::string f = e.path().filename().string();
    const std::string pre = "ggml-vocab-", ext = ".gguf.inp";
    if (f.rfind(pre, 0) == 0 && f.size() > pre.size() + ext.size() && f.compare(f.size() - ext.size(), ext.size(), ext) == 0) {
      names.push_back(f.substr(pre.size(), f.size() - pre.size() - ext.size()));
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string s = info.param;
  for (char& c : s) {
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

// Every vocabulary in the folder (also those without vectors: aquila, baichuan, gpt-neox,
// nomic-bert-moe) loads, encodes and round-trips plain text.
TEST(GgufVocabAll, LoadsAndRoundTrips) {
  if (!fs::exists(models_dir())) GTEST_SKIP() << "no .testdata";
  int n = 0;
  for (const auto& e : fs::directory_iterator(models_dir())) {
    if (e.path().extension() != ".gguf") continue;
    GgufFile g = GgufFile::open(e.path().string());
    std::string kind = g.get_string("tokenizer.ggml.model");
    if (kind == "t5") {  // Unigram (UGM) GGUF vocabularies: a clear "unsupported" error.
      try {
        Tokenizer::from_gguf(g);
        ADD_FAILURE() << "expected unsupported for " << e.path();
      } catch (const Error& err) {
        EXPECT_EQ(err.kind(), ErrorKind::unsupported);
      }
      continue;
    }
    Tokenizer tok = Tokenizer::from_gguf(g);
    auto ids = tok.encode("Hello world, this is 42!", false, false);
    EXPECT_FALSE(ids.empty()) << e.path();
    std::string back = tok.decode(ids, true);
    EXPECT_NE(back.find("world"), std::string::npos) << e.path() << ": " << back;
    // add_special_tokens adds BOS as llama.cpp does: add_bos_token, default on for "llama".
    if (kind != "bert" && g.has("tokenizer.ggml.bos_token_id")) {
      const bool add_bos = g.get_bool("tokenizer.ggml.add_bos_token", kind == "llama");
      auto with = tok.encode("Hello world, this is 42!", true, false);
      const int bos = int(g.get_int("tokenizer.ggml.bos_token_id", -1));
      const size_t extra = size_t(add_bos) + size_t(g.get_bool("tokenizer.ggml.add_eos_token", false));
      EXPECT_EQ(with.size(), ids.size() + extra) << e.path();
      if (add_bos) EXPECT_EQ(with.front(), bos) << e.path();
      else EXPECT_EQ(with.front(), ids.front()) << e.path();
    }
    ++n;
  }
  EXPECT_GE(n, 14);
}

INSTANTIATE_TEST_SUITE_P(LlamaCpp, GgufVocab, ::testing::ValuesIn(vocab_names()), test_name);

}  // namespace
}  // namespace mlxcel
