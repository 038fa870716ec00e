// KILL, KILL_CLIENT, RECONNECT, WAIT_CLOSE.
#include "pgrouter/admin/census.hpp"
#include "pgrouter/util/task.hpp"
#include "pgrouter/admin/handlers.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/session/errors.hpp"

#include <charconv>

namespace pgrouter::admin {

namespace {
namespace sqlstate = session::sqlstate;

std::vector<std::shared_ptr<pool::Pool>> pools_of(app::Runtime& rt, const std::string& db) {
    std::vector<std::shared_ptr<pool::Pool>> out;
    for (auto& p : rt.pools->all())
        if (db.empty() || p->database() == db) out.push_back(p);
    return out;
}

// Gives the pool's target a generation no server has: every server of the old
// one fails Pool::usable and is closed instead of being reused.
void retire_servers(app::Runtime& rt, pool::Pool& p) {
    auto old = p.target();
    if (!old) return;
    auto fresh = std::make_shared<pool::Target>(*old);
    fresh->generation = (std::uint64_t{1} << 63) | rt.next_id.fetch_add(1);
    p.configure(p.settings(), std::move(fresh));
}

using Pick = std::function<bool(const session::ClientSession&)>;

// Kills the client sessions `pick` selects, on every worker; returns how many.
Task<int> kill_sessions(Context& ctx, const Pick& pick, const std::string& message) {
    auto killed = std::make_shared<std::atomic<int>>(0);
    WorkerFn fn = [pick, killed, message](app::Worker& w) {
        for (auto& weak : w.sessions()) {
            auto s = weak.lock();
            if (!s || !pick(*s)) continue;
            s->kill(sqlstate::admin_shutdown, message);
            ++*killed;
        }
    };
    co_await on_every_worker(ctx.worker, fn);
    co_return killed->load();
}
}  // namespace

Task<void> close_servers(Context& ctx, const std::string& db, bool retire) {
    auto pools = pools_of(ctx.rt, db);
    if (retire)
        for (auto& p : pools) retire_servers(ctx.rt, *p);
    WorkerFn fn = [pools](app::Worker& w) {
        for (auto& p : pools) p->close_idle(w);
    };
    co_await on_every_worker(ctx.worker, fn);
}

// KILL [db]: drops every client and server of db (of every database when no
// name is given); as in PgBouncer, the database stays paused until RESUME.
Task<void> kill(Context& ctx, const Command& cmd) {
    if (cmd.size() > 2) co_return invalid_command(ctx, cmd);
    auto db_arg = optional_database_arg(ctx, cmd);
    if (!db_arg) co_return;
    const std::string db = *db_arg;
    ctx.rt.set_paused(db.empty() ? "*" : db, true);
    Pick pick = [db](const session::ClientSession& s) {
        return !is_admin_database(s.database()) && !s.database().empty() && (db.empty() || s.database() == db);
    };
    const std::string why = "database killed by admin command KILL";
    co_await kill_sessions(ctx, pick, why);
    co_await close_servers(ctx, db, true);
    ctx.complete("KILL");
}

// KILL_CLIENT id: the id column of SHOW CLIENTS.
Task<void> kill_client(Context& ctx, const Command& cmd) {
    std::uint64_t id = 0;
    auto arg = cmd.name(1);
    if (cmd.size() != 2 || !arg) co_return invalid_command(ctx, cmd);
    auto [ptr, ec] = std::from_chars(arg->data(), arg->data() + arg->size(), id);
    if (ec != std::errc{} || ptr != arg->data() + arg->size()) {
        ctx.error(sqlstate::syntax_error, "KILL_CLIENT needs a client id (the id column of SHOW CLIENTS)");
        co_return;
    }
    Pick pick = [id](const session::ClientSession& s) { return s.id() == id; };
    const std::string why = "client killed by admin command KILL_CLIENT";
    int n = co_await kill_sessions(ctx, pick, why);
    if (n == 0) {
        ctx.error(sqlstate::undefined_object, "no such client: " + *arg);
        co_return;
    }
    ctx.complete("KILL_CLIENT");
    if (id == ctx.who.id) ctx.close = true;  // the console killed itself
}

// RECONNECT [db]: idle servers close now, busy ones when their client releases them.
Task<void> reconnect(Context& ctx, const Command& cmd) {
    if (cmd.size() > 2) co_return invalid_command(ctx, cmd);
    auto db_arg = optional_database_arg(ctx, cmd);
    if (!db_arg) co_return;
    const std::string db = *db_arg;
    co_await close_servers(ctx, db, true);
    ctx.complete("RECONNECT");
}

// WAIT_CLOSE [db]: returns once no server of db (of any database) is marked
// close_needed by RECONNECT or RELOAD.
Task<void> wait_close(Context& ctx, const Command& cmd) {
    if (cmd.size() > 2) co_return invalid_command(ctx, cmd);
    auto db_arg = optional_database_arg(ctx, cmd);
    if (!db_arg) co_return;
    const std::string db = *db_arg;
    while (!ctx.rt.shutting_down.load()) {
        auto census = co_await take_census(ctx.worker);
        bool pending = false;
        for (auto& s : census.servers)
            if (s.close_needed && (db.empty() || s.database == db)) pending = true;
        if (!pending) break;
        co_await sleep_for(ctx, kPollInterval);
    }
    ctx.complete("WAIT_CLOSE");
}

}  // namespace pgrouter::admin
