// SHOW CLUSTERS, SET PRIMARY and SET REPLICAS: pgrouter's own admin commands.
#include "pgrouter/admin/handlers.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/routing/cluster.hpp"
#include "pgrouter/session/errors.hpp"

#include <spdlog/spdlog.h>

namespace pgrouter::admin {

namespace sqlstate = session::sqlstate;

Task<void> show_clusters(Context& ctx, const Command& cmd) {
    ResultSet rs({{"cluster"},
                  {"role"},
                  {"host"},
                  {"port", ColType::int4},
                  {"state"},
                  {"lag_bytes", ColType::int8},
                  {"in_recovery"},
                  {"sv_active", ColType::int4},
                  {"sv_idle", ColType::int4},
                  {"last_check"},
                  {"discovery"}});
    auto pools = ctx.rt.pools->all();
    for (auto& [name, c] : *ctx.rt.clusters()) {
        auto v = c->view();
        for (auto& b : v->backends) {
            int active = 0, idle = 0;
            for (auto& p : pools) {
                auto t = p->target();
                if (!t || t->host != b.addr.host || t->port != b.addr.port) continue;
                auto n = p->counts();
                active += n.total - n.idle;
                idle += n.idle;
            }
            auto& h = b.health;
            rs.add({cell(name), cell(routing::to_string(b.role)), cell(b.addr.host), cell(b.addr.port),
                    cell(routing::to_string(h.state)), h.lag_bytes ? cell(*h.lag_bytes) : Cell(),
                    h.in_recovery ? cell(*h.in_recovery ? "yes" : "no") : Cell(), cell(active), cell(idle),
                    h.last_check == std::chrono::system_clock::time_point{} ? Cell() : cell(format_time(h.last_check)),
                    cell(v->discovery)});
        }
    }
    rs.write(ctx.out);
    co_return;
}

// SET PRIMARY <cluster> '<host:port>' | SET REPLICAS <cluster> '<host:port>[,...]'
Task<void> set_topology(Context& ctx, const Command& cmd) {
    bool primary = cmd.keyword(1) == "PRIMARY";
    auto name = cmd.name(2);
    bool shape = cmd.size() == 4 && name && cmd.tokens[3].kind != Token::Kind::equals;
    if (!shape) {
        ctx.error(sqlstate::syntax_error, primary ? "usage: SET PRIMARY <cluster> '<host>:<port>'"
                                                  : "usage: SET REPLICAS <cluster> '<host>:<port>[,<host>:<port>...]'");
        co_return;
    }
    auto c = ctx.rt.cluster(*name);
    if (!c) {
        ctx.error(sqlstate::undefined_object, "no such cluster: " + *name);
        co_return;
    }
    const std::string& value = cmd.tokens[3].text;
    std::vector<config::HostPort> addrs;  // empty parts skipped: '' is "no replicas"
    std::size_t at = 0;
    for (;;) {
        auto comma = value.find(',', at);
        std::string part = value.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
        part.erase(0, part.find_first_not_of(' '));
        part.erase(part.find_last_not_of(' ') + 1);
        if (!part.empty()) {
            std::string err;
            auto hp = routing::parse_host_port(part, err);
            if (!hp) {
                ctx.error(sqlstate::invalid_parameter_value, "invalid address \"" + part + "\": " + err);
                co_return;
            }
            addrs.push_back(*hp);
        }
        if (comma == std::string::npos) break;
        at = comma + 1;
    }
    if (primary && addrs.size() != 1) {
        ctx.error(sqlstate::invalid_parameter_value, "SET PRIMARY takes exactly one <host>:<port>");
        co_return;
    }
    bool changed = primary ? c->set_primary(addrs[0]) : c->set_replicas(addrs);
    if (changed)
        spdlog::info("admin {}: SET {} {} '{}'", ctx.who.user, primary ? "PRIMARY" : "REPLICAS", *name, value);
    ctx.complete("SET");
}

}  // namespace pgrouter::admin
