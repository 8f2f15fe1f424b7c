// Shared by the server tests, the soak test and nothing else: a model folder made from
// tests/fixtures/qwen3 (random weights, 512 ids, context 128) plus a small trained
// Unigram tokenizer with ChatML tokens added, and an in-process server over it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "server/server.h"

namespace mlxcel::server::test {

// A fresh temporary model folder (the caller removes it).
std::string make_model_dir();
// Loads `dir`; with slow_ms > 0 every forward first sleeps that long (timeouts, soak).
ModelLoader loader_for(const std::string& dir, int slow_ms = 0);
// Starts a server on a free port (plus `args`) and waits until it is ready.
std::unique_ptr<Server> start_server(const std::string& dir, std::vector<std::string> args, int slow_ms = 0);

}  // namespace mlxcel::server::test
