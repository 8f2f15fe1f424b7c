// The real server, in-process on a free port, over tests/fixtures/qwen3 (random weights,
// 512 ids, context 128) plus a small trained Unigram tokenizer with ChatML tokens added.
// Output text is random; the tests check the wire format, limits and error handling.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "engine/model_runner.h"
#include "models/model.h"
#include "base/error.h"
#include "server/http.h"
#include "server/server.h"
#include "fixture.h"
#include "test_client.h"
#include "tokenizer/tokenizer.h"

namespace mlxcel::server {
namespace {

using json = nlohmann::json;
using test::call;
using test::loader_for;
using test::make_model_dir;
using test::start_server;
namespace fs = std::filesystem;

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
  expect_error(call(port(), "POST", "/v1/responses", "{}"), 400, "invalid_request_error");
}

// ---- logit_bias and logprobs -----------------------------------------------------------

// The fixture model's raw next-token log-softmax after `ids`, computed here: one
// full forward per call through a fresh runner, log-softmax in long double.
std::vector<double> reference_logprobs(Model& model, const std::vector<int>& ids) {
  ModelRunner runner(model, 16, 16);
  ScheduledSeq seq;
  seq.id = 1;
  seq.start = 0;
  seq.token_ids = ids;
  for (int b = 0; b < 16; ++b) seq.block_table.push_back(b);
  seq.sample = true;
  Tensor logits = runner.execute(std::vector<ScheduledSeq>{seq});
  std::vector<float> row = logits.to_f32_vector();
  row.resize(size_t(logits.dim(-1)));
  long double mx = *std::max_element(row.begin(), row.end()), sum = 0;
  for (float x : row) sum += std::exp((long double)x - mx);
  std::vector<double> out;
  for (float x : row) out.push_back(double((long double)x - mx - std::log(sum)));
  return out;
}

std::vector<int> top_ids(const std::vector<double>& lp, int n) {
  std::vector<int> idx(lp.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = int(i);
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(),
                    [&](int a, int b) { return lp[a] > lp[b] || (lp[a] == lp[b] && a < b); });
  idx.resize(n);
  return idx;
}

TEST_F(ServerTest, LogprobsMatchAnIndependentLogSoftmax) {
  auto model = load_model(dir_);
  const std::vector<int> prompt = {5, 17, 42, 99, 7};
  // The fixture model has 512 ids but its tokenizer 407: ids past the tokenizer have no
  // text, so only their numbers are compared.
  const int n_text = int(json::parse(call(port(), "GET", "/v1/models").body)["data"][0]["meta"]["n_vocab"]);
  auto piece = [&](int id) {
    return post_json("/detokenize", {{"tokens", {id}}})["content"].get<std::string>();
  };
  auto expect_piece = [&](const json& got, int id) {
    if (id < n_text) EXPECT_EQ(got, piece(id)) << id;
  };
  // Legacy completions: logprobs = 3, greedy, token-id prompt.
  json c = post_json("/v1/completions",
                     {{"prompt", prompt}, {"max_tokens", 4}, {"temperature", 0}, {"logprobs", 3}});
  json lp = c["choices"][0]["logprobs"];
  ASSERT_TRUE(lp.is_object()) << c.dump();
  const size_t n = lp["tokens"].size();
  ASSERT_EQ(n, size_t(c["usage"]["completion_tokens"].get<int>()));
  ASSERT_EQ(lp["token_logprobs"].size(), n);
  ASSERT_EQ(lp["top_logprobs"].size(), n);
  ASSERT_EQ(lp["text_offset"].size(), n);
  EXPECT_EQ(lp["text_offset"][0], 0);
  std::vector<int> ids = prompt;
  for (size_t i = 0; i < n; ++i) {
    auto ref = reference_logprobs(*model, ids);
    const int best = top_ids(ref, 1)[0];  // greedy picks the argmax
    expect_piece(lp["tokens"][i], best);
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), ref[best], 2e-4) << i;
    // The top dict: the 3 most likely (the chosen one among them).
    json top = lp["top_logprobs"][i];
    EXPECT_GE(top.size(), 1u);
    for (int id : top_ids(ref, 3)) {
      if (id >= n_text) continue;
      ASSERT_TRUE(top.contains(piece(id))) << top.dump();
      EXPECT_NEAR(top[piece(id)].get<double>(), ref[id], 2e-4);
    }
    ids.push_back(best);
  }
  // Chat: logprobs.content[] with top_logprobs (2), bytes; the same numbers streamed.
  json body = {{"messages", kMsgs}, {"max_tokens", 5}, {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 2}};
  json ch = post_json("/v1/chat/completions", body);
  json content = ch["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), size_t(ch["usage"]["completion_tokens"].get<int>())) << ch.dump();
  std::string prompt_text = post_json("/apply-template", {{"messages", kMsgs}})["prompt"];
  std::vector<int> chat_ids = post_json("/tokenize", {{"content", prompt_text}})["tokens"].get<std::vector<int>>();
  for (size_t i = 0; i < content.size(); ++i) {
    auto ref = reference_logprobs(*model, chat_ids);
    auto top = top_ids(ref, 2);
    expect_piece(content[i]["token"], top[0]);
    EXPECT_NEAR(content[i]["logprob"].get<double>(), ref[top[0]], 2e-4);
    ASSERT_EQ(content[i]["top_logprobs"].size(), 2u);
    for (int k = 0; k < 2; ++k) {
      expect_piece(content[i]["top_logprobs"][k]["token"], top[k]);
      EXPECT_NEAR(content[i]["top_logprobs"][k]["logprob"].get<double>(), ref[top[k]], 2e-4);
      EXPECT_TRUE(content[i]["top_logprobs"][k]["bytes"].is_array());
    }
    std::string bytes;
    for (auto& b : content[i]["bytes"]) bytes.push_back(char(b.get<int>()));
    if (content[i]["token"].get<std::string>().find("\xEF\xBF\xBD") == std::string::npos)
      EXPECT_EQ(bytes, content[i]["token"].get<std::string>());
    chat_ids.push_back(top[0]);
  }
  body["stream"] = true;
  auto sr = call(port(), "POST", "/v1/chat/completions", body.dump());
  json streamed = json::array();
  for (auto& e : test::sse_events(sr.body)) {
    if (e == "[DONE]") continue;
    json j = json::parse(e);
    for (auto& ch2 : j["choices"])
      if (ch2["logprobs"].is_object())
        for (auto& x : ch2["logprobs"]["content"]) streamed.push_back(x);
  }
  EXPECT_EQ(streamed, content);
  // Legacy streaming: per-chunk arrays, offsets continue across chunks.
  auto cs = call(port(), "POST", "/v1/completions",
                 json({{"prompt", prompt}, {"max_tokens", 4}, {"temperature", 0}, {"logprobs", 3}, {"stream", true}})
                     .dump());
  json toks = json::array(), offs = json::array();
  for (auto& e : test::sse_events(cs.body)) {
    if (e == "[DONE]") continue;
    json j = json::parse(e);
    for (auto& ch2 : j["choices"])
      if (ch2["logprobs"].is_object())
        for (size_t k = 0; k < ch2["logprobs"]["tokens"].size(); ++k)
          toks.push_back(ch2["logprobs"]["tokens"][k]), offs.push_back(ch2["logprobs"]["text_offset"][k]);
  }
  EXPECT_EQ(toks, lp["tokens"]);
  EXPECT_EQ(offs, lp["text_offset"]);
  // Not asked: null.
  json plain = post_json("/v1/chat/completions", {{"messages", kMsgs}, {"max_tokens", 2}});
  EXPECT_TRUE(plain["choices"][0]["logprobs"].is_null());
}

