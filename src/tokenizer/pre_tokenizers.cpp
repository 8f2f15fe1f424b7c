// Pre-tokenizers of tokenizer.json (HF `tokenizers` semantics; offsets follow NormText).
#include <functional>

#include <nlohmann/json.hpp>

#include "tokenizer/components.h"
#include "tokenizer/json_util.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace mlxcel {

namespace {

using nlohmann::json;
namespace u = unicode;
using Ranges = std::vector<std::pair<size_t, size_t>>;

enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

Behavior parse_behavior(const json& j, Behavior fallback) {
  const json* b = tokjson::get(j, "behavior");
  if (!b) return fallback;
  if (!b->is_string()) invalid("[tokenizer] 'behavior' must be a string");
  std::string s;
  for (char c : b->get<std::string>()) {
    if (c != '_') s.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (s == "removed") return Behavior::removed;
  if (s == "isolated") return Behavior::isolated;
  if (s == "mergedwithprevious") return Behavior::merged_with_previous;
  if (s == "mergedwithnext") return Behavior::merged_with_next;
  if (s == "contiguous") return Behavior::contiguous;
  invalid("[tokenizer] unknown split behavior '{}'", b->get<std::string>());
}

struct Piece {
  size_t b, e;
  bool flag;  // is_match before the behavior fold; "remove" after it
};

// Splits `in` around the match ranges with HF's SplitDelimiterBehavior semantics.
void split_by(const PreSplit& in, const Ranges& matches, Behavior behavior, bool invert,
              std::vector<PreSplit>& out) {
  const std::string& s = in.text;
  std::vector<Piece> ev;
  if (s.empty()) return;
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (prev != b) ev.push_back({prev, b, false});
    ev.push_back({b, e, true});
    prev = e;
  }
  if (prev != s.size()) ev.push_back({prev, s.size(), false});
  if (invert) {
    for (auto& p : ev) p.flag = !p.flag;
  }
  std::vector<Piece> res;
  switch (behavior) {
    case Behavior::isolated:
      for (auto& p : ev) res.push_back({p.b, p.e, false});
      break;
    case Behavior::removed:
      res = ev;
      break;
    case Behavior::contiguous: {
      bool prev_match = false;
      for (auto& p : ev) {
        if (p.flag == prev_match && !res.empty()) {
          res.back().e = p.e;
        } else {
          res.push_back({p.b, p.e, false});
        }
        prev_match = p.flag;
      }
      break;
    }
    case Behavior::merged_with_previous: {
      bool prev_match = false;
      for (auto& p : ev) {
        if (p.flag && !prev_match && !res.empty()) {
          res.back().e = p.e;
        } else {
          res.push_back({p.b, p.e, false});
        }
        prev_match = p.flag;
      }
      break;
    }
    case Behavior::merged_with_next: {
      bool prev_match = false;
      for (auto it = ev.rbegin(); it != ev.rend(); ++it) {
        if (it->flag && !prev_match && !res.empty()) {
          res.back().b = it->b;
        } else {
          res.push_back({it->b, it->e, false});
        }
        prev_match = it->flag;
      }
      std::reverse(res.begin(), res.end());
      break;
    }
  }
  for (auto& p : res) {
    if (p.flag || p.e <= p.b) continue;
    PreSplit piece;
    static_cast<NormText&>(piece) = in.slice(p.b, p.e);
    piece.at_start = in.at_start && p.b == 0;
    out.push_back(std::move(piece));
  }
}

Ranges char_matches(const std::string& s, const std::function<bool(char32_t)>& pred) {
  Ranges r;
  for (size_t i = 0; i < s.size();) {
    size_t b = i;
    char32_t c = u::next_cp(s, i);
    if (pred(c)) r.emplace_back(b, i);
  }
  return r;
}

Ranges literal_matches(const std::string& s, const std::string& lit) {
  Ranges r;
  if (lit.empty()) return r;
  for (size_t p = s.find(lit); p != std::string::npos; p = s.find(lit, p + lit.size())) {
    r.emplace_back(p, p + lit.size());
  }
  return r;
}

template <typename F>
void for_each_split(std::vector<PreSplit>& splits, F&& f) {
  std::vector<PreSplit> out;
  out.reserve(splits.size() * 2);
  for (const PreSplit& sp : splits) f(sp, out);
  splits = std::move(out);
}

const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

class SplitPre : public PreTokenizer {
 public:
  SplitPre(std::unique_ptr<Regex> re, std::string literal, Behavior b, bool invert)
      : re_(std::move(re)), literal_(std::move(literal)), behavior_(b), invert_(invert) {}
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    for_each_split(splits, [&](const PreSplit& sp, std::vector<PreSplit>& out) {
      split_by(sp, re_ ? re_->find_all(sp.text) : literal_matches(sp.text, literal_), behavior_, invert_, out);
    });
  }

