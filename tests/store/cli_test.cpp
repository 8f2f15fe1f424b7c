// End-to-end: the built `mlxcel` binary's list, rm and download commands.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "test_util.h"

#ifndef MLXCEL_BIN
#error "MLXCEL_BIN (path of the mlxcel binary) must be defined"
#endif

namespace mlxcel::store {
namespace {

namespace fs = std::filesystem;

using testing::isolate_env;
using testing::make_hf_model;
using testing::make_model;
using testing::MockHub;
using testing::ScopedEnv;
using testing::TempDir;

struct CliRun {
  int rc = -1;
  std::string out;
  std::string err;
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override { isolate_env(env_, dir_); }

  // Runs `mlxcel <args>` with stdin from /dev/null (or `input` piped in).
  CliRun mlxcel(const std::string& args, const std::string& stdin_text = "") {
    fs::path out = dir_ / "stdout.txt", err = dir_ / "stderr.txt", in = dir_ / "stdin.txt";
    testing::write_file(in, stdin_text);
    std::string cmd = quote(MLXCEL_BIN) + " " + args + " <" + quote(in.string()) + " >" +
                      quote(out.string()) + " 2>" + quote(err.string());
    int status = std::system(cmd.c_str());
    CliRun r;
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = testing::read_file(out);
    r.err = testing::read_file(err);
    return r;
  }
  // Runs `mlxcel <args>` on a pseudo-terminal (util-linux `script`), typing `typed`.
  CliRun mlxcel_on_tty(const std::string& args, const std::string& typed) {
    std::string inner = quote(MLXCEL_BIN) + " " + args;
    std::string cmd = "printf " + quote(typed) + " | script -qec " + quote(inner) +
                      " /dev/null >" + quote((dir_ / "tty.txt").string()) + " 2>&1";
    int status = std::system(cmd.c_str());
    CliRun r;
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = testing::read_file(dir_ / "tty.txt");
    return r;
  }
  fs::path models() const { return dir_ / "models"; }
  fs::path hub() const { return dir_ / "hf" / "hub"; }

  TempDir dir_;
  ScopedEnv env_;
};

TEST_F(CliTest, ListEmpty) {
  CliRun r = mlxcel("list --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json::array());
  r = mlxcel("list");
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("No models"), std::string::npos) << r.out;
}

TEST_F(CliTest, ListJsonSchema) {
  make_model(models() / "acme" / "A", 1000);
  make_model(models() / "mlx-community" / "B", 10);
  make_hf_model(hub(), "hf", "Cached");
  CliRun r = mlxcel("list --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 3u);
  std::regex iso(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)");
  for (const auto& m : j) {
    ASSERT_TRUE(m.is_object());
    std::set<std::string> keys;
    for (auto it = m.begin(); it != m.end(); ++it) keys.insert(it.key());
    EXPECT_EQ(keys, (std::set<std::string>{"repo_id", "size_bytes", "path", "modified", "source"}));
    EXPECT_TRUE(m["repo_id"].is_string());
    EXPECT_TRUE(m["size_bytes"].is_number_unsigned());
    EXPECT_TRUE(m["path"].is_string());
    EXPECT_TRUE(std::regex_match(m["modified"].get<std::string>(), iso)) << m["modified"];
    EXPECT_TRUE(m["source"] == "store" || m["source"] == "hf_cache");
  }
  EXPECT_EQ(j[0]["repo_id"], "acme/A");
  EXPECT_EQ(j[0]["path"], (models() / "acme" / "A").string());
  EXPECT_EQ(j[0]["size_bytes"], 1000u + std::string(R"({"model_type": "tiny"})").size());
  EXPECT_EQ(j[1]["repo_id"], "hf/Cached");
  EXPECT_EQ(j[1]["source"], "hf_cache");
}

TEST_F(CliTest, ListTableQuietVerbose) {
  make_model(models() / "acme" / "A", 1500000);
  make_hf_model(hub(), "acme", "A");
  CliRun r = mlxcel("list");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("NAME"), std::string::npos);
  EXPECT_NE(r.out.find("SIZE"), std::string::npos);
  EXPECT_NE(r.out.find("MODIFIED"), std::string::npos);
  EXPECT_NE(r.out.find("1.5 MB"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(models().string()), std::string::npos);
  r = mlxcel("list -v");
  EXPECT_NE(r.out.find((models() / "acme" / "A").string()), std::string::npos) << r.out;
  r = mlxcel("list -q");
  EXPECT_EQ(r.out, "acme/A\n");
  // --models-dir
  make_model(dir_ / "other" / "o" / "M");
  r = mlxcel("list -q --models-dir " + quote((dir_ / "other").string()));
  EXPECT_EQ(r.out, "acme/A\no/M\n");  // acme/A from the HF cache
}

TEST_F(CliTest, RmNeedsYesWithoutTty) {
  make_model(models() / "acme" / "A");
  CliRun r = mlxcel("rm acme/A");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("--yes"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(models() / "acme" / "A" / "config.json"));
  r = mlxcel("rm acme/A --yes");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("Deleted acme/A"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(models() / "acme" / "A"));
}

TEST_F(CliTest, RmAsksOnTty) {
  if (std::system("script -qec true /dev/null >/dev/null 2>&1") != 0) GTEST_SKIP() << "no script";
  make_model(models() / "acme" / "A");
  CliRun r = mlxcel_on_tty("rm acme/A", "n\n");
  EXPECT_NE(r.out.find("[y/N]"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(models() / "acme" / "A" / "config.json"));
  r = mlxcel_on_tty("rm acme/A", "y\n");
  EXPECT_NE(r.out.find("Deleted acme/A"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(models() / "acme" / "A"));
}

TEST_F(CliTest, RmRefusals) {
  fs::path snap = make_hf_model(hub(), "hf", "Cached");
  CliRun r = mlxcel("rm hf/Cached --yes");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("only in the Hugging Face cache"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(snap / "config.json"));
  make_model(dir_ / "outside" / "m");
  r = mlxcel("rm --yes " + quote((dir_ / "outside" / "m").string()));
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(fs::exists(dir_ / "outside" / "m" / "config.json"));
  r = mlxcel("rm --yes acme/missing");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("not in the store"), std::string::npos) << r.err;
  // One refusal means nothing is deleted.
  make_model(models() / "acme" / "A");
  r = mlxcel("rm --yes acme/A hf/Cached");
  EXPECT_EQ(r.rc, 1);
  EXPECT_TRUE(fs::exists(models() / "acme" / "A" / "config.json"));
}

TEST_F(CliTest, Download) {
  MockHub hub;
  env_.set("HF_ENDPOINT", hub.url());
  CliRun r = mlxcel("download test-org/tiny");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("Downloaded test-org/tiny"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(models() / "test-org" / "tiny" / "model.safetensors"));
  r = mlxcel("list -q");
  EXPECT_EQ(r.out, "test-org/tiny\n");
  r = mlxcel("download test-org/tiny");
  EXPECT_NE(r.out.find("already complete"), std::string::npos) << r.out;

  // --local-dir and --models-dir
  r = mlxcel("download test-org/tiny --local-dir " + quote((dir_ / "here").string()));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "here" / "config.json"));
  r = mlxcel("download tiny-bare --models-dir " + quote((dir_ / "m2").string()));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "m2" / "mlx-community" / "tiny-bare" / "config.json"));

