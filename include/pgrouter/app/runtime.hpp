// What every worker shares: the config/auth snapshot, the pools, the cancel
// registry, id counters. Owned by App; passed by reference, never global.
#pragma once

#include "pgrouter/auth/auth.hpp"
#include "pgrouter/config/config.hpp"
#include "pgrouter/net/tcp_tuning.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>

#include <atomic>
#include <functional>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace pgrouter::pool {
class Pool;
class PoolRegistry;
}
namespace pgrouter::session {
class ClientSession;
class CancelRegistry;
}
namespace pgrouter::admin {
class State;
}
namespace pgrouter::routing {
class Cluster;
}

namespace pgrouter::app {

namespace asio = boost::asio;

// Immutable; replaced whole on RELOAD.
struct Snapshot {
    std::shared_ptr<const config::Config> config;
    std::map<std::string, auth::Credential> users;  // auth_file
    std::vector<auth::HbaRule> hba;
    auth::IdentMaps ident;  // auth_ident_file
    std::shared_ptr<asio::ssl::context> client_tls;  // null when client TLS is disabled
    std::shared_ptr<asio::ssl::context> server_tls;  // null when server TLS is disabled
    net::TcpTuning tcp;                              // tcp_keepalive, tcp_keep*, tcp_user_timeout
    std::uint64_t generation = 0;
};

// Builds a snapshot from a config (reads auth_file, hba, TLS files). Errors are
// returned as messages; nothing is published on error.
std::shared_ptr<const Snapshot> build_snapshot(std::shared_ptr<const config::Config> cfg, std::uint64_t generation,
                                               std::vector<std::string>& errors);

// Fixed-size I/O buffers lent to sessions only while data moves, so idle
// clients hold none. One per worker, used from its thread only.
class BufferPool {
public:
    static constexpr std::size_t kSize = 32 * 1024;
    struct Lease {
        BufferPool* pool = nullptr;
        char* data = nullptr;
        Lease() = default;
        Lease(BufferPool* p, char* d) : pool(p), data(d) {}
        Lease(Lease&& o) noexcept : pool(o.pool), data(o.data) { o.data = nullptr; }
        Lease& operator=(Lease&& o) noexcept {
            std::swap(pool, o.pool);
            std::swap(data, o.data);
            return *this;
        }
        ~Lease() {
            if (data) pool->put(data);
        }
    };
    Lease get();
    ~BufferPool();

private:
    void put(char* d);
    std::vector<char*> free_;
};

class Runtime;

class Worker {
public:
    Worker(Runtime& rt, int index);
    Worker(const Worker&) = delete;
    asio::io_context& ctx() { return ctx_; }
    int index() const { return index_; }
    Runtime& runtime() { return rt_; }
    BufferPool& buffers() { return buffers_; }
    // Sessions living on this worker (for the janitor and admin); touched on this thread only.
    // This worker's client sessions (a vector: 16 bytes a client, where a list node
    // took 48); the janitor drops the ended ones every second.
    std::vector<std::weak_ptr<session::ClientSession>>& sessions() { return sessions_; }
    void start();
    void join();

private:
    Runtime& rt_;
    int index_;
    asio::io_context ctx_{1};
    BufferPool buffers_;
    std::vector<std::weak_ptr<session::ClientSession>> sessions_;
    std::thread thread_;
};

class Runtime {
public:
    std::shared_ptr<const Snapshot> snapshot() const { return snapshot_.load(std::memory_order_acquire); }
    void publish(std::shared_ptr<const Snapshot> s) { snapshot_.store(std::move(s), std::memory_order_release); }

    // Clusters by name; the map is replaced whole on RELOAD, a Cluster lives on
    // across reloads that keep its name.
    using ClusterMap = std::map<std::string, std::shared_ptr<routing::Cluster>>;
    std::shared_ptr<const ClusterMap> clusters() const { return clusters_.load(std::memory_order_acquire); }
    void publish_clusters(std::shared_ptr<const ClusterMap> c) { clusters_.store(std::move(c)); }
    std::shared_ptr<routing::Cluster> cluster(const std::string& name) const;

    std::vector<std::unique_ptr<Worker>> workers;
    std::unique_ptr<pool::PoolRegistry> pools;
    std::unique_ptr<session::CancelRegistry> cancels;
    std::atomic<std::uint64_t> next_id{1};  // client and server connections share it
    std::atomic<int> client_count{0};
    // Client sessions ended and serving states given back: the janitor returns freed
    // heap pages to the OS after a burst of them.
    std::atomic<std::uint64_t> client_frees{0};
    std::atomic<bool> shutting_down{false};
    std::atomic<bool> paused{false};
    // SUSPEND: sessions finish forwarding what they have read and read nothing more
    // from clients or servers until RESUME.
    std::atomic<bool> suspended{false};
    // PAUSE / DISABLE per database; "*" stands for all. Checked at login (DISABLE)
    // and before a client gets a server (PAUSE).
    void set_paused(const std::string& db, bool on);
    void set_disabled(const std::string& db, bool on);
    bool is_paused(const std::string& db) const;
    bool is_disabled(const std::string& db) const;
    // max_db_client_connections / max_user_client_connections: logged-in clients per
    // database name and per user. admit_client() counts a client in when both counts are
    // under their limits (0 = none) and returns null, else the name of the limit hit;
    // leave_client() counts an admitted client out.
    const char* admit_client(const std::string& db, const std::string& user, int db_max, int user_max);
    void leave_client(const std::string& db, const std::string& user);

    // Set by App: RELOAD (returns "" or the problems), and SHUTDOWN (true = immediate).
    std::function<std::string()> reload;
    std::function<void(bool)> shutdown;
    // The admin console's shared state (stats_period samples); installed by admin::start().
    std::atomic<std::shared_ptr<admin::State>> admin_state;

    Runtime();
    ~Runtime();

private:
    std::atomic<std::shared_ptr<const Snapshot>> snapshot_;
    std::atomic<std::shared_ptr<const ClusterMap>> clusters_{std::make_shared<const ClusterMap>()};
    mutable std::mutex control_m_;
    std::map<std::string, std::pair<bool, bool>> control_;  // db -> (paused, disabled)
    std::atomic<int> any_control_{0};                        // fast path: nothing paused or disabled
    std::mutex clients_m_;
    std::map<std::string, int> db_clients_, user_clients_;  // see admit_client
};

}  // namespace pgrouter::app
