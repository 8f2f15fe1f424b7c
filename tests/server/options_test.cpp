#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "base/error.h"
#include "server/options.h"
#include "server/tool_calls.h"

namespace mlxcel::server {
namespace {

ServerOptions parse(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
  return parse_server_args(args, [env](const char* k) -> const char* {
    auto it = env.find(k);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(ServerOptions, LlamaServerFlags) {
  auto o = parse({"-m", "x/y", "--host", "0.0.0.0", "--port", "9000", "-c", "2048", "-np", "2", "-n", "64", "-t", "3",
                  "--alias", "mymodel", "--api-key", "a,b", "--timeout", "30", "--threads-http", "3", "--metrics",
                  "--no-slots", "--temp", "0.7", "--top-k", "40", "-s", "7"});
  EXPECT_EQ(o.model, "x/y");
  EXPECT_EQ(o.host, "0.0.0.0");
  EXPECT_EQ(o.port, 9000);
  EXPECT_EQ(o.ctx_size, 2048);
  EXPECT_EQ(o.n_parallel, 2);
  EXPECT_EQ(o.n_predict, 64);
  EXPECT_EQ(o.threads, 3);
  EXPECT_EQ(o.alias, "mymodel");
  EXPECT_EQ(o.api_keys, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(o.timeout_s, 30);
  EXPECT_EQ(o.threads_http, 3);
  EXPECT_TRUE(o.endpoint_metrics);
  EXPECT_FALSE(o.endpoint_slots);
  EXPECT_FLOAT_EQ(o.sampling.temperature, 0.7f);
  EXPECT_EQ(o.sampling.top_k, 40);
  EXPECT_EQ(o.sampling.seed, 7u);
  EXPECT_TRUE(o.seed_set);
}

TEST(ServerOptions, InertFlagsAreAccepted) {
  auto o = parse({"-ngl", "99", "-fa", "--jinja", "-fa", "on", "--port=8081"});
  EXPECT_EQ(o.port, 8081);
  EXPECT_EQ(o.inert.size(), 4u);
}

TEST(ServerOptions, EnvironmentAndCommandLineWins) {
  auto o = parse({"--port", "1234"}, {{"LLAMA_ARG_PORT", "5555"}, {"LLAMA_ARG_CTX_SIZE", "512"},
                                      {"LLAMA_API_KEY", "secret"}, {"LLAMA_ARG_ENDPOINT_METRICS", "1"},
                                      {"MLXCEL_ALLOWED_ORIGINS", "http://a.test, http://b.test"}});
  EXPECT_EQ(o.port, 1234);
  EXPECT_EQ(o.ctx_size, 512);
  EXPECT_EQ(o.api_keys, std::vector<std::string>{"secret"});
  EXPECT_TRUE(o.endpoint_metrics);
  EXPECT_EQ(o.allowed_origins, (std::vector<std::string>{"http://a.test", "http://b.test"}));
}

TEST(ServerOptions, BadInputIsAnError) {
  EXPECT_THROW(parse({"--port", "abc"}), Error);
  EXPECT_THROW(parse({"--port", "70000"}), Error);
  EXPECT_THROW(parse({"--bogus"}), Error);
  EXPECT_THROW(parse({"--kv-tokens", "-1"}), Error);
  EXPECT_EQ(parse({"--kv-tokens", "4096"}).kv_tokens, 4096);
  EXPECT_THROW(parse({"-m"}), Error);
  EXPECT_THROW(parse({"-np", "0"}), Error);
  EXPECT_THROW(parse({"--ssl-key-file", "k.pem"}), Error);
  EXPECT_THROW(parse({"--temp", "-1"}), Error);
  EXPECT_THROW(parse({"--api-key-file", "/nonexistent/keys"}), Error);
}

TEST(ServerOptions, UsageListsFlags) {
  std::string u = server_usage();
  EXPECT_NE(u.find("--threads-http"), std::string::npos);
  EXPECT_NE(u.find("LLAMA_ARG_PORT"), std::string::npos);
}

TEST(ToolCalls, HermesBlocks) {
  auto r = parse_tool_calls(
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
      "<tool_call>{\"name\": \"t2\", \"arguments\": \"{}\"}</tool_call>");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "get_weather");
  EXPECT_EQ(r.calls[0].arguments, "{\"city\":\"Paris\"}");
  EXPECT_EQ(r.calls[1].arguments, "{}");
  EXPECT_EQ(r.content, "Let me check.");
  EXPECT_EQ(r.calls[0].id.rfind("call_", 0), 0u);
}

TEST(ToolCalls, BadJsonStaysContent) {
  auto r = parse_tool_calls("x <tool_call>{not json}</tool_call> y");
  EXPECT_TRUE(r.calls.empty());
  EXPECT_EQ(r.content, "x <tool_call>{not json}</tool_call> y");
  auto u = parse_tool_calls("<tool_call>{\"name\": \"f\", \"arguments\": {}}");  // unterminated at the end
  ASSERT_EQ(u.calls.size(), 1u);
  EXPECT_EQ(parse_tool_calls("plain").content, "plain");
}

TEST(ToolCalls, StreamingFilterHoldsPossibleCalls) {
  ToolCallFilter f;
  std::string shown;
  for (std::string piece : {"Sure. <to", "ol_ca", "ll>{\"name\": \"f\", ", "\"arguments\": {\"a\": 1}}</tool_call>"})
    shown += f.push(piece);
  EXPECT_EQ(shown, "Sure. ");
  auto r = f.finish();
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].name, "f");
  ToolCallFilter g;
  EXPECT_EQ(g.push("a <b"), "a <b");
  EXPECT_EQ(g.push(" <tool"), " ");
  EXPECT_EQ(g.finish().content, "<tool");  // not a call after all: shown at the end
}

}  // namespace
}  // namespace mlxcel::server
