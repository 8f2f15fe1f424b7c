#include "engine/text_stream.h"

#include <algorithm>

namespace mlxcel {

size_t partial_suffix_len(const std::string& s, const std::vector<std::string>& needles) {
  size_t best = 0;
  for (const auto& n : needles) {
    for (size_t len = std::min(s.size(), n.empty() ? 0 : n.size() - 1); len > best; --len) {
      if (s.compare(s.size() - len, len, n, 0, len) == 0) {
        best = len;
        break;
      }
    }
  }
  return best;
}

TextStream::TextStream(const Tokenizer& tok, TextStreamOptions opts)
    : dec_(tok, opts.skip_special_tokens), opts_(std::move(opts)), in_reasoning_(opts_.starts_in_reasoning) {
  std::erase_if(opts_.stop, [](const std::string& s) { return s.empty(); });
}

TextStream::Delta TextStream::push(int token) {
  if (stopped_) return {};
  held_ += dec_.step(token);
  // Earliest stop string in the held text.
  size_t cut = std::string::npos;
  std::string which;
  for (const auto& s : opts_.stop) {
    size_t p = held_.find(s);
    if (p != std::string::npos && p < cut) cut = p, which = s;
  }
  if (cut != std::string::npos) {
    std::string text = held_.substr(0, cut);
    held_.clear();
    stopped_ = true;
    Delta d = route(text, true);
    d.stopped = true;
    d.matched_stop = which;
    return d;
  }
  const size_t keep = partial_suffix_len(held_, opts_.stop);
  std::string text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return route(text, false);
}

TextStream::Delta TextStream::finish() {
  if (stopped_) return route("", true);
  std::string text = held_ + dec_.flush();
  held_.clear();
  return route(text, true);
}

TextStream::Delta TextStream::route(const std::string& text, bool final) {
  Delta d;
  if (!opts_.split_reasoning) {
    d.content = text;
    return d;
  }
  std::string buf = tag_held_ + text;
  tag_held_.clear();
  while (!buf.empty()) {
    const std::string& tag = in_reasoning_ ? opts_.think_close : opts_.think_open;
    size_t p = buf.find(tag);
    std::string& sink = in_reasoning_ ? d.reasoning : d.content;
    if (p != std::string::npos) {
      sink += buf.substr(0, p);
      buf.erase(0, p + tag.size());
      in_reasoning_ = !in_reasoning_;
      continue;
    }
    const size_t keep = final ? 0 : partial_suffix_len(buf, {tag});
    sink += buf.substr(0, buf.size() - keep);
    tag_held_ = buf.substr(buf.size() - keep);
    break;
  }
  return d;
}

}  // namespace mlxcel
