// The admin console (database "pgbouncer", alias "pgrouter"): PgBouncer's SHOW,
// PAUSE, RESUME, RELOAD... over the simple query protocol.
#pragma once

#include "pgrouter/util/task.hpp"
#include "pgrouter/net/stream.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <string_view>

namespace pgrouter::app {
class Worker;
class Runtime;
}

namespace pgrouter::admin {

bool is_admin_database(std::string_view db);

struct ConsoleClient {
    std::uint64_t id = 0;        // the session's id (BackendKeyData pid)
    std::uint32_t cancel_key = 0;
    std::string user;
    std::string database;        // "pgbouncer" or "pgrouter"
    bool full_access = false;    // admin_users (false: stats_users, SHOW only)

    // A constructor, not aggregate init: GCC 12 copies a braced aggregate
    // temporary bitwise when it is a coroutine argument (SSO strings then dangle).
    ConsoleClient() = default;
    ConsoleClient(std::uint64_t id_, std::uint32_t key, std::string user_, std::string database_, bool full)
        : id(id_), cancel_key(key), user(std::move(user_)), database(std::move(database_)), full_access(full) {}
};

// Runs the console on an authenticated client: sends AuthenticationOk, the
// ParameterStatus set, BackendKeyData and ReadyForQuery, then serves commands
// until the client leaves. `pending` holds bytes already read from the client.
Task<void> run_console(app::Worker& w, net::Stream& client, ConsoleClient who,
                                         std::string pending);

// Starts what the console keeps between sessions (the stats_period sampler, on
// worker 0). Idempotent; the first console login calls it too, but App should
// call it at startup so SHOW STATS averages cover every period since then.
void start(app::Runtime& rt);

}  // namespace pgrouter::admin
