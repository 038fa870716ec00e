// SHOW POOLS: one row per (database, user) pool, counted from the live connections.
#include "pgrouter/admin/census.hpp"
#include "pgrouter/util/task.hpp"
#include "pgrouter/admin/handlers.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

namespace pgrouter::admin {

namespace {
// PgBouncer 1.18's columns, in order; nothing newer is known to pgrouter.
const std::vector<ResultSet::Column> kPoolColumns = {
    {"database"}, {"user"},
    {"cl_active", ColType::int4}, {"cl_waiting", ColType::int4},
    {"cl_active_cancel_req", ColType::int4}, {"cl_waiting_cancel_req", ColType::int4},
    {"sv_active", ColType::int4}, {"sv_active_cancel", ColType::int4}, {"sv_being_canceled", ColType::int4},
    {"sv_idle", ColType::int4}, {"sv_used", ColType::int4}, {"sv_tested", ColType::int4},
    {"sv_login", ColType::int4}, {"maxwait", ColType::int4}, {"maxwait_us", ColType::int4},
    {"pool_mode"},
};

struct PoolCounts {
    int cl_active = 0, cl_waiting = 0, sv_active = 0, sv_idle = 0, sv_used = 0;
    double max_wait = 0;
};

const char* pool_mode_of(const config::Config& cfg, const std::string& database, const std::string& user) {
    if (auto it = cfg.databases.find(database); it != cfg.databases.end())
        return config::to_string(config::effective_pool_mode(cfg, it->second, user));
    if (cfg.fallback_database) return config::to_string(config::effective_pool_mode(cfg, *cfg.fallback_database, user));
    return config::to_string(cfg.settings.pool_mode);
}

void add_row(ResultSet& rs, const std::string& db, const std::string& user, const PoolCounts& c, int sv_login,
             const char* mode) {
    double whole = std::floor(c.max_wait);
    rs.add({cell(db), cell(user), cell(c.cl_active), cell(c.cl_waiting), cell(0), cell(0), cell(c.sv_active),
            cell(0), cell(0), cell(c.sv_idle), cell(c.sv_used), cell(0), cell(sv_login),
            cell(static_cast<int>(whole)), cell(static_cast<int>((c.max_wait - whole) * 1e6)), cell(mode)});
}
}  // namespace

Task<void> show_pools(Context& ctx, const Command& cmd) {
    auto census = co_await take_census(ctx.worker);
    auto snap = ctx.rt.snapshot();
    ResultSet rs(kPoolColumns);
    PoolCounts admin;
    for (auto& c : census.clients)
        if (c.admin) ++admin.cl_active;
    // The console itself, as PgBouncer lists its admin pool.
    if (admin.cl_active > 0) add_row(rs, "pgbouncer", "pgbouncer", admin, 0, "statement");
    // One row per (database, user), as PgBouncer: a cluster database's replica pools are
    // summed into it (SHOW CLUSTERS shows servers per backend).
    std::map<std::pair<std::string, std::string>, std::pair<int, double>> slots;  // total, max wait
    for (auto& p : ctx.rt.pools->all()) {
        auto counts = p->counts();
        auto& [total, wait] = slots[{p->database(), p->user()}];
        total += counts.total;
        wait = std::max(wait, counts.max_wait_seconds);
    }
    for (auto& [key, slot] : slots) {
        auto& [database, user] = key;
        PoolCounts pc;
        for (auto& c : census.clients) {
            if (c.admin || c.info.database != database || c.info.pool_user != user) continue;
            if (std::strcmp(c.info.state, "waiting") == 0) {
                ++pc.cl_waiting;
                pc.max_wait = std::max(pc.max_wait, c.info.wait_seconds);
            } else if (std::strcmp(c.info.state, "login") != 0) {
                ++pc.cl_active;
            }
        }
        for (auto& s : census.servers) {
            if (s.database != database || s.pool_user != user) continue;
            if (std::strcmp(s.state, "active") == 0)
                ++pc.sv_active;
            else if (std::strcmp(s.state, "used") == 0)
                ++pc.sv_used;
            else
                ++pc.sv_idle;
        }
        pc.max_wait = std::max(pc.max_wait, slot.second);
        // Slots taken but neither linked nor idle: servers logging in (or being checked).
        int login = std::max(0, slot.first - pc.sv_active - pc.sv_idle - pc.sv_used);
        add_row(rs, database, user, pc, login, pool_mode_of(*snap->config, database, user));
    }
    rs.write(ctx.out);
}

}  // namespace pgrouter::admin
