// The tokenizer bundle of a GGUF file: tokenizer.ggml.* vocabulary (Tokenizer::from_gguf),
// special tokens, add_bos/add_eos and tokenizer.chat_template, so `mlxcel run model.gguf`
// needs nothing beside the file.
#pragma once

#include <optional>
#include <string>

#include "tokenizer/tokenizer.h"

namespace mlxcel::cli {

// nullopt when the file has no tokenizer.ggml.model.
std::optional<TokenizerBundle> gguf_tokenizer_bundle(const std::string& gguf_path);

}  // namespace mlxcel::cli
