// Per-worker, per-pool counters. One writer (the owning worker), readers on any
// thread: relaxed atomics, written without a locked instruction.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace pgrouter::stats {

// Upper bounds (seconds) of the histogram buckets for transaction and wait times;
// the last bucket is +Inf.
inline constexpr double kBuckets[] = {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10};
inline constexpr std::size_t kBucketCount = sizeof(kBuckets) / sizeof(kBuckets[0]) + 1;

inline std::size_t bucket_of(std::uint64_t us) {
    double s = static_cast<double>(us) / 1e6;
    std::size_t i = 0;
    while (i < kBucketCount - 1 && s > kBuckets[i]) ++i;
    return i;
}

struct Counters {
    std::atomic<std::uint64_t> xact_count{0}, query_count{0}, bytes_received{0}, bytes_sent{0};
    std::atomic<std::uint64_t> xact_time_us{0}, query_time_us{0}, wait_time_us{0}, server_assignments{0};

    // Non-cumulative counts per bucket (the exporter accumulates them).
    std::atomic<std::uint64_t> xact_hist[kBucketCount]{}, wait_hist[kBucketCount]{};

    static void add(std::atomic<std::uint64_t>& c, std::uint64_t n) {
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
};

struct Totals {
    std::uint64_t xact_count = 0, query_count = 0, bytes_received = 0, bytes_sent = 0;
    std::uint64_t xact_time_us = 0, query_time_us = 0, wait_time_us = 0, server_assignments = 0;
    std::uint64_t xact_hist[kBucketCount]{}, wait_hist[kBucketCount]{};
    void add(const Counters& c) {
        for (std::size_t i = 0; i < kBucketCount; ++i) {
            xact_hist[i] += c.xact_hist[i].load(std::memory_order_relaxed);
            wait_hist[i] += c.wait_hist[i].load(std::memory_order_relaxed);
        }
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