 private:
  std::unique_ptr<Regex> re_;
  std::string literal_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevelPre : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), re_(use_regex ? std::make_unique<Regex>(kGpt2Pattern) : nullptr) {}
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    for_each_split(splits, [&](const PreSplit& sp0, std::vector<PreSplit>& out) {
      if (add_prefix_space_ && (sp0.text.empty() || sp0.text[0] != ' ')) {
        PreSplit sp;
        NormBuilder nb(sp0.track, sp0.text.size() + 1);
        nb.add(" ", sp0.span(0, sp0.text.empty() ? 0 : u::utf8_len(static_cast<uint8_t>(sp0.text[0]))));
        nb.copy(sp0, 0, sp0.text.size());
        static_cast<NormText&>(sp) = nb.finish();
        sp.at_start = sp0.at_start;
        emit(sp, out);
      } else {
        emit(sp0, out);
      }
    });
    for (PreSplit& sp : splits) {
      NormBuilder nb(sp.track, sp.text.size() * 2);
      for (size_t i = 0; i < sp.text.size(); ++i) {
        nb.add(u::byte_to_unicode(static_cast<uint8_t>(sp.text[i])), sp.span(i, i + 1));
      }
      static_cast<NormText&>(sp) = nb.finish();
    }
  }

 private:
  void emit(const PreSplit& sp, std::vector<PreSplit>& out) const {
    if (re_) {
      split_by(sp, re_->find_all(sp.text), Behavior::isolated, false, out);
    } else if (!sp.text.empty()) {
      out.push_back(sp);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> re_;
};

enum class PrependScheme { always, first, never };

class MetaspacePre : public PreTokenizer {
 public:
  MetaspacePre(char32_t rep, PrependScheme scheme, bool split)
      : rep_(rep), rep_str_(u::to_utf8(rep)), scheme_(scheme), split_(split) {}
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    for_each_split(splits, [&](const PreSplit& sp0, std::vector<PreSplit>& out) {
      bool starts = sp0.text.compare(0, 1, " ") == 0 || sp0.text.compare(0, rep_str_.size(), rep_str_) == 0;
      bool prepend = !starts && !sp0.text.empty() &&
                     (scheme_ == PrependScheme::always || (scheme_ == PrependScheme::first && sp0.at_start));
      NormBuilder nb(sp0.track, sp0.text.size() + 8);
      if (prepend) nb.add(rep_str_, sp0.span(0, u::utf8_len(static_cast<uint8_t>(sp0.text[0]))));
      size_t prev = 0;
      for (size_t i = 0; i < sp0.text.size(); ++i) {
        if (sp0.text[i] != ' ') continue;
        nb.copy(sp0, prev, i);
        nb.add(rep_str_, sp0.span(i, i + 1));
        prev = i + 1;
      }
      nb.copy(sp0, prev, sp0.text.size());
      PreSplit sp;
      static_cast<NormText&>(sp) = nb.finish();
      sp.at_start = sp0.at_start;
      if (split_) {
        split_by(sp, literal_matches(sp.text, rep_str_), Behavior::merged_with_next, false, out);
      } else if (!sp.text.empty()) {
        out.push_back(std::move(sp));
      }
    });
  }

 private:
  char32_t rep_;
  std::string rep_str_;
  PrependScheme scheme_;
  bool split_;
};

class PredicatePre : public PreTokenizer {
 public:
  PredicatePre(std::function<bool(char32_t)> pred, Behavior b) : pred_(std::move(pred)), behavior_(b) {}
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    for_each_split(splits, [&](const PreSplit& sp, std::vector<PreSplit>& out) {
      split_by(sp, char_matches(sp.text, pred_), behavior_, false, out);
    });
  }

 private:
  std::function<bool(char32_t)> pred_;
  Behavior behavior_;
};

class PreSequence : public PreTokenizer {
 public:
  explicit PreSequence(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    for (const auto& p : parts_) p->pre_tokenize(splits);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

// HF UnicodeScripts: a new piece wherever the script changes; "Any" characters (space,
// unassigned) join the current piece, and leading "Any" characters are dropped (HF's
// ranges start at the first character with a script).
class UnicodeScriptsPre : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    for_each_split(splits, [&](const PreSplit& sp, std::vector<PreSplit>& out) {
      std::vector<size_t> cuts;
      int last = -2;  // none yet
      for (size_t i = 0; i < sp.text.size();) {
        size_t b = i;
        int script = u::hf_script(u::next_cp(sp.text, i));
        if (script != -1 && last != -1 && last != script) cuts.push_back(b);
        if (script != -1) last = script;
      }
      cuts.push_back(sp.text.size());
      for (size_t k = 0; k + 1 < cuts.size(); ++k) {
        PreSplit piece;
        static_cast<NormText&>(piece) = sp.slice(cuts[k], cuts[k + 1]);
        piece.at_start = sp.at_start && cuts[k] == 0;
        out.push_back(std::move(piece));
      }
    });
  }
};

