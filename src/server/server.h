// mlxcel-server: an OpenAI-compatible (and llama-server compatible) HTTP server over the
// AsyncEngine. It listens at once (GET /health answers 503 while the model loads, 200
// when ready) and loads the model on a background thread through `load`.
//
//   Server srv(opts, [&] { return my_loaded_model(); });
//   srv.start();          // binds (throws on a bad address/TLS files)
//   srv.wait();           // until stop()
// docs/server.md lists the endpoints, request fields and flags.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "server/options.h"

namespace mlxcel {
class Model;
struct TokenizerBundle;
namespace chat {
class ChatTemplate;
}
}  // namespace mlxcel

namespace mlxcel::server {

// A loaded model. `owner` keeps the pointed-to objects alive.
struct ServedModel {
  std::shared_ptr<void> owner;
  Model* model = nullptr;
  const TokenizerBundle* tokenizer = nullptr;         // required
  const chat::ChatTemplate* chat_template = nullptr;  // null: chat endpoints answer 400
  std::vector<int> stop_ids;                          // EOS ids
  std::string path;                                   // the checkpoint folder
  std::string id;                                     // e.g. owner/name (the default alias)
};
using ModelLoader = std::function<ServedModel()>;

struct ServerState;

class Server {
 public:
  Server(ServerOptions opts, ModelLoader load);
  ~Server();
  void start();
  int port() const;        // bound TCP port
  bool ready() const;      // the model is loaded
  std::string load_error() const;  // non-empty when loading failed
  void stop();
  void wait();

 private:
  std::shared_ptr<ServerState> state_;
};

// Parses args, runs until SIGINT/SIGTERM; returns the process exit code. `load` gets
// the parsed options.
int server_main(const std::vector<std::string>& args, const std::function<ServedModel(const ServerOptions&)>& load);

}  // namespace mlxcel::server
