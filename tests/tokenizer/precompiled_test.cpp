// The Precompiled normalizer (SentencePiece precompiled_charsmap): a hand-built Darts-clone
// trie checks the lookup rules HF applies (graphemes, first match, < 6 bytes), malformed
// blobs fail at load or count as no match, and the real XLM-R charsmap shipped in
// llama.cpp's nomic-bert-moe vocabulary maps what NFKC maps.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "loader/gguf.h"
#include "tokenizer/precompiled.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace mlxcel {
namespace {

// A minimal Darts-clone double array: every node's children get their own 256-unit block,
// so child(c) of a node whose block starts at B sits at B + c, and the node's value (if any)
// at B itself (label 0). Units: offset << 10 | has_leaf << 8 | label; values: 1 << 31 | v.
std::string build_charsmap(const std::map<std::string, std::string>& rules) {
  struct Node {
    std::map<uint8_t, int> kids;
    int value = -1;
  };
  std::vector<Node> nodes(1);
  std::string pool;
  for (const auto& [key, out] : rules) {
    int n = 0;
    for (unsigned char c : key) {
      auto it = nodes[n].kids.find(c);
      if (it == nodes[n].kids.end()) {
        nodes.push_back({});
        it = nodes[n].kids.emplace(c, static_cast<int>(nodes.size()) - 1).first;
      }
      n = it->second;
    }
    nodes[n].value = static_cast<int>(pool.size());
    pool += out;
    pool.push_back('\0');
  }
  std::vector<uint32_t> a(256, 0);
  std::vector<std::pair<int, size_t>> todo{{0, 0}};  // (node, position)
  while (!todo.empty()) {
    auto [n, pos] = todo.back();
    todo.pop_back();
    size_t base = a.size();
    a.resize(a.size() + 256, 0);
    uint32_t label = pos == 0 ? 0 : static_cast<uint32_t>(a[pos] & 0xFF);
    bool leaf = nodes[n].value >= 0;
    a[pos] = static_cast<uint32_t>((pos ^ base) << 10) | (leaf ? 1u << 8 : 0) | label;
    if (leaf) a[base] = (1u << 31) | static_cast<uint32_t>(nodes[n].value);
    for (auto [c, k] : nodes[n].kids) {
      a[base + c] = c;  // label, completed when the child is placed
      todo.push_back({k, base + c});
    }
  }
  std::string blob(4, '\0');
  uint32_t bytes = static_cast<uint32_t>(a.size() * 4);
  for (int k = 0; k < 4; ++k) blob[k] = static_cast<char>((bytes >> (8 * k)) & 0xFF);
  for (uint32_t v : a) {
    for (int k = 0; k < 4; ++k) blob.push_back(static_cast<char>((v >> (8 * k)) & 0xFF));
  }
  return blob + pool;
}

std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8 | static_cast<uint8_t>(in[i + 2]);
    for (int k = 3; k >= 0; --k) out.push_back(t[(v >> (6 * k)) & 63]);
  }
  if (i + 1 == in.size()) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    out += {t[(v >> 18) & 63], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8;
    out += {t[(v >> 18) & 63], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return out;
}

const std::map<std::string, std::string> kRules = {
    {"\xE2\x84\xA2", "TM"},              // ™ -> TM (expansion)
    {"\xEF\xBC\xA1", "A"},               // full-width A
    {"\xEF\xBD\x82", "b"},               // full-width b
    {"x", "X"},                          // a plain letter with a rule
    {"x\xCC\x81", "Q"},                  // x + U+0301: never chosen, "x" matches first
    {"y\xCC\x88", "\xC3\xBF"},           // y + U+0308 -> ÿ (only as a whole cluster)
    {"\xE2\x80\x8B", ""},                // U+200B removed
    {"\xE3\x80\x80", " "},               // ideographic space -> space
};

PrecompiledCharsmap test_map() { return PrecompiledCharsmap::parse(build_charsmap(kRules)); }

TEST(Precompiled, Base64) {
  EXPECT_EQ(base64_decode("aGVsbG8="), "hello");
  EXPECT_EQ(base64_decode("aGVsbG8"), "hello");
  EXPECT_EQ(base64_decode(""), "");
  EXPECT_EQ(base64_decode(base64(std::string("\0\xFF\x10", 3))), std::string("\0\xFF\x10", 3));
  EXPECT_THROW(base64_decode("aGVsb*8="), Error);
  EXPECT_THROW(base64_decode("a"), Error);
  EXPECT_THROW(base64_decode("aGVsbG9==="), Error);
  EXPECT_THROW(base64_decode("aGVsbG9="), Error);  // non-zero trailing bits
}

TEST(Precompiled, TransformTakesTheFirstMatch) {
  PrecompiledCharsmap m = test_map();
  EXPECT_EQ(m.transform("\xE2\x84\xA2").value_or("<none>"), "TM");
  EXPECT_EQ(m.transform("x").value_or("<none>"), "X");
  EXPECT_EQ(m.transform("x\xCC\x81").value_or("<none>"), "X");  // shortest key wins
  EXPECT_EQ(m.transform("y\xCC\x88").value_or("<none>"), "\xC3\xBF");
  EXPECT_FALSE(m.transform("y").has_value());
  EXPECT_FALSE(m.transform("a").has_value());
  EXPECT_EQ(m.transform("\xE2\x80\x8B").value_or("<none>"), "");
}

TEST(Precompiled, NormalizeFollowsGraphemes) {
  PrecompiledCharsmap m = test_map();
  EXPECT_EQ(m.normalize("a\xE2\x84\xA2z"), "aTMz");
  EXPECT_EQ(m.normalize("\xEF\xBC\xA1\xEF\xBD\x82" "c"), "Abc");
  EXPECT_EQ(m.normalize("ax"), "aX");
  // x + U+0301 is one cluster of 3 bytes: the "x" rule replaces the whole cluster.
  EXPECT_EQ(m.normalize("x\xCC\x81!"), "X!");
  // 5 bytes: still one lookup; 7 bytes: char by char, the marks survive.
  EXPECT_EQ(m.normalize("x\xCC\x81\xCC\x81"), "X");
  EXPECT_EQ(m.normalize("x\xCC\x81\xCC\x81\xCC\x81"), "X\xCC\x81\xCC\x81\xCC\x81");
  EXPECT_EQ(m.normalize("y\xCC\x88 y"), "\xC3\xBF y");
  EXPECT_EQ(m.normalize("a\xE2\x80\x8B" "b\xE3\x80\x80" "c"), "ab c");
  EXPECT_EQ(m.normalize(""), "");
  // Offsets: every piece names the input range it replaces; together they cover the input.
  std::string in = "a\xE2\x84\xA2x\xCC\x81";
  std::vector<std::tuple<std::string, size_t, size_t>> pieces;
  m.normalize(in, [&](std::string_view out, size_t b, size_t e) { pieces.emplace_back(std::string(out), b, e); });
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0], std::make_tuple(std::string("a"), size_t{0}, size_t{1}));
  EXPECT_EQ(pieces[1], std::make_tuple(std::string("TM"), size_t{1}, size_t{4}));
  EXPECT_EQ(pieces[2], std::make_tuple(std::string("X"), size_t{4}, size_t{7}));
}

