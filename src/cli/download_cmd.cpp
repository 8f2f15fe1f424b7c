// `mlxcel download`: fetch a model from the Hugging Face hub into the store or a folder.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/error.h"
#include "store/hub.h"
#include "store/store.h"

namespace mlxcel::cli {
namespace {

struct DownloadArgs {
  std::string model;
  std::string local_dir;
  std::string revision = "main";
  std::string models_dir;
  bool gguf = false;
  std::vector<std::string> include;
  int jobs = 4;
};

void run_download(const DownloadArgs& args) {
  auto cfg = store::StoreConfig::from_env(args.models_dir);
  store::RepoId repo = store::parse_repo_id(args.model, cfg);
  auto opts = store::DownloadOptions::from_env();
  opts.revision = args.revision;
  opts.include_gguf = args.gguf;
  opts.include = args.include;
  if (args.jobs < 1 || args.jobs > 64) invalid("--jobs must be between 1 and 64");
  opts.n_parallel = args.jobs;
  store::DownloadResult r = args.local_dir.empty()
                                ? store::download_model(repo, cfg, opts)
                                : store::download_to_dir(repo.str(), args.local_dir, opts);
  if (r.already_present) {
    std::printf("%s is already complete in %s\n", repo.str().c_str(), r.path.c_str());
  } else {
    std::printf("Downloaded %s (%zu files, %s) to %s\n", repo.str().c_str(), r.files.size(),
                store::human_size(r.bytes_downloaded).c_str(), r.path.c_str());
  }
}

}  // namespace

void add_download_command(CLI::App& app) {
  auto args = std::make_shared<DownloadArgs>();
  CLI::App* cmd = app.add_subcommand(
      "download", "Download a model from the Hugging Face hub (HF_ENDPOINT, HF_TOKEN)");
  cmd->add_option("model", args->model, "owner/name, or a name in $MLXCEL_DEFAULT_ORG "
                                        "(default mlx-community)")
      ->required();
  cmd->add_option("--local-dir", args->local_dir, "Download into this folder instead of the store");
  cmd->add_option("--revision", args->revision, "Branch, tag or commit (default main)");
  cmd->add_option("--models-dir", args->models_dir,
                  "Store directory (default: $MLXCEL_MODELS_DIR or ~/.cache/mlxcel/models)");
  cmd->add_flag("--gguf", args->gguf, "Also download every *.gguf file");
  cmd->add_option("--include", args->include,
                  "Also download files matching this glob, e.g. '*Q4_K_M*.gguf' (repeatable)");
  cmd->add_option("-j,--jobs", args->jobs, "Files downloaded at once (default 4)");
  cmd->callback([args] { run_download(*args); });
}

}  // namespace mlxcel::cli
