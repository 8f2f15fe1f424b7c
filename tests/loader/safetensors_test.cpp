#include "loader/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/half.h"

using namespace mlxcel;
namespace fs = std::filesystem;

namespace {

class TempDir {
 public:
  TempDir() {
    static int n = 0;
    path_ = fs::temp_directory_path() / ("mlxcel_st_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// A tensor of `dtype` whose bytes are 0, 1, 2, ... (mod 251).
Tensor pattern(const Shape& shape, DType dtype, int seed = 0) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = uint8_t((i + seed) % 251);
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// A file from a raw header string and data bytes.
std::string raw_file(const std::string& header, const std::string& data = std::string(), int64_t len = -1) {
  std::string out;
  uint64_t n = len >= 0 ? uint64_t(len) : header.size();
  for (int i = 0; i < 8; ++i) out.push_back(char((n >> (8 * i)) & 0xff));
  return out + header + data;
}

void expect_parse_error(const std::string& bytes, ErrorKind kind, std::initializer_list<std::string> parts) {
  try {
    parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "dir/bad.safetensors");
    ADD_FAILURE() << "no error for " << bytes.substr(8, 200);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    std::string msg = e.what();
    EXPECT_NE(msg.find("dir/bad.safetensors"), std::string::npos) << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << " lacks " << p;
  }
}

void expect_bad(const std::string& bytes, std::initializer_list<std::string> parts) {
  expect_parse_error(bytes, ErrorKind::invalid_request, parts);
}

}  // namespace

TEST(Safetensors, RoundTripEveryDType) {
  TempDir dir;
  const DType all[] = {DType::f32, DType::f16, DType::bf16, DType::f64, DType::i64, DType::i32, DType::i16,
                       DType::i8,  DType::u64, DType::u32,  DType::u16, DType::u8,  DType::boolean};
  std::vector<std::pair<std::string, Tensor>> in;
  int seed = 0;
  for (DType dt : all) {
    // Odd sizes so a naive writer would misalign the next tensor.
    in.emplace_back(std::string("t.") + dtype_name(dt), pattern({3, 5}, dt, seed++));
  }
  in.emplace_back("scalar", pattern({}, DType::f32, 7));
  in.emplace_back("empty", Tensor::empty({0, 4}, DType::bf16));
  std::string path = dir.file("all.safetensors");
  save_safetensors(path, in, {{"format", "pt"}, {"note", "round trip"}});
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));

  SafetensorsFile f = open_safetensors(path);
  EXPECT_EQ(f.copied, 0u);  // the writer keeps every tensor aligned
  EXPECT_EQ(f.header.metadata.at("format"), "pt");
  EXPECT_EQ(f.header.metadata.at("note"), "round trip");
  EXPECT_EQ(f.header.data_offset % 8, 0u);
  ASSERT_EQ(f.tensors.size(), in.size());
  for (const auto& [name, t] : in) {
    auto it = std::find_if(f.tensors.begin(), f.tensors.end(), [&](auto& p) { return p.first == name; });
    ASSERT_NE(it, f.tensors.end()) << name;
    EXPECT_TRUE(same_bytes(it->second, t)) << name << " " << it->second.describe();
    if (t.nbytes() > 0) {
      // Zero-copy: the view points into the mapping.
      auto* p = static_cast<const uint8_t*>(it->second.raw());
      EXPECT_GE(p, f.file->data());
      EXPECT_LT(p, f.file->data() + f.file->size());
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % dtype_size(t.dtype()), 0u) << name;
    }
  }
  // In-memory serialization gives the same bytes as the file.
  std::ifstream inf(path, std::ios::binary);
  std::string disk((std::istreambuf_iterator<char>(inf)), std::istreambuf_iterator<char>());
  EXPECT_EQ(disk, serialize_safetensors(in, {{"format", "pt"}, {"note", "round trip"}}));
}

TEST(Safetensors, ViewsOutliveTheFileObject) {
  TempDir dir;
  std::string path = dir.file("a.safetensors");
  Tensor w = Tensor::from_f32({2, 2}, {1, 2, 3, 4});
  save_safetensors(path, {{"w", w}});
  Tensor view;
  {
    SafetensorsFile f = open_safetensors(path);
    view = f.tensors.at(0).second;
  }
  fs::remove(path);  // the mapping keeps the bytes alive
  EXPECT_EQ(view.to_f32_vector(), (std::vector<float>{1, 2, 3, 4}));
}