TEST(Precompiled, MalformedBlobs) {
  EXPECT_THROW(PrecompiledCharsmap::parse(""), Error);
  EXPECT_THROW(PrecompiledCharsmap::parse(std::string("\x08\0\0", 3)), Error);
  EXPECT_THROW(PrecompiledCharsmap::parse(std::string("\x10\0\0\0\0\0\0\0", 8)), Error);  // trie past end
  EXPECT_THROW(PrecompiledCharsmap::parse(std::string("\0\0\0\0\xFF", 5)), Error);       // pool not UTF-8
  // An empty trie never matches.
  PrecompiledCharsmap empty = PrecompiledCharsmap::parse(std::string("\0\0\0\0", 4));
  EXPECT_EQ(empty.normalize("abc"), "abc");
  // Without the pool: a value at its end means "" (as HF), one past it means no match.
  std::string blob = build_charsmap({{"a", "Z"}, {"b", "Y"}});
  blob.resize(blob.size() - 4);  // drop "Z\0Y\0": "a" -> offset 0 == end, "b" -> 2 > end
  EXPECT_EQ(PrecompiledCharsmap::parse(blob).normalize("abc"), "bc");
  // Random blobs: parse may throw, normalize never crashes and yields valid UTF-8.
  std::mt19937 rng(7);
  for (int iter = 0; iter < 2000; ++iter) {
    std::string b(4 + rng() % 64, '\0');
    for (char& c : b) c = static_cast<char>(rng() % (iter % 2 ? 4 : 256));
    uint32_t units = static_cast<uint32_t>((b.size() - 4) / 4);
    uint32_t bytes = (rng() % (units + 1)) * 4;
    for (int k = 0; k < 4; ++k) b[k] = static_cast<char>((bytes >> (8 * k)) & 0xFF);
    try {
      PrecompiledCharsmap m = PrecompiledCharsmap::parse(b);
      std::string out = m.normalize("a\x01\x02\x03 x\xCC\x81\xE2\x84\xA2");
      EXPECT_TRUE(unicode::is_valid_utf8(out));
    } catch (const Error&) {
    }
  }
}

