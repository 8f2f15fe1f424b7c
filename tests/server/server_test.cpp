// The real server, in-process on a free port, over tests/fixtures/qwen3 (random weights,
// 512 ids, context 128) plus a small trained Unigram tokenizer with ChatML tokens added.
// Output text is random; the tests check the wire format, limits and error handling.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "models/model.h"
#include "base/error.h"
#include "server/http.h"
#include "server/server.h"
#include "test_client.h"
#include "tokenizer/tokenizer.h"

namespace mlxcel::server {
namespace {

using json = nlohmann::json;
using test::call;
namespace fs = std::filesystem;

const char* kChatml =
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ raise_exception('Unknown role: ' + message['role']) }}{%- endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking %}{{ '<think>\\n' }}{%- endif %}{%- endif %}";

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

struct Loaded {
  std::unique_ptr<Model> model;
  TokenizerBundle tok;
  std::optional<chat::ChatTemplate> tpl;
};

ModelLoader loader_for(const std::string& dir) {
  return [dir] {
    auto l = std::make_shared<Loaded>(Loaded{load_model(dir), load_tokenizer(dir), std::nullopt});
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

std::unique_ptr<Server> start_server(const std::string& dir, std::vector<std::string> args) {
  args.insert(args.end(), {"--port", "0", "--threads-http", "2"});
  auto srv = std::make_unique<Server>(parse_server_args(args, [](const char*) -> const char* { return nullptr; }),
                                      loader_for(dir));
  srv->start();
  for (int i = 0; i < 600 && !srv->ready() && srv->load_error().empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(srv->ready()) << srv->load_error();
  return srv;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = make_model_dir();
    srv_ = start_server(dir_, {"--alias", "fixture-model", "--metrics", "--max-body-size", "65536", "-np", "2",
                               "--max-queue", "2"})
               .release();
  }
  static void TearDownTestSuite() {
    delete srv_;
    fs::remove_all(dir_);
  }
  static int port() { return srv_->port(); }
  static json post_json(const std::string& path, const json& body, int expect = 200) {
    auto r = call(port(), "POST", path, body.dump());
    EXPECT_EQ(r.status, expect) << r.body;
    return r.body.empty() ? json() : json::parse(r.body, nullptr, false);
  }
  static void expect_error(const test::Resp& r, int status, const std::string& type) {
    EXPECT_EQ(r.status, status) << r.body;
    json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_EQ(j["error"]["type"], type) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"].contains("param") && j["error"].contains("code"));
  }
  static inline std::string dir_;
  static inline Server* srv_ = nullptr;
};

const json kMsgs = json::array({{{"role", "user"}, {"content", "hello world"}}});

TEST_F(ServerTest, HealthAndModels) {
  auto h = call(port(), "GET", "/health");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(json::parse(h.body)["status"], "ok");
  auto m = json::parse(call(port(), "GET", "/v1/models").body);
  EXPECT_EQ(m["object"], "list");
  EXPECT_EQ(m["data"][0]["id"], "fixture-model");
}

TEST_F(ServerTest, ChatCompletion) {
  json j = post_json("/v1/chat/completions", {{"model", "x"}, {"messages", kMsgs}, {"max_tokens", 8}, {"seed", 1}});
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(j["model"], "fixture-model");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_TRUE(j["choices"][0]["message"]["content"].is_string());
  std::string fr = j["choices"][0]["finish_reason"];
  EXPECT_TRUE(fr == "stop" || fr == "length") << fr;
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 3);
  EXPECT_LE(j["usage"]["completion_tokens"].get<int>(), 8);
  EXPECT_EQ(j["usage"]["total_tokens"].get<int>(),
            j["usage"]["prompt_tokens"].get<int>() + j["usage"]["completion_tokens"].get<int>());
  // Greedy with the same seed is reproducible.
  json a = post_json("/v1/chat/completions", {{"messages", kMsgs}, {"max_tokens", 6}, {"temperature", 0}});
  json b = post_json("/v1/chat/completions", {{"messages", kMsgs}, {"max_tokens", 6}, {"temperature", 0}});
  EXPECT_EQ(a["choices"][0]["message"]["content"], b["choices"][0]["message"]["content"]);
}

TEST_F(ServerTest, ChatStreamFormat) {
  json body = {{"messages", kMsgs}, {"max_tokens", 6}, {"stream", true}, {"stream_options", {{"include_usage", true}}}};
  auto r = call(port(), "POST", "/v1/chat/completions", body.dump());
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.header("content-type").find("text/event-stream"), std::string::npos);
  auto ev = test::sse_events(r.body);
  ASSERT_GE(ev.size(), 4u) << r.body;
  EXPECT_EQ(ev.back(), "[DONE]");
  std::string id;
  bool saw_finish = false;
  for (size_t i = 0; i + 1 < ev.size(); ++i) {
    json c = json::parse(ev[i]);
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    if (id.empty()) id = c["id"];
    EXPECT_EQ(c["id"], id);  // one id per stream
    if (i == 0) {
      EXPECT_EQ(c["choices"][0]["delta"]["role"], "assistant");
    }
    if (i + 2 == ev.size()) {  // the usage chunk
      EXPECT_TRUE(c["choices"].empty());
      EXPECT_GT(c["usage"]["completion_tokens"].get<int>(), 0);
    } else {
      EXPECT_TRUE(c["usage"].is_null());
      if (!c["choices"][0]["finish_reason"].is_null()) saw_finish = true;
    }
  }
  EXPECT_TRUE(saw_finish);
}

