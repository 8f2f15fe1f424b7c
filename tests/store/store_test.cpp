// Model id resolution, list and rm safety, on temp dirs with env vars set per test.
#include "store/store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "base/error.h"
#include "store/hub.h"
#include "store/sha256.h"
#include "test_util.h"

namespace mlxcel::store {
namespace {

using testing::isolate_env;
using testing::make_hf_model;
using testing::make_model;
using testing::ScopedEnv;
using testing::TempDir;
using testing::write_file;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(Sha256, KnownVectors) {
  Sha256 h;
  EXPECT_EQ(h.hex_digest(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  h.update("abc", 3);
  EXPECT_EQ(h.hex_digest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::string msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  h.update(msg.data(), msg.size());
  EXPECT_EQ(h.hex_digest(), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // One million 'a' fed in odd-sized pieces.
  std::string a(1000, 'a');
  for (int i = 0; i < 1000; ++i) {
    h.update(a.data(), 7);
    h.update(a.data(), 993);
  }
  EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(StoreConfig, EnvironmentOrder) {
  ScopedEnv env{{"MLXCEL_MODELS_DIR", std::nullopt}, {"MLXCEL_CACHE_DIR", std::nullopt},
                {"HF_HUB_CACHE", std::nullopt},      {"HF_HOME", std::nullopt},
                {"MLXCEL_DEFAULT_ORG", std::nullopt}, {"HOME", "/home/someone"}};
  auto cfg = StoreConfig::from_env();
  EXPECT_EQ(cfg.models_dir, fs::path("/home/someone/.cache/mlxcel/models"));
  EXPECT_EQ(cfg.hf_hub_cache, fs::path("/home/someone/.cache/huggingface/hub"));
  EXPECT_EQ(cfg.default_org, "mlx-community");

  env.set("MLXCEL_CACHE_DIR", "/c");
  env.set("HF_HOME", "/hfhome");
  cfg = StoreConfig::from_env();
  EXPECT_EQ(cfg.models_dir, fs::path("/c/models"));
  EXPECT_EQ(cfg.hf_hub_cache, fs::path("/hfhome/hub"));

  env.set("MLXCEL_MODELS_DIR", "/m");
  env.set("HF_HUB_CACHE", "/hubcache");
  env.set("MLXCEL_DEFAULT_ORG", "my-org");
  cfg = StoreConfig::from_env();
  EXPECT_EQ(cfg.models_dir, fs::path("/m"));
  EXPECT_EQ(cfg.hf_hub_cache, fs::path("/hubcache"));
  EXPECT_EQ(cfg.default_org, "my-org");

  EXPECT_EQ(StoreConfig::from_env("/flag").models_dir, fs::path("/flag"));

  env.set("MLXCEL_DEFAULT_ORG", "bad/org");
  EXPECT_THROW(StoreConfig::from_env(), Error);
}

TEST(RepoIds, ParseAndReject) {
  StoreConfig cfg;
  cfg.default_org = "mlx-community";
  EXPECT_EQ(parse_repo_id("Qwen3-0.6B-4bit", cfg).str(), "mlx-community/Qwen3-0.6B-4bit");
  EXPECT_EQ(parse_repo_id("meta-llama/Llama-3.2-1B", cfg).str(), "meta-llama/Llama-3.2-1B");
  for (const char* bad : {"", "a/b/c", "../x", "a/..", "a/.hidden", "a b", "/abs", "a/", "/b",
                          "a/b--c", "a/-x", "a/x."}) {
    EXPECT_FALSE(is_repo_id(bad)) << bad;
    EXPECT_THROW(parse_repo_id(bad, cfg), Error) << bad;
  }
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    isolate_env(env_, dir_);
    cfg_ = StoreConfig::from_env();
  }
  fs::path models() const { return cfg_.models_dir; }
  fs::path hub() const { return cfg_.hf_hub_cache; }

  TempDir dir_;
  ScopedEnv env_;
  StoreConfig cfg_;
};

TEST_F(StoreTest, FindsStoreModelByIdAndBareName) {
  make_model(models() / "mlx-community" / "Tiny-4bit");
  make_model(models() / "acme" / "Foo");
  auto m = find_model("mlx-community/Tiny-4bit", cfg_);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->source, ModelSource::store);
  EXPECT_EQ(m->path, models() / "mlx-community" / "Tiny-4bit");
  EXPECT_EQ(m->repo_id, "mlx-community/Tiny-4bit");

  m = find_model("Tiny-4bit", cfg_);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->repo_id, "mlx-community/Tiny-4bit");

  env_.set("MLXCEL_DEFAULT_ORG", "acme");
  auto cfg2 = StoreConfig::from_env();
  m = find_model("Foo", cfg2);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->repo_id, "acme/Foo");
  EXPECT_FALSE(find_model("Tiny-4bit", cfg2));
}

TEST_F(StoreTest, ModelsDirOverride) {
  make_model(dir_ / "other" / "acme" / "Foo");
  EXPECT_FALSE(find_model("acme/Foo", cfg_));
  auto cfg2 = StoreConfig::from_env((dir_ / "other").string());
  auto m = find_model("acme/Foo", cfg2);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->path, dir_ / "other" / "acme" / "Foo");
}

TEST_F(StoreTest, ExistingPathsAreUsedAsIs) {
  make_model(dir_ / "somewhere" / "ckpt");
  write_file(dir_ / "x.gguf", "GGUF");
  auto m = find_model((dir_ / "somewhere" / "ckpt").string(), cfg_);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->source, ModelSource::local);
  EXPECT_EQ(m->path, dir_ / "somewhere" / "ckpt");
  m = find_model((dir_ / "x.gguf").string(), cfg_);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->source, ModelSource::local);
  // A path-looking id that does not exist is a clear not_found, not an id error.
  try {
    find_model((dir_ / "nope" / "x.gguf").string(), cfg_);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
  }
}

