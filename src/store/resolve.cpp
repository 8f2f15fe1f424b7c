// resolve_model: find a model locally, else download it into the store.
#include <string>
#include <vector>

#include "base/error.h"
#include "store/hub.h"
#include "store/store.h"

namespace mlxcel::store {

ResolvedModel resolve_model(std::string_view id, const StoreConfig& cfg,
                            const ResolveOptions& options) {
  std::vector<std::string> searched;
  if (auto found = find_model(id, cfg, &searched, options.revision)) return *found;
  RepoId repo = parse_repo_id(id, cfg);
  std::string looked;
  for (const auto& s : searched) looked += "\n  - " + s;
  if (!options.allow_download) {
    throw_error(ErrorKind::not_found, "[store] model '{}' not found; looked in:{}\n(downloads are "
                "off; run `mlxcel download {}`)",
                id, looked, repo.str());
  }
  DownloadOptions dl = options.download ? *options.download : DownloadOptions::from_env();
  dl.revision = options.revision;
  try {
    DownloadResult r = download_model(repo, cfg, dl);
    return ResolvedModel{r.path, ModelSource::store, repo.str()};
  } catch (const Error& e) {
    throw_error(ErrorKind::not_found,
                "[store] model '{}' not found; looked in:{}\n  - {}/{} (download failed: {})", id,
                looked, dl.endpoint, repo.str(), e.what());
  }
}

}  // namespace mlxcel::store
