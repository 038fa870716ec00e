// What the admin console sees of the live connections. Sessions and idle
// servers belong to their worker's thread, so each worker describes its own and
// the console awaits all the descriptions without blocking any worker.
#pragma once

#include "pgrouter/util/task.hpp"
#include "pgrouter/session/client_session.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace pgrouter::app {
class Runtime;
class Worker;
}  // namespace pgrouter::app

namespace pgrouter::admin {

namespace asio = boost::asio;

struct Endpoint {
    std::string addr;  // IP, or "unix"
    int port = 0;
};

struct ClientRow {
    session::ClientSession::Info info;
    bool admin = false;  // an admin console session
    Endpoint remote, local;
    int fd = -1;
    int server_fd = -1;
};

struct ServerRow {
    std::uint64_t id = 0;
    std::string database, pool_user;  // the pool it belongs to
    std::string login_user;           // the user it logged in as
    const char* state = "idle";       // active | idle | used
    Endpoint remote, local;
    int fd = -1;
    int client_fd = -1;
    std::chrono::system_clock::time_point connect_time, request_time;
    bool close_needed = false;  // RECONNECT, RELOAD: closed when released
    std::uint64_t client_id = 0;  // linked client, 0 = none
    std::uint32_t remote_pid = 0, cancel_key = 0;
    std::string tls;  // "TLSv1.3/cipher" or empty
    std::string application_name;
    std::optional<std::string> client_encoding, std_strings, datestyle, timezone;
};

struct Census {
    std::vector<ClientRow> clients;
    std::vector<ServerRow> servers;
    bool complete = true;  // false when a worker did not answer in time
};

// Runs fn on every worker's thread and resumes (on self) when all have run
// or `limit` passed; returns false on timeout. fn is copied before the first
// suspension. Callers pass named objects: GCC 12 mishandles temporaries with
// destructors inside a co_await expression.
using WorkerFn = std::function<void(app::Worker&)>;
Task<bool> on_every_worker(app::Worker& self, const WorkerFn& fn,
                                      std::chrono::milliseconds limit = std::chrono::seconds(5));

Task<Census> take_census(app::Worker& self);

// "0x2a": PgBouncer's ptr/link columns, from the shared connection id.
std::string ptr_text(std::uint64_t id);

}  // namespace pgrouter::admin