TEST(Safetensors, WriterHandlesNonContiguousAndOverwrites) {
  TempDir dir;
  std::string path = dir.file("nc.safetensors");
  Tensor m = Tensor::from_f32({3, 4}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  Tensor col = m.slice(1, 1, 3);  // [3, 2], strided
  ASSERT_FALSE(col.is_contiguous());
  save_safetensors(path, {{"col", col}});
  save_safetensors(path, {{"col", col}, {"h", Tensor::from_f32({1}, {5})}});  // atomic replace
  SafetensorsFile f = open_safetensors(path);
  ASSERT_EQ(f.tensors.size(), 2u);
  for (auto& [n, t] : f.tensors) {
    if (n == "col") {
      EXPECT_EQ(t.to_f32_vector(), (std::vector<float>{1, 2, 5, 6, 9, 10}));
    }
  }
  EXPECT_THROW(save_safetensors(path, {{"a", col}, {"a", col}}), Error);
  EXPECT_THROW(save_safetensors(path, {{"__metadata__", col}}), Error);
  EXPECT_THROW(save_safetensors(dir.file("no/such/dir/x.safetensors"), {{"a", col}}), Error);
}

TEST(Safetensors, ReadsReferenceStyleFiles) {
  // As written by the Python reference: header padded with spaces, tensors by offset.
  std::string header = R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},)"
                       R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.append((8 - (8 + header.size()) % 8) % 8, ' ');
  std::string data(12, '\0');
  float a[2] = {1.5f, -2.0f};
  uint16_t b[2] = {f32_to_f16(0.5f), f32_to_f16(3.0f)};
  std::memcpy(&data[0], a, 8);
  std::memcpy(&data[8], b, 4);
  std::string bytes = raw_file(header, data);
  auto h = parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "ref");
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "a");  // sorted by offset
  EXPECT_EQ(h.tensors[1].dtype, DType::f16);
  EXPECT_EQ(h.metadata.at("format"), "pt");
  // Views over a heap copy (8-aligned) of the bytes.
  auto buf = std::shared_ptr<uint8_t[]>(new (std::align_val_t(64)) uint8_t[bytes.size()]);
  std::memcpy(buf.get(), bytes.data(), bytes.size());
  size_t copied = 99;
  auto views = safetensors_views(h, buf.get(), buf, &copied);
  EXPECT_EQ(views[0].second.to_f32_vector(), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(views[1].second.to_f32_vector(), (std::vector<float>{0.5f, 3.0f}));
  EXPECT_EQ(copied, 0u);
}

TEST(Safetensors, MisalignedTensorsAreCopied) {
  // An F32 tensor after 2 bytes of U8: its data is not 4-aligned.
  std::string header = R"({"u":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"f":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  float one = 1.0f;
  std::string data = "ab" + std::string(reinterpret_cast<const char*>(&one), 4);
  std::string bytes = raw_file(header, data);
  auto buf = std::shared_ptr<uint8_t[]>(new (std::align_val_t(64)) uint8_t[bytes.size()]);
  std::memcpy(buf.get(), bytes.data(), bytes.size());
  auto h = parse_safetensors(buf.get(), bytes.size(), "mis");
  size_t copied = 0;
  auto views = safetensors_views(h, buf.get(), buf, &copied);
  EXPECT_EQ(copied, 1u);
  EXPECT_EQ(views[1].first, "f");
  EXPECT_EQ(views[1].second.to_f32_vector(), std::vector<float>{1.0f});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(views[1].second.raw()) % 4, 0u);
}

