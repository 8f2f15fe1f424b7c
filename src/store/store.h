// The model store: where `mlxcel` finds checkpoints by id, what `mlxcel list` shows and
// what `mlxcel rm` may delete.
//
//   auto cfg = store::StoreConfig::from_env();           // or from_env(models_dir_flag)
//   store::ResolvedModel m = store::resolve_model("Qwen3-0.6B-4bit", cfg);
//   // m.path: .../models/mlx-community/Qwen3-0.6B-4bit, m.source == ModelSource::store
//
// Ids: `owner/name` lives at <models_dir>/owner/name; a bare `name` means
// <default_org>/name; an existing file or directory path is used as is. The Hugging Face
// cache (models--owner--name/snapshots/<rev>/) is searched read-only and never written.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mlxcel::store {

namespace fs = std::filesystem;

// Where models live. from_env() reads MLXCEL_MODELS_DIR, MLXCEL_CACHE_DIR,
// MLXCEL_DEFAULT_ORG, HF_HUB_CACHE, HF_HOME and HOME.
struct StoreConfig {
  fs::path models_dir;    // ${MLXCEL_MODELS_DIR:-${MLXCEL_CACHE_DIR:-~/.cache/mlxcel}/models}
  fs::path hf_hub_cache;  // ${HF_HUB_CACHE:-${HF_HOME:-~/.cache/huggingface}/hub}
  std::string default_org = "mlx-community";

  // `models_dir_override` (the --models-dir flag) wins over the environment when non-empty.
  static StoreConfig from_env(const std::string& models_dir_override = {});
};

enum class ModelSource { store, hf_cache, local };
const char* model_source_name(ModelSource source);

struct ResolvedModel {
  fs::path path;        // a directory (checkpoint folder) or a file (e.g. a .gguf)
  ModelSource source;
  std::string repo_id;  // "owner/name"; for a local path, the path as given
};

// A repo id split into its parts.
struct RepoId {
  std::string owner;
  std::string name;
  std::string str() const { return owner + "/" + name; }
};

// Parses `owner/name` or a bare `name` (which gets cfg.default_org). Throws
// Error(invalid_request) for anything that is not a valid Hugging Face style id
// (empty parts, "..", characters outside [A-Za-z0-9._-], more than one '/').
RepoId parse_repo_id(std::string_view id, const StoreConfig& cfg);

// True when `id` parses as a repo id (never throws).
bool is_repo_id(std::string_view id);

// <models_dir>/owner/name (whether or not it exists).
fs::path store_path(const RepoId& repo, const StoreConfig& cfg);

// The HF cache snapshot for `repo` at `revision` (refs/<revision>, else snapshots/<revision>,
// else for "main" the newest snapshot) if it holds a model, else nullopt.
std::optional<fs::path> hf_cache_snapshot(const RepoId& repo, const StoreConfig& cfg,
                                          const std::string& revision = "main");

// True when `dir` looks like a complete model: it holds config.json or a *.gguf file.
bool is_model_dir(const fs::path& dir);

// Looks for `id` without downloading: an existing path, then the store, then the HF
// cache. Returns nullopt when none has it; `searched` (if given) receives each place
// that was looked at. Throws Error(invalid_request) for an id that is neither an
// existing path nor a valid repo id.
std::optional<ResolvedModel> find_model(std::string_view id, const StoreConfig& cfg,
                                        std::vector<std::string>* searched = nullptr,
                                        const std::string& revision = "main");

struct DownloadOptions;  // store/hub.h

struct ResolveOptions {
  bool allow_download = true;       // fetch a missing `owner/name` from the hub
  std::string revision = "main";
  const DownloadOptions* download = nullptr;  // null: DownloadOptions::from_env()
};

// find_model(), then (if allowed) a download into the store. Throws Error(not_found)
// naming every place it looked and, if a download was attempted, why it failed.
ResolvedModel resolve_model(std::string_view id, const StoreConfig& cfg,
                            const ResolveOptions& options = {});

// One model on disk, as `mlxcel list` shows it.
struct ModelEntry {
  std::string repo_id;
  ModelSource source;
  fs::path path;
  uint64_t size_bytes = 0;
  int64_t modified = 0;  // Unix seconds (newest file inside)
};

// Every model in the store (directories owner/name holding config.json or *.gguf) and in
// the HF cache, sorted by repo id (store before HF cache). Missing roots are skipped.
std::vector<ModelEntry> list_models(const StoreConfig& cfg);

// Formats Unix seconds as ISO-8601 UTC ("2024-05-01T12:00:00Z").
std::string iso8601_utc(int64_t unix_seconds);

// Bytes in a readable form ("1.5 GB").
std::string human_size(uint64_t bytes);

// What remove_model() would delete, without deleting it: the store directory for `id`
// (a repo id, or a path inside the store at depth owner/name). Throws Error(not_found)
// when the model is not in the store (saying so when it is only in the HF cache, which
// is never deleted), Error(invalid_request) for a path outside the store, a symlink, or
// anything not at depth owner/name.
ModelEntry plan_remove(std::string_view id, const StoreConfig& cfg);

// Deletes what plan_remove() names (and the owner directory when it becomes empty).
ModelEntry remove_model(std::string_view id, const StoreConfig& cfg);

}  // namespace mlxcel::store
