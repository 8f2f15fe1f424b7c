#include "loader/gguf.h"

#include <algorithm>
#include <cstring>

#include "base/error.h"

namespace mlxcel {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
// NOTE: a nesting limit keeps a hostile file from recursing the stack away.
constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 8;

// A bounds-checked little-endian cursor over the mapped bytes.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& name)
      : data_(data), size_(size), name_(name) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const char* what) const {
    if (n > remaining()) {
      invalid("[gguf] {}: truncated file: {} needs {} bytes at offset {}, only {} left", name_,
              what, n, pos_, remaining());
    }
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const char* what) {
    uint64_t n = read<uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  const std::string& name() const { return name_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& name_;
};

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::uint8: case GgufType::int8: case GgufType::boolean: return 1;
    case GgufType::uint16: case GgufType::int16: return 2;
    case GgufType::uint32: case GgufType::int32: case GgufType::float32: return 4;
    case GgufType::uint64: case GgufType::int64: case GgufType::float64: return 8;
    case GgufType::string: return 8;  // at least the length prefix
    case GgufType::array: return 12;  // at least type + count
  }
  return 0;
}

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::float64); }

int64_t read_int(Reader& r, GgufType t, const char* what) {
  switch (t) {
    case GgufType::uint8: return r.read<uint8_t>(what);
    case GgufType::int8: return r.read<int8_t>(what);
    case GgufType::uint16: return r.read<uint16_t>(what);
    case GgufType::int16: return r.read<int16_t>(what);
    case GgufType::uint32: return r.read<uint32_t>(what);
    case GgufType::int32: return r.read<int32_t>(what);
    case GgufType::uint64: return static_cast<int64_t>(r.read<uint64_t>(what));
    case GgufType::int64: return r.read<int64_t>(what);
    case GgufType::boolean: {
      uint8_t b = r.read<uint8_t>(what);
      if (b > 1) invalid("[gguf] {}: {}: bool value {} is not 0 or 1", r.name(), what, b);
      return b;
    }
    default: break;
  }
  MLXCEL_CHECK(false, "not an integer type");
  return 0;
}

bool is_int_type(GgufType t) {
  return t != GgufType::float32 && t != GgufType::float64 && t != GgufType::string &&
         t != GgufType::array;
}

GgufValue read_value(Reader& r, GgufType t, const std::string& key, int depth);

GgufArray read_array(Reader& r, const std::string& key, int depth) {
  if (depth >= kMaxArrayDepth) {
    invalid("[gguf] {}: key '{}': arrays nested deeper than {}", r.name(), key, kMaxArrayDepth);
  }
  uint32_t et = r.read<uint32_t>("array type");
  if (!valid_type(et)) invalid("[gguf] {}: key '{}': bad array element type {}", r.name(), key, et);
  uint64_t n = r.read<uint64_t>("array length");
  GgufArray a;
  a.elem_type = static_cast<GgufType>(et);
  // NOTE: each element takes at least scalar_size bytes, so a lying count fails here
  // instead of reserving gigabytes.
  if (n > r.remaining() / scalar_size(a.elem_type)) {
    invalid("[gguf] {}: key '{}': array of {} {} elements cannot fit in the {} bytes left",
            r.name(), key, n, gguf_type_name(a.elem_type), r.remaining());
  }
  if (is_int_type(a.elem_type)) {
    a.ints.reserve(n);
    for (uint64_t i = 0; i < n; ++i) a.ints.push_back(read_int(r, a.elem_type, "array element"));
  } else if (a.elem_type == GgufType::float32) {
    a.floats.reserve(n);
    for (uint64_t i = 0; i < n; ++i) a.floats.push_back(r.read<float>("array element"));
  } else if (a.elem_type == GgufType::float64) {
    a.floats.reserve(n);
    for (uint64_t i = 0; i < n; ++i) a.floats.push_back(r.read<double>("array element"));
  } else if (a.elem_type == GgufType::string) {
    a.strings.reserve(n);
    for (uint64_t i = 0; i < n; ++i) a.strings.push_back(r.read_string("array string"));
  } else {
    a.arrays.reserve(n);
    for (uint64_t i = 0; i < n; ++i) a.arrays.push_back(read_value(r, GgufType::array, key, depth + 1));
  }
  return a;
}

