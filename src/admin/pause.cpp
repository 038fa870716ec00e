// PAUSE, RESUME, SUSPEND, DISABLE, ENABLE.
#include "pgrouter/admin/census.hpp"
#include "pgrouter/util/task.hpp"
#include "pgrouter/admin/handlers.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/session/errors.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>

namespace pgrouter::admin {

namespace {
namespace sqlstate = session::sqlstate;

// Server connections still linked to a client (db, or every database when empty).
Task<int> linked_servers(Context& ctx, const std::string& db) {
    auto census = co_await take_census(ctx.worker);
    int n = 0;
    for (auto& s : census.servers)
        if (std::strcmp(s.state, "active") == 0 && (db.empty() || s.database == db)) ++n;
    co_return n;
}

// Sessions not yet settled for SUSPEND (every worker); with `force`, they are dropped.
Task<int> suspend_round(Context& ctx, bool force) {
    auto busy = std::make_shared<std::atomic<int>>(0);
    WorkerFn fn = [busy, force](app::Worker& w) {
        for (auto& weak : w.sessions()) {
            auto s = weak.lock();
            if (!s || !s->suspend_busy()) continue;
            ++*busy;
            if (force) s->kill(sqlstate::protocol_violation, "suspend_timeout");
        }
    };
    co_await on_every_worker(ctx.worker, fn);
    co_return busy->load();
}
}  // namespace

// PAUSE [db]: new transactions wait (the session checks is_paused before it
// takes a server); returns once running ones have released their servers,
// then closes the idle servers, so the database can restart under us.
Task<void> pause(Context& ctx, const Command& cmd) {
    if (cmd.size() > 2) co_return invalid_command(ctx, cmd);
    auto db_arg = optional_database_arg(ctx, cmd);
    if (!db_arg) co_return;
    const std::string db = *db_arg;
    std::string key = db.empty() ? "*" : db;
    if (ctx.rt.suspended.load()) {
        ctx.error(sqlstate::object_not_in_prerequisite_state, "already suspended/paused");
        co_return;
    }
    if (ctx.rt.is_paused(key)) {
        ctx.error(sqlstate::object_not_in_prerequisite_state, db.empty() ? "already paused" : "database " + db + " is already paused");
        co_return;
    }
    ctx.rt.set_paused(key, true);
    while (ctx.rt.is_paused(key) && !ctx.rt.shutting_down.load()) {
        if (co_await linked_servers(ctx, db) == 0) break;
        co_await sleep_for(ctx, kPollInterval);
    }
    if (!ctx.rt.is_paused(key)) {
        ctx.error(sqlstate::object_not_in_prerequisite_state, "PAUSE cancelled by RESUME");
        co_return;
    }
    co_await close_servers(ctx, db, false);
    ctx.complete("PAUSE");
}

// RESUME [db]: after PAUSE or KILL. RESUME without a name resumes everything.
Task<void> resume(Context& ctx, const Command& cmd) {
    if (cmd.size() > 2) co_return invalid_command(ctx, cmd);
    if (cmd.size() == 1) {
        ctx.rt.set_paused("*", false);
        ctx.rt.suspended.store(false);
        session::wake_suspended(ctx.rt);
        ctx.complete("RESUME");
        co_return;
    }
    auto db = database_arg(ctx, cmd, 1);
    if (!db) co_return;
    if (!ctx.rt.is_paused(*db)) {
        ctx.error(sqlstate::object_not_in_prerequisite_state, "database " + *db + " is not paused");
        co_return;
    }
    ctx.rt.set_paused(*db, false);
    if (ctx.rt.is_paused(*db)) ctx.notice("all databases are still paused; RESUME without a name resumes them");
    ctx.complete("RESUME");
}

// SUSPEND: every session finishes the write it is in, then forwards nothing more
// between its client and server until RESUME (what a read under way brings in is
// held; the admin console keeps working). As PgBouncer's, the command answers once
// every session has flushed: nobody is in the middle of a write or logging in. A
// client queued for a server is not waited for (PgBouncer waits, then drops it): it
// stays queued, is held if given a server, and goes on after RESUME. After
// suspend_timeout those still busy are dropped with "suspend_timeout". pgrouter has no
// socket hand-over to a new process (PgBouncer's online restart).
Task<void> suspend(Context& ctx, const Command& cmd) {
    if (cmd.size() != 1) co_return invalid_command(ctx, cmd);
    if (ctx.rt.suspended.load() || ctx.rt.is_paused("*")) {
        ctx.error(sqlstate::object_not_in_prerequisite_state, "already suspended/paused");
        co_return;
    }
    ctx.rt.suspended.store(true);
    const double limit = ctx.rt.snapshot()->config->settings.suspend_timeout;
    const auto started = std::chrono::steady_clock::now();
    for (;;) {
        if (!ctx.rt.suspended.load()) {
            ctx.error(sqlstate::object_not_in_prerequisite_state, "SUSPEND cancelled by RESUME");
            co_return;
        }
        const bool force = limit > 0 && std::chrono::steady_clock::now() - started >= std::chrono::duration<double>(limit);
        int busy = co_await suspend_round(ctx, force);
        if (busy == 0) break;
        if (force) {
            spdlog::warn("SUSPEND: suspend_timeout ({}s) passed, {} connection(s) dropped", limit, busy);
            break;
        }
        co_await sleep_for(ctx, kPollInterval);
    }
    ctx.complete("SUSPEND");
}

Task<void> disable(Context& ctx, const Command& cmd) {
    if (cmd.size() > 2) co_return invalid_command(ctx, cmd);
    auto db = database_arg(ctx, cmd, 1);
    if (!db) co_return;
    ctx.rt.set_disabled(*db, true);
    ctx.complete("DISABLE");
}

Task<void> enable(Context& ctx, const Command& cmd) {
    if (cmd.size() > 2) co_return invalid_command(ctx, cmd);
    auto db = database_arg(ctx, cmd, 1);
    if (!db) co_return;
    ctx.rt.set_disabled(*db, false);
    ctx.complete("ENABLE");
}

}  // namespace pgrouter::admin
