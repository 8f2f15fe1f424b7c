// BlockPool and KvCacheManager: allocation, free-list eviction order, prefix index,
// copy-on-write, and the all-free state after every test.
#include <gtest/gtest.h>

#include "base/error.h"
#include "engine/block_pool.h"
#include "engine/kv_cache_manager.h"

namespace mlxcel {
namespace {

class BlockPoolTest : public ::testing::Test {
 protected:
  void TearDown() override {
    pool.check_invariants();
    EXPECT_EQ(pool.n_free(), pool.n_blocks()) << "blocks leaked";
  }
  BlockPool pool{8, 4, true};
};

TEST_F(BlockPoolTest, AllocatesFromTheHeadAndFreesToTheTail) {
  EXPECT_EQ(pool.free_list(), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  auto a = pool.allocate(3);
  EXPECT_EQ(a, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(pool.n_free(), 5);
  for (int id : a) EXPECT_EQ(pool.ref_count(id), 1);
  std::vector<int> rev{2, 1, 0};
  pool.release(rev);
  EXPECT_EQ(pool.free_list(), (std::vector<int>{3, 4, 5, 6, 7, 2, 1, 0}));
  EXPECT_THROW(pool.release(std::vector<int>{0}), Error);  // double free
}

TEST_F(BlockPoolTest, RefcountsShareBlocks) {
  auto a = pool.allocate(2);
  pool.touch(a);
  EXPECT_EQ(pool.ref_count(a[0]), 2);
  pool.release(a);
  EXPECT_EQ(pool.n_free(), 6);
  pool.release(a);
  EXPECT_EQ(pool.n_free(), 8);
}

TEST_F(BlockPoolTest, AllocatingMoreThanFreeIsAnInternalError) {
  EXPECT_THROW(pool.allocate(9), Error);
  EXPECT_EQ(pool.n_free(), 8);
}

TEST_F(BlockPoolTest, CachedBlocksAreEvictedLeastRecentlyUsedFirst) {
  auto a = pool.allocate(8);
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(pool.cache_block(a[i], BlockHash(100 + i)));
  // Release 5 then 2: block 5 is the least recently used.
  pool.release(std::vector<int>{a[5]});
  pool.release(std::vector<int>{a[2]});
  ASSERT_EQ(pool.lookup(105), std::optional<int>(a[5]));
  // A hit on a free cached block takes it off the free list.
  pool.touch(std::vector<int>{a[5]});
  EXPECT_EQ(pool.n_free(), 1);
  pool.release(std::vector<int>{a[5]});  // now most recently used
  EXPECT_EQ(pool.free_list(), (std::vector<int>{a[2], a[5]}));
  auto b = pool.allocate(1);  // evicts block 2's hash
  EXPECT_EQ(b[0], a[2]);
  EXPECT_FALSE(pool.lookup(102).has_value());
  EXPECT_TRUE(pool.lookup(105).has_value());
  EXPECT_EQ(pool.stats().evictions, 1);
  pool.release(b);
  std::vector<int> rest;
  for (int i = 0; i < 8; ++i)
    if (i != 2 && i != 5) rest.push_back(a[i]);
  pool.release(rest);
}

TEST_F(BlockPoolTest, OneBlockPerHash) {
  auto a = pool.allocate(2);
  EXPECT_TRUE(pool.cache_block(a[0], 7));
  EXPECT_FALSE(pool.cache_block(a[1], 7));
  EXPECT_EQ(pool.lookup(7), std::optional<int>(a[0]));
  EXPECT_FALSE(pool.block_hash(a[1]).has_value());
  pool.reset_prefix_cache();
  EXPECT_FALSE(pool.lookup(7).has_value());
  pool.release(a);
}

TEST_F(BlockPoolTest, CopyOnWrite) {
  auto a = pool.allocate(1);
  pool.cache_block(a[0], 9);
  std::optional<BlockCopy> copy;
  // Sole owner: writes in place, the hash no longer describes the block.
  EXPECT_EQ(pool.make_writable(a[0], copy), std::optional<int>(a[0]));
  EXPECT_FALSE(copy.has_value());
  EXPECT_FALSE(pool.lookup(9).has_value());
  // Shared: a fresh block and a copy to do.
  pool.touch(a);
  auto w = pool.make_writable(a[0], copy);
  ASSERT_TRUE(w.has_value() && copy.has_value());
  EXPECT_NE(*w, a[0]);
  EXPECT_EQ(copy->src, a[0]);
  EXPECT_EQ(copy->dst, *w);
  EXPECT_EQ(pool.ref_count(a[0]), 1);
  EXPECT_EQ(pool.ref_count(*w), 1);
  pool.release(std::vector<int>{a[0], *w});
}

TEST(BlockPool, RejectsBadSizes) {
  EXPECT_THROW(BlockPool(0, 16), Error);
  EXPECT_THROW(BlockPool(4, 0), Error);
}

TEST(BlockHash, ChainsParentTokensAndExtraKeys) {
  std::vector<int> t{1, 2, 3, 4};
  const BlockHash h = hash_block(kNoParent, t);
  EXPECT_EQ(h, hash_block(kNoParent, t));
  EXPECT_NE(h, hash_block(h, t));
  EXPECT_NE(h, hash_block(kNoParent, std::vector<int>{1, 2, 3, 5}));
  EXPECT_NE(h, hash_block(kNoParent, std::vector<int>{4, 3, 2, 1}));
  std::vector<uint64_t> img{0xabcdef};
  EXPECT_NE(h, hash_block(kNoParent, t, img));
}

class KvCacheManagerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    kv.pool().check_invariants();
    EXPECT_EQ(kv.pool().n_free(), kv.n_blocks());
    EXPECT_EQ(kv.n_tables(), 0);
  }
  KvCacheManager kv{KvCacheConfig{10, 4, true}};
};

TEST_F(KvCacheManagerTest, AllocatesOnlyMissingBlocks) {
  EXPECT_TRUE(kv.allocate_slots(1, 0, 5));  // 2 blocks
  EXPECT_EQ(kv.block_table(1).size(), 2u);
  EXPECT_TRUE(kv.allocate_slots(1, 5, 3));  // 8 tokens: still 2
  EXPECT_EQ(kv.block_table(1).size(), 2u);
  EXPECT_TRUE(kv.allocate_slots(1, 8, 1));  // 3
  EXPECT_EQ(kv.block_table(1).size(), 3u);
  EXPECT_FALSE(kv.allocate_slots(2, 0, 40));  // all or nothing
  EXPECT_FALSE(kv.has_table(2));
  EXPECT_EQ(kv.pool().n_free(), 7);
  kv.free(1);
}

TEST_F(KvCacheManagerTest, PrefixHitsLeaveOneTokenToCompute) {
  std::vector<int> a{1, 2, 3, 4, 5, 6, 7, 8, 9};  // 2 full blocks + 1
  ASSERT_TRUE(kv.allocate_slots(1, 0, 9));
  kv.cache_computed(1, a, 9, {});
  // Same 8 leading tokens: both blocks hit.
  std::vector<int> b{1, 2, 3, 4, 5, 6, 7, 8, 42, 43};
  auto hit = kv.find_cached_prefix(2, b, {});
  EXPECT_EQ(hit.n_tokens, 8);
  EXPECT_EQ(hit.blocks, (std::vector<int>{kv.block_table(1)[0], kv.block_table(1)[1]}));
  // Exactly 8 tokens: only the first block (the last token must be computed).
  std::vector<int> c{1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(kv.find_cached_prefix(3, c, {}).n_tokens, 4);
  // A different first block breaks the chain even when the second block matches.
  std::vector<int> d{0, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(kv.find_cached_prefix(4, d, {}).n_tokens, 0);
  // Extra keys over the first block change its hash.
  std::vector<ExtraKey> img{{1, 3, 0x1234}};
  EXPECT_EQ(kv.find_cached_prefix(5, b, img).n_tokens, 0);
  ASSERT_TRUE(kv.allocate_slots(2, hit.n_tokens, 2, hit.blocks));
  EXPECT_EQ(kv.pool().ref_count(hit.blocks[0]), 2);
  kv.free(1);
  kv.free(2);
  for (RequestId id : {3, 4, 5}) kv.free(id);
}

TEST_F(KvCacheManagerTest, FreeCachedBlocksCountAgainstCapacityWhenRevived) {
  std::vector<int> a{1, 2, 3, 4, 5, 6, 7, 8, 9};
  ASSERT_TRUE(kv.allocate_slots(1, 0, 9));
  kv.cache_computed(1, a, 9, {});
  kv.free(1);  // 10 free, 2 of them cached
  auto hit = kv.find_cached_prefix(2, a, {});
  ASSERT_EQ(hit.n_tokens, 8);
  // 8 cached + 33 new = 41 tokens = 11 blocks: 9 new + 2 revived > 10 free.
  EXPECT_FALSE(kv.allocate_slots(2, 8, 33, hit.blocks));
  EXPECT_EQ(kv.pool().n_free(), 10);
  EXPECT_TRUE(kv.allocate_slots(2, 8, 32, hit.blocks));  // 10 blocks
  EXPECT_EQ(kv.pool().n_free(), 0);
  kv.free(2);
}

}  // namespace
}  // namespace mlxcel
