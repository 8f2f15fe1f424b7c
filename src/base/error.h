// Errors: every failure mlxcel reports is an mlxcel::Error with a kind that the
// boundaries (HTTP handler, engine row, CLI) map to a status or exit code.
//
//   throw Error(ErrorKind::invalid_request, fmt::format("[rms_norm] bad shape {}", s));
//   MLXCEL_CHECK(n > 0, "n must be positive");   // internal invariants only
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace mlxcel {

enum class ErrorKind { invalid_request, not_found, unsupported, resource_exhausted, internal };

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// Shorthands that format their message with fmt.
template <typename... Args>
[[noreturn]] void throw_error(ErrorKind kind, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(kind, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
[[noreturn]] void invalid(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(ErrorKind::invalid_request, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
[[noreturn]] void unsupported(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(ErrorKind::unsupported, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace mlxcel

// Internal invariant: a failure is a bug in mlxcel, never the user's input.
#define MLXCEL_CHECK(cond, ...)                                                              \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      throw ::mlxcel::Error(::mlxcel::ErrorKind::internal,                                   \
                            ::fmt::format("internal check failed at {}:{}: {}: {}", __FILE__, \
                                          __LINE__, #cond, ::fmt::format(__VA_ARGS__)));     \
    }                                                                                        \
  } while (0)
