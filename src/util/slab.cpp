#include "pgrouter/util/slab.hpp"

#include <sys/mman.h>

#include <cstdint>
#include <new>
#include <stdexcept>

namespace pgrouter::util {

struct SlabAllocator::Slab {
    Slab* prev = nullptr;
    Slab* next = nullptr;
    void* free = nullptr;     // freed blocks, each holding the next one's address
    std::size_t used = 0;     // blocks handed out
    std::size_t fresh = 0;    // blocks never handed out start at this index
    bool linked = false;
};

namespace {
std::size_t round16(std::size_t n) { return (n + 15) & ~std::size_t{15}; }
}  // namespace

SlabAllocator::SlabAllocator(std::size_t block_size, std::size_t slab_bytes)
    : block_(round16(block_size < sizeof(void*) ? sizeof(void*) : block_size)), slab_bytes_(slab_bytes) {
    if (slab_bytes_ < 4096 || (slab_bytes_ & (slab_bytes_ - 1)) != 0)
        throw std::invalid_argument("slab size must be a power of two of at least 4096");
    first_ = round16(sizeof(Slab));
    if (first_ + block_ > slab_bytes_) throw std::invalid_argument("block larger than a slab");
    per_slab_ = (slab_bytes_ - first_) / block_;
}

SlabAllocator::~SlabAllocator() {
    // Only empty slabs are still listed once every block is freed; slabs with live
    // blocks (a leak) are left mapped rather than pulled from under their users.
    for (Slab* s = partial_; s;) {
        Slab* next = s->next;
        if (s->used == 0) ::munmap(s, slab_bytes_);
        s = next;
    }
}

void SlabAllocator::link(Slab* s) {
    s->prev = nullptr;
    s->next = partial_;
    if (partial_) partial_->prev = s;
    partial_ = s;
    s->linked = true;
}

void SlabAllocator::unlink(Slab* s) {
    if (s->prev) s->prev->next = s->next;
    else partial_ = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = nullptr;
    s->linked = false;
}

void* SlabAllocator::allocate() {
    std::lock_guard lk(m_);
    Slab* s = partial_;
    if (!s) {
        // Map twice the size and keep the aligned half, so a block finds its slab
        // by masking its address.
        void* raw = ::mmap(nullptr, 2 * slab_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED) throw std::bad_alloc();
        auto base = reinterpret_cast<std::uintptr_t>(raw);
        auto aligned = (base + slab_bytes_ - 1) & ~(slab_bytes_ - 1);
        if (aligned > base) ::munmap(raw, aligned - base);
        auto tail = base + 2 * slab_bytes_ - (aligned + slab_bytes_);
        if (tail > 0) ::munmap(reinterpret_cast<void*>(aligned + slab_bytes_), tail);
        s = new (reinterpret_cast<void*>(aligned)) Slab{};
        ++slabs_;
        ++empty_;
        link(s);
    }
    void* p;
    if (s->free) {
        p = s->free;
        s->free = *static_cast<void**>(p);
    } else {
        p = reinterpret_cast<char*>(s) + first_ + s->fresh * block_;
        ++s->fresh;
    }
    if (s->used++ == 0) --empty_;
    ++in_use_;
    if (!s->free && s->fresh == per_slab_) unlink(s);
    return p;
}

void SlabAllocator::deallocate(void* p) noexcept {
    if (!p) return;
    std::lock_guard lk(m_);
    auto* s = reinterpret_cast<Slab*>(reinterpret_cast<std::uintptr_t>(p) & ~(slab_bytes_ - 1));
    *static_cast<void**>(p) = s->free;
    s->free = p;
    --in_use_;
    if (!s->linked) link(s);
    if (--s->used > 0) return;
    if (empty_ == 0) {
        ++empty_;  // kept for the next allocation
        return;
    }
    unlink(s);
    ::munmap(s, slab_bytes_);
    --slabs_;
}

std::size_t SlabAllocator::slabs() const {
    std::lock_guard lk(m_);
    return slabs_;
}

std::size_t SlabAllocator::in_use() const {
    std::lock_guard lk(m_);
    return in_use_;
}

}  // namespace pgrouter::util
