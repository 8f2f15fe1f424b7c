#include "tensor/dtype.h"

#include <fmt/format.h>

#include "base/error.h"

namespace mlxcel {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::f64: case DType::i64: case DType::u64: return 8;
    case DType::f32: case DType::i32: case DType::u32: return 4;
    case DType::f16: case DType::bf16: case DType::i16: case DType::u16: return 2;
    case DType::i8: case DType::u8: case DType::boolean: return 1;
  }
  return 0;
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::f64: return "f64";
    case DType::i64: return "i64";
    case DType::i32: return "i32";
    case DType::i16: return "i16";
    case DType::i8: return "i8";
    case DType::u64: return "u64";
    case DType::u32: return "u32";
    case DType::u16: return "u16";
    case DType::u8: return "u8";
    case DType::boolean: return "bool";
  }
  return "?";
}

bool is_floating(DType dt) {
  return dt == DType::f32 || dt == DType::f16 || dt == DType::bf16 || dt == DType::f64;
}

DType parse_dtype(std::string_view n) {
  struct Entry { const char* st; const char* ours; DType dt; };
  static const Entry table[] = {
      {"F32", "f32", DType::f32},   {"F16", "f16", DType::f16}, {"BF16", "bf16", DType::bf16},
      {"F64", "f64", DType::f64},   {"I64", "i64", DType::i64}, {"I32", "i32", DType::i32},
      {"I16", "i16", DType::i16},   {"I8", "i8", DType::i8},    {"U64", "u64", DType::u64},
      {"U32", "u32", DType::u32},   {"U16", "u16", DType::u16}, {"U8", "u8", DType::u8},
      {"BOOL", "bool", DType::boolean},
  };
  for (const auto& e : table) {
    if (n == e.st || n == e.ours) return e.dt;
  }
  unsupported("unsupported dtype '{}'", n);
}

std::string device_name(Device d) {
  return d.type == DeviceType::cpu ? std::string("cpu") : fmt::format("cuda:{}", d.index);
}

}  // namespace mlxcel
