// Tokenizer::from_gguf: the tokenizer that llama.cpp builds from GGUF metadata.
//
// tokenizer.ggml.model "llama" -> SentencePiece BPE driven by token scores (llama.cpp's
// llm_tokenizer_spm), with " " -> "▁" and an optional leading "▁".
// tokenizer.ggml.model "gpt2"  -> byte-level BPE with merges; tokenizer.ggml.pre names the
// pre-tokenizer regex list (copied from llama.cpp's llama-vocab.cpp; each regex splits every
// piece further and keeps the unmatched text).
// Tokens of type USER_DEFINED become non-special added tokens and CONTROL tokens special
// ones, so encode(text, add_special, /*parse_special=*/false) reproduces llama_tokenize
// with parse_special = false.
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "loader/gguf.h"
#include "tokenizer/components.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace mlxcel {

namespace {

constexpr int kTypeControl = 3;
constexpr int kTypeUserDefined = 4;

const char* kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* kQwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* kQwen35 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| "
    "?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* kGpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";

struct PreSpec {
  std::vector<std::string> regexes;
  bool ignore_merges = false;
};

PreSpec pre_spec(const std::string& pre) {
  if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "falcon3" || pre == "pixtral" ||
      pre == "dbrx" || pre == "smaug-bpe" || pre == "chatglm-bpe" || pre == "glm4") {
    return {{kLlama3}, pre != "dbrx" && pre != "smaug-bpe" && pre != "chatglm-bpe" && pre != "glm4"};
  }
  if (pre == "qwen2" || pre == "deepseek-r1-qwen" || pre == "stablelm2" || pre == "hunyuan") return {{kQwen2}};
  if (pre == "qwen35") return {{kQwen35}};
  if (pre == "deepseek-llm") {
    return {{"[\r\n]",
             "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
             "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", "[一-龥ࠀ-一가-퟿]+", "\\p{N}+"}};
  }
  if (pre == "deepseek-v3") {
    return {{"\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
             "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
             "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}};
  }
  if (pre == "deepseek-coder") {
    return {{"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"}};
  }
  if (pre == "falcon") return {{"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"}};
  if (pre == "starcoder" || pre == "refact" || pre == "command-r" || pre == "smollm" || pre == "codeshell" ||
      pre == "exaone" || pre == "minerva-7b") {
    return {{"\\p{N}", kGpt2}};
  }
  if (pre == "gpt-2" || pre == "phi-2" || pre == "jina-es" || pre == "jina-de" || pre == "gigachat" ||
      pre == "jina-v2-es" || pre == "jina-v2-de" || pre == "mpt" || pre == "olmo" || pre == "jais" ||
      pre == "roberta-bpe" || pre == "jina-v1-en" || pre == "jina-v2-code" || pre == "trillion") {
    return {{kGpt2}};
  }
  if (pre == "poro-chat" || pre == "bloom" || pre == "gpt3-finnish") return {{" ?[^(\\s|.,!?…。，、।۔،)]+"}};
  if (pre == "viking") return {{" ?[^(\\s|.,!?…。，、।۔،)]+", "\\p{N}"}};
  if (pre.empty() || pre == "default") {
    return {{"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"}};
  }
  unsupported("[tokenizer] GGUF pre-tokenizer '{}' is not supported", pre);
}

// llama.cpp's WPM (BERT) tokenizer: its own pre-processing (NFD + accent stripping,
// lowercasing, splitting at whitespace, punctuation, ASCII symbols and CJK), then a greedy
// longest match of "▁" + word over the vocabulary (the GGUF converter turned "##x" into "x"
// and "x" into "▁x"); a word with an unmatched position becomes [UNK].
class WpmModel : public Model {
 public:
  WpmModel(int32_t unk_id, bool lowercase, bool strip_accents)
      : unk_id_(unk_id), lowercase_(lowercase), strip_accents_(strip_accents) {}
  void finish() {
    for (const auto& [t, id] : token_to_id_) max_len_ = std::max(max_len_, t.size());
  }
  void tokenize(const std::string& text, std::vector<int32_t>& out) const override {
    namespace u = unicode;
    std::string src = strip_accents_ ? u::normalize(text, u::NormForm::nfd) : text;
    std::vector<std::string> words(1);
    for (size_t i = 0; i < src.size();) {
      char32_t c = u::next_cp(src, i);
      if (u::is_whitespace(c)) {
        if (!words.back().empty()) words.emplace_back();
        continue;
      }
      if (c == 0 || c == 0xFFFD || u::is_other(c)) continue;
      if (strip_accents_ && u::is_mark(c)) continue;
      std::string s = u::to_utf8(lowercase_ ? u::simple_lower(c) : c);
      if (u::is_punctuation(c) || (c < 0x7F && u::is_symbol(c)) || u::is_chinese_char(c)) {
        if (!words.back().empty()) words.emplace_back();
        words.back() = s;
        words.emplace_back();
      } else {
        words.back() += s;
      }
    }
    for (const std::string& word : words) {
      if (word.empty()) continue;
      const std::string w = "\xE2\x96\x81" + word;
      size_t before = out.size();
      size_t n = w.size();
      for (size_t i = 0; i < n; ++i) {
        bool match = false;
        for (size_t j = std::min(n, i + max_len_ + 1); j > i; --j) {
          if (auto id = token_to_id(w.substr(i, j - i))) {
            out.push_back(*id);
            match = true;
            i = j - 1;
            break;
          }
        }
        if (!match) {
          out.resize(before);
          break;
        }
      }
      if (out.size() == before) out.push_back(unk_id_);
    }
  }

 private:
  int32_t unk_id_;
  bool lowercase_, strip_accents_;
  size_t max_len_ = 0;
};

const std::vector<std::string>& strings_of(const GgufFile& g, const char* key) {
  const GgufArray& a = g.at(key).as_array();
  if (a.elem_type != GgufType::string) invalid("[tokenizer] GGUF {} must be an array of strings", key);
  return a.strings;
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const GgufFile& g) {
  std::string kind = g.get_string("tokenizer.ggml.model");
  const std::vector<std::string>& tokens = strings_of(g, "tokenizer.ggml.tokens");
  std::vector<int64_t> types;
  if (const GgufValue* t = g.find("tokenizer.ggml.token_type")) {
    types = t->as_array().ints;
    if (types.size() != tokens.size()) invalid("[tokenizer] GGUF token_type has {} entries for {} tokens", types.size(), tokens.size());
  }
  auto impl = std::make_shared<TokenizerImpl>();
  if (kind == "llama") {
    std::vector<float> scores(tokens.size(), 0.f);
    if (const GgufValue* s = g.find("tokenizer.ggml.scores")) {
      const GgufArray& a = s->as_array();
      if (a.floats.size() != tokens.size()) invalid("[tokenizer] GGUF scores has {} entries for {} tokens", a.floats.size(), tokens.size());
      for (size_t i = 0; i < tokens.size(); ++i) scores[i] = static_cast<float>(a.floats[i]);
    }
    auto model = std::make_unique<SpmScoresModel>(std::move(scores));
    for (size_t i = 0; i < tokens.size(); ++i) model->add_token(tokens[i], static_cast<int32_t>(i));
    impl->model = std::move(model);
    bool prefix = g.get_bool("tokenizer.ggml.add_space_prefix", true);
    std::vector<std::unique_ptr<Normalizer>> norms;
    if (prefix) norms.push_back(make_prepend(" "));
    norms.push_back(make_replace(" ", "\xE2\x96\x81"));
    impl->normalizer = make_norm_sequence(std::move(norms));
    impl->decoder = make_spm_decoder(prefix);
  } else if (kind == "bert") {
    bool lower = g.get_bool("tokenizer.ggml.normalizer.lowercase", true);
    bool strip = g.get_bool("tokenizer.ggml.normalizer.strip_accents", lower);
    auto model = std::make_unique<WpmModel>(static_cast<int32_t>(g.get_int("tokenizer.ggml.unknown_token_id", 100)), lower, strip);
    for (size_t i = 0; i < tokens.size(); ++i) model->add_token(tokens[i], static_cast<int32_t>(i));
    model->finish();
    impl->model = std::move(model);
    impl->decoder = make_spm_decoder(true);
  } else if (kind == "gemma4" || (kind == "gpt2" && g.get_string("tokenizer.ggml.pre", "") == "gemma4")) {
    // SentencePiece-style BPE on raw UTF-8: " " -> "▁", split only at newlines, merges, and
    // <0xXX> byte tokens for what the vocabulary lacks.
    BpeOptions o;
    o.byte_fallback = true;
    auto model = std::make_unique<BpeModel>(o);
    for (size_t i = 0; i < tokens.size(); ++i) model->add_token(tokens[i], static_cast<int32_t>(i));
    std::vector<std::pair<std::string, std::string>> merges;
    for (const std::string& m : strings_of(g, "tokenizer.ggml.merges")) {
      size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) invalid("[tokenizer] GGUF merge '{}' has no separator", m);
      merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
    }
    model->set_merges(merges);
    impl->model = std::move(model);
    impl->normalizer = make_replace(" ", "\xE2\x96\x81");
    impl->pre_tokenizer = make_regex_split("[^\\n]+|[\\n]+");
    impl->decoder = make_spm_decoder(false);
  } else if (kind == "gpt2") {
    PreSpec spec = pre_spec(g.get_string("tokenizer.ggml.pre", ""));
    BpeOptions o;
    o.ignore_merges = spec.ignore_merges;
    auto model = std::make_unique<BpeModel>(o);
    for (size_t i = 0; i < tokens.size(); ++i) model->add_token(tokens[i], static_cast<int32_t>(i));
    std::vector<std::pair<std::string, std::string>> merges;
    if (g.has("tokenizer.ggml.merges")) {
      for (const std::string& m : strings_of(g, "tokenizer.ggml.merges")) {
        size_t sp = m.find(' ', 1);
        if (sp == std::string::npos) invalid("[tokenizer] GGUF merge '{}' has no separator", m);
        merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
      }
    }
    model->set_merges(merges);
    impl->model = std::move(model);
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const std::string& re : spec.regexes) parts.push_back(make_regex_split(re));
    parts.push_back(make_byte_level(false, false));
    impl->pre_tokenizer = make_pre_sequence(std::move(parts));
    impl->decoder = make_byte_level_decoder();
  } else {
    unsupported("[tokenizer] GGUF tokenizer model '{}' is not supported (only 'llama', 'gpt2', 'gemma4' and 'bert')", kind);
  }
  std::vector<AddedToken> added;
  for (size_t i = 0; i < types.size(); ++i) {
    if (types[i] != kTypeControl && types[i] != kTypeUserDefined) continue;
    AddedToken a;
    a.id = static_cast<int32_t>(i);
    a.content = tokens[i];
    a.special = types[i] == kTypeControl;
    a.normalized = false;
    added.push_back(std::move(a));
  }
  impl->set_added(std::move(added));
  // BOS/EOS with add_special_tokens, as llama.cpp: tokenizer.ggml.add_bos_token /
  // add_eos_token, BOS on by default for SentencePiece ("llama") vocabularies.
  const bool add_bos = g.get_bool("tokenizer.ggml.add_bos_token", kind == "llama");
  const bool add_eos = g.get_bool("tokenizer.ggml.add_eos_token", false);
  auto special = [&](const char* key, bool wanted) -> std::optional<int32_t> {
    if (!wanted || !g.has(key)) return std::nullopt;
    const int64_t id = g.get_int(key, -1);
    if (id < 0 || id >= int64_t(tokens.size())) invalid("[tokenizer] GGUF {} {} is outside the vocabulary", key, id);
    return int32_t(id);
  };
  const auto bos = special("tokenizer.ggml.bos_token_id", add_bos);
  const auto eos = special("tokenizer.ggml.eos_token_id", add_eos);
  if (kind != "bert" && (bos || eos)) {
    nlohmann::json single = nlohmann::json::array(), pair = nlohmann::json::array(),
                   specials = nlohmann::json::object();
    auto piece = [&](int32_t id) {
      const std::string& t = tokens[size_t(id)];
      specials[t] = {{"id", t}, {"ids", {id}}, {"tokens", {t}}};
      return nlohmann::json{{"SpecialToken", {{"id", t}, {"type_id", 0}}}};
    };
    auto seq = [](const char* s) { return nlohmann::json{{"Sequence", {{"id", s}, {"type_id", 0}}}}; };
    for (const char* part : {"A", "B"}) {
      if (bos) pair.push_back(piece(*bos));
      pair.push_back(seq(part));
      if (eos) pair.push_back(piece(*eos));
    }
    if (bos) single.push_back(piece(*bos));
    single.push_back(seq("A"));
    if (eos) single.push_back(piece(*eos));
    impl->post_processor = make_post_processor(
        {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}});
  }
  return TokenizerImpl::wrap(std::move(impl));
}

}  // namespace mlxcel
