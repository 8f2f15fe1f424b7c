#include "store/hub.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "store/sha256.h"

namespace mlxcel::store {
namespace {

using Clock = std::chrono::steady_clock;

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

void global_curl_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// Percent-encodes `s`; '/' is kept when `keep_slash`.
std::string url_encode(const std::string& s, bool keep_slash) {
  std::string out;
  for (unsigned char c : s) {
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/');
    if (plain) {
      out += char(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

std::string trim_endpoint(std::string e) {
  while (!e.empty() && e.back() == '/') e.pop_back();
  return e;
}

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Strips W/ and quotes from an ETag value.
std::string clean_etag(std::string v) {
  if (v.rfind("W/", 0) == 0) v = v.substr(2);
  v.erase(std::remove(v.begin(), v.end(), '"'), v.end());
  return v;
}

// ---- Ctrl-C ---------------------------------------------------------------------------

std::atomic<bool> g_interrupted{false};

extern "C" void on_interrupt(int) { g_interrupted.store(true); }

// Installs a SIGINT/SIGTERM handler for its lifetime that asks transfers to stop.
class InterruptGuard {
 public:
  InterruptGuard() {
    g_interrupted.store(false);
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~InterruptGuard() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

// ---- One HTTP exchange -----------------------------------------------------------------

// Response headers of the last hop, plus the hub's X-Linked-* headers of any hop
// (they come on the redirect to the CDN).
struct Headers {
  long status = 0;
  int64_t content_length = -1;
  int64_t range_total = -1;  // from Content-Range: bytes a-b/total
  int64_t linked_size = -1;
  std::string linked_etag;
  std::string etag;
  std::string error_message;  // X-Error-Message
};

size_t header_cb(char* data, size_t size, size_t n, void* user) {
  auto* h = static_cast<Headers*>(user);
  std::string line(data, size * n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (line.rfind("HTTP/", 0) == 0) {
    size_t sp = line.find(' ');
    h->status = sp == std::string::npos ? 0 : std::atol(line.c_str() + sp + 1);
    h->content_length = -1;
    h->range_total = -1;
    h->etag.clear();
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon == std::string::npos) return size * n;
  std::string key = lower(line.substr(0, colon));
  std::string value = line.substr(colon + 1);
  while (!value.empty() && value.front() == ' ') value.erase(0, 1);
  if (key == "content-length") {
    h->content_length = std::atoll(value.c_str());
  } else if (key == "content-range") {
    size_t slash = value.find('/');
    if (slash != std::string::npos && value[slash + 1] != '*')
      h->range_total = std::atoll(value.c_str() + slash + 1);
  } else if (key == "x-linked-size") {
    h->linked_size = std::atoll(value.c_str());
  } else if (key == "x-linked-etag") {
    h->linked_etag = clean_etag(value);
  } else if (key == "etag") {
    h->etag = clean_etag(value);
  } else if (key == "x-error-message") {
    h->error_message = value;
  }
  return size * n;
}

struct CurlHandle {
  CURL* h;
  curl_slist* headers = nullptr;
  CurlHandle() : h(curl_easy_init()) {
    if (!h) throw Error(ErrorKind::internal, "[download] curl_easy_init failed");
  }
  ~CurlHandle() {
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
  }
  CurlHandle(const CurlHandle&) = delete;
  CurlHandle& operator=(const CurlHandle&) = delete;
};

void setup_common(CurlHandle& c, const std::string& url, const DownloadOptions& opts,
                  Headers* hdrs) {
  curl_easy_setopt(c.h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c.h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c.h, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c.h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c.h, CURLOPT_CONNECTTIMEOUT, opts.connect_timeout_s);
  curl_easy_setopt(c.h, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c.h, CURLOPT_LOW_SPEED_TIME, opts.stall_timeout_s);
  curl_easy_setopt(c.h, CURLOPT_USERAGENT, "mlxcel/0.1");
  curl_easy_setopt(c.h, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(c.h, CURLOPT_HEADERDATA, hdrs);
  // NOTE: curl drops this header on redirects to another host (the CDN), as it should.
  if (!opts.token.empty()) {
    c.headers = curl_slist_append(c.headers, ("Authorization: Bearer " + opts.token).c_str());
  }
  c.headers = curl_slist_append(c.headers, "Accept-Encoding: identity");
  curl_easy_setopt(c.h, CURLOPT_HTTPHEADER, c.headers);
}

size_t string_write_cb(char* data, size_t size, size_t n, void* user) {
  auto* s = static_cast<std::string*>(user);
  if (s->size() < (64u << 20)) s->append(data, size * n);
  return size * n;
}

// Plain words for an HTTP failure from the hub.
std::string describe_http_error(long status, const std::string& repo_id,
                                const DownloadOptions& opts, const std::string& body,
                                const std::string& x_error) {
  std::string detail = x_error;
  if (detail.empty() && !body.empty()) {
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_string())
      detail = j["error"].get<std::string>();
  }
  std::string suffix = detail.empty() ? "" : fmt::format(" ({})", detail);
  switch (status) {
    case 401:
      if (opts.token.empty()) {
        return fmt::format(
            "HTTP 401 from {}: {} is private, gated or does not exist; set HF_TOKEN to a token "
            "with access{}",
            opts.endpoint, repo_id, suffix);
      }
      return fmt::format("HTTP 401 from {}: the token in HF_TOKEN was rejected for {}{}",
                         opts.endpoint, repo_id, suffix);
    case 403:
      return fmt::format(
          "HTTP 403 from {}: access to {} is forbidden; it may be gated (accept its license on "
          "the hub) or the token lacks permission{}",
          opts.endpoint, repo_id, suffix);
    case 404:
      return fmt::format("HTTP 404 from {}: {} not found (revision '{}'){}", opts.endpoint,
                         repo_id, opts.revision, suffix);
    default:
      return fmt::format("HTTP {} from {} for {}{}", status, opts.endpoint, repo_id, suffix);
  }
}

ErrorKind kind_for_status(long status) {
  if (status == 404) return ErrorKind::not_found;
  if (status == 401 || status == 403) return ErrorKind::invalid_request;
  return ErrorKind::internal;
}

// ---- One file --------------------------------------------------------------------------

// Shared state of one repo download.
struct Job {
  const DownloadOptions* opts = nullptr;
  std::string repo_id;
  std::atomic<uint64_t> done_bytes{0};      // bytes on disk (incl. resumed parts)
  std::atomic<uint64_t> fetched_bytes{0};   // bytes received in this call
  std::atomic<uint64_t> total_bytes{0};     // sum of known sizes
  std::atomic<bool> cancel{false};          // another file failed
  bool stopped() const { return cancel.load() || g_interrupted.load(); }
};

// Why a single attempt failed.
enum class Outcome { ok, retry, fatal };

struct FileTask {
  HubFile file;
  fs::path part;   // temp/<name>.part
  fs::path final;  // temp/<name>
};

// Writes the body of one response into the .part file, hashing as it goes.
struct Sink {
  Job* job = nullptr;
  Headers* hdrs = nullptr;
  FILE* f = nullptr;
  Sha256* hash = nullptr;
  uint64_t offset = 0;  // bytes already in the part file when the request was sent
  uint64_t written = 0;  // bytes of this response written
  bool started = false;
  bool restart = false;  // the server ignored Range: start over
  int write_errno = 0;
  std::string error_body;  // body of an error response
};

size_t file_write_cb(char* data, size_t size, size_t n, void* user) {
  auto* s = static_cast<Sink*>(user);
  size_t bytes = size * n;
  if (s->hdrs->status >= 300) {  // an error page: keep a little of it for the message
    if (s->error_body.size() < 4096) s->error_body.append(data, bytes);
    return bytes;
  }
  if (!s->started) {
    s->started = true;
    if (s->offset > 0 && s->hdrs->status == 200) {
      // The server sent the whole file: drop what we had.
      s->restart = true;
      s->job->done_bytes -= s->offset;
      if (ftruncate(fileno(s->f), 0) != 0 || std::fseek(s->f, 0, SEEK_SET) != 0) {
        s->write_errno = errno;
        return 0;
      }
      s->hash->reset();
      s->offset = 0;
    }
  }
  if (std::fwrite(data, 1, bytes, s->f) != bytes) {
    s->write_errno = errno ? errno : EIO;
    return 0;
  }
  s->hash->update(data, bytes);
  s->written += bytes;
  s->job->done_bytes += bytes;
  s->job->fetched_bytes += bytes;
  return bytes;
}

int xferinfo_cb(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* job = static_cast<Job*>(user);
  return job->stopped() ? 1 : 0;
}

std::string write_error_text(int err, const fs::path& p) {
  if (err == ENOSPC || err == EDQUOT)
    return fmt::format("disk full while writing {}", p.string());
  if (err == EACCES || err == EPERM || err == EROFS)
    return fmt::format("permission denied writing {}", p.string());
  return fmt::format("cannot write {}: {}", p.string(), std::strerror(err));
}

ErrorKind write_error_kind(int err) {
  return (err == ENOSPC || err == EDQUOT) ? ErrorKind::resource_exhausted
                                           : ErrorKind::invalid_request;
}

// Makes one attempt at `task`; on failure `why` says what went wrong.
Outcome fetch_once(Job& job, const FileTask& task, std::string* why, ErrorKind* kind) {
  const DownloadOptions& opts = *job.opts;
  std::error_code ec;
  uint64_t offset = 0;
  if (fs::exists(task.part, ec)) offset = fs::file_size(task.part, ec);
  if (ec) offset = 0;
  if (task.file.size && offset > *task.file.size) {
    fs::resize_file(task.part, 0, ec);
    job.done_bytes -= offset;
    offset = 0;
  }

  Sha256 hash;
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(task.part.c_str(), offset ? "r+b" : "wb"),
                                          &std::fclose);
  if (!f) {
    *kind = write_error_kind(errno);
    *why = write_error_text(errno, task.part);
    return Outcome::fatal;
  }
  if (offset > 0) {  // hash what is already there, then append
    std::unique_ptr<char[]> buf(new char[1 << 20]);
    uint64_t left = offset;
    while (left > 0) {
      size_t got = std::fread(buf.get(), 1, std::min<uint64_t>(left, 1 << 20), f.get());
      if (got == 0) break;
      hash.update(buf.get(), got);
      left -= got;
    }
    std::fseek(f.get(), 0, SEEK_END);
  }

  Headers hdrs;
  Sink sink;
  sink.job = &job;
  sink.hdrs = &hdrs;
  sink.f = f.get();
  sink.hash = &hash;
  sink.offset = offset;

  bool need_request = !(task.file.size && offset == *task.file.size && offset > 0);
  CURLcode rc = CURLE_OK;
  if (need_request) {
    std::string url = fmt::format("{}/{}/resolve/{}/{}", trim_endpoint(opts.endpoint),
                                  job.repo_id, url_encode(opts.revision, false),
                                  url_encode(task.file.name, true));
    CurlHandle c;
    setup_common(c, url, opts, &hdrs);
    std::string range = fmt::format("{}-", offset);
    if (offset > 0) curl_easy_setopt(c.h, CURLOPT_RANGE, range.c_str());
    curl_easy_setopt(c.h, CURLOPT_WRITEFUNCTION, file_write_cb);
    curl_easy_setopt(c.h, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(c.h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c.h, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
    curl_easy_setopt(c.h, CURLOPT_XFERINFODATA, &job);
    rc = curl_easy_perform(c.h);
  }
  if (std::fflush(f.get()) != 0 && sink.write_errno == 0) sink.write_errno = errno;
  f.reset();

  if (sink.write_errno != 0) {
    *kind = write_error_kind(sink.write_errno);
    *why = write_error_text(sink.write_errno, task.part);
    return Outcome::fatal;
  }
  if (rc == CURLE_ABORTED_BY_CALLBACK || job.stopped()) {
    *why = "interrupted";
    return Outcome::fatal;
  }
  uint64_t have = sink.offset + sink.written;
  if (rc != CURLE_OK) {
    *why = fmt::format("{}: {} (got {} bytes)", task.file.name, curl_easy_strerror(rc), have);
    bool transient = rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR ||
                     rc == CURLE_SEND_ERROR || rc == CURLE_OPERATION_TIMEDOUT ||
                     rc == CURLE_GOT_NOTHING || rc == CURLE_COULDNT_CONNECT ||
                     rc == CURLE_HTTP2 || rc == CURLE_HTTP2_STREAM ||
                     rc == CURLE_SSL_CONNECT_ERROR;
    *kind = ErrorKind::internal;
    return transient ? Outcome::retry : Outcome::fatal;
  }
  if (need_request) {
    if (hdrs.status == 416 && offset > 0) {
      // The part is at least as long as the file: start over.
      fs::resize_file(task.part, 0, ec);
      job.done_bytes -= offset;
      *why = fmt::format("{}: server rejected the resume range", task.file.name);
      return Outcome::retry;
    }
    if (hdrs.status >= 400 || (hdrs.status != 200 && hdrs.status != 206)) {
      *why = fmt::format("{}: {}", task.file.name,
                         describe_http_error(hdrs.status, job.repo_id, opts, sink.error_body,
                                             hdrs.error_message));
      *kind = kind_for_status(hdrs.status);
      return hdrs.status >= 500 ? Outcome::retry : Outcome::fatal;
    }
  }

  // Expected size: the API listing, else the hub's headers.
  int64_t expected = task.file.size ? int64_t(*task.file.size) : -1;
  if (expected < 0 && hdrs.linked_size >= 0) expected = hdrs.linked_size;
  if (expected < 0 && hdrs.range_total >= 0) expected = hdrs.range_total;
  if (expected < 0 && hdrs.content_length >= 0)
    expected = hdrs.content_length + int64_t(hdrs.status == 206 ? sink.offset : 0);
  if (expected >= 0 && int64_t(have) < expected) {
    *why = fmt::format("{}: transfer truncated at {} of {} bytes", task.file.name, have, expected);
    return Outcome::retry;
  }
  if (expected >= 0 && int64_t(have) > expected) {
    fs::remove(task.part, ec);
    job.done_bytes -= have;
    *why = fmt::format("{}: size mismatch: got {} bytes, expected {}", task.file.name, have,
                       expected);
    *kind = ErrorKind::internal;
    return Outcome::fatal;
  }
  std::string want_sha = task.file.sha256;
  if (want_sha.empty() && is_hex64(hdrs.linked_etag)) want_sha = hdrs.linked_etag;
  if (want_sha.empty() && is_hex64(hdrs.etag)) want_sha = hdrs.etag;
  if (!want_sha.empty()) {
    std::string got = hash.hex_digest();
    if (got != lower(want_sha)) {
      fs::remove(task.part, ec);
      job.done_bytes -= have;
      *why = fmt::format("{}: checksum mismatch: sha256 {} but the hub says {}; the file was "
                         "discarded",
                         task.file.name, got, lower(want_sha));
      *kind = ErrorKind::internal;
      return Outcome::fatal;
    }
  }
  fs::rename(task.part, task.final, ec);
  if (ec) {
    *kind = write_error_kind(ec.value());
    *why = write_error_text(ec.value(), task.final);
    return Outcome::fatal;
  }
  return Outcome::ok;
}

// Downloads one file with retries. Returns an empty string on success, else the reason.
std::string fetch_file(Job& job, const FileTask& task, ErrorKind* kind) {
  std::string why;
  for (int attempt = 0;; ++attempt) {
    if (job.stopped()) return "interrupted";
    Outcome o = fetch_once(job, task, &why, kind);
    if (o == Outcome::ok) return {};
    if (o == Outcome::fatal || attempt >= job.opts->max_retries) {
      if (o == Outcome::retry) {
        *kind = ErrorKind::internal;
        why += fmt::format(" (gave up after {} attempts; the partial file is kept, run again to "
                           "resume)",
                           attempt + 1);
      }
      return why;
    }
    auto delay = std::chrono::milliseconds(int64_t(job.opts->retry_delay_ms) * (attempt + 1));
    auto until = Clock::now() + delay;
    while (Clock::now() < until && !job.stopped())
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// ---- Progress --------------------------------------------------------------------------

class ProgressBar {
 public:
  ProgressBar(Job& job, bool enabled) : job_(job), enabled_(enabled) {
    if (enabled_) thread_ = std::thread([this] { loop(); });
  }
  ~ProgressBar() { finish(); }
  void finish() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    draw();
    std::fputc('\n', stderr);
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      draw();
      cv_.wait_for(lock, std::chrono::milliseconds(200));
    }
  }
  void draw() {
    uint64_t done = job_.done_bytes.load(), total = job_.total_bytes.load();
    double secs = std::chrono::duration<double>(Clock::now() - start_).count();
    double rate = secs > 0 ? double(job_.fetched_bytes.load()) / secs : 0.0;
    constexpr int kWidth = 30;
    int filled = total ? int(kWidth * std::min(1.0, double(done) / double(total))) : 0;
    std::string bar(filled, '#');
    bar.resize(kWidth, ' ');
    std::fprintf(stderr, "\r%s [%s] %3d%% %s / %s  %s/s   ", job_.repo_id.c_str(), bar.c_str(),
                 total ? int(100.0 * std::min(1.0, double(done) / double(total))) : 0,
                 human_size(done).c_str(), human_size(total).c_str(),
                 human_size(uint64_t(rate)).c_str());
    std::fflush(stderr);
  }

  Job& job_;
  bool enabled_;
  Clock::time_point start_ = Clock::now();
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
};

// ---- Repo download ---------------------------------------------------------------------

bool safe_rel_name(const std::string& name) {
  if (name.empty() || name.front() == '/' || name.find('\\') != std::string::npos) return false;
  for (const auto& part : fs::path(name)) {
    if (part == ".." || part == "." || part.empty()) return false;
  }
  return true;
}

// Holds an exclusive flock on `path` for its lifetime.
class LockFile {
 public:
  LockFile(const fs::path& path, const std::string& what) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      throw Error(write_error_kind(errno), "[download] " + write_error_text(errno, path));
    }
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      fd_ = -1;
      throw_error(ErrorKind::invalid_request,
                  "[download] another mlxcel process is downloading {} (lock {})", what,
                  path.string());
    }
  }
  ~LockFile() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_ = -1;
};

void make_dirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    throw Error(write_error_kind(ec.value()),
                fmt::format("[download] cannot create {}: {}", dir.string(),
                            ec.value() == EACCES ? "permission denied" : ec.message()));
  }
}

// True when `dest` already holds every wanted file with the listed size.
bool complete_in(const fs::path& dest, const std::vector<HubFile>& files) {
  if (!is_model_dir(dest)) return false;
  std::error_code ec;
  for (const auto& f : files) {
    fs::path p = dest / f.name;
    if (!fs::is_regular_file(p, ec)) return false;
    if (f.size && fs::file_size(p, ec) != *f.size) return false;
  }
  return true;
}

std::string sanitize(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') ? c : '_';
  return out;
}

DownloadResult download_into(const std::string& repo_id, const fs::path& dest,
                             const fs::path& temp_base, const fs::path& lock_path,
                             const DownloadOptions& opts) {
  RepoInfo info = fetch_repo_info(repo_id, opts);
  bool has_safetensors = std::any_of(info.files.begin(), info.files.end(), [](const HubFile& f) {
    return f.name.size() > 12 && f.name.substr(f.name.size() - 12) == ".safetensors";
  });
  auto included = [&](const std::string& name) {
    for (const auto& pattern : opts.include) {
      if (fnmatch(pattern.c_str(), name.c_str(), 0) == 0) return true;
    }
    return false;
  };
  bool gguf = opts.include_gguf;
  if (!has_safetensors && !gguf && opts.include.empty()) {
    // A GGUF repo: take its one .gguf; with several quantizations, ask which.
    std::vector<std::string> ggufs;
    for (const auto& f : info.files) {
      if (f.name.size() > 5 && f.name.substr(f.name.size() - 5) == ".gguf") ggufs.push_back(f.name);
    }
    if (ggufs.size() > 1) {
      std::string names;
      for (size_t i = 0; i < ggufs.size() && i < 12; ++i) names += (i ? ", " : "") + ggufs[i];
      if (ggufs.size() > 12) names += ", ...";
      throw_error(ErrorKind::invalid_request,
                  "[download] {} has {} GGUF files ({}); choose one with --include "
                  "'PATTERN' (e.g. '*Q4_K_M*'), or pass --gguf for all",
                  repo_id, ggufs.size(), names);
    }
    gguf = true;
  }
  std::vector<HubFile> wanted;
  for (const auto& f : info.files) {
    if ((is_runtime_file(f.name, gguf) || included(f.name)) && safe_rel_name(f.name))
      wanted.push_back(f);
  }
  if (wanted.empty()) {
    throw_error(ErrorKind::not_found,
                "[download] {} has no files mlxcel can use (config.json, tokenizer files, "
                "*.safetensors or *.gguf) at revision '{}'",
                repo_id, opts.revision);
  }
  DownloadResult result;
  result.path = dest;
  for (const auto& f : wanted) result.files.push_back(f.name);
  if (complete_in(dest, wanted)) {
    result.already_present = true;
    return result;
  }

  // NOTE: parts of one commit are never mixed with another's when the branch moves.
  fs::path temp = info.commit.empty()
                      ? temp_base
                      : fs::path(temp_base.string() + "@" + sanitize(info.commit.substr(0, 12)));
  make_dirs(temp);
  make_dirs(lock_path.parent_path());
  LockFile lock(lock_path, repo_id);

  Job job;
  job.opts = &opts;
  job.repo_id = repo_id;
  std::deque<FileTask> queue;
  std::error_code ec;
  for (const auto& f : wanted) {
    FileTask t{f, temp / (f.name + ".part"), temp / f.name};
    make_dirs(t.final.parent_path());
    if (f.size) job.total_bytes += *f.size;
    if (fs::is_regular_file(t.final, ec) && (!f.size || fs::file_size(t.final, ec) == *f.size)) {
      job.done_bytes += f.size ? *f.size : 0;
      continue;  // finished in an earlier run
    }
    if (fs::exists(t.part, ec)) job.done_bytes += fs::file_size(t.part, ec);
    queue.push_back(std::move(t));
  }

  InterruptGuard interrupt_guard;
  bool show = opts.progress && isatty(STDERR_FILENO) && env_or_empty("MLXCEL_NO_PROGRESS") != "1";
  std::mutex mu;
  std::string first_error;
  ErrorKind first_kind = ErrorKind::internal;
  {
    ProgressBar bar(job, show);
    int n_threads = std::max(1, std::min<int>(opts.n_parallel, int(queue.size())));
    std::vector<std::thread> workers;
    for (int i = 0; i < n_threads; ++i) {
      workers.emplace_back([&] {
        for (;;) {
          FileTask task;
          {
            std::lock_guard<std::mutex> l(mu);
            if (queue.empty() || job.stopped()) return;
            task = std::move(queue.front());
            queue.pop_front();
          }
          ErrorKind kind = ErrorKind::internal;
          std::string why = fetch_file(job, task, &kind);
          if (!why.empty()) {
            std::lock_guard<std::mutex> l(mu);
            if (first_error.empty() && why != "interrupted") {
              first_error = why;
              first_kind = kind;
            }
            job.cancel = true;
            return;
          }
        }
      });
    }
    for (auto& w : workers) w.join();
  }
  result.bytes_downloaded = job.fetched_bytes.load();
  if (g_interrupted.load()) {
    throw_error(ErrorKind::invalid_request,
                "[download] interrupted; {} of {} kept in {}; run the same command again to "
                "resume",
                human_size(job.done_bytes.load()), repo_id, temp.string());
  }
  if (!first_error.empty()) {
    throw Error(first_kind, fmt::format("[download] {}: {}", repo_id, first_error));
  }

  // Every file is complete: move the folder (or the files, config.json last) into place.
  make_dirs(dest.parent_path());
  bool dest_exists = fs::exists(fs::symlink_status(dest, ec));
  if (dest_exists && fs::is_directory(dest, ec) && fs::is_empty(dest, ec)) {
    fs::remove(dest, ec);
    dest_exists = false;
  }
  if (!dest_exists) {
    fs::rename(temp, dest, ec);
    if (ec) {
      throw Error(write_error_kind(ec.value()),
                  fmt::format("[download] cannot move {} to {}: {}", temp.string(),
                              dest.string(), ec.message()));
    }
  } else {
    std::vector<HubFile> order = wanted;
    std::stable_partition(order.begin(), order.end(),
                          [](const HubFile& f) { return f.name != "config.json"; });
    for (const auto& f : order) {
      make_dirs((dest / f.name).parent_path());
      fs::rename(temp / f.name, dest / f.name, ec);
      if (ec) {
        throw Error(write_error_kind(ec.value()),
                    fmt::format("[download] cannot move {} into {}: {}", f.name, dest.string(),
                                ec.message()));
      }
    }
    fs::remove_all(temp, ec);
  }
  fs::remove(lock_path, ec);
  return result;
}

}  // namespace

DownloadOptions DownloadOptions::from_env() {
  DownloadOptions o;
  if (std::string e = env_or_empty("HF_ENDPOINT"); !e.empty()) o.endpoint = trim_endpoint(e);
  o.token = env_or_empty("HF_TOKEN");
  if (o.token.empty()) o.token = env_or_empty("HUGGING_FACE_HUB_TOKEN");
  if (env_or_empty("MLXCEL_NO_PROGRESS") == "1") o.progress = false;
  return o;
}

bool is_runtime_file(const std::string& name, bool include_gguf) {
  std::string base = fs::path(name).filename().string();
  auto ends_with = [&](const char* suffix) {
    size_t n = std::strlen(suffix);
    return base.size() >= n && base.compare(base.size() - n, n, suffix) == 0;
  };
  static const char* kExact[] = {"config.json",
                                 "generation_config.json",
                                 "tokenizer.json",
                                 "tokenizer_config.json",
                                 "special_tokens_map.json",
                                 "added_tokens.json",
                                 "chat_template.jinja",
                                 "chat_template.json",
                                 "model.safetensors.index.json",
                                 "preprocessor_config.json",
                                 "processor_config.json",
                                 "video_preprocessor_config.json",
                                 "tokenizer.model",
                                 "vocab.json",
                                 "merges.txt"};
  // Only top-level files: sub-folders hold other variants (onnx/, original/, ...).
  if (name.find('/') != std::string::npos) return false;
  for (const char* e : kExact) {
    if (base == e) return true;
  }
  if (ends_with(".safetensors")) return true;
  if (ends_with(".safetensors.index.json")) return true;
  if (include_gguf && ends_with(".gguf")) return true;
  return false;
}

RepoInfo fetch_repo_info(const std::string& repo_id, const DownloadOptions& opts) {
  global_curl_init();
  std::string endpoint = trim_endpoint(opts.endpoint);
  std::string urls[2] = {
      fmt::format("{}/api/models/{}/revision/{}?blobs=true", endpoint, repo_id,
                  url_encode(opts.revision, false)),
      fmt::format("{}/api/models/{}?blobs=true", endpoint, repo_id)};
  int n_urls = opts.revision == "main" ? 2 : 1;
  std::string body;
  Headers hdrs;
  for (int i = 0; i < n_urls; ++i) {
    CurlHandle c;
    body.clear();
    hdrs = Headers{};
    setup_common(c, urls[i], opts, &hdrs);
    curl_easy_setopt(c.h, CURLOPT_WRITEFUNCTION, string_write_cb);
    curl_easy_setopt(c.h, CURLOPT_WRITEDATA, &body);
    CURLcode rc = curl_easy_perform(c.h);
    if (rc != CURLE_OK) {
      throw_error(ErrorKind::internal, "[download] cannot reach {}: {}", endpoint,
                  curl_easy_strerror(rc));
    }
    if (hdrs.status == 200) break;
    // NOTE: the revision route 404s on servers without it; the plain route answers
    // for the default branch.
    if (hdrs.status == 404 && i + 1 < n_urls) continue;
    throw Error(kind_for_status(hdrs.status),
                "[download] " +
                    describe_http_error(hdrs.status, repo_id, opts, body, hdrs.error_message));
  }
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("siblings") || !j["siblings"].is_array()) {
    throw_error(ErrorKind::internal,
                "[download] unexpected answer from {} for {}: no \"siblings\" file list",
                endpoint, repo_id);
  }
  RepoInfo info;
  info.repo_id = repo_id;
  if (j.contains("sha") && j["sha"].is_string()) info.commit = j["sha"].get<std::string>();
  for (const auto& s : j["siblings"]) {
    if (!s.is_object() || !s.contains("rfilename") || !s["rfilename"].is_string()) continue;
    HubFile f;
    f.name = s["rfilename"].get<std::string>();
    if (s.contains("lfs") && s["lfs"].is_object()) {
      const auto& lfs = s["lfs"];
      if (lfs.contains("sha256") && lfs["sha256"].is_string()) {
        std::string sha = lfs["sha256"].get<std::string>();
        if (is_hex64(sha)) f.sha256 = lower(sha);
      }
      if (lfs.contains("size") && lfs["size"].is_number_unsigned())
        f.size = lfs["size"].get<uint64_t>();
    }
    if (!f.size && s.contains("size") && s["size"].is_number_unsigned())
      f.size = s["size"].get<uint64_t>();
    info.files.push_back(std::move(f));
  }
  return info;
}

DownloadResult download_model(const RepoId& repo, const StoreConfig& cfg,
                              const DownloadOptions& opts) {
  global_curl_init();
  fs::path dest = store_path(repo, cfg);
  std::string key = repo.owner + "--" + repo.name + "--" + sanitize(opts.revision);
  fs::path temp = cfg.models_dir / ".downloads" / key;
  fs::path lock = cfg.models_dir / ".downloads" / (key + ".lock");
  return download_into(repo.str(), dest, temp, lock, opts);
}

DownloadResult download_to_dir(const std::string& repo_id, const fs::path& dest_in,
                               const DownloadOptions& opts) {
  global_curl_init();
  if (!is_repo_id(repo_id) || repo_id.find('/') == std::string::npos) {
    invalid("[download] '{}' is not a repo id of the form owner/name", repo_id);
  }
  std::error_code ec;
  fs::path dest = fs::absolute(dest_in, ec).lexically_normal();
  if (!dest.has_filename()) dest = dest.parent_path();
  std::string name = dest.filename().string();
  fs::path temp = dest.parent_path() / ("." + name + ".mlxcel-download");
  fs::path lock = dest.parent_path() / ("." + name + ".mlxcel-download.lock");
  return download_into(repo_id, dest, temp, lock, opts);
}

}  // namespace mlxcel::store
