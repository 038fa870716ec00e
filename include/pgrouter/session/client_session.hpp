// One client connection: login, then the serving loop. The session coroutine
// (client -> server) and, while a server is linked, the pump coroutine
// (server -> client) run on the same worker thread and share this object.
#pragma once

#include "pgrouter/util/read_handler.hpp"
#include "pgrouter/util/task.hpp"
#include "pgrouter/app/runtime.hpp"
#include "pgrouter/auth/auth.hpp"
#include "pgrouter/config/config.hpp"
#include "pgrouter/net/stream.hpp"
#include "pgrouter/protocol/scanner.hpp"
#include "pgrouter/session/params.hpp"
#include "pgrouter/util/intern.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <unordered_map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

namespace pgrouter::app {
class Worker;
struct Snapshot;
}
namespace pgrouter::pool {
class Pool;
}
namespace pgrouter::routing {
class Cluster;
}

namespace pgrouter::session {

namespace asio = boost::asio;
class ServerConnection;
using Clock = std::chrono::steady_clock;

class ClientSession : public std::enable_shared_from_this<ClientSession> {
public:
    ClientSession(app::Worker& w, net::Stream s, std::uint64_t id);
    ~ClientSession();
    // Spawns the session on worker `w`.
    static void start(app::Worker& w, net::Stream s);

    // Called every second by the worker's janitor: timeouts and shutdown.
    void janitor(Clock::time_point now);
    // A CancelRequest named this session: forward it to the linked server, if any.
    void forward_cancel();
    // Ends the session with a pooler error (sent when the protocol allows it).
    void kill(std::string_view state, std::string message);

    std::uint64_t id() const { return id_; }
    // A logged-in client that a CancelRequest may name (not a console).
    bool cancelable() const { return registered_cancel_; }
    std::uint32_t cancel_key() const { return cancel_key_; }
    const std::string& user() const { return user_; }
    const std::string& database() const { return database_; }
    bool linked() const { return server_ != nullptr; }
    // SUSPEND waits for this to be false on every session: a client (not a console)
    // still logging in, or in the middle of a write (a queued one is not waited for).
    bool suspend_busy() const;
    // For the admin console (SHOW SERVERS/FDS), read on this session's worker only.
    ServerConnection* server() const { return server_.get(); }
    int client_fd() { return client_.native_handle(); }

    // A point-in-time view for the admin console (read on this session's worker).
    struct Info {
        std::uint64_t id = 0;
        std::string user, database, peer, application_name;
        std::string pool_user;  // the user of its pool: a database's forced user, else `user`
        const char* state = "idle";  // login | active | waiting | idle
        std::chrono::system_clock::time_point connect_time, request_time;
        double wait_seconds = 0;
        std::uint64_t server_id = 0;  // 0 = none linked
        bool tls = false;
        std::uint32_t cancel_key = 0;
        bool active_state = false;  // holds its serving state (buffers, scanners): not shrunk
    };
    Info info() const;
    static std::size_t active_state_size();
    std::shared_ptr<pool::Pool> pool() const { return pool_; }

private:
    Task<void> run();
    Task<bool> read_startup(Clock::time_point deadline);
    // Moves `deadline` on by the time a login spent held by SUSPEND.
    Task<bool> authenticate(Clock::time_point& deadline);
    Task<bool> attach(Clock::time_point deadline);
    static std::optional<config::DatabaseConfig> resolve_database(const config::Config& cfg, const std::string& name);
    std::shared_ptr<pool::Pool> pool_for(const config::DatabaseConfig& db, const std::string& user,
                                         const std::string& backend = {});
    // Cluster databases: points pool_ at the primary's pool (waiting for a writable
    // primary until failover_timeout after `since`, and never past `limit`) or at the
    // next usable replica's pool.
    Task<bool> choose_pool(Clock::time_point since, Clock::time_point limit);
    Clock::time_point failover_deadline(Clock::time_point since, Clock::time_point limit) const;
    std::shared_ptr<pool::Pool> replica_pool(const config::HostPort& addr);
    // Acquires a server from pool_ for the next transaction, routing and riding
    // out a failover for cluster databases.
    Task<bool> acquire_server(Clock::time_point wait_deadline);
    // What auth_query said of this client's user: its secret, nothing (no such user),
    // or no answer (failed: the error the client gets, never "wrong password").
    struct AuthLookup {
        std::optional<auth::Credential> cred;
        bool failed = false;
        std::string sqlstate, message;
    };
    Task<AuthLookup> lookup_auth_query(Clock::time_point deadline);
    Task<bool> read_auth_message(std::string& body, Clock::time_point deadline);
    Task<bool> auth_password_exchange(int method, Clock::time_point deadline);
    Task<void> serve();
    // Client reads on plain sockets are callback reads that outlive the serving
    // coroutine: between transactions the coroutine ends ("parks") and the pending
    // read's completion starts it again, so an idle client holds no coroutine frame.
    // TLS clients keep the coroutine's own read and never park.
    void start_client_read(char* data, std::size_t cap);
    void on_client_read(net::error_code ec, std::size_t n);
    Task<std::tuple<net::error_code, std::size_t>> wait_client_read();
    // Ends a serving coroutine waiting on the client between transactions.
    void park();
    void spawn_serve();
    Task<bool> forward_chunk(char* data, std::size_t n, std::size_t cap);
    Task<bool> link();
    // link()'s usual case with no coroutine: not paused or suspended, an idle server of
    // this worker ready, no parameters to re-sync. False: link() is needed (it keeps a
    // server taken here).
    bool link_now();
    void count_wait(Clock::duration waited);
    void count_assignment(Clock::duration waited);
    void start_pump();
    // Until RESUME, or until this session ends (or *stop is set).
    Task<void> wait_while_suspended(const bool* stop = nullptr);
    Task<void> pump();
    Task<void> finish();
    Task<void> release_server();
    // release_server()'s usual case with no coroutine (no cancel in flight). False: nothing done.
    bool release_server_now();
    // The rest of a release: checks, then the pool (or server_reset_query_always first).
    void hand_back(std::unique_ptr<ServerConnection> s);
    // server_reset_query_always: runs the reset on a server its session let go, then
    // releases it (discarded when the reset fails or leaves a transaction open).
    static Task<void> reset_and_release(std::shared_ptr<pool::Pool> pool, app::Worker& w,
                                                   std::unique_ptr<ServerConnection> server, std::string sql);
    bool releasable() const;
    // Named prepared statements (transaction/statement pooling): rewrites the
    // captured messages of one client chunk into `out`.
    void rewrite_statements(const char* chunk, const protocol::FrontendScanner::Result& r, std::string& out);
    // Applies ParseComplete/CloseComplete/ReadyForQuery events of one server chunk;
    // returns the byte ranges (in held_ + chunk coordinates) to hide from the client.
    std::vector<std::pair<long, long>> track_statements(const protocol::BackendScanner::Result& r);
    Task<void> send(const std::string& bytes);
    Task<void> fail(std::string_view state, std::string message);
    // The first reason the session ends (pooler error and log line); later ones are ignored.
    void note_reason(std::string_view state, std::string message);
    void handle_cancel_request(std::uint32_t pid, std::uint32_t key);

