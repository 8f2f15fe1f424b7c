#include "store/store.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <system_error>

#include "base/error.h"

namespace mlxcel::store {
namespace {

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

fs::path home_dir() {
  std::string home = env_or_empty("HOME");
  if (!home.empty()) return home;
  if (const passwd* pw = getpwuid(getuid()); pw && pw->pw_dir) return pw->pw_dir;
  throw Error(ErrorKind::invalid_request,
              "[store] cannot find the home directory: set HOME or MLXCEL_MODELS_DIR");
}

// One part of a repo id, following the hub's rules.
bool valid_part(std::string_view s) {
  if (s.empty() || s.size() > 96) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  if (s.front() == '.' || s.front() == '-' || s.back() == '.' || s.back() == '-') return false;
  if (s.find("..") != std::string_view::npos || s.find("--") != std::string_view::npos) return false;
  return true;
}

int64_t mtime_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return int64_t(st.st_mtime);
}

// Total size of the regular files under `dir` (file symlinks followed, directory
// symlinks not) and the newest modification time.
void dir_stats(const fs::path& dir, uint64_t* size, int64_t* modified) {
  *size = 0;
  *modified = mtime_of(dir);
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code ec2;
    if (it->is_regular_file(ec2)) {
      uintmax_t n = it->file_size(ec2);
      if (!ec2) *size += n;
      *modified = std::max(*modified, mtime_of(it->path()));
    }
  }
}

std::string read_first_line(const fs::path& p) {
  std::ifstream in(p);
  std::string line;
  if (!in || !std::getline(in, line)) return {};
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\n'))
    line.pop_back();
  return line;
}

// A snapshot inside one HF cache repo folder (models--owner--name).
std::optional<fs::path> snapshot_in(const fs::path& repo_dir, const std::string& revision) {
  std::error_code ec;
  fs::path snaps = repo_dir / "snapshots";
  if (!fs::is_directory(snaps, ec)) return std::nullopt;
  // refs/<revision> holds the commit hash of that branch or tag.
  if (revision.find("..") == std::string::npos) {
    std::string hash = read_first_line(repo_dir / "refs" / revision);
    if (!hash.empty() && hash.find('/') == std::string::npos && is_model_dir(snaps / hash))
      return snaps / hash;
    if (revision.find('/') == std::string::npos && is_model_dir(snaps / revision))
      return snaps / revision;
  }
  if (revision != "main") return std::nullopt;
  // No usable ref: the newest complete snapshot.
  std::optional<fs::path> best;
  int64_t best_time = -1;
  for (fs::directory_iterator it(snaps, ec), end; !ec && it != end; it.increment(ec)) {
    if (!is_model_dir(it->path())) continue;
    int64_t t = mtime_of(it->path());
    if (t > best_time) {
      best_time = t;
      best = it->path();
    }
  }
  return best;
}

fs::path hf_repo_dir(const RepoId& repo, const StoreConfig& cfg) {
  return cfg.hf_hub_cache / ("models--" + repo.owner + "--" + repo.name);
}

bool is_hidden(const fs::path& p) {
  std::string name = p.filename().string();
  return name.empty() || name[0] == '.';
}

// True when `p` is `root` or below it (both absolute and normalized).
bool is_inside(const fs::path& p, const fs::path& root) {
  fs::path rel = p.lexically_relative(root);
  return !rel.empty() && *rel.begin() != "..";
}

bool is_symlink_nofollow(const fs::path& p) {
  std::error_code ec;
  return fs::is_symlink(fs::symlink_status(p, ec));
}

}  // namespace

StoreConfig StoreConfig::from_env(const std::string& models_dir_override) {
  StoreConfig cfg;
  if (!models_dir_override.empty()) {
    cfg.models_dir = models_dir_override;
  } else if (std::string md = env_or_empty("MLXCEL_MODELS_DIR"); !md.empty()) {
    cfg.models_dir = md;
  } else {
    std::string cache = env_or_empty("MLXCEL_CACHE_DIR");
    fs::path base = cache.empty() ? home_dir() / ".cache" / "mlxcel" : fs::path(cache);
    cfg.models_dir = base / "models";
  }
  if (std::string hub = env_or_empty("HF_HUB_CACHE"); !hub.empty()) {
    cfg.hf_hub_cache = hub;
  } else if (std::string hf_home = env_or_empty("HF_HOME"); !hf_home.empty()) {
    cfg.hf_hub_cache = fs::path(hf_home) / "hub";
  } else {
    std::string home = env_or_empty("HOME");
    cfg.hf_hub_cache = (home.empty() ? fs::path("/nonexistent") : fs::path(home)) / ".cache" /
                       "huggingface" / "hub";
  }
  if (std::string org = env_or_empty("MLXCEL_DEFAULT_ORG"); !org.empty()) {
    if (!valid_part(org)) invalid("[store] MLXCEL_DEFAULT_ORG '{}' is not a valid owner name", org);
    cfg.default_org = org;
  }
  return cfg;
}

const char* model_source_name(ModelSource source) {
  switch (source) {
    case ModelSource::store: return "store";
    case ModelSource::hf_cache: return "hf_cache";
    case ModelSource::local: return "local";
  }
  return "unknown";
}

