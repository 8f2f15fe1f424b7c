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

// Appends special tokens (offsets (0, 0), mask 1, sequence id -1).
void add_specials(Encoding& e, const std::vector<int32_t>& ids, const std::vector<std::string>& tokens, int32_t type_id,
                  bool with_offsets) {
  for (size_t k = 0; k < ids.size(); ++k) {
    e.ids.push_back(ids[k]);
    e.type_ids.push_back(type_id);
    e.special_tokens_mask.push_back(1);
    e.sequence_ids.push_back(-1);
    if (with_offsets) {
      e.tokens.push_back(k < tokens.size() ? tokens[k] : std::string());
      e.offsets.emplace_back(0, 0);
    }
  }
}

void append(Encoding& dst, const Encoding& src) {
  dst.ids.insert(dst.ids.end(), src.ids.begin(), src.ids.end());
  dst.type_ids.insert(dst.type_ids.end(), src.type_ids.begin(), src.type_ids.end());
  dst.tokens.insert(dst.tokens.end(), src.tokens.begin(), src.tokens.end());
  dst.offsets.insert(dst.offsets.end(), src.offsets.begin(), src.offsets.end());
  dst.special_tokens_mask.insert(dst.special_tokens_mask.end(), src.special_tokens_mask.begin(), src.special_tokens_mask.end());
  dst.sequence_ids.insert(dst.sequence_ids.end(), src.sequence_ids.begin(), src.sequence_ids.end());
}

bool has_offsets(const Encoding& e) { return e.offsets.size() == e.ids.size() && e.tokens.size() == e.ids.size(); }

// HF byte_level::process_offsets: leading/trailing spaces ('Ġ' or whitespace) of a token
// leave its offsets.
void trim_offsets(Encoding& e, bool add_prefix_space) {
  if (!has_offsets(e)) return;
  auto is_space = [](char32_t c) { return c == 0x120 || u::is_whitespace(c); };
  for (size_t i = 0; i < e.ids.size(); ++i) {
    auto cps = u::decode(e.tokens[i]);
    size_t lead = 0, trail = 0;
    while (lead < cps.size() && is_space(cps[lead])) ++lead;
    while (trail < cps.size() && is_space(cps[cps.size() - 1 - trail])) ++trail;
    auto& [b, en] = e.offsets[i];
    if (lead > 0) {
      bool is_first = i == 0 || b == 0;
      if (is_first && add_prefix_space && lead == 1) lead = 0;
      b = std::min(b + lead, en);
    }
    if (trail > 0 && en >= trail) en = std::max(en - trail, b);
  }
}

class ByteLevelPost : public PostProcessor {
 public:
  ByteLevelPost(bool trim, bool add_prefix_space) : trim_(trim), add_prefix_space_(add_prefix_space) {}
  void process(std::vector<Encoding>& encs, bool) const override {
    if (!trim_) return;
    for (Encoding& e : encs) trim_offsets(e, add_prefix_space_);
  }

 private:
  bool trim_, add_prefix_space_;
};

struct NamedId {
  std::string token;
  int32_t id;
};

class BertPost : public PostProcessor {
 public:
  BertPost(NamedId cls, NamedId sep) : cls_(std::move(cls)), sep_(std::move(sep)) {}
  void process(std::vector<Encoding>& encs, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    bool off = has_offsets(encs[0]);
    std::vector<Encoding> out(encs.size());
    add_specials(out[0], {cls_.id}, {cls_.token}, 0, off);
    append(out[0], encs[0]);
    add_specials(out[0], {sep_.id}, {sep_.token}, 0, off);
    if (encs.size() > 1) {
      Encoding b = encs[1];
      std::fill(b.type_ids.begin(), b.type_ids.end(), 1);
      append(out[1], b);
      add_specials(out[1], {sep_.id}, {sep_.token}, 1, off);
    }
    encs = std::move(out);
  }

 private:
  NamedId cls_, sep_;
};

class RobertaPost : public PostProcessor {
 public:
  RobertaPost(NamedId cls, NamedId sep, bool trim, bool add_prefix_space)
      : cls_(std::move(cls)), sep_(std::move(sep)), trim_(trim), add_prefix_space_(add_prefix_space) {}
  void process(std::vector<Encoding>& encs, bool add_special_tokens) const override {
    for (Encoding& e : encs) {
      if (trim_) trim_offsets(e, add_prefix_space_);
      std::fill(e.type_ids.begin(), e.type_ids.end(), 0);
    }
    if (!add_special_tokens) return;
    bool off = has_offsets(encs[0]);
    std::vector<Encoding> out(encs.size());
    add_specials(out[0], {cls_.id}, {cls_.token}, 0, off);
    append(out[0], encs[0]);
    add_specials(out[0], {sep_.id}, {sep_.token}, 0, off);
    if (encs.size() > 1) {
      add_specials(out[1], {sep_.id}, {sep_.token}, 0, off);
      append(out[1], encs[1]);
      add_specials(out[1], {sep_.id}, {sep_.token}, 0, off);
    }
    encs = std::move(out);
  }

 private:
  NamedId cls_, sep_;
  bool trim_, add_prefix_space_;
};

