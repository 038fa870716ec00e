// One connection to a PostgreSQL server: login, the pooler's own queries, and
// the state the pooler tracks (parameters, backend key, age).
#pragma once

#include "pgrouter/util/task.hpp"
#include "pgrouter/auth/auth.hpp"
#include "pgrouter/config/config.hpp"
#include "pgrouter/net/stream.hpp"
#include "pgrouter/session/params.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_set>
#include <vector>

namespace pgrouter::app {
class Worker;
class Runtime;
}
namespace pgrouter::pool {
struct Target;
}

namespace pgrouter::session {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

// Outcome of a login or of a pooler query.
struct ServerResult {
    bool ok = false;
    std::string sqlstate;  // on failure: the server's, or 08006 for transport problems
    std::string message;
};

// Counts cancel requests in flight for this server, so the server is not handed
// to another client until they have been delivered.
struct CancelGate {
    int in_flight = 0;
};

class ServerConnection {
public:
    ServerConnection(std::uint64_t id, net::Stream stream);
    ~ServerConnection();

    // Connects and logs in (trust, cleartext, md5, SCRAM; TLS per server_tls_sslmode).
    // `scram_keys` are used for SCRAM when the credential holds only a SCRAM secret.
    static Task<std::pair<std::unique_ptr<ServerConnection>, ServerResult>> connect(
        app::Worker& w, const pool::Target& target,
        const std::optional<std::pair<auth::Bytes, auth::Bytes>>& scram_keys, Clock::time_point deadline);
    // The same from any thread's executor (the health checker).
    static Task<std::pair<std::unique_ptr<ServerConnection>, ServerResult>> connect(
        app::Runtime& rt, const pool::Target& target,
        const std::optional<std::pair<auth::Bytes, auth::Bytes>>& scram_keys, Clock::time_point deadline);

    // Runs `sql` with the simple protocol and reads up to ReadyForQuery, tracking
    // ParameterStatus. Responses are not forwarded anywhere.
    Task<ServerResult> query(const std::string& sql, Clock::time_point deadline);

    // Like query(), keeping the rows (text format) of a small result (auth_query).
    struct Rows : ServerResult {
        std::vector<std::vector<std::optional<std::string>>> rows;
    };
    Task<Rows> query_rows(const std::string& sql, Clock::time_point deadline);

    // Sends a CancelRequest for this server's backend on a new connection.
    static Task<void> send_cancel(asio::any_io_executor ex, std::string host, int port,
                                             std::uint32_t pid, std::uint32_t key);

    net::Stream& stream() { return stream_; }
    std::uint64_t id() const { return id_; }
    std::uint32_t backend_pid() const { return backend_pid_; }
    std::uint32_t backend_key() const { return backend_key_; }
    ParamSet& params() { return params_; }
    const std::vector<std::pair<std::string, std::string>>& login_params() const { return login_params_; }
    void update_param(const std::string& name, const std::string& value);
    // The server said in_hot_standby=on at login (PostgreSQL 14+): it is in recovery
    // and must never be used for writes. A node leaves recovery only by promotion,
    // and enters it only by restarting, so the login-time value holds for the
    // connection's whole life unless promoted.
    bool hot_standby() const { return hot_standby_; }
    // Why this fresh connection does not satisfy target_session_attrs `want` (from what
    // the server reported at login and connect_query), or nullopt when it does.
    std::optional<std::string> session_attrs_mismatch(config::TargetSessionAttrs want) const;

    Clock::time_point created() const { return created_; }
    Clock::time_point last_used() const { return last_used_; }
    void touch() { last_used_ = Clock::now(); }
    std::uint64_t generation() const { return generation_; }
    const std::string& host() const { return host_; }
    int port() const { return port_; }
    char txn_status() const { return txn_status_; }
    void set_txn_status(char s) { txn_status_ = s; }
    std::shared_ptr<CancelGate> cancel_gate() const { return cancel_gate_; }
    bool broken() const { return broken_; }
    void mark_broken() { broken_ = true; }
    void close();
    // The buffer server -> client bytes are read into (servers are few: each has its own).
    // Not zeroed: only the pages reads reach become resident (one for small results).
    static constexpr std::size_t kIoBuffer = 32 * 1024;
    char* io_buffer() {
        if (!io_buf_) io_buf_ = std::make_unique_for_overwrite<char[]>(kIoBuffer);
        return io_buf_.get();
    }
    // While the server sits idle in a pool, a read stays pending on it (plain TCP and
    // unix sockets; arming it costs only the read's own first attempt): a server that
    // closes or speaks unasked is seen without a system call, and the next client's
    // first response is read by that same pending read (read_some).
    void watch_idle();
    // The server closed or spoke while idle: from the watch when one is armed,
    // otherwise by MSG_PEEK when `peek` is set (TLS servers).
    bool spoke_while_idle(bool peek);
    // Server -> client bytes (the session's pump): takes over the idle watch's pending
    // read when there is one, so `buf` must be io_buffer().
    Task<std::tuple<net::error_code, std::size_t>> read_some(asio::mutable_buffer buf);
    // Takes the socket back from the idle watch (before a pooler query or a move to
    // another worker); false, and broken, when the server spoke meanwhile.
    bool unwatch();
    // Pooler-named prepared statements that exist on this server.
    std::unordered_set<std::string>& prepared() { return prepared_; }

private:
    Task<ServerResult> login(const pool::Target& target,
                                        const std::optional<std::pair<auth::Bytes, auth::Bytes>>& scram_keys,
                                        Clock::time_point deadline);
    // Reads one whole message into `type`/`body_`; false on error or deadline.
    Task<bool> read_message(char& type, Clock::time_point deadline);

    net::Stream stream_;
    std::uint64_t id_;
    std::uint32_t backend_pid_ = 0, backend_key_ = 0;
    ParamSet params_;
    std::vector<std::pair<std::string, std::string>> login_params_;
    Clock::time_point created_, last_used_;
    std::uint64_t generation_ = 0;
    std::string host_;
    int port_ = 0;
    char txn_status_ = 'I';
    bool broken_ = false;
    bool hot_standby_ = false;
    std::shared_ptr<CancelGate> cancel_gate_ = std::make_shared<CancelGate>();
    std::unordered_set<std::string> prepared_;
    std::unique_ptr<char[]> io_buf_;
    struct IdleWatch;
    std::shared_ptr<IdleWatch> watch_;
    std::string rbuf_;  // login and pooler queries only
    std::string body_;
};

}  // namespace pgrouter::session
