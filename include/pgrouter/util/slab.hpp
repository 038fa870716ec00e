// Fixed-size blocks carved from memory mapped for them alone, so that what many
// objects free at once (idle clients giving back their serving state) returns to
// the OS instead of staying behind as holes between long-lived heap blocks.
#pragma once

#include <cstddef>
#include <mutex>

namespace pgrouter::util {

class SlabAllocator {
public:
    // Blocks of `block_size` bytes (rounded up to 16), from slabs of `slab_bytes`
    // (a power of two, at least a page, aligned to its size). At most one empty
    // slab is kept for the next allocation; the others are unmapped.
    explicit SlabAllocator(std::size_t block_size, std::size_t slab_bytes = 64 * 1024);
    ~SlabAllocator();
    SlabAllocator(const SlabAllocator&) = delete;
    SlabAllocator& operator=(const SlabAllocator&) = delete;

    void* allocate();                     // throws std::bad_alloc
    void deallocate(void* p) noexcept;    // p from this allocator's allocate()

    std::size_t block_size() const { return block_; }
    std::size_t blocks_per_slab() const { return per_slab_; }
    std::size_t slabs() const;            // slabs mapped now
    std::size_t in_use() const;           // blocks allocated and not freed

private:
    struct Slab;
    void link(Slab* s);
    void unlink(Slab* s);

    std::size_t block_, slab_bytes_, first_, per_slab_;
    mutable std::mutex m_;
    Slab* partial_ = nullptr;  // slabs with a free block
    std::size_t slabs_ = 0, in_use_ = 0, empty_ = 0;
};

}  // namespace pgrouter::util