RepoId parse_repo_id(std::string_view id, const StoreConfig& cfg) {
  size_t slash = id.find('/');
  RepoId r;
  if (slash == std::string_view::npos) {
    r.owner = cfg.default_org;
    r.name = std::string(id);
  } else {
    r.owner = std::string(id.substr(0, slash));
    r.name = std::string(id.substr(slash + 1));
  }
  if (!valid_part(r.owner) || !valid_part(r.name)) {
    invalid(
        "[store] '{}' is not a model id (owner/name or name, using letters, digits, '-', '_', "
        "'.') nor an existing path",
        id);
  }
  return r;
}

bool is_repo_id(std::string_view id) {
  size_t slash = id.find('/');
  if (slash == std::string_view::npos) return valid_part(id);
  return valid_part(id.substr(0, slash)) && valid_part(id.substr(slash + 1));
}

fs::path store_path(const RepoId& repo, const StoreConfig& cfg) {
  return cfg.models_dir / repo.owner / repo.name;
}

std::optional<fs::path> hf_cache_snapshot(const RepoId& repo, const StoreConfig& cfg,
                                          const std::string& revision) {
  if (cfg.hf_hub_cache.empty()) return std::nullopt;
  return snapshot_in(hf_repo_dir(repo, cfg), revision);
}

bool is_model_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  if (fs::is_regular_file(dir / "config.json", ec)) return true;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".gguf" && it->is_regular_file(ec)) return true;
  }
  return false;
}

std::optional<ResolvedModel> find_model(std::string_view id, const StoreConfig& cfg,
                                        std::vector<std::string>* searched,
                                        const std::string& revision) {
  if (id.empty()) invalid("[store] empty model id");
  std::error_code ec;
  fs::path as_path{std::string(id)};
  if (fs::exists(as_path, ec)) {
    return ResolvedModel{fs::absolute(as_path, ec), ModelSource::local, std::string(id)};
  }
  bool looks_like_path = id.front() == '/' || id.front() == '.' || id.front() == '~' ||
                         std::count(id.begin(), id.end(), '/') > 1 ||
                         (id.size() > 5 && id.substr(id.size() - 5) == ".gguf");
  if (looks_like_path || !is_repo_id(id)) {
    if (looks_like_path) {
      throw_error(ErrorKind::not_found, "[store] model path '{}' does not exist", id);
    }
    parse_repo_id(id, cfg);  // throws with the id rules
  }
  if (searched) searched->push_back(fmt::format("local path ./{} (does not exist)", id));
  RepoId repo = parse_repo_id(id, cfg);
  fs::path sp = store_path(repo, cfg);
  if (searched) searched->push_back(fmt::format("mlxcel store: {}", sp.string()));
  if (is_model_dir(sp)) return ResolvedModel{sp, ModelSource::store, repo.str()};
  if (!cfg.hf_hub_cache.empty()) {
    if (searched) {
      searched->push_back(
          fmt::format("Hugging Face cache: {}", hf_repo_dir(repo, cfg).string()));
    }
    if (auto snap = hf_cache_snapshot(repo, cfg, revision)) {
      return ResolvedModel{*snap, ModelSource::hf_cache, repo.str()};
    }
  }
  return std::nullopt;
}

std::vector<ModelEntry> list_models(const StoreConfig& cfg) {
  std::vector<ModelEntry> out;
  std::error_code ec;
  for (fs::directory_iterator owners(cfg.models_dir, ec), end; !ec && owners != end;
       owners.increment(ec)) {
    if (is_hidden(owners->path()) || !owners->is_directory(ec)) continue;
    std::error_code ec2;
    for (fs::directory_iterator models(owners->path(), ec2); !ec2 && models != end;
         models.increment(ec2)) {
      if (is_hidden(models->path()) || !is_model_dir(models->path())) continue;
      ModelEntry e;
      e.repo_id = owners->path().filename().string() + "/" + models->path().filename().string();
      e.source = ModelSource::store;
      e.path = models->path();
      dir_stats(e.path, &e.size_bytes, &e.modified);
      out.push_back(std::move(e));
    }
  }
  if (!cfg.hf_hub_cache.empty()) {
    for (fs::directory_iterator it(cfg.hf_hub_cache, ec), end; !ec && it != end;
         it.increment(ec)) {
      std::string dir = it->path().filename().string();
      if (dir.rfind("models--", 0) != 0) continue;
      std::string rest = dir.substr(8);
      size_t sep = rest.find("--");
      std::string repo_id = sep == std::string::npos
                                ? rest
                                : rest.substr(0, sep) + "/" + rest.substr(sep + 2);
      auto snap = snapshot_in(it->path(), "main");
      if (!snap) continue;
      ModelEntry e;
      e.repo_id = repo_id;
      e.source = ModelSource::hf_cache;
      e.path = *snap;
      dir_stats(e.path, &e.size_bytes, &e.modified);
      out.push_back(std::move(e));
    }
  }
  std::sort(out.begin(), out.end(), [](const ModelEntry& a, const ModelEntry& b) {
    if (a.repo_id != b.repo_id) return a.repo_id < b.repo_id;
    return int(a.source) < int(b.source);
  });
  return out;
}

