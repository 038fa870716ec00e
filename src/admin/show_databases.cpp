// SHOW DATABASES and SHOW USERS: the configuration with live connection counts.
#include "pgrouter/admin/census.hpp"
#include "pgrouter/util/task.hpp"
#include "pgrouter/admin/handlers.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/routing/cluster.hpp"

#include <set>

namespace pgrouter::admin {

namespace {
struct Usage {
    int servers = 0;  // server connections (pool slots held)
    int clients = 0;
};

std::map<std::string, Usage> by_database(app::Runtime& rt, const Census& census) {
    std::map<std::string, Usage> m;
    for (auto& p : rt.pools->all()) m[p->database()].servers += p->counts().total;
    for (auto& c : census.clients)
        if (!c.admin && !c.info.database.empty()) ++m[c.info.database].clients;
    return m;
}

std::map<std::string, Usage> by_user(app::Runtime& rt, const Census& census) {
    std::map<std::string, Usage> m;
    for (auto& p : rt.pools->all()) m[p->user()].servers += p->counts().total;
    for (auto& c : census.clients)
        if (!c.info.user.empty()) ++m[c.info.user].clients;
    return m;
}
}  // namespace

Task<void> show_databases(Context& ctx, const Command& cmd) {
    auto census = co_await take_census(ctx.worker);
    auto snap = ctx.rt.snapshot();
    auto& cfg = *snap->config;
    auto& st = cfg.settings;
    auto usage = by_database(ctx.rt, census);
    // PgBouncer 1.18's columns, then the newer server_lifetime and client count.
    ResultSet rs({{"name"}, {"host"}, {"port", ColType::int4}, {"database"}, {"force_user"},
                  {"pool_size", ColType::int4}, {"min_pool_size", ColType::int4}, {"reserve_pool", ColType::int4},
                  {"pool_mode"}, {"max_connections", ColType::int4}, {"current_connections", ColType::int4},
                  {"paused", ColType::int4}, {"disabled", ColType::int4}, {"server_lifetime", ColType::int4},
                  {"current_client_connections", ColType::int4}});
    int admin_clients = 0;
    for (auto& c : census.clients) admin_clients += c.admin;
    rs.add({cell("pgbouncer"), Cell(), cell(st.listen_port), cell("pgbouncer"), Cell(), cell(0), cell(0), cell(0),
            cell("statement"), cell(0), cell(0), cell(0), cell(0), cell(0), cell(admin_clients)});
    auto row = [&](const config::DatabaseConfig& db) {
        std::string host = db.host;
        int port = db.port;
        if (!db.cluster.empty()) {
            // The primary the cluster routes writes to now (discovery or SET PRIMARY may
            // have moved it from the file's); NULL while none is known.
            host.clear();
            auto c = ctx.rt.cluster(db.cluster);
            auto primary = c ? c->view()->primary : std::nullopt;
            if (primary) {
                host = primary->host;
                port = primary->port;
            }
        }
        auto& u = usage[db.name];
        int max_conn = db.max_db_connections >= 0 ? db.max_db_connections : st.max_db_connections;
        rs.add({cell(db.name), cell_or_null(host), cell(port), cell(db.dbname.empty() ? db.name : db.dbname),
                cell_or_null(db.user), cell(config::effective_pool_size(cfg, db)),
                cell(db.min_pool_size >= 0 ? db.min_pool_size : st.min_pool_size),
                cell(db.reserve_pool_size >= 0 ? db.reserve_pool_size : st.reserve_pool_size),
                db.pool_mode ? cell(config::to_string(*db.pool_mode)) : Cell(), cell(max_conn), cell(u.servers),
                cell(ctx.rt.is_paused(db.name)), cell(ctx.rt.is_disabled(db.name)),
                cell(static_cast<int>(st.server_lifetime)), cell(u.clients)});
    };
    for (auto& [name, db] : cfg.databases) row(db);
    // Databases reached through the "*" fallback appear once they have a pool.
    if (cfg.fallback_database) {
        std::set<std::string> seen;
        for (auto& p : ctx.rt.pools->all()) {
            if (cfg.databases.count(p->database()) || !seen.insert(p->database()).second) continue;
            auto db = *cfg.fallback_database;
            db.name = p->database();
            db.dbname = p->database();
            row(db);
        }
    }
    rs.write(ctx.out);
}

Task<void> show_users(Context& ctx, const Command& cmd) {
    auto census = co_await take_census(ctx.worker);
    auto snap = ctx.rt.snapshot();
    auto& cfg = *snap->config;
    auto usage = by_user(ctx.rt, census);
    std::set<std::string> names;
    for (auto& [name, cred] : snap->users) names.insert(name);
    for (auto& [name, u] : cfg.users) names.insert(name);
    for (auto& [name, u] : usage) names.insert(name);
    // PgBouncer 1.18's columns, then the newer limit and counts.
    ResultSet rs({{"name"}, {"pool_mode"}, {"max_user_connections", ColType::int4},
                  {"current_connections", ColType::int4}, {"current_client_connections", ColType::int4}});
    for (auto& name : names) {
        Cell mode;
        int max_user = cfg.settings.max_user_connections;
        if (auto it = cfg.users.find(name); it != cfg.users.end()) {
            if (it->second.pool_mode) mode = cell(config::to_string(*it->second.pool_mode));
            if (it->second.max_user_connections >= 0) max_user = it->second.max_user_connections;
        }
        auto it = usage.find(name);
        Usage u = it == usage.end() ? Usage{} : it->second;
        rs.add({cell(name), mode, cell(max_user), cell(u.servers), cell(u.clients)});
    }
    rs.write(ctx.out);
}

}  // namespace pgrouter::admin
