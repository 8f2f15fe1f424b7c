// Normalizers of tokenizer.json (HF `tokenizers` semantics, offsets not tracked).
#include <nlohmann/json.hpp>

#include "tokenizer/components.h"
#include "tokenizer/json_util.h"
#include "tokenizer/precompiled.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace mlxcel {

namespace {

using nlohmann::json;
namespace u = unicode;

// Rewrites `t` character by character: f(c, out) appends c's replacement (possibly nothing);
// every output byte keeps the span of its source character.
template <typename F>
void map_chars(NormText& t, F&& f) {
  NormBuilder nb(t.track, t.text.size());
  std::string buf;
  for (size_t i = 0; i < t.text.size();) {
    size_t b = i;
    char32_t c = u::next_cp(t.text, i);
    buf.clear();
    f(c, buf);
    nb.add(buf, t.span(b, i));
  }
  t = nb.finish();
}

// Adds `out`, the replacement of t.text[b, e), with HF's transform alignment rule: output
// character k takes the span of replaced character k, extra output characters repeat the
// last span, surplus replaced characters are dropped.
void add_positional(NormBuilder& nb, const NormText& t, size_t b, size_t e, std::string_view out) {
  size_t src = b;
  Span last = b < t.align.size() ? t.align[b] : Span{};
  for (size_t i = 0; i < out.size();) {
    size_t cb = i;
    u::next_cp(out, i);
    if (src < e) {
      last = t.align[src];
      u::next_cp(t.text, src);
    }
    nb.add(out.substr(cb, i - cb), last);
  }
}

class UnicodeNorm : public Normalizer {
 public:
  explicit UnicodeNorm(u::NormForm f) : form_(f) {}
  void normalize(NormText& t) const override {
    if (!t.track) {
      t.text = u::normalize(t.text, form_);
      return;
    }
    // Chunk by chunk between normalization boundaries, aligned like HF's transform (e.g. NFC
    // "e" + U+0301 -> "é" keeps the span of "e"; NFD "é" -> both characters keep the span of é).
    NormBuilder nb(true, t.text.size());
    size_t start = 0;
    for (size_t i = 0; i < t.text.size();) {
      size_t b = i;
      char32_t c = u::next_cp(t.text, i);
      if (b > start && u::norm_boundary_before(c, form_)) {
        add_positional(nb, t, start, b, u::normalize(std::string_view(t.text).substr(start, b - start), form_));
        start = b;
      }
    }
    if (start < t.text.size()) {
      add_positional(nb, t, start, t.text.size(), u::normalize(std::string_view(t.text).substr(start), form_));
    }
    t = nb.finish();
  }

 private:
  u::NormForm form_;
};

class Lowercase : public Normalizer {
 public:
  void normalize(NormText& t) const override {
    if (!t.track) {
      t.text = u::lowercase(t.text);
      return;
    }
    map_chars(t, [](char32_t c, std::string& out) { out = u::lowercase(u::to_utf8(c)); });
  }
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void normalize(NormText& t) const override {
    size_t b = 0, e = t.text.size();
    if (left_) {
      while (b < e) {
        size_t i = b;
        if (!u::is_whitespace(u::next_cp(t.text, i))) break;
        b = i;
      }
    }
    if (right_) {
      while (e > b) {
        size_t p = e - 1;
        while (p > b && (static_cast<uint8_t>(t.text[p]) & 0xC0) == 0x80) --p;
        size_t q = p;
        if (!u::is_whitespace(u::next_cp(t.text, q))) break;
        e = p;
      }
    }
    if (b != 0 || e != t.text.size()) t = t.slice(b, e);
  }

