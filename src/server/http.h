// HTTP/1.1 transport (Boost.Beast over Asio, kept out of this header): keep-alive,
// pipelining, a body-size limit (413), TCP, Unix sockets (a host ending in .sock) and
// optional TLS. Handlers run on an io thread and must not block: they answer at once
// or keep the ResponseWriter and answer later from any thread (streaming included).
//
//   HttpServer srv({.host = "127.0.0.1", .port = 0}, [](HttpRequest req, WriterPtr w) {
//     w->send({.status = 200, .body = "{}"});
//   });
//   srv.start();   // binds; srv.port() is the bound port
//   srv.wait();    // until stop()
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace mlxcel::server {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query as sent
  std::string path;    // without the query
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  // The value of a header (lower-case name), "" if absent.
  std::string header(const std::string& lower_name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// One response. Thread-safe: every call is posted onto the connection's strand.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  // A whole response (ends this request). Later calls are ignored.
  virtual void send(HttpResponse r) = 0;
  // Starts a chunked response (e.g. text/event-stream); then write(), then end().
  virtual void start_stream(HttpResponse head) = 0;
  virtual void write(std::string data) = 0;
  virtual void end() = 0;
  // Headers added to whatever response this writer sends (CORS).
  virtual void add_header(std::string name, std::string value) = 0;
  // True once the client went away (read EOF/reset, failed write).
  virtual bool closed() const = 0;
  // Called once (from an io thread) if the client goes away before end()/send().
  virtual void on_close(std::function<void()> fn) = 0;
};
using WriterPtr = std::shared_ptr<ResponseWriter>;

using HttpHandler = std::function<void(HttpRequest, WriterPtr)>;

struct HttpConfig {
  std::string host = "127.0.0.1";  // ends in .sock: a Unix socket path
  int port = 8080;                 // 0: any free port
  int n_threads = 2;
  size_t max_body_bytes = 8u << 20;
  int idle_timeout_s = 600;        // keep-alive / read timeout
  std::string ssl_key_file, ssl_cert_file;  // both set: TLS
};

class HttpServer {
 public:
  HttpServer(HttpConfig cfg, HttpHandler handler);
  ~HttpServer();
  // Binds and starts the io threads. Throws Error (address in use, bad TLS files, ...).
  void start();
  int port() const;  // the bound TCP port (0 for a Unix socket)
  void stop();       // closes the listener and connections; idempotent
  void wait();       // blocks until stop()
  static bool tls_available();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlxcel::server
