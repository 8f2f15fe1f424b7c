// Renders every real chat template in .testdata over tests/chat/conversations.json and
// compares byte-for-byte with Python Jinja2 set up like transformers
// (tools/chat_goldens/render.py, run at test time).
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "chat/chat_template.h"

namespace {

using nlohmann::ordered_json;

std::string source_dir() {
  const char* env = std::getenv("MLXCEL_SOURCE_DIR");
  return env ? env : MLXCEL_SOURCE_DIR;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\n') o += "\\n";
    else if (c == '\t') o += "\\t";
    else o += c;
  }
  return o;
}

std::string diff_excerpt(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  size_t from = i > 60 ? i - 60 : 0;
  return "first difference at byte " + std::to_string(i) + "\n      want: ..." +
         escape(want.substr(from, 140)) + "\n      got:  ..." + escape(got.substr(from, 140));
}

std::time_t fixed_now(const std::string& stamp) {
  std::tm tm{};
  std::sscanf(stamp.c_str(), "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
              &tm.tm_sec);
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  tm.tm_isdst = -1;
  return std::mktime(&tm);
}

TEST(ChatTemplateGolden, AllTemplatesMatchTransformers) {
  const std::string root = source_dir();
  if (!std::ifstream(root + "/.testdata/llama.cpp/models/templates/ChatML.jinja").good() &&
      !std::ifstream(root + "/.testdata/llama.cpp/models/templates/Qwen-Qwen3-0.6B.jinja").good()) {
    FAIL() << "test data missing: run scripts/fetch_testdata.sh";
  }
  const std::string out = ::testing::TempDir() + "/mlxcel_chat_goldens.json";
  const std::string cmd = "python3 '" + root + "/tools/chat_goldens/render.py' --root '" + root + "' --out '" + out + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "reference renderer failed (needs python3-jinja2): " << cmd;
  ordered_json data = ordered_json::parse(read_file(out));
  ordered_json convs = ordered_json::parse(read_file(root + "/tests/chat/conversations.json"));
  const std::time_t now = fixed_now(data["fixed_now"].get<std::string>());

  size_t compared = 0, identical = 0, n_templates = 0;
  std::vector<std::string> failures;
  for (const auto& t : data["templates"]) {
    const std::string id = t["id"].get<std::string>();
    ++n_templates;
    std::unique_ptr<mlxcel::chat::ChatTemplate> tpl;
    std::string parse_error;
    try {
      tpl = std::make_unique<mlxcel::chat::ChatTemplate>(t["source"].get<std::string>());
    } catch (const std::exception& e) {
      parse_error = e.what();
    }
    for (const auto& c : convs) {
      const std::string name = c["name"].get<std::string>();
      ++compared;
      const std::string where = id + " x " + name;
      if (t.contains("compile_error")) {
        bool failed = !tpl;
        if (tpl) {
          try {
            mlxcel::chat::ChatTemplateOptions o;
            tpl->apply(c["messages"], o);
          } catch (const std::exception&) {
            failed = true;
          }
        }
        if (failed) ++identical;
        else failures.push_back(where + ": Python failed to compile, ours rendered");
        continue;
      }
      if (!tpl) {
        failures.push_back(where + ": parse error: " + parse_error);
        continue;
      }
      mlxcel::chat::ChatTemplateOptions o;
      o.add_generation_prompt = c.value("add_generation_prompt", false);
      if (c.contains("tools")) o.tools = c["tools"];
      o.extra = t["special_tokens"];
      if (c.contains("kwargs"))
        for (auto it = c["kwargs"].begin(); it != c["kwargs"].end(); ++it) o.extra[it.key()] = it.value();
      o.now = now;
      const auto& want = t["results"][name];
      std::string got;
      std::string err;
      bool raised = false;
      try {
        got = tpl->apply(c["messages"], o);
      } catch (const mlxcel::jinja::TemplateRaisedError& e) {
        err = e.what();
        raised = true;
      } catch (const std::exception& e) {
        err = e.what();
        if (err.empty()) err = "(empty error)";
      }
      if (want.contains("ok")) {
        const std::string w = want["ok"].get<std::string>();
        if (!err.empty()) failures.push_back(where + ": Python rendered, ours failed: " + err);
        else if (w != got) failures.push_back(where + ": output differs: " + diff_excerpt(w, got));
        else ++identical;
      } else if (want["raised"].get<bool>()) {
        const std::string w = want["error"].get<std::string>();
        if (!raised) failures.push_back(where + ": Python raised '" + w + "', ours " + (err.empty() ? "rendered" : "failed: " + err));
        else if (w != err) failures.push_back(where + ": raise message differs: want '" + w + "' got '" + err + "'");
        else ++identical;
      } else {
        if (err.empty()) failures.push_back(where + ": Python failed (" + want["error"].get<std::string>() + "), ours rendered");
        else ++identical;
      }
    }
  }
  std::string report;
  for (const auto& f : failures) report += "  " + f + "\n";
  std::printf("[chat goldens] %zu templates x %zu conversations = %zu renders, %zu identical, %zu mismatches\n",
              n_templates, convs.size(), compared, identical, failures.size());
  EXPECT_TRUE(failures.empty()) << failures.size() << " mismatches:\n" << report;
  EXPECT_GE(n_templates, 70u);
}

}  // namespace
