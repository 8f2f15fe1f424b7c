// Token ids -> text deltas for streaming: complete UTF-8 only (via the tokenizer's
// StreamDecoder), stop strings matched across token boundaries with the text that
// could still become a stop string held back (never leaked), and an optional split
// of <think>...</think> reasoning from the answer.
//
//   TextStream ts(tok, {.stop = {"\nUser:"}, .split_reasoning = true});
//   for (int id : ids) { auto d = ts.push(id); print(d.content); if (d.stopped) break; }
//   print(ts.finish().content);
#pragma once

#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace mlxcel {

struct TextStreamOptions {
  std::vector<std::string> stop;         // stop strings (not included in the output)
  bool split_reasoning = false;          // route <think>...</think> to Delta::reasoning
  bool starts_in_reasoning = false;      // the prompt already opened <think>
  std::string think_open = "<think>", think_close = "</think>";
  bool skip_special_tokens = true;
};

class TextStream {
 public:
  struct Delta {
    std::string content, reasoning;
    bool stopped = false;        // a stop string matched; generation should end
    std::string matched_stop;    // which one
  };
  TextStream(const Tokenizer& tok, TextStreamOptions opts);
  Delta push(int token);
  // Flushes everything held back (end of generation).
  Delta finish();
  bool stopped() const { return stopped_; }

 private:
  Delta route(const std::string& text, bool final);

  StreamDecoder dec_;
  TextStreamOptions opts_;
  std::string held_;       // decoded text not yet checked against stop strings
  std::string tag_held_;   // text held while it may be a partial think tag
  bool in_reasoning_ = false;
  bool stopped_ = false;
};

// The longest suffix of `s` that is a proper prefix of one of `needles` (its length).
size_t partial_suffix_len(const std::string& s, const std::vector<std::string>& needles);

}  // namespace mlxcel
