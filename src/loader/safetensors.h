// safetensors (https://github.com/huggingface/safetensors) reading and writing.
//
// File layout: u64 little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"k": "v"}}, then the data; offsets are relative to the data start.
//
// Reading never touches bytes outside the buffer: every header field is validated
// (types, dtype, shape overflow, offsets in range, size == numel * dtype size, no two
// tensors overlapping) and each error names the file and the tensor.
//
//   auto f = open_safetensors("/models/x/model.safetensors");
//   for (auto& [name, t] : f.tensors) ...                   // zero-copy views
//   save_safetensors("out.safetensors", {{"w", w}}, {{"format", "pt"}});
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/mmap.h"
#include "tensor/tensor.h"

namespace mlxcel {

// Headers larger than this are rejected as corrupt (the reference uses 100 MB).
constexpr size_t kMaxSafetensorsHeader = 100u * 1000u * 1000u;

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  size_t begin = 0, end = 0;  // byte range relative to the data section
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;  // in data order (sorted by begin)
  std::map<std::string, std::string> metadata;
  size_t data_offset = 0;  // 8 + header length: where the data section starts in the file
  size_t data_size = 0;    // bytes in the data section
};

// Parses and validates the header of a whole safetensors file held in memory
// (`data`, `size` = the file's bytes). `source` names the file in errors. Throws
// Error(invalid_request) for a malformed file, Error(unsupported) for a dtype
// mlxcel does not know (F8_*, ...). This is the fuzzing entry point.
SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& source);

// Zero-copy views of every tensor in a buffer whose lifetime `owner` guarantees.
// Tensors whose data is not aligned to their element size are copied instead.
// `copied` (optional) receives how many were copied.
std::vector<std::pair<std::string, Tensor>> safetensors_views(const SafetensorsHeader& h, const uint8_t* data,
                                                              std::shared_ptr<void> owner, size_t* copied = nullptr);

struct SafetensorsFile {
  std::shared_ptr<MappedFile> file;
  SafetensorsHeader header;
  std::vector<std::pair<std::string, Tensor>> tensors;  // views into `file`
  size_t copied = 0;  // tensors copied because their data was misaligned
};

// Maps and parses one file.
SafetensorsFile open_safetensors(const std::string& path);

// Writes tensors (CPU; any strides) with an 8-byte aligned header, padded with spaces
// as the reference writer does. Tensors are stored ordered by element size, largest
// first (keeping the given order within a size), so every tensor's data is aligned
// to its element size. Atomic: writes `path`.tmp.<pid> and renames it over `path`.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// The same bytes, in memory (tests, fuzz seeds).
std::string serialize_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

// "F32", "BF16", ...: the safetensors name of a dtype.
const char* safetensors_dtype_name(DType dt);

}  // namespace mlxcel
