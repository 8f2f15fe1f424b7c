// Downloads against tests/store/mock_hub.py on loopback.
#include "store/hub.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "store/sha256.h"
#include "test_util.h"

namespace mlxcel::store {
namespace {

using testing::isolate_env;
using testing::MockHub;
using testing::ScopedEnv;
using testing::TempDir;

class HubTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { hub_ = new MockHub(); }
  static void TearDownTestSuite() {
    delete hub_;
    hub_ = nullptr;
  }
  void SetUp() override {
    isolate_env(env_, dir_);
    env_.set("HF_ENDPOINT", hub_->url());
    hub_->reset();
    cfg_ = StoreConfig::from_env();
    opts_ = DownloadOptions::from_env();
    opts_.retry_delay_ms = 10;
  }
  // The message of the Error that `f` throws.
  template <typename F>
  Error error_of(F&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e;
    }
    ADD_FAILURE() << "no error thrown";
    return Error(ErrorKind::internal, "<none>");
  }
  nlohmann::json log() const { return nlohmann::json::parse(hub_->log()); }
  std::vector<std::string> ranges_for(const std::string& suffix) const {
    std::vector<std::string> out;
    for (const auto& r : log()) {
      std::string p = r["path"];
      if (p.size() >= suffix.size() && p.compare(p.size() - suffix.size(), suffix.size(), suffix) == 0)
        out.push_back(r["range"].is_null() ? "" : r["range"].get<std::string>());
    }
    return out;
  }
  bool nothing_in_store(const std::string& repo) const {
    return !fs::exists(cfg_.models_dir / repo) && list_models(cfg_).empty();
  }

  static MockHub* hub_;
  TempDir dir_;
  ScopedEnv env_;
  StoreConfig cfg_;
  DownloadOptions opts_;
};

MockHub* HubTest::hub_ = nullptr;

TEST_F(HubTest, ListsRepoFiles) {
  auto info = fetch_repo_info("test-org/tiny", opts_);
  EXPECT_EQ(info.commit, "0123456789abcdef0123456789abcdef01234567");
  ASSERT_GE(info.files.size(), 4u);
  bool found = false;
  for (const auto& f : info.files) {
    if (f.name == "model.safetensors") {
      found = true;
      EXPECT_EQ(f.size.value_or(0), 200000u);
      EXPECT_EQ(f.sha256.size(), 64u);
    }
  }
  EXPECT_TRUE(found);
}

TEST_F(HubTest, DownloadsRuntimeFilesOnly) {
  auto r = download_model({"test-org", "tiny"}, cfg_, opts_);
  fs::path dest = cfg_.models_dir / "test-org" / "tiny";
  EXPECT_EQ(r.path, dest);
  EXPECT_FALSE(r.already_present);
  EXPECT_EQ(r.bytes_downloaded, 200000u + fs::file_size(dest / "config.json") +
                                    fs::file_size(dest / "tokenizer.json") +
                                    fs::file_size(dest / "tokenizer_config.json"));
  std::vector<std::string> names;
  for (auto& e : fs::recursive_directory_iterator(dest)) {
    names.push_back(fs::relative(e.path(), dest).string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"config.json", "model.safetensors", "tokenizer.json",
                                             "tokenizer_config.json"}));
  auto info = fetch_repo_info("test-org/tiny", opts_);
  for (const auto& f : info.files) {
    if (f.name == "model.safetensors") {
      EXPECT_EQ(sha256_file(dest / f.name), f.sha256);
    }
  }
  // The temp dir is gone; the model is listed.
  EXPECT_TRUE(fs::is_empty(cfg_.models_dir / ".downloads"));
  auto list = list_models(cfg_);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].repo_id, "test-org/tiny");
  // No token was sent.
  for (const auto& req : log()) EXPECT_TRUE(req["auth"].is_null());

  // A second download finds it complete.
  hub_->reset();
  auto again = download_model({"test-org", "tiny"}, cfg_, opts_);
  EXPECT_TRUE(again.already_present);
  EXPECT_TRUE(ranges_for("model.safetensors").empty());
}

TEST_F(HubTest, ResolveDownloadsBareName) {
  auto m = resolve_model("tiny-bare", cfg_);
  EXPECT_EQ(m.source, ModelSource::store);
  EXPECT_EQ(m.repo_id, "mlx-community/tiny-bare");
  EXPECT_TRUE(fs::exists(cfg_.models_dir / "mlx-community" / "tiny-bare" / "config.json"));
  // Found locally afterwards.
  hub_->reset();
  resolve_model("tiny-bare", cfg_);
  EXPECT_TRUE(log().size() <= 1u);  // only the reset call itself
}

