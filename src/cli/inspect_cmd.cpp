// `mlxcel inspect`: what a model needs in memory for a context and batch size,
// from its headers alone. `mlxcel arch`: the supported architectures.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "models/memory.h"
#include "models/model.h"

namespace mlxcel::cli {

void add_inspect_command(CLI::App& app) {
  struct Args {
    std::string model;
    MemoryRequest req;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("inspect", "Memory a model needs (weights, KV cache, activations)");
  cmd->add_option("-m,--model", a->model, "Checkpoint folder")->required();
  cmd->add_option("--max-tokens", a->req.max_tokens, "Context length per sequence")->check(CLI::Range(1LL, 1LL << 30));
  cmd->add_option("--batch", a->req.batch, "Concurrent sequences")->check(CLI::Range(1LL, 1LL << 20));
  cmd->add_option("--device", a->req.device, "Memory to check against: cpu, cuda (GPU 0) or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  cmd->add_flag("--json", a->json, "Machine-readable output");
  cmd->callback([a] {
    MemoryEstimate e = estimate_memory(a->model, a->req);
    if (a->json) {
      nlohmann::json j = e.to_json();
      j["model"] = a->model;
      j["max_tokens"] = a->req.max_tokens;
      j["batch"] = a->req.batch;
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("%s", e.describe().c_str());
    }
  });
}

void add_arch_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("arch", "List the supported architectures (config.json model_type)");
  cmd->callback([] {
    for (const auto& t : supported_model_types()) std::printf("%s\n", t.c_str());
  });
}

}  // namespace mlxcel::cli