GgufValue read_value(Reader& r, GgufType t, const std::string& key, int depth) {
  if (is_int_type(t)) return GgufValue::make_int(t, read_int(r, t, "value"));
  switch (t) {
    case GgufType::float32: return GgufValue::make_float(t, r.read<float>("value"));
    case GgufType::float64: return GgufValue::make_float(t, r.read<double>("value"));
    case GgufType::string: return GgufValue::make_string(r.read_string("string value"));
    case GgufType::array: return GgufValue::make_array(read_array(r, key, depth));
    default: break;
  }
  MLXCEL_CHECK(false, "unhandled gguf type {}", static_cast<uint32_t>(t));
  return {};
}

[[noreturn]] void type_mismatch(GgufType have, const char* want) {
  invalid("[gguf] value has type {}, expected {}", gguf_type_name(have), want);
}

}  // namespace

const char* gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::uint8: return "uint8";
    case GgufType::int8: return "int8";
    case GgufType::uint16: return "uint16";
    case GgufType::int16: return "int16";
    case GgufType::uint32: return "uint32";
    case GgufType::int32: return "int32";
    case GgufType::float32: return "float32";
    case GgufType::boolean: return "bool";
    case GgufType::string: return "string";
    case GgufType::array: return "array";
    case GgufType::uint64: return "uint64";
    case GgufType::int64: return "int64";
    case GgufType::float64: return "float64";
  }
  return "unknown";
}

size_t GgufArray::size() const {
  return ints.size() + floats.size() + strings.size() + arrays.size();
}

GgufValue GgufValue::make_int(GgufType t, int64_t v) {
  GgufValue r;
  r.type_ = t;
  r.int_ = v;
  return r;
}
GgufValue GgufValue::make_float(GgufType t, double v) {
  GgufValue r;
  r.type_ = t;
  r.float_ = v;
  return r;
}
GgufValue GgufValue::make_string(std::string v) {
  GgufValue r;
  r.type_ = GgufType::string;
  r.string_ = std::move(v);
  return r;
}
GgufValue GgufValue::make_array(GgufArray v) {
  GgufValue r;
  r.type_ = GgufType::array;
  r.array_ = std::make_shared<GgufArray>(std::move(v));
  return r;
}

bool GgufValue::is_integer() const { return is_int_type(type_); }

int64_t GgufValue::as_int() const {
  if (!is_integer()) type_mismatch(type_, "an integer");
  if (type_ == GgufType::uint64 && int_ < 0) invalid("[gguf] uint64 value does not fit int64");
  return int_;
}
uint64_t GgufValue::as_uint() const {
  if (!is_integer()) type_mismatch(type_, "an integer");
  if (type_ != GgufType::uint64 && int_ < 0) invalid("[gguf] negative value {} read as unsigned", int_);
  return static_cast<uint64_t>(int_);
}
double GgufValue::as_float() const {
  if (is_float()) return float_;
  if (is_integer()) return static_cast<double>(int_);
  type_mismatch(type_, "a number");
}
bool GgufValue::as_bool() const {
  if (!is_integer()) type_mismatch(type_, "a bool");
  return int_ != 0;
}
const std::string& GgufValue::as_string() const {
  if (type_ != GgufType::string) type_mismatch(type_, "a string");
  return string_;
}
const GgufArray& GgufValue::as_array() const {
  if (type_ != GgufType::array) type_mismatch(type_, "an array");
  return *array_;
}

