// The `mlxcel` subcommands. Each lives in its own file (src/cli/<name>_cmd.cpp) and
// exposes one `add_<name>_command(CLI::App&)` that declares its flags and sets its
// callback. apps/mlxcel.cpp only parses arguments.
#pragma once

#include <CLI/CLI.hpp>

namespace mlxcel::cli {

// Adds every subcommand to `app` (the list is in commands.cpp).
void add_all_commands(CLI::App& app);

struct ModelArgs;
// --device, --estimate-memory and --force/--no-memory-check (see ModelArgs), shared by
// run, generate and serve.
void add_memory_flags(CLI::App* cmd, ModelArgs& m);

// Runs the parsed app; maps mlxcel::Error to one line on stderr and exit code 1.
int run_main(CLI::App& app, int argc, char** argv);

}  // namespace mlxcel::cli
