// A pool of server connections for one (database, user). Shared by all workers:
// each worker keeps its own idle list (no lock on the fast path); the global
// count, waiters and limits sit behind one mutex taken only on the slow path.
#pragma once

#include "pgrouter/util/task.hpp"
#include "pgrouter/auth/auth.hpp"
#include "pgrouter/config/config.hpp"
#include "pgrouter/stats/counters.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace pgrouter::app {
class Worker;
class Runtime;
struct Snapshot;
}
namespace pgrouter::config {
struct DatabaseConfig;
}
namespace pgrouter::session {
class ServerConnection;
}

namespace pgrouter::pool {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using session::ServerConnection;

// Where and how this pool's servers connect. Immutable; swapped on reload or failover.
struct Target {
    std::string host;  // IP/hostname, or a unix socket directory when it starts with '/'
    int port = 5432;
    std::string dbname;
    std::string user;  // server-side user
    std::optional<auth::Credential> credential;  // password for the server login
    // Sent in the server's StartupMessage besides user and database: the database's
    // client_encoding, datestyle, timezone and application_name (PgBouncer's
    // "ask specific ... from server"). The server's answers become the values
    // clients that did not name their own see.
    std::vector<std::pair<std::string, std::string>> startup_params;
    // Run once on each new server connection before any client gets it; an error is
    // logged and the connection used anyway (as PgBouncer).
    std::string connect_query;
    // A database whose host= lists several: its entries (each new connection takes one,
    // per `load_balance`); empty for a single host. `host` keeps the whole list.
    std::vector<std::string> hosts;
    config::LoadBalanceHosts load_balance = config::LoadBalanceHosts::round_robin;
    // Checked on each new server connection after its login and connect_query.
    config::TargetSessionAttrs session_attrs = config::TargetSessionAttrs::any;
    std::uint64_t generation = 0;               // bumped whenever any of the above changes
    bool unix_socket() const { return !host.empty() && host[0] == '/'; }
};

struct Settings {
    int pool_size = 20;
    int min_pool_size = 0;
    int reserve_pool_size = 0;
    double reserve_pool_timeout = 5.0;
    double server_connect_timeout = 15.0;
    double server_login_retry = 15.0;
    double server_lifetime = 3600.0;
    double server_idle_timeout = 600.0;
    double server_check_delay = 30.0;
    std::string server_check_query;
    // Look for a termination notice on every idle server before handing it out, not
    // only on those idle for a while: cluster backends stop under failover, and a
    // client between transactions must not be handed a server the node just closed.
    // Servers with an idle watch (plain TCP and unix sockets) are always looked at, for
    // free; this decides the MSG_PEEK for the others (TLS).
    bool check_idle_always = false;
    // server_round_robin: hand out the least recently used idle server (spreads load
    // over a round-robin address) instead of the most recent (keeps few servers hot).
    bool round_robin = false;
    // The client-side timeouts of this pool's sessions, after the user's and the
    // database's overrides (0 = off). Read by each session's janitor, so a RELOAD or
    // an admin SET reaches connected clients too.
    double query_wait_timeout = 120;
    double query_timeout = 0;
    double idle_transaction_timeout = 0;
    double transaction_timeout = 0;
    double client_idle_timeout = 0;
};

// A global cap shared by several pools (max_db_connections, max_user_connections).
struct Limit {
    std::atomic<int> count{0};
    std::atomic<int> max{0};  // 0 = unlimited
    bool try_acquire();
    void release() { count.fetch_sub(1); }
};

struct AcquireResult {
    std::unique_ptr<ServerConnection> server;
    std::string sqlstate;  // set on failure
    std::string message;
};

class Pool : public std::enable_shared_from_this<Pool> {
public:
    Pool(app::Runtime& rt, std::string database, std::string user, std::shared_ptr<Limit> db_limit,
         std::shared_ptr<Limit> user_limit, std::string backend = {});
    ~Pool();

    const std::string& database() const { return database_; }
    const std::string& user() const { return user_; }
    // "" for a database's own pool (a single server, or a cluster's current primary);
    // "host:port" for the pool of one replica of a cluster.
    const std::string& backend() const { return backend_; }
    app::Runtime& runtime() { return rt_; }
    std::uint64_t generation() const { return generation_.load(std::memory_order_relaxed); }
    Limit& db_limit() { return *db_limit_; }
    Limit& user_limit() { return *user_limit_; }

