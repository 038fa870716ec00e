// SHOW HELP, VERSION, STATE, LISTS, MEM, DNS_HOSTS, DNS_ZONES.
#include "pgrouter/admin/census.hpp"
#include "pgrouter/util/task.hpp"
#include "pgrouter/admin/handlers.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/session/server_connection.hpp"
#include "pgrouter/version.hpp"

#include <algorithm>
#include <cstring>
#include <set>

namespace pgrouter::admin {

Task<void> show_help(Context& ctx, const Command& cmd) {
    ctx.notice("Console usage", help_text());
    ctx.complete("SHOW");
    co_return;
}

Task<void> show_version(Context& ctx, const Command& cmd) {
    ResultSet rs({{"version"}});
    rs.add({cell(PGROUTER_VERSION_STRING)});
    rs.write(ctx.out);
    co_return;
}

// Whole-process state.
Task<void> show_state(Context& ctx, const Command& cmd) {
    bool paused = ctx.rt.is_paused("*");
    ResultSet rs({{"key"}, {"value"}});
    rs.add({cell("active"), cell(paused ? "no" : "yes")});
    rs.add({cell("paused"), cell(paused ? "yes" : "no")});
    rs.add({cell("suspended"), cell(ctx.rt.suspended.load() ? "yes" : "no")});
    rs.write(ctx.out);
    co_return;
}

// PgBouncer's row names. pgrouter keeps no free lists of client or server
// objects and no DNS cache of its own, so those rows are 0.
Task<void> show_lists(Context& ctx, const Command& cmd) {
    auto census = co_await take_census(ctx.worker);
    auto snap = ctx.rt.snapshot();
    auto pools = ctx.rt.pools->all();
    std::set<std::string> users;
    for (auto& [name, cred] : snap->users) users.insert(name);
    for (auto& [name, u] : snap->config->users) users.insert(name);
    int servers = 0;
    for (auto& p : pools) {
        users.insert(p->user());
        servers += p->counts().total;
    }
    int login = 0, admin = 0;
    for (auto& c : census.clients) {
        login += std::strcmp(c.info.state, "login") == 0;
        admin += c.admin;
    }
    std::pair<const char*, int> rows[] = {
        {"databases", static_cast<int>(known_databases(ctx.rt).size()) + 1},  // + the admin database
        {"users", static_cast<int>(users.size())},
        {"pools", static_cast<int>(pools.size()) + (admin > 0)},
        {"free_clients", 0},
        {"used_clients", static_cast<int>(census.clients.size())},
        {"login_clients", login},
        {"free_servers", 0},
        {"used_servers", servers},
        {"dns_names", 0},
        {"dns_zones", 0},
        {"dns_queries", 0},
        {"dns_pending", 0},
    };
    ResultSet rs({{"list"}, {"items", ColType::int4}});
    for (auto& [name, n] : rows) rs.add({cell(name), cell(n)});
    rs.write(ctx.out);
}

// The objects pgrouter keeps per connection and per pool (allocated one by one,
// so nothing is "free").
Task<void> show_mem(Context& ctx, const Command& cmd) {
    auto census = co_await take_census(ctx.worker);
    auto pools = ctx.rt.pools->all();
    int servers = 0;
    for (auto& p : pools) servers += p->counts().total;
    ResultSet rs({{"name"}, {"size", ColType::int4}, {"used", ColType::int4}, {"free", ColType::int4},
                  {"memtotal", ColType::int4}});
    auto row = [&](const char* name, std::size_t size, int used) {
        rs.add({cell(name), cell(static_cast<int>(size)), cell(used), cell(0), cell(static_cast<int>(size) * used)});
    };
    row("client_cache", sizeof(session::ClientSession), static_cast<int>(census.clients.size()));
    // Serving state (read buffer, scanners) of clients that are active or were in the
    // janitor's last round (once a second); clients idle longer give theirs back.
    int active = static_cast<int>(std::count_if(census.clients.begin(), census.clients.end(),
                                                 [](auto& c) { return c.info.active_state; }));
    row("client_active_cache", session::ClientSession::active_state_size(), active);
    row("server_cache", sizeof(session::ServerConnection), servers);
    row("pool_cache", sizeof(pool::Pool), static_cast<int>(pools.size()));
    rs.write(ctx.out);
}

// pgrouter resolves through the system resolver and caches nothing: empty.
Task<void> show_dns_hosts(Context& ctx, const Command& cmd) {
    ResultSet rs({{"hostname"}, {"ttl", ColType::int8}, {"addrs"}});
    rs.write(ctx.out);
    co_return;
}

Task<void> show_dns_zones(Context& ctx, const Command& cmd) {
    ResultSet rs({{"zonename"}, {"serial", ColType::int8}, {"count", ColType::int4}});
    rs.write(ctx.out);
    co_return;
}

}  // namespace pgrouter::admin
