// The Beast/Asio side of http.h. One strand per connection; requests are parsed by
// Beast, responses are serialized here (fixed-length or chunked). While a response is
// in progress the connection keeps reading: EOF means the client went away (the
// writer's on_close fires, which cancels generation), a pipelined request waits.
#include "server/http.h"

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <list>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#ifdef MLXCEL_SERVER_TLS
#include <boost/asio/ssl.hpp>
#endif

#include "base/error.h"

namespace mlxcel::server {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using unix_sock = net::local::stream_protocol;

std::string HttpRequest::header(const std::string& lower_name) const {
  for (auto& [k, v] : headers)
    if (k == lower_name) return v;
  return {};
}

namespace {

std::string clean_header(std::string v) {
  for (char& c : v)
    if (c == '\r' || c == '\n') c = ' ';
  return v;
}

std::string serialize_head(const HttpResponse& r, bool keep_alive, bool chunked,
                           const std::vector<std::pair<std::string, std::string>>& extra) {
  std::string reason(http::obsolete_reason(http::status(r.status)));
  std::string s = fmt::format("HTTP/1.1 {} {}\r\nServer: mlxcel\r\n", r.status, reason);
  if (!r.content_type.empty()) s += "Content-Type: " + clean_header(r.content_type) + "\r\n";
  if (chunked) s += "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n";
  else s += fmt::format("Content-Length: {}\r\n", r.body.size());
  s += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  for (auto& [k, v] : r.headers) s += clean_header(k) + ": " + clean_header(v) + "\r\n";
  for (auto& [k, v] : extra) s += clean_header(k) + ": " + clean_header(v) + "\r\n";
  s += "\r\n";
  return s;
}

// What the Writer needs from a connection (type-erased over the stream type).
class ConnBase {
 public:
  virtual ~ConnBase() = default;
  virtual void post(std::function<void()> fn) = 0;
  virtual void queue_bytes(std::string bytes) = 0;       // strand only
  virtual void response_done(ResponseWriter* w) = 0;     // strand only
  virtual void close_now() = 0;                          // any thread
};

class Writer : public ResponseWriter, public std::enable_shared_from_this<Writer> {
 public:
  Writer(std::shared_ptr<ConnBase> conn, bool keep_alive) : conn_(std::move(conn)), keep_alive_(keep_alive) {}

  void send(HttpResponse r) override {
    std::string bytes = serialize_head(r, keep_alive_, false, extras()) + r.body;
    auto self = shared_from_this();
    conn_->post([self, bytes = std::move(bytes)]() mutable {
      if (self->started_) return;
      self->started_ = self->done_ = true;
      self->conn_->queue_bytes(std::move(bytes));
      self->conn_->response_done(self.get());
    });
  }
  void start_stream(HttpResponse head) override {
    std::string bytes = serialize_head(head, keep_alive_, true, extras());
    auto self = shared_from_this();
    conn_->post([self, bytes = std::move(bytes)]() mutable {
      if (self->started_) return;
      self->started_ = self->streaming_ = true;
      self->conn_->queue_bytes(std::move(bytes));
    });
  }
  void write(std::string data) override {
    if (data.empty()) return;
    std::string bytes = fmt::format("{:x}\r\n", data.size()) + data + "\r\n";
    auto self = shared_from_this();
    conn_->post([self, bytes = std::move(bytes)]() mutable {
      if (!self->streaming_ || self->done_) return;
      self->conn_->queue_bytes(std::move(bytes));
    });
  }
  void end() override {
    auto self = shared_from_this();
    conn_->post([self]() {
      if (!self->streaming_ || self->done_) return;
      self->done_ = true;
      self->conn_->queue_bytes("0\r\n\r\n");
      self->conn_->response_done(self.get());
    });
  }
  void add_header(std::string name, std::string value) override {
    std::lock_guard<std::mutex> lk(mu_);
    extra_.emplace_back(std::move(name), std::move(value));
  }
  bool closed() const override { return closed_.load(); }
  void on_close(std::function<void()> fn) override {
    bool now = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (closed_.load()) now = true;
      else on_close_ = std::move(fn);
    }
    if (now && fn) fn();
  }
  // Strand: the client went away.
  void mark_closed() {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (closed_.exchange(true)) return;
      fn = std::move(on_close_);
    }
    if (fn && !done_) fn();
  }
  bool done() const { return done_; }

 private:
  std::vector<std::pair<std::string, std::string>> extras() {
    std::lock_guard<std::mutex> lk(mu_);
    return extra_;
  }
  std::shared_ptr<ConnBase> conn_;
  bool keep_alive_;
  std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> extra_;
  std::function<void()> on_close_;
  std::atomic<bool> closed_{false};
  bool started_ = false, streaming_ = false, done_ = false;  // strand only
};

