#include "engine/block_pool.h"

#include "base/error.h"

namespace mlxcel {

namespace {
// splitmix64 finalizer: a bijective 64-bit mix.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
inline uint64_t combine(uint64_t h, uint64_t v) { return mix64(h ^ mix64(v + 0x632be59bd9b4e019ull)); }
}  // namespace

BlockHash hash_block(BlockHash parent, std::span<const int> tokens, std::span<const uint64_t> extra_keys) {
  // NOTE: 64-bit chained hash; a false hit needs a collision between two distinct
  // prefixes (~n^2 / 2^64 for n cached blocks). Lengths are mixed in so that
  // (tokens, extra) boundaries cannot be shifted to collide.
  uint64_t h = combine(mix64(parent), tokens.size());
  for (int t : tokens) h = combine(h, uint64_t(uint32_t(t)));
  h = combine(h, 0xe87a000000000000ull | extra_keys.size());
  for (uint64_t k : extra_keys) h = combine(h, k);
  return h == 0 ? 1 : h;
}

BlockPool::BlockPool(int n_blocks, int block_size, bool enable_caching)
    : block_size_(block_size), enable_caching_(enable_caching) {
  if (n_blocks <= 0) invalid("[block_pool] n_blocks must be positive, got {}", n_blocks);
  if (block_size <= 0) invalid("[block_pool] block_size must be positive, got {}", block_size);
  blocks_.resize(n_blocks);
  for (int i = 0; i < n_blocks; ++i) push_tail(i);
}

void BlockPool::push_tail(int id) {
  Block& b = blocks_[id];
  b.prev = tail_;
  b.next = -1;
  if (tail_ >= 0) blocks_[tail_].next = id;
  else head_ = id;
  tail_ = id;
  b.on_free_list = true;
  ++n_free_;
}

void BlockPool::unlink(int id) {
  Block& b = blocks_[id];
  MLXCEL_CHECK(b.on_free_list, "block {} is not free", id);
  if (b.prev >= 0) blocks_[b.prev].next = b.next;
  else head_ = b.next;
  if (b.next >= 0) blocks_[b.next].prev = b.prev;
  else tail_ = b.prev;
  b.prev = b.next = -1;
  b.on_free_list = false;
  --n_free_;
}

void BlockPool::evict_hash(int id) {
  Block& b = blocks_[id];
  if (!b.has_hash) return;
  auto it = index_.find(b.hash);
  if (it != index_.end() && it->second == id) index_.erase(it);
  b.has_hash = false;
  b.hash = 0;
  ++stats_.evictions;
}

std::vector<int> BlockPool::allocate(int n) {
  MLXCEL_CHECK(n >= 0 && n <= n_free_, "allocate {} blocks with {} free", n, n_free_);
  std::vector<int> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    const int id = head_;
    unlink(id);
    evict_hash(id);
    blocks_[id].ref_count = 1;
    out.push_back(id);
  }
  return out;
}

void BlockPool::touch(std::span<const int> ids) {
  for (int id : ids) {
    MLXCEL_CHECK(id >= 0 && id < n_blocks(), "block id {} out of range", id);
    Block& b = blocks_[id];
    if (b.ref_count == 0) unlink(id);
    ++b.ref_count;
  }
}

void BlockPool::release(std::span<const int> ids) {
  for (int id : ids) {
    MLXCEL_CHECK(id >= 0 && id < n_blocks(), "block id {} out of range", id);
    Block& b = blocks_[id];
    MLXCEL_CHECK(b.ref_count > 0, "double free of block {}", id);
    if (--b.ref_count == 0) push_tail(id);
  }
}

std::optional<int> BlockPool::lookup(BlockHash hash) const {
  if (!enable_caching_) return std::nullopt;
  auto it = index_.find(hash);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

bool BlockPool::cache_block(int id, BlockHash hash) {
  if (!enable_caching_) return false;
  Block& b = blocks_.at(id);
  MLXCEL_CHECK(b.ref_count > 0, "caching unreferenced block {}", id);
  if (b.has_hash) return b.hash == hash;
  if (index_.count(hash)) return false;
  b.has_hash = true;
  b.hash = hash;
  index_[hash] = id;
  return true;
}

void BlockPool::reset_prefix_cache() {
  for (auto& b : blocks_) b.has_hash = false, b.hash = 0;
  index_.clear();
}

std::optional<int> BlockPool::make_writable(int id, std::optional<BlockCopy>& copy) {
  copy.reset();
  Block& b = blocks_.at(id);
  MLXCEL_CHECK(b.ref_count > 0, "make_writable on unreferenced block {}", id);
  if (b.ref_count == 1) {
    // Sole owner: the contents will change, so the hash no longer describes it.
    evict_hash(id);
    return id;
  }
  if (n_free_ == 0) return std::nullopt;
  const int fresh = allocate(1)[0];
  --b.ref_count;  // still >= 1: another owner keeps it
  copy = BlockCopy{id, fresh};
  return fresh;
}

std::optional<BlockHash> BlockPool::block_hash(int id) const {
  const Block& b = blocks_.at(id);
  if (!b.has_hash) return std::nullopt;
  return b.hash;
}

std::vector<int> BlockPool::free_list() const {
  std::vector<int> out;
  for (int id = head_; id >= 0; id = blocks_[id].next) out.push_back(id);
  return out;
}

void BlockPool::check_invariants() const {
  int n = 0, prev = -1;
  for (int id = head_; id >= 0; id = blocks_[id].next) {
    MLXCEL_CHECK(blocks_[id].on_free_list && blocks_[id].ref_count == 0, "block {} on the free list is in use", id);
    MLXCEL_CHECK(blocks_[id].prev == prev, "broken free-list link at block {}", id);
    prev = id;
    MLXCEL_CHECK(++n <= n_blocks(), "free list has a cycle");
  }
  MLXCEL_CHECK(prev == tail_, "free-list tail mismatch");
  MLXCEL_CHECK(n == n_free_, "free count {} but {} blocks on the list", n_free_, n);
  for (int id = 0; id < n_blocks(); ++id) {
    const Block& b = blocks_[id];
    MLXCEL_CHECK(b.ref_count >= 0, "negative ref count on block {}", id);
    MLXCEL_CHECK(b.on_free_list == (b.ref_count == 0), "block {} ref {} but on_free_list {}", id, b.ref_count,
                 b.on_free_list);
    if (b.has_hash) {
      auto it = index_.find(b.hash);
      MLXCEL_CHECK(it != index_.end() && it->second == id, "block {} hash not indexed", id);
    }
  }
  for (const auto& [h, id] : index_)
    MLXCEL_CHECK(blocks_[id].has_hash && blocks_[id].hash == h, "index entry for block {} is stale", id);
}

}  // namespace mlxcel