TEST_F(ServerTest, CompletionsAndN) {
  json j = post_json("/v1/completions", {{"prompt", "hello"}, {"max_tokens", 5}, {"n", 2}, {"temperature", 1.0}});
  EXPECT_EQ(j["object"], "text_completion");
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][1]["index"], 1);
  auto r = call(port(), "POST", "/v1/completions", json({{"prompt", "hello"}, {"max_tokens", 4}, {"stream", true}}).dump());
  auto ev = test::sse_events(r.body);
  ASSERT_GE(ev.size(), 2u);
  EXPECT_EQ(ev.back(), "[DONE]");
  EXPECT_EQ(json::parse(ev[0])["object"], "text_completion");
  // Token-id prompts.
  json k = post_json("/v1/completions", {{"prompt", {5, 6, 7}}, {"max_tokens", 3}});
  EXPECT_EQ(k["usage"]["prompt_tokens"], 3);
}

TEST_F(ServerTest, LlamaCompletion) {
  json j = post_json("/completion", {{"prompt", "hello"}, {"n_predict", 4}});
  EXPECT_EQ(j["stop"], true);
  EXPECT_TRUE(j["content"].is_string());
  EXPECT_LE(j["tokens_predicted"].get<int>(), 4);
  auto r = call(port(), "POST", "/completion", json({{"prompt", "hello"}, {"n_predict", 3}, {"stream", true}}).dump());
  auto ev = test::sse_events(r.body);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(json::parse(ev.back())["stop"], true);
}

TEST_F(ServerTest, TokenizeDetokenizeTemplate) {
  json t = post_json("/tokenize", {{"content", "hello world"}});
  ASSERT_FALSE(t["tokens"].empty());
  json d = post_json("/detokenize", {{"tokens", t["tokens"]}});
  EXPECT_NE(d["content"].get<std::string>().find("hello"), std::string::npos);
  json p = post_json("/tokenize", {{"content", "hi"}, {"with_pieces", true}});
  EXPECT_TRUE(p["tokens"][0].contains("piece"));
  json a = post_json("/apply-template", {{"messages", kMsgs}});
  EXPECT_EQ(a["prompt"], "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n");
  expect_error(call(port(), "POST", "/detokenize", R"({"tokens": [99999]})"), 400, "invalid_request_error");
}

