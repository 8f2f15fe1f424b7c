#include "loader/gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "base/error.h"

namespace mlxcel {
namespace {

// Writes GGUF images byte by byte so each test can build exactly the file it needs.
class Writer {
 public:
  template <typename T>
  Writer& put(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    bytes.insert(bytes.end(), b, b + sizeof(T));
    return *this;
  }
  Writer& str(const std::string& s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  Writer& header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    return put<uint32_t>(0x46554747).put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  }
  void pad_to(size_t align) {
    while (bytes.size() % align) bytes.push_back(0);
  }
  std::vector<uint8_t> bytes;
};

std::vector<uint8_t> full_image() {
  Writer w;
  w.header(3, 2, 16);
  w.str("u8").put<uint32_t>(0).put<uint8_t>(200);
  w.str("i8").put<uint32_t>(1).put<int8_t>(-5);
  w.str("u16").put<uint32_t>(2).put<uint16_t>(60000);
  w.str("i16").put<uint32_t>(3).put<int16_t>(-30000);
  w.str("u32").put<uint32_t>(4).put<uint32_t>(4000000000u);
  w.str("i32").put<uint32_t>(5).put<int32_t>(-2000000000);
  w.str("f32").put<uint32_t>(6).put<float>(1.5f);
  w.str("bool").put<uint32_t>(7).put<uint8_t>(1);
  w.str("str").put<uint32_t>(8).str("héllo");
  w.str("u64").put<uint32_t>(10).put<uint64_t>(uint64_t{1} << 40);
  w.str("i64").put<uint32_t>(11).put<int64_t>(-(int64_t{1} << 40));
  w.str("f64").put<uint32_t>(12).put<double>(2.25);
  w.str("strs").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(3).str("a").str("").str("b c");
  w.str("floats").put<uint32_t>(9).put<uint32_t>(6).put<uint64_t>(2).put<float>(0.5f).put<float>(-1.f);
  w.str("nested").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(2);
  w.put<uint32_t>(5).put<uint64_t>(2).put<int32_t>(1).put<int32_t>(2);
  w.put<uint32_t>(8).put<uint64_t>(1).str("x");
  w.str("general.alignment").put<uint32_t>(4).put<uint32_t>(32);
  // Tensor infos: a 4x2 F32 and a 32-element Q8_0 row.
  w.str("a.weight").put<uint32_t>(2).put<uint64_t>(4).put<uint64_t>(2).put<uint32_t>(0).put<uint64_t>(0);
  w.str("b.weight").put<uint32_t>(1).put<uint64_t>(32).put<uint32_t>(8).put<uint64_t>(32);
  w.pad_to(32);
  for (int i = 0; i < 32 + 34; ++i) w.put<uint8_t>(static_cast<uint8_t>(i));
  return w.bytes;
}

TEST(Gguf, ReadsAllValueTypesAndTensors) {
  auto img = full_image();
  GgufFile f = GgufFile::parse(img.data(), img.size());
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.at("u8").as_int(), 200);
  EXPECT_EQ(f.at("i8").as_int(), -5);
  EXPECT_EQ(f.at("u16").as_int(), 60000);
  EXPECT_EQ(f.at("i16").as_int(), -30000);
  EXPECT_EQ(f.at("u32").as_uint(), 4000000000u);
  EXPECT_EQ(f.at("i32").as_int(), -2000000000);
  EXPECT_FLOAT_EQ(f.at("f32").as_float(), 1.5f);
  EXPECT_TRUE(f.at("bool").as_bool());
  EXPECT_EQ(f.get_string("str"), "héllo");
  EXPECT_EQ(f.at("u64").as_uint(), uint64_t{1} << 40);
  EXPECT_EQ(f.at("i64").as_int(), -(int64_t{1} << 40));
  EXPECT_DOUBLE_EQ(f.at("f64").as_float(), 2.25);
  const GgufArray& strs = f.at("strs").as_array();
  ASSERT_EQ(strs.size(), 3u);
  EXPECT_EQ(strs.strings[2], "b c");
  EXPECT_EQ(f.at("floats").as_array().floats[1], -1.0);
  const GgufArray& nested = f.at("nested").as_array();
  ASSERT_EQ(nested.arrays.size(), 2u);
  EXPECT_EQ(nested.arrays[0].as_array().ints[1], 2);
  EXPECT_EQ(nested.arrays[1].as_array().strings[0], "x");
  EXPECT_EQ(f.keys_in_order().front(), "u8");
  EXPECT_EQ(f.get_int("missing", 7), 7);
  EXPECT_THROW(f.at("missing"), Error);
  EXPECT_THROW(f.at("str").as_int(), Error);
  EXPECT_THROW(f.at("u8").as_string(), Error);

  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensorInfo& a = f.tensors()[0];
  EXPECT_EQ(a.name, "a.weight");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(a.n_bytes, 32u);
  const GgufTensorInfo& b = f.tensors()[1];
  EXPECT_EQ(b.n_bytes, 34u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  EXPECT_EQ(f.tensor_data(a)[1], 1);
  EXPECT_EQ(f.tensor_data(b)[0], 32);
}

TEST(Gguf, EveryTruncationThrowsCleanly) {
  auto img = full_image();
  for (size_t n = 0; n < img.size() - 1; ++n) {
    std::vector<uint8_t> cut(img.begin(), img.begin() + n);
    EXPECT_THROW(GgufFile::parse(cut.data(), cut.size()), Error) << "prefix " << n;
  }
}

TEST(Gguf, RandomCorruptionNeverCrashes) {
  auto img = full_image();
  uint32_t seed = 12345;
  for (int iter = 0; iter < 3000; ++iter) {
    auto bad = img;
    for (int k = 0; k < 3; ++k) {
      seed = seed * 1664525u + 1013904223u;
      size_t pos = (seed >> 8) % bad.size();
      seed = seed * 1664525u + 1013904223u;
      bad[pos] = static_cast<uint8_t>(seed >> 24);
    }
    try {
      GgufFile::parse(bad.data(), bad.size());
    } catch (const Error&) {
    }
  }
}

TEST(Gguf, RejectsBadHeaders) {
  Writer bad_magic;
  bad_magic.put<uint32_t>(0x12345678).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(0);
  EXPECT_THROW(GgufFile::parse(bad_magic.bytes.data(), bad_magic.bytes.size()), Error);
  Writer v1;
  v1.header(1, 0, 0);
  EXPECT_THROW(GgufFile::parse(v1.bytes.data(), v1.bytes.size()), Error);
  Writer empty_ok;
  empty_ok.header(2, 0, 0);
  EXPECT_EQ(GgufFile::parse(empty_ok.bytes.data(), empty_ok.bytes.size()).version(), 2u);
}

TEST(Gguf, RejectsLyingCounts) {
  Writer many_kv;
  many_kv.header(3, 0, uint64_t{1} << 60);
  EXPECT_THROW(GgufFile::parse(many_kv.bytes.data(), many_kv.bytes.size()), Error);

  Writer huge_string;
  huge_string.header(3, 0, 1).put<uint64_t>(~uint64_t{0});
  EXPECT_THROW(GgufFile::parse(huge_string.bytes.data(), huge_string.bytes.size()), Error);

  Writer huge_array;
  huge_array.header(3, 0, 1).str("k").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(uint64_t{1} << 62);
  EXPECT_THROW(GgufFile::parse(huge_array.bytes.data(), huge_array.bytes.size()), Error);

  Writer bad_type;
  bad_type.header(3, 0, 1).str("k").put<uint32_t>(99).put<uint32_t>(0);
  EXPECT_THROW(GgufFile::parse(bad_type.bytes.data(), bad_type.bytes.size()), Error);

  Writer deep;
  deep.header(3, 0, 1).str("k");
  deep.put<uint32_t>(9);
  for (int i = 0; i < 20; ++i) deep.put<uint32_t>(9).put<uint64_t>(1);
  deep.put<uint32_t>(0).put<uint64_t>(0);
  EXPECT_THROW(GgufFile::parse(deep.bytes.data(), deep.bytes.size()), Error);

  Writer past_end;
  past_end.header(3, 1, 0);
  past_end.str("t").put<uint32_t>(1).put<uint64_t>(1024).put<uint32_t>(0).put<uint64_t>(0);
  EXPECT_THROW(GgufFile::parse(past_end.bytes.data(), past_end.bytes.size()), Error);

  Writer too_many_dims;
  too_many_dims.header(3, 1, 0).str("t").put<uint32_t>(1000);
  EXPECT_THROW(GgufFile::parse(too_many_dims.bytes.data(), too_many_dims.bytes.size()), Error);

  Writer bad_bool;
  bad_bool.header(3, 0, 1).str("k").put<uint32_t>(7).put<uint8_t>(7);
  EXPECT_THROW(GgufFile::parse(bad_bool.bytes.data(), bad_bool.bytes.size()), Error);
}

TEST(Gguf, OpensRealVocabFiles) {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(MLXCEL_SOURCE_DIR) / ".testdata/llama.cpp/models";
  if (!fs::exists(dir / "ggml-vocab-llama-bpe.gguf")) GTEST_SKIP() << "no .testdata";
  GgufFile f = GgufFile::open((dir / "ggml-vocab-llama-bpe.gguf").string());
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(f.at("tokenizer.ggml.tokens").as_array().strings.size(), 128256u);
  EXPECT_THROW(GgufFile::open((dir / "does-not-exist.gguf").string()), Error);
  int n_ok = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".gguf") continue;
    GgufFile g = GgufFile::open(e.path().string());
    EXPECT_TRUE(g.has("tokenizer.ggml.model")) << e.path();
    ++n_ok;
  }
  EXPECT_GT(n_ok, 10);
}

}  // namespace
}  // namespace mlxcel