TEST_F(ServerTest, LogitBiasSteersSamplingAndBadBiasesAre400) {
  const std::vector<int> prompt = {5, 17, 42, 99, 7};
  auto gen = [&](const json& extra) {
    json b = {{"prompt", prompt}, {"max_tokens", 3}, {"temperature", 0}, {"logprobs", 0}};
    for (auto& [k, v] : extra.items()) b[k] = v;
    return post_json("/v1/completions", b)["choices"][0];
  };
  const std::string seven = post_json("/detokenize", {{"tokens", {7, 7, 7}}})["content"];
  // +100 on token 7: greedy and sampled generation alike produce only 7s.
  EXPECT_EQ(gen({{"logit_bias", {{"7", 100}}}})["text"], seven);
  EXPECT_EQ(gen({{"logit_bias", {{"7", 100}}}, {"temperature", 1.0}, {"seed", 3}})["text"], seven);
  // -100 on the greedy token: the first token changes.
  json base = gen(json::object());
  std::string first = base["logprobs"]["tokens"][0];
  auto first_id = post_json("/tokenize", {{"content", first}})["tokens"];
  if (first_id.size() == 1) {
    json moved = gen({{"logit_bias", {{std::to_string(first_id[0].get<int>()), -100}}}});
    EXPECT_NE(moved["logprobs"]["tokens"][0], first);
  }
  // Chat accepts it too; llama-server's [[id, bias]] form on /completion.
  json chat = post_json("/v1/chat/completions",
                        {{"messages", kMsgs}, {"max_tokens", 3}, {"logit_bias", {{"7", 100}}}});
  EXPECT_EQ(chat["choices"][0]["message"]["content"], seven);
  json llama = post_json("/completion", {{"prompt", prompt}, {"n_predict", 3}, {"logit_bias", {{7, 100}}}});
  EXPECT_EQ(llama["content"], seven);
  // Bad input: an OpenAI error naming the field; the server keeps serving.
  auto bad = [&](const std::string& path, const json& extra, const char* param) {
    json b = path == "/v1/chat/completions" ? json{{"messages", kMsgs}, {"max_tokens", 2}}
                                            : json{{"prompt", "hi"}, {"max_tokens", 2}};
    for (auto& [k, v] : extra.items()) b[k] = v;
    auto r = call(port(), "POST", path, b.dump());
    expect_error(r, 400, "invalid_request_error");
    EXPECT_EQ(json::parse(r.body)["error"]["param"], param) << r.body;
  };
  bad("/v1/completions", {{"logit_bias", {{"abc", 1}}}}, "logit_bias");
  bad("/v1/completions", {{"logit_bias", {{"-3", 1}}}}, "logit_bias");
  bad("/v1/completions", {{"logit_bias", {{"5", 100.5}}}}, "logit_bias");
  bad("/v1/completions", {{"logit_bias", {{"5", "x"}}}}, "logit_bias");
  bad("/v1/completions", {{"logit_bias", {{"999999", 1}}}}, "logit_bias");
  bad("/v1/completions", {{"logit_bias", {1, 2}}}, "logit_bias");
  bad("/v1/completions", {{"logprobs", 21}}, "logprobs");
  bad("/v1/completions", {{"logprobs", -1}}, "logprobs");
  bad("/v1/completions", {{"logprobs", "3"}}, "logprobs");
  bad("/v1/chat/completions", {{"logprobs", 1}}, "logprobs");
  bad("/v1/chat/completions", {{"top_logprobs", 2}}, "top_logprobs");
  bad("/v1/chat/completions", {{"logprobs", true}, {"top_logprobs", -1}}, "top_logprobs");
  bad("/v1/chat/completions", {{"logit_bias", {{"1", -101}}}}, "logit_bias");
  EXPECT_EQ(post_json("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 2}})["object"], "text_completion");
}

// ---- /v1/responses ----------------------------------------------------------------------

TEST_F(ServerTest, ResponsesStoreGetDeleteAndPreviousResponseId) {
  json r1 = post_json("/v1/responses", {{"input", "hello"}, {"max_output_tokens", 4}});
  const std::string id = r1["id"];
  EXPECT_EQ(r1["store"], true);
  EXPECT_TRUE(r1["instructions"].is_null());
  json got = json::parse(call(port(), "GET", "/v1/responses/" + id).body);
  EXPECT_EQ(got["id"], id);
  EXPECT_EQ(got["output"], r1["output"]);
  // The next turn sees the first one: its prompt is longer than both inputs alone.
  json r2 = post_json("/v1/responses", {{"input", "hello"}, {"max_output_tokens", 2}, {"previous_response_id", id}});
  EXPECT_EQ(r2["previous_response_id"], id);
  EXPECT_GT(r2["usage"]["input_tokens"].get<int>(), r1["usage"]["input_tokens"].get<int>());
  // A chain of three.
  json r3 = post_json("/v1/responses",
                      {{"input", {{{"role", "user"}, {"content", "again"}}}}, {"max_output_tokens", 2},
                       {"previous_response_id", r2["id"]}});
  EXPECT_GT(r3["usage"]["input_tokens"].get<int>(), r2["usage"]["input_tokens"].get<int>());
  // store: false is not kept; unknown ids are errors.
  json r4 = post_json("/v1/responses",
                      {{"input", "hello"}, {"max_output_tokens", 2}, {"store", false}, {"instructions", "be brief"}});
  EXPECT_EQ(r4["store"], false);
  EXPECT_EQ(r4["instructions"], "be brief");
  expect_error(call(port(), "GET", "/v1/responses/" + r4["id"].get<std::string>()), 404, "invalid_request_error");
  auto missing = call(port(), "POST", "/v1/responses",
                      json({{"input", "x"}, {"previous_response_id", r4["id"]}}).dump());
  expect_error(missing, 400, "invalid_request_error");
  EXPECT_EQ(json::parse(missing.body)["error"]["param"], "previous_response_id");
  // DELETE, then it is gone.
  auto del = call(port(), "DELETE", "/v1/responses/" + id);
  EXPECT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(json::parse(del.body)["deleted"], true);
  expect_error(call(port(), "GET", "/v1/responses/" + id), 404, "invalid_request_error");
  expect_error(call(port(), "DELETE", "/v1/responses/" + id), 404, "invalid_request_error");
  // Input items: developer role, a function call and its output; bad items are 400s.
  json items = json::array({{{"role", "developer"}, {"content", "be brief"}},
                            {{"role", "user"}, {"content", "weather?"}},
                            {{"type", "function_call"}, {"call_id", "call_1"}, {"name", "get_weather"},
                             {"arguments", "{\"city\":\"Paris\"}"}},
                            {{"type", "function_call_output"}, {"call_id", "call_1"}, {"output", "sunny"}}});
  json tools = json::array({{{"type", "function"}, {"name", "get_weather"}, {"description", "weather"},
                             {"parameters", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}}}}});
  json r5 = post_json("/v1/responses", {{"input", items}, {"tools", tools}, {"max_output_tokens", 3}});
  EXPECT_EQ(r5["tools"], tools);
  expect_error(call(port(), "POST", "/v1/responses", json({{"input", {{{"type", "image"}}}}}).dump()), 400,
               "invalid_request_error");
  expect_error(call(port(), "POST", "/v1/responses",
                    json({{"input", "x"}, {"tools", {{{"type", "web_search"}}}}}).dump()),
               400, "invalid_request_error");
  expect_error(call(port(), "POST", "/v1/responses", json({{"input", 5}}).dump()), 400, "invalid_request_error");
}

