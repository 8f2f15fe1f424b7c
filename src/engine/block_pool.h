// KV block pool: the bookkeeping of a paged KV cache, integers only (no tensors).
//
// A pool owns n_blocks preallocated blocks of block_size token slots. Each block has a
// reference count and, once full and computed, an optional prefix-cache hash. Blocks
// with no reference sit on one free list kept in eviction order: the head is evicted
// first. Freeing appends at the tail, so cached blocks that nobody uses are evicted
// least-recently-used first; a cache hit on a free block takes it back off the list.
// The pool knows nothing about requests: block tables live in KvCacheManager.
//
//   BlockPool pool(/*n_blocks=*/1024, /*block_size=*/16, /*enable_caching=*/true);
//   std::vector<int> ids = pool.allocate(4);              // ref_count 1 each
//   pool.cache_block(ids[0], hash);                        // full block -> prefix index
//   if (auto b = pool.lookup(hash)) pool.touch({*b});      // reuse on admission
//   pool.release(ids);                                     // back to the free list
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace mlxcel {

// Hash of a full block: chained from the parent block's hash, the block's token ids
// and optional extra keys (e.g. image digests of the tokens the block covers).
using BlockHash = uint64_t;

// kNoParent is the parent hash of a sequence's first block.
inline constexpr BlockHash kNoParent = 0x6d6c7863656c4b56ull;  // "mlxcelKV"

// Deterministic hash of (parent, tokens, extra keys); never returns 0.
BlockHash hash_block(BlockHash parent, std::span<const int> tokens, std::span<const uint64_t> extra_keys = {});

// A copy the runner must perform before the step: dst gets src's K/V rows.
struct BlockCopy {
  int src = -1;
  int dst = -1;
};

struct PrefixCacheStats {
  int64_t queries = 0;       // full blocks looked up
  int64_t hits = 0;          // of which found
  int64_t evictions = 0;     // cached blocks whose hash was dropped to reuse the block
  int64_t query_tokens = 0;  // prompt tokens looked up on admission
  int64_t hit_tokens = 0;    // of which served from the cache
};

class BlockPool {
 public:
  // n_blocks > 0, block_size > 0; throws Error(invalid_request) otherwise.
  BlockPool(int n_blocks, int block_size, bool enable_caching = true);

  int n_blocks() const { return int(blocks_.size()); }
  int block_size() const { return block_size_; }
  bool caching_enabled() const { return enable_caching_; }
  // Blocks with ref_count 0 (cached-but-unused ones included: they can be evicted).
  int n_free() const { return n_free_; }
  // Fraction of blocks in use, 0..1.
  double usage() const { return 1.0 - double(n_free_) / double(blocks_.size()); }

  // Takes n blocks from the head of the free list (evicting their hashes) with
  // ref_count 1. Precondition: n <= n_free(); checked.
  std::vector<int> allocate(int n);
  // Adds one reference to each block; a free block leaves the free list (cache hit).
  void touch(std::span<const int> ids);
  // Drops one reference from each block, in the given order; blocks reaching 0 go to
  // the tail of the free list (evicted last). Callers pass a table tail-first so that a
  // sequence's last blocks are evicted before its shared prefix.
  void release(std::span<const int> ids);

  // The cached block holding this hash, if any.
  std::optional<int> lookup(BlockHash hash) const;
  // Records a full, computed block under hash. When another block already holds the
  // hash this one stays uncached (no duplicate entries). Returns whether it was added.
  bool cache_block(int id, BlockHash hash);
  // Drops every hash (e.g. after the weights change); blocks stay allocated.
  void reset_prefix_cache();

  // Copy-on-write hook: a sequence about to write into `id` gets `id` back when it is
  // the only owner, else a fresh block (ref 1) and the caller's reference to `id` is
  // dropped; `copy` receives the K/V copy the runner must do. nullopt: no free block.
  std::optional<int> make_writable(int id, std::optional<BlockCopy>& copy);

  int ref_count(int id) const { return blocks_.at(id).ref_count; }
  std::optional<BlockHash> block_hash(int id) const;
  const PrefixCacheStats& stats() const { return stats_; }
  PrefixCacheStats& mutable_stats() { return stats_; }
  // Ids on the free list, head first (for tests and debugging).
  std::vector<int> free_list() const;
  // Internal consistency (free count, list links, hash index); throws on a violation.
  void check_invariants() const;

 private:
  struct Block {
    int ref_count = 0;
    int prev = -1, next = -1;  // free-list links; -1 at the ends
    bool on_free_list = false;
    bool has_hash = false;
    BlockHash hash = 0;
  };
  void push_tail(int id);
  void unlink(int id);
  void evict_hash(int id);

  int block_size_;
  bool enable_caching_;
  std::vector<Block> blocks_;
  int head_ = -1, tail_ = -1;
  int n_free_ = 0;
  std::unordered_map<BlockHash, int> index_;  // hash -> cached block id
  PrefixCacheStats stats_;
};

}  // namespace mlxcel
