// Round trips of every family fixture: safetensors -> our GGUF writer (f16, q8_0, q4_0,
// q4_1, q5_0, q5_1)
// -> our loader -> logits against the transformers reference (tests/fixtures/<family>/
// reference.json/.safetensors), within the format's tolerance; once with the embedded
// config.json and once from the llama.cpp metadata keys alone.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "backends/cpu/gguf_quants.h"
#include "base/error.h"
#include "base/half.h"
#include "loader/gguf.h"
#include "loader/gguf_model.h"
#include "loader/gguf_writer.h"
#include "loader/weights.h"
#include "models/memory.h"
#include "models/model.h"
#include "ops/ops.h"
#include "ops/quant.h"
#include "../common/family_fixtures.h"

namespace mlxcel {
namespace {

namespace fs = std::filesystem;
using namespace testing_fixtures;

fs::path tmp_dir() {
  fs::path d = fs::temp_directory_path() / ("mlxcel_gguf_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

// Logits at every position of one prompt (one sequence, consecutive cache blocks).
Tensor prefill(Model& model, const std::vector<int>& prompt) {
  const int T = int(prompt.size()), bs = 16, nb = (T + bs - 1) / bs;
  KvCache cache = model.make_cache(nb, bs);
  std::vector<int32_t> ids(prompt.begin(), prompt.end()), pos, slots, rows, table;
  for (int i = 0; i < T; ++i) pos.push_back(i), slots.push_back(i), rows.push_back(i);
  for (int b = 0; b < nb; ++b) table.push_back(b);
  Batch b;
  b.token_ids = Tensor::from_i32({T}, ids);
  b.positions = Tensor::from_i32({T}, pos);
  b.max_position = T - 1;
  b.attn.q_start = Tensor::from_i32({2}, {0, T});
  b.attn.kv_len = Tensor::from_i32({1}, {T});
  b.attn.block_table = Tensor::from_i32({1, nb}, table);
  b.attn.slot_mapping = Tensor::from_i32({T}, slots);
  b.attn.block_size = bs;
  b.logit_rows = Tensor::from_i32({T}, rows);
  return model.forward(b, cache);
}

double model_err(Model& model, const Reference& ref) {
  double worst = 0;
  for (size_t p = 0; p < ref.prompts.size(); ++p) {
    Tensor logits = prefill(model, ref.prompts[p]);
    worst = std::max(worst, rel_err(logits.to_f32_vector(), ref.logits[p]));
  }
  return worst;
}

struct Case {
  GgufQuant quant;
  const char* name;
  double tol;         // dequantized GGUF model vs the fp32 transformers reference
  double packed_tol;  // packed kernels vs the dequantized GGUF model
};
// NOTE: errors are max |diff| / max |ref| over all logits of the random-weight fixtures
// (hidden size 64), which amplify weight noise: f32 checks the structure (names, Q/K
// permutation, Gemma norms, config) tightly; f16 and the block formats are bounded against
// the fp32 reference, and the packed kernels (which also quantize activations to 8 bits,
// as ggml does) against the same weights dequantized. (gemma2's soft-capped fixture
// amplifies the activations' 8-bit noise most: packed vs dequantized q4_0 0.124, q4_1
// 0.117, q5_0 0.151, q5_1 0.110; every other family 0.006-0.037.)
const Case kCases[] = {{GgufQuant::f32, "f32", 1e-4, 1e-6}, {GgufQuant::f16, "f16", 1e-2, 1e-6},
                       {GgufQuant::q8_0, "q8_0", 0.2, 0.15}, {GgufQuant::q4_0, "q4_0", 1.5, 0.15},
                       {GgufQuant::q4_1, "q4_1", 1.5, 0.2}, {GgufQuant::q5_0, "q5_0", 1.5, 0.2},
                       {GgufQuant::q5_1, "q5_1", 1.5, 0.2}};

std::vector<std::vector<float>> all_logits(Model& model, const Reference& ref) {
  std::vector<std::vector<float>> out;
  for (const auto& p : ref.prompts) out.push_back(prefill(model, p).to_f32_vector());
  return out;
}

class GgufFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufFamily, RoundTripMatchesReference) {
  const fs::path dir = fixtures_dir() / GetParam();
  const Reference ref = load_reference(dir);
  const fs::path tmp = tmp_dir();
  for (const Case& c : kCases) {
    const fs::path out = tmp / (GetParam() + "-" + c.name + ".gguf");
    GgufConvertOptions opts;
    opts.quant = c.quant;
    convert_to_gguf(dir.string(), out.string(), opts);
    std::vector<std::vector<float>> deq, packed;
    for (bool keep_packed : {false, true}) {
      GgufLoadOptions lo;
      lo.keep_packed = keep_packed;
      lo.dequant_dtype = DType::f32;
      GgufCheckpoint ck = load_gguf_checkpoint(out.string(), lo);
      auto model = build_model(ck.config, ck.weights);
      (keep_packed ? packed : deq) = all_logits(*model, ref);
    }
    double err = 0, perr = 0;
    for (size_t p = 0; p < ref.prompts.size(); ++p) {
      err = std::max(err, rel_err(deq[p], ref.logits[p]));
      perr = std::max(perr, rel_err(packed[p], deq[p]));
    }
    EXPECT_LE(err, c.tol) << GetParam() << " " << c.name << " vs reference";
    EXPECT_LE(perr, c.packed_tol) << GetParam() << " " << c.name << " packed vs dequantized";
    std::fprintf(stderr, "[gguf] %-12s %-5s rel err vs reference %.2e, packed vs dequantized %.2e\n",
                 GetParam().c_str(), c.name, err, perr);
  }
  // The CLI path: load_model on the file, and on a folder holding only that file.
  auto m = load_model((tmp / (GetParam() + "-f32.gguf")).string());
  EXPECT_LE(model_err(*m, ref), 1e-4);
  const fs::path only = tmp / "only";
  fs::create_directories(only);
  fs::copy_file(tmp / (GetParam() + "-q8_0.gguf"), only / "model-q8_0.gguf");
  EXPECT_EQ(gguf_model_file(only.string()), (only / "model-q8_0.gguf").string());
  EXPECT_NO_THROW(load_model(only.string()));
  fs::copy_file(tmp / (GetParam() + "-q4_0.gguf"), only / "model-q4_0.gguf");
  EXPECT_THROW(load_model(only.string()), Error);  // two files: which one?
  EXPECT_EQ(gguf_model_file(dir.string()), "");   // a safetensors checkpoint
  fs::remove_all(tmp);
}

// Without mlxcel.hf_config the config comes from llama.cpp's keys (and rope tensors).
TEST_P(GgufFamily, ConfigFromLlamaCppKeysAlone) {
  const fs::path dir = fixtures_dir() / GetParam();
  const fs::path tmp = tmp_dir();
  const fs::path out = tmp / (GetParam() + ".gguf");
  GgufConvertOptions opts;
  opts.quant = GgufQuant::f32;
  opts.embed_hf_config = false;
  convert_to_gguf(dir.string(), out.string(), opts);
  GgufLoadOptions lo;
  lo.use_embedded_config = false;
  GgufCheckpoint ck = load_gguf_checkpoint(out.string(), lo);
  auto model = build_model(ck.config, ck.weights);
  const double err = model_err(*model, load_reference(dir));
  std::fprintf(stderr, "[gguf] %-12s keys-only config rel err %.2e\n", GetParam().c_str(), err);
  // NOTE: GGUF has no key for query_pre_attn_scalar; llama.cpp (and so mlxcel, reading
  // a GGUF without mlxcel.hf_config) uses head_dim, which the gemma2/gemma3 fixtures
  // deliberately differ from.
  // smollm3's fixture drops RoPE on layer 2 (no_rope_layers [1, 1, 0, 1]); llama.cpp only
  // knows "every 4th layer".
  if (GetParam() == "gemma2" || GetParam() == "gemma3_text" || GetParam() == "smollm3") EXPECT_GT(err, 1e-4);
  else EXPECT_LE(err, 1e-4) << GetParam();
  fs::remove_all(tmp);
}

INSTANTIATE_TEST_SUITE_P(All, GgufFamily, ::testing::ValuesIn(families()), [](const auto& info) { return info.param; });

// Random but valid blocks of a format that starts with its f16 scale d (the 32-value ones,
// Q4_K) for `rows` rows of K values: d in [0.002, 0.02); Q4_1 / Q5_1 then hold an f16 min,
// set so that the block is centred on 0 like trained weights, Q4_K a dmin of d / 4.
std::vector<uint8_t> random_blocks(uint32_t type, int64_t rows, int64_t K, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.002f, 0.02f);
  const size_t bb = gguf::block_bytes(type), blocks = size_t(rows * K) / gguf::block_elems(type);
  std::vector<uint8_t> out(bb * blocks);
  for (size_t b = 0; b < blocks; ++b) {
    uint8_t* blk = out.data() + b * bb;
    for (size_t i = 0; i < bb; ++i) blk[i] = uint8_t(byte(rng));
    const float dv = scale(rng);
    const float mv = type == gguf::kQ4_1 ? -7.5f * dv : type == gguf::kQ5_1 ? -15.5f * dv : dv / 4;
    const uint16_t d = f32_to_f16(dv), m = f32_to_f16(mv);
    std::memcpy(blk, &d, 2);
    if (type == gguf::kQ4_1 || type == gguf::kQ5_1 || type == gguf::kQ4_K) std::memcpy(blk + 2, &m, 2);
  }
  return out;
}

// A copy of GGUF file `src` at `dst` with every 2-D blk.* tensor whose rows are whole
// 32-value blocks replaced by random but valid blocks of `types` in turn (f16 scales in
// a sane range, random quants): the metadata and the other tensors as they are.
void write_with_block_formats(const std::string& src, const std::string& dst, const std::vector<uint32_t>& types) {
  const GgufFile f = GgufFile::open(src);
  GgufWriter w;
  for (const std::string& key : f.keys_in_order()) {
    if (key == "general.alignment") continue;
    const GgufValue& v = f.at(key);
    switch (v.type()) {
      case GgufType::string: w.add_string(key, v.as_string()); break;
      case GgufType::float32: case GgufType::float64: w.add_f32(key, float(v.as_float())); break;
      case GgufType::boolean: w.add_bool(key, v.as_bool()); break;
      case GgufType::uint64: w.add_u64(key, v.as_uint()); break;
      case GgufType::int8: case GgufType::int16: case GgufType::int32: case GgufType::int64:
        w.add_i32(key, int32_t(v.as_int()));
        break;
      case GgufType::array: {
        const GgufArray& a = v.as_array();
        if (a.elem_type == GgufType::string) {
          w.add_string_array(key, a.strings);
        } else if (a.elem_type == GgufType::float32 || a.elem_type == GgufType::float64) {
          w.add_f32_array(key, std::vector<float>(a.floats.begin(), a.floats.end()));
        } else if (a.elem_type == GgufType::boolean) {
          std::vector<bool> bs;
          for (int64_t x : a.ints) bs.push_back(x != 0);
          w.add_bool_array(key, bs);
        } else {
          w.add_i32_array(key, std::vector<int32_t>(a.ints.begin(), a.ints.end()));
        }
        break;
      }
      default: w.add_u32(key, uint32_t(v.as_uint())); break;
    }
  }
  std::mt19937 rng(7);
  size_t next = 0;
  for (const GgufTensorInfo& t : f.tensors()) {
    const uint8_t* data = f.tensor_data(t);
    const bool replace = t.shape.size() == 2 && t.name.rfind("blk.", 0) == 0 && t.shape[0] % 32 == 0;
    if (!replace) {
      w.add_tensor(t.name, t.shape, t.ggml_type, std::string(reinterpret_cast<const char*>(data), t.n_bytes));
      continue;
    }
    const uint32_t type = types[next++ % types.size()];
    const std::vector<uint8_t> bytes = random_blocks(type, t.shape[1], t.shape[0], rng);
    w.add_tensor(t.name, t.shape, type, std::string(bytes.begin(), bytes.end()));
  }
  w.write(dst);
}

// The llama fixture as GGUF at `out`, its blk.* matrices random blocks of `types`
// (write_with_block_formats; an f32 conversion next to it is the base).
void llama_with_blocks(const fs::path& out, const std::vector<uint32_t>& types) {
  GgufConvertOptions opts;
  opts.quant = GgufQuant::f32;
  const fs::path base = out.parent_path() / "base.gguf";
  convert_to_gguf((fixtures_dir() / "llama").string(), base.string(), opts);
  write_with_block_formats(base.string(), out.string(), types);
}

// `path` loaded twice, dequantized to f32 and with `opts` (keep_packed on): every type
// marker of the second load must give one of `formats`; inspect(ck) sees that checkpoint. The
// logits of both on ref's prompts, and the second load's marker count.
struct TwoLoads {
  std::vector<std::vector<float>> deq, packed;
  int markers = 0;
};
TwoLoads load_twice(const fs::path& path, GgufLoadOptions opts, const std::vector<QuantFormat>& formats, const Reference& ref,
                    const std::function<void(const GgufCheckpoint&)>& inspect = {}) {
  TwoLoads out;
  for (bool packed : {false, true}) {
    GgufLoadOptions lo = packed ? opts : GgufLoadOptions{};
    lo.keep_packed = packed;
    lo.dequant_dtype = DType::f32;
    GgufCheckpoint ck = load_gguf_checkpoint(path.string(), lo);
    int markers = 0;
    for (const std::string& name : ck.weights.names()) {
      if (!is_gguf_type_marker(name)) continue;
      ++markers;
      const QuantFormat f = packed_gguf_spec(ck.weights.get(name), name).format;
      EXPECT_NE(std::find(formats.begin(), formats.end(), f), formats.end()) << name;
    }
    if (packed) {
      out.markers = markers;
      if (inspect) inspect(ck);
    } else {
      EXPECT_EQ(markers, 0);
    }
    auto model = build_model(ck.config, ck.weights);
    (packed ? out.packed : out.deq) = all_logits(*model, ref);
  }
  return out;
}

// Q4_1, Q5_0 and Q5_1 matrices (the llama fixture's, random blocks): on the CPU they stay
// packed as in the file (their markers, the file's rows) and the logits track the same file
// dequantized to f32 within the packed kernels' tolerance (kCases). With affine_4bit (what
// load_model asks for a device) Q4_1 becomes MLX affine weights (GgufAffine4 below) and
// Q5_0 / Q5_1, which have no MLX form, are requantized to Q8_0: the Q8_0 marker, each value
// within Q8_0's rounding of the source's, and the logits within the same tolerance.
TEST(GgufBlockFormats, KeptPackedOnTheCpuRequantizedForDevices) {
  const fs::path dir = fixtures_dir() / "llama";
  const Reference ref = load_reference(dir);
  const fs::path tmp = tmp_dir();
  auto perr_of = [&](const TwoLoads& two) {
    double perr = 0;
    for (size_t p = 0; p < ref.prompts.size(); ++p) perr = std::max(perr, rel_err(two.packed[p], two.deq[p]));
    return perr;
  };
  llama_with_blocks(tmp / "blocks.gguf", {gguf::kQ4_1, gguf::kQ5_0, gguf::kQ5_1});
  const TwoLoads cpu = load_twice(tmp / "blocks.gguf", GgufLoadOptions{},
                                  {QuantFormat::gguf_q4_1, QuantFormat::gguf_q5_0, QuantFormat::gguf_q5_1}, ref,
                                  [&](const GgufCheckpoint& ck) {
                                    const GgufFile src = GgufFile::open((tmp / "blocks.gguf").string());
                                    for (const GgufTensorInfo& t : src.tensors())
                                      if (t.name == "blk.0.ffn_down.weight")
                                        EXPECT_EQ(ck.weights.get("model.layers.0.mlp.down_proj.weight").nbytes(), t.n_bytes);
                                  });
  EXPECT_EQ(cpu.markers, 14);  // 2 layers x 7 matrices of the llama fixture
  EXPECT_LE(perr_of(cpu), 0.15);
  std::fprintf(stderr, "[gguf] Q4_1/Q5_0/Q5_1 packed vs dequantized %.2e\n", perr_of(cpu));

  llama_with_blocks(tmp / "q5.gguf", {gguf::kQ5_0, gguf::kQ5_1});
  auto check_values = [&](const GgufCheckpoint& ck) {
    // Each requantized block is within Q8_0's rounding (amax / 254, and f16's scale)
    // of the source block, value by value.
    const GgufFile src = GgufFile::open((tmp / "q5.gguf").string());
    for (const GgufTensorInfo& t : src.tensors()) {
      // (not attn_q/attn_k: the loader undoes llama.cpp's row permutation there)
      if (t.name != "blk.0.ffn_down.weight" && t.name != "blk.1.ffn_gate.weight") continue;
      const Tensor& q = ck.weights.get(t.name == "blk.0.ffn_down.weight" ? "model.layers.0.mlp.down_proj.weight"
                                                                          : "model.layers.1.mlp.gate_proj.weight");
      const int64_t K = t.shape[0], rows = t.shape[1];
      std::vector<float> want(static_cast<size_t>(K)), got(static_cast<size_t>(K));
      const size_t rb = gguf::row_bytes(t.ggml_type, K), qrb = gguf::row_bytes(gguf::kQ8_0, K);
      ASSERT_EQ(q.shape()[1], int64_t(qrb)) << t.name;
      for (int64_t r = 0; r < rows; ++r) {
        gguf::dequantize_row(t.ggml_type, src.tensor_data(t) + size_t(r) * rb, want.data(), K);
        gguf::dequantize_row(gguf::kQ8_0, q.data<uint8_t>() + size_t(r) * qrb, got.data(), K);
        for (int64_t b0 = 0; b0 < K; b0 += 32) {
          float amax = 0;
          for (int64_t i = b0; i < b0 + 32; ++i) amax = std::max(amax, std::fabs(want[size_t(i)]));
          for (int64_t i = b0; i < b0 + 32; ++i)
            ASSERT_LE(std::fabs(got[size_t(i)] - want[size_t(i)]), amax / 254 * 1.01f + amax * 1e-3f)
                << t.name << " row " << r << " value " << i;
        }
      }
    }
  };
  GgufLoadOptions dev;
  dev.affine_4bit = true;
  const TwoLoads q8 = load_twice(tmp / "q5.gguf", dev, {QuantFormat::gguf_q8_0}, ref, check_values);
  EXPECT_EQ(q8.markers, 14);
  EXPECT_LE(perr_of(q8), 0.15);
  std::fprintf(stderr, "[gguf] Q5_0/Q5_1 requantized to Q8_0 (affine_4bit): packed vs dequantized %.2e\n", perr_of(q8));
  fs::remove_all(tmp);
}

// Q4_1 and Q4_K rows as MLX affine 4-bit groups of 32 (gguf::affine4_row, what CUDA loads
// get): the MLX dequantization gives exactly ggml's values, and a product on them matches
// one on the dequantized matrix.
TEST(GgufAffine4, RowsAreMlxAffineOfTheSameValues) {
  std::mt19937 rng(11);
  for (uint32_t type : {uint32_t(gguf::kQ4_1), uint32_t(gguf::kQ4_K)}) {
    const int64_t rows = 5, K = 512, G = K / 32;
    const std::vector<uint8_t> src = random_blocks(type, rows, K, rng);
    const size_t rb = gguf::row_bytes(type, K);
    QuantizedWeight q;
    q.spec = {QuantFormat::mlx_affine, 4, 32};
    q.packed = Tensor::empty({rows, K / 8}, DType::u32);
    q.scales = Tensor::empty({rows, G}, DType::f32);
    q.biases = Tensor::empty({rows, G}, DType::f32);
    Tensor want = Tensor::empty({rows, K}, DType::f32);
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_TRUE(gguf::affine4_row(type, src.data() + size_t(r) * rb, K, q.packed.data<uint32_t>() + r * K / 8,
                                    q.scales.data<float>() + r * G, q.biases.data<float>() + r * G));
      gguf::dequantize_row(type, src.data() + size_t(r) * rb, want.data<float>() + r * K, K);
    }
    ops::validate_quantized(q, "affine4");
    const Tensor got = ops::dequantize(q);
    ASSERT_EQ(got.shape(), want.shape());
    for (int64_t i = 0; i < rows * K; ++i)
      ASSERT_EQ(got.data<float>()[i], want.data<float>()[i]) << "type " << type << " value " << i;
    std::vector<float> xs(size_t(3 * K));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (float& v : xs) v = u(rng);
    const Tensor x = Tensor::from_f32({3, K}, xs);
    EXPECT_LT(rel_err(ops::qlinear(x, q).to_f32_vector(), ops::linear(x, want).to_f32_vector()), 1e-3) << type;
  }
  uint32_t w[1];
  float s[1], b[1];
  const uint8_t zeros[34] = {};
  EXPECT_FALSE(gguf::affine4_row(gguf::kQ8_0, zeros, 32, w, s, b));
}

// With affine_4bit (load_model sets it for CUDA devices), Q4_1 matrices load as MLX affine
// 4-bit weights (marker and scales present) and the model's logits follow the same file
// dequantized to f32.
TEST(GgufAffine4, Q4_1FilesLoadAsMlxAffine) {
  const fs::path dir = fixtures_dir() / "llama";
  const Reference ref = load_reference(dir);
  const fs::path tmp = tmp_dir();
  llama_with_blocks(tmp / "q4_1.gguf", {gguf::kQ4_1});
  GgufLoadOptions lo;
  lo.affine_4bit = true;
  const TwoLoads two = load_twice(tmp / "q4_1.gguf", lo, {QuantFormat::gguf_q4_1}, ref, [](const GgufCheckpoint& ck) {
    for (const std::string& name : ck.weights.names()) {
      if (!is_gguf_type_marker(name)) continue;
      const std::string prefix = name.substr(0, name.size() - std::string(kGgufTypeSuffix).size());
      EXPECT_EQ(ck.weights.get(prefix + ".scales").dtype(), DType::f32) << name;
      EXPECT_EQ(ck.weights.get(prefix + ".weight").dtype(), DType::u32) << name;
    }
  });
  EXPECT_EQ(two.markers, 14);
  const auto& deq = two.deq;
  const auto& affine = two.packed;
  double err = 0;
  for (size_t p = 0; p < ref.prompts.size(); ++p) err = std::max(err, rel_err(affine[p], deq[p]));
  EXPECT_LE(err, 1e-4);
  std::fprintf(stderr, "[gguf] Q4_1 as MLX affine vs dequantized %.2e\n", err);
  fs::remove_all(tmp);
}

// Random but valid blocks for a [N, K] matrix (K values a row). Q4_K and the 32-value
// formats as random_blocks; Q5_K Q4_K's d / dmin / scales with random high bits; Q6_K and Q3_K with
// sub-block scales of one sign and size, as trained ones are (random signed ones make
// outlier channels whose int8 rounding moves single positions' logits by 10-25%): Q6_K's
// int8 scales 20..40, Q3_K's 6-bit ones 48..63 (16..31 once less 32), d in [0.0005, 0.005);
// Q2_K's (4-bit scales and mins, unsigned) random, d likewise, dmin half of that.
std::string block_matrix(uint32_t type, int64_t K, int64_t N, std::mt19937& rng) {
  if (gguf::block_elems(type) == 32) {
    std::vector<uint8_t> b = random_blocks(type, N, K, rng);
    return std::string(b.begin(), b.end());
  }
  if (type == gguf::kQ4_K || type == gguf::kQ5_K) {
    std::vector<uint8_t> q4 = random_blocks(gguf::kQ4_K, N, K, rng);
    if (type == gguf::kQ4_K) return std::string(q4.begin(), q4.end());
    std::string b(size_t(N * K / 256 * 176), '\0');
    for (size_t blk = 0; blk < b.size() / 176; ++blk) {
      std::memcpy(b.data() + blk * 176, q4.data() + blk * 144, 16);
      for (int i = 0; i < 32; ++i) b[blk * 176 + 16 + size_t(i)] = char(rng());
      std::memcpy(b.data() + blk * 176 + 48, q4.data() + blk * 144 + 16, 128);
    }
    return b;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.002f, 0.02f);
  const size_t bb = gguf::block_bytes(type);
  std::string b(size_t(N * K / 256) * bb, '\0');
  for (size_t i = 0; i < b.size(); ++i) b[i] = char(byte(rng));
  std::uniform_int_distribution<int> sc(20, 40);
  for (size_t blk = 0; blk < b.size() / bb; ++blk) {
    char* p = b.data() + blk * bb;
    if (type == gguf::kQ6_K)
      for (int j = 0; j < 16; ++j) p[192 + j] = char(sc(rng));
    else if (type == gguf::kQ3_K)  // the scales' high pairs (bytes 8..11 of its 12) all 3
      std::memset(p + 96 + 8, 0xFF, 4);
    const uint16_t d = f32_to_f16(scale(rng) / 4);
    std::memcpy(p + bb - (type == gguf::kQ2_K ? 4 : 2), &d, 2);
    if (type == gguf::kQ2_K) {
      const uint16_t dmin = f32_to_f16(scale(rng) / 8);
      std::memcpy(p + bb - 2, &dmin, 2);
    }
  }
  return b;
}

// The ggml types of a Qwen3-shaped test file's matrices.
struct BlockMix {
  uint32_t embd, q, k, v, o, gate, up, down;
};

// A Qwen3-shaped file (hidden 256, ffn 512: whole 256-value blocks) of block-format matrices
// (block_matrix) laid out as `mix`, with an untied f32 LM head: int8 activations against a
// random K-quant table as LM head move these logits by 8-17% (each product is within 0.7%
// of its largest output; the packed products are checked one by one in
// tests/gguf/gguf_quants_test.cpp). On the CPU the matrices stay packed (`formats`,
// registered for x8 copies), and the logits of a 3-token prompt (decode kernels) and a
// 20-token one (int8 panel GEMM; the embedding's rows gathered from its blocks) match those
// of the same file dequantized to f32 within the activations' int8 rounding. The memory
// estimate counts the packed bytes and the x8 copies.
void check_stays_packed(const BlockMix& mix, const std::vector<QuantFormat>& formats, const char* label,
                        double tol = 1e-2) {
  const fs::path tmp = tmp_dir();
  const int64_t H = 256, F = 512, V = 300, D = 64, heads = 4, kv = 2, L = 2;
  GgufWriter w;
  w.add_string("general.architecture", "qwen3");
  w.add_u32("qwen3.embedding_length", uint32_t(H));
  w.add_u32("qwen3.feed_forward_length", uint32_t(F));
  w.add_u32("qwen3.block_count", uint32_t(L));
  w.add_u32("qwen3.attention.head_count", uint32_t(heads));
  w.add_u32("qwen3.attention.head_count_kv", uint32_t(kv));
  w.add_u32("qwen3.attention.key_length", uint32_t(D));
  w.add_u32("qwen3.context_length", 512);
  w.add_f32("qwen3.attention.layer_norm_rms_epsilon", 1e-6f);
  w.add_f32("qwen3.rope.freq_base", 1000000.0f);
  w.add_string_array("tokenizer.ggml.tokens", std::vector<std::string>(size_t(V), "x"));
  w.add_u32("tokenizer.ggml.eos_token_id", 1);
  std::mt19937 rng(43);
  std::normal_distribution<float> nd(0.0f, 0.5f);
  auto f32s = [&](int64_t n, float mean) {
    std::string b(size_t(n) * 4, '\0');
    for (int64_t i = 0; i < n; ++i) {
      const float v = mean + (mean != 0.0f ? 0.1f : 1.0f) * nd(rng);
      std::memcpy(b.data() + i * 4, &v, 4);
    }
    return b;
  };
  auto add = [&](const std::string& name, uint32_t type, int64_t K, int64_t N) {
    w.add_tensor(name, {K, N}, type, block_matrix(type, K, N, rng));
  };
  add("token_embd.weight", mix.embd, H, V);
  w.add_tensor("output.weight", {H, V}, gguf::kF32, f32s(H * V, 0.0f));
  w.add_tensor("output_norm.weight", {H}, gguf::kF32, f32s(H, 1.0f));
  for (int l = 0; l < L; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    w.add_tensor(p + "attn_norm.weight", {H}, gguf::kF32, f32s(H, 1.0f));
    w.add_tensor(p + "ffn_norm.weight", {H}, gguf::kF32, f32s(H, 1.0f));
    w.add_tensor(p + "attn_q_norm.weight", {D}, gguf::kF32, f32s(D, 1.0f));
    w.add_tensor(p + "attn_k_norm.weight", {D}, gguf::kF32, f32s(D, 1.0f));
    add(p + "attn_q.weight", mix.q, H, heads * D);
    add(p + "attn_k.weight", mix.k, H, kv * D);
    add(p + "attn_v.weight", mix.v, H, kv * D);
    add(p + "attn_output.weight", mix.o, heads * D, H);
    add(p + "ffn_gate.weight", mix.gate, H, F);
    add(p + "ffn_up.weight", mix.up, H, F);
    add(p + "ffn_down.weight", mix.down, F, H);
  }
  const fs::path file = tmp / "blocks.gguf";
  w.write(file.string());

  Reference prompts;
  prompts.prompts = {{5, 17, 250}, {}};
  for (int i = 0; i < 20; ++i) prompts.prompts[1].push_back((i * 37 + 11) % int(V));
  const size_t x8_before = gguf::repacked_bytes_in_use();
  const TwoLoads two = load_twice(file, GgufLoadOptions{}, formats, prompts, [&](const GgufCheckpoint& ck) {
    // the file's rows
    EXPECT_EQ(ck.weights.get("model.layers.0.mlp.down_proj.weight").shape()[1], int64_t(gguf::row_bytes(mix.down, F)));
    EXPECT_EQ(ck.weights.get("model.layers.0.mlp.up_proj.weight").shape()[1], int64_t(gguf::row_bytes(mix.up, H)));
  });
  EXPECT_EQ(two.markers, int(L * 7 + 1));
  EXPECT_EQ(gguf::repacked_bytes_in_use(), x8_before);  // the copies went with the weights
  for (size_t p = 0; p < prompts.prompts.size(); ++p) {
    const double err = rel_err(two.packed[p], two.deq[p]);
    EXPECT_LE(err, tol) << label << " prompt " << p;
    std::fprintf(stderr, "[gguf] %s packed vs dequantized, %zu-token prompt: %.2e\n", label,
                 prompts.prompts[p].size(), err);
  }
  int64_t est = 0;
  const GgufFile f = GgufFile::open(file.string());
  int64_t x8 = 0;
  for (const GgufTensorInfo& t : f.tensors())
    if (t.ggml_type != gguf::kF32) {
      EXPECT_EQ(gguf_loaded_bytes(t, false, false), int64_t(t.n_bytes)) << t.name;
      est += gguf_loaded_bytes(t, false) - int64_t(t.n_bytes);
      x8 += int64_t(gguf::x8_bytes(t.ggml_type, t.shape[1], t.shape[0]));
      const int64_t n = t.shape[0] * t.shape[1];  // device: MLX 4-bit g32 f32 scales, or Q8_0 as MLX 8-bit
      const bool affine4 = t.ggml_type == gguf::kQ4_K || t.ggml_type == gguf::kQ4_1;
      EXPECT_EQ(gguf_loaded_bytes(t, true), affine4 ? n / 2 + n / 32 * 8 : n + n / 32 * 4);
    }
  EXPECT_EQ(est, x8);
  fs::remove_all(tmp);
}

// Laid out like llama-quantize's Q4_K_M: Q4_K for q, k, o and up, Q6_K for v, down and the
// embedding, and Q5_K for gate (as Q5_K_M files hold it).
TEST(GgufKQuants, MatricesStayPackedOnTheCpu) {
  using namespace gguf;
  check_stays_packed({kQ6_K, kQ4_K, kQ4_K, kQ6_K, kQ4_K, kQ5_K, kQ4_K, kQ6_K},
                            {QuantFormat::gguf_q4_k, QuantFormat::gguf_q5_k, QuantFormat::gguf_q6_k}, "Q4_K / Q5_K / Q6_K");
}

// Like llama-quantize's Q3_K_M: Q3_K for q, k, gate, up and the embedding, Q4_K for o,
// Q5_K for v and down.
TEST(GgufKQuants, Q3KMatricesStayPackedOnTheCpu) {
  using namespace gguf;
  check_stays_packed({kQ3_K, kQ3_K, kQ3_K, kQ5_K, kQ4_K, kQ3_K, kQ3_K, kQ5_K},
                            {QuantFormat::gguf_q3_k, QuantFormat::gguf_q4_k, QuantFormat::gguf_q5_k}, "Q3_K_M");
}

// Like llama-quantize's Q2_K: Q2_K for q, k, gate, up and the embedding, Q3_K for v, o and
// down.
TEST(GgufKQuants, Q2KMatricesStayPackedOnTheCpu) {
  using namespace gguf;
  check_stays_packed({kQ2_K, kQ2_K, kQ2_K, kQ3_K, kQ3_K, kQ2_K, kQ2_K, kQ3_K},
                            {QuantFormat::gguf_q2_k, QuantFormat::gguf_q3_k}, "Q2_K");
}

// Q4_1, Q5_0 and Q5_1 throughout (the embedding Q5_1, q / k / up Q4_1, v / gate Q5_0, o /
// down Q5_1). The uniform random values of these blocks make a touchier model than the
// K-quant files: Q4_0's long-standing kernels on such a file with every matrix Q4_0 move
// its logits by 0.6-1.0e-2, these by 1.3e-2 (3 tokens) and 2.2e-2 (20): within 3e-2.
TEST(GgufBlockFormats, Q4_1Q5_0Q5_1MatricesStayPackedOnTheCpu) {
  using namespace gguf;
  check_stays_packed({kQ5_1, kQ4_1, kQ4_1, kQ5_0, kQ5_1, kQ5_0, kQ4_1, kQ5_1},
                     {QuantFormat::gguf_q4_1, QuantFormat::gguf_q5_0, QuantFormat::gguf_q5_1}, "Q4_1 / Q5_0 / Q5_1",
                     3e-2);
}

// `mlxcel inspect` on a GGUF file counts each tensor as it is once loaded: on the host (no
// x8 copies) and in the device form (Q4_1 as MLX affine, the rest transcoded) the counts
// equal the bytes of the loaded weights; the CPU adds an x8 copy of each product's weight.
TEST(GgufMemory, EstimateCountsTheLoadedForm) {
  const fs::path tmp = tmp_dir();
  llama_with_blocks(tmp / "mixed.gguf", {gguf::kQ4_0, gguf::kQ8_0, gguf::kQ4_1, gguf::kQ5_1});
  const GgufFile f = GgufFile::open((tmp / "mixed.gguf").string());
  int64_t host = 0, device = 0, cpu = 0, kept = 0;
  for (const GgufTensorInfo& t : f.tensors()) {
    if (t.name == "rope_freqs.weight") continue;  // folded into the config at load
    ++kept;
    host += gguf_loaded_bytes(t, false, false);
    device += gguf_loaded_bytes(t, true);
    cpu += gguf_loaded_bytes(t, false);
  }
  auto loaded_bytes = [](const WeightMap& w) {
    int64_t b = 0;
    for (const auto& [name, t] : w)
      if (!is_gguf_type_marker(name)) b += int64_t(t.nbytes());
    return b;
  };
  EXPECT_EQ(loaded_bytes(load_gguf_checkpoint((tmp / "mixed.gguf").string()).weights), host);
  GgufLoadOptions lo;
  lo.affine_4bit = true;
  WeightMap dev = load_gguf_checkpoint((tmp / "mixed.gguf").string(), lo).weights;
  transcode_gguf_blocks(dev);
  EXPECT_EQ(loaded_bytes(dev), device);
  EXPECT_GT(cpu, host);
  MemoryRequest req;
  req.device = "cpu";
  const MemoryEstimate e = estimate_memory((tmp / "mixed.gguf").string(), req);
  EXPECT_EQ(e.weight_bytes, cpu);  // the fixture has an output.weight: no embedding copy
  EXPECT_EQ(e.n_tensors, kept);
  EXPECT_NE(e.describe().find("as loaded for the device"), std::string::npos);
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace mlxcel
