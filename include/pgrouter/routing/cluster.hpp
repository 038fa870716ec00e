// A cluster: one primary and its streaming replicas, as discovery describes it
// and as the health checker finds it. Both inputs arrive on background threads;
// routing reads an immutable View published whole (one atomic load per pick).
#pragma once

#include "pgrouter/config/config.hpp"
#include "pgrouter/routing/topology.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace pgrouter::routing {

enum class BackendState { checking, up, down, lagging };
const char* to_string(BackendState);

// One health check's findings about one backend.
struct Health {
    BackendState state = BackendState::checking;
    std::optional<bool> in_recovery;
    std::optional<std::uint64_t> lsn;       // current (primary) or last replayed (replica) WAL position
    std::optional<std::int64_t> lag_bytes;  // replicas: the primary's current LSN minus this replay LSN
    std::chrono::system_clock::time_point last_check{};
    std::string error;
};

struct Backend {
    HostPort addr;
    enum class Role { primary, replica, unknown } role = Role::unknown;
    Health health;
    bool usable_replica = false;
};
const char* to_string(Backend::Role);

// What routing reads. Immutable.
struct View {
    std::uint64_t epoch = 0;           // bumped on every change
    std::uint64_t primary_epoch = 0;   // bumped when the primary address changes
    std::optional<HostPort> primary;   // the primary discovery named (possibly not yet verified)
    bool writable = false;             // primary seen up with pg_is_in_recovery() = false
    std::string hold_reason;           // why writes wait ("" when writable)
    std::vector<HostPort> usable_replicas;
    std::vector<Backend> backends;     // primary first, then replicas, then former primaries
    std::string discovery;             // source and state, for SHOW CLUSTERS
};

class Cluster {
public:
    explicit Cluster(const config::ClusterConfig& cfg);

    const std::string& name() const { return name_; }
    std::shared_ptr<const View> view() const { return view_.load(std::memory_order_acquire); }
    std::shared_ptr<const config::ClusterConfig> config() const { return cfg_.load(); }

    // Discovery (or SET PRIMARY/REPLICAS, or the static config) says this. Thread-safe.
    // Returns true when the topology changed.
    bool apply(const Discovered& d);
    // SET PRIMARY / SET REPLICAS: replace one half, keep the other.
    bool set_primary(const HostPort& p);
    bool set_replicas(const std::vector<HostPort>& r);
    // The health checker's findings for every backend it checked this round.
    void report_health(const HostPort& addr, const Health& h);
    // A server connection opened for writes found the node in recovery (or unreachable).
    void report_not_writable(const HostPort& addr, const std::string& why);
    void set_discovery_status(std::string s);
    // RELOAD: new settings; with static discovery the file's topology replaces the current one.
    void reconfigure(const config::ClusterConfig& cfg);

    // The next usable replica, round-robin; nullopt when none.
    std::optional<HostPort> next_replica();
    // Every address the health checker should look at.
    std::vector<HostPort> backends() const;

    // Called (on the thread that caused it, outside the lock) after the view changed.
    void set_listener(std::function<void(const View& before, const View& after)> f);
    // Called when something wants the health checker to look again now.
    void set_wakeup(std::function<void()> f);
    void wake_checker();

private:
    struct Topology {
        std::optional<HostPort> primary;
        std::vector<HostPort> replicas;
        std::vector<HostPort> former;      // old primaries: used as replicas once they are in recovery
        std::vector<HostPort> candidates;  // the primary candidates of the last answer
        std::string hold_reason;           // split brain / no primary
        std::string source = "static";
    };
    bool apply_locked(const Discovered& d);
    // The file's primary and replicas (startup, and RELOAD with static discovery).
    void apply_file_locked(const config::ClusterConfig& cfg);
    void publish_locked(std::shared_ptr<const View>& before, std::shared_ptr<const View>& after);
    void notify(const std::shared_ptr<const View>& before, const std::shared_ptr<const View>& after);
    bool healthy_writable(const HostPort& a) const;

    std::string name_;
    std::atomic<std::shared_ptr<const config::ClusterConfig>> cfg_;
    std::atomic<std::shared_ptr<const View>> view_;
    std::atomic<unsigned> rr_{0};
    mutable std::mutex m_;
    Topology topo_;
    std::map<HostPort, Health> health_;
    std::string discovery_status_;
    std::uint64_t epoch_ = 0, primary_epoch_ = 0;
    std::function<void(const View&, const View&)> listener_;
    std::function<void()> wakeup_;
};

}  // namespace pgrouter::routing