struct Shared {
  HttpConfig cfg;
  HttpHandler handler;
};

template <class Stream>
class Connection : public ConnBase, public std::enable_shared_from_this<Connection<Stream>> {
 public:
  template <class... Args>
  Connection(std::shared_ptr<Shared> sh, Args&&... args)
      : sh_(std::move(sh)), stream_(std::forward<Args>(args)...), idle_(stream_.get_executor()) {}

  void start() {
    auto self = this->shared_from_this();
    if constexpr (is_tls) {
      arm_idle();
      stream_.async_handshake(net::ssl::stream_base::server, [self](beast::error_code ec) {
        if (ec) return self->close_now();
        self->do_read();
      });
    } else {
      net::dispatch(stream_.get_executor(), [self] {
        self->arm_idle();  // a connection that never sends a request is closed too
        self->do_read();
      });
    }
  }

  void post(std::function<void()> fn) override { net::post(stream_.get_executor(), std::move(fn)); }

  void queue_bytes(std::string bytes) override {
    if (closed_) return;
    // A client that stops reading a stream must not grow memory without bound.
    outq_bytes_ += bytes.size();
    if (outq_bytes_ > kMaxQueuedBytes) return close_now();
    outq_.push_back(std::move(bytes));
    do_write();
  }

  void response_done(ResponseWriter* w) override {
    if (current_.get() != w) return;
    current_.reset();
    if (!keep_alive_) {
      close_after_write_ = true;
      if (!writing_) shutdown();
      return;
    }
    if (pending_) {
      HttpRequest req = std::move(*pending_);
      pending_.reset();
      dispatch(std::move(req));
    } else if (pending_status_) {
      fail_request(pending_status_, pending_msg_);
    } else {
      arm_idle();
      do_read();
    }
  }

  void close_now() override {
    auto self = this->shared_from_this();
    net::dispatch(stream_.get_executor(), [self] {
      if (self->closed_) return;
      self->closed_ = true;
      self->idle_.cancel();
      if (self->current_) self->current_->mark_closed();
      self->current_.reset();  // breaks the writer <-> connection cycle
      beast::error_code ec;
      beast::get_lowest_layer(self->stream_).close(ec);
    });
  }

 private:
  static constexpr bool is_tls =
#ifdef MLXCEL_SERVER_TLS
      std::is_same_v<Stream, net::ssl::stream<tcp::socket>>;
#else
      false;
#endif

  void arm_idle() {
    idle_.expires_after(std::chrono::seconds(sh_->cfg.idle_timeout_s));
    std::weak_ptr<Connection> weak = this->shared_from_this();
    idle_.async_wait([weak](beast::error_code ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      if (!self->current_) self->close_now();  // a response in progress has its own deadline
    });
  }

