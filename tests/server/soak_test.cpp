// Soak: 200 concurrent streaming clients on loopback against the in-process server over
// the fixture model, for MLXCEL_SOAK_SECONDS (default 20; the full run is 60).
// Each client loops: a streamed chat or completion request, then either reads it to
// the end (and checks the SSE stream: JSON events, one id, data: [DONE]) or hangs up
// at a random point (FIN or RST). Afterwards: no failures, every slot free (/slots),
// nothing processing or deferred (/metrics), the server still answers, and the
// process's RSS (/proc/self/status) after the run is close to what it was after the
// warm-up third.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "fixture.h"
#include "test_client.h"

namespace mlxcel::server {
namespace {

using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

long rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

struct Counters {
  std::atomic<int> completed{0}, hung_up{0}, busy{0}, failed{0};
  std::mutex mu;
  std::string first_failure;
  void fail(const std::string& why) {
    failed++;
    std::lock_guard<std::mutex> lk(mu);
    if (first_failure.empty()) first_failure = why;
  }
};

int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void hang_up(int fd, bool reset) {
  if (reset) {
    linger l{1, 0};  // RST instead of FIN
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  ::close(fd);
}

// Checks a complete streamed response (headers + de-chunked SSE body).
void check_stream(const std::string& raw, Counters& c) {
  auto rs = test::parse_responses(raw);
  if (rs.size() != 1) return c.fail("not one HTTP response: " + raw.substr(0, 200));
  if (rs[0].status == 503) return void(c.busy++);
  if (rs[0].status != 200) return c.fail("status " + std::to_string(rs[0].status) + ": " + rs[0].body);
  auto evs = test::sse_events(rs[0].body);
  if (evs.empty() || evs.back() != "[DONE]") return c.fail("no [DONE]: " + rs[0].body.substr(0, 300));
  std::string id;
  for (size_t i = 0; i + 1 < evs.size(); ++i) {
    json j = json::parse(evs[i], nullptr, false);
    if (!j.is_object() || j.contains("error")) return c.fail("bad event: " + evs[i]);
    if (id.empty()) id = j.value("id", "");
    if (j.value("id", "") != id) return c.fail("two ids in one stream");
  }
  c.completed++;
}

void client(int port, int seed, clock_type::time_point until, Counters& c) {
  std::mt19937 rng{uint32_t(seed)};
  while (clock_type::now() < until) {
    const bool chat = rng() % 2;
    json body = {{"stream", true},
                 {"max_tokens", 4 + int(rng() % 24)},
                 {"temperature", (rng() % 3) * 0.5},
                 {"seed", int(rng() % 1000)}};
    if (chat) body["messages"] = {{{"role", "user"}, {"content", "hello world " + std::to_string(rng() % 50)}}};
    else body["prompt"] = "hello " + std::to_string(rng() % 50);
    const std::string b = body.dump();
    const std::string req = std::string("POST ") + (chat ? "/v1/chat/completions" : "/v1/completions") +
                            " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                            "Content-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b;
    int fd = connect_to(port);
    if (fd < 0) {
      c.fail("connect failed");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != ssize_t(req.size())) {
      ::close(fd);
      c.fail("send failed");
      continue;
    }
    // 35%: hang up after 0..~600 bytes of the stream.
    const bool disconnect = rng() % 100 < 35;
    const size_t cut = disconnect ? rng() % 600 : SIZE_MAX;
    std::string raw;
    char buf[4096];
    bool eof = false;
    while (raw.size() < cut) {
      ssize_t n = ::recv(fd, buf, std::min(sizeof buf, cut - raw.size()), 0);
      if (n <= 0) {
        eof = n == 0;
        break;
      }
      raw.append(buf, size_t(n));
    }
    if (disconnect && !eof) {
      hang_up(fd, rng() % 2);
      c.hung_up++;
      continue;
    }
    ::close(fd);
    if (!eof) {
      c.fail("read failed or timed out after " + std::to_string(raw.size()) + " bytes");
      continue;
    }
    check_stream(raw, c);
  }
}

double metric(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  return -1;
}

TEST(ServerSoak, ConcurrentStreamingClientsWithRandomDisconnects) {
  const char* env = std::getenv("MLXCEL_SOAK_SECONDS");
  const int seconds = env ? std::max(3, std::atoi(env)) : 20;
  const int n_clients = 200;
  std::string dir = test::make_model_dir();
  auto srv = test::start_server(dir, {"-np", "16", "--max-queue", "512", "--metrics", "--threads-http", "2"});
  const int port = srv->port();
  Counters c;
  const auto t0 = clock_type::now();
  // Warm-up third, then the RSS baseline, then the rest.
  const auto warm_until = t0 + std::chrono::seconds(seconds) / 3;
  const auto until = t0 + std::chrono::seconds(seconds);
  std::vector<std::thread> threads;
  for (int i = 0; i < n_clients; ++i) threads.emplace_back(client, port, i + 1, warm_until, std::ref(c));
  for (auto& t : threads) t.join();
  threads.clear();
  const long rss_warm = rss_kib();
  for (int i = 0; i < n_clients; ++i) threads.emplace_back(client, port, 1000 + i, until, std::ref(c));
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(clock_type::now() - t0).count();

  // Every generation ends (cancelled ones included): nothing processing or waiting.
  std::string slots, metrics;
  for (int i = 0; i < 500; ++i) {
    slots = test::call(port, "GET", "/slots").body;
    metrics = test::call(port, "GET", "/metrics").body;
    if (slots.find("\"is_processing\":true") == std::string::npos &&
        metric(metrics, "llamacpp:requests_processing") == 0 && metric(metrics, "llamacpp:requests_deferred") == 0 &&
        metric(metrics, "mlxcel_active_generations") == 0)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const long rss_end = rss_kib();
  EXPECT_EQ(slots.find("\"is_processing\":true"), std::string::npos) << slots;
  EXPECT_EQ(metric(metrics, "llamacpp:requests_processing"), 0) << metrics;
  EXPECT_EQ(metric(metrics, "llamacpp:requests_deferred"), 0) << metrics;
  EXPECT_EQ(metric(metrics, "mlxcel_active_generations"), 0) << metrics;
  EXPECT_EQ(metric(metrics, "llamacpp:kv_cache_usage_ratio"), 0) << metrics;
  // Still serving, with a correct answer.
  auto ok = test::call(port, "POST", "/v1/chat/completions",
                       json({{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 3}}).dump());
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(test::call(port, "GET", "/health").status, 200);

  EXPECT_EQ(c.failed.load(), 0) << c.first_failure;
  EXPECT_GT(c.completed.load(), n_clients);
  EXPECT_GT(c.hung_up.load(), n_clients / 4);
  EXPECT_EQ(c.busy.load(), 0);
  // Memory: flat after the warm-up (allocator arenas and caches are warm by then).
  const long growth = rss_end - rss_warm;
  EXPECT_LT(growth, 48 * 1024) << "RSS grew from " << rss_warm << " KiB to " << rss_end << " KiB";
  std::printf("soak: %d clients, %.1f s, %d streams completed, %d hung up, %d busy, %d failed; "
              "generated tokens %.0f; RSS after warm-up %ld KiB, at the end %ld KiB (%+ld KiB)\n",
              n_clients, elapsed, c.completed.load(), c.hung_up.load(), c.busy.load(), c.failed.load(),
              metric(metrics, "llamacpp:tokens_predicted_total"), rss_warm, rss_end, growth);
  srv.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mlxcel::server
