// Per-worker, per-pool counters. One writer (the owning worker), readers on any
// thread: relaxed atomics, written without a locked instruction.
#pragma once

#include <atomic>
#include <cstdint>

namespace pgrouter::stats {

struct Counters {
    std::atomic<std::uint64_t> xact_count{0}, query_count{0}, bytes_received{0}, bytes_sent{0};
    std::atomic<std::uint64_t> xact_time_us{0}, query_time_us{0}, wait_time_us{0}, server_assignments{0};

    static void add(std::atomic<std::uint64_t>& c, std::uint64_t n) {
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
};

struct Totals {
    std::uint64_t xact_count = 0, query_count = 0, bytes_received = 0, bytes_sent = 0;
    std::uint64_t xact_time_us = 0, query_time_us = 0, wait_time_us = 0, server_assignments = 0;
    void add(const Counters& c) {
        xact_count += c.xact_count.load(std::memory_order_relaxed);
        query_count += c.query_count.load(std::memory_order_relaxed);
        bytes_received += c.bytes_received.load(std::memory_order_relaxed);
        bytes_sent += c.bytes_sent.load(std::memory_order_relaxed);
        xact_time_us += c.xact_time_us.load(std::memory_order_relaxed);
        query_time_us += c.query_time_us.load(std::memory_order_relaxed);
        wait_time_us += c.wait_time_us.load(std::memory_order_relaxed);
        server_assignments += c.server_assignments.load(std::memory_order_relaxed);
    }
};

}  // namespace pgrouter::stats
