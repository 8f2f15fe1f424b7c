#include "base/error.h"

namespace mlxcel {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::invalid_request: return "invalid_request";
    case ErrorKind::not_found: return "not_found";
    case ErrorKind::unsupported: return "unsupported";
    case ErrorKind::resource_exhausted: return "resource_exhausted";
    case ErrorKind::internal: return "internal";
  }
  return "internal";
}

}  // namespace mlxcel
