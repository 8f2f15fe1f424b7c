// Offsets, pair encoding and the UnicodeScripts / FixedLength pre-tokenizers, on small
// hand-built tokenizers whose expected results were worked out by hand from HF's rules.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "tokenizer/tokenizer.h"

namespace mlxcel {
namespace {

using Offs = std::vector<std::pair<size_t, size_t>>;

const char* kBert = R"({
  "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
  "pre_tokenizer": {"type": "BertPreTokenizer"},
  "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
  "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
            "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, ",": 5, "world": 6, "hi": 7, "yo": 8,
                      "##s": 9, "caf": 10, "##e": 11}}
})";

TEST(Offsets, BertWordPiece) {
  Tokenizer tok = Tokenizer::from_json(kBert);
  Encoding e = tok.encode_full("Hello, Worlds");
  EXPECT_EQ(e.ids, (std::vector<int32_t>{2, 4, 5, 6, 9, 3}));
  EXPECT_EQ(e.tokens, (std::vector<std::string>{"[CLS]", "hello", ",", "world", "##s", "[SEP]"}));
  EXPECT_EQ(e.offsets, (Offs{{0, 0}, {0, 5}, {5, 6}, {7, 12}, {12, 13}, {0, 0}}));
  EXPECT_EQ(e.special_tokens_mask, (std::vector<uint8_t>{1, 0, 0, 0, 0, 1}));
  EXPECT_EQ(e.sequence_ids, (std::vector<int32_t>{-1, 0, 0, 0, 0, -1}));
  EXPECT_EQ(e.ids, tok.encode("Hello, Worlds"));
  // Accents are stripped (NFD + drop Mn): "Café" -> "cafe", both pieces inside the é's span.
  Encoding c = tok.encode_full("Caf\xC3\xA9", false);
  EXPECT_EQ(c.ids, (std::vector<int32_t>{10, 11}));
  EXPECT_EQ(c.offsets, (Offs{{0, 3}, {3, 5}}));
  EXPECT_EQ(char_offsets("Caf\xC3\xA9", c.offsets), (Offs{{0, 3}, {3, 4}}));
}

TEST(Offsets, BertPair) {
  Tokenizer tok = Tokenizer::from_json(kBert);
  Encoding e = tok.encode_pair("Hi", "yo, Yo");
  EXPECT_EQ(e.ids, (std::vector<int32_t>{2, 7, 3, 8, 5, 8, 3}));
  EXPECT_EQ(e.type_ids, (std::vector<int32_t>{0, 0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(e.offsets, (Offs{{0, 0}, {0, 2}, {0, 0}, {0, 2}, {2, 3}, {4, 6}, {0, 0}}));
  EXPECT_EQ(e.sequence_ids, (std::vector<int32_t>{-1, 0, -1, 1, 1, 1, -1}));
  Encoding n = tok.encode_pair("Hi", "yo", false);
  EXPECT_EQ(n.ids, (std::vector<int32_t>{7, 8}));
  // Without special tokens BertProcessing leaves the encodings as encoded: HF gives the
  // pair's second sequence type id 1 (encode_single_sequence(pair, type_id = 1)).
  EXPECT_EQ(n.type_ids, (std::vector<int32_t>{0, 1}));
}

// Byte-level BPE with Roberta post-processing: offsets trimmed of the 'Ġ' space.
const char* kRoberta = R"({
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
  "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 1], "cls": ["<s>", 0], "trim_offsets": true, "add_prefix_space": false},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1, "a": 2, "b": 3, "\u0120": 4, "\u0120b": 5, "ab": 6},
            "merges": ["\u0120 b", "a b"]}
})";

TEST(Offsets, RobertaTrimAndPair) {
  Tokenizer tok = Tokenizer::from_json(kRoberta);
  Encoding e = tok.encode_full("ab b");
  EXPECT_EQ(e.ids, (std::vector<int32_t>{0, 6, 5, 1}));
  EXPECT_EQ(e.offsets, (Offs{{0, 0}, {0, 2}, {3, 4}, {0, 0}}));  // " b" trimmed to "b"
  Encoding p = tok.encode_pair("ab", "b");
  EXPECT_EQ(p.ids, (std::vector<int32_t>{0, 6, 1, 1, 3, 1}));
  EXPECT_EQ(p.type_ids, (std::vector<int32_t>(6, 0)));
  EXPECT_EQ(p.special_tokens_mask, (std::vector<uint8_t>{1, 0, 1, 1, 0, 1}));
}

// TemplateProcessing pair with $B:1, added tokens, Metaspace and Unigram.
const char* kTemplate = R"({
  "added_tokens": [{"id": 5, "content": "<m>", "special": true, "normalized": false, "lstrip": true, "rstrip": false, "single_word": false}],
  "normalizer": {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
  "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": true},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
             {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "</s>", "type_id": 1}}],
    "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
  "model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0], ["</s>", 0], ["\u2581ab", -1], ["\u2581c", -1], ["\u2581", -2], ["<m>", 0]]}
})";

