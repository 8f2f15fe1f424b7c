// A minimal blocking HTTP/1.1 client over POSIX sockets for the server tests: sends raw
// bytes, reads to EOF (or a number of responses), decodes chunked bodies.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace mlxcel::server::test {

struct Resp {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // de-chunked
  std::string header(const std::string& k) const {
    auto it = headers.find(k);
    return it == headers.end() ? "" : it->second;
  }
};

// Sends `raw` to 127.0.0.1:port and reads until the server closes.
std::string send_raw(int port, const std::string& raw, int timeout_s = 60);
// Parses every response in `data` (keep-alive / pipelining).
std::vector<Resp> parse_responses(const std::string& data);
// One request with Connection: close.
Resp call(int port, const std::string& method, const std::string& path, const std::string& body = "",
          const std::vector<std::string>& headers = {});
// SSE `data:` payloads of a streamed body, in order.
std::vector<std::string> sse_events(const std::string& body);

}  // namespace mlxcel::server::test