    app::Worker& worker_;
    net::Stream client_;
    std::uint64_t id_;
    std::uint32_t cancel_key_ = 0;
    std::shared_ptr<const app::Snapshot> snap_;
    util::SharedString user_, database_;  // shared by the thread's clients with the same names
    std::string peer_;
    // What only the login needs, freed when it ends.
    struct Login {
        std::string buf;  // bytes read and not yet decoded
        std::vector<std::pair<std::string, std::string>> startup_params;
        std::vector<std::string> unrecognized_options;
        std::uint32_t requested_minor = 0;
        bool console_admin = false;    // opens the console with admin rights (as admin_users)
        bool console_any_user = false;  // auth_type any: opens the console (SHOW) whatever its name
        std::function<void()> cancel_check;  // set while a PAM/LDAP check is awaited: kill() ends the wait
    };
    std::unique_ptr<Login> login_;
    bool read_only_intent_ = false;
    // Rarely set, so kept out of line: every idle client pays for what is inline.
    std::unique_ptr<std::pair<std::vector<std::uint8_t>, std::vector<std::uint8_t>>> scram_keys_;
    ParamSet client_params_;
    std::shared_ptr<pool::Pool> pool_;
    // Databases that name a cluster: where this session's transactions go.
    struct Routing {
        std::shared_ptr<routing::Cluster> cluster;
        std::shared_ptr<pool::Pool> primary_pool;  // the pool following the primary
        // Replicas' pools this session used (a replica's pool keeps its address).
        std::vector<std::pair<config::HostPort, std::shared_ptr<pool::Pool>>> replica_pools;
        bool read_route = false;  // routed as replica (route = replica, or auto + read-only)
        bool prerouted = false;   // pool_ already chosen (at login) for the next link
    };
    std::unique_ptr<Routing> route_;  // null for plain databases
    int pool_mode_ = 1;  // config::PoolMode as int: 0 session, 1 transaction, 2 statement
    bool registered_cancel_ = false;
    std::unique_ptr<std::map<std::string, auth::Credential>> auth_query_creds_;  // found by auth_query or given at a PAM login, for the server login

