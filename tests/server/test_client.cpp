#include "test_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cstring>
#include <stdexcept>

namespace mlxcel::server::test {

std::string send_raw(int port, const std::string& raw, int timeout_s) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, (sockaddr*)&a, sizeof a) != 0) {
    ::close(fd);
    throw std::runtime_error("connect failed");
  }
  size_t off = 0;
  while (off < raw.size()) {
    ssize_t n = ::send(fd, raw.data() + off, raw.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early (413)
    off += size_t(n);
  }
  std::string out;
  char buf[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_s * 1000) <= 0) break;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

std::vector<Resp> parse_responses(const std::string& data) {
  std::vector<Resp> out;
  size_t pos = 0;
  while (pos < data.size()) {
    size_t he = data.find("\r\n\r\n", pos);
    if (he == std::string::npos) break;
    Resp r;
    std::string head = data.substr(pos, he - pos);
    r.status = std::atoi(head.substr(9, 3).c_str());
    size_t ls = head.find("\r\n");
    while (ls != std::string::npos) {
      size_t le = head.find("\r\n", ls + 2);
      std::string line = head.substr(ls + 2, le == std::string::npos ? std::string::npos : le - ls - 2);
      size_t c = line.find(':');
      if (c != std::string::npos) {
        std::string k = line.substr(0, c);
        for (char& ch : k) ch = char(std::tolower((unsigned char)ch));
        std::string v = line.substr(c + 1);
        while (!v.empty() && v[0] == ' ') v.erase(0, 1);
        r.headers[k] = v;
      }
      ls = le;
    }
    pos = he + 4;
    if (r.header("transfer-encoding") == "chunked") {
      for (;;) {
        size_t le = data.find("\r\n", pos);
        if (le == std::string::npos) break;
        size_t n = std::stoul(data.substr(pos, le - pos), nullptr, 16);
        pos = le + 2;
        if (n == 0) {
          pos += 2;
          break;
        }
        r.body += data.substr(pos, n);
        pos += n + 2;
      }
    } else {
      size_t n = r.headers.count("content-length") ? std::stoul(r.header("content-length")) : data.size() - pos;
      r.body = data.substr(pos, n);
      pos += n;
    }
    out.push_back(std::move(r));
  }
  return out;
}

Resp call(int port, const std::string& method, const std::string& path, const std::string& body,
          const std::vector<std::string>& headers) {
  std::string raw = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
  for (auto& h : headers) raw += h + "\r\n";
  if (!body.empty() || method == "POST")
    raw += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  raw += "\r\n" + body;
  auto rs = parse_responses(send_raw(port, raw));
  if (rs.empty()) throw std::runtime_error("no response to " + method + " " + path);
  return rs[0];
}

std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> ev;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    size_t end = body.find("\n\n", pos);
    ev.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end == std::string::npos ? body.size() : end + 2;
  }
  return ev;
}

}  // namespace mlxcel::server::test