TEST_F(HubTest, MissingRepoIs404) {
  Error e = error_of([&] { download_model({"test-org", "nope"}, cfg_, opts_); });
  EXPECT_EQ(e.kind(), ErrorKind::not_found);
  EXPECT_NE(std::string(e.what()).find("404"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("Repository not found"), std::string::npos) << e.what();
  EXPECT_TRUE(nothing_in_store("test-org/nope"));

  e = error_of([&] { resolve_model("test-org/nope", cfg_); });
  std::string msg = e.what();
  EXPECT_EQ(e.kind(), ErrorKind::not_found);
  EXPECT_NE(msg.find((cfg_.models_dir / "test-org" / "nope").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("models--test-org--nope"), std::string::npos) << msg;
  EXPECT_NE(msg.find("download failed"), std::string::npos) << msg;
}

TEST_F(HubTest, UnknownRevisionIs404) {
  opts_.revision = "v9";
  Error e = error_of([&] { download_model({"test-org", "tiny"}, cfg_, opts_); });
  EXPECT_EQ(e.kind(), ErrorKind::not_found);
  EXPECT_NE(std::string(e.what()).find("Revision not found"), std::string::npos) << e.what();
}

TEST_F(HubTest, TokenRequired) {
  Error e = error_of([&] { download_model({"test-org", "private"}, cfg_, opts_); });
  EXPECT_NE(std::string(e.what()).find("401"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("set HF_TOKEN"), std::string::npos) << e.what();

  env_.set("HF_TOKEN", "wrong");
  opts_ = DownloadOptions::from_env();
  e = error_of([&] { download_model({"test-org", "private"}, cfg_, opts_); });
  EXPECT_NE(std::string(e.what()).find("rejected"), std::string::npos) << e.what();
  EXPECT_TRUE(nothing_in_store("test-org/private"));

  env_.set("HF_TOKEN", "secret-token");
  opts_ = DownloadOptions::from_env();
  auto r = download_model({"test-org", "private"}, cfg_, opts_);
  EXPECT_TRUE(fs::exists(r.path / "model.safetensors"));
  bool saw_bearer = false;
  for (const auto& req : log())
    if (!req["auth"].is_null() && req["auth"] == "Bearer secret-token") saw_bearer = true;
  EXPECT_TRUE(saw_bearer);
}

TEST_F(HubTest, TruncatedTransferFails) {
  opts_.max_retries = 2;
  Error e = error_of([&] { download_model({"test-org", "truncated"}, cfg_, opts_); });
  std::string msg = e.what();
  EXPECT_NE(msg.find("truncated at 50000 of 100000 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("3 attempts"), std::string::npos) << msg;
  EXPECT_TRUE(nothing_in_store("test-org/truncated"));
  EXPECT_FALSE(find_model("test-org/truncated", cfg_));
}

TEST_F(HubTest, WrongChecksumFails) {
  Error e = error_of([&] { download_model({"test-org", "badsum"}, cfg_, opts_); });
  std::string msg = e.what();
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::string(64, '0')), std::string::npos) << msg;
  EXPECT_TRUE(nothing_in_store("test-org/badsum"));
  // The bad bytes are not kept for a resume.
  for (auto& p : fs::recursive_directory_iterator(cfg_.models_dir))
    EXPECT_EQ(p.path().filename().string().find("model.safetensors"), std::string::npos)
        << p.path();
}

TEST_F(HubTest, HeadersAloneAreVerified) {
  auto info = fetch_repo_info("test-org/headers-only", opts_);
  for (const auto& f : info.files) {
    EXPECT_FALSE(f.size);
    EXPECT_TRUE(f.sha256.empty());
  }
  auto r = download_model({"test-org", "headers-only"}, cfg_, opts_);
  EXPECT_EQ(fs::file_size(r.path / "model.safetensors"), 30000u);

  Error e = error_of([&] { download_model({"test-org", "bad-etag"}, cfg_, opts_); });
  EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find(std::string(64, 'f')), std::string::npos) << e.what();
  EXPECT_FALSE(find_model("test-org/bad-etag", cfg_));
}

TEST_F(HubTest, DroppedConnectionResumesInProcess) {
  auto r = download_model({"test-org", "flaky"}, cfg_, opts_);
  fs::path weights = r.path / "model.safetensors";
  ASSERT_TRUE(fs::exists(weights));
  EXPECT_EQ(fs::file_size(weights), 300000u);
  auto ranges = ranges_for("flaky/resolve/main/model.safetensors");
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0], "");
  EXPECT_EQ(ranges[1], "bytes=120000-");
  EXPECT_EQ(r.bytes_downloaded, 300000u + fs::file_size(r.path / "config.json"));
}