 private:
  bool left_, right_;
};

class StripAccents : public Normalizer {
 public:
  void normalize(NormText& t) const override {
    map_chars(t, [](char32_t c, std::string& out) {
      if (!u::is_mark(c)) u::append_utf8(out, c);
    });
  }
};

class Replace : public Normalizer {
 public:
  Replace(std::string literal, std::unique_ptr<Regex> re, std::string content)
      : literal_(std::move(literal)), re_(std::move(re)), content_(std::move(content)) {}
  void normalize(NormText& t) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    if (re_) {
      matches = re_->find_all(t.text);
    } else if (!literal_.empty()) {
      for (size_t p = t.text.find(literal_); p != std::string::npos; p = t.text.find(literal_, p + literal_.size())) {
        matches.emplace_back(p, p + literal_.size());
      }
    }
    if (matches.empty()) return;
    NormBuilder nb(t.track, t.text.size());
    size_t prev = 0;
    for (auto [b, e] : matches) {
      nb.copy(t, prev, b);
      // HF: the content shares the alignment of the last replaced byte (of the byte before
      // an empty match; (0, 0) at the start).
      nb.add(content_, e > 0 && t.track ? t.align[e - 1] : Span{});
      prev = e;
    }
    nb.copy(t, prev, t.text.size());
    t = nb.finish();
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> re_;
  std::string content_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string p) : prefix_(std::move(p)) {}
  void normalize(NormText& t) const override {
    if (t.text.empty()) return;
    size_t first = 0;
    u::next_cp(t.text, first);
    NormBuilder nb(t.track, t.text.size() + prefix_.size());
    nb.add(prefix_, t.span(0, first));  // HF: the prefix shares the first character's span
    nb.copy(t, 0, t.text.size());
    t = nb.finish();
  }

 private:
  std::string prefix_;
};

class BertNormalizer : public Normalizer {
 public:
  BertNormalizer(bool clean, bool chinese, bool strip_accents, bool lower)
      : clean_(clean), chinese_(chinese), strip_accents_(strip_accents), lower_(lower) {}
  void normalize(NormText& t) const override {
    map_chars(t, [&](char32_t c, std::string& out) {
      if (clean_) {
        bool ws = c == '\t' || c == '\n' || c == '\r' || u::is_whitespace(c);
        bool ctrl = !(c == '\t' || c == '\n' || c == '\r') && u::is_other(c);
        if (c == 0 || c == 0xFFFD || ctrl) return;
        if (ws) c = ' ';
      }
      if (chinese_ && u::is_chinese_char(c)) {
        out.push_back(' ');
        u::append_utf8(out, c);
        out.push_back(' ');
      } else {
        u::append_utf8(out, c);
      }
    });
    if (strip_accents_) {
      UnicodeNorm(u::NormForm::nfd).normalize(t);
      map_chars(t, [](char32_t c, std::string& out) {
        if (!u::is_mark_nonspacing(c)) u::append_utf8(out, c);
      });
    }
    if (lower_) Lowercase().normalize(t);
  }

 private:
  bool clean_, chinese_, strip_accents_, lower_;
};

// SentencePiece's "nmt_nfkc" control-character clean-up (the part that is not the charsmap).
class Nmt : public Normalizer {
 public:
  void normalize(NormText& t) const override {
    map_chars(t, [](char32_t c, std::string& out) {
      if ((c >= 0x01 && c <= 0x08) || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || c == 0x8F ||
          c == 0x9F) {
        return;
      }
      if (c == 0x09 || c == 0x0A || c == 0x0C || c == 0x0D || c == 0x1680 || (c >= 0x200B && c <= 0x200F) ||
          c == 0x2028 || c == 0x2029 || c == 0x2581 || c == 0xFEFF || c == 0xFFFD) {
        c = ' ';
      }
      u::append_utf8(out, c);
    });
  }
};

class ByteLevelNorm : public Normalizer {
 public:
  void normalize(NormText& t) const override {
    NormBuilder nb(t.track, t.text.size() * 2);
    for (size_t i = 0; i < t.text.size(); ++i) nb.add(u::byte_to_unicode(static_cast<uint8_t>(t.text[i])), t.span(i, i + 1));
    t = nb.finish();
  }
};

class PrecompiledNorm : public Normalizer {
 public:
  explicit PrecompiledNorm(PrecompiledCharsmap m) : map_(std::move(m)) {}
  void normalize(NormText& t) const override {
    if (!t.track) {
      t.text = map_.normalize(t.text);
      return;
    }
    // HF replace(): positional alignment (see add_positional).
    NormBuilder nb(true, t.text.size());
    map_.normalize(t.text, [&](std::string_view piece, size_t b, size_t e) { add_positional(nb, t, b, e, piece); });
    t = nb.finish();
  }