TEST(Safetensors, MalformedHeaders) {
  const std::string ok_data(16, '\0');
  // Too short for the length.
  expect_bad(std::string("\x01\x02\x03", 3), {"shorter than the 8-byte"});
  expect_bad(std::string(), {"shorter than the 8-byte"});
  // Header length past the end / absurd.
  expect_bad(raw_file("{}", "", 100), {"runs past the end"});
  expect_bad(raw_file("{}", "", int64_t(1) << 40), {"larger than"});
  expect_bad(raw_file("{}", "", -1 /* = 2 */).substr(0, 8) + std::string("{"), {"runs past the end"});
  // Not JSON / not an object.
  expect_bad(raw_file("{\"a\": "), {"not valid JSON"});
  expect_bad(raw_file("[1, 2, 3]"), {"not a JSON object"});
  expect_bad(raw_file("  "), {"not a JSON object"});
  expect_bad(raw_file(std::string(200, '[')), {"not a JSON object"});
  expect_bad(raw_file("{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}"), {"nests deeper"});
  // Entry fields.
  expect_bad(raw_file(R"({"w": 3})"), {"tensor 'w'", "must be an object"});
  expect_bad(raw_file(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", ok_data), {"tensor 'w'", "missing 'dtype'"});
  expect_bad(raw_file(R"({"w": {"dtype": 5, "shape": [2], "data_offsets": [0, 8]}})", ok_data),
             {"tensor 'w'", "'dtype' must be a string"});
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", ok_data), {"tensor 'w'", "missing 'shape'"});
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})", ok_data),
             {"tensor 'w'", "'shape' must be an array"});
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", ok_data),
             {"tensor 'w'", "non-negative"});
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}})", ok_data),
             {"tensor 'w'", "non-negative integers"});
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}})", ok_data),
             {"tensor 'w'", "shape"});
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "shape": [2]}})", ok_data), {"tensor 'w'", "missing 'data_offsets'"});
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", ok_data),
             {"tensor 'w'", "data_offsets"});
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": "0-8"}})", ok_data),
             {"tensor 'w'", "data_offsets"});
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, -8]}})", ok_data),
             {"tensor 'w'", "non-negative"});
  // Unsupported dtype, named.
  expect_parse_error(raw_file(R"({"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}})", ok_data),
                     ErrorKind::unsupported, {"tensor 'w'", "F8_E4M3"});
  expect_parse_error(raw_file(R"({"w": {"dtype": "f32", "shape": [2], "data_offsets": [0, 8]}})", ok_data),
                     ErrorKind::unsupported, {"tensor 'w'", "'f32'"});
  // Shape product overflow (numel, then bytes).
  expect_bad(raw_file(R"({"w": {"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})", ok_data),
             {"tensor 'w'", "overflows"});
  expect_bad(raw_file(R"({"w": {"dtype": "F64", "shape": [2305843009213693952], "data_offsets": [0, 8]}})", ok_data),
             {"tensor 'w'", "overflows"});
  expect_bad(raw_file(R"({"w": {"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 8]}})", ok_data),
             {"tensor 'w'", "non-negative"});
  // Offsets.
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", ok_data),
             {"tensor 'w'", "before begin"});
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}})", ok_data),
             {"tensor 'w'", "past the end"});
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [18446744073709551608, 0]}})", ok_data),
             {"tensor 'w'"});
  expect_bad(raw_file(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", ok_data),
             {"tensor 'w'", "hold 8 bytes", "needs 12"});
  // Overlap.
  expect_bad(raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                      R"("b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                      ok_data),
             {"tensor 'b'", "overlaps tensor 'a'"});
  expect_bad(raw_file(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                      R"("b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                      ok_data),
             {"overlaps"});
  // Duplicate names.
  expect_bad(raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                      R"("a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
                      ok_data),
             {"tensor 'a'", "twice"});
  // __metadata__ of the wrong type.
  expect_bad(raw_file(R"({"__metadata__": [1]})"), {"__metadata__"});
}

TEST(Safetensors, AcceptableOddities) {
  auto parse = [](const std::string& b) {
    return parse_safetensors(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "odd");
  };
  // Empty header object, null metadata, non-string metadata values, zero-size tensors
  // anywhere, NUL padding, empty shape (scalar).
  EXPECT_TRUE(parse(raw_file("{}")).tensors.empty());
  auto h = parse(raw_file(R"({"__metadata__": {"n": 3}, "z": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},)"
                          R"("s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}})" +
                              std::string(3, '\0'),
                          std::string(4, '\0')));
  EXPECT_EQ(h.metadata.at("n"), "3");
  EXPECT_EQ(h.tensors.size(), 2u);
  EXPECT_TRUE(parse(raw_file(R"({"__metadata__": null})")).metadata.empty());
}

TEST(Safetensors, OpenErrorsNameTheFile) {
  TempDir dir;
  std::string path = dir.file("broken.safetensors");
  std::ofstream(path, std::ios::binary) << raw_file(R"({"layer.w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", "short");
  try {
    open_safetensors(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("layer.w"), std::string::npos) << e.what();
  }
  std::string empty = dir.file("empty.safetensors");
  std::ofstream(empty, std::ios::binary).flush();
  EXPECT_THROW(open_safetensors(empty), Error);
  try {
    open_safetensors(dir.file("none.safetensors"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
  }
}
