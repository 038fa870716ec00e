// SHOW CLIENTS, SERVERS, SOCKETS, ACTIVE_SOCKETS and FDS: one row per connection.
#include "pgrouter/admin/census.hpp"
#include "pgrouter/util/task.hpp"
#include "pgrouter/admin/handlers.hpp"

#include <cmath>
#include <cstring>

namespace pgrouter::admin {

namespace {
using Cols = std::vector<ResultSet::Column>;

// PgBouncer 1.18's columns, then the newer "id" (what KILL_CLIENT takes).
const Cols kSocketColumns = {
    {"type"}, {"user"}, {"database"}, {"state"}, {"addr"}, {"port", ColType::int4},
    {"local_addr"}, {"local_port", ColType::int4}, {"connect_time"}, {"request_time"},
    {"wait", ColType::int4}, {"wait_us", ColType::int4}, {"close_needed", ColType::int4},
    {"ptr"}, {"link"}, {"remote_pid", ColType::int4}, {"tls"}, {"application_name"},
};
// SHOW SOCKETS adds the buffer positions; pgrouter lends buffers only while
// bytes move, so between reads they are empty.
const Cols kBufferColumns = {
    {"recv_pos", ColType::int4}, {"pkt_pos", ColType::int4}, {"pkt_remain", ColType::int4},
    {"send_pos", ColType::int4}, {"send_remain", ColType::int4}, {"pkt_avail", ColType::int4},
    {"send_avail", ColType::int4},
};

Cols columns(bool buffers) {
    Cols c = kSocketColumns;
    if (buffers) c.insert(c.end(), kBufferColumns.begin(), kBufferColumns.end());
    c.push_back({"id", ColType::int8});
    return c;
}

std::vector<Cell> client_cells(const ClientRow& c) {
    auto& i = c.info;
    double whole = std::floor(i.wait_seconds);
    auto request = i.request_time.time_since_epoch().count() ? i.request_time : i.connect_time;
    return {cell("C"), cell(i.user), cell(i.database), cell(i.state), cell(c.remote.addr), cell(c.remote.port),
            cell(c.local.addr), cell(c.local.port), cell(format_time(i.connect_time)), cell(format_time(request)),
            cell(static_cast<int>(whole)), cell(static_cast<int>((i.wait_seconds - whole) * 1e6)), cell(0),
            cell(ptr_text(i.id)), cell(i.server_id ? ptr_text(i.server_id) : std::string()), cell(0),
            cell(i.tls ? "TLS" : ""), cell(i.application_name)};
}

std::vector<Cell> server_cells(const ServerRow& s) {
    return {cell("S"), cell(s.login_user), cell(s.database), cell(s.state), cell(s.remote.addr),
            cell(s.remote.port), cell(s.local.addr), cell(s.local.port), cell(format_time(s.connect_time)),
            cell(format_time(s.request_time)), cell(0), cell(0), cell(s.close_needed), cell(ptr_text(s.id)),
            cell(s.client_id ? ptr_text(s.client_id) : std::string()), cell(s.remote_pid), cell(s.tls),
            cell(s.application_name)};
}

void finish(std::vector<Cell>& row, bool buffers, std::uint64_t id) {
    if (buffers)
        for (std::size_t i = 0; i < kBufferColumns.size(); ++i) row.push_back(cell(0));
    row.push_back(cell(id));
}

enum class Which { clients, servers, both, active };

Task<void> show(Context& ctx, Which which) {
    auto census = co_await take_census(ctx.worker);
    bool buffers = which == Which::both || which == Which::active;
    ResultSet rs(columns(buffers));
    if (which != Which::servers) {
        for (auto& c : census.clients) {
            if (which == Which::active && std::strcmp(c.info.state, "active") != 0) continue;
            auto row = client_cells(c);
            finish(row, buffers, c.info.id);
            rs.add(std::move(row));
        }
    }
    if (which != Which::clients) {
        for (auto& s : census.servers) {
            if (which == Which::active && std::strcmp(s.state, "active") != 0) continue;
            auto row = server_cells(s);
            finish(row, buffers, s.id);
            rs.add(std::move(row));
        }
    }
    rs.write(ctx.out);
}
}  // namespace

Task<void> show_clients(Context& ctx, const Command& cmd) { co_await show(ctx, Which::clients); }
Task<void> show_servers(Context& ctx, const Command& cmd) { co_await show(ctx, Which::servers); }
Task<void> show_sockets(Context& ctx, const Command& cmd) { co_await show(ctx, Which::both); }
Task<void> show_active_sockets(Context& ctx, const Command& cmd) { co_await show(ctx, Which::active); }

// PgBouncer passes these fds for an online restart; pgrouter restarts with
// SO_REUSEPORT instead, so the rows are informational and never carry secrets.
Task<void> show_fds(Context& ctx, const Command& cmd) {
    auto census = co_await take_census(ctx.worker);
    ResultSet rs({{"fd", ColType::int4}, {"task"}, {"user"}, {"database"}, {"addr"}, {"port", ColType::int4},
                  {"cancel", ColType::int8}, {"link", ColType::int4}, {"client_encoding"}, {"std_strings"},
                  {"datestyle"}, {"timezone"}, {"password"}, {"scram_client_key", ColType::bytea},
                  {"scram_server_key", ColType::bytea}});
    for (auto& c : census.clients) {
        if (c.fd < 0) continue;
        rs.add({cell(c.fd), cell("client"), cell(c.info.user), cell(c.info.database), cell(c.remote.addr),
                cell(c.remote.port), cell(static_cast<std::uint64_t>(c.info.cancel_key)),
                c.server_fd >= 0 ? cell(c.server_fd) : Cell(), Cell(), Cell(), Cell(), Cell(), Cell(), Cell(),
                Cell()});
    }
    for (auto& s : census.servers) {
        if (s.fd < 0) continue;
        rs.add({cell(s.fd), cell("server"), cell(s.login_user), cell(s.database), cell(s.remote.addr),
                cell(s.remote.port), cell(static_cast<std::uint64_t>(s.cancel_key)),
                s.client_fd >= 0 ? cell(s.client_fd) : Cell(), s.client_encoding, s.std_strings, s.datestyle,
                s.timezone, Cell(), Cell(), Cell()});
    }
    rs.write(ctx.out);
}

}  // namespace pgrouter::admin
