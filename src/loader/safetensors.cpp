#include "loader/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <set>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "loader/json_checks.h"

namespace mlxcel {

using nlohmann::json;

namespace {

struct DTypeName {
  const char* name;
  DType dt;
};
constexpr DTypeName kDTypes[] = {
    {"F32", DType::f32}, {"F16", DType::f16}, {"BF16", DType::bf16}, {"F64", DType::f64},
    {"I64", DType::i64}, {"I32", DType::i32}, {"I16", DType::i16},   {"I8", DType::i8},
    {"U64", DType::u64}, {"U32", DType::u32}, {"U16", DType::u16},   {"U8", DType::u8},
    {"BOOL", DType::boolean},
};

// Nesting deeper than this is never a valid header (tensors sit at depth 2, their
// fields at depth 3); rejecting it early bounds the parser's work on hostile input.
constexpr int kMaxHeaderDepth = 8;

// A non-negative integer that fits uint64 (JSON integers only; 2.0 is rejected).
bool get_u64(const json& v, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    int64_t x = v.get<int64_t>();
    if (x < 0) return false;
    out = uint64_t(x);
    return true;
  }
  return false;
}

}  // namespace

const char* safetensors_dtype_name(DType dt) {
  for (const auto& e : kDTypes)
    if (e.dt == dt) return e.name;
  return "?";
}

SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& source) {
  if (size < 8 || data == nullptr) invalid("{}: not a safetensors file: {} bytes, shorter than the 8-byte header length", source, size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kMaxSafetensorsHeader) {
    invalid("{}: safetensors header length {} is larger than the {} byte limit (corrupt file?)", source, n,
            kMaxSafetensorsHeader);
  }
  if (n > size - 8) {
    invalid("{}: safetensors header length {} runs past the end of the file ({} bytes)", source, n, size);
  }
  if (n < 2) invalid("{}: safetensors header of {} bytes is too short to be a JSON object", source, n);
  const char* hp = reinterpret_cast<const char*>(data + 8);
  size_t hn = size_t(n);
  // Trailing padding: spaces (the reference) or NULs (some writers).
  while (hn > 0 && (hp[hn - 1] == ' ' || hp[hn - 1] == '\0' || hp[hn - 1] == '\n' || hp[hn - 1] == '\t' ||
                    hp[hn - 1] == '\r'))
    --hn;
  if (hn == 0 || hp[0] != '{') invalid("{}: safetensors header is not a JSON object (does not start with '{{')", source);
  if (json_nesting_depth(std::string_view(hp, hn), kMaxHeaderDepth) > kMaxHeaderDepth)
    invalid("{}: safetensors header nests deeper than {} levels", source, kMaxHeaderDepth);

  // Parse, rejecting duplicate top-level names (json would keep only the last one).
  std::set<std::string> seen;
  std::string dup;
  json header;
  try {
    header = json::parse(hp, hp + hn,
                         [&](int depth, json::parse_event_t ev, json& parsed) {
                           if (ev == json::parse_event_t::key && depth == 1 && dup.empty()) {
                             std::string k = parsed.get<std::string>();
                             if (!seen.insert(k).second) dup = k;
                           }
                           return true;
                         });
  } catch (const json::exception& e) {
    invalid("{}: safetensors header is not valid JSON: {}", source, e.what());
  }
  if (!dup.empty()) invalid("{}: tensor '{}' appears twice in the safetensors header", source, dup);
  if (!header.is_object()) invalid("{}: safetensors header is not a JSON object", source);

  SafetensorsHeader h;
  h.data_offset = 8 + size_t(n);
  h.data_size = size - h.data_offset;
  h.tensors.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      if (e.is_null()) continue;
      if (!e.is_object()) invalid("{}: __metadata__ must be an object of strings, got {}", source, json_type_name(e));
      for (auto m = e.begin(); m != e.end(); ++m) {
        h.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { invalid("{}: tensor '{}': {}", source, name, what); };
    if (!e.is_object()) bad(fmt::format("header entry must be an object, got {}", json_type_name(e)));
    SafetensorsEntry t;
    t.name = name;

    auto dt = e.find("dtype");
    if (dt == e.end()) bad("missing 'dtype'");
    if (!dt->is_string()) bad(fmt::format("'dtype' must be a string, got {}", json_type_name(*dt)));
    const std::string& dts = dt->get_ref<const std::string&>();
    bool found = false;
    for (const auto& d : kDTypes) {
      if (dts == d.name) {
        t.dtype = d.dt;
        found = true;
      }
    }
    if (!found) throw_error(ErrorKind::unsupported, "{}: tensor '{}': unsupported dtype '{}'", source, name, dts);

    auto sh = e.find("shape");
    if (sh == e.end()) bad("missing 'shape'");
    if (!sh->is_array()) bad(fmt::format("'shape' must be an array of integers, got {}", json_type_name(*sh)));
    int64_t numel = 1;
    for (const auto& d : *sh) {
      uint64_t v = 0;
      if (!get_u64(d, v) || v > uint64_t(std::numeric_limits<int64_t>::max()))
        bad(fmt::format("'shape' must hold non-negative integers, got {}", d.dump()));
      t.shape.push_back(int64_t(v));
      if (__builtin_mul_overflow(numel, int64_t(v), &numel)) bad(fmt::format("shape {} overflows", sh->dump()));
    }
    int64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, int64_t(dtype_size(t.dtype)), &nbytes))
      bad(fmt::format("shape {} overflows", sh->dump()));

    auto off = e.find("data_offsets");
    if (off == e.end()) bad("missing 'data_offsets'");
    if (!off->is_array() || off->size() != 2)
      bad(fmt::format("'data_offsets' must be [begin, end], got {}", off->dump()));
    uint64_t b = 0, en = 0;
    if (!get_u64((*off)[0], b) || !get_u64((*off)[1], en))
      bad(fmt::format("'data_offsets' must be non-negative integers, got {}", off->dump()));
    if (en < b) bad(fmt::format("data_offsets end {} is before begin {}", en, b));
    if (en > h.data_size)
      bad(fmt::format("data_offsets [{}, {}] run past the end of the data ({} bytes)", b, en, h.data_size));
    if (en - b != uint64_t(nbytes)) {
      bad(fmt::format("data_offsets [{}, {}] hold {} bytes but {}{} needs {}", b, en, en - b, dts, shape_str(t.shape),
                      nbytes));
    }
    t.begin = size_t(b);
    t.end = size_t(en);
    h.tensors.push_back(std::move(t));
  }
  std::stable_sort(h.tensors.begin(), h.tensors.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // Overlaps: with tensors sorted by begin, each non-empty one must start at or after
  // the furthest end seen so far.
  size_t furthest = 0;
  const SafetensorsEntry* furthest_t = nullptr;
  for (const auto& t : h.tensors) {
    if (t.end == t.begin) continue;
    if (furthest_t && t.begin < furthest) {
      invalid("{}: tensor '{}' (bytes [{}, {})) overlaps tensor '{}' (bytes up to {})", source, t.name, t.begin, t.end,
              furthest_t->name, furthest);
    }
    if (t.end > furthest) {
      furthest = t.end;
      furthest_t = &t;
    }
  }
  return h;
}

std::vector<std::pair<std::string, Tensor>> safetensors_views(const SafetensorsHeader& h, const uint8_t* data,
                                                              std::shared_ptr<void> owner, size_t* copied) {
  if (copied) *copied = 0;
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(h.tensors.size());
  static const uint8_t kEmpty[8] = {};
  for (const auto& t : h.tensors) {
    const uint8_t* p = t.end > t.begin ? data + h.data_offset + t.begin : kEmpty;
    size_t es = dtype_size(t.dtype);
    if (reinterpret_cast<uintptr_t>(p) % es != 0) {
      // Misaligned data (a writer that does not order by element size): copy.
      Tensor c = Tensor::empty(t.shape, t.dtype);
      std::memcpy(c.raw(), p, t.end - t.begin);
      if (copied) ++*copied;
      out.emplace_back(t.name, std::move(c));
    } else {
      out.emplace_back(t.name, Tensor::view_of(p, t.shape, t.dtype, owner));
    }
  }
  return out;
}

