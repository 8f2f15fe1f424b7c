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

class UnicodeNorm : public Normalizer {
 public:
  explicit UnicodeNorm(u::NormForm f) : form_(f) {}
  void normalize(std::string& s) const override { s = u::normalize(s, form_); }

 private:
  u::NormForm form_;
};

class Lowercase : public Normalizer {
 public:
  void normalize(std::string& s) const override { s = u::lowercase(s); }
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& s) const override {
    auto cps = u::decode(s);
    size_t b = 0, e = cps.size();
    if (left_) while (b < e && u::is_whitespace(cps[b])) ++b;
    if (right_) while (e > b && u::is_whitespace(cps[e - 1])) --e;
    std::string out;
    for (size_t i = b; i < e; ++i) u::append_utf8(out, cps[i]);
    s = std::move(out);
  }

 private:
  bool left_, right_;
};

class StripAccents : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    std::string out;
    for (size_t i = 0; i < s.size();) {
      char32_t c = u::next_cp(s, i);
      if (!u::is_mark(c)) u::append_utf8(out, c);
    }
    s = std::move(out);
  }
};

class Replace : public Normalizer {
 public:
  Replace(std::string literal, std::unique_ptr<Regex> re, std::string content)
      : literal_(std::move(literal)), re_(std::move(re)), content_(std::move(content)) {}
  void normalize(std::string& s) const override {
    std::string out;
    size_t prev = 0;
    if (re_) {
      for (auto [b, e] : re_->find_all(s)) {
        out.append(s, prev, b - prev);
        out += content_;
        prev = e;
      }
    } else {
      if (literal_.empty()) return;
      for (size_t p = s.find(literal_); p != std::string::npos; p = s.find(literal_, prev)) {
        out.append(s, prev, p - prev);
        out += content_;
        prev = p + literal_.size();
      }
    }
    out.append(s, prev, std::string::npos);
    s = std::move(out);
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> re_;
  std::string content_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string p) : prefix_(std::move(p)) {}
  void normalize(std::string& s) const override {
    if (!s.empty()) s = prefix_ + s;
  }

 private:
  std::string prefix_;
};

class BertNormalizer : public Normalizer {
 public:
  BertNormalizer(bool clean, bool chinese, bool strip_accents, bool lower)
      : clean_(clean), chinese_(chinese), strip_accents_(strip_accents), lower_(lower) {}
  void normalize(std::string& s) const override {
    std::string out;
    for (size_t i = 0; i < s.size();) {
      char32_t c = u::next_cp(s, i);
      if (clean_) {
        bool ws = c == '\t' || c == '\n' || c == '\r' || u::is_whitespace(c);
        bool ctrl = !(c == '\t' || c == '\n' || c == '\r') && u::is_other(c);
        if (c == 0 || c == 0xFFFD || ctrl) continue;
        if (ws) c = ' ';
      }
      if (chinese_ && u::is_chinese_char(c)) {
        out.push_back(' ');
        u::append_utf8(out, c);
        out.push_back(' ');
      } else {
        u::append_utf8(out, c);
      }
    }
    if (strip_accents_) {
      std::string nfd = u::normalize(out, u::NormForm::nfd);
      out.clear();
      for (size_t i = 0; i < nfd.size();) {
        char32_t c = u::next_cp(nfd, i);
        if (!u::is_mark_nonspacing(c)) u::append_utf8(out, c);
      }
    }
    if (lower_) out = u::lowercase(out);
    s = std::move(out);
  }

 private:
  bool clean_, chinese_, strip_accents_, lower_;
};

// SentencePiece's "nmt_nfkc" control-character clean-up (the part that is not the charsmap).
class Nmt : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    std::string out;
    for (size_t i = 0; i < s.size();) {
      char32_t c = u::next_cp(s, i);
      if ((c >= 0x01 && c <= 0x08) || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || c == 0x8F ||
          c == 0x9F) {
        continue;
      }
      if (c == 0x09 || c == 0x0A || c == 0x0C || c == 0x0D || c == 0x1680 || (c >= 0x200B && c <= 0x200F) ||
          c == 0x2028 || c == 0x2029 || c == 0x2581 || c == 0xFEFF || c == 0xFFFD) {
        c = ' ';
      }
      u::append_utf8(out, c);
    }
    s = std::move(out);
  }
};

class ByteLevelNorm : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    std::string out;
    for (unsigned char b : s) out += u::byte_to_unicode(b);
    s = std::move(out);
  }
};

class PrecompiledNorm : public Normalizer {
 public:
  explicit PrecompiledNorm(PrecompiledCharsmap m) : map_(std::move(m)) {}
  void normalize(std::string& s) const override { s = map_.normalize(s); }

 private:
  PrecompiledCharsmap map_;
};

class NormSequence : public Normalizer {
 public:
  explicit NormSequence(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void normalize(std::string& s) const override {
    for (const auto& p : parts_) p->normalize(s);
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