nlohmann::json unigram_json(const std::string& charsmap_b64) {
  using nlohmann::json;
  json vocab = json::array({json::array({"<unk>", 0.0}), json::array({"\xE2\x96\x81", -2.0}),
                            json::array({"\xE2\x96\x81TM", -1.0}), json::array({"A", -3.0}),
                            json::array({"b", -3.0}), json::array({"c", -3.0}), json::array({"X", -3.0}),
                            json::array({"\xE2\x96\x81" "Abc", -1.0})});
  json j;
  j["model"] = {{"type", "Unigram"}, {"unk_id", 0}, {"vocab", vocab}};
  json pre = {{"type", "Precompiled"}, {"precompiled_charsmap", charsmap_b64}};
  json rep = {{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}};
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({pre, rep})}};
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "always"}};
  return j;
}

TEST(Precompiled, InTokenizerJson) {
  Tokenizer tok = Tokenizer::from_json(unigram_json(base64(build_charsmap(kRules))).dump());
  // "™ Ａｂc" -> "TM Abc" -> "▁TM ▁Abc"
  EXPECT_EQ(tok.encode("\xE2\x84\xA2 \xEF\xBC\xA1\xEF\xBD\x82" "c", false), (std::vector<int32_t>{2, 7}));
  EXPECT_EQ(tok.encode("x", false), (std::vector<int32_t>{1, 6}));
  // Offsets: "TM" keeps the span of ™, the ▁ of "▁Abc" is the space.
  Encoding e = tok.encode_full("\xE2\x84\xA2 \xEF\xBC\xA1\xEF\xBD\x82" "c", false);
  EXPECT_EQ(e.offsets, (std::vector<std::pair<size_t, size_t>>{{0, 3}, {3, 11}}));
  EXPECT_THROW(Tokenizer::from_json(unigram_json("@@@").dump()), Error);
  EXPECT_THROW(Tokenizer::from_json(unigram_json("").dump()), Error);
  try {
    Tokenizer::from_json(unigram_json("AAAA").dump());  // 3 bytes: header truncated
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Precompiled"), std::string::npos) << e.what();
  }
}

// The XLM-R charsmap (SentencePiece nmt_nfkc) that llama.cpp's nomic-bert-moe vocabulary
// carries as tokenizer.ggml.precompiled_charsmap.
TEST(Precompiled, RealXlmrCharsmap) {
  std::filesystem::path p =
      std::filesystem::path(MLXCEL_SOURCE_DIR) / ".testdata/llama.cpp/models/ggml-vocab-nomic-bert-moe.gguf";
  if (!std::filesystem::exists(p)) GTEST_SKIP() << "missing " << p;
  GgufFile g = GgufFile::open(p.string());
  const GgufArray& arr = g.at("tokenizer.ggml.precompiled_charsmap").as_array();
  std::string blob;
  for (int64_t v : arr.ints) blob.push_back(static_cast<char>(v));
  PrecompiledCharsmap m = PrecompiledCharsmap::parse(blob);
  EXPECT_GT(m.trie_units(), 1000u);
  // Characters whose NFKC form differs: the charsmap maps them the same way.
  for (const char* s : {"\xEF\xBC\xA1", "\xE2\x91\xA0", "\xEF\xAC\x81", "\xE2\x84\xA2", "\xC2\xBD", "\xEF\xBD\xB1",
                        "\xE3\x8E\x8F", "\xC3\xA9"}) {
    EXPECT_EQ(m.normalize(s), unicode::normalize(s, unicode::NormForm::nfkc)) << s;
  }
  EXPECT_EQ(m.normalize("Hello world"), "Hello world");
  EXPECT_EQ(m.normalize("e\xCC\x81"), "\xC3\xA9");  // decomposed -> composed, as NFKC
}

}  // namespace
}  // namespace mlxcel