  void do_read() {
    if (reading_ || closed_) return;
    reading_ = true;
    parser_.emplace();
    parser_->body_limit(sh_->cfg.max_body_bytes);
    parser_->header_limit(64 * 1024);
    auto self = this->shared_from_this();
    http::async_read_header(stream_, buf_, *parser_, [self](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  // Headers are in: answer `Expect: 100-continue` (curl sends it before large bodies and
  // would otherwise wait a second), then read the body.
  void on_header(beast::error_code ec) {
    if (ec || closed_ || parser_->is_done()) return on_read(ec);
    const auto& msg = parser_->get();
    auto it = msg.find(http::field::expect);
    if (it != msg.end() && beast::iequals(it->value(), "100-continue") && !current_)
      queue_bytes("HTTP/1.1 100 Continue\r\n\r\n");
    auto self = this->shared_from_this();
    http::async_read(stream_, buf_, *parser_, [self](beast::error_code e, size_t) { self->on_read(e); });
  }

  void on_read(beast::error_code ec) {
    reading_ = false;
    if (closed_) return;
    if (ec == http::error::body_limit || ec == http::error::header_limit) {
      const bool body = ec == http::error::body_limit;
      int status = body ? 413 : 431;
      std::string msg = body ? fmt::format("request body is larger than the limit of {} bytes", sh_->cfg.max_body_bytes)
                             : "request headers are too large";
      if (current_) {
        pending_status_ = status;
        pending_msg_ = msg;
      } else {
        fail_request(status, msg);
      }
      return;
    }
    if (ec) {
      // EOF, reset, timeout, or a malformed request while idle.
      const bool bad_request = ec.category() == beast::error_code(http::error::bad_target).category() &&
                               ec != http::error::end_of_stream && ec != http::error::partial_message;
      if (bad_request && !current_) return fail_request(400, std::string("malformed HTTP request: ") + ec.message());
      return close_now();
    }
    auto msg = parser_->release();
    HttpRequest req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    size_t q = req.target.find('?');
    req.path = q == std::string::npos ? req.target : req.target.substr(0, q);
    for (auto& f : msg) {
      std::string name(f.name_string());
      for (char& c : name) c = char(std::tolower((unsigned char)c));
      req.headers.emplace_back(std::move(name), std::string(f.value()));
    }
    req.body = std::move(msg.body());
    const bool ka = msg.keep_alive();
    if (current_) {
      if (keep_alive_) {
        pending_ = std::move(req);
        pending_keep_alive_ = ka;
      }
      return;  // no further reads until the pending request is answered
    }
    keep_alive_ = ka;
    dispatch(std::move(req));
  }

  void dispatch(HttpRequest req) {
    if (pending_keep_alive_.has_value()) {
      keep_alive_ = *pending_keep_alive_;
      pending_keep_alive_.reset();
    }
    idle_.cancel();
    current_ = std::make_shared<Writer>(this->shared_from_this(), keep_alive_);
    auto w = current_;
    try {
      sh_->handler(std::move(req), w);
    } catch (const std::exception&) {
      HttpResponse r;
      r.status = 500;
      r.body = R"({"error":{"message":"internal error","type":"server_error","param":null,"code":null}})";
      w->send(std::move(r));
    }
    // Keep reading: detects a client that goes away and queues a pipelined request.
    do_read();
  }

  void fail_request(int status, const std::string& msg) {
    keep_alive_ = false;
    pending_status_ = 0;
    current_ = std::make_shared<Writer>(this->shared_from_this(), false);
    HttpResponse r;
    r.status = status;
    const char* code = status == 413 ? "request_too_large" : status == 431 ? "headers_too_large" : "bad_request";
    r.body = fmt::format(R"({{"error":{{"message":"{}","type":"invalid_request_error","param":null,"code":"{}"}}}})",
                         msg, code);
    current_->send(std::move(r));
  }

  void do_write() {
    if (writing_ || outq_.empty() || closed_) return;
    writing_ = true;
    auto self = this->shared_from_this();
    net::async_write(stream_, net::buffer(outq_.front()), [self](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (ec) return self->close_now();
      self->outq_bytes_ -= self->outq_.front().size();
      self->outq_.pop_front();
      if (!self->outq_.empty()) return self->do_write();
      if (self->close_after_write_) self->shutdown();
    });
  }

  // Half-closes and drains what the client still sends (e.g. the rest of a body over
  // the limit) for up to 2 s: closing with unread data would reset the connection and
  // could destroy the response before the client reads it.
  void shutdown() {
    if constexpr (is_tls) {
      close_now();
    } else {
      beast::error_code ec;
      stream_.shutdown(net::socket_base::shutdown_send, ec);
      if (!reading_) drain();
      idle_.expires_after(std::chrono::seconds(2));
      auto self = this->shared_from_this();
      idle_.async_wait([self](beast::error_code e) {
        if (!e) self->close_now();
      });
    }
  }
  void drain() {
    auto self = this->shared_from_this();
    stream_.async_read_some(net::buffer(scratch_), [self](beast::error_code ec, size_t) {
      if (ec || self->closed_) return self->close_now();
      self->drain();
    });
  }

  std::shared_ptr<Shared> sh_;
  Stream stream_;
  net::steady_timer idle_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<Writer> current_;
  std::optional<HttpRequest> pending_;
  std::optional<bool> pending_keep_alive_;
  int pending_status_ = 0;
  std::string pending_msg_;
  static constexpr size_t kMaxQueuedBytes = 64u << 20;
  std::deque<std::string> outq_;
  size_t outq_bytes_ = 0;
  char scratch_[4096];
  bool reading_ = false, writing_ = false, closed_ = false, keep_alive_ = true, close_after_write_ = false;
};

}  // namespace

struct HttpServer::Impl {
  std::shared_ptr<Shared> sh;
  net::io_context ioc;
  std::optional<tcp::acceptor> tcp_acc;
  std::optional<unix_sock::acceptor> unix_acc;
#ifdef MLXCEL_SERVER_TLS
  std::unique_ptr<net::ssl::context> ssl_ctx;
#endif
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::condition_variable cv;
  bool stopped = false;
  int bound_port = 0;

  void accept_tcp() {
    tcp_acc->async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket sock) {
      if (ec == net::error::operation_aborted || !tcp_acc->is_open()) return;
      if (!ec) {
        beast::error_code ig;
        sock.set_option(tcp::no_delay(true), ig);
#ifdef MLXCEL_SERVER_TLS
        if (ssl_ctx) {
          std::make_shared<Connection<net::ssl::stream<tcp::socket>>>(sh, std::move(sock), *ssl_ctx)->start();
        } else
#endif
          std::make_shared<Connection<tcp::socket>>(sh, std::move(sock))->start();
      }
      accept_tcp();
    });
  }
  void accept_unix() {
    unix_acc->async_accept(net::make_strand(ioc), [this](beast::error_code ec, unix_sock::socket sock) {
      if (ec == net::error::operation_aborted || !unix_acc->is_open()) return;
      if (!ec) std::make_shared<Connection<unix_sock::socket>>(sh, std::move(sock))->start();
      accept_unix();
    });
  }
};