TEST_F(HubTest, DroppedConnectionResumesInNextRun) {
  opts_.max_retries = 0;
  Error e = error_of([&] { download_model({"test-org", "flaky"}, cfg_, opts_); });
  EXPECT_NE(std::string(e.what()).find("resume"), std::string::npos) << e.what();
  // Not a model yet: nothing listed, nothing found; the part file waits in the temp dir.
  EXPECT_TRUE(nothing_in_store("test-org/flaky"));
  EXPECT_FALSE(find_model("test-org/flaky", cfg_));
  bool part = false, config_done = false;
  for (auto& p : fs::recursive_directory_iterator(cfg_.models_dir / ".downloads")) {
    if (p.path().filename() == "model.safetensors.part") part = fs::file_size(p.path()) == 120000;
    if (p.path().filename() == "config.json") config_done = true;
  }
  EXPECT_TRUE(part);

  auto r = download_model({"test-org", "flaky"}, cfg_, opts_);
  EXPECT_EQ(fs::file_size(r.path / "model.safetensors"), 300000u);
  auto ranges = ranges_for("flaky/resolve/main/model.safetensors");
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[1], "bytes=120000-");
  // The rest of the weights, and config.json again unless the first run finished it: the
  // files download in parallel, and the weights' failure cancels a config.json still in
  // flight (CI saw 180,022 bytes once).
  EXPECT_EQ(r.bytes_downloaded, 180000u + (config_done ? 0u : fs::file_size(r.path / "config.json")));
  auto info = fetch_repo_info("test-org/flaky", opts_);
  for (const auto& f : info.files) {
    if (f.name == "model.safetensors") {
      EXPECT_EQ(sha256_file(r.path / f.name), f.sha256);
    }
  }
}

TEST_F(HubTest, GgufOnlyRepo) {
  auto r = download_model({"test-org", "gguf-only"}, cfg_, opts_);
  EXPECT_TRUE(fs::exists(r.path / "model-Q4_0.gguf"));
  EXPECT_FALSE(fs::exists(r.path / "README.md"));
  EXPECT_TRUE(find_model("test-org/gguf-only", cfg_));
}

TEST_F(HubTest, SeveralGgufsNeedAChoice) {
  Error e = error_of([&] { download_model({"test-org", "multi-gguf"}, cfg_, opts_); });
  EXPECT_NE(std::string(e.what()).find("--include"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("m-Q8_0.gguf"), std::string::npos) << e.what();
  opts_.include = {"*Q8_0*"};
  auto r = download_model({"test-org", "multi-gguf"}, cfg_, opts_);
  EXPECT_TRUE(fs::exists(r.path / "m-Q8_0.gguf"));
  EXPECT_FALSE(fs::exists(r.path / "m-Q4_0.gguf"));
  EXPECT_TRUE(find_model("test-org/multi-gguf", cfg_));
}

TEST_F(HubTest, LocalDir) {
  fs::path dest = dir_ / "out" / "tiny";
  auto r = download_to_dir("test-org/tiny", dest, opts_);
  EXPECT_EQ(r.path, dest);
  EXPECT_TRUE(fs::exists(dest / "model.safetensors"));
  EXPECT_FALSE(fs::exists(cfg_.models_dir / "test-org"));
  // Into an existing folder with other files: they stay.
  fs::path dest2 = dir_ / "existing";
  testing::write_file(dest2 / "notes.txt", "keep me");
  download_to_dir("test-org/tiny", dest2, opts_);
  EXPECT_TRUE(fs::exists(dest2 / "config.json"));
  EXPECT_EQ(testing::read_file(dest2 / "notes.txt"), "keep me");
  // No temp folders left behind.
  for (auto& p : fs::directory_iterator(dir_.path()))
    EXPECT_EQ(p.path().filename().string().find(".mlxcel-download"), std::string::npos);
}

TEST_F(HubTest, PermissionErrorIsPlain) {
  if (geteuid() == 0) GTEST_SKIP() << "root ignores permissions";
  fs::create_directories(cfg_.models_dir);
  fs::permissions(cfg_.models_dir, fs::perms::owner_read | fs::perms::owner_exec);
  Error e = error_of([&] { download_model({"test-org", "tiny"}, cfg_, opts_); });
  EXPECT_NE(std::string(e.what()).find("permission denied"), std::string::npos) << e.what();
}

TEST_F(HubTest, DiskFullIsPlain) {
  // The .part file of the weights is /dev/full: every write fails with ENOSPC.
  fs::path temp = cfg_.models_dir / ".downloads" / "test-org--tiny--main@0123456789ab";
  fs::create_directories(temp);
  fs::create_symlink("/dev/full", temp / "model.safetensors.part");
  Error e = error_of([&] { download_model({"test-org", "tiny"}, cfg_, opts_); });
  EXPECT_EQ(e.kind(), ErrorKind::resource_exhausted) << e.what();
  EXPECT_NE(std::string(e.what()).find("disk full"), std::string::npos) << e.what();
  EXPECT_FALSE(find_model("test-org/tiny", cfg_));
}

TEST_F(HubTest, UnreachableHub) {
  opts_.endpoint = "http://127.0.0.1:9";
  Error e = error_of([&] { fetch_repo_info("test-org/tiny", opts_); });
  EXPECT_NE(std::string(e.what()).find("cannot reach"), std::string::npos) << e.what();
}

}  // namespace
}  // namespace mlxcel::store