    // Runs on worker `w`: an idle server of this worker, a new one, a migrated one, or an error.
    // A caller waiting in the queue gives up when `*stop` is true at a wake-up (see wake_waiter).
    Task<AcquireResult> acquire(app::Worker& w, Clock::time_point deadline, const bool* stop = nullptr);
    // acquire()'s first step without a coroutine: an idle server of this worker that
    // needs no server_check_query, or null (then acquire() does the rest).
    std::unique_ptr<ServerConnection> take_ready_idle(app::Worker& w);
    // On worker `w`: wakes the queued acquire() of that `stop` flag (just set by its
    // caller), so that it leaves the queue now rather than at its deadline.
    void wake_waiter(app::Worker& w, const bool* stop);
    // A clean server goes back (or straight to a waiter); anything doubtful is discarded.
    void release(app::Worker& w, std::unique_ptr<ServerConnection> s);
    void discard(app::Worker& w, std::unique_ptr<ServerConnection> s);

    void configure(const Settings& s, std::shared_ptr<const Target> target);
    std::shared_ptr<const Target> target() const { return target_.load(); }
    Settings settings() const;
    std::shared_ptr<const Settings> settings_ref() const { return settings_ptr_.load(); }
    double query_wait_timeout() const { return wait_timeout_.load(std::memory_order_relaxed); }

    // ParameterStatus values of a fresh server login, sent to clients at their login.
    std::optional<std::vector<std::pair<std::string, std::string>>> welcome() const;
    void set_welcome(std::vector<std::pair<std::string, std::string>> w);
    // SCRAM keys recovered from a client login, reused for server logins.
    void set_scram_keys(auth::Bytes client_key, auth::Bytes server_key);
    std::optional<std::pair<auth::Bytes, auth::Bytes>> scram_keys() const;

    // Every second on each worker: closes idle servers past their lifetime or
    // idle timeout, grants reserve slots to clients that waited too long.
    void janitor(app::Worker& w);
    // Clients wait although the pool is under pool_size: a db/user limit holds them.
    bool blocked_by_shared_limit() const;
    // Closes this worker's least recently used idle server; false when none.
    bool evict_one_idle(app::Worker& w);
    // Closes idle servers of this worker now (RECONNECT, failover) and marks busy ones.
    void close_idle(app::Worker& w);

    // At exit, after the workers stopped: drops every idle server.
    void drop_idle();
    // autodb_idle_timeout: nobody has held this pool for that long (PoolRegistry::
    // free_unused); each worker's janitor closes its idle servers and opens none.
    bool retiring() const { return retiring_.load(std::memory_order_relaxed); }
    // Client sessions logged in to this pool's database (see PoolRegistry::free_unused).
    void add_client() { clients_.fetch_add(1, std::memory_order_relaxed); }
    void remove_client() { clients_.fetch_sub(1, std::memory_order_relaxed); }

    struct Counts {
        int total = 0, idle = 0, waiting = 0;
        double max_wait_seconds = 0;  // the oldest waiter's wait
    };
    Counts counts() const;
    // This worker's counters for this pool (written by that worker only).
    stats::Counters& counters(int worker) { return shards_[static_cast<std::size_t>(worker)]->counters; }
    stats::Totals totals() const;
    // This worker's idle servers (admin SHOW SERVERS); on that worker's thread only.
    const std::vector<std::unique_ptr<ServerConnection>>& idle_servers(int worker) const {
        return shards_[static_cast<std::size_t>(worker)]->idle;
    }

private:
    struct Waiter;
    // Waiters are made per transaction while the pool is busy: each worker thread
    // keeps a few finished ones to reuse.
    static std::shared_ptr<Waiter> make_waiter(app::Worker& w);
    static void recycle(std::shared_ptr<Waiter>&& waiter, app::Worker& w);
    static std::vector<std::shared_ptr<Waiter>>& spare_waiters();  // this thread's
    struct Shard {
        std::vector<std::unique_ptr<ServerConnection>> idle;  // LIFO; owner thread only
        std::atomic<int> idle_count{0};
        stats::Counters counters;
    };
    // The next idle server of `sh` to hand out (most or least recently used, per round_robin).
    static std::unique_ptr<ServerConnection> take_idle(Shard& sh, bool round_robin);
    bool try_reserve_slot_locked(bool allow_reserve);
    void release_slot_locked();
    Task<AcquireResult> connect_new(app::Worker& w, Clock::time_point deadline);
    bool usable(const ServerConnection& s, Clock::time_point now) const;
    // Before handing out a server that may have sat idle (on this worker's list or
    // another's): usable and silent while idle (peeking when due), else discarded
    // (`s` emptied); then, once idle past server_check_delay, server_check_query.
    bool vetted(app::Worker& w, std::unique_ptr<ServerConnection>& s, const Settings& st, Clock::time_point now);
    bool check_due(const ServerConnection& s, const Settings& st, Clock::time_point now) const;
    Task<bool> run_check(app::Worker& w, std::unique_ptr<ServerConnection>& s, const Settings& st);
    // Hands `s` to the oldest waiter (moving it to the waiter's worker); false when none waits.
    bool deliver(app::Worker& w, std::unique_ptr<ServerConnection>& s);
    void grant_slot_to_waiter_locked();
    void offer(app::Worker& w);
    void offer_from_others(app::Worker& w);

