// Decoders and post-processors of tokenizer.json (HF `tokenizers` semantics).
#include <map>

#include <nlohmann/json.hpp>

#include "tokenizer/components.h"
#include "tokenizer/json_util.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace mlxcel {

namespace {

using nlohmann::json;
namespace u = unicode;

class ByteLevelDec : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      std::string tb;
      bool ok = true;
      for (size_t i = 0; i < t.size() && ok;) {
        int b = u::unicode_to_byte(u::next_cp(t, i));
        if (b < 0) ok = false;
        else tb.push_back(static_cast<char>(b));
      }
      bytes += ok ? tb : t;
    }
    tokens.assign(1, u::sanitize_utf8(bytes));
  }
};

class MetaspaceDec : public Decoder {
 public:
  MetaspaceDec(std::string rep, bool prepend) : rep_(std::move(rep)), prepend_(prepend) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t p = 0; p < t.size();) {
        if (t.compare(p, rep_.size(), rep_) == 0) {
          if (!(i == 0 && prepend_)) out.push_back(' ');
          p += rep_.size();
        } else {
          out.push_back(t[p++]);
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string rep_;
  bool prepend_;
};

class WordPieceDec : public Decoder {
 public:
  WordPieceDec(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  static void replace_all(std::string& s, const std::string& a, const std::string& b) {
    for (size_t p = s.find(a); p != std::string::npos; p = s.find(a, p + b.size())) s.replace(p, a.size(), b);
  }
  static void cleanup(std::string& s) {
    replace_all(s, " .", ".");
    replace_all(s, " ?", "?");
    replace_all(s, " !", "!");
    replace_all(s, " ,", ",");
    replace_all(s, " ' ", "'");
    replace_all(s, " n't", "n't");
    replace_all(s, " 'm", "'m");
    replace_all(s, " do not", " don't");
    replace_all(s, " 's", "'s");
    replace_all(s, " 've", "'ve");
    replace_all(s, " 're", "'re");
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (i != 0) {
        if (t.compare(0, prefix_.size(), prefix_) == 0) t = t.substr(prefix_.size());
        else t = " " + t;
      }
      if (cleanup_) cleanup(t);
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class ByteFallbackDec : public Decoder {
 public:
  static int parse_byte(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; ++k) {
      char c = t[k];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return -1;
      v = v * 16 + d;
    }
    return v;
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (u::is_valid_utf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < pending.size(); ++k) out.push_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (const std::string& t : tokens) {
      int b = parse_byte(t);
      if (b >= 0) {
        pending.push_back(static_cast<char>(b));
      } else {
        flush();
        out.push_back(t);
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDec : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

class StripDec : public Decoder {
 public:
  StripDec(char32_t c, size_t start, size_t stop) : c_(c), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      auto cps = u::decode(t);
      size_t b = 0, e = cps.size();
      for (size_t k = 0; k < start_ && b < e && cps[b] == c_; ++k) ++b;
      for (size_t k = 0; k < stop_ && e > b && cps[e - 1] == c_; ++k) --e;
      std::string out;
      for (size_t i = b; i < e; ++i) u::append_utf8(out, cps[i]);
      t = std::move(out);
    }
  }

 private:
  char32_t c_;
  size_t start_, stop_;
};

class ReplaceDec : public Decoder {
 public:
  ReplaceDec(std::string literal, std::unique_ptr<Regex> re, std::string content)
      : literal_(std::move(literal)), re_(std::move(re)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& s : tokens) {
      std::string out;
      size_t prev = 0;
      if (re_) {
        for (auto [b, e] : re_->find_all(s)) {
          out.append(s, prev, b - prev);
          out += content_;
          prev = e;
        }
      } else if (!literal_.empty()) {
        for (size_t p = s.find(literal_); p != std::string::npos; p = s.find(literal_, prev)) {
          out.append(s, prev, p - prev);
          out += content_;
          prev = p + literal_.size();
        }
      }
      out.append(s, prev, std::string::npos);
      s = std::move(out);
    }
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> re_;
  std::string content_;
};

class BpeDec : public Decoder {
 public:
  explicit BpeDec(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string rep = i + 1 == tokens.size() ? "" : " ";
      std::string& s = tokens[i];
      std::string out;
      size_t prev = 0;
      if (!suffix_.empty()) {
        for (size_t p = s.find(suffix_); p != std::string::npos; p = s.find(suffix_, prev)) {
          out.append(s, prev, p - prev);
          out += rep;
          prev = p + suffix_.size();
        }
      }
      out.append(s, prev, std::string::npos);
      s = std::move(out);
    }
  }

 private:
  std::string suffix_;
};

class CtcDec : public Decoder {
 public:
  CtcDec(std::string pad, std::string delim, bool cleanup) : pad_(std::move(pad)), delim_(std::move(delim)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0 && tokens[i] == tokens[i - 1]) continue;
      std::string t = tokens[i] == pad_ ? "" : tokens[i];
      if (cleanup_) {
        WordPieceDec::cleanup(t);
        WordPieceDec::replace_all(t, delim_, " ");
      }
      if (!t.empty()) out.push_back(t);
    }
    tokens = std::move(out);
  }

 private:
  std::string pad_, delim_;
  bool cleanup_;
};

class DecSequence : public Decoder {
 public:
  explicit DecSequence(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

// --- post-processors ---

class NoopPost : public PostProcessor {
 public:
  void process(std::vector<int32_t>&) const override {}
};

class WrapPost : public PostProcessor {
 public:
  WrapPost(std::vector<int32_t> before, std::vector<int32_t> after) : before_(std::move(before)), after_(std::move(after)) {}
  void process(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), before_.begin(), before_.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
  }

 private:
  std::vector<int32_t> before_, after_;
};

class PostSequence : public PostProcessor {
 public:
  explicit PostSequence(std::vector<std::unique_ptr<PostProcessor>> parts) : parts_(std::move(parts)) {}
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& p : parts_) p->process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

int32_t pair_id(const json& j, const char* key, const char* what) {
  const json* p = tokjson::get(j, key);
  if (!p || !p->is_array() || p->size() != 2 || !(*p)[1].is_number_integer()) {
    invalid("[tokenizer] {}: '{}' must be [token, id]", what, key);
  }
  return (*p)[1].get<int32_t>();
}

}  // namespace

std::unique_ptr<Decoder> make_byte_level_decoder() { return std::make_unique<ByteLevelDec>(); }

std::unique_ptr<Decoder> make_spm_decoder(bool strip_leading_space) {
  std::vector<std::unique_ptr<Decoder>> parts;
  parts.push_back(std::make_unique<ReplaceDec>("\xE2\x96\x81", nullptr, " "));
  parts.push_back(std::make_unique<ByteFallbackDec>());
  parts.push_back(std::make_unique<FuseDec>());
  if (strip_leading_space) parts.push_back(std::make_unique<StripDec>(U' ', 1, 0));
  return std::make_unique<DecSequence>(std::move(parts));
}

std::unique_ptr<Decoder> make_decoder(const json& j) {
  std::string type = tokjson::type_of(j, "decoder");
  if (type == "ByteLevel") return std::make_unique<ByteLevelDec>();
  if (type == "Metaspace") {
    std::string rep = tokjson::str(j, "replacement", "\xE2\x96\x81");
    bool prepend = tokjson::boolean(j, "add_prefix_space", true);
    std::string ps = tokjson::str(j, "prepend_scheme", "");
    if (!ps.empty()) prepend = ps != "never";
    return std::make_unique<MetaspaceDec>(rep, prepend);
  }
  if (type == "WordPiece") {
    return std::make_unique<WordPieceDec>(tokjson::str(j, "prefix", "##"), tokjson::boolean(j, "cleanup", true));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDec>();
  if (type == "Fuse") return std::make_unique<FuseDec>();
  if (type == "Strip") {
    auto cps = u::decode(tokjson::str(j, "content", " "));
    if (cps.size() != 1) invalid("[tokenizer] Strip decoder content must be one character");
    return std::make_unique<StripDec>(cps[0], static_cast<size_t>(tokjson::integer(j, "start", 0)),
                                      static_cast<size_t>(tokjson::integer(j, "stop", 0)));
  }
  if (type == "Replace") {
    std::string literal;
    auto re = read_pattern(j, literal, "Replace decoder");
    return std::make_unique<ReplaceDec>(literal, std::move(re), tokjson::str(j, "content", ""));
  }
  if (type == "BPEDecoder") return std::make_unique<BpeDec>(tokjson::str(j, "suffix", "</w>"));
  if (type == "CTC") {
    return std::make_unique<CtcDec>(tokjson::str(j, "pad_token", "<pad>"), tokjson::str(j, "word_delimiter_token", "|"),
                                    tokjson::boolean(j, "cleanup", true));
  }
  if (type == "Sequence") {
    const json* list = tokjson::get(j, "decoders");
    if (!list || !list->is_array()) invalid("[tokenizer] Sequence decoder needs a 'decoders' array");
    std::vector<std::unique_ptr<Decoder>> parts;
    for (const json& d : *list) parts.push_back(make_decoder(d));
    return std::make_unique<DecSequence>(std::move(parts));
  }
  unsupported("[tokenizer] unknown decoder type '{}'", type);
}

std::unique_ptr<PostProcessor> make_post_processor(const json& j) {
  std::string type = tokjson::type_of(j, "post_processor");
  if (type == "ByteLevel") return std::make_unique<NoopPost>();
  if (type == "BertProcessing") {
    return std::make_unique<WrapPost>(std::vector<int32_t>{pair_id(j, "cls", "BertProcessing")},
                                      std::vector<int32_t>{pair_id(j, "sep", "BertProcessing")});
  }
  if (type == "RobertaProcessing") {
    return std::make_unique<WrapPost>(std::vector<int32_t>{pair_id(j, "cls", "RobertaProcessing")},
                                      std::vector<int32_t>{pair_id(j, "sep", "RobertaProcessing")});
  }
  if (type == "TemplateProcessing") {
    std::map<std::string, std::vector<int32_t>> specials;
    if (const json* st = tokjson::get(j, "special_tokens")) {
      if (!st->is_object()) invalid("[tokenizer] TemplateProcessing special_tokens must be an object");
      for (auto it = st->begin(); it != st->end(); ++it) {
        const json* ids = tokjson::get(it.value(), "ids");
        if (!ids || !ids->is_array()) invalid("[tokenizer] TemplateProcessing special token '{}' has no ids", it.key());
        specials[it.key()] = ids->get<std::vector<int32_t>>();
      }
    }
    const json* single = tokjson::get(j, "single");
    if (!single || !single->is_array()) invalid("[tokenizer] TemplateProcessing needs a 'single' template array");
    std::vector<int32_t> before, after;
    bool seen_seq = false;
    for (const json& piece : *single) {
      if (const json* sp = tokjson::get(piece, "SpecialToken")) {
        std::string id = tokjson::str_req(*sp, "id", "TemplateProcessing SpecialToken");
        auto it = specials.find(id);
        if (it == specials.end()) invalid("[tokenizer] TemplateProcessing uses unknown special token '{}'", id);
        auto& dst = seen_seq ? after : before;
        dst.insert(dst.end(), it->second.begin(), it->second.end());
      } else if (tokjson::get(piece, "Sequence")) {
        if (seen_seq) unsupported("[tokenizer] TemplateProcessing 'single' with two sequences");
        seen_seq = true;
      } else {
        invalid("[tokenizer] bad TemplateProcessing piece {}", piece.dump());
      }
    }
    return std::make_unique<WrapPost>(std::move(before), std::move(after));
  }
  if (type == "Sequence") {
    const json* list = tokjson::get(j, "processors");
    if (!list || !list->is_array()) invalid("[tokenizer] Sequence post_processor needs a 'processors' array");
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (const json& p : *list) parts.push_back(make_post_processor(p));
    return std::make_unique<PostSequence>(std::move(parts));
  }
  unsupported("[tokenizer] unknown post_processor type '{}'", type);
}

}  // namespace mlxcel
