#include "fixture.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "models/model.h"
#include "tokenizer/tokenizer.h"

namespace mlxcel::server::test {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
const char* kChatml =
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ raise_exception('Unknown role: ' + message['role']) }}{%- endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking %}{{ '<think>\\n' }}{%- endif %}{%- endif %}";

}  // namespace

std::string make_model_dir() {
  const fs::path src = fs::path(MLXCEL_SOURCE_DIR) / "tests" / "fixtures";
  static int counter = 0;
  fs::path dir = fs::temp_directory_path() /
                 ("mlxcel_server_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  fs::create_directories(dir);
  fs::copy_file(src / "qwen3" / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(src / "qwen3" / "model.safetensors", dir / "model.safetensors", fs::copy_options::overwrite_existing);
  json tok = json::parse(std::ifstream(src / "tokenizer" / "trained_unigram.json"));
  int next = 0;
  for (auto& t : tok["added_tokens"]) next = std::max(next, t["id"].get<int>() + 1);
  for (const char* s : {"<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>"}) {
    bool special = std::string(s).find("|") != std::string::npos;
    tok["added_tokens"].push_back({{"id", next++}, {"content", s}, {"single_word", false}, {"lstrip", false},
                                   {"rstrip", false}, {"normalized", false}, {"special", special}});
  }
  std::ofstream(dir / "tokenizer.json") << tok.dump();
  json cfg = {{"chat_template", kChatml}, {"eos_token", "<|im_end|>"}, {"bos_token", nullptr}};
  std::ofstream(dir / "tokenizer_config.json") << cfg.dump();
  return dir.string();
}

// Delegates to the real model after a sleep: a slow generation without a big model.
class SlowModel : public Model {
 public:
  SlowModel(std::unique_ptr<Model> inner, int ms) : inner_(std::move(inner)), ms_(ms) {
    config_ = inner_->config();
    kv_layers_ = inner_->kv_layers();
    device_ = inner_->device();
  }
  Tensor forward(const Batch& b, KvCache& cache) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms_));
    return inner_->forward(b, cache);
  }

 private:
  std::unique_ptr<Model> inner_;
  int ms_;
};

struct Loaded {
  std::unique_ptr<Model> model;
  TokenizerBundle tok;
  std::optional<chat::ChatTemplate> tpl;
};

ModelLoader loader_for(const std::string& dir, int slow_ms) {
  return [dir, slow_ms] {
    std::unique_ptr<Model> model = load_model(dir);
    if (slow_ms > 0) model = std::make_unique<SlowModel>(std::move(model), slow_ms);
    auto l = std::make_shared<Loaded>(Loaded{std::move(model), load_tokenizer(dir), std::nullopt});
    l->tpl.emplace(l->tok.chat_template);
    ServedModel m;
    m.model = l->model.get();
    m.tokenizer = &l->tok;
    m.chat_template = &*l->tpl;
    for (int id : l->tok.eos_token_ids) m.stop_ids.push_back(id);
    m.path = dir;
    m.id = "fixture";
    m.owner = l;
    return m;
  };
}

std::unique_ptr<Server> start_server(const std::string& dir, std::vector<std::string> args, int slow_ms) {
  args.insert(args.end(), {"--port", "0", "--threads-http", "2"});
  auto srv = std::make_unique<Server>(parse_server_args(args, [](const char*) -> const char* { return nullptr; }),
                                      loader_for(dir, slow_ms));
  srv->start();
  for (int i = 0; i < 600 && !srv->ready() && srv->load_error().empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (!srv->ready()) throw std::runtime_error("the test server did not start: " + srv->load_error());
  return srv;
}


}  // namespace mlxcel::server::test