    app::Runtime& rt_;
    std::string database_, user_, backend_;
    std::shared_ptr<Limit> db_limit_, user_limit_;
    std::vector<std::unique_ptr<Shard>> shards_;
    std::atomic<std::shared_ptr<const Target>> target_;

    std::atomic<std::uint64_t> generation_{0};  // target_->generation, cheap to read
    std::atomic<unsigned> host_cursor_{0};      // the next (round-robin) or current (disable) entry of hosts
    std::atomic<double> lifetime_{3600.0};      // settings server_lifetime, cheap to read
    std::atomic<double> wait_timeout_{120.0};   // settings query_wait_timeout, read per transaction
    std::atomic<std::shared_ptr<const Settings>> settings_ptr_{std::make_shared<const Settings>()};
    friend class PoolRegistry;
    std::atomic<bool> retiring_{false};
    std::atomic<int> clients_{0};
    std::optional<Clock::time_point> unused_since_;  // PoolRegistry::free_unused only (one thread)
    mutable std::mutex m_;  // guards everything below
    Settings settings_;
    int total_ = 0;
    std::deque<std::shared_ptr<Waiter>> waiters_;
    std::atomic<int> n_waiters_{0};
    std::optional<std::vector<std::pair<std::string, std::string>>> welcome_;
    std::optional<std::pair<auth::Bytes, auth::Bytes>> scram_keys_;
    struct Failure {
        Clock::time_point at;
        std::uint64_t generation = 0;
        std::string sqlstate, message;
    };
    std::optional<Failure> last_failure_;
};

class PoolRegistry;

// Computes a pool's settings, target and limits from a snapshot and applies
// them; the target keeps its generation when nothing in it changed, so a reload
// that does not touch a database keeps its server connections.
void apply_config(Pool& pool, const app::Snapshot& snap, const config::DatabaseConfig& db,
                  const std::optional<auth::Credential>& queried_credential = std::nullopt);
// Re-applies the configuration to every pool after RELOAD; pools whose
// database is gone keep their last settings until their clients leave.
void reconfigure_all(PoolRegistry& pools, const app::Snapshot& snap);

// All pools, created on first use by a client login.
class PoolRegistry {
public:
    explicit PoolRegistry(app::Runtime& rt) : rt_(rt) {}
    std::shared_ptr<Pool> get(const std::string& database, const std::string& user,
                              const std::string& backend = {}) const;
    // Creates it (configured by `setup`) when missing.
    template <class Setup>
    std::shared_ptr<Pool> get_or_create(const std::string& database, const std::string& user, Setup&& setup,
                                        const std::string& backend = {}) {
        std::lock_guard lk(m_);
        auto& p = pools_[{database, user, backend}];
        if (!p) {
            p = std::make_shared<Pool>(rt_, database, user, limit_locked(db_limits_, database),
                                       limit_locked(user_limits_, user), backend);
            setup(*p);
        }
        return p;
    }
    std::vector<std::shared_ptr<Pool>> all() const;
    // Called once a second from one thread: a pool that no client session has been
    // logged in to for `limit(pool)` seconds (negative: kept for ever) has its idle
    // servers closed (see Pool::retiring) and, once it has none and nothing else holds
    // it (a SHOW, another worker's janitor, an auth_query lookup: tried again at the
    // next call), is removed with its statistics. Returns the pools removed.
    std::vector<std::shared_ptr<Pool>> free_unused(Clock::time_point now,
                                                   const std::function<double(const Pool&)>& limit);
    std::shared_ptr<Limit> db_limit(const std::string& db);
    std::shared_ptr<Limit> user_limit(const std::string& user);

private:
    std::shared_ptr<Limit> limit_locked(std::map<std::string, std::shared_ptr<Limit>>& m, const std::string& k);
    app::Runtime& rt_;
    mutable std::mutex m_;
    std::map<std::tuple<std::string, std::string, std::string>, std::shared_ptr<Pool>> pools_;
    std::map<std::string, std::shared_ptr<Limit>> db_limits_, user_limits_;
};

}  // namespace pgrouter::pool