 private:
  PrecompiledCharsmap map_;
};

class NormSequence : public Normalizer {
 public:
  explicit NormSequence(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void normalize(NormText& t) const override {
    for (const auto& p : parts_) p->normalize(t);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

std::unique_ptr<Normalizer> make_prepend(const std::string& prefix) { return std::make_unique<Prepend>(prefix); }
std::unique_ptr<Normalizer> make_replace(const std::string& from, const std::string& to) {
  return std::make_unique<Replace>(from, nullptr, to);
}
std::unique_ptr<Normalizer> make_norm_sequence(std::vector<std::unique_ptr<Normalizer>> parts) {
  return std::make_unique<NormSequence>(std::move(parts));
}

// Reads a {"String": s} / {"Regex": r} pattern; returns the regex or fills `literal`.
std::unique_ptr<Regex> read_pattern(const json& j, std::string& literal, const char* what) {
  const json* p = tokjson::get(j, "pattern");
  if (!p || !p->is_object()) invalid("[tokenizer] {}: missing 'pattern' object", what);
  if (const json* s = tokjson::get(*p, "String")) {
    if (!s->is_string()) invalid("[tokenizer] {}: pattern.String must be a string", what);
    literal = s->get<std::string>();
    return nullptr;
  }
  if (const json* r = tokjson::get(*p, "Regex")) {
    if (!r->is_string()) invalid("[tokenizer] {}: pattern.Regex must be a string", what);
    return std::make_unique<Regex>(r->get<std::string>());
  }
  invalid("[tokenizer] {}: pattern must have 'String' or 'Regex'", what);
}

std::unique_ptr<Normalizer> make_normalizer(const json& j) {
  std::string type = tokjson::type_of(j, "normalizer");
  if (type == "NFC") return std::make_unique<UnicodeNorm>(u::NormForm::nfc);
  if (type == "NFD") return std::make_unique<UnicodeNorm>(u::NormForm::nfd);
  if (type == "NFKC") return std::make_unique<UnicodeNorm>(u::NormForm::nfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNorm>(u::NormForm::nfkd);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Strip") {
    return std::make_unique<Strip>(tokjson::boolean(j, "strip_left", true), tokjson::boolean(j, "strip_right", true));
  }
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Replace") {
    std::string literal;
    auto re = read_pattern(j, literal, "Replace normalizer");
    return std::make_unique<Replace>(literal, std::move(re), tokjson::str(j, "content", ""));
  }
  if (type == "Prepend") return std::make_unique<Prepend>(tokjson::str_req(j, "prepend", "Prepend normalizer"));
  if (type == "BertNormalizer") {
    bool lower = tokjson::boolean(j, "lowercase", true);
    return std::make_unique<BertNormalizer>(tokjson::boolean(j, "clean_text", true),
                                            tokjson::boolean(j, "handle_chinese_chars", true),
                                            tokjson::boolean(j, "strip_accents", lower), lower);
  }
  if (type == "Nmt") return std::make_unique<Nmt>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelNorm>();
  if (type == "Sequence") {
    const json* list = tokjson::get(j, "normalizers");
    if (!list || !list->is_array()) invalid("[tokenizer] Sequence normalizer needs a 'normalizers' array");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const json& n : *list) parts.push_back(make_normalizer(n));
    return std::make_unique<NormSequence>(std::move(parts));
  }
  if (type == "Precompiled") {
    const json* cm = tokjson::get(j, "precompiled_charsmap");
    if (!cm || !cm->is_string()) invalid("[tokenizer] Precompiled normalizer needs a base64 'precompiled_charsmap' string");
    try {
      return std::make_unique<PrecompiledNorm>(PrecompiledCharsmap::parse(base64_decode(cm->get<std::string>())));
    } catch (const Error& e) {
      invalid("[tokenizer] Precompiled normalizer: {}", e.what());
    }
  }
  unsupported("[tokenizer] unknown normalizer type '{}'", type);
}

}  // namespace mlxcel
