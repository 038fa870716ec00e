// What the admin console keeps between commands: per-database totals sampled
// every stats_period, so SHOW STATS averages cover the last whole period.
#pragma once

#include "pgrouter/stats/counters.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace pgrouter::app {
class Runtime;
}

namespace pgrouter::admin {

struct Averages {
    // per second
    std::uint64_t xact_count = 0, query_count = 0, bytes_received = 0, bytes_sent = 0, server_assignments = 0;
    // microseconds per transaction / query / server assignment
    std::uint64_t xact_time = 0, query_time = 0, wait_time = 0;
};

// Per database: the sum over its pools.
std::map<std::string, stats::Totals> totals_by_database(app::Runtime& rt);

class State {
public:
    using Clock = std::chrono::steady_clock;
    explicit State(app::Runtime& rt);
    // Takes a sample; the averages then cover the time since the previous one.
    void sample(app::Runtime& rt);
    // Averages of the last whole period per database (empty before the first one ends).
    std::map<std::string, Averages> averages() const;

private:
    struct Sample {
        Clock::time_point at;
        std::map<std::string, stats::Totals> dbs;
    };
    mutable std::mutex m_;
    Sample prev_, last_;
    bool have_period_ = false;
};

// The runtime's State, installed on first use.
State& state(app::Runtime& rt);

Averages average(const stats::Totals& from, const stats::Totals& to, double seconds);

}  // namespace pgrouter::admin
