// libFuzzer target for the safetensors header parser and views (see docs/fuzzing.md).
//
// Properties checked on every input:
//  - parse_safetensors either returns or throws mlxcel::Error (anything else escapes
//    and libFuzzer reports it as a crash);
//  - a returned header only describes bytes inside the buffer (ASan checks the reads
//    below), and its views re-serialize to a file that parses to the same tensors.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "base/error.h"
#include "loader/safetensors.h"

using namespace mlxcel;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

void exercise(const uint8_t* data, size_t size) {
  // An exact-size heap copy so ASan sees any read past the end, with a keepalive
  // owner as the mapped file would have.
  std::shared_ptr<uint8_t[]> buf(new uint8_t[size ? size : 1]);
  if (size) std::memcpy(buf.get(), data, size);
  SafetensorsHeader h;
  try {
    h = parse_safetensors(buf.get(), size, "fuzz.safetensors");
  } catch (const Error&) {
    return;
  }
  check(h.data_offset <= size && h.data_offset + h.data_size == size, "data section inside the buffer");
  size_t prev_end = 0;
  for (const auto& t : h.tensors) {
    check(t.begin <= t.end && t.end <= h.data_size, "tensor inside the data section");
    check(t.end - t.begin == size_t(shape_numel(t.shape)) * dtype_size(t.dtype), "size matches shape");
    if (t.end > t.begin) {
      check(t.begin >= prev_end, "no overlap");
      prev_end = t.end;
    }
  }
  auto views = safetensors_views(h, buf.get(), buf);
  check(views.size() == h.tensors.size(), "one view per tensor");
  uint64_t sum = 0;
  for (const auto& [name, t] : views) {
    const auto* p = static_cast<const uint8_t*>(t.raw());
    for (size_t i = 0; i < t.nbytes(); ++i) sum += p[i];  // touch every byte
  }
  (void)sum;
  // Round trip through the writer.
  std::string again = serialize_safetensors(views, h.metadata);
  SafetensorsHeader h2 = parse_safetensors(reinterpret_cast<const uint8_t*>(again.data()), again.size(), "again");
  check(h2.tensors.size() == h.tensors.size(), "round trip keeps the tensor count");
  check(h2.metadata == h.metadata, "round trip keeps the metadata");
  check(h2.data_offset % 8 == 0, "writer aligns the header");
  for (const auto& t2 : h2.tensors) {
    const SafetensorsEntry* t = nullptr;
    for (const auto& e : h.tensors)
      if (e.name == t2.name) t = &e;
    check(t != nullptr, "round trip keeps the names");
    check(t->dtype == t2.dtype && t->shape == t2.shape, "round trip keeps dtype and shape");
    check(std::memcmp(buf.get() + h.data_offset + t->begin, again.data() + h2.data_offset + t2.begin,
                      t->end - t->begin) == 0,
          "round trip keeps the bytes");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  exercise(data, size);
  // Mutations rarely keep the 8-byte length consistent with the JSON that follows;
  // also try the input with its length folded into range, so the JSON gets explored.
  if (size > 8) {
    std::string fixed(reinterpret_cast<const char*>(data), size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(fixed[i]);
    n %= uint64_t(size - 8 + 1);
    for (int i = 0; i < 8; ++i) fixed[i] = char((n >> (8 * i)) & 0xff);
    exercise(reinterpret_cast<const uint8_t*>(fixed.data()), fixed.size());
  }
  return 0;
}