TEST(Offsets, TemplatePairAddedTokensMetaspace) {
  Tokenizer tok = Tokenizer::from_json(kTemplate);
  // "ab   c <m>": Replace folds the spaces; ▁c's ▁ comes from the last replaced space.
  Encoding e = tok.encode_full("ab   c <m>");
  EXPECT_EQ(e.ids, (std::vector<int32_t>{2, 3, 5, 1}));
  EXPECT_EQ(e.offsets, (Offs{{0, 2}, {4, 6}, {6, 10}, {0, 0}}));  // <m> took its left space (lstrip)
  Encoding p = tok.encode_pair("ab", "c");
  EXPECT_EQ(p.ids, (std::vector<int32_t>{2, 1, 3, 1}));
  EXPECT_EQ(p.type_ids, (std::vector<int32_t>{0, 0, 1, 1}));
  EXPECT_EQ(p.offsets, (Offs{{0, 2}, {0, 0}, {0, 1}, {0, 0}}));
  // Without special tokens the template still assigns the type ids.
  Encoding n = tok.encode_pair("ab", "c", false);
  EXPECT_EQ(n.ids, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(n.type_ids, (std::vector<int32_t>{0, 1}));
}

TEST(Offsets, PairTemplateMissingOrEmpty) {
  nlohmann::json js = nlohmann::json::parse(kTemplate);
  js["post_processor"].erase("pair");  // missing: "$A:0 $B:1"
  Tokenizer tok = Tokenizer::from_json(js.dump());
  Encoding e = tok.encode_pair("ab", "c");
  EXPECT_EQ(e.ids, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(e.type_ids, (std::vector<int32_t>{0, 1}));
  js["post_processor"]["pair"] = nlohmann::json::array();  // empty: an empty encoding (HF)
  EXPECT_TRUE(Tokenizer::from_json(js.dump()).encode_pair("ab", "c").ids.empty());
}

// NFC composes "e" + U+0301 into "é", which keeps the span of "e" (HF's alignment rule);
// NFD splits "é" and both characters keep its span.
TEST(Offsets, UnicodeNormalizationAlignment) {
  Tokenizer nfc = Tokenizer::from_json(R"({"normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "WhitespaceSplit"},
    "model": {"type": "WordLevel", "unk_token": "?", "vocab": {"?": 0, "caf\u00e9": 1, "x": 2}}})");
  Encoding e = nfc.encode_full("cafe\xCC\x81 x");
  EXPECT_EQ(e.ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(e.offsets, (Offs{{0, 4}, {7, 8}}));
  Tokenizer nfd = Tokenizer::from_json(R"({"normalizer": {"type": "NFD"},
    "model": {"type": "BPE", "vocab": {"e": 0, "\u0301": 1, "a": 2}, "merges": []}})");
  Encoding d = nfd.encode_full("a\xC3\xA9");
  EXPECT_EQ(d.ids, (std::vector<int32_t>{2, 0, 1}));
  EXPECT_EQ(d.offsets, (Offs{{0, 1}, {1, 3}, {1, 3}}));
}

TEST(Offsets, ByteFallbackBytesShareTheirCharacter) {
  Tokenizer tok = Tokenizer::from_json(R"({
    "model": {"type": "BPE", "byte_fallback": true, "vocab": {"a": 0, "<0xE2>": 1, "<0x82>": 2, "<0xAC>": 3}, "merges": []}})");
  Encoding e = tok.encode_full("a\xE2\x82\xAC");
  EXPECT_EQ(e.ids, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(e.offsets, (Offs{{0, 1}, {1, 4}, {1, 4}, {1, 4}}));
}

// UnicodeScripts: a split at each script change; spaces join the current piece and a
// leading space is dropped (HF's quirk). Hiragana/Katakana count as Han.
TEST(PreTokenizers, UnicodeScripts) {
  Tokenizer tok = Tokenizer::from_json(R"({
    "pre_tokenizer": {"type": "UnicodeScripts"},
    "model": {"type": "WordLevel", "unk_token": "?", "vocab": {"?": 0, "abc ": 1, "\u4eac\u3044\u30b0": 2, "def": 3, "abc": 4,
                                                                  "\u0430\u0431": 5, "12": 6}}})");
  EXPECT_EQ(tok.encode(" abc \xE4\xBA\xAC\xE3\x81\x84\xE3\x82\xB0" "def", false), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(tok.encode("abc\xD0\xB0\xD0\xB1", false), (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(tok.encode("   ", false), (std::vector<int32_t>{}));
  Encoding e = tok.encode_full(" abc def");
  EXPECT_EQ(e.offsets, (Offs{{1, 8}}));  // one Latin piece "abc def" -> unknown
  // Digits are Common: a change from Latin to Common splits.
  EXPECT_EQ(tok.encode("abc12", false), (std::vector<int32_t>{4, 6}));
}

TEST(PreTokenizers, FixedLength) {
  Tokenizer tok = Tokenizer::from_json(R"({
    "pre_tokenizer": {"type": "FixedLength", "length": 2},
    "model": {"type": "WordLevel", "unk_token": "?", "vocab": {"?": 0, "ab": 1, "c\u00e9": 2, "d": 3}}})");
  EXPECT_EQ(tok.encode("abc\xC3\xA9" "d", false), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_THROW(Tokenizer::from_json(R"({"pre_tokenizer": {"type": "FixedLength", "length": 0},
    "model": {"type": "WordLevel", "unk_token": "?", "vocab": {"?": 0}}})"), Error);
}

}  // namespace
}  // namespace mlxcel
