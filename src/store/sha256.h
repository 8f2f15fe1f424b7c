// SHA-256 (FIPS 180-4), incremental. Used to verify downloaded files against the
// hub's LFS object ids.
//
//   Sha256 h; h.update(data, n); std::string hex = h.hex_digest();
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace mlxcel::store {

class Sha256 {
 public:
  Sha256() { reset(); }
  void reset();
  // Feeds `n` bytes.
  void update(const void* data, size_t n);
  // Finishes and returns the 64-character lowercase hex digest; the object is reset.
  std::string hex_digest();

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_{};
  std::array<uint8_t, 64> buf_{};
  size_t buf_len_ = 0;
  uint64_t total_len_ = 0;
};

// Hashes a whole file (throws mlxcel::Error when it cannot be read).
std::string sha256_file(const std::filesystem::path& path);

}  // namespace mlxcel::store