HttpServer::HttpServer(HttpConfig cfg, HttpHandler handler) : impl_(std::make_unique<Impl>()) {
  impl_->sh = std::make_shared<Shared>(Shared{std::move(cfg), std::move(handler)});
}

HttpServer::~HttpServer() {
  stop();
  for (auto& t : impl_->threads)
    if (t.joinable()) t.join();
}

bool HttpServer::tls_available() {
#ifdef MLXCEL_SERVER_TLS
  return true;
#else
  return false;
#endif
}

void HttpServer::start() {
  const HttpConfig& cfg = impl_->sh->cfg;
  beast::error_code ec;
  const bool is_unix = cfg.host.size() > 5 && cfg.host.compare(cfg.host.size() - 5, 5, ".sock") == 0;
  if (!cfg.ssl_key_file.empty()) {
#ifdef MLXCEL_SERVER_TLS
    if (is_unix) invalid("TLS is not supported on a Unix socket");
    impl_->ssl_ctx = std::make_unique<net::ssl::context>(net::ssl::context::tls_server);
    impl_->ssl_ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                                net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                                net::ssl::context::no_tlsv1_1);
    impl_->ssl_ctx->use_certificate_chain_file(cfg.ssl_cert_file, ec);
    if (ec) invalid("--ssl-cert-file {}: {}", cfg.ssl_cert_file, ec.message());
    impl_->ssl_ctx->use_private_key_file(cfg.ssl_key_file, net::ssl::context::pem, ec);
    if (ec) invalid("--ssl-key-file {}: {}", cfg.ssl_key_file, ec.message());
#else
    unsupported("TLS was not built into this mlxcel-server (rebuild with libssl-dev installed)");
#endif
  }
  if (is_unix) {
    std::error_code fec;
    if (std::filesystem::is_socket(cfg.host, fec)) std::filesystem::remove(cfg.host, fec);
    impl_->unix_acc.emplace(impl_->ioc);
    unix_sock::endpoint ep(cfg.host);
    impl_->unix_acc->open(ep.protocol(), ec);
    if (!ec) impl_->unix_acc->bind(ep, ec);
    if (!ec) impl_->unix_acc->listen(net::socket_base::max_listen_connections, ec);
    if (ec) throw_error(ErrorKind::invalid_request, "cannot listen on {}: {}", cfg.host, ec.message());
    impl_->accept_unix();
  } else {
    tcp::resolver res(impl_->ioc);
    auto results = res.resolve(cfg.host, std::to_string(cfg.port), ec);
    if (ec || results.empty()) invalid("cannot resolve --host {}: {}", cfg.host, ec.message());
    tcp::endpoint ep = results.begin()->endpoint();
    impl_->tcp_acc.emplace(impl_->ioc);
    impl_->tcp_acc->open(ep.protocol(), ec);
    if (!ec) impl_->tcp_acc->set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) impl_->tcp_acc->bind(ep, ec);
    if (!ec) impl_->tcp_acc->listen(net::socket_base::max_listen_connections, ec);
    if (ec) invalid("cannot listen on {}:{}: {}", cfg.host, cfg.port, ec.message());
    impl_->bound_port = impl_->tcp_acc->local_endpoint().port();
    impl_->accept_tcp();
  }
  impl_->work.emplace(impl_->ioc.get_executor());
  const int n = std::max(1, cfg.n_threads);
  for (int i = 0; i < n; ++i) impl_->threads.emplace_back([this] { impl_->ioc.run(); });
}

int HttpServer::port() const { return impl_->bound_port; }

void HttpServer::stop() {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
  }
  net::post(impl_->ioc, [this] {
    beast::error_code ec;
    if (impl_->tcp_acc) impl_->tcp_acc->close(ec);
    if (impl_->unix_acc) impl_->unix_acc->close(ec);
  });
  impl_->work.reset();
  impl_->ioc.stop();
  // No handler runs after stop() returns (unless stop() is called from a handler).
  for (auto& t : impl_->threads)
    if (t.joinable() && t.get_id() != std::this_thread::get_id()) t.join();
  impl_->cv.notify_all();
}

void HttpServer::wait() {
  std::unique_lock<std::mutex> lk(impl_->mu);
  impl_->cv.wait(lk, [&] { return impl_->stopped; });
}

}  // namespace mlxcel::server