TEST(ServerResponses, StoreIsABoundedLru) {
  std::string dir = make_model_dir();
  auto srv = start_server(dir, {"--responses-store", "2"});
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(json::parse(call(srv->port(), "POST", "/v1/responses",
                                   json({{"input", "hi"}, {"max_output_tokens", 1}}).dump())
                                  .body)["id"]);
  EXPECT_EQ(call(srv->port(), "GET", "/v1/responses/" + ids[0]).status, 404);
  EXPECT_EQ(call(srv->port(), "GET", "/v1/responses/" + ids[1]).status, 200);
  EXPECT_EQ(call(srv->port(), "GET", "/v1/responses/" + ids[2]).status, 200);
  srv.reset();
  auto none = start_server(dir, {"--responses-store", "0"});
  json r = json::parse(call(none->port(), "POST", "/v1/responses", json({{"input", "hi"}, {"max_output_tokens", 1}}).dump()).body);
  EXPECT_EQ(call(none->port(), "GET", "/v1/responses/" + r["id"].get<std::string>()).status, 404);
  none.reset();
  fs::remove_all(dir);
}

// The SSE event sequence of a streamed response, checked event by event.
void check_response_stream(const std::string& body, json& final_response) {
  std::vector<json> evs;
  size_t pos = 0;
  while ((pos = body.find("event: ", pos)) != std::string::npos) {
    size_t nl = body.find('\n', pos);
    std::string type = body.substr(pos + 7, nl - pos - 7);
    ASSERT_EQ(body.compare(nl + 1, 6, "data: "), 0);
    size_t end = body.find("\n\n", nl);
    json d = json::parse(body.substr(nl + 7, end - nl - 7));
    EXPECT_EQ(d["type"], type);
    evs.push_back(d);
    pos = end;
  }
  ASSERT_GE(evs.size(), 8u) << body;
  EXPECT_EQ(body.find("[DONE]"), std::string::npos);
  for (size_t i = 0; i < evs.size(); ++i) EXPECT_EQ(evs[i]["sequence_number"], int(i));
  EXPECT_EQ(evs[0]["type"], "response.created");
  EXPECT_EQ(evs[0]["response"]["status"], "in_progress");
  EXPECT_EQ(evs[1]["type"], "response.in_progress");
  const std::string last = evs.back()["type"];
  EXPECT_TRUE(last == "response.completed" || last == "response.incomplete") << last;
  // Items open and close in order; deltas add up to the done text.
  int open = -1;
  std::string item_id, text;
  for (size_t i = 2; i + 1 < evs.size(); ++i) {
    const json& e = evs[i];
    const std::string t = e["type"];
    if (t == "response.output_item.added") {
      EXPECT_EQ(open, -1);
      open = e["output_index"];
      item_id = e["item"]["id"];
      text.clear();
    } else if (t == "response.output_item.done") {
      EXPECT_EQ(e["output_index"], open);
      EXPECT_EQ(e["item"]["id"], item_id);
      open = -1;
    } else {
      EXPECT_EQ(e["output_index"], open) << t;
      EXPECT_EQ(e["item_id"], item_id) << t;
      if (t == "response.output_text.delta" || t == "response.reasoning_text.delta") text += e["delta"];
      if (t == "response.output_text.done") EXPECT_EQ(e["text"], text);
    }
  }
  EXPECT_EQ(open, -1);
  final_response = evs.back()["response"];
}

