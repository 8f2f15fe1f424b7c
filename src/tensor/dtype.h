// Element types. Quantized weights are not a DType of their own: they are a
// QuantizedWeight (ops/quant.h) made of plain u32/f16/bf16 tensors plus a QuantSpec.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mlxcel {

enum class DType : uint8_t { f32, f16, bf16, f64, i64, i32, i16, i8, u64, u32, u16, u8, boolean };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);         // "f32", "bf16", ...
bool is_floating(DType dt);
// Parses safetensors names ("F32", "BF16", "U32", ...) and mlxcel names ("f32", ...).
// Throws Error(unsupported) for anything else.
DType parse_dtype(std::string_view name);

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;
  bool operator==(const Device&) const = default;
  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
};

std::string device_name(Device d);  // "cpu", "cuda:0"

}  // namespace mlxcel
