#include "cli/commands.h"

#include <cstdio>
#include <exception>

#include "base/error.h"
#include "cli/session.h"

namespace mlxcel::cli {

// One line per subcommand file.
#define MLXCEL_CLI_COMMANDS(X) \
  X(run) \
  X(generate) \
  X(convert) \
  X(inspect) \
  X(arch) \
  X(list) \
  X(rm) \
  X(download) \
  X(serve) \
  X(bench)

#define MLXCEL_DECLARE(name) void add_##name##_command(CLI::App& app);
MLXCEL_CLI_COMMANDS(MLXCEL_DECLARE)
#undef MLXCEL_DECLARE

void add_all_commands(CLI::App& app) {
#define MLXCEL_ADD(name) add_##name##_command(app);
  MLXCEL_CLI_COMMANDS(MLXCEL_ADD)
#undef MLXCEL_ADD
}

void add_memory_flags(CLI::App* cmd, ModelArgs& m) {
  cmd->add_option("--device", m.device,
                  "Where the model runs: cpu, cuda, cuda:N or auto (a CUDA GPU when present)")
      ->capture_default_str();
  cmd->add_flag("--estimate-memory", m.estimate_memory,
                "Estimate the memory the model needs first (as `mlxcel inspect`); abort if it will not fit");
  cmd->add_flag("--force,--no-memory-check", m.force, "With --estimate-memory: load even when it will not fit");
}

int run_main(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const Error& e) {
    std::fprintf(stderr, "mlxcel: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlxcel: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}

}  // namespace mlxcel::cli