std::string iso8601_utc(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string human_size(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KB", "MB", "GB", "TB", "PB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1000.0 && u < 5) {
    v /= 1000.0;
    ++u;
  }
  if (u == 0) return fmt::format("{} B", bytes);
  return fmt::format("{:.1f} {}", v, kUnits[u]);
}

ModelEntry plan_remove(std::string_view id, const StoreConfig& cfg) {
  if (id.empty()) invalid("[store] rm: empty model id");
  std::error_code ec;
  fs::path root = fs::canonical(cfg.models_dir, ec);
  fs::path target;
  std::string repo_id;
  // A repo id unless it is only a path: the store copy wins over a same-named folder here.
  bool in_store = is_repo_id(id) && !root.empty() &&
                  fs::exists(fs::symlink_status(store_path(parse_repo_id(id, cfg), cfg), ec));
  if (is_repo_id(id) && (in_store || !fs::exists(fs::path(std::string(id)), ec))) {
    RepoId repo = parse_repo_id(id, cfg);
    repo_id = repo.str();
    if (root.empty()) {
      if (auto snap = hf_cache_snapshot(repo, cfg)) {
        throw_error(ErrorKind::not_found,
                    "[store] {} is only in the Hugging Face cache ({}); mlxcel never deletes "
                    "from it",
                    repo_id, snap->string());
      }
      throw_error(ErrorKind::not_found, "[store] {} is not in the store ({} does not exist)",
                  repo_id, cfg.models_dir.string());
    }
    target = root / repo.owner / repo.name;
  } else {
    // A path: resolve everything but its last component, which must not be followed.
    fs::path p = fs::absolute(fs::path(std::string(id)), ec).lexically_normal();
    if (p.has_filename() == false) p = p.parent_path();
    fs::path parent = fs::canonical(p.parent_path(), ec);
    if (ec) throw_error(ErrorKind::not_found, "[store] rm: '{}' does not exist", id);
    target = parent / p.filename();
    fs::path hf_root = fs::canonical(cfg.hf_hub_cache, ec);
    if (!hf_root.empty() && is_inside(target, hf_root)) {
      invalid("[store] rm: refusing '{}': it is in the Hugging Face cache ({}), which mlxcel "
              "never deletes from",
              id, hf_root.string());
    }
    if (root.empty()) {
      invalid("[store] rm: refusing '{}': it is not inside the store ({} does not exist)", id,
              cfg.models_dir.string());
    }
    fs::path rel = target.lexically_relative(root);
    auto n_parts = std::distance(rel.begin(), rel.end());
    if (rel.empty() || *rel.begin() == ".." || n_parts != 2) {
      invalid("[store] rm: refusing '{}': only models inside the store ({}) at depth owner/name "
              "can be removed",
              id, root.string());
    }
    repo_id = rel.begin()->string() + "/" + std::next(rel.begin())->string();
    if (is_hidden(*rel.begin()) || is_hidden(target)) {
      invalid("[store] rm: refusing '{}': not a model directory", id);
    }
  }
  fs::path owner_dir = target.parent_path();
  if (is_symlink_nofollow(owner_dir) || is_symlink_nofollow(target)) {
    invalid("[store] rm: refusing {}: it is a symbolic link (remove it by hand if intended)",
            target.string());
  }
  auto st = fs::symlink_status(target, ec);
  if (!fs::exists(st)) {
    RepoId repo{owner_dir.filename().string(), target.filename().string()};
    if (auto snap = hf_cache_snapshot(repo, cfg)) {
      throw_error(ErrorKind::not_found,
                  "[store] {} is only in the Hugging Face cache ({}); mlxcel never deletes from "
                  "it",
                  repo_id, snap->string());
    }
    throw_error(ErrorKind::not_found, "[store] {} is not in the store ({})", repo_id,
                root.string());
  }
  if (!fs::is_directory(st)) {
    invalid("[store] rm: refusing {}: not a model directory", target.string());
  }
  // Defense in depth: the fully resolved target must still be inside the root.
  fs::path real = fs::canonical(target, ec);
  if (ec || !is_inside(real, root)) {
    invalid("[store] rm: refusing {}: resolves outside the store", target.string());
  }
  ModelEntry e;
  e.repo_id = repo_id;
  e.source = ModelSource::store;
  e.path = target;
  dir_stats(target, &e.size_bytes, &e.modified);
  return e;
}

ModelEntry remove_model(std::string_view id, const StoreConfig& cfg) {
  ModelEntry e = plan_remove(id, cfg);
  std::error_code ec;
  // NOTE: remove_all never follows symlinks inside the tree; it unlinks them.
  fs::remove_all(e.path, ec);
  if (ec) {
    throw_error(ErrorKind::invalid_request, "[store] rm: cannot remove {}: {}", e.path.string(),
                ec.message());
  }
  fs::path owner = e.path.parent_path();
  if (fs::is_empty(owner, ec) && !ec) fs::remove(owner, ec);
  return e;
}

}  // namespace mlxcel::store
