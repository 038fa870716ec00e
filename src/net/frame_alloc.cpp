#include "pgrouter/util/frame_alloc.hpp"

#include <cstdint>
#include <cstdlib>
#include <new>

namespace pgrouter::util {

namespace {

constexpr std::size_t kGrain = 64;               // size classes of 64 bytes
constexpr std::size_t kClasses = 32;             // cached up to 2 KB; larger frames go to malloc
constexpr std::size_t kMaxCachedBytes = 256 * 1024;  // per thread

struct Block {
    Block* next;
};

struct Cache {
    Block* head[kClasses] = {};
    std::size_t bytes = 0;
    ~Cache();
};

// Frames destroyed after this thread's cache (thread exit, static destructors) go
// straight back to malloc: `gone` is trivially destructible, so it can still be read.
thread_local bool gone = false;
thread_local Cache cache;

Cache::~Cache() {
    gone = true;
    for (auto*& h : head) {
        while (h) {
            Block* b = h;
            h = b->next;
            std::free(b);
        }
    }
}

std::size_t class_of(std::size_t size) { return (size + kGrain - 1) / kGrain; }  // 1-based

}  // namespace

void* frame_allocate(std::size_t size) {
    std::size_t c = class_of(size);
    if (c <= kClasses && !gone) {
        if (Block*& h = cache.head[c - 1]) {
            Block* b = h;
            h = b->next;
            cache.bytes -= c * kGrain;
            return b;
        }
    }
    // malloc's alignment (16) is Asio's default for frames.
    void* p = std::malloc(c * kGrain);
    if (!p) throw std::bad_alloc();
    return p;
}

void frame_deallocate(void* pointer, std::size_t size) noexcept {
    std::size_t c = class_of(size);
    if (c <= kClasses && !gone && cache.bytes + c * kGrain <= kMaxCachedBytes) {
        auto* b = static_cast<Block*>(pointer);
        b->next = cache.head[c - 1];
        cache.head[c - 1] = b;
        cache.bytes += c * kGrain;
        return;
    }
    std::free(pointer);
}

}  // namespace pgrouter::util
