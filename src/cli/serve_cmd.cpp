// `mlxcel serve`: the HTTP server, with exactly mlxcel-server's (llama-server style)
// flags, which CLI11 passes through untouched. The model is loaded by the session
// helper (store ids, paths, the bundled demo model) on the server's loading thread.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/session.h"
#include "server/server.h"

namespace mlxcel::cli {

namespace {

server::ServedModel load_for_server(const server::ServerOptions& o) {
  ModelArgs a;
  a.model = o.model;
  a.models_dir = o.models_dir;
  a.chat_template_file = o.chat_template_file;
  a.threads = o.threads;
  a.device = o.device;
  auto lm = std::make_shared<LoadedModel>(open_model(a));
  server::ServedModel m;
  m.model = lm->model.get();
  m.tokenizer = lm->tok ? &*lm->tok : nullptr;
  m.chat_template = lm->chat_template ? &*lm->chat_template : nullptr;
  m.stop_ids = lm->stop_ids;
  m.path = lm->path;
  m.id = !lm->repo_id.empty() ? lm->repo_id : std::filesystem::path(lm->path).filename().string();
  m.owner = lm;
  return m;
}

}  // namespace

// --estimate-memory / --force (--no-memory-check) are mlxcel's own flags (llama-server
// has none): taken out of the arguments here and checked before the server starts, for
// the context (-c, else the model's) times the slots (-np).
int check_server_memory(const std::vector<std::string>& args, const ModelArgs& flags) {
  try {
    const server::ServerOptions o = server::parse_server_args(args);
    if (o.help) return 0;
    ModelArgs a = flags;
    a.model = o.model;
    a.models_dir = o.models_dir;
    a.device = o.device;
    const std::string path = resolve_model_path(a);
    a.kv_tokens = o.ctx_size;  // 0: the model's context, as the server uses
    a.batch = o.n_parallel;
    check_memory(a, path);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "mlxcel-server: error: %s\n", e.what());
    return 1;
  }
}

// Shared with apps/mlxcel_server.cpp (declared there).
int serve_main(const std::vector<std::string>& args) {
  ModelArgs flags;
  std::vector<std::string> rest;
  for (const auto& s : args) {
    if (s == "--estimate-memory") flags.estimate_memory = true;
    else if (s == "--force" || s == "--no-memory-check") flags.force = true;
    else rest.push_back(s);
  }
  if (flags.estimate_memory)
    if (int rc = check_server_memory(rest, flags)) return rc;
  return server::server_main(rest, load_for_server);
}

void add_serve_command(CLI::App& app) {
  auto* sub = app.add_subcommand("serve", "OpenAI-compatible HTTP server (mlxcel-server's flags; --help lists them)");
  sub->prefix_command();
  sub->set_help_flag();
  sub->allow_extras();
  sub->callback([sub] {
    int rc = serve_main(sub->remaining());
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace mlxcel::cli