GgmlTypeSize ggml_type_size(uint32_t t) {
  switch (t) {
    case 0: return {4, 1};     // F32
    case 1: return {2, 1};     // F16
    case 2: return {18, 32};   // Q4_0
    case 3: return {20, 32};   // Q4_1
    case 6: return {22, 32};   // Q5_0
    case 7: return {24, 32};   // Q5_1
    case 8: return {34, 32};   // Q8_0
    case 9: return {36, 32};   // Q8_1
    case 10: return {84, 256};   // Q2_K
    case 11: return {110, 256};  // Q3_K
    case 12: return {144, 256};  // Q4_K
    case 13: return {176, 256};  // Q5_K
    case 14: return {210, 256};  // Q6_K
    case 15: return {292, 256};  // Q8_K
    case 16: return {66, 256};   // IQ2_XXS
    case 17: return {74, 256};   // IQ2_XS
    case 18: return {98, 256};   // IQ3_XXS
    case 19: return {50, 256};   // IQ1_S
    case 20: return {18, 32};    // IQ4_NL
    case 21: return {110, 256};  // IQ3_S
    case 22: return {82, 256};   // IQ2_S
    case 23: return {136, 256};  // IQ4_XS
    case 24: return {1, 1};      // I8
    case 25: return {2, 1};      // I16
    case 26: return {4, 1};      // I32
    case 27: return {8, 1};      // I64
    case 28: return {8, 1};      // F64
    case 29: return {56, 256};   // IQ1_M
    case 30: return {2, 1};      // BF16
    case 34: return {54, 256};   // TQ1_0
    case 35: return {66, 256};   // TQ2_0
    case 39: return {17, 32};    // MXFP4
    default: return {0, 0};
  }
}

const char* ggml_type_name(uint32_t t) {
  static const char* names[] = {"F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1",
                                "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
                                "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
                                "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
                                "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0",
                                "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4", "NVFP4",
                                "Q1_0", "Q2_0"};
  return t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
}

GgufFile GgufFile::open(const std::string& path) {
  auto file = MappedFile::open(path);
  GgufFile f = parse(file->data(), file->size(), path);
  f.file_ = std::move(file);
  return f;
}

