// `mlxcel rm`: delete models from the store (never from the Hugging Face cache).
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/error.h"
#include "store/store.h"

namespace mlxcel::cli {
namespace {

struct RmArgs {
  std::vector<std::string> models;
  std::string models_dir;
  bool yes = false;
};

void run_rm(const RmArgs& args) {
  auto cfg = store::StoreConfig::from_env(args.models_dir);
  // Check every model first so that nothing is deleted when one of them is refused.
  std::vector<store::ModelEntry> plan;
  for (const auto& id : args.models) plan.push_back(store::plan_remove(id, cfg));
  if (!args.yes) {
    if (!isatty(STDIN_FILENO)) {
      invalid("refusing to delete without confirmation: stdin is not a terminal; pass --yes");
    }
    for (const auto& e : plan) {
      std::fprintf(stderr, "  %s  %s  %s\n", e.repo_id.c_str(),
                   store::human_size(e.size_bytes).c_str(), e.path.c_str());
    }
    std::fprintf(stderr, "Delete %s? [y/N] ", plan.size() == 1 ? "this model" : "these models");
    std::fflush(stderr);
    std::string answer;
    std::getline(std::cin, answer);
    if (answer != "y" && answer != "Y" && answer != "yes" && answer != "YES") {
      invalid("not deleted");
    }
  }
  for (const auto& e : plan) {
    auto removed = store::remove_model(e.path.string(), cfg);
    std::printf("Deleted %s (%s freed)\n", removed.repo_id.c_str(),
                store::human_size(removed.size_bytes).c_str());
  }
}

}  // namespace

void add_rm_command(CLI::App& app) {
  auto args = std::make_shared<RmArgs>();
  CLI::App* cmd = app.add_subcommand(
      "rm", "Delete models from the store (the Hugging Face cache is never touched)");
  cmd->add_option("model", args->models, "Model id (owner/name or name) or a path in the store")
      ->required();
  cmd->add_flag("-y,--yes", args->yes, "Do not ask for confirmation");
  cmd->add_option("--models-dir", args->models_dir,
                  "Store directory (default: $MLXCEL_MODELS_DIR or ~/.cache/mlxcel/models)");
  cmd->callback([args] { run_rm(*args); });
}

}  // namespace mlxcel::cli