  // GGUF repos: pick a quantization with --include.
  r = mlxcel("download test-org/multi-gguf");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--include"), std::string::npos) << r.err;
  r = mlxcel("download test-org/multi-gguf --include '*Q4_0*'");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(fs::exists(models() / "test-org" / "multi-gguf" / "m-Q4_0.gguf"));
  EXPECT_FALSE(fs::exists(models() / "test-org" / "multi-gguf" / "m-Q8_0.gguf"));

  // Errors are one plain line and exit code 1.
  r = mlxcel("download test-org/nope");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("404"), std::string::npos) << r.err;
  r = mlxcel("download test-org/private");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("HF_TOKEN"), std::string::npos) << r.err;
  r = mlxcel("download test-org/tiny --revision nope --models-dir " +
             quote((dir_ / "m3").string()));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("Revision not found"), std::string::npos) << r.err;
  r = mlxcel("download 'bad id!'");
  EXPECT_EQ(r.rc, 1);
}

TEST_F(CliTest, CtrlCLeavesNoModelAndResumes) {
  MockHub hub;
  env_.set("HF_ENDPOINT", hub.url());
  fs::path err = dir_ / "sigint-stderr.txt";
  pid_t pid = fork();
  if (pid == 0) {
    FILE* f = std::freopen(err.c_str(), "w", stderr);
    (void)f;
    execl(MLXCEL_BIN, MLXCEL_BIN, "download", "test-org/slow", (char*)nullptr);
    _exit(127);
  }
  // Wait until the weights are partly there, then interrupt.
  fs::path part;
  for (int i = 0; i < 500 && part.empty(); ++i) {
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(models(), ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->path().filename() == "model.safetensors.part" && it->file_size(ec) > 0)
        part = it->path();
    }
    usleep(10000);
  }
  ASSERT_FALSE(part.empty()) << "download never started";
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  std::string msg = testing::read_file(err);
  EXPECT_NE(msg.find("interrupted"), std::string::npos) << msg;
  // Nothing that looks like a model; the part file stays for a resume.
  EXPECT_FALSE(fs::exists(models() / "test-org" / "slow"));
  EXPECT_EQ(mlxcel("list -q").out, "");
  ASSERT_TRUE(fs::exists(part));
  uint64_t had = fs::file_size(part);
  EXPECT_LT(had, 400000u);

  hub.reset();
  CliRun r = mlxcel("download test-org/slow");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(fs::file_size(models() / "test-org" / "slow" / "model.safetensors"), 400000u);
  EXPECT_NE(hub.log().find("bytes=" + std::to_string(had) + "-"), std::string::npos)
      << hub.log();
}

}  // namespace
}  // namespace mlxcel::store
