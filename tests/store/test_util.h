// Helpers for the store tests: temp dirs, scoped env vars, the mock hub process.
#pragma once

#include <curl/curl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>

namespace mlxcel::store::testing {

namespace fs = std::filesystem;

// A fresh directory under /tmp, removed with its contents at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "mlxcel-store-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    // Restore write permission so read-only test dirs can be removed.
    for (auto it = fs::recursive_directory_iterator(path_, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_directory(ec) && !it->is_symlink(ec))
        fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
    }
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& rel) const { return path_ / rel; }

 private:
  fs::path path_;
};

// Sets (or, with nullopt, unsets) environment variables; restores them at scope exit.
class ScopedEnv {
 public:
  ScopedEnv() = default;
  ScopedEnv(std::initializer_list<std::pair<const char*, std::optional<std::string>>> vars) {
    for (auto& [k, v] : vars) set(k, v);
  }
  void set(const char* key, std::optional<std::string> value) {
    if (!saved_.count(key)) {
      const char* old = std::getenv(key);
      saved_[key] = old ? std::optional<std::string>(old) : std::nullopt;
    }
    if (value) {
      ::setenv(key, value->c_str(), 1);
    } else {
      ::unsetenv(key);
    }
  }
  ~ScopedEnv() {
    for (auto& [k, v] : saved_) {
      if (v) {
        ::setenv(k.c_str(), v->c_str(), 1);
      } else {
        ::unsetenv(k.c_str());
      }
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

// Isolates a test from the user's real store and HF cache.
inline void isolate_env(ScopedEnv& env, const TempDir& dir) {
  env.set("MLXCEL_MODELS_DIR", (dir.path() / "models").string());
  env.set("MLXCEL_CACHE_DIR", std::nullopt);
  env.set("MLXCEL_DEFAULT_ORG", std::nullopt);
  env.set("HF_HUB_CACHE", (dir.path() / "hf" / "hub").string());
  env.set("HF_HOME", std::nullopt);
  env.set("HF_TOKEN", std::nullopt);
  env.set("HUGGING_FACE_HUB_TOKEN", std::nullopt);
  env.set("HF_ENDPOINT", "http://127.0.0.1:9");  // never the real hub
  env.set("MLXCEL_NO_PROGRESS", "1");
}

inline void write_file(const fs::path& p, const std::string& data) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << data;
}

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A fake model folder.
inline void make_model(const fs::path& dir, size_t weight_bytes = 100) {
  write_file(dir / "config.json", R"({"model_type": "tiny"})");
  write_file(dir / "model.safetensors", std::string(weight_bytes, 'w'));
}

// An HF cache entry models--owner--name with one snapshot and refs/main.
inline fs::path make_hf_model(const fs::path& hub, const std::string& owner,
                              const std::string& name, const std::string& rev = "abc123",
                              bool write_ref = true) {
  fs::path repo = hub / ("models--" + owner + "--" + name);
  fs::path blob = repo / "blobs" / ("blob-" + rev);
  write_file(blob, R"({"model_type": "tiny"})");
  fs::path snap = repo / "snapshots" / rev;
  fs::create_directories(snap);
  fs::create_symlink(fs::path("../../blobs") / ("blob-" + rev), snap / "config.json");
  if (write_ref) write_file(repo / "refs" / "main", rev);
  return snap;
}

inline size_t curl_string_cb(char* d, size_t s, size_t n, void* u) {
  static_cast<std::string*>(u)->append(d, s * n);
  return s * n;
}

inline std::string http_get(const std::string& url) {
  std::string body;
  CURL* c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, curl_string_cb);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  curl_easy_perform(c);
  curl_easy_cleanup(c);
  return body;
}

// tests/store/mock_hub.py running on a free loopback port for the object's lifetime.
class MockHub {
 public:
  MockHub() {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
    std::string script = std::string(MLXCEL_SOURCE_DIR) + "/tests/store/mock_hub.py";
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      close(fds[1]);
      execlp("python3", "python3", script.c_str(), "--port", "0", (char*)nullptr);
      _exit(127);
    }
    close(fds[1]);
    std::string line;
    pollfd p{fds[0], POLLIN, 0};
    while (line.find('\n') == std::string::npos) {
      if (poll(&p, 1, 15000) <= 0) break;
      char buf[64];
      ssize_t n = read(fds[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, size_t(n));
    }
    close(fds[0]);
    if (line.rfind("PORT ", 0) != 0) {
      stop();
      throw std::runtime_error("mock hub did not start: " + line);
    }
    port_ = std::stoi(line.substr(5));
  }
  ~MockHub() { stop(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // JSON array of {path, range, auth} for every request seen.
  std::string log() const { return http_get(url() + "/_mock/log"); }
  void reset() const { http_get(url() + "/_mock/reset"); }

 private:
  void stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace mlxcel::store::testing
