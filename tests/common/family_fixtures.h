// The family fixtures under tests/fixtures/<family>/ (tools/fixtures/make_fixtures.py):
// which families exist, their transformers reference (prompts, greedy tokens, logits at
// every position) and the relative error used to compare logits. Shared by the model,
// engine and GGUF fixture tests (header-only; needs MLXCEL_SOURCE_DIR and GoogleTest).
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "loader/config.h"
#include "loader/weights.h"
#include "models/convert.h"

namespace mlxcel::testing_fixtures {

inline std::filesystem::path fixtures_dir() { return std::filesystem::path(MLXCEL_SOURCE_DIR) / "tests" / "fixtures"; }

// Every folder with a config.json and a reference.json, sorted.
inline std::vector<std::string> families() {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(fixtures_dir()))
    if (std::filesystem::exists(e.path() / "reference.json") && std::filesystem::exists(e.path() / "config.json"))
      out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

struct Reference {
  std::vector<std::vector<int>> prompts, greedy;
  std::vector<std::vector<float>> logits;  // per prompt, [len * vocab]
};

// <stem>.json (prompts, greedy) and <stem>.safetensors (logits_<p>) of a fixture folder.
inline Reference load_reference(const std::filesystem::path& dir, const std::string& stem = "reference") {
  Reference r;
  std::ifstream in(dir / (stem + ".json"));
  auto j = nlohmann::json::parse(in);
  r.prompts = j.at("prompts").get<std::vector<std::vector<int>>>();
  r.greedy = j.at("greedy").get<std::vector<std::vector<int>>>();
  WeightMap w = load_checkpoint_weights((dir / (stem + ".safetensors")).string());
  for (size_t p = 0; p < r.prompts.size(); ++p) r.logits.push_back(w.get("logits_" + std::to_string(p)).to_f32_vector());
  return r;
}

// A family's MLX q<bits> g64 copy, made by mlxcel's quantizer from the fp32 weights, with
// its config and the stem of the transformers reference computed from the dequantized
// weights ("reference_q4g64").
struct QuantizedFixture {
  ModelConfig config;
  WeightMap weights;
  std::string stem;
};
inline QuantizedFixture quantized_fixture(const std::string& family, int bits) {
  const std::filesystem::path dir = fixtures_dir() / family;
  QuantizedFixture q;
  q.stem = "reference_q" + std::to_string(bits) + "g64";
  q.config = load_model_config((dir / "config.json").string());
  QuantSpec spec;
  spec.bits = bits;
  spec.group_size = 64;
  q.config.quantization = QuantConfig{spec, {}};
  q.weights = quantize_weights(load_checkpoint_weights(dir.string()), spec, DType::f32);
  return q;
}

// max |a - b| / max |b|
inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - b[i]));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return num / std::max(den, 1e-30);
}

}  // namespace mlxcel::testing_fixtures
