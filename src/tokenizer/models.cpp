#include "tokenizer/models.h"

#include <algorithm>
#include <queue>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tokenizer/json_util.h"
#include "tokenizer/unicode.h"

namespace mlxcel {

namespace u = unicode;
using nlohmann::json;

std::optional<int32_t> Model::token_to_id(const std::string& token) const {
  auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

const std::string* Model::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void Model::add_token(const std::string& token, int32_t id) {
  if (id < 0) invalid("[tokenizer] negative token id {} for '{}'", id, token);
  if (static_cast<size_t>(id) >= id_to_token_.size()) {
    if (id > (1 << 26)) invalid("[tokenizer] token id {} is implausibly large", id);
    id_to_token_.resize(static_cast<size_t>(id) + 1);
    has_id_.resize(static_cast<size_t>(id) + 1, false);
  }
  token_to_id_[token] = id;
  id_to_token_[id] = token;
  has_id_[id] = true;
}

namespace {

std::string byte_token(uint8_t b) { return fmt::format("<0x{:02X}>", b); }

uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

}  // namespace

std::optional<std::vector<int32_t>> Model::byte_fallback_ids(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) {
    auto id = token_to_id(byte_token(c));
    if (!id) return std::nullopt;
    ids.push_back(*id);
  }
  return ids;
}

// ---------------------------------------------------------------- BPE

void BpeModel::set_merges(const std::vector<std::pair<std::string, std::string>>& merges) {
  merges_.clear();
  merges_.reserve(merges.size() * 2);
  size_t prefix_len = opts_.continuing_subword_prefix.size();
  for (size_t i = 0; i < merges.size(); ++i) {
    const auto& [a, b] = merges[i];
    auto ia = token_to_id(a), ib = token_to_id(b);
    if (!ia || !ib || b.size() < prefix_len) continue;
    auto inew = token_to_id(a + b.substr(prefix_len));
    if (!inew) continue;
    // NOTE: later duplicates overwrite earlier ones, as HF collects into a HashMap.
    merges_[pair_key(*ia, *ib)] = {static_cast<uint32_t>(i), *inew};
  }
}

void BpeModel::run(const std::string& piece, std::vector<int32_t>& out,
                   std::vector<std::pair<uint32_t, uint32_t>>* offs) const {
  if (opts_.ignore_merges) {
    if (auto id = token_to_id(piece)) {
      out.push_back(*id);
      if (offs) offs->emplace_back(0u, static_cast<uint32_t>(piece.size()));
      return;
    }
  }
  struct Sym {
    int32_t id;
    int prev, next;
    bool alive;
    uint32_t b = 0, e = 0;  // byte range in piece
  };
  std::vector<Sym> syms;
  std::optional<int32_t> unk_id;
  if (opts_.unk_token) unk_id = token_to_id(*opts_.unk_token);
  bool last_unk = false;
  for (size_t i = 0; i < piece.size();) {
    size_t b = i;
    u::next_cp(piece, i);
    std::string s = piece.substr(b, i - b);
    if (b != 0) s = opts_.continuing_subword_prefix + s;
    if (i == piece.size()) s += opts_.end_of_word_suffix;
    uint32_t cb = static_cast<uint32_t>(b), ce = static_cast<uint32_t>(i);
    if (auto id = token_to_id(s)) {
      syms.push_back({*id, 0, 0, true, cb, ce});
      last_unk = false;
      continue;
    }
    if (opts_.byte_fallback) {
      if (auto bytes = byte_fallback_ids(s)) {
        // HF gives each byte token one byte of the piece.
        for (size_t k = 0; k < bytes->size(); ++k) {
          uint32_t p = std::min<uint32_t>(cb + static_cast<uint32_t>(k), ce - 1);
          syms.push_back({(*bytes)[k], 0, 0, true, p, p + 1});
        }
        last_unk = false;
        continue;
      }
    }
    if (opts_.unk_token) {
      if (!unk_id) invalid("[tokenizer] BPE unk_token '{}' is not in the vocabulary", *opts_.unk_token);
      if (opts_.fuse_unk && last_unk) syms.back().e = ce;
      else syms.push_back({*unk_id, 0, 0, true, cb, ce});
      last_unk = true;
    }
  }
  int n = static_cast<int>(syms.size());
  for (int k = 0; k < n; ++k) {
    syms[k].prev = k - 1;
    syms[k].next = k + 1 < n ? k + 1 : -1;
  }
  struct Cand {
    uint32_t rank;
    int pos;
    int32_t new_id;
    bool operator<(const Cand& o) const {  // min-heap on (rank, pos)
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Cand> q;
  auto try_push = [&](int a) {
    if (a < 0) return;
    int b = syms[a].next;
    if (b < 0) return;
    auto it = merges_.find(pair_key(syms[a].id, syms[b].id));
    if (it != merges_.end()) q.push({it->second.first, a, it->second.second});
  };
  for (int k = 0; k + 1 < n; ++k) try_push(k);
  while (!q.empty()) {
    Cand top = q.top();
    q.pop();
    Sym& left = syms[top.pos];
    if (!left.alive || left.next < 0) continue;
    int rpos = left.next;
    auto it = merges_.find(pair_key(left.id, syms[rpos].id));
    if (it == merges_.end() || it->second.second != top.new_id) continue;
    left.id = top.new_id;
    left.e = syms[rpos].e;
    syms[rpos].alive = false;
    left.next = syms[rpos].next;
    if (left.next >= 0) syms[left.next].prev = top.pos;
    try_push(left.prev);
    try_push(top.pos);
  }
  for (int k = 0; k < n; ++k) {
    if (!syms[k].alive) continue;
    out.push_back(syms[k].id);
    if (offs) offs->emplace_back(syms[k].b, syms[k].e);
  }
}

// ---------------------------------------------------------------- WordPiece / WordLevel

void WordPieceModel::run(const std::string& piece, std::vector<int32_t>& out,
                         std::vector<std::pair<uint32_t, uint32_t>>* offs) const {
  auto unk = [&] {
    auto id = token_to_id(unk_);
    if (!id) invalid("[tokenizer] WordPiece unk_token '{}' is not in the vocabulary", unk_);
    out.push_back(*id);
    if (offs) offs->emplace_back(0u, static_cast<uint32_t>(piece.size()));
  };
  std::vector<std::pair<uint32_t, uint32_t>> sub_offs;
  if (u::count_chars(piece) > max_chars_) return unk();
  std::vector<int32_t> sub;
  size_t start = 0;
  while (start < piece.size()) {
    // Candidate ends at every char boundary, longest first.
    std::vector<size_t> ends;
    for (size_t i = start; i < piece.size();) {
      u::next_cp(piece, i);
      ends.push_back(i);
    }
    bool found = false;
    for (auto it = ends.rbegin(); it != ends.rend(); ++it) {
      std::string s = piece.substr(start, *it - start);
      if (start > 0) s = prefix_ + s;
      if (auto id = token_to_id(s)) {
        sub.push_back(*id);
        sub_offs.emplace_back(static_cast<uint32_t>(start), static_cast<uint32_t>(*it));
        start = *it;
        found = true;
        break;
      }
    }
    if (!found) return unk();
  }
  out.insert(out.end(), sub.begin(), sub.end());
  if (offs) offs->insert(offs->end(), sub_offs.begin(), sub_offs.end());
}

void WordLevelModel::tokenize(const std::string& piece, std::vector<int32_t>& out) const {
  if (auto id = token_to_id(piece)) {
    out.push_back(*id);
  } else if (auto uid = token_to_id(unk_)) {
    out.push_back(*uid);
  } else {
    invalid("[tokenizer] WordLevel unk_token '{}' is not in the vocabulary", unk_);
  }
}

// ---------------------------------------------------------------- Unigram

UnigramModel::UnigramModel(std::vector<std::pair<std::string, double>> vocab, std::optional<int32_t> unk_id,
                           bool byte_fallback)
    : unk_id_(unk_id), byte_fallback_(byte_fallback) {
  double min_score = 0;
  bool first = true;
  scores_.resize(vocab.size());
  for (size_t i = 0; i < vocab.size(); ++i) {
    add_token(vocab[i].first, static_cast<int32_t>(i));
    scores_[i] = vocab[i].second;
    if (first || vocab[i].second < min_score) min_score = vocab[i].second;
    first = false;
    max_piece_bytes_ = std::max(max_piece_bytes_, vocab[i].first.size());
  }
  if (unk_id_ && (*unk_id_ < 0 || static_cast<size_t>(*unk_id_) >= vocab.size())) {
    invalid("[tokenizer] Unigram unk_id {} is out of range", *unk_id_);
  }
  unk_score_ = min_score - 10.0;
  trie_id_.assign(1, -1);
  trie_edges_.reserve(token_to_id_.size() * 3);
  for (const auto& [piece, id] : token_to_id_) {
    uint32_t node = 0;
    for (unsigned char c : piece) {
      auto [it, fresh] = trie_edges_.try_emplace((static_cast<uint64_t>(node) << 8) | c, static_cast<uint32_t>(trie_id_.size()));
      if (fresh) trie_id_.push_back(-1);
      node = it->second;
    }
    trie_id_[node] = id;
  }
}

void UnigramModel::run(const std::string& s, std::vector<int32_t>& out,
                       std::vector<std::pair<uint32_t, uint32_t>>* offs) const {
  size_t n = s.size();
  struct Node {
    int32_t id = -1;
    double score = 0;
    long start = -1;
  };
  std::vector<Node> best(n + 1);
  best[0].start = 0;
  for (size_t pos = 0; pos < n;) {
    size_t clen = u::utf8_len(static_cast<uint8_t>(s[pos]));
    if (pos + clen > n) clen = n - pos;
    if (best[pos].start < 0) {  // unreachable (cannot happen once unk fills gaps)
      pos += clen;
      continue;
    }
    double base = best[pos].score;
    bool has_single = false;
    // Prefixes in increasing length (a trie walk, as HF's common-prefix search).
    uint32_t node = 0;
    for (size_t len = 1; pos + len <= n; ++len) {
      auto edge = trie_edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(s[pos + len - 1]));
      if (edge == trie_edges_.end()) break;
      node = edge->second;
      int32_t id = trie_id_[node];
      if (id < 0) continue;
      size_t e = pos + len;
      if (e < n && (static_cast<uint8_t>(s[e]) & 0xC0) == 0x80) continue;  // not a char boundary
      double cand = base + scores_[static_cast<size_t>(id)];
      Node& t = best[e];
      if (t.start < 0 || cand > t.score) {
        t.score = cand;
        t.start = static_cast<long>(pos);
        t.id = id;
      }
      if (len == clen) has_single = true;
    }
    if (!has_single) {
      Node& t = best[pos + clen];
      double cand = base + unk_score_;
      if (t.start < 0 || cand > t.score) {
        t.score = cand;
        t.start = static_cast<long>(pos);
        t.id = unk_id_ ? *unk_id_ : -1;
      }
    }
    pos += clen;
  }
  // Backtrack; consecutive unknown pieces are fused (fuse_unk is always on for Unigram).
  struct Piece {
    size_t b, e;
    int32_t id;  // -2: fused unknown run
  };
  std::vector<Piece> pieces;
  size_t unk_b = 0, unk_e = 0;
  bool in_unk = false;
  for (size_t e = n; e > 0;) {
    const Node& nd = best[e];
    size_t st = static_cast<size_t>(nd.start);
    bool is_unk = !unk_id_ || nd.id == *unk_id_ || nd.id < 0;
    if (is_unk && unk_id_) {
      if (!in_unk) unk_e = e;
      unk_b = st;
      in_unk = true;
    } else {
      if (in_unk) {
        pieces.push_back({unk_b, unk_e, -2});
        in_unk = false;
      }
      pieces.push_back({st, e, nd.id});
    }
    e = st;
  }
  if (in_unk) pieces.push_back({unk_b, unk_e, -2});
  std::reverse(pieces.begin(), pieces.end());
  for (const Piece& p : pieces) {
    // HF: every token of a piece (byte-fallback bytes included) carries the piece's range.
    std::pair<uint32_t, uint32_t> range{static_cast<uint32_t>(p.b), static_cast<uint32_t>(p.e)};
    size_t before = out.size();
    if (p.id >= 0) {
      out.push_back(p.id);
    } else {
      std::string text = s.substr(p.b, p.e - p.b);
      if (auto known = token_to_id(text)) {
        out.push_back(*known);
      } else {
        bool done = false;
        if (byte_fallback_) {
          if (auto bytes = byte_fallback_ids(text)) {
            out.insert(out.end(), bytes->begin(), bytes->end());
            done = true;
          }
        }
        if (!done) {
          if (!unk_id_) invalid("[tokenizer] Unigram model has no unk_id and cannot encode '{}'", text);
          out.push_back(*unk_id_);
        }
      }
    }
    if (offs) offs->resize(offs->size() + (out.size() - before), range);
  }
}

// ---------------------------------------------------------------- SpmScores (llama.cpp SPM)

void SpmScoresModel::tokenize(const std::string& text, std::vector<int32_t>& out) const {
  struct Sym {
    int prev, next;
    size_t off, len;
  };
  std::vector<Sym> syms;
  for (size_t i = 0; i < text.size();) {
    size_t b = i;
    size_t l = std::min(u::utf8_len(static_cast<uint8_t>(text[i])), text.size() - i);
    i += l;
    int idx = static_cast<int>(syms.size());
    syms.push_back({idx - 1, -1, b, l});
    if (idx > 0) syms[idx - 1].next = idx;
  }
  struct Bigram {
    int left, right;
    float score;
    size_t size;
    bool operator<(const Bigram& o) const {  // max score, then leftmost
      return score < o.score || (score == o.score && left > o.left);
    }
  };
  std::priority_queue<Bigram> q;
  std::unordered_map<std::string, std::pair<int, int>> rev;
  auto try_add = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    std::string t = text.substr(syms[l].off, syms[l].len + syms[r].len);
    auto id = token_to_id(t);
    if (!id || static_cast<size_t>(*id) >= scores_.size()) return;
    q.push({l, r, scores_[*id], t.size()});
    rev[t] = {l, r};
  };
  for (size_t k = 1; k < syms.size(); ++k) try_add(static_cast<int>(k) - 1, static_cast<int>(k));
  while (!q.empty()) {
    Bigram bg = q.top();
    q.pop();
    Sym& l = syms[bg.left];
    Sym& r = syms[bg.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != bg.size) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = bg.left;
    try_add(l.prev, bg.left);
    try_add(bg.left, l.next);
  }
  std::vector<std::string> sym_text;  // unused by resegment's lookup but kept for clarity
  for (int k = 0; k != -1 && k < static_cast<int>(syms.size()); k = syms[k].next) {
    if (syms[k].len == 0) continue;
    resegment(text.substr(syms[k].off, syms[k].len), rev, sym_text, out);
  }
}

void SpmScoresModel::resegment(const std::string& t, const std::unordered_map<std::string, std::pair<int, int>>& rev,
                               const std::vector<std::string>& sym_text, std::vector<int32_t>& out) const {
  if (auto id = token_to_id(t)) {
    out.push_back(*id);
    return;
  }
  auto it = rev.find(t);
  if (it == rev.end()) {
    for (unsigned char c : t) {
      auto id = token_to_id(byte_token(c));
      if (!id) id = token_to_id(std::string(1, static_cast<char>(c)));
      if (id) out.push_back(*id);
    }
    return;
  }
  // NOTE: the split point is where the left symbol of the recorded bigram ended; recover it
  // by trying every split (bigram texts are short).
  for (size_t k = 1; k < t.size(); ++k) {
    std::string a = t.substr(0, k), b = t.substr(k);
    if ((token_to_id(a) || rev.count(a)) && (token_to_id(b) || rev.count(b))) {
      resegment(a, rev, sym_text, out);
      resegment(b, rev, sym_text, out);
      return;
    }
  }
  for (unsigned char c : t) {
    if (auto id = token_to_id(byte_token(c))) out.push_back(*id);
  }
}

// ---------------------------------------------------------------- JSON

std::unique_ptr<Model> make_model(const json& j) {
  if (!j.is_object()) invalid("[tokenizer] 'model' must be an object");
  std::string type = tokjson::str(j, "type", "");
  const json* vocab = tokjson::get(j, "vocab");
  if (!vocab) invalid("[tokenizer] model has no 'vocab'");
  if (type.empty()) {
    if (tokjson::get(j, "merges")) type = "BPE";
    else if (vocab->is_array()) type = "Unigram";
    else if (tokjson::get(j, "continuing_subword_prefix")) type = "WordPiece";
    else type = "WordLevel";
  }
  auto fill_map_vocab = [&](Model& m) {
    if (!vocab->is_object()) invalid("[tokenizer] {} vocab must be an object of token -> id", type);
    m.reserve(vocab->size());
    for (auto it = vocab->begin(); it != vocab->end(); ++it) {
      if (!it.value().is_number_integer()) invalid("[tokenizer] vocab id of '{}' is not an integer", it.key());
      m.add_token(it.key(), it.value().get<int32_t>());
    }
  };
  if (type == "BPE") {
    BpeOptions o;
    if (const json* unk = tokjson::get(j, "unk_token")) o.unk_token = unk->get<std::string>();
    o.continuing_subword_prefix = tokjson::str(j, "continuing_subword_prefix", "");
    o.end_of_word_suffix = tokjson::str(j, "end_of_word_suffix", "");
    o.fuse_unk = tokjson::boolean(j, "fuse_unk", false);
    o.byte_fallback = tokjson::boolean(j, "byte_fallback", false);
    o.ignore_merges = tokjson::boolean(j, "ignore_merges", false);
    auto m = std::make_unique<BpeModel>(o);
    fill_map_vocab(*m);
    std::vector<std::pair<std::string, std::string>> merges;
    if (const json* ms = tokjson::get(j, "merges")) {
      if (!ms->is_array()) invalid("[tokenizer] BPE merges must be an array");
      merges.reserve(ms->size());
      for (const json& mj : *ms) {
        if (mj.is_string()) {
          const std::string& s = mj.get_ref<const std::string&>();
          size_t sp = s.find(' ');
          if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
            invalid("[tokenizer] BPE merge '{}' is not two tokens separated by one space", s);
          }
          merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else if (mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string()) {
          merges.emplace_back(mj[0].get<std::string>(), mj[1].get<std::string>());
        } else {
          invalid("[tokenizer] bad BPE merge entry {}", mj.dump());
        }
      }
    }
    m->set_merges(merges);
    return m;
  }
  if (type == "WordPiece") {
    auto m = std::make_unique<WordPieceModel>(tokjson::str(j, "unk_token", "[UNK]"),
                                              tokjson::str(j, "continuing_subword_prefix", "##"),
                                              static_cast<size_t>(tokjson::integer(j, "max_input_chars_per_word", 100)));
    fill_map_vocab(*m);
    return m;
  }
  if (type == "WordLevel") {
    auto m = std::make_unique<WordLevelModel>(tokjson::str(j, "unk_token", "<unk>"));
    fill_map_vocab(*m);
    return m;
  }
  if (type == "Unigram") {
    if (!vocab->is_array()) invalid("[tokenizer] Unigram vocab must be an array of [piece, score]");
    std::vector<std::pair<std::string, double>> v;
    v.reserve(vocab->size());
    for (const json& e : *vocab) {
      if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number()) {
        invalid("[tokenizer] bad Unigram vocab entry {}", e.dump());
      }
      v.emplace_back(e[0].get<std::string>(), e[1].get<double>());
    }
    std::optional<int32_t> unk;
    if (const json* uj = tokjson::get(j, "unk_id")) unk = uj->get<int32_t>();
    return std::make_unique<UnigramModel>(std::move(v), unk, tokjson::boolean(j, "byte_fallback", false));
  }
  unsupported("[tokenizer] unknown model type '{}'", type);
}

}  // namespace mlxcel
