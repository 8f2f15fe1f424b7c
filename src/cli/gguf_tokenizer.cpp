#include "cli/gguf_tokenizer.h"

#include "loader/gguf.h"

namespace mlxcel::cli {

std::optional<TokenizerBundle> gguf_tokenizer_bundle(const std::string& path) {
  GgufFile g = GgufFile::open(path);
  if (!g.has("tokenizer.ggml.model")) return std::nullopt;
  TokenizerBundle b{Tokenizer::from_gguf(g), {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  const GgufValue* toks = g.find("tokenizer.ggml.tokens");
  auto token_text = [&](int64_t id) -> std::optional<std::string> {
    if (!toks) return std::nullopt;
    const auto& s = toks->as_array().strings;
    if (id < 0 || id >= int64_t(s.size())) return std::nullopt;
    return s[size_t(id)];
  };
  if (const GgufValue* v = g.find("tokenizer.ggml.bos_token_id")) {
    b.bos_token_id = int32_t(v->as_int());
    b.bos_token = token_text(v->as_int());
  }
  for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (const GgufValue* v = g.find(k)) {
      const int32_t id = int32_t(v->as_int());
      if (!b.eos_token) b.eos_token = token_text(id);
      bool seen = false;
      for (int32_t e : b.eos_token_ids) seen |= e == id;
      if (!seen) b.eos_token_ids.push_back(id);
    }
  }
  if (const GgufValue* v = g.find("tokenizer.ggml.padding_token_id")) {
    b.pad_token_id = int32_t(v->as_int());
    b.pad_token = token_text(v->as_int());
  }
  if (const GgufValue* v = g.find("tokenizer.ggml.unknown_token_id")) b.unk_token = token_text(v->as_int());
  if (const GgufValue* v = g.find("tokenizer.ggml.add_bos_token")) b.add_bos_token = v->as_bool();
  if (const GgufValue* v = g.find("tokenizer.ggml.add_eos_token")) b.add_eos_token = v->as_bool();
  b.chat_template = g.get_string("tokenizer.chat_template", "");
  return b;
}

}  // namespace mlxcel::cli
