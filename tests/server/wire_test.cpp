#include <gtest/gtest.h>

#include "server/wire.h"

namespace mlxcel::server {
namespace {

int status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ApiError& e) {
    return e.status;
  }
  return 200;
}

TEST(Wire, ParseBody) {
  EXPECT_EQ(parse_body(R"({"a": [1, {"b": 2}]})", 8)["a"][1]["b"], 2);
  EXPECT_EQ(status_of([] { parse_body("{", 8); }), 400);
  EXPECT_EQ(status_of([] { parse_body("[1]", 8); }), 400);
  EXPECT_EQ(status_of([] { parse_body("", 8); }), 400);
  EXPECT_EQ(status_of([] { parse_body("{\"a\": \"\xff\xfe\"}", 8); }), 400);  // invalid UTF-8
  std::string deep = std::string(100, '[') + std::string(100, ']');
  EXPECT_EQ(status_of([&] { parse_body("{\"a\":" + deep + "}", 64); }), 400);
  EXPECT_EQ(parse_body(R"({"s": "[[[[[[[[[["})", 3)["s"], "[[[[[[[[[[");  // brackets in strings don't count
}

TEST(Wire, GenParams) {
  RequestDefaults d;
  d.seed_set = true;
  auto p = parse_gen_params(json::parse(R"({"max_tokens": 5, "temperature": 0.5, "stop": "x", "n": 2,
      "stream": true, "stream_options": {"include_usage": true}, "unknown_field": {"deep": 1}, "seed": 3})"),
                            d, Flavor::openai_chat);
  EXPECT_EQ(p.max_tokens, 5);
  EXPECT_FLOAT_EQ(p.sampling.temperature, 0.5f);
  EXPECT_EQ(p.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(p.n, 2);
  EXPECT_TRUE(p.stream && p.include_usage);
  EXPECT_EQ(p.sampling.seed, 3u);
  EXPECT_EQ(parse_gen_params(json::parse(R"({"max_tokens": 5, "max_completion_tokens": 9})"), d, Flavor::openai_chat)
                .max_tokens,
            9);
  auto bad = [&](const char* body) {
    try {
      parse_gen_params(json::parse(body), d, Flavor::openai_chat);
    } catch (const ApiError& e) {
      return std::string(e.param) + "|" + e.code;
    }
    return std::string("ok");
  };
  EXPECT_EQ(bad(R"({"temperature": "hot"})"), "temperature|");
  EXPECT_EQ(bad(R"({"max_tokens": -1})"), "max_tokens|");
  EXPECT_EQ(bad(R"({"max_tokens": 1.5})"), "max_tokens|");
  EXPECT_EQ(bad(R"({"n": 0})"), "n|");
  EXPECT_EQ(bad(R"({"stop": [1]})"), "stop|");
  EXPECT_EQ(bad(R"({"logprobs": 1})"), "logprobs|");
  EXPECT_EQ(bad(R"({"top_logprobs": 2})"), "top_logprobs|");
  EXPECT_EQ(bad(R"({"logprobs": true, "top_logprobs": 21})"), "top_logprobs|");
  EXPECT_EQ(bad(R"({"logit_bias": {"x1": 5}})"), "logit_bias|");
  EXPECT_EQ(bad(R"({"logit_bias": {"1": -100.01}})"), "logit_bias|");
  EXPECT_EQ(bad(R"({"logit_bias": [[1, 5]]})"), "logit_bias|");
  EXPECT_EQ(bad(R"({"logit_bias": {"1": 5}, "logprobs": true, "top_logprobs": 20})"), "ok");
  EXPECT_EQ(bad(R"({"response_format": {"type": "json_object"}})"), "response_format|not_supported");
  EXPECT_EQ(bad(R"({"logit_bias": {}, "logprobs": false, "response_format": {"type": "text"}})"), "ok");
  EXPECT_EQ(parse_gen_params(json::parse(R"({"max_tokens": 99999999999})"), d, Flavor::openai_chat).max_tokens,
            2147483647);
  // logit_bias / logprobs land in the sampling parameters.
  GenParams lp = parse_gen_params(json::parse(R"({"logit_bias": {"3": 2.5, "10": -100}, "logprobs": true,
                                                  "top_logprobs": 4})"),
                                  d, Flavor::openai_chat);
  EXPECT_EQ(lp.sampling.logprobs, 4);
  ASSERT_EQ(lp.sampling.logit_bias.size(), 2u);
  GenParams off = parse_gen_params(json::parse(R"({"logprobs": false})"), d, Flavor::openai_chat);
  EXPECT_EQ(off.sampling.logprobs, -1);
  EXPECT_EQ(parse_gen_params(json::parse(R"({"logprobs": 0})"), d, Flavor::openai_completion).sampling.logprobs, 0);
  GenParams ll = parse_gen_params(json::parse(R"({"logit_bias": [[5, false], [6, 1.5]]})"), d, Flavor::llama_completion);
  ASSERT_EQ(ll.sampling.logit_bias.size(), 2u);
  EXPECT_FLOAT_EQ(ll.sampling.logit_bias[0].second, -100.0f);
}

TEST(Wire, ChatParams) {
  auto c = parse_chat_params(json::parse(
      R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
          "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto"})"));
  EXPECT_EQ(c.messages[0]["content"], "ab");
  EXPECT_TRUE(c.tools.is_array());
  EXPECT_EQ(status_of([] { parse_chat_params(json::parse(R"({"messages": []})")); }), 400);
  EXPECT_EQ(status_of([] { parse_chat_params(json::parse(R"({"messages": [{"content": "x"}]})")); }), 400);
  EXPECT_EQ(status_of([] { parse_chat_params(json::parse(R"({"messages": "hi"})")); }), 400);
  EXPECT_EQ(status_of([] {
              parse_chat_params(json::parse(R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})"));
            }),
            400);
}

TEST(Wire, ErrorBodies) {
  HttpResponse r = error_response(Error(ErrorKind::resource_exhausted, "full"));
  EXPECT_EQ(r.status, 503);
  ASSERT_FALSE(r.headers.empty());
  EXPECT_EQ(r.headers[0].first, "Retry-After");
  auto j = json::parse(r.body);
  EXPECT_EQ(j["error"]["message"], "full");
  EXPECT_TRUE(j["error"].contains("param") && j["error"].contains("code") && j["error"].contains("type"));
  EXPECT_EQ(error_response(Error(ErrorKind::invalid_request, "x")).status, 400);
  EXPECT_EQ(error_response(Error(ErrorKind::internal, "x")).status, 500);
}

}  // namespace
}  // namespace mlxcel::server
