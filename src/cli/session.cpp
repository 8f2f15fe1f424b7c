#include "cli/session.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/thread_pool.h"
#include "cli/gguf_tokenizer.h"
#include "loader/gguf_model.h"
#include "models/memory.h"
#include "store/store.h"

namespace mlxcel::cli {

namespace fs = std::filesystem;

const Tokenizer& LoadedModel::tokenizer() const {
  if (!tok) throw_error(ErrorKind::not_found, "{} has no tokenizer.json: pass token ids instead (--prompt-ids)", path);
  return tok->tokenizer;
}

std::string LoadedModel::render_chat(const nlohmann::ordered_json& messages, bool enable_thinking) const {
  if (!chat_template) throw_error(ErrorKind::not_found, "{} has no chat template (pass --chat-template-file)", path);
  chat::ChatTemplateOptions o;
  o.add_generation_prompt = true;
  o.extra["enable_thinking"] = enable_thinking;
  if (tok) {
    if (tok->bos_token) o.extra["bos_token"] = *tok->bos_token;
    if (tok->eos_token) o.extra["eos_token"] = *tok->eos_token;
  }
  return chat_template->apply(messages, o);
}

std::vector<int> LoadedModel::encode(const std::string& text, bool is_chat) const {
  auto ids = tokenizer().encode(text, /*add_special_tokens=*/!is_chat);
  return std::vector<int>(ids.begin(), ids.end());
}

std::string resolve_model_path(const ModelArgs& args) {
  store::StoreConfig cfg = store::StoreConfig::from_env(args.models_dir);
  std::string id = args.model.empty() ? default_model_id(args.models_dir) : args.model;
  return store::resolve_model(id, cfg).path.string();
}

void check_memory(const ModelArgs& args, const std::string& model_path) {
  // NOTE: the estimate reads config.json and safetensors headers; GGUF files are not estimated.
  if (!args.estimate_memory || !gguf_model_file(model_path).empty()) return;
  MemoryRequest req;
  req.max_tokens = args.kv_tokens;
  req.batch = args.batch;
  req.device = parse_device(args.device).type == DeviceType::cuda ? "cuda" : "cpu";
  const MemoryEstimate e = estimate_memory(model_path, req);
  if (e.fits) return;
  if (!args.force)
    throw Error(ErrorKind::resource_exhausted,
                "the model will not fit in memory (pass --force to load it anyway):\n" + e.describe());
  std::fprintf(stderr, "mlxcel: warning: the model may not fit in memory (--force given):\n%s", e.describe().c_str());
}

LoadedModel open_model(const ModelArgs& args) {
  if (args.threads > 0) ThreadPool::set_global_threads(args.threads);
  LoadedModel lm;
  store::StoreConfig cfg = store::StoreConfig::from_env(args.models_dir);
  std::string id = args.model.empty() ? default_model_id(args.models_dir) : args.model;
  store::ResolvedModel r = store::resolve_model(id, cfg);
  lm.path = r.path.string();
  lm.repo_id = r.repo_id;
  const Device device = parse_device(args.device);
  check_memory(args, lm.path);
  lm.model = load_model(lm.path, device);
  if (fs::exists(r.path / "tokenizer.json")) lm.tok = load_tokenizer(lm.path);
  else if (std::string gguf = gguf_model_file(lm.path); !gguf.empty()) lm.tok = gguf_tokenizer_bundle(gguf);
  std::string tpl_source;
  if (!args.chat_template_file.empty()) {
    std::ifstream in(args.chat_template_file);
    if (!in) throw_error(ErrorKind::not_found, "cannot read chat template {}", args.chat_template_file);
    std::stringstream ss;
    ss << in.rdbuf();
    tpl_source = ss.str();
  } else if (lm.tok) {
    tpl_source = lm.tok->chat_template;
  }
  if (!tpl_source.empty()) lm.chat_template.emplace(tpl_source);
  auto add_stop = [&](int id) {
    if (id >= 0 && std::find(lm.stop_ids.begin(), lm.stop_ids.end(), id) == lm.stop_ids.end()) lm.stop_ids.push_back(id);
  };
  if (lm.tok)
    for (int id : lm.tok->eos_token_ids) add_stop(id);
  for (int id : lm.model->config().eos_token_ids) add_stop(id);
  return lm;
}

std::string default_model_id(const std::string& models_dir) {
  const std::string seed_default = "mlx-community/gemma-4-e2b-it-4bit";
  store::StoreConfig cfg = store::StoreConfig::from_env(models_dir);
  if (store::find_model(seed_default, cfg)) return seed_default;
  const fs::path bundled = fs::path(MLXCEL_SOURCE_DIR_STR) / "models" / "mlxcel-demo";
  std::fprintf(stderr, "note: %s is not in the store; using the bundled demo model %s\n", seed_default.c_str(),
               bundled.c_str());
  return bundled.string();
}

}  // namespace mlxcel::cli