    // The client read (plain sockets) is pending / finished while nobody waited;
    // the serving coroutine runs. Where it reads and its result are in Active.
    bool read_pending_ = false, read_done_ = false, serve_running_ = false;
    // A parked client's read is being cancelled so that its Active state can go.
    bool shrinking_ = false;
    bool track_ = false;  // named prepared statements are renamed (scanners capture/watch)
    std::unique_ptr<ServerConnection> server_;
    int pending_ = 0;          // sync points sent and not yet answered by ReadyForQuery
    char txn_status_ = 'I';    // from the last ReadyForQuery
    bool writing_ = false;     // the session coroutine is writing to the server
    bool pump_writing_ = false;  // the pump is writing a server answer to the client
    bool pump_running_ = false;
    bool stop_pump_ = false;
    bool draining_ = false;  // the client sent Terminate behind messages not yet answered
    bool copy_in_ = false;   // the server waits for COPY data from the client
    bool client_broken_ = false;  // a write to the client failed or was cut
    bool closing_ = false;
    std::unique_ptr<std::pair<std::string, std::string>> kill_reason_;
    bool error_sent_ = false;  // the login's fail() already sent kill_reason_
    struct Statement {
        std::string global;     // the pooler-wide name on servers
        std::string parse;      // the client's Parse, renamed to `global`
    };
    std::unique_ptr<std::unordered_map<std::string, Statement>> statements_;  // client name -> statement (made on first use)
    struct Expect {
        int seq;     // the sync point this response belongs to
        char type;   // '1' ParseComplete or '3' CloseComplete
        bool hide;   // injected by the pooler: not for the client
    };
    // A FIFO that allocates nothing until used (std::deque allocates on construction).
    struct ExpectQueue {
        std::vector<Expect> v;
        std::size_t head = 0;
        bool empty() const { return head == v.size(); }
        Expect& front() { return v[head]; }
        void push_back(Expect e) { v.push_back(e); }
        void pop_front() {
            if (++head == v.size()) clear();
        }
        void clear() {
            v.clear();
            head = 0;
        }
    };
    // What a client needs only while it sends, waits or is served: its read buffer,
    // the protocol scanners, the statement bookkeeping of the linked server and the
    // transaction's timestamps. Made when the client speaks; a client parked (idle,
    // no server) gives it back at the janitor's next round (shrink(), once a second,
    // when its last message is 200 ms old), so idle clients stay small.
    struct Active {
        char small[256];             // small reads land here
        app::BufferPool::Lease big;  // a worker buffer while data flows
        protocol::FrontendScanner fscan;
        protocol::BackendScanner bscan;
        ExpectQueue expect;
        int syncs_sent = 0, rfq_seen = 0;  // per link
        std::string held;                   // server bytes held back (partial header)
        std::unique_ptr<Timer> pump_done;  // made when finish() waits for the pump
        Clock::time_point query_started, last_ready, xact_started, wait_started;
        // The client read (plain sockets): where it reads, its result when it
        // finished while nobody waited, and the serving coroutine waiting for it.
        char* read_buf = nullptr;
        std::size_t read_cap = 0, read_n = 0;
        net::error_code read_ec;
        util::ReadHandler read_taker;
        // From a slab of their own: when many clients go idle together, the memory
        // goes back to the OS rather than staying as holes among the sessions.
        static void* operator new(std::size_t n);
        static void operator delete(void* p, std::size_t n) noexcept;
    };
    std::unique_ptr<Active> act_;
    Active& active();
    // A parked plain client waits for readability without a buffer (no Active).
    void start_client_wait();
    void on_client_ready(net::error_code ec);
    void deliver_client_read(net::error_code ec, std::size_t n);
    // From the janitor: a parked client whose last message is 200 ms old gives its
    // Active back (at most once a second per client, so busy clients barely notice).
    void shrink(Clock::time_point now);
    // server_fast_close: in session mode, between transactions, a server that RECONNECT
    // or a RELOAD retired ends the session (closed, and the client told) rather than
    // serving it to its end. True when it did.
    bool fast_close();
    Clock::time_point last_activity_;
    std::chrono::system_clock::time_point connect_time_ = std::chrono::system_clock::now(), request_time_;
    bool waiting_ = false;
    // A client queued for a server that hung up (seen by the janitor, once a second)
    // leaves the queue, and what it sent never reaches a server.
    void left_while_waiting();
    bool client_counted_ = false;      // admitted by Runtime::admit_client (counted out at the end)
    bool pool_counted_ = false;        // counted by its database's own pool (Pool::add_client)
    bool wait_notified_ = false;       // query_wait_notify sent for the current wait
    bool notice_writing_ = false;      // that NOTICE is being written
    // query_wait_notify: tells a client queued that long that it waits for a server.
    Task<void> notify_waiting();
    bool timeout_cancel_sent_ = false;
    bool logged_in_ = false;
    bool login_held_ = false;  // a login that arrived during SUSPEND waits for RESUME
};

// After Runtime::suspended was cleared (RESUME, SIGUSR2): wakes the sessions and
// logins waiting out the SUSPEND on every worker at once.
void wake_suspended(app::Runtime& rt);

}  // namespace pgrouter::session
