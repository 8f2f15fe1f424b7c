// Downloads from a Hugging Face compatible hub (libcurl), into the store or a folder.
//
//   auto opts = store::DownloadOptions::from_env();      // HF_ENDPOINT, HF_TOKEN, ...
//   store::DownloadResult r = store::download_model(repo, cfg, opts);
//
// Only the files a runtime needs are fetched (see is_runtime_file). Several files at once;
// each one resumes from its .part file with a Range request after an interruption; sizes
// and sha256 are checked when the hub provides them. Files land in a temporary directory
// inside the store that is renamed into place only when every file is complete, so an
// interrupted download never looks like a model.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "store/store.h"

namespace mlxcel::store {

struct DownloadOptions {
  std::string endpoint = "https://huggingface.co";  // HF_ENDPOINT
  std::string token;                                // HF_TOKEN (sent as a Bearer token)
  std::string revision = "main";
  bool include_gguf = false;  // fetch every *.gguf too
  // Extra files to fetch: shell globs on the repo path ("*Q4_K_M*.gguf"). A repo without
  // safetensors gets its single .gguf automatically; with several, one must be chosen.
  std::vector<std::string> include;
  int n_parallel = 4;         // files downloaded at once
  int max_retries = 3;        // per file; each retry resumes where the last one stopped
  int retry_delay_ms = 500;   // grows linearly with the attempt
  bool progress = true;       // draw a progress bar (only on a TTY; MLXCEL_NO_PROGRESS=1 off)
  long connect_timeout_s = 30;
  long stall_timeout_s = 60;  // abort a transfer that moves no data for this long

  // Reads HF_ENDPOINT, HF_TOKEN (or HUGGING_FACE_HUB_TOKEN), MLXCEL_NO_PROGRESS.
  static DownloadOptions from_env();
};

// One file of a repo as the hub lists it.
struct HubFile {
  std::string name;               // path inside the repo ("model-00001-of-00002.safetensors")
  std::optional<uint64_t> size;   // bytes, when listed
  std::string sha256;             // LFS object id (lowercase hex) or empty
};

struct RepoInfo {
  std::string repo_id;
  std::string commit;  // "sha" of the revision, when given
  std::vector<HubFile> files;
};

// True for the files a runtime needs: configs, tokenizer files, chat templates,
// *.safetensors and their index, processor configs; *.gguf only when `include_gguf`.
bool is_runtime_file(const std::string& name, bool include_gguf);

// GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true (falling back to
// {endpoint}/api/models/{repo}). Throws Error(not_found) for 404, Error(invalid_request)
// for 401/403 with a hint about HF_TOKEN, Error(internal) for network failures.
RepoInfo fetch_repo_info(const std::string& repo_id, const DownloadOptions& opts);

struct DownloadResult {
  fs::path path;                   // the complete model directory
  std::vector<std::string> files;  // files it holds from this repo
  uint64_t bytes_downloaded = 0;   // fetched in this call
  bool already_present = false;    // nothing needed to be fetched
};

// Downloads `repo` into the store (<models_dir>/owner/name).
DownloadResult download_model(const RepoId& repo, const StoreConfig& cfg,
                              const DownloadOptions& opts);

// Downloads `repo_id` into `dest` (created if missing; an existing folder gets the files
// added, config.json last).
DownloadResult download_to_dir(const std::string& repo_id, const fs::path& dest,
                               const DownloadOptions& opts);

}  // namespace mlxcel::store