SafetensorsFile open_safetensors(const std::string& path) {
  SafetensorsFile f;
  f.file = MappedFile::open(path);
  f.header = parse_safetensors(f.file->data(), f.file->size(), path);
  f.tensors = safetensors_views(f.header, f.file->data(), f.file, &f.copied);
  return f;
}

namespace {

// Storage order: by element size, largest first (stable), so each tensor stays aligned.
std::vector<size_t> storage_order(const std::vector<std::pair<std::string, Tensor>>& tensors) {
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].second.dtype()) > dtype_size(tensors[b].second.dtype());
  });
  return order;
}

// The 8-byte length plus the space-padded JSON header; validates every tensor.
std::string build_header(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::vector<size_t>& order,
                         const std::map<std::string, std::string>& metadata, const std::string& where) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  std::set<std::string> names;
  size_t offset = 0;
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    if (name.empty() || name == "__metadata__") invalid("save_safetensors {}: invalid tensor name '{}'", where, name);
    if (!names.insert(name).second) invalid("save_safetensors {}: tensor '{}' given twice", where, name);
    if (!t.defined()) invalid("save_safetensors {}: tensor '{}' is undefined", where, name);
    if (t.device().type != DeviceType::cpu)
      invalid("save_safetensors {}: tensor '{}' is on {}; copy it to the CPU first", where, name,
              device_name(t.device()));
    nlohmann::ordered_json e;
    e["dtype"] = safetensors_dtype_name(t.dtype());
    e["shape"] = t.shape();
    e["data_offsets"] = {offset, offset + t.nbytes()};
    header[name] = std::move(e);
    offset += t.nbytes();
  }
  std::string hs = header.dump();
  hs.append((8 - hs.size() % 8) % 8, ' ');
  std::string out;
  uint64_t n = hs.size();
  for (int i = 0; i < 8; ++i) out.push_back(char((n >> (8 * i)) & 0xff));
  out += hs;
  return out;
}

void write_all(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_error(ErrorKind::resource_exhausted, "cannot write {}: {}", path, std::strerror(errno));
    }
    p += w;
    n -= size_t(w);
  }
}

}  // namespace

std::string serialize_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  auto order = storage_order(tensors);
  std::string out = build_header(tensors, order, metadata, "(memory)");
  for (size_t i : order) {
    const Tensor& t = tensors[i].second;
    if (t.nbytes() == 0) continue;
    Tensor c = t.is_contiguous() ? t : t.clone();
    out.append(static_cast<const char*>(c.raw()), c.nbytes());
  }
  return out;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // The header first (validating every tensor), then the data streamed tensor by
  // tensor so a multi-GB checkpoint is never held twice in memory.
  auto order = storage_order(tensors);
  std::string header = build_header(tensors, order, metadata, path);
  std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw_error(errno == ENOENT ? ErrorKind::not_found : ErrorKind::invalid_request, "cannot create {}: {}", tmp,
                std::strerror(errno));
  }
  try {
    write_all(fd, header.data(), header.size(), tmp);
    for (size_t i : order) {
      const Tensor& t = tensors[i].second;
      if (t.nbytes() == 0) continue;
      Tensor c = t.is_contiguous() ? t : t.clone();
      write_all(fd, static_cast<const char*>(c.raw()), c.nbytes(), tmp);
    }
    if (::fsync(fd) != 0) throw_error(ErrorKind::resource_exhausted, "cannot sync {}: {}", tmp, std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw_error(ErrorKind::resource_exhausted, "cannot close {}: {}", tmp, std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    invalid("cannot rename {} to {}: {}", tmp, path, std::strerror(err));
  }
}

}  // namespace mlxcel