TEST_F(ServerTest, PropsSlotsMetrics) {
  json p = json::parse(call(port(), "GET", "/props").body);
  EXPECT_EQ(p["default_generation_settings"]["n_ctx"], 128);
  EXPECT_EQ(p["total_slots"], 2);
  json s = json::parse(call(port(), "GET", "/slots").body);
  EXPECT_EQ(s.size(), 2u);
  post_json("/v1/completions", {{"prompt", "hello"}, {"max_tokens", 2}});
  auto m = call(port(), "GET", "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("llamacpp:prompt_tokens_total"), std::string::npos);
  EXPECT_NE(m.body.find("llamacpp:tokens_predicted_total"), std::string::npos);
  expect_error(call(port(), "POST", "/props", "{}"), 501, "not_supported_error");
  expect_error(call(port(), "POST", "/v1/embeddings", "{}"), 501, "not_supported_error");
  json r = post_json("/v1/responses", {{"input", "hello"}, {"instructions", "be brief"}, {"max_output_tokens", 4}});
  EXPECT_EQ(r["object"], "response");
  EXPECT_EQ(r["id"].get<std::string>().rfind("resp_", 0), 0u);
  EXPECT_EQ(r["output"].back()["type"], "message");
  EXPECT_LE(r["usage"]["output_tokens"].get<int>(), 4);
  json r2 = post_json("/v1/responses",
                      {{"input", {{{"role", "user"}, {"content", {{{"type", "input_text"}, {"text", "hi"}}}}}}},
                       {"max_output_tokens", 2}});
  EXPECT_EQ(r2["output"].back()["content"][0]["type"], "output_text");
  expect_error(call(port(), "POST", "/v1/responses", R"({"input": "x", "stream": true})"), 400, "invalid_request_error");
  expect_error(call(port(), "POST", "/v1/responses", "{}"), 400, "invalid_request_error");
}

TEST_F(ServerTest, ErrorBodiesAndServerKeepsServing) {
  auto chat = [&](const std::string& body) { return call(port(), "POST", "/v1/chat/completions", body); };
  expect_error(chat("{not json"), 400, "invalid_request_error");
  expect_error(chat(R"({"messages": "hi"})"), 400, "invalid_request_error");
  expect_error(chat(json({{"messages", kMsgs}, {"temperature", "hot"}}).dump()), 400, "invalid_request_error");
  EXPECT_EQ(json::parse(chat(json({{"messages", kMsgs}, {"temperature", "hot"}}).dump()).body)["error"]["param"],
            "temperature");
  expect_error(chat("{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}"), 400, "invalid_request_error");
  expect_error(chat(json({{"messages", kMsgs}, {"max_tokens", -5}}).dump()), 400, "invalid_request_error");
  expect_error(chat(json({{"messages", kMsgs}, {"max_tokens", 0}}).dump()), 400, "invalid_request_error");
  expect_error(chat(json({{"messages", kMsgs}, {"logprobs", true}}).dump()), 400, "invalid_request_error");
  expect_error(chat(json({{"messages", kMsgs}, {"logit_bias", {{"5", 1}}}}).dump()), 400, "invalid_request_error");
  expect_error(chat(json({{"messages", kMsgs}, {"response_format", {{"type", "json_object"}}}}).dump()), 400,
               "invalid_request_error");
  expect_error(chat(json({{"messages", {{{"role", "robot"}, {"content", "x"}}}}}).dump()), 400,
               "invalid_request_error");  // the template raises
  std::string deep = std::string(200, '[') + std::string(200, ']');
  expect_error(chat("{\"messages\": " + deep + "}"), 400, "invalid_request_error");
  // A prompt longer than the context (128 tokens): 400 naming the numbers.
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "hello world ";
  auto r = chat(json({{"messages", {{{"role", "user"}, {"content", long_text}}}}}).dump());
  expect_error(r, 400, "invalid_request_error");
  EXPECT_NE(r.body.find("128"), std::string::npos) << r.body;
  // Huge max_tokens is clamped to the room left in the context.
  json ok = post_json("/v1/chat/completions", {{"messages", kMsgs}, {"max_tokens", 1000000}, {"unknown", {1, 2}}});
  EXPECT_LE(ok["usage"]["total_tokens"].get<int>(), 128);
  // 404, 413, busy 503.
  expect_error(call(port(), "GET", "/nope"), 404, "not_found_error");
  auto big = call(port(), "POST", "/v1/chat/completions", std::string(100000, ' '));
  expect_error(big, 413, "invalid_request_error");
  EXPECT_EQ(json::parse(big.body)["error"]["code"], "request_too_large");
  auto busy = chat(json({{"messages", kMsgs}, {"n", 16}, {"max_tokens", 2}}).dump());
  expect_error(busy, 503, "unavailable_error");
  EXPECT_EQ(busy.header("retry-after"), "1");
  // Still serving.
  json j = post_json("/v1/chat/completions", {{"messages", kMsgs}, {"max_tokens", 3}});
  EXPECT_EQ(j["object"], "chat.completion");
}

TEST_F(ServerTest, ReasoningSplit) {
  // The prompt ends in <think>: the output is reasoning until </think>.
  json j = post_json("/v1/chat/completions", {{"messages", kMsgs},
                                               {"max_tokens", 6},
                                               {"temperature", 0},
                                               {"chat_template_kwargs", {{"enable_thinking", true}}}});
  json msg = j["choices"][0]["message"];
  ASSERT_TRUE(msg.contains("reasoning_content")) << msg.dump();
  EXPECT_FALSE(msg["reasoning_content"].get<std::string>().empty());
  EXPECT_EQ(msg["reasoning_content"].get<std::string>().find("<think>"), std::string::npos);
  json a = post_json("/apply-template", {{"messages", kMsgs}, {"chat_template_kwargs", {{"enable_thinking", true}}}});
  EXPECT_NE(a["prompt"].get<std::string>().find("<think>"), std::string::npos);
}

TEST_F(ServerTest, KeepAliveAndPipelining) {
  std::string body = json({{"prompt", "hi"}, {"max_tokens", 2}}).dump();
  std::string one = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\n\r\n" + body;
  std::string last = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  auto rs = test::parse_responses(test::send_raw(port(), one + one + last));
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[0].status, 200);
  EXPECT_EQ(rs[1].status, 200);
  EXPECT_EQ(rs[2].status, 200);
  EXPECT_EQ(rs[0].header("connection"), "keep-alive");
}

