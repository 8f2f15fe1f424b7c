// `mlxcel list`: the models in the store and the Hugging Face cache.
#include <cstdio>
#include <memory>
#include <set>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "store/store.h"

namespace mlxcel::cli {
namespace {

struct ListArgs {
  std::string models_dir;
  bool json = false;
  bool quiet = false;
  bool verbose = false;
};

const char* source_label(store::ModelSource s) {
  return s == store::ModelSource::hf_cache ? "hf-cache" : "store";
}

// "2024-05-01 12:00" (UTC) for the table.
std::string short_time(int64_t t) {
  std::string iso = store::iso8601_utc(t);
  return iso.substr(0, 10) + " " + iso.substr(11, 5);
}

void run_list(const ListArgs& args) {
  auto cfg = store::StoreConfig::from_env(args.models_dir);
  auto models = store::list_models(cfg);
  if (args.json) {
    // Stable schema: one object per model, keys in this order.
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& m : models) {
      out.push_back({{"repo_id", m.repo_id},
                     {"size_bytes", m.size_bytes},
                     {"path", m.path.string()},
                     {"modified", store::iso8601_utc(m.modified)},
                     {"source", store::model_source_name(m.source)}});
    }
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  if (args.quiet) {
    std::set<std::string> seen;
    for (const auto& m : models) {
      if (seen.insert(m.repo_id).second) std::printf("%s\n", m.repo_id.c_str());
    }
    return;
  }
  if (models.empty()) {
    std::printf("No models in %s or %s.\nGet one with: mlxcel download OWNER/NAME\n",
                cfg.models_dir.c_str(), cfg.hf_hub_cache.c_str());
    return;
  }
  size_t w = 4;
  for (const auto& m : models) w = std::max(w, m.repo_id.size());
  std::printf("%-*s  %10s  %-16s  %s%s\n", int(w), "NAME", "SIZE", "MODIFIED",
              args.verbose ? "SOURCE  " : "SOURCE",
              args.verbose ? "  PATH" : "");
  for (const auto& m : models) {
    std::printf("%-*s  %10s  %-16s  ", int(w), m.repo_id.c_str(),
                store::human_size(m.size_bytes).c_str(), short_time(m.modified).c_str());
    if (args.verbose) {
      std::printf("%-8s  %s", source_label(m.source), m.path.c_str());
    } else {
      std::printf("%s", source_label(m.source));
    }
    std::printf("\n");
  }
}

}  // namespace

void add_list_command(CLI::App& app) {
  auto args = std::make_shared<ListArgs>();
  CLI::App* cmd =
      app.add_subcommand("list", "List the models in the store and the Hugging Face cache");
  cmd->alias("ls");
  cmd->add_option("--models-dir", args->models_dir,
                  "Store directory (default: $MLXCEL_MODELS_DIR or ~/.cache/mlxcel/models)");
  cmd->add_flag("--json", args->json,
                "JSON array of {repo_id, size_bytes, path, modified, source}");
  cmd->add_flag("-q,--quiet", args->quiet, "Print model ids only");
  cmd->add_flag("-v,--verbose", args->verbose, "Also print each model's path");
  cmd->callback([args] { run_list(*args); });
}

}  // namespace mlxcel::cli
