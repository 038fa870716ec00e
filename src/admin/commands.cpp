// The admin command table: the first word (or "SHOW <word>") picks the handler.
#include "pgrouter/admin/handlers.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/protocol/protocol.hpp"
#include "pgrouter/session/errors.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <strings.h>

namespace pgrouter::admin {

namespace {
namespace sqlstate = session::sqlstate;

constexpr Entry kCommands[] = {
    {"PAUSE", pause, false},
    {"RESUME", resume, false},
    {"SUSPEND", suspend, false},
    {"DISABLE", disable, false},
    {"ENABLE", enable, false},
    {"RECONNECT", reconnect, false},
    {"KILL", kill, false},
    {"KILL_CLIENT", kill_client, false},
    {"WAIT_CLOSE", wait_close, false},
    {"RELOAD", reload, false},
    {"SHUTDOWN", shutdown, false},
    {"SET", set, false},
};

constexpr Entry kShow[] = {
    {"HELP", show_help, true},
    {"DATABASES", show_databases, true},
    {"POOLS", show_pools, true},
    {"CLIENTS", show_clients, true},
    {"SERVERS", show_servers, true},
    {"STATS", show_stats, true},
    {"STATS_TOTALS", show_stats_totals, true},
    {"STATS_AVERAGES", show_stats_averages, true},
    {"TOTALS", show_totals, true},
    {"USERS", show_users, true},
    {"CONFIG", show_config, true},
    {"LISTS", show_lists, true},
    {"VERSION", show_version, true},
    {"STATE", show_state, true},
    {"SOCKETS", show_sockets, true},
    {"ACTIVE_SOCKETS", show_active_sockets, true},
    {"FDS", show_fds, false},  // cancel keys of every connection: admin_users only
    {"MEM", show_mem, true},
    {"DNS_HOSTS", show_dns_hosts, true},
    {"DNS_ZONES", show_dns_zones, true},
    {"CLUSTERS", show_clusters, true},
};

constexpr std::string_view kHelp =
    "\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"
    "\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n"
    "\tSHOW DNS_HOSTS|DNS_ZONES\n"
    "\tSHOW CLUSTERS\n"
    "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n"
    "\tSET key = arg\n"
    "\tSET PRIMARY <cluster> '<host>:<port>'\n"
    "\tSET REPLICAS <cluster> '<host>:<port>[,...]'\n"
    "\tRELOAD\n"
    "\tPAUSE [<db>]\n"
    "\tRESUME [<db>]\n"
    "\tDISABLE <db>\n"
    "\tENABLE <db>\n"
    "\tRECONNECT [<db>]\n"
    "\tKILL [<db>]\n"
    "\tKILL_CLIENT <id>\n"
    "\tSUSPEND\n"
    "\tSHUTDOWN\n"
    "\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n"
    "\tWAIT_CLOSE [<db>]";

// Session parameters some drivers SHOW or SET on any connection: answered with
// fixed values (SHOW) or ignored with a notice (SET), as PgBouncer does.
struct FakeParam {
    std::string_view name, value;
};
constexpr FakeParam kFakeParams[] = {
    {"client_encoding", "UTF8"},
    {"default_transaction_isolation", "read committed"},
    {"standard_conforming_strings", "on"},
    {"datestyle", "ISO"},
    {"timezone", "GMT"},
};

const FakeParam* fake_param(std::string_view name) {
    for (auto& p : kFakeParams)
        if (p.name.size() == name.size() && strncasecmp(p.name.data(), name.data(), name.size()) == 0) return &p;
    return nullptr;
}

const Entry* find(std::span<const Entry> table, std::string_view word) {
    for (auto& e : table)
        if (e.name == word) return &e;
    return nullptr;
}
}  // namespace

std::span<const Entry> commands() { return kCommands; }
std::span<const Entry> show_commands() { return kShow; }
std::string_view help_text() { return kHelp; }

void invalid_command(Context& ctx, const Command& cmd) {
    ctx.error(sqlstate::syntax_error, "invalid command '" + cmd.text + "', use SHOW HELP;");
}

Task<void> execute(Context& ctx, std::string_view sql) {
    auto parsed = parse_command(sql);
    if (!parsed.command) {
        if (parsed.error.empty())
            protocol::write_empty_query_response(ctx.out);
        else
            ctx.error(sqlstate::syntax_error, parsed.error);
        co_return;
    }
    const Command& cmd = *parsed.command;
    std::string word = cmd.keyword(0);
    const Entry* entry = nullptr;
    if (word == "SHOW") {
        std::string what = cmd.keyword(1);
        entry = find(show_commands(), what);
        if (!entry && cmd.size() == 2) {
            if (auto* p = fake_param(cmd.tokens[1].text)) {
                ResultSet rs({{std::string(p->name)}});
                rs.add({cell(p->value)});
                rs.write(ctx.out);
                co_return;
            }
        }
        if (!entry || cmd.size() != 2) {
            invalid_command(ctx, cmd);
            co_return;
        }
    } else {
        entry = find(commands(), word);
        if (!entry) {
            invalid_command(ctx, cmd);
            co_return;
        }
        if (word == "SET" && cmd.size() >= 4 && fake_param(cmd.tokens[1].text)) {
            ctx.notice("SET ignored");
            ctx.complete("SET");
            co_return;
        }
    }
    if (!entry->stats_ok && !ctx.who.full_access) {
        ctx.error(sqlstate::insufficient_privilege, "admin access needed");
        co_return;
    }
    if (word != "SHOW") spdlog::info("admin C-{} {}: {}", ctx.who.id, ctx.who.user, cmd.text);
    co_await entry->run(ctx, cmd);
}

std::vector<std::string> known_databases(app::Runtime& rt) {
    std::set<std::string> names;
    auto snap = rt.snapshot();
    for (auto& [name, db] : snap->config->databases) names.insert(name);
    for (auto& p : rt.pools->all()) names.insert(p->database());
    return {names.begin(), names.end()};
}

std::optional<std::string> database_arg(Context& ctx, const Command& cmd, std::size_t i) {
    auto name = cmd.name(i);
    if (!name) {
        ctx.error(sqlstate::syntax_error, "a database is required");
        return std::nullopt;
    }
    if (is_admin_database(*name)) {
        ctx.error(sqlstate::object_not_in_prerequisite_state, "cannot do that to the admin database");
        return std::nullopt;
    }
    auto dbs = known_databases(ctx.rt);
    if (std::find(dbs.begin(), dbs.end(), *name) == dbs.end()) {
        ctx.error(sqlstate::invalid_catalog_name, "no such database: " + *name);
        return std::nullopt;
    }
    return name;
}

std::optional<std::string> optional_database_arg(Context& ctx, const Command& cmd) {
    if (cmd.size() < 2) return std::string();
    return database_arg(ctx, cmd, 1);
}

Task<void> sleep_for(Context& ctx, std::chrono::milliseconds d) {
    Timer t(ctx.worker.ctx(), d);
    co_await t.async_wait(task_token);
}

}  // namespace pgrouter::admin
