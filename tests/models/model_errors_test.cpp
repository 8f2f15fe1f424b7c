// Bad checkpoints and bad requests fail with clear errors, never a crash.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "engine/generator.h"
#include "loader/safetensors.h"
#include "models/model.h"

namespace mlxcel {
namespace {

namespace fs = std::filesystem;

const fs::path kLlama = fs::path(MLXCEL_SOURCE_DIR) / "tests/fixtures/llama";

// A scratch copy of the llama fixture whose config or weights a test may corrupt.
struct ScratchModel {
  fs::path dir;
  explicit ScratchModel(const std::string& name) {
    dir = fs::temp_directory_path() / ("mlxcel_model_errors_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy_file(kLlama / "config.json", dir / "config.json");
    fs::copy_file(kLlama / "model.safetensors", dir / "model.safetensors");
  }
  ~ScratchModel() { fs::remove_all(dir); }
  nlohmann::json config() const {
    std::ifstream in(dir / "config.json");
    return nlohmann::json::parse(in);
  }
  void write_config(const nlohmann::json& j) const { std::ofstream(dir / "config.json") << j.dump(); }
  // Rewrites the weights with `edit` applied to the name -> tensor list.
  template <typename F>
  void edit_weights(F edit) const {
    WeightMap w = load_checkpoint_weights(dir.string());
    std::vector<std::pair<std::string, Tensor>> t;
    for (const auto& [n, x] : w) t.emplace_back(n, x.clone());
    edit(t);
    save_safetensors((dir / "model.safetensors").string(), t);
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(ModelErrors, UnknownArchitectureListsSupportedOnes) {
  ScratchModel m("arch");
  auto j = m.config();
  j["model_type"] = "frobnicator";
  m.write_config(j);
  std::string e = error_of([&] { load_model(m.dir.string()); });
  EXPECT_NE(e.find("frobnicator"), std::string::npos) << e;
  EXPECT_NE(e.find("qwen3"), std::string::npos) << e;
  EXPECT_NE(e.find("gemma3_text"), std::string::npos) << e;
}

TEST(ModelErrors, MissingTensorNamesIt) {
  ScratchModel m("missing");
  m.edit_weights([](auto& t) {
    std::erase_if(t, [](const auto& p) { return p.first == "model.layers.1.mlp.down_proj.weight"; });
  });
  std::string e = error_of([&] { load_model(m.dir.string()); });
  EXPECT_NE(e.find("model.layers.1.mlp.down_proj.weight"), std::string::npos) << e;
}

TEST(ModelErrors, WrongShapeNamesTensorAndSizes) {
  ScratchModel m("shape");
  m.edit_weights([](auto& t) {
    for (auto& [n, x] : t)
      if (n == "model.layers.0.self_attn.q_proj.weight") x = x.slice(0, 0, 32).clone();
  });
  std::string e = error_of([&] { load_model(m.dir.string()); });
  EXPECT_NE(e.find("model.layers.0.self_attn.q_proj"), std::string::npos) << e;
  EXPECT_NE(e.find("32"), std::string::npos) << e;
}

TEST(ModelErrors, QuantizedTensorWithoutQuantizationConfig) {
  ScratchModel m("qcfg");
  m.edit_weights([](auto& t) {
    t.emplace_back("model.layers.0.mlp.up_proj.scales", Tensor::zeros({128, 1}, DType::f16));
  });
  std::string e = error_of([&] { load_model(m.dir.string()); });
  EXPECT_NE(e.find("quantization"), std::string::npos) << e;
}

TEST(ModelErrors, BadTokenIdsAndContextOverflow) {
  auto model = load_model(kLlama.string());
  Generator gen(*model, 8);
  EXPECT_NE(error_of([&] { gen.prefill({1, 2, 512}); }).find("512"), std::string::npos);
  EXPECT_NE(error_of([&] { gen.prefill({1, -3}); }).find("-3"), std::string::npos);
  EXPECT_NE(error_of([&] { gen.prefill({1, 2, 3, 4, 5, 6, 7, 8, 9}); }).find("context"), std::string::npos);
  // The generator is still usable after the errors.
  EXPECT_EQ(gen.prefill({1, 2, 3}).dim(0), 1);
}

}  // namespace
}  // namespace mlxcel

namespace mlxcel {
namespace {

// A step that only advances a prompt chunk asks for no logits.
TEST(ModelForward, ZeroLogitRowsReturnsEmptyLogits) {
  auto model = load_model(kLlama.string());
  KvCache cache = model->make_cache(2, 16);
  Batch b;
  b.token_ids = Tensor::from_i32({3}, {1, 2, 3});
  b.positions = Tensor::from_i32({3}, {0, 1, 2});
  b.max_position = 2;
  b.attn.q_start = Tensor::from_i32({2}, {0, 3});
  b.attn.kv_len = Tensor::from_i32({1}, {3});
  b.attn.block_table = Tensor::from_i32({1, 2}, {0, 1});
  b.attn.slot_mapping = Tensor::from_i32({3}, {0, 1, 2});
  b.attn.block_size = 16;
  b.logit_rows = Tensor::from_i32({0}, {});
  Tensor logits = model->forward(b, cache);
  EXPECT_EQ(logits.shape(), (Shape{0, 512}));
}

}  // namespace
}  // namespace mlxcel
