#pragma once
// Coroutine frames from per-thread free lists, one per size class.
//
// Asio recycles coroutine frames through a few per-thread slots searched first-fit:
// with the frames a transaction nests (0.2-0.8 KB each, a dozen sizes), small frames
// take the big blocks and the big frames go to malloc, every transaction. Here each
// size (in 64-byte classes) has its own list, so a frame gets back a block of its own
// size in a few instructions.
//
// This specializes an Asio template: it must be seen before any coroutine is defined,
// in every translation unit that defines one (the precompiled header includes it first;
// other targets include it first or force-include it). A translation unit without it
// would make the linker pick one of two allocators for all of them.
#include <boost/asio/detail/thread_info_base.hpp>

#include <cstddef>

namespace pgrouter::util {

void* frame_allocate(std::size_t size);
void frame_deallocate(void* pointer, std::size_t size) noexcept;

}  // namespace pgrouter::util

namespace boost::asio::detail {

template <>
inline void* thread_info_base::allocate(thread_info_base::awaitable_frame_tag, thread_info_base*, std::size_t size,
                                        std::size_t /*align: Asio's default, which malloc's meets*/) {
    return pgrouter::util::frame_allocate(size);
}

template <>
inline void thread_info_base::deallocate(thread_info_base::awaitable_frame_tag, thread_info_base*, void* pointer,
                                         std::size_t size) {
    pgrouter::util::frame_deallocate(pointer, size);
}

}  // namespace boost::asio::detail
