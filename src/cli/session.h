// What `run` and `generate` share: resolve a model argument through the store, load
// the model, its tokenizer bundle and chat template, and turn text into prompt ids.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "models/model.h"
#include "tokenizer/tokenizer.h"

namespace mlxcel::cli {

struct ModelArgs {
  std::string model;        // id, path, or empty for the default
  std::string models_dir;   // --models-dir
  std::string chat_template_file;  // --chat-template-file overrides the bundled one
  int threads = 0;
  std::string device = "auto";  // --device: cpu, cuda, cuda:N or auto (models/model.h parse_device)
  // --estimate-memory: before loading, estimate what the model needs for `kv_tokens`
  // of context per sequence and `batch` sequences (models/memory.h) and abort with the
  // report when it will not fit, unless --force (alias --no-memory-check).
  bool estimate_memory = false;
  bool force = false;
  int64_t kv_tokens = 4096;  // 0: the model's context
  int64_t batch = 1;
};

struct LoadedModel {
  std::string path;
  std::string repo_id;
  std::unique_ptr<Model> model;
  std::optional<TokenizerBundle> tok;            // absent when the folder has no tokenizer.json
  std::optional<chat::ChatTemplate> chat_template;
  std::vector<int> stop_ids;                      // eos ids (generation_config, tokenizer, config)

  const Tokenizer& tokenizer() const;             // throws when there is none
  // Renders the chat template over messages with add_generation_prompt.
  std::string render_chat(const nlohmann::ordered_json& messages, bool enable_thinking) const;
  // Prompt text -> ids. Raw prompts get the tokenizer's special tokens (BOS); rendered
  // chat prompts already hold them.
  std::vector<int> encode(const std::string& text, bool is_chat) const;
};

// The checkpoint folder for args.model (store, HF cache, path; downloads an owner/name
// that is missing).
std::string resolve_model_path(const ModelArgs& args);
// The --estimate-memory check of args (a no-op without it): throws
// Error(resource_exhausted) with the report when the model will not fit and --force is
// off; with --force it prints the report's verdict to stderr and returns.
void check_memory(const ModelArgs& args, const std::string& model_path);
// Resolves (as above), runs check_memory, and loads.
LoadedModel open_model(const ModelArgs& args);

// The default model for `mlxcel run` with no argument: the seed's default when it is
// in the store, else the bundled demo model (with a one-line note on stderr).
std::string default_model_id(const std::string& models_dir);

}  // namespace mlxcel::cli
