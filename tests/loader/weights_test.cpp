#include "loader/weights.h"

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "loader/safetensors.h"

using namespace mlxcel;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

class TempDir {
 public:
  TempDir() {
    static int n = 0;
    path_ = fs::temp_directory_path() / ("mlxcel_w_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

Tensor f32(const Shape& s, float start) {
  std::vector<float> v(size_t(shape_numel(s)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = start + float(i);
  return Tensor::from_f32(s, v);
}

void write_index(const TempDir& d, const std::map<std::string, std::string>& wm) {
  json j;
  j["metadata"] = {{"total_size", 0}};
  j["weight_map"] = wm;
  std::ofstream(d.file("model.safetensors.index.json")) << j.dump(2);
}

template <typename Fn>
std::string error_of(Fn fn, ErrorKind kind) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return {};
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(WeightMap, Basics) {
  WeightMap w("ckpt/x");
  EXPECT_TRUE(w.empty());
  w.insert("b", f32({2}, 0));
  w.insert("a", f32({1}, 5));
  EXPECT_TRUE(w.contains("a"));
  EXPECT_EQ(w.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(w.get("a").to_f32_vector(), std::vector<float>{5});
  std::string msg = error_of([&] { w.get("missing.weight"); }, ErrorKind::not_found);
  EXPECT_TRUE(has(msg, "ckpt/x")) << msg;
  EXPECT_TRUE(has(msg, "missing.weight")) << msg;
  Tensor t = w.take("a");
  EXPECT_FALSE(w.contains("a"));
  EXPECT_EQ(t.numel(), 1);
  EXPECT_FALSE(w.erase("a"));
  EXPECT_TRUE(w.erase("b"));
  EXPECT_EQ(w.size(), 0u);
  EXPECT_EQ(w.find("b"), nullptr);
}

TEST(WeightMap, GetQuantized) {
  WeightMap w("q");
  QuantSpec s{QuantFormat::mlx_affine, 4, 64};
  // N = 3 rows, K = 128 columns: 128 * 4 / 32 = 16 words, 2 groups.
  w.insert("l.weight", Tensor::zeros({3, 16}, DType::u32));
  w.insert("l.scales", Tensor::zeros({3, 2}, DType::f16));
  w.insert("l.biases", Tensor::zeros({3, 2}, DType::f16));
  w.insert("plain.weight", f32({3, 4}, 0));
  EXPECT_FALSE(w.get_quantized("plain", s).has_value());
  auto q = w.get_quantized("l", s);
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->rows(), 3);
  EXPECT_EQ(q->cols(), 128);
  EXPECT_EQ(q->spec.bits, 4);
  // 3-bit: 128 * 3 / 32 = 12 words.
  QuantSpec s3{QuantFormat::mlx_affine, 3, 32};
  w.insert("m.weight", Tensor::zeros({2, 12}, DType::u32));
  w.insert("m.scales", Tensor::zeros({2, 4}, DType::bf16));
  w.insert("m.biases", Tensor::zeros({2, 4}, DType::bf16));
  EXPECT_EQ(w.get_quantized("m", s3)->cols(), 128);
  // Wrong spec for the shapes: names the checkpoint and the prefix.
  QuantSpec s8{QuantFormat::mlx_affine, 8, 64};
  std::string msg = error_of([&] { w.get_quantized("l", s8); }, ErrorKind::invalid_request);
  EXPECT_TRUE(has(msg, "q: quantized weight 'l'")) << msg;
  EXPECT_TRUE(has(msg, "scales")) << msg;
  // Wrong dtype of the packed weight.
  w.insert("l.weight", Tensor::zeros({3, 16}, DType::f32));
  msg = error_of([&] { w.get_quantized("l", s); }, ErrorKind::invalid_request);
  EXPECT_TRUE(has(msg, "u32")) << msg;
  // Missing biases.
  w.insert("l.weight", Tensor::zeros({3, 16}, DType::u32));
  w.erase("l.biases");
  msg = error_of([&] { w.get_quantized("l", s); }, ErrorKind::not_found);
  EXPECT_TRUE(has(msg, "l.biases")) << msg;
}

TEST(Checkpoint, SingleFile) {
  TempDir d;
  save_safetensors(d.file("model.safetensors"), {{"a", f32({2, 2}, 0)}, {"b", f32({3}, 10)}});
  WeightMap w = load_checkpoint_weights(d.str());
  EXPECT_EQ(w.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(w.get("b").to_f32_vector(), (std::vector<float>{10, 11, 12}));
  EXPECT_TRUE(w.notes().empty());
  EXPECT_EQ(w.source, d.str());
  // A file path works too.
  WeightMap w2 = load_checkpoint_weights(d.file("model.safetensors"));
  EXPECT_EQ(w2.size(), 2u);
}

TEST(Checkpoint, ShardedWithIndex) {
  TempDir d;
  save_safetensors(d.file("model-00001-of-00002.safetensors"), {{"a", f32({2}, 0)}, {"b", f32({2}, 2)}});
  save_safetensors(d.file("model-00002-of-00002.safetensors"), {{"c", f32({2}, 4)}});
  write_index(d, {{"a", "model-00001-of-00002.safetensors"},
                  {"b", "model-00001-of-00002.safetensors"},
                  {"c", "model-00002-of-00002.safetensors"}});
  // Mistral repos also ship an original-format copy; it is ignored.
  save_safetensors(d.file("consolidated.safetensors"), {{"layers.0.attention.wq.weight", f32({1}, 0)}});
  WeightMap w = load_checkpoint_weights(d.str());
  EXPECT_EQ(w.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(w.get("c").to_f32_vector(), (std::vector<float>{4, 5}));
  EXPECT_TRUE(w.notes().empty()) << w.notes()[0];
}

TEST(Checkpoint, StaleIndexFallsBackToGlob) {
  TempDir d;
  save_safetensors(d.file("model-00001-of-00002.safetensors"), {{"a", f32({2}, 0)}});
  save_safetensors(d.file("model-00002-of-00002.safetensors"), {{"c", f32({2}, 4)}});
  // Names a shard that is not there.
  write_index(d, {{"a", "model-00001-of-00003.safetensors"}, {"c", "model-00002-of-00002.safetensors"}});
  WeightMap w = load_checkpoint_weights(d.str());
  EXPECT_EQ(w.names(), (std::vector<std::string>{"a", "c"}));
  ASSERT_EQ(w.notes().size(), 1u);
  EXPECT_TRUE(has(w.notes()[0], "stale")) << w.notes()[0];
  EXPECT_TRUE(has(w.notes()[0], "model-00001-of-00003.safetensors")) << w.notes()[0];

  // Leaves out a shard that is there.
  write_index(d, {{"a", "model-00001-of-00002.safetensors"}});
  w = load_checkpoint_weights(d.str());
  EXPECT_EQ(w.names(), (std::vector<std::string>{"a", "c"}));
  ASSERT_EQ(w.notes().size(), 1u);
  EXPECT_TRUE(has(w.notes()[0], "model-00002-of-00002.safetensors")) << w.notes()[0];

  // Puts a tensor in the wrong shard: everything loads, with a note.
  write_index(d, {{"a", "model-00002-of-00002.safetensors"}, {"c", "model-00002-of-00002.safetensors"},
                  {"x", "model-00001-of-00002.safetensors"}});
  w = load_checkpoint_weights(d.str());
  EXPECT_EQ(w.names(), (std::vector<std::string>{"a", "c"}));
  ASSERT_EQ(w.notes().size(), 1u);
  EXPECT_TRUE(has(w.notes()[0], "stale")) << w.notes()[0];
}

TEST(Checkpoint, NoIndexGlobs) {
  TempDir d;
  save_safetensors(d.file("weights.00.safetensors"), {{"a", f32({2}, 0)}});
  save_safetensors(d.file("weights.01.safetensors"), {{"b", f32({2}, 0)}});
  std::ofstream(d.file("README.md")) << "hi";
  WeightMap w = load_checkpoint_weights(d.str());
  EXPECT_EQ(w.names(), (std::vector<std::string>{"a", "b"}));
}

TEST(Checkpoint, Errors) {
  TempDir d;
  std::string msg = error_of([&] { load_checkpoint_weights(d.str()); }, ErrorKind::not_found);
  EXPECT_TRUE(has(msg, "no .safetensors")) << msg;
  msg = error_of([&] { load_checkpoint_weights(d.file("nope")); }, ErrorKind::not_found);
  EXPECT_TRUE(has(msg, "nope")) << msg;

  // Duplicate tensor across shards.
  save_safetensors(d.file("s1.safetensors"), {{"a", f32({2}, 0)}});
  save_safetensors(d.file("s2.safetensors"), {{"a", f32({2}, 0)}});
  msg = error_of([&] { load_checkpoint_weights(d.str()); }, ErrorKind::invalid_request);
  EXPECT_TRUE(has(msg, "'a'") && has(msg, "s1.safetensors") && has(msg, "s2.safetensors")) << msg;
  fs::remove(d.file("s2.safetensors"));

  // Broken index.
  std::ofstream(d.file("model.safetensors.index.json")) << "{not json";
  msg = error_of([&] { load_checkpoint_weights(d.str()); }, ErrorKind::invalid_request);
  EXPECT_TRUE(has(msg, "model.safetensors.index.json")) << msg;
  std::ofstream(d.file("model.safetensors.index.json")) << R"({"weight_map": {"a": "../etc/passwd"}})";
  msg = error_of([&] { load_checkpoint_weights(d.str()); }, ErrorKind::invalid_request);
  EXPECT_TRUE(has(msg, "invalid shard")) << msg;
  std::ofstream(d.file("model.safetensors.index.json")) << R"({"weight_map": {"a": 3}})";
  msg = error_of([&] { load_checkpoint_weights(d.str()); }, ErrorKind::invalid_request);
  EXPECT_TRUE(has(msg, "weight_map.a")) << msg;
  fs::remove(d.file("model.safetensors.index.json"));

  // A corrupt shard names its file and tensor.
  {
    std::string bytes = serialize_safetensors({{"layers.3.w", f32({4}, 0)}});
    bytes.resize(bytes.size() - 4);
    std::ofstream(d.file("s3.safetensors"), std::ios::binary) << bytes;
  }
  msg = error_of([&] { load_checkpoint_weights(d.str()); }, ErrorKind::invalid_request);
  EXPECT_TRUE(has(msg, "s3.safetensors") && has(msg, "layers.3.w")) << msg;
}

// model.safetensors of every transformers fixture: written by the reference library.
TEST(Checkpoint, Fixtures) {
  fs::path root = fs::path(MLXCEL_SOURCE_DIR) / "tests/fixtures";
  if (!fs::exists(root / "llama/model.safetensors")) GTEST_SKIP() << "no fixtures";
  int families = 0;
  for (const auto& e : fs::directory_iterator(root)) {
    if (!fs::exists(e.path() / "model.safetensors")) continue;
    ++families;
    WeightMap w = load_checkpoint_weights(e.path().string());
    EXPECT_TRUE(w.notes().empty()) << e.path();
    EXPECT_TRUE(w.contains("model.embed_tokens.weight")) << e.path();
    const Tensor& emb = w.get("model.embed_tokens.weight");
    EXPECT_EQ(emb.dtype(), DType::f32);
    EXPECT_EQ(emb.shape(), (Shape{512, 64})) << e.path();
    for (const auto& [name, t] : w) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % dtype_size(t.dtype()), 0u) << name;
    }
    // The reference logits files too.
    WeightMap ref = load_checkpoint_weights((e.path() / "reference.safetensors").string());
    EXPECT_EQ(ref.get("logits_0").shape(), (Shape{19, 512}));
  }
  EXPECT_GE(families, 10);
}