GgufFile GgufFile::parse(const uint8_t* data, size_t size, const std::string& name) {
  GgufFile f;
  f.data_ = data;
  f.size_ = size;
  f.path_ = name;
  Reader r(data, size, f.path_);
  uint32_t magic = r.read<uint32_t>("magic");
  if (magic != kGgufMagic) invalid("[gguf] {}: not a GGUF file (bad magic 0x{:08x})", name, magic);
  f.version_ = r.read<uint32_t>("version");
  if (f.version_ != 2 && f.version_ != 3) {
    unsupported("[gguf] {}: GGUF version {} is not supported (only 2 and 3)", name, f.version_);
  }
  uint64_t n_tensors = r.read<uint64_t>("tensor count");
  uint64_t n_kv = r.read<uint64_t>("metadata count");
  // Each key/value needs at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at
  // least 8 + 4 + 4 + 8.
  if (n_kv > r.remaining() / 13) invalid("[gguf] {}: metadata count {} is larger than the file", name, n_kv);
  if (n_tensors > r.remaining() / 24) invalid("[gguf] {}: tensor count {} is larger than the file", name, n_tensors);

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.read_string("metadata key");
    uint32_t t = r.read<uint32_t>("metadata type");
    if (!valid_type(t)) invalid("[gguf] {}: key '{}' has unknown value type {}", name, key, t);
    GgufValue v = read_value(r, static_cast<GgufType>(t), key, 0);
    if (f.kv_.count(key)) invalid("[gguf] {}: duplicate metadata key '{}'", name, key);
    f.key_order_.push_back(key);
    f.kv_.emplace(std::move(key), std::move(v));
  }
  if (const GgufValue* a = f.find("general.alignment")) {
    uint64_t al = a->as_uint();
    if (al == 0 || (al & (al - 1)) != 0 || al > (1u << 20)) {
      invalid("[gguf] {}: general.alignment {} is not a power of two", name, al);
    }
    f.alignment_ = al;
  }

  f.tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = r.read_string("tensor name");
    uint32_t n_dims = r.read<uint32_t>("tensor dims");
    if (n_dims > kMaxDims) invalid("[gguf] {}: tensor '{}' has {} dims", name, t.name, n_dims);
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = r.read<uint64_t>("tensor dim");
      if (dim > (uint64_t{1} << 62) || (dim != 0 && n_elems > (uint64_t{1} << 62) / dim)) {
        invalid("[gguf] {}: tensor '{}' has an absurd shape", name, t.name);
      }
      n_elems *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    t.ggml_type = r.read<uint32_t>("tensor type");
    t.offset = r.read<uint64_t>("tensor offset");
    GgmlTypeSize ts = ggml_type_size(t.ggml_type);
    if (ts.block_elems != 0) {
      if (n_dims > 0 && t.shape[0] % ts.block_elems != 0) {
        invalid("[gguf] {}: tensor '{}': row of {} is not a multiple of the {} block size {}",
                name, t.name, t.shape[0], ggml_type_name(t.ggml_type), ts.block_elems);
      }
      t.n_bytes = n_elems / ts.block_elems * ts.block_bytes;
    }
    if (t.offset % f.alignment_ != 0) {
      invalid("[gguf] {}: tensor '{}' offset {} is not aligned to {}", name, t.name, t.offset,
              f.alignment_);
    }
    f.tensors_.push_back(std::move(t));
  }
  uint64_t pos = r.pos();
  f.data_offset_ = (pos + f.alignment_ - 1) / f.alignment_ * f.alignment_;
  for (const GgufTensorInfo& t : f.tensors_) {
    uint64_t avail = size >= f.data_offset_ ? size - f.data_offset_ : 0;
    if (t.offset > avail || t.n_bytes > avail - t.offset) {
      invalid("[gguf] {}: tensor '{}' ({} bytes at data offset {}) runs past the end of the file",
              name, t.name, t.n_bytes, t.offset);
    }
  }
  // Names are unique and the byte ranges of the tensors do not overlap.
  std::vector<const GgufTensorInfo*> by_offset;
  by_offset.reserve(f.tensors_.size());
  std::map<std::string, int> seen;
  for (const GgufTensorInfo& t : f.tensors_) {
    if (!seen.emplace(t.name, 0).second) invalid("[gguf] {}: duplicate tensor name '{}'", name, t.name);
    if (t.n_bytes > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& a = *by_offset[i - 1];
    const GgufTensorInfo& b = *by_offset[i];
    if (a.offset + a.n_bytes > b.offset) {
      invalid("[gguf] {}: tensors '{}' (bytes {}..{}) and '{}' (from {}) overlap", name, a.name, a.offset,
              a.offset + a.n_bytes, b.name, b.offset);
    }
  }
  return f;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

const GgufValue& GgufFile::at(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) throw_error(ErrorKind::not_found, "[gguf] {}: missing metadata key '{}'", path_, key);
  return *v;
}

std::string GgufFile::get_string(const std::string& key, const std::string& fallback) const {
  const GgufValue* v = find(key);
  return v ? v->as_string() : fallback;
}
std::string GgufFile::get_string(const std::string& key) const { return at(key).as_string(); }

int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
  const GgufValue* v = find(key);
  return v ? v->as_int() : fallback;
}
bool GgufFile::get_bool(const std::string& key, bool fallback) const {
  const GgufValue* v = find(key);
  return v ? v->as_bool() : fallback;
}

const uint8_t* GgufFile::tensor_data(const GgufTensorInfo& t) const {
  return data_ + data_offset_ + t.offset;
}

}  // namespace mlxcel
