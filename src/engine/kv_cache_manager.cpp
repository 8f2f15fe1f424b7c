#include "engine/kv_cache_manager.h"

#include <algorithm>

#include "base/error.h"

namespace mlxcel {

KvCacheManager::KvCacheManager(const KvCacheConfig& cfg)
    : pool_(cfg.n_blocks, cfg.block_size, cfg.enable_prefix_caching) {}

void KvCacheManager::extend_hashes(Table& t, std::span<const int> tokens, int n_full,
                                   std::span<const ExtraKey> extra) const {
  const int bs = block_size();
  std::vector<uint64_t> keys;
  for (int b = int(t.hashes.size()); b < n_full; ++b) {
    const int lo = b * bs, hi = lo + bs;
    keys.clear();
    for (const auto& e : extra)
      if (e.start < hi && e.end > lo) {
        keys.push_back(e.digest);
        keys.push_back(uint64_t(int64_t(e.start) - lo));
      }
    const BlockHash parent = b == 0 ? kNoParent : t.hashes[b - 1];
    t.hashes.push_back(hash_block(parent, tokens.subspan(lo, bs), keys));
  }
}

CachedPrefix KvCacheManager::find_cached_prefix(RequestId id, std::span<const int> tokens,
                                                std::span<const ExtraKey> extra) {
  CachedPrefix out;
  if (!pool_.caching_enabled() || tokens.empty()) return out;
  const int max_blocks = (int(tokens.size()) - 1) / block_size();
  Table t;
  auto it = lookup_hashes_.find(id);
  if (it != lookup_hashes_.end()) t.hashes = it->second;
  extend_hashes(t, tokens, max_blocks, extra);
  for (int b = 0; b < max_blocks; ++b) {
    auto hit = pool_.lookup(t.hashes[b]);
    if (!hit) break;
    out.blocks.push_back(*hit);
  }
  out.n_tokens = int(out.blocks.size()) * block_size();
  lookup_hashes_[id] = std::move(t.hashes);
  return out;
}

bool KvCacheManager::allocate_slots(RequestId id, int n_computed, int n_new, std::span<const int> computed) {
  MLXCEL_CHECK(n_new >= 0 && n_computed >= 0, "bad allocate_slots({}, {})", n_computed, n_new);
  Table* t = nullptr;
  auto it = tables_.find(id);
  const size_t have = (it == tables_.end() ? 0 : it->second.blocks.size()) + computed.size();
  const int need = blocks_for(n_computed + n_new);
  const int n_alloc = std::max(0, need - int(have));
  int n_revived = 0;  // cached blocks taken off the free list
  for (int b : computed)
    if (pool_.ref_count(b) == 0) ++n_revived;
  if (n_alloc + n_revived > pool_.n_free()) return false;
  t = &tables_[id];
  if (!computed.empty()) {
    MLXCEL_CHECK(t->blocks.empty(), "cached prefix given to a request that already has blocks");
    pool_.touch(computed);
    t->blocks.assign(computed.begin(), computed.end());
    t->n_registered = int(computed.size());
  }
  if (auto lh = lookup_hashes_.find(id); lh != lookup_hashes_.end()) {
    if (t->hashes.empty()) t->hashes = std::move(lh->second);
    lookup_hashes_.erase(lh);
  }
  auto fresh = pool_.allocate(n_alloc);
  t->blocks.insert(t->blocks.end(), fresh.begin(), fresh.end());
  return true;
}

void KvCacheManager::cache_computed(RequestId id, std::span<const int> tokens, int n_computed,
                                    std::span<const ExtraKey> extra) {
  if (!pool_.caching_enabled()) return;
  auto it = tables_.find(id);
  if (it == tables_.end()) return;
  Table& t = it->second;
  const int n_full = std::min<int>(n_computed / block_size(), int(t.blocks.size()));
  if (n_full <= t.n_registered) return;
  extend_hashes(t, tokens, n_full, extra);
  for (int b = t.n_registered; b < n_full; ++b) pool_.cache_block(t.blocks[b], t.hashes[b]);
  t.n_registered = n_full;
}

void KvCacheManager::free(RequestId id) {
  lookup_hashes_.erase(id);
  auto it = tables_.find(id);
  if (it == tables_.end()) return;
  std::vector<int> rev(it->second.blocks.rbegin(), it->second.blocks.rend());
  pool_.release(rev);
  tables_.erase(it);
}

void KvCacheManager::record_lookup(int n_query_tokens, int n_hit_tokens) {
  auto& s = pool_.mutable_stats();
  s.query_tokens += n_query_tokens;
  s.hit_tokens += n_hit_tokens;
  const int bs = block_size();
  s.queries += n_query_tokens > 0 ? (n_query_tokens - 1) / bs : 0;
  s.hits += n_hit_tokens / bs;
}

const std::vector<int>& KvCacheManager::block_table(RequestId id) const {
  auto it = tables_.find(id);
  MLXCEL_CHECK(it != tables_.end(), "no block table for request {}", id);
  return it->second.blocks;
}

}  // namespace mlxcel
