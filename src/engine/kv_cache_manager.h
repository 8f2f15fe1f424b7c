// KvCacheManager: per-request block tables over a BlockPool, and automatic prefix
// caching. Integers only; the scheduler is its only caller.
//
// A request's table is append-only while it runs and is released whole when the
// request finishes or is preempted. Full blocks whose tokens are all computed are
// registered in the prefix index under a hash chained from the previous block, so a
// later request with the same leading tokens (and extra keys) reuses them.
//
//   KvCacheManager kv(KvCacheConfig{.n_blocks = 512, .block_size = 16});
//   auto hit = kv.find_cached_prefix(id, tokens, {});    // reuse on admission
//   if (kv.allocate_slots(id, hit.n_tokens, n_new, hit.blocks)) { ... run ... }
//   kv.cache_computed(id, tokens, n_computed, {});        // after the step
//   kv.free(id);
//
// Layer groups: the model's AttentionContext carries one block table for every layer,
// so full-attention and sliding-window layers share this pool and table (a sliding
// layer just reads fewer of its blocks). KvLayerGroup records the split so that a later
// per-group table (freeing blocks that left the window) and SSM state slots (one fixed
// slot per running request, not paged) can be added beside the attention group.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/block_pool.h"

namespace mlxcel {

using RequestId = int64_t;

// Extra prefix-cache key for a token range (e.g. an image's digest over the
// placeholder tokens it replaces): blocks overlapping [start, end) mix in digest.
struct ExtraKey {
  int start = 0;
  int end = 0;
  uint64_t digest = 0;
};

enum class KvLayerGroup { full_attention, sliding_window, ssm_state };

struct KvCacheConfig {
  int n_blocks = 0;
  int block_size = 16;
  bool enable_prefix_caching = true;
};

struct CachedPrefix {
  std::vector<int> blocks;  // cached block ids, in order
  int n_tokens = 0;         // blocks.size() * block_size
};

class KvCacheManager {
 public:
  explicit KvCacheManager(const KvCacheConfig& cfg);

  int block_size() const { return pool_.block_size(); }
  int n_blocks() const { return pool_.n_blocks(); }
  // Blocks needed to hold n_tokens.
  int blocks_for(int n_tokens) const { return (n_tokens + block_size() - 1) / block_size(); }

  // Longest run of cached full blocks at the start of tokens, leaving at least one
  // token uncomputed (its logits give the next token). Changes nothing.
  CachedPrefix find_cached_prefix(RequestId id, std::span<const int> tokens, std::span<const ExtraKey> extra);
  // Makes room for n_new more tokens after n_computed (which counts `computed`, the
  // cached blocks found for a request being admitted). All or nothing: returns false
  // and changes nothing when the free blocks do not suffice.
  bool allocate_slots(RequestId id, int n_computed, int n_new, std::span<const int> computed = {});
  // Registers the request's full blocks among its first n_computed tokens.
  void cache_computed(RequestId id, std::span<const int> tokens, int n_computed, std::span<const ExtraKey> extra);
  // Releases the request's blocks (tail first, so its prefix is evicted last).
  void free(RequestId id);
  // Records one admission's prefix lookup in the stats.
  void record_lookup(int n_query_tokens, int n_hit_tokens);

  const std::vector<int>& block_table(RequestId id) const;
  bool has_table(RequestId id) const { return tables_.count(id) != 0; }
  int n_tables() const { return int(tables_.size()); }
  const BlockPool& pool() const { return pool_; }
  BlockPool& pool() { return pool_; }
  const PrefixCacheStats& stats() const { return pool_.stats(); }

 private:
  struct Table {
    std::vector<int> blocks;
    std::vector<BlockHash> hashes;  // of the first hashes.size() full blocks
    int n_registered = 0;           // leading blocks already offered to the index
  };
  void extend_hashes(Table& t, std::span<const int> tokens, int n_full, std::span<const ExtraKey> extra) const;

  BlockPool pool_;
  std::unordered_map<RequestId, Table> tables_;
  std::unordered_map<RequestId, std::vector<BlockHash>> lookup_hashes_;  // computed before admission
};

}  // namespace mlxcel