TEST_F(ServerTest, ExpectContinue) {
  std::string body = json({{"prompt", "hi"}, {"max_tokens", 2}}).dump();
  std::string raw = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\n"
                    "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  // send_raw sends headers and body together; the interim 100 comes first either way.
  std::string out = test::send_raw(port(), raw + body);
  EXPECT_EQ(out.rfind("HTTP/1.1 100 Continue\r\n\r\n", 0), 0u) << out.substr(0, 80);
  auto rs = test::parse_responses(out.substr(out.find("\r\n\r\n") + 4));
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].status, 200);
}

TEST_F(ServerTest, StopStringsAndCurl) {
  // A stop string is never in the output.
  json g = post_json("/v1/completions", {{"prompt", "hello"}, {"max_tokens", 20}, {"temperature", 0}});
  std::string text = g["choices"][0]["text"];
  if (text.size() >= 2) {
    std::string stop = text.substr(text.size() / 2, 1);
    json s = post_json("/v1/completions",
                       {{"prompt", "hello"}, {"max_tokens", 20}, {"temperature", 0}, {"stop", {stop}}});
    EXPECT_EQ(s["choices"][0]["text"].get<std::string>().find(stop), std::string::npos);
    EXPECT_EQ(s["choices"][0]["finish_reason"], "stop");
  }
  if (std::system("curl --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "curl is not installed";
  std::string cmd = "curl -s -N http://127.0.0.1:" + std::to_string(port()) +
                    "/v1/chat/completions -H 'Content-Type: application/json' -d "
                    "'{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":3,\"stream\":true}'";
  FILE* f = ::popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  ::pclose(f);
  EXPECT_NE(out.find("data: [DONE]"), std::string::npos) << out;
  EXPECT_NE(out.find("\"role\":\"assistant\""), std::string::npos) << out;
}

TEST(ServerAuth, ApiKeysAndCors) {
  std::string dir = make_model_dir();
  auto srv = start_server(dir, {"--api-key", "key-one,key-two"});
  const int p = srv->port();
  const std::string body = json({{"messages", kMsgs}, {"max_tokens", 2}}).dump();
  auto missing = call(p, "POST", "/v1/chat/completions", body);
  auto wrong = call(p, "POST", "/v1/chat/completions", body, {"Authorization: Bearer nope"});
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(missing.body, wrong.body);
  EXPECT_EQ(json::parse(missing.body)["error"]["type"], "authentication_error");
  EXPECT_EQ(missing.body.find("key-one"), std::string::npos);
  EXPECT_EQ(call(p, "POST", "/v1/chat/completions", body, {"Authorization: Bearer key-one"}).status, 200);
  EXPECT_EQ(call(p, "POST", "/v1/chat/completions", body, {"X-Api-Key: key-two"}).status, 200);
  EXPECT_EQ(call(p, "GET", "/health").status, 200);  // open
  auto pre = call(p, "OPTIONS", "/v1/chat/completions", "",
                  {"Origin: http://app.test", "Access-Control-Request-Method: POST",
                   "Access-Control-Request-Headers: authorization, content-type"});
  EXPECT_EQ(pre.status, 204);
  EXPECT_EQ(pre.header("access-control-allow-origin"), "http://app.test");
  EXPECT_NE(pre.header("access-control-allow-headers").find("authorization"), std::string::npos);
  auto cors = call(p, "GET", "/v1/models", "", {"Origin: http://app.test", "X-Api-Key: key-one"});
  EXPECT_EQ(cors.header("access-control-allow-origin"), "http://app.test");
  srv.reset();
  fs::remove_all(dir);
}

TEST(ServerUnix, UnixSocketWithCurl) {
  if (std::system("curl --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "curl is not installed";
  std::string dir = make_model_dir();
  std::string sock = dir + "/server.sock";
  auto srv = std::make_unique<Server>(
      parse_server_args({"--host", sock}, [](const char*) -> const char* { return nullptr; }), loader_for(dir));
  srv->start();
  for (int i = 0; i < 600 && !srv->ready(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  FILE* f = ::popen(("curl -s --unix-socket " + sock + " http://localhost/health").c_str(), "r");
  char buf[256] = {0};
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  ::pclose(f);
  EXPECT_NE(std::string(buf, n).find("ok"), std::string::npos);
  srv.reset();
  fs::remove_all(dir);
}

std::string run_cmd(const std::string& cmd) {
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) return {};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  ::pclose(f);
  return out;
}

TEST(ServerTls, HttpsWithSelfSignedCert) {
  if (!HttpServer::tls_available()) GTEST_SKIP() << "built without OpenSSL";
  if (std::system("openssl version > /dev/null 2>&1 && curl --version > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "openssl or curl is not installed";
  std::string dir = make_model_dir();
  std::string key = dir + "/key.pem", cert = dir + "/cert.pem";
  ASSERT_EQ(std::system(("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 -keyout " + key +
                         " -out " + cert + " > /dev/null 2>&1")
                            .c_str()),
            0);
  auto srv = start_server(dir, {"--ssl-key-file", key, "--ssl-cert-file", cert});
  std::string out = run_cmd("curl -sk https://127.0.0.1:" + std::to_string(srv->port()) + "/health");
  EXPECT_NE(out.find("ok"), std::string::npos) << out;
  // Plain HTTP to the TLS port gets no HTTP answer.
  EXPECT_EQ(run_cmd("curl -s --max-time 5 http://127.0.0.1:" + std::to_string(srv->port()) + "/health").find("ok"),
            std::string::npos);
  srv.reset();
  fs::remove_all(dir);
  // Bad certificate files fail at start-up.
  Server bad(parse_server_args({"--port", "0", "--ssl-key-file", "/nonexistent.pem", "--ssl-cert-file", "/nonexistent.pem"},
                               [](const char*) -> const char* { return nullptr; }),
             [] { return ServedModel{}; });
  EXPECT_THROW(bad.start(), Error);
}

// The project's own demo model (models/mlxcel-demo) answers checkable questions.
TEST(ServerDemoModel, AnswersToolCallsAndReasoning) {
  const std::string dir = std::string(MLXCEL_SOURCE_DIR) + "/models/mlxcel-demo";
  if (!fs::exists(dir + "/model.safetensors")) GTEST_SKIP() << "models/mlxcel-demo is not present";
  auto srv = start_server(dir, {"-np", "2"});
  const int p = srv->port();
  auto post = [&](const json& body) { return json::parse(call(p, "POST", "/v1/chat/completions", body.dump()).body); };
  json add = post({{"messages", {{{"role", "user"}, {"content", "What is 667 + 911?"}}}},
                   {"chat_template_kwargs", {{"enable_thinking", false}}}});
  EXPECT_EQ(add["choices"][0]["message"]["content"], "1578") << add.dump();
  EXPECT_EQ(add["choices"][0]["finish_reason"], "stop");
  json tools = json::array({{{"type", "function"},
                             {"function",
                              {{"name", "get_stock_price"},
                               {"description", "Get the latest stock price for a ticker symbol."},
                               {"parameters",
                                {{"type", "object"},
                                 {"properties", {{"symbol", {{"type", "string"}, {"description", "Ticker symbol"}}}}},
                                 {"required", {"symbol"}}}}}}}});
  json tc = post({{"messages", {{{"role", "user"}, {"content", "What is the stock price of AMZN?"}}}},
                  {"tools", tools},
                  {"max_tokens", 60},
                  {"chat_template_kwargs", {{"enable_thinking", false}}}});
  EXPECT_EQ(tc["choices"][0]["finish_reason"], "tool_calls") << tc.dump();
  if (tc["choices"][0]["message"].contains("tool_calls")) {
    json call0 = tc["choices"][0]["message"]["tool_calls"][0];
    EXPECT_EQ(call0["function"]["name"], "get_stock_price");
    EXPECT_EQ(json::parse(call0["function"]["arguments"].get<std::string>())["symbol"], "AMZN");
  }
  json th = post({{"messages", {{{"role", "user"}, {"content", "What is the capital of France?"}}}}, {"max_tokens", 60}});
  json msg = th["choices"][0]["message"];
  EXPECT_EQ(msg["content"], "Paris") << th.dump();
  EXPECT_FALSE(msg.value("reasoning_content", "").empty()) << th.dump();
}

TEST(ServerLoading, HealthIs503WhileLoading) {
  std::string dir = make_model_dir();
  std::promise<void> go;
  std::shared_future<void> gate = go.get_future().share();
  auto inner = loader_for(dir);
  Server srv(parse_server_args({"--port", "0"}, [](const char*) -> const char* { return nullptr; }), [gate, inner] {
    gate.wait();
    return inner();
  });
  srv.start();
  auto h = call(srv.port(), "GET", "/health");
  EXPECT_EQ(h.status, 503);
  EXPECT_EQ(json::parse(h.body)["error"]["message"], "Loading model");
  EXPECT_EQ(call(srv.port(), "POST", "/v1/completions", R"({"prompt": "x"})").status, 503);
  go.set_value();
  for (int i = 0; i < 600 && !srv.ready(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(call(srv.port(), "GET", "/health").status, 200);
  srv.stop();
  // A model that fails to load: /health says so (500) instead of loading forever.
  Server bad(parse_server_args({"--port", "0"}, [](const char*) -> const char* { return nullptr; }),
             []() -> ServedModel { throw Error(ErrorKind::not_found, "no such model"); });
  bad.start();
  for (int i = 0; i < 200 && bad.load_error().empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto b = call(bad.port(), "GET", "/health");
  EXPECT_EQ(b.status, 500);
  EXPECT_NE(b.body.find("no such model"), std::string::npos);
  fs::remove_all(dir);
}

TEST_F(ServerTest, ClientDisconnectCancels) {
  // Slow enough to outlive the client: n=2 streams to the end of the context.
  std::string body = json({{"prompt", "hello"}, {"stream", true}, {"temperature", 1.0}}).dump();
  std::string raw = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\n\r\n" + body;
  for (int i = 0; i < 4; ++i) test::send_raw(port(), raw, 0);  // reads nothing, closes at once
  // The server keeps serving (503 busy only until the cancelled generations are gone),
  // and nothing is left in flight afterwards.
  test::Resp r;
  for (int i = 0; i < 200; ++i) {
    r = call(port(), "POST", "/v1/completions", json({{"prompt", "hi"}, {"max_tokens", 2}}).dump());
    if (r.status != 503) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(r.status, 200) << r.body;
  std::string slots;
  for (int i = 0; i < 100; ++i) {
    slots = call(port(), "GET", "/slots").body;
    if (slots.find("true") == std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(slots.find("\"is_processing\":true"), std::string::npos) << slots;
}

}  // namespace
}  // namespace mlxcel::server
