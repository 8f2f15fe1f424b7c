// mlxcel: the command-line entry point. Argument parsing only; see src/cli/.
#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"mlxcel: run LLMs from Hugging Face, MLX and GGUF checkpoints"};
  app.require_subcommand(1);
  mlxcel::cli::add_all_commands(app);
  return mlxcel::cli::run_main(app, argc, argv);
}