// HF FixedLength: pieces of `length` characters.
class FixedLengthPre : public PreTokenizer {
 public:
  explicit FixedLengthPre(size_t length) : length_(length) {}
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    for_each_split(splits, [&](const PreSplit& sp, std::vector<PreSplit>& out) {
      size_t start = 0, n = 0;
      for (size_t i = 0; i < sp.text.size();) {
        u::next_cp(sp.text, i);
        if (++n == length_ || i == sp.text.size()) {
          PreSplit piece;
          static_cast<NormText&>(piece) = sp.slice(start, i);
          piece.at_start = sp.at_start && start == 0;
          out.push_back(std::move(piece));
          start = i;
          n = 0;
        }
      }
    });
  }

 private:
  size_t length_;
};

// Unicode \w as HF's regex engine sees it (Alphabetic, marks, decimal digits, connector
// punctuation, Join_Control).
const char* kWhitespacePattern =
    "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]+|"
    "[^\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}\\s]+";

bool is_ascii_digit(char32_t c) { return c >= '0' && c <= '9'; }

}  // namespace

std::unique_ptr<PreTokenizer> make_regex_split(const std::string& pattern) {
  return std::make_unique<SplitPre>(std::make_unique<Regex>(pattern), "", Behavior::isolated, false);
}
std::unique_ptr<PreTokenizer> make_byte_level(bool add_prefix_space, bool use_regex) {
  return std::make_unique<ByteLevelPre>(add_prefix_space, use_regex);
}
std::unique_ptr<PreTokenizer> make_pre_sequence(std::vector<std::unique_ptr<PreTokenizer>> parts) {
  return std::make_unique<PreSequence>(std::move(parts));
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j) {
  std::string type = tokjson::type_of(j, "pre_tokenizer");
  if (type == "ByteLevel") {
    return make_byte_level(tokjson::boolean(j, "add_prefix_space", true), tokjson::boolean(j, "use_regex", true));
  }
  if (type == "Split") {
    std::string literal;
    auto re = read_pattern(j, literal, "Split pre-tokenizer");
    return std::make_unique<SplitPre>(std::move(re), literal, parse_behavior(j, Behavior::isolated),
                                      tokjson::boolean(j, "invert", false));
  }
  if (type == "Metaspace") {
    std::string rep = tokjson::str(j, "replacement", "\xE2\x96\x81");
    auto cps = u::decode(rep);
    if (cps.size() != 1) invalid("[tokenizer] Metaspace replacement must be one character, got '{}'", rep);
    PrependScheme scheme = tokjson::boolean(j, "add_prefix_space", true) ? PrependScheme::always : PrependScheme::never;
    std::string ps = tokjson::str(j, "prepend_scheme", "");
    if (ps == "always") scheme = PrependScheme::always;
    else if (ps == "first") scheme = PrependScheme::first;
    else if (ps == "never") scheme = PrependScheme::never;
    else if (!ps.empty()) invalid("[tokenizer] unknown Metaspace prepend_scheme '{}'", ps);
    return std::make_unique<MetaspacePre>(cps[0], scheme, tokjson::boolean(j, "split", true));
  }
  if (type == "Digits") {
    bool individual = tokjson::boolean(j, "individual_digits", false);
    return std::make_unique<PredicatePre>(is_ascii_digit, individual ? Behavior::isolated : Behavior::contiguous);
  }
  if (type == "Whitespace") {
    return std::make_unique<SplitPre>(std::make_unique<Regex>(kWhitespacePattern), "", Behavior::removed, true);
  }
  if (type == "WhitespaceSplit") return std::make_unique<PredicatePre>(u::is_whitespace, Behavior::removed);
  if (type == "Punctuation") {
    return std::make_unique<PredicatePre>(u::is_bert_punctuation, parse_behavior(j, Behavior::isolated));
  }
  if (type == "CharDelimiterSplit") {
    auto cps = u::decode(tokjson::str_req(j, "delimiter", "CharDelimiterSplit"));
    if (cps.size() != 1) invalid("[tokenizer] CharDelimiterSplit delimiter must be one character");
    char32_t d = cps[0];
    return std::make_unique<PredicatePre>([d](char32_t c) { return c == d; }, Behavior::removed);
  }
  if (type == "BertPreTokenizer") {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    parts.push_back(std::make_unique<PredicatePre>(u::is_whitespace, Behavior::removed));
    parts.push_back(std::make_unique<PredicatePre>(u::is_bert_punctuation, Behavior::isolated));
    return make_pre_sequence(std::move(parts));
  }
  if (type == "UnicodeScripts") return std::make_unique<UnicodeScriptsPre>();
  if (type == "FixedLength") {
    int64_t len = tokjson::integer(j, "length", 5);
    if (len <= 0) invalid("[tokenizer] FixedLength pre-tokenizer needs a positive 'length', got {}", len);
    return std::make_unique<FixedLengthPre>(static_cast<size_t>(len));
  }
  if (type == "Sequence") {
    const json* list = tokjson::get(j, "pretokenizers");
    if (!list || !list->is_array()) invalid("[tokenizer] Sequence pre-tokenizer needs a 'pretokenizers' array");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const json& p : *list) parts.push_back(make_pre_tokenizer(p));
    return make_pre_sequence(std::move(parts));
  }
  unsupported("[tokenizer] unknown pre_tokenizer type '{}'", type);
}

}  // namespace mlxcel
