// mlxcel-server: llama-server compatible entry point (`mlxcel serve` is the same).
// Argument parsing only; see src/server/ and src/cli/serve_cmd.cpp.
#include <string>
#include <vector>

namespace mlxcel::cli {
int serve_main(const std::vector<std::string>& args);  // src/cli/serve_cmd.cpp
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return mlxcel::cli::serve_main(args);
}
