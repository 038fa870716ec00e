// Checks every backend of every cluster on its own thread (never a worker's):
// reachable, pg_is_in_recovery(), WAL position; reports to the Cluster, which
// derives lag, usable replicas and whether the primary takes writes.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string_view>
#include <memory>
#include <string>

namespace pgrouter::app {
class Runtime;
}
namespace pgrouter::routing {
class Cluster;
}

namespace pgrouter::health {

class Checker {
public:
    explicit Checker(app::Runtime& rt);
    ~Checker();
    Checker(const Checker&) = delete;
    void start();
    void stop();
    // Starts checking `c` (replacing a cluster of the same name); thread-safe.
    void watch(std::shared_ptr<routing::Cluster> c);
    void unwatch(const std::string& name);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// "16/B374D848" -> 0x16B374D848; nullopt when malformed.
std::optional<std::uint64_t> parse_lsn(std::string_view s);

}  // namespace pgrouter::health