TEST_F(StoreTest, IncompleteStoreDirIsNotAModel) {
  fs::create_directories(models() / "acme" / "Half");
  write_file(models() / "acme" / "Half" / "model.safetensors.part", "xx");
  EXPECT_FALSE(find_model("acme/Half", cfg_));
  make_model(models() / "acme" / "Gguf");
  fs::remove(models() / "acme" / "Gguf" / "config.json");
  write_file(models() / "acme" / "Gguf" / "m.Q4_0.gguf", "GGUF");
  EXPECT_TRUE(find_model("acme/Gguf", cfg_));
}

TEST_F(StoreTest, HfCacheIsSearched) {
  fs::path snap = make_hf_model(hub(), "acme", "Cached", "rev1");
  auto m = find_model("acme/Cached", cfg_);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->source, ModelSource::hf_cache);
  EXPECT_EQ(m->path, snap);
  // The store wins over the HF cache.
  make_model(models() / "acme" / "Cached");
  m = find_model("acme/Cached", cfg_);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->source, ModelSource::store);
}

TEST_F(StoreTest, HfCacheRefsAndNewestSnapshot) {
  make_hf_model(hub(), "acme", "Two", "old", false);
  fs::path newer = make_hf_model(hub(), "acme", "Two", "new", false);
  // No refs/main: the newest snapshot.
  auto past = fs::file_time_type::clock::now() - std::chrono::hours(1);
  fs::last_write_time(hub() / "models--acme--Two" / "snapshots" / "old", past);
  auto m = find_model("acme/Two", cfg_);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->path, newer);
  // refs/main names the snapshot.
  write_file(hub() / "models--acme--Two" / "refs" / "main", "old\n");
  m = find_model("acme/Two", cfg_);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->path.filename(), "old");
  // A named revision.
  m = find_model("acme/Two", cfg_, nullptr, "new");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->path.filename(), "new");
}

TEST_F(StoreTest, HfHomeFallback) {
  env_.set("HF_HUB_CACHE", std::nullopt);
  env_.set("HF_HOME", (dir_ / "hfhome").string());
  auto cfg = StoreConfig::from_env();
  make_hf_model(dir_ / "hfhome" / "hub", "acme", "ViaHome");
  auto m = find_model("acme/ViaHome", cfg);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->source, ModelSource::hf_cache);
}

