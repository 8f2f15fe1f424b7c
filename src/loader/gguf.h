// GGUF (v2/v3) reader: header, metadata key/values and tensor infos of a memory-mapped file.
//
//   GgufFile f = GgufFile::open("model.gguf");
//   std::string arch = f.get_string("general.architecture");
//   const GgufArray& toks = f.at("tokenizer.ggml.tokens").as_array();   // toks.strings
//   for (const GgufTensorInfo& t : f.tensors()) { const uint8_t* p = f.tensor_data(t); }
//
// Every count, length and offset is checked against the file size before it is used: a
// truncated or lying file throws Error(invalid_request) naming the file and the field.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/mmap.h"

namespace mlxcel {

enum class GgufType : uint32_t {
  uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, boolean = 7,
  string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12,
};

const char* gguf_type_name(GgufType type);

class GgufValue;

// A homogeneous array. Exactly one of the vectors is filled, by elem_type: integers and
// booleans in ints (uint64 stored bit-for-bit), floats in floats, strings in strings,
// nested arrays in arrays.
struct GgufArray {
  GgufType elem_type = GgufType::uint8;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
  std::vector<GgufValue> arrays;
  size_t size() const;
};

class GgufValue {
 public:
  GgufValue() = default;
  static GgufValue make_int(GgufType t, int64_t v);
  static GgufValue make_float(GgufType t, double v);
  static GgufValue make_string(std::string v);
  static GgufValue make_array(GgufArray v);

  GgufType type() const { return type_; }
  bool is_integer() const;  // any integer type or bool
  bool is_float() const { return type_ == GgufType::float32 || type_ == GgufType::float64; }
  // Typed accessors: throw Error(invalid_request) on a type mismatch.
  int64_t as_int() const;
  uint64_t as_uint() const;
  double as_float() const;  // accepts integers too
  bool as_bool() const;
  const std::string& as_string() const;
  const GgufArray& as_array() const;

 private:
  GgufType type_ = GgufType::uint8;
  int64_t int_ = 0;
  double float_ = 0;
  std::string string_;
  std::shared_ptr<GgufArray> array_;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // GGUF order: shape[0] is the fastest-varying dimension
  uint32_t ggml_type = 0;      // ggml_type enum value
  uint64_t offset = 0;         // relative to the data section
  uint64_t n_bytes = 0;        // 0 when ggml_type is not known to this reader
};

// Bytes per block and elements per block of a ggml type; {0, 0} when unknown.
struct GgmlTypeSize {
  uint32_t block_bytes = 0;
  uint32_t block_elems = 0;
};
GgmlTypeSize ggml_type_size(uint32_t ggml_type);
const char* ggml_type_name(uint32_t ggml_type);

class GgufFile {
 public:
  // Maps and parses `path`. Throws Error(not_found) or Error(invalid_request).
  static GgufFile open(const std::string& path);
  // Parses an in-memory image (tests, fuzzing). `data` must outlive the result.
  static GgufFile parse(const uint8_t* data, size_t size, const std::string& name = "<memory>");

  uint32_t version() const { return version_; }
  const std::string& path() const { return path_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<std::string>& keys_in_order() const { return key_order_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }

  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  const GgufValue* find(const std::string& key) const;
  // Throws Error(not_found) naming the key when absent.
  const GgufValue& at(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;

  // Start of a tensor's bytes inside the mapping (checked against the file size at parse).
  const uint8_t* tensor_data(const GgufTensorInfo& t) const;

 private:
  std::shared_ptr<MappedFile> file_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::vector<std::string> key_order_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace mlxcel
