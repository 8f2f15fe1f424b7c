// `mlxcel serve`: the HTTP server, with exactly mlxcel-server's (llama-server style)
// flags, which CLI11 passes through untouched. The model is loaded by the session
// helper (store ids, paths, the bundled demo model) on the server's loading thread.
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

// Shared with apps/mlxcel_server.cpp (declared there).
int serve_main(const std::vector<std::string>& args) { return server::server_main(args, load_for_server); }

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
