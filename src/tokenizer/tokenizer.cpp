#include "tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "tokenizer/json_util.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace mlxcel {

namespace u = unicode;
using nlohmann::json;

// ---------------------------------------------------------------- AddedMatcher

void AddedMatcher::add(const std::string& content, int token_index) {
  if (content.empty()) return;
  int node = 0;
  for (unsigned char c : content) {
    uint64_t key = (static_cast<uint64_t>(node) << 8) | c;
    auto it = edges_.find(key);
    if (it == edges_.end()) {
      edges_.emplace(key, n_nodes_);
      terminal_.push_back(-1);
      node = n_nodes_++;
    } else {
      node = it->second;
    }
  }
  if (terminal_[node] < 0) ++n_patterns_;
  terminal_[node] = token_index;
}

std::pair<int, size_t> AddedMatcher::longest_at(std::string_view s, size_t pos) const {
  int node = 0;
  std::pair<int, size_t> best{-1, 0};
  for (size_t i = pos; i < s.size(); ++i) {
    auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(s[i]));
    if (it == edges_.end()) break;
    node = it->second;
    if (terminal_[node] >= 0) best = {terminal_[node], i + 1 - pos};
  }
  return best;
}

namespace {

// Regex-crate \w and \s as HF uses them for single_word / lstrip / rstrip.
bool is_word_char(char32_t c) {
  return u::is_alphanumeric(c) || u::is_mark(c) || c == '_' || c == 0x200C || c == 0x200D ||
         (c >= 0x203F && c <= 0x2040) || c == 0x2054 || c == 0xFE33 || c == 0xFE34 ||
         (c >= 0xFE4D && c <= 0xFE4F) || c == 0xFF3F;
}

char32_t last_cp(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && (static_cast<uint8_t>(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i > 0) --i;
  size_t j = i;
  return u::next_cp(s, j);
}

struct Segment {
  NormText t;
  int32_t id = -1;  // >= 0: an added token
  bool at_start = false;
  Span span;  // original span of an added token
};

// HF AddedVocabulary::find_matches over `in`, appending to `out`.
void split_added(const TokenizerImpl& t, const AddedMatcher& m, NormText in, bool at_start, std::vector<Segment>& out) {
  const std::string& s = in.text;
  if (m.empty()) {
    out.push_back({std::move(in), -1, at_start, {}});
    return;
  }
  size_t start_offset = 0;
  size_t i = 0;
  while (i < s.size()) {
    auto [idx, len] = m.longest_at(s, i);
    if (idx < 0) {
      ++i;
      continue;
    }
    const AddedToken& tok = t.added[static_cast<size_t>(idx)];
    size_t start = i, stop = i + len;
    i = stop;
    if (tok.single_word) {
      bool start_space = start == 0 || !is_word_char(last_cp(std::string_view(s).substr(0, start)));
      size_t k = stop;
      bool stop_space = stop == s.size() || !is_word_char(u::next_cp(s, k));
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) {
      size_t b = start;
      while (b > 0) {
        size_t p = b - 1;
        while (p > 0 && (static_cast<uint8_t>(s[p]) & 0xC0) == 0x80) --p;
        size_t q = p;
        if (!u::is_whitespace(u::next_cp(s, q))) break;
        b = p;
      }
      start = std::max(b, start_offset);
    }
    if (tok.rstrip) {
      size_t e = stop;
      while (e < s.size()) {
        size_t q = e;
        if (!u::is_whitespace(u::next_cp(s, q))) break;
        e = q;
      }
      stop = e;
      i = stop;
    }
    if (start > start_offset) out.push_back({in.slice(start_offset, start), -1, at_start && start_offset == 0, {}});
    out.push_back({NormText{}, tok.id, false, in.span(start, stop)});
    start_offset = stop;
  }
  if (start_offset < s.size() || s.empty()) {
    out.push_back({in.slice(start_offset, s.size()), -1, at_start && start_offset == 0, {}});
  }
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw_error(ErrorKind::not_found, "[tokenizer] cannot open '{}'", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

void TokenizerImpl::set_added(std::vector<AddedToken> tokens) {
  added = std::move(tokens);
  added_by_id.clear();
  added_by_content.clear();
  special_ids.clear();
  raw_matcher = AddedMatcher();
  normalized_matcher = AddedMatcher();
  raw_matcher_plain = AddedMatcher();
  normalized_matcher_plain = AddedMatcher();
  for (size_t i = 0; i < added.size(); ++i) {
    const AddedToken& a = added[i];
    added_by_id[a.id] = i;
    added_by_content[a.content] = a.id;
    if (a.special) special_ids.insert(a.id);
    std::string c = a.content;
    if (a.normalized && normalizer) c = normalizer->normalize_str(c);
    AddedMatcher& all = a.normalized ? normalized_matcher : raw_matcher;
    AddedMatcher& plain = a.normalized ? normalized_matcher_plain : raw_matcher_plain;
    all.add(c, static_cast<int>(i));
    if (!a.special) plain.add(c, static_cast<int>(i));
  }
}

// ---------------------------------------------------------------- Tokenizer

Tokenizer Tokenizer::from_json(std::string_view text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    invalid("[tokenizer] tokenizer.json is not valid JSON: {}", e.what());
  }
  if (!j.is_object()) invalid("[tokenizer] tokenizer.json must be a JSON object");
  auto impl = std::make_shared<TokenizerImpl>();
  try {
    const json* model = tokjson::get(j, "model");
    if (!model) invalid("[tokenizer] tokenizer.json has no 'model'");
    impl->model = make_model(*model);
    if (const json* n = tokjson::get(j, "normalizer")) impl->normalizer = make_normalizer(*n);
    if (const json* p = tokjson::get(j, "pre_tokenizer")) impl->pre_tokenizer = make_pre_tokenizer(*p);
    if (const json* p = tokjson::get(j, "post_processor")) impl->post_processor = make_post_processor(*p);
    if (const json* d = tokjson::get(j, "decoder")) impl->decoder = make_decoder(*d);
    std::vector<AddedToken> added;
    if (const json* at = tokjson::get(j, "added_tokens")) {
      if (!at->is_array()) invalid("[tokenizer] 'added_tokens' must be an array");
      for (const json& a : *at) {
        AddedToken t;
        t.id = static_cast<int32_t>(tokjson::integer(a, "id", -1));
        t.content = tokjson::str_req(a, "content", "added token");
        if (t.id < 0) invalid("[tokenizer] added token '{}' has no valid id", t.content);
        t.special = tokjson::boolean(a, "special", false);
        t.normalized = tokjson::boolean(a, "normalized", !t.special);
        t.lstrip = tokjson::boolean(a, "lstrip", false);
        t.rstrip = tokjson::boolean(a, "rstrip", false);
        t.single_word = tokjson::boolean(a, "single_word", false);
        added.push_back(std::move(t));
      }
    }
    impl->set_added(std::move(added));
  } catch (const json::exception& e) {
    invalid("[tokenizer] malformed tokenizer.json: {}", e.what());
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::string text = read_file(path);
  try {
    return from_json(text);
  } catch (const Error& e) {
    throw Error(e.kind(), fmt::format("{} (in {})", e.what(), path));
  }
}

namespace {
// Encodes one sequence without post-processing; with `track`, fills tokens and offsets.
Encoding encode_one(const TokenizerImpl& t, std::string_view input, bool parse_special, bool track, int32_t seq_id) {
  Encoding enc;
  NormText text;
  text.text = u::sanitize_utf8(input);
  text.track = track;
  if (track) {
    text.align.resize(text.text.size());
    for (size_t i = 0; i < text.text.size();) {
      size_t b = i;
      u::next_cp(text.text, i);
      for (size_t k = b; k < i; ++k) text.align[k] = {static_cast<uint32_t>(b), static_cast<uint32_t>(i)};
    }
  }
  std::vector<Segment> raw;
  split_added(t, parse_special ? t.raw_matcher : t.raw_matcher_plain, std::move(text), true, raw);
  std::vector<Segment> segs;
  for (Segment& s : raw) {
    if (s.id >= 0) {
      segs.push_back(std::move(s));
      continue;
    }
    if (t.normalizer) t.normalizer->normalize(s.t);
    split_added(t, parse_special ? t.normalized_matcher : t.normalized_matcher_plain, std::move(s.t), s.at_start, segs);
  }
  std::vector<PreSplit> splits;
  std::vector<std::pair<uint32_t, uint32_t>> offs;
  auto push_token_info = [&](int32_t id, Span sp) {
    if (!track) return;
    auto it = t.added_by_id.find(id);
    const std::string* tok = it != t.added_by_id.end() ? &t.added[it->second].content : t.model->id_to_token(id);
    enc.tokens.push_back(tok ? *tok : std::string());
    enc.offsets.emplace_back(sp.b, sp.e);
  };
  for (Segment& s : segs) {
    if (s.id >= 0) {
      enc.ids.push_back(s.id);
      push_token_info(s.id, s.span);
      continue;
    }
    if (s.t.text.empty()) continue;
    splits.assign(1, PreSplit{});
    static_cast<NormText&>(splits[0]) = std::move(s.t);
    splits[0].at_start = s.at_start;
    if (t.pre_tokenizer) t.pre_tokenizer->pre_tokenize(splits);
    for (const PreSplit& p : splits) {
      if (p.text.empty()) continue;
      if (!track) {
        t.model->tokenize(p.text, enc.ids);
        continue;
      }
      size_t before = enc.ids.size();
      offs.clear();
      t.model->tokenize_offsets(p.text, enc.ids, offs);
      for (size_t k = before; k < enc.ids.size(); ++k) {
        auto [b, e] = k - before < offs.size() ? offs[k - before] : std::pair<uint32_t, uint32_t>{0, 0};
        push_token_info(enc.ids[k], p.span(b, e));
      }
    }
  }
  if (track) {  // the ids-only path (encode) skips the per-token side vectors
    enc.type_ids.assign(enc.ids.size(), seq_id);  // HF: the pair's second sequence gets type 1 unless a post-processor says otherwise
    enc.special_tokens_mask.assign(enc.ids.size(), 0);
    enc.sequence_ids.assign(enc.ids.size(), seq_id);
  }
  return enc;
}

Encoding encode_seqs(const TokenizerImpl& t, std::vector<Encoding> encs, bool add_special_tokens) {
  if (t.post_processor) t.post_processor->process(encs, add_special_tokens);
  Encoding out = std::move(encs[0]);
  for (size_t k = 1; k < encs.size(); ++k) {
    const Encoding& e = encs[k];
    out.ids.insert(out.ids.end(), e.ids.begin(), e.ids.end());
    out.type_ids.insert(out.type_ids.end(), e.type_ids.begin(), e.type_ids.end());
    out.tokens.insert(out.tokens.end(), e.tokens.begin(), e.tokens.end());
    out.offsets.insert(out.offsets.end(), e.offsets.begin(), e.offsets.end());
    out.special_tokens_mask.insert(out.special_tokens_mask.end(), e.special_tokens_mask.begin(), e.special_tokens_mask.end());
    out.sequence_ids.insert(out.sequence_ids.end(), e.sequence_ids.begin(), e.sequence_ids.end());
  }
  return out;
}

}  // namespace

std::vector<std::pair<size_t, size_t>> char_offsets(std::string_view text,
                                                    const std::vector<std::pair<size_t, size_t>>& byte_offsets) {
  std::string s = u::sanitize_utf8(text);
  std::vector<size_t> char_at(s.size() + 1, 0);  // byte offset -> chars before it
  size_t n = 0;
  for (size_t i = 0; i < s.size();) {
    size_t b = i;
    u::next_cp(s, i);
    for (size_t k = b; k < i; ++k) char_at[k] = n;
    ++n;
  }
  char_at[s.size()] = n;
  std::vector<std::pair<size_t, size_t>> out;
  out.reserve(byte_offsets.size());
  for (auto [b, e] : byte_offsets) out.emplace_back(char_at[std::min(b, s.size())], char_at[std::min(e, s.size())]);
  return out;
}

Encoding Tokenizer::encode_full(std::string_view text, bool add_special_tokens, bool parse_special) const {
  std::vector<Encoding> encs;
  encs.push_back(encode_one(*impl_, text, parse_special, true, 0));
  return encode_seqs(*impl_, std::move(encs), add_special_tokens);
}

Encoding Tokenizer::encode_pair(std::string_view a, std::string_view b, bool add_special_tokens, bool parse_special) const {
  std::vector<Encoding> encs;
  encs.push_back(encode_one(*impl_, a, parse_special, true, 0));
  encs.push_back(encode_one(*impl_, b, parse_special, true, 1));
  return encode_seqs(*impl_, std::move(encs), add_special_tokens);
}

std::vector<int32_t> Tokenizer::encode(std::string_view input, bool add_special_tokens, bool parse_special) const {
  std::vector<Encoding> encs;
  encs.push_back(encode_one(*impl_, input, parse_special, false, 0));
  return encode_seqs(*impl_, std::move(encs), add_special_tokens).ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const TokenizerImpl& t = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (skip_special_tokens && t.special_ids.count(id)) continue;
    auto it = t.added_by_id.find(id);
    if (it != t.added_by_id.end()) {
      tokens.push_back(t.added[it->second].content);
    } else if (const std::string* s = t.model->id_to_token(id)) {
      tokens.push_back(*s);
    }
  }
  std::string out;
  if (t.decoder) {
    t.decoder->decode_chain(tokens);
    for (const auto& s : tokens) out += s;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out.push_back(' ');
      out += tokens[i];
    }
  }
  return out;
}

std::string Tokenizer::normalize(std::string_view text) const {
  std::string s = u::sanitize_utf8(text);
  return impl_->normalizer ? impl_->normalizer->normalize_str(std::move(s)) : s;
}

std::optional<int32_t> Tokenizer::token_to_id(const std::string& token) const {
  auto it = impl_->added_by_content.find(token);
  if (it != impl_->added_by_content.end()) return it->second;
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return impl_->added[it->second].content;
  if (const std::string* s = impl_->model->id_to_token(id)) return *s;
  return std::nullopt;
}

size_t Tokenizer::vocab_size() const {
  size_t n = impl_->model->vocab_size();
  for (const AddedToken& a : impl_->added) n = std::max(n, static_cast<size_t>(a.id) + 1);
  return n;
}

bool Tokenizer::is_special(int32_t id) const { return impl_->special_ids.count(id) != 0; }

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

std::vector<int32_t> Tokenizer::add_tokens(const std::vector<AddedToken>& tokens) {
  std::vector<AddedToken> all = impl_->added;
  std::vector<int32_t> ids;
  size_t next = vocab_size();
  for (AddedToken a : tokens) {
    auto existing = token_to_id(a.content);
    a.id = existing ? *existing : static_cast<int32_t>(next++);
    ids.push_back(a.id);
    bool dup = false;
    for (auto& old : all) {
      if (old.content == a.content) {
        old = a;
        dup = true;
      }
    }
    if (!dup) all.push_back(a);
  }
  // NOTE: the pipeline moves into a fresh impl; copies of this Tokenizer made earlier share
  // the old impl and must not be used after add_tokens.
  auto impl = std::make_shared<TokenizerImpl>();
  impl->normalizer = std::move(impl_->normalizer);
  impl->pre_tokenizer = std::move(impl_->pre_tokenizer);
  impl->model = std::move(impl_->model);
  impl->post_processor = std::move(impl_->post_processor);
  impl->decoder = std::move(impl_->decoder);
  impl->set_added(std::move(all));
  impl_ = std::move(impl);
  return ids;
}

// ---------------------------------------------------------------- StreamDecoder

namespace {
bool ends_with_replacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}
}  // namespace

std::string StreamDecoder::step(int32_t id) {
  if (prefix_.empty() && !ids_.empty()) {
    std::string p = tok_.decode(ids_, skip_special_);
    if (!ends_with_replacement(p)) {
      prefix_ = std::move(p);
      prefix_index_ = ids_.size();
    }
  }
  ids_.push_back(id);
  std::string s = tok_.decode(ids_, skip_special_);
  if (s.size() <= prefix_.size() || ends_with_replacement(s)) return {};
  size_t common = 0;
  while (common < prefix_.size() && s[common] == prefix_[common]) ++common;
  std::string fresh = s.substr(common);
  // Keep only the context after the old prefix, as HF's DecodeStream does.
  size_t new_prefix_index = ids_.size() - prefix_index_;
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<long>(prefix_index_));
  prefix_ = tok_.decode(ids_, skip_special_);
  prefix_index_ = new_prefix_index;
  return fresh;
}