TEST_F(StoreTest, NotFoundListsEveryPlace) {
  std::vector<std::string> searched;
  EXPECT_FALSE(find_model("acme/Missing", cfg_, &searched));
  ASSERT_EQ(searched.size(), 3u);
  std::string msg = error_of([&] {
    ResolveOptions o;
    o.allow_download = false;
    resolve_model("acme/Missing", cfg_, o);
  });
  EXPECT_NE(msg.find((models() / "acme" / "Missing").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find((hub() / "models--acme--Missing").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("not found"), std::string::npos) << msg;
  EXPECT_THROW(find_model("not a model id!", cfg_), Error);
}

TEST_F(StoreTest, ListShowsStoreAndHfCache) {
  make_model(models() / "acme" / "A", 1000);
  make_model(models() / "zed" / "B", 10);
  write_file(models() / "zed" / "GgufOnly" / "x.gguf", std::string(5, 'g'));
  fs::create_directories(models() / "acme" / "Empty");              // no config: skipped
  make_model(models() / ".downloads" / "acme--C--main");            // temp: skipped
  make_model(models() / "acme" / ".hidden");                        // hidden: skipped
  make_model(models() / "toplevel");                                // depth 1: not owner/name
  fs::remove(models() / "toplevel" / "config.json");
  make_model(models() / "deep" / "a" / "b");                        // depth 3: skipped
  make_hf_model(hub(), "acme", "A");
  make_hf_model(hub(), "hf", "Only");
  write_file(hub() / "datasets--x--y" / "refs" / "main", "r");      // not a model

  auto list = list_models(cfg_);
  std::vector<std::string> ids;
  for (auto& e : list) ids.push_back(e.repo_id + ":" + model_source_name(e.source));
  EXPECT_EQ(ids, (std::vector<std::string>{"acme/A:store", "acme/A:hf_cache", "hf/Only:hf_cache",
                                           "zed/B:store", "zed/GgufOnly:store"}));
  const auto& a = list[0];
  EXPECT_EQ(a.size_bytes, 1000u + std::string(R"({"model_type": "tiny"})").size());
  EXPECT_EQ(a.path, models() / "acme" / "A");
  EXPECT_GT(a.modified, 1600000000);
  // HF cache sizes follow the snapshot's symlinks to the blobs.
  EXPECT_EQ(list[1].size_bytes, std::string(R"({"model_type": "tiny"})").size());
}

TEST_F(StoreTest, ListOnMissingRootsIsEmpty) { EXPECT_TRUE(list_models(cfg_).empty()); }

TEST(StoreFormat, IsoAndSizes) {
  EXPECT_EQ(iso8601_utc(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(iso8601_utc(1714564800), "2024-05-01T12:00:00Z");
  EXPECT_EQ(human_size(12), "12 B");
  EXPECT_EQ(human_size(1500000), "1.5 MB");
}

TEST_F(StoreTest, RmRemovesStoreModel) {
  make_model(models() / "acme" / "A");
  make_model(models() / "acme" / "B");
  make_model(models() / "solo" / "C");
  auto e = remove_model("acme/A", cfg_);
  EXPECT_EQ(e.path, fs::canonical(models()) / "acme" / "A");
  EXPECT_FALSE(fs::exists(models() / "acme" / "A"));
  EXPECT_TRUE(fs::exists(models() / "acme" / "B"));
  // By path inside the store; the owner dir goes when empty.
  remove_model((models() / "solo" / "C").string(), cfg_);
  EXPECT_FALSE(fs::exists(models() / "solo"));
  // Bare names use the default org.
  make_model(models() / "mlx-community" / "D");
  remove_model("D", cfg_);
  EXPECT_FALSE(fs::exists(models() / "mlx-community" / "D"));
}

TEST_F(StoreTest, RmNeverTouchesHfCache) {
  fs::path snap = make_hf_model(hub(), "acme", "Cached");
  std::string msg = error_of([&] { remove_model("acme/Cached", cfg_); });
  EXPECT_NE(msg.find("only in the Hugging Face cache"), std::string::npos) << msg;
  EXPECT_TRUE(fs::exists(snap / "config.json"));
  // Even by path.
  msg = error_of([&] { remove_model(snap.string(), cfg_); });
  EXPECT_NE(msg.find("refusing"), std::string::npos) << msg;
  EXPECT_TRUE(fs::exists(snap / "config.json"));
  msg = error_of([&] { remove_model("acme/Nothing", cfg_); });
  EXPECT_NE(msg.find("not in the store"), std::string::npos) << msg;
}

TEST_F(StoreTest, RmRefusesPathsOutsideTheStore) {
  make_model(models() / "acme" / "A");
  make_model(dir_ / "precious" / "m");
  for (std::string p : {(dir_ / "precious" / "m").string(), (dir_ / "precious").string(),
                        (models() / "acme" / ".." / ".." / "precious" / "m").string(),
                        (models() / "acme").string(), models().string(),
                        (models() / "acme" / "A" / "config.json").string(), std::string("/"),
                        std::string("..")}) {
    EXPECT_THROW(remove_model(p, cfg_), Error) << p;
  }
  EXPECT_TRUE(fs::exists(dir_ / "precious" / "m" / "config.json"));
  EXPECT_TRUE(fs::exists(models() / "acme" / "A" / "config.json"));
}

TEST_F(StoreTest, RmRefusesSymlinkTricks) {
  make_model(dir_ / "precious" / "m");
  make_model(dir_ / "precious2" / "x" / "m2");
  fs::create_directories(models() / "evil");
  // A model dir that is a symlink to outside.
  fs::create_directory_symlink(dir_ / "precious" / "m", models() / "evil" / "link");
  // An owner dir that is a symlink to outside.
  fs::create_directory_symlink(dir_ / "precious2" / "x", models() / "owner-link");
  std::string msg = error_of([&] { remove_model("evil/link", cfg_); });
  EXPECT_NE(msg.find("symbolic link"), std::string::npos) << msg;
  msg = error_of([&] { remove_model("owner-link/m2", cfg_); });
  EXPECT_NE(msg.find("symbolic link"), std::string::npos) << msg;
  msg = error_of([&] { remove_model((models() / "owner-link" / "m2").string(), cfg_); });
  EXPECT_NE(msg.find("refusing"), std::string::npos) << msg;
  EXPECT_TRUE(fs::exists(dir_ / "precious" / "m" / "config.json"));
  EXPECT_TRUE(fs::exists(dir_ / "precious2" / "x" / "m2" / "config.json"));

  // A symlink inside a model is unlinked, not followed.
  make_model(models() / "acme" / "A");
  fs::create_directory_symlink(dir_ / "precious", models() / "acme" / "A" / "escape");
  remove_model("acme/A", cfg_);
  EXPECT_FALSE(fs::exists(models() / "acme" / "A"));
  EXPECT_TRUE(fs::exists(dir_ / "precious" / "m" / "config.json"));
}

TEST_F(StoreTest, RmPrefersTheStoreOverASameNamedFolderHere) {
  make_model(models() / "acme" / "A");
  make_model(dir_ / "cwd" / "acme" / "A");
  fs::path old = fs::current_path();
  fs::current_path(dir_ / "cwd");
  EXPECT_NO_THROW(remove_model("acme/A", cfg_));
  fs::current_path(old);
  EXPECT_FALSE(fs::exists(models() / "acme" / "A"));
  EXPECT_TRUE(fs::exists(dir_ / "cwd" / "acme" / "A" / "config.json"));
}

TEST_F(StoreTest, RmWithSymlinkedStoreRoot) {
  make_model(dir_ / "real-models" / "acme" / "A");
  fs::create_directory_symlink(dir_ / "real-models", dir_ / "models");
  remove_model("acme/A", cfg_);
  EXPECT_FALSE(fs::exists(dir_ / "real-models" / "acme" / "A"));
}

TEST(RuntimeFiles, Selection) {
  for (const char* yes : {"config.json", "generation_config.json", "tokenizer.json",
                          "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                          "chat_template.json", "model.safetensors",
                          "model-00001-of-00002.safetensors", "model.safetensors.index.json",
                          "preprocessor_config.json", "processor_config.json"}) {
    EXPECT_TRUE(is_runtime_file(yes, false)) << yes;
  }
  for (const char* no : {"README.md", "pytorch_model.bin", "images/logo.png", "onnx/model.onnx",
                         ".gitattributes", "model.gguf", "original/consolidated.00.pth",
                         "sub/model.safetensors"}) {
    EXPECT_FALSE(is_runtime_file(no, false)) << no;
  }
  EXPECT_TRUE(is_runtime_file("model-Q4_K_M.gguf", true));
}

}  // namespace
}  // namespace mlxcel::store
