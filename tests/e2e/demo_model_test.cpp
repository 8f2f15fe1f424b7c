// The bundled demo model (models/mlxcel-demo, trained by tools/demo_model/) answers its
// held-out questions through the CLI exactly as transformers did (eval.jsonl's
// hf_output), and its MLX 4-bit copy keeps at least 90% of the right answers.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace {

namespace fs = std::filesystem;
const fs::path kModels = fs::path(MLXCEL_SOURCE_DIR) / "models";

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string run(const std::string& args, int* code = nullptr) {
  std::string cmd = std::string(MLXCEL_BIN) + " " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while (p && (n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int st = p ? pclose(p) : -1;
  if (code) *code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

std::vector<nlohmann::json> eval_rows() {
  static const std::set<std::string> tasks = {"add", "sub", "capital", "reverse", "count", "repeat", "json"};
  std::vector<nlohmann::json> rows;
  std::ifstream in(kModels / "mlxcel-demo" / "eval.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (tasks.count(j["task"].get<std::string>()) && !j["raw"].get<bool>() && j["tools"].is_null()) rows.push_back(j);
  }
  return rows;
}

TEST(DemoModel, GenerateMatchesTransformersOnHeldOutQuestions) {
  auto rows = eval_rows();
  ASSERT_GE(rows.size(), 200u);
  int same = 0, correct = 0, hf_correct = 0;
  for (const auto& r : rows) {
    int code = 0;
    std::string out = run("generate -m " + (kModels / "mlxcel-demo").string() + " -n 48 -p " +
                              quote(r["prompt"].get<std::string>()), &code);
    ASSERT_EQ(code, 0) << out;
    same += out == r["hf_output"].get<std::string>();
    correct += out == r["expected"].get<std::string>();
    hf_correct += r["hf_correct"].get<bool>();
    // NOTE: transformers ran the bf16 model in bf16 on the GPU; mlxcel computes in f32
    // from the bf16 weights. A close call may flip, and only towards the right answer.
    if (out != r["hf_output"].get<std::string>())
      EXPECT_EQ(out, r["expected"].get<std::string>()) << "differs from transformers and is wrong: " << r["prompt"];
  }
  EXPECT_GE(same * 100, int(rows.size()) * 98) << "more than 2% differ from transformers";
  std::printf("demo bf16 through mlxcel generate: %d/%zu identical to transformers, %d correct (transformers: %d)\n",
              same, rows.size(), correct, hf_correct);
}

TEST(DemoModel, RunAnswersThroughTheChatTemplate) {
  int n = 0;
  for (const auto& r : eval_rows()) {
    const auto& msgs = r["messages"];
    if (msgs.size() != 1 || n >= 70) continue;  // run -p takes one user message
    ++n;
    int code = 0;
    std::string out = run("run " + (kModels / "mlxcel-demo").string() + " --no-thinking -p " +
                              quote(msgs[0]["content"].get<std::string>()), &code);
    ASSERT_EQ(code, 0) << out;
    EXPECT_EQ(out, r["hf_output"].get<std::string>()) << msgs[0]["content"];
  }
  EXPECT_GE(n, 50);
}

TEST(DemoModel, FourBitCopyKeepsNinetyPercent) {
  int total = 0, kept = 0;
  for (const auto& r : eval_rows()) {
    if (!r["hf_correct"].get<bool>()) continue;
    ++total;
    std::string out = run("generate -m " + (kModels / "mlxcel-demo-4bit").string() + " -n 48 -p " +
                          quote(r["prompt"].get<std::string>()));
    kept += out == r["expected"].get<std::string>();
  }
  std::printf("demo q4 g64: %d/%d of the questions bf16 answers right\n", kept, total);
  ASSERT_GT(total, 150);
  EXPECT_GE(kept, total * 9 / 10);
}

// `mlxcel run -p` (mlxcel's own chat template) on the 4-bit copy: the single-message
// questions the bf16 model answers right, at least 90% right.
TEST(DemoModel, FourBitCopyThroughRun) {
  int total = 0, kept = 0;
  for (const auto& r : eval_rows()) {
    const auto& msgs = r["messages"];
    if (msgs.size() != 1 || !r["hf_correct"].get<bool>() || total >= 60) continue;
    ++total;
    int code = 0;
    std::string out = run("run " + (kModels / "mlxcel-demo-4bit").string() + " --no-thinking -p " +
                              quote(msgs[0]["content"].get<std::string>()), &code);
    ASSERT_EQ(code, 0) << out;
    kept += out == r["expected"].get<std::string>();
  }
  std::printf("demo q4 g64 through mlxcel run: %d/%d right\n", kept, total);
  ASSERT_GE(total, 50);
  EXPECT_GE(kept, total * 9 / 10);
}

}  // namespace
