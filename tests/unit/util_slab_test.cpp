#include "pgrouter/util/slab.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <vector>

using pgrouter::util::SlabAllocator;

TEST(Slab, BlocksAreDistinctAlignedAndWritable) {
    SlabAllocator a(600, 64 * 1024);
    EXPECT_EQ(a.block_size(), 608u);
    std::vector<void*> v;
    for (int i = 0; i < 1000; ++i) {
        void* p = a.allocate();
        ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % 16, 0u);
        std::memset(p, i & 0xff, a.block_size());
        v.push_back(p);
    }
    std::set<void*> uniq(v.begin(), v.end());
    EXPECT_EQ(uniq.size(), v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {  // no block overlaps another
        auto* c = static_cast<unsigned char*>(v[i]);
        EXPECT_EQ(c[0], i & 0xff);
        EXPECT_EQ(c[a.block_size() - 1], i & 0xff);
    }
    EXPECT_EQ(a.in_use(), 1000u);
    EXPECT_EQ(a.slabs(), (1000 + a.blocks_per_slab() - 1) / a.blocks_per_slab());
    for (void* p : v) a.deallocate(p);
    EXPECT_EQ(a.in_use(), 0u);
}

TEST(Slab, FreedSlabsGoBackExceptOne) {
    SlabAllocator a(512, 16 * 1024);
    std::vector<void*> v;
    for (std::size_t i = 0; i < a.blocks_per_slab() * 10; ++i) v.push_back(a.allocate());
    EXPECT_EQ(a.slabs(), 10u);
    std::shuffle(v.begin(), v.end(), std::mt19937(7));
    for (void* p : v) a.deallocate(p);
    EXPECT_EQ(a.slabs(), 1u);  // one empty slab kept for the next allocation
    void* p = a.allocate();
    EXPECT_EQ(a.slabs(), 1u);
    a.deallocate(p);
    a.deallocate(nullptr);
}

TEST(Slab, ReusesFreedBlocksBeforeMappingMore) {
    SlabAllocator a(100, 4096);
    std::vector<void*> v;
    for (std::size_t i = 0; i < a.blocks_per_slab(); ++i) v.push_back(a.allocate());
    EXPECT_EQ(a.slabs(), 1u);
    a.deallocate(v[5]);
    void* again = a.allocate();
    EXPECT_EQ(again, v[5]);
    EXPECT_EQ(a.slabs(), 1u);
    void* next = a.allocate();  // the slab is full: a second one
    EXPECT_EQ(a.slabs(), 2u);
    a.deallocate(next);
    for (std::size_t i = 0; i < v.size(); ++i) a.deallocate(i == 5 ? again : v[i]);
    EXPECT_EQ(a.slabs(), 1u);
}

TEST(Slab, RejectsBadGeometry) {
    EXPECT_THROW(SlabAllocator(64, 1000), std::invalid_argument);
    EXPECT_THROW(SlabAllocator(64, 3 * 4096), std::invalid_argument);
    EXPECT_THROW(SlabAllocator(8192, 4096), std::invalid_argument);
}

TEST(Slab, TwoThreads) {
    SlabAllocator a(200, 8192);
    auto work = [&](int seed) {
        std::mt19937 rng(seed);
        std::vector<void*> mine;
        for (int i = 0; i < 20000; ++i) {
            if (mine.empty() || rng() % 3 != 0) {
                void* p = a.allocate();
                std::memset(p, seed, 200);
                mine.push_back(p);
            } else {
                std::size_t k = rng() % mine.size();
                ASSERT_EQ(static_cast<unsigned char*>(mine[k])[199], static_cast<unsigned char>(seed));
                a.deallocate(mine[k]);
                mine[k] = mine.back();
                mine.pop_back();
            }
        }
        for (void* p : mine) a.deallocate(p);
    };
    std::thread t1(work, 1), t2(work, 2);
    t1.join();
    t2.join();
    EXPECT_EQ(a.in_use(), 0u);
    EXPECT_EQ(a.slabs(), 1u);
}