class TemplatePost : public PostProcessor {
 public:
  struct Piece {
    int seq = -1;  // 0 = $A, 1 = $B; -1: special token
    int32_t type_id = 0;
    std::vector<int32_t> ids;
    std::vector<std::string> tokens;
  };
  TemplatePost(std::vector<Piece> single, std::vector<Piece> pair) : single_(std::move(single)), pair_(std::move(pair)) {}
  void process(std::vector<Encoding>& encs, bool add_special_tokens) const override {
    // NOTE: an empty pair template yields an empty encoding, as in HF.
    const std::vector<Piece>& tmpl = encs.size() > 1 ? pair_ : single_;
    bool off = has_offsets(encs[0]);
    Encoding out;
    for (const Piece& p : tmpl) {
      if (p.seq >= 0) {
        if (static_cast<size_t>(p.seq) >= encs.size()) continue;
        Encoding e = encs[static_cast<size_t>(p.seq)];
        std::fill(e.type_ids.begin(), e.type_ids.end(), p.type_id);
        append(out, e);
      } else if (add_special_tokens) {
        add_specials(out, p.ids, p.tokens, p.type_id, off);
      }
    }
    encs.assign(1, std::move(out));
  }

 private:
  std::vector<Piece> single_, pair_;
};

class PostSequence : public PostProcessor {
 public:
  explicit PostSequence(std::vector<std::unique_ptr<PostProcessor>> parts) : parts_(std::move(parts)) {}
  void process(std::vector<Encoding>& encs, bool add_special_tokens) const override {
    for (const auto& p : parts_) p->process(encs, add_special_tokens);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

NamedId named_id(const json& j, const char* key, const char* what) {
  const json* p = tokjson::get(j, key);
  if (!p || !p->is_array() || p->size() != 2 || !(*p)[0].is_string() || !(*p)[1].is_number_integer()) {
    invalid("[tokenizer] {}: '{}' must be [token, id]", what, key);
  }
  return {(*p)[0].get<std::string>(), (*p)[1].get<int32_t>()};
}

std::vector<TemplatePost::Piece> read_template(const json* list, const std::map<std::string, TemplatePost::Piece>& specials,
                                               const char* which) {
  std::vector<TemplatePost::Piece> out;
  if (!list) return out;
  if (!list->is_array()) invalid("[tokenizer] TemplateProcessing '{}' must be an array", which);
  for (const json& piece : *list) {
    if (const json* sp = tokjson::get(piece, "SpecialToken")) {
      std::string id = tokjson::str_req(*sp, "id", "TemplateProcessing SpecialToken");
      auto it = specials.find(id);
      if (it == specials.end()) invalid("[tokenizer] TemplateProcessing uses unknown special token '{}'", id);
      TemplatePost::Piece p = it->second;
      p.type_id = static_cast<int32_t>(tokjson::integer(*sp, "type_id", 0));
      out.push_back(std::move(p));
    } else if (const json* sq = tokjson::get(piece, "Sequence")) {
      std::string id = tokjson::str(*sq, "id", "A");
      TemplatePost::Piece p;
      if (id == "A") p.seq = 0;
      else if (id == "B") p.seq = 1;
      else invalid("[tokenizer] TemplateProcessing sequence id must be A or B, got '{}'", id);
      p.type_id = static_cast<int32_t>(tokjson::integer(*sq, "type_id", 0));
      out.push_back(std::move(p));
    } else {
      invalid("[tokenizer] bad TemplateProcessing piece {}", piece.dump());
    }
  }
  return out;
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
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPost>(tokjson::boolean(j, "trim_offsets", true),
                                           tokjson::boolean(j, "add_prefix_space", true));
  }
  if (type == "BertProcessing") {
    return std::make_unique<BertPost>(named_id(j, "cls", "BertProcessing"), named_id(j, "sep", "BertProcessing"));
  }
  if (type == "RobertaProcessing") {
    return std::make_unique<RobertaPost>(named_id(j, "cls", "RobertaProcessing"), named_id(j, "sep", "RobertaProcessing"),
                                         tokjson::boolean(j, "trim_offsets", true),
                                         tokjson::boolean(j, "add_prefix_space", true));
  }
  if (type == "TemplateProcessing") {
    std::map<std::string, TemplatePost::Piece> specials;
    if (const json* st = tokjson::get(j, "special_tokens")) {
      if (!st->is_object()) invalid("[tokenizer] TemplateProcessing special_tokens must be an object");
      for (auto it = st->begin(); it != st->end(); ++it) {
        const json* ids = tokjson::get(it.value(), "ids");
        if (!ids || !ids->is_array()) invalid("[tokenizer] TemplateProcessing special token '{}' has no ids", it.key());
        TemplatePost::Piece p;
        p.ids = ids->get<std::vector<int32_t>>();
        if (const json* toks = tokjson::get(it.value(), "tokens"); toks && toks->is_array()) {
          p.tokens = toks->get<std::vector<std::string>>();
        }
        if (p.tokens.size() != p.ids.size()) p.tokens.assign(p.ids.size(), it.key());
        specials[it.key()] = std::move(p);
      }
    }
    const json* single = tokjson::get(j, "single");
    if (!single || !single->is_array()) invalid("[tokenizer] TemplateProcessing needs a 'single' template array");
    std::vector<TemplatePost::Piece> pair;
    if (const json* pj = tokjson::get(j, "pair")) {
      pair = read_template(pj, specials, "pair");
    } else {  // HF's builder default "$A:0 $B:1" (HF's deserializer would reject the file)
      pair.resize(2);
      pair[0].seq = 0;
      pair[1].seq = 1;
      pair[1].type_id = 1;
    }
    return std::make_unique<TemplatePost>(read_template(single, specials, "single"), std::move(pair));
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
