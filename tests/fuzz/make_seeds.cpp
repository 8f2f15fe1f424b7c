// Writes the seed corpus for safetensors_fuzz: small valid files covering every
// dtype, metadata, scalars, empty tensors and reference-style padding.
//   make_seeds <dir>
#include <cstdio>
#include <fstream>
#include <string>

#include "loader/safetensors.h"

using namespace mlxcel;

namespace {
Tensor pattern(const Shape& shape, DType dt, int seed) {
  Tensor t = Tensor::empty(shape, dt);
  auto* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = uint8_t(i * 7 + seed);
  return t;
}
void put(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds <dir>\n");
    return 2;
  }
  std::string dir = argv[1];
  put(dir, "empty.safetensors", serialize_safetensors({}));
  put(dir, "one_f32.safetensors", serialize_safetensors({{"w", pattern({2, 3}, DType::f32, 1)}}));
  put(dir, "meta.safetensors",
      serialize_safetensors({{"model.embed_tokens.weight", pattern({4, 2}, DType::bf16, 2)},
                             {"model.norm.weight", pattern({2}, DType::f16, 3)}},
                            {{"format", "pt"}, {"producer", "mlxcel"}}));
  put(dir, "quant.safetensors",
      serialize_safetensors({{"l.weight", pattern({2, 4}, DType::u32, 4)},
                             {"l.scales", pattern({2, 1}, DType::f16, 5)},
                             {"l.biases", pattern({2, 1}, DType::f16, 6)}}));
  put(dir, "scalar_empty.safetensors",
      serialize_safetensors({{"s", pattern({}, DType::i64, 7)}, {"e", pattern({0, 3}, DType::u8, 8)}}));
  const DType all[] = {DType::f32, DType::f16, DType::bf16, DType::f64, DType::i64, DType::i32, DType::i16,
                       DType::i8,  DType::u64, DType::u32,  DType::u16, DType::u8,  DType::boolean};
  std::vector<std::pair<std::string, Tensor>> every;
  int seed = 9;
  for (DType dt : all) every.emplace_back(std::string("t_") + dtype_name(dt), pattern({3}, dt, seed++));
  put(dir, "all_dtypes.safetensors", serialize_safetensors(every));
  // Reference-writer style: tensors out of name order, header padded with spaces.
  std::string h = R"({"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string bytes;
  for (int i = 0; i < 8; ++i) bytes.push_back(char((h.size() >> (8 * i)) & 0xff));
  bytes += h + std::string(12, '\x3c');
  put(dir, "reference_style.safetensors", bytes);
  return 0;
}