std::string StreamDecoder::flush() {
  std::string s = tok_.decode(ids_, skip_special_);
  std::string out = s.size() > prefix_.size() ? s.substr(prefix_.size()) : std::string();
  ids_.clear();
  prefix_.clear();
  prefix_index_ = 0;
  return out;
}

// ---------------------------------------------------------------- TokenizerBundle

namespace {

std::optional<std::string> token_field(const json& cfg, const char* key) {
  const json* v = tokjson::get(cfg, key);
  if (!v) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  if (v->is_object()) {
    const json* c = tokjson::get(*v, "content");
    if (c && c->is_string()) return c->get<std::string>();
  }
  invalid("[tokenizer] tokenizer_config.json '{}' must be a string or an AddedToken object", key);
}

json read_json_file(const std::string& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    invalid("[tokenizer] {} is not valid JSON: {}", path, e.what());
  }
}

}  // namespace

TokenizerBundle load_tokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path root(dir);
  fs::path tj = root / "tokenizer.json";
  if (!fs::exists(tj)) throw_error(ErrorKind::not_found, "[tokenizer] no tokenizer.json in '{}'", dir);
  TokenizerBundle b{Tokenizer::from_file(tj.string()), {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  if (fs::exists(root / "tokenizer_config.json")) {
    json cfg = read_json_file((root / "tokenizer_config.json").string());
    b.bos_token = token_field(cfg, "bos_token");
    b.eos_token = token_field(cfg, "eos_token");
    b.pad_token = token_field(cfg, "pad_token");
    b.unk_token = token_field(cfg, "unk_token");
    if (const json* v = tokjson::get(cfg, "add_bos_token"); v && v->is_boolean()) b.add_bos_token = v->get<bool>();
    if (const json* v = tokjson::get(cfg, "add_eos_token"); v && v->is_boolean()) b.add_eos_token = v->get<bool>();
    if (const json* ct = tokjson::get(cfg, "chat_template")) {
      if (ct->is_string()) {
        b.chat_template = ct->get<std::string>();
      } else if (ct->is_array()) {
        for (const json& e : *ct) {
          std::string name = tokjson::str_req(e, "name", "chat_template entry");
          std::string tmpl = tokjson::str_req(e, "template", "chat_template entry");
          b.named_chat_templates[name] = tmpl;
        }
        auto it = b.named_chat_templates.find("default");
        if (it != b.named_chat_templates.end()) b.chat_template = it->second;
      } else {
        invalid("[tokenizer] chat_template must be a string or a list of {{name, template}}");
      }
    }
  }
  if (fs::exists(root / "chat_template.jinja")) b.chat_template = read_file((root / "chat_template.jinja").string());
  if (b.bos_token) b.bos_token_id = b.tokenizer.token_to_id(*b.bos_token);
  if (b.pad_token) b.pad_token_id = b.tokenizer.token_to_id(*b.pad_token);
  auto add_eos = [&](int32_t id) {
    if (std::find(b.eos_token_ids.begin(), b.eos_token_ids.end(), id) == b.eos_token_ids.end()) b.eos_token_ids.push_back(id);
  };
  if (fs::exists(root / "generation_config.json")) {
    json gen = read_json_file((root / "generation_config.json").string());
    if (const json* e = tokjson::get(gen, "eos_token_id")) {
      if (e->is_number_integer()) {
        add_eos(e->get<int32_t>());
      } else if (e->is_array()) {
        for (const json& x : *e) {
          if (!x.is_number_integer()) invalid("[tokenizer] generation_config eos_token_id entries must be integers");
          add_eos(x.get<int32_t>());
        }
      } else {
        invalid("[tokenizer] generation_config eos_token_id must be an int or a list of ints");
      }
    }
    if (!b.bos_token_id) {
      if (const json* v = tokjson::get(gen, "bos_token_id"); v && v->is_number_integer()) b.bos_token_id = v->get<int32_t>();
    }
  }
  if (b.eos_token) {
    if (auto id = b.tokenizer.token_to_id(*b.eos_token)) add_eos(*id);
  }
  return b;
}

}  // namespace mlxcel