TEST_F(ServerTest, ResponsesStreamEventSequence) {
  auto r = call(port(), "POST", "/v1/responses", json({{"input", "hello"}, {"max_output_tokens", 6}, {"stream", true}}).dump());
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/event-stream");
  json fin;
  check_response_stream(r.body, fin);
  ASSERT_FALSE(fin["output"].empty());
  EXPECT_EQ(fin["output"].back()["type"], "message");
  EXPECT_LE(fin["usage"]["output_tokens"].get<int>(), 6);
  // The streamed response is stored like any other.
  json got = json::parse(call(port(), "GET", "/v1/responses/" + fin["id"].get<std::string>()).body);
  EXPECT_EQ(got["output"], fin["output"]);
  // With reasoning (the prompt opens <think>): a reasoning item first.
  auto rr = call(port(), "POST", "/v1/responses",
                 json({{"input", "hello"}, {"max_output_tokens", 8}, {"stream", true}, {"temperature", 0},
                       {"chat_template_kwargs", {{"enable_thinking", true}}}})
                     .dump());
  json fin2;
  check_response_stream(rr.body, fin2);
  ASSERT_FALSE(fin2["output"].empty());
  EXPECT_EQ(fin2["output"][0]["type"], "reasoning");
  EXPECT_NE(rr.body.find("response.reasoning_text.delta"), std::string::npos);
}

TEST(ServerTimeout, RequestTimeoutEndsSlowGenerations) {
  // 40 ms per forward: 100 tokens take 4 s, well past --timeout 1.
  std::string dir = make_model_dir();
  auto srv = start_server(dir, {"--timeout", "1", "-np", "2", "--metrics"}, /*slow_ms=*/40);
  const int p = srv->port();
  // EOS is banned so that nothing ends early.
  const int eos = json::parse(call(p, "POST", "/tokenize", R"({"content": "<|im_end|>"})").body)["tokens"][0];
  const json no_eos = {{std::to_string(eos), -100}};
  auto t0 = std::chrono::steady_clock::now();
  auto r = call(p, "POST", "/v1/chat/completions",
                json({{"messages", kMsgs}, {"max_tokens", 100}, {"logit_bias", no_eos}}).dump());
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["type"], "timeout_error");
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "timeout");
  EXPECT_LT(s, 3.0);
  // Streaming: tokens, then an error event and [DONE].
  auto st = call(p, "POST", "/v1/chat/completions",
                 json({{"messages", kMsgs}, {"max_tokens", 100}, {"stream", true}, {"logit_bias", no_eos}}).dump());
  auto evs = test::sse_events(st.body);
  ASSERT_GE(evs.size(), 2u) << st.body;
  EXPECT_EQ(evs.back(), "[DONE]");
  EXPECT_EQ(json::parse(evs[evs.size() - 2])["error"]["code"], "timeout");
  // Nothing left running; a short request still succeeds.
  std::string slots;
  for (int i = 0; i < 100; ++i) {
    slots = call(p, "GET", "/slots").body;
    if (slots.find("true") == std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(slots.find("\"is_processing\":true"), std::string::npos) << slots;
  auto ok = call(p, "POST", "/v1/completions", json({{"prompt", "hi"}, {"max_tokens", 2}}).dump());
  EXPECT_EQ(ok.status, 200) << ok.body;
  srv.reset();
  fs::remove_all(dir);
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
  expect_error(chat(json({{"messages", kMsgs}, {"logprobs", true}, {"top_logprobs", 21}}).dump()), 400,
               "invalid_request_error");
  expect_error(chat(json({{"messages", kMsgs}, {"logit_bias", {{"5", 101}}}}).dump()), 400, "invalid_request_error");
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
  // ignore_eos (llama-server): the end token does not stop it; max_tokens does.
  json more = post({{"messages", {{{"role", "user"}, {"content", "What is 667 + 911?"}}}},
                    {"chat_template_kwargs", {{"enable_thinking", false}}}, {"ignore_eos", true}, {"max_tokens", 12}});
  EXPECT_EQ(more["choices"][0]["finish_reason"], "length") << more.dump();
  EXPECT_EQ(more["usage"]["completion_tokens"], 12) << more.dump();
  EXPECT_EQ(more["choices"][0]["message"]["content"].get<std::string>().rfind("1578", 0), 0u) << more.dump();
  {  // A KV pool of 64 tokens (--kv-tokens) for 2 slots still serves requests that fit it.
    auto small = start_server(dir, {"-np", "2", "--kv-tokens", "64"});
    json r = json::parse(call(small->port(), "POST", "/v1/completions",
                              json({{"prompt", "hello"}, {"max_tokens", 4}, {"temperature", 0}}).dump())
                             .body);
    EXPECT_EQ(r["usage"]["completion_tokens"], 4) << r.dump();
  }
  EXPECT_EQ(call(p, "POST", "/v1/chat/completions",
                 json({{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"ignore_eos", "yes"}}).dump())
                .status,
            400);
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
  // The same tool through /v1/responses: a function_call item, then the tool's output
  // sent back with previous_response_id gets a message.
  json rtools = json::array({{{"type", "function"},
                              {"name", "get_stock_price"},
                              {"description", "Get the latest stock price for a ticker symbol."},
                              {"parameters", tools[0]["function"]["parameters"]}}});
  auto responses = [&](const json& body) { return call(p, "POST", "/v1/responses", body.dump()); };
  json r1 = json::parse(responses({{"input", "What is the stock price of AMZN?"},
                                   {"tools", rtools},
                                   {"max_output_tokens", 60},
                                   {"chat_template_kwargs", {{"enable_thinking", false}}}})
                            .body);
  ASSERT_EQ(r1["status"], "completed") << r1.dump();
  json fc;
  for (auto& item : r1["output"])
    if (item["type"] == "function_call") fc = item;
  ASSERT_TRUE(fc.is_object()) << r1.dump();
  EXPECT_EQ(fc["name"], "get_stock_price");
  EXPECT_EQ(json::parse(fc["arguments"].get<std::string>())["symbol"], "AMZN");
  EXPECT_EQ(fc["call_id"].get<std::string>().rfind("call_", 0), 0u);
  json r2 = json::parse(responses({{"input", {{{"type", "function_call_output"}, {"call_id", fc["call_id"]},
                                               {"output", "{\"price\": 181.5}"}}}},
                                   {"previous_response_id", r1["id"]},
                                   {"tools", rtools},
                                   {"max_output_tokens", 80},
                                   {"chat_template_kwargs", {{"enable_thinking", false}}}})
                            .body);
  EXPECT_EQ(r2["output"].back()["type"], "message") << r2.dump();
  EXPECT_GT(r2["usage"]["input_tokens"].get<int>(), r1["usage"]["input_tokens"].get<int>());
  // Streaming: the call comes as a function_call item with its arguments events.
  auto rs = responses({{"input", "What is the stock price of AMZN?"},
                       {"tools", rtools},
                       {"stream", true},
                       {"max_output_tokens", 60},
                       {"chat_template_kwargs", {{"enable_thinking", false}}}});
  EXPECT_NE(rs.body.find("response.function_call_arguments.done"), std::string::npos) << rs.body;
  EXPECT_NE(rs.body.find("event: response.completed"), std::string::npos) << rs.body;
  // Reasoning streamed as a reasoning item before the message.
  auto rr = responses({{"input", "What is the capital of France?"}, {"stream", true}, {"max_output_tokens", 60}});
  size_t reasoning = rr.body.find("response.reasoning_text.delta"), text = rr.body.find("response.output_text.delta");
  EXPECT_NE(reasoning, std::string::npos) << rr.body;
  EXPECT_NE(text, std::string::npos) << rr.body;
  EXPECT_LT(reasoning, text);
  EXPECT_NE(rr.body.find("\"text\":\"Paris\""), std::string::npos) << rr.body;
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
