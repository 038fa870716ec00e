// The admin console session: the welcome, then simple-protocol queries until the
// client leaves. Extended-protocol messages get one error, then everything up to
// the next Sync is skipped, as PostgreSQL does after an error.
#include "pgrouter/admin/admin.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/admin/command.hpp"
#include "pgrouter/admin/state.hpp"
#include "pgrouter/app/runtime.hpp"
#include "pgrouter/protocol/protocol.hpp"
#include "pgrouter/session/errors.hpp"
#include "pgrouter/version.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace pgrouter::admin {

namespace {
using namespace boost::asio::experimental::awaitable_operators;
namespace sqlstate = session::sqlstate;
constexpr auto token = task_token;
// Admin commands are short; anything bigger is not one.
constexpr std::size_t kMaxAdminMessage = 1 << 20;

void write_welcome(std::string& out, const ConsoleClient& who) {
    protocol::write_auth_ok(out);
    // Clients that look at these before their first query (psql, JDBC) need them.
    protocol::write_parameter_status(out, "server_version", PGROUTER_VERSION "/pgrouter");
    protocol::write_parameter_status(out, "client_encoding", "UTF8");
    protocol::write_parameter_status(out, "server_encoding", "UTF8");
    protocol::write_parameter_status(out, "DateStyle", "ISO");
    protocol::write_parameter_status(out, "TimeZone", "GMT");
    protocol::write_parameter_status(out, "standard_conforming_strings", "on");
    protocol::write_parameter_status(out, "integer_datetimes", "on");
    protocol::write_parameter_status(out, "is_superuser", who.full_access ? "on" : "off");
    protocol::write_backend_key_data(out, static_cast<std::uint32_t>(who.id), who.cancel_key);
    protocol::write_ready_for_query(out, 'I');
}

enum class Step { go_on, stop };

// Handles one whole message; writes replies to ctx.out.
Task<Step> handle_message(Context& ctx, char type, std::string_view body, bool& skipping) {
    switch (type) {
        case 'X':
            co_return Step::stop;
        case 'Q': {
            if (skipping) co_return Step::go_on;  // discarded until Sync, like PostgreSQL
            auto sql = protocol::read_cstring(protocol::as_bytes(body));
            if (!sql) {
                session::write_pooler_error(ctx.out, sqlstate::protocol_violation, "invalid Query message");
                co_return Step::stop;
            }
            co_await execute(ctx, *sql);
            protocol::write_ready_for_query(ctx.out, 'I');
            co_return ctx.close ? Step::stop : Step::go_on;
        }
        case 'S':
            skipping = false;
            protocol::write_ready_for_query(ctx.out, 'I');
            co_return Step::go_on;
        case 'H':
            co_return Step::go_on;
        case 'P': case 'B': case 'E': case 'D': case 'C':
            if (!skipping)
                ctx.error(sqlstate::protocol_violation, "admin console supports only the simple query protocol");
            skipping = true;
            co_return Step::go_on;
        case 'F':  // FunctionCall has no Sync: it is answered at once
            ctx.error(sqlstate::protocol_violation, "admin console supports only the simple query protocol");
            protocol::write_ready_for_query(ctx.out, 'I');
            co_return Step::go_on;
        case 'd': case 'c': case 'f':  // COPY messages outside COPY: ignored, as PostgreSQL does
            co_return Step::go_on;
        default:
            session::write_pooler_error(ctx.out, sqlstate::protocol_violation,
                                        std::string("unexpected message type '") + type + "'");
            co_return Step::stop;
    }
}

// Runs every whole message in `buf`; stop when the session must end.
Task<Step> drain(Context& ctx, std::string& buf, bool& skipping) {
    std::size_t pos = 0;
    Step step = Step::go_on;
    while (step == Step::go_on) {
        auto rest = protocol::as_bytes(std::string_view(buf).substr(pos));
        auto h = protocol::decode_frontend_header(rest);
        if (h.status == protocol::Decode::need_more) break;
        if (h.status == protocol::Decode::error || h.header.total() > kMaxAdminMessage) {
            std::string why = h.status == protocol::Decode::error ? h.error : "message too large for the admin console";
            session::write_pooler_error(ctx.out, sqlstate::protocol_violation, "invalid client message: " + why);
            step = Step::stop;
            break;
        }
        if (rest.size() < h.header.total()) break;
        std::string_view body(buf.data() + pos + 5, h.header.body_size());
        step = co_await handle_message(ctx, h.header.type, body, skipping);
        pos += h.header.total();
    }
    buf.erase(0, pos);
    co_return step;
}
}  // namespace

bool is_admin_database(std::string_view db) { return db == "pgbouncer" || db == "pgrouter"; }

Task<void> run_console(app::Worker& w, net::Stream& client, ConsoleClient who, std::string pending) {
    auto& rt = w.runtime();
    start(rt);
    Context ctx{w, rt, who, {}};
    write_welcome(ctx.out, who);
    bool skipping = false;
    char buf[8192];
    for (;;) {
        auto step = co_await drain(ctx, pending, skipping);
        if (!ctx.out.empty()) {
            auto ec = co_await client.write_all(asio::buffer(ctx.out));
            ctx.out.clear();
            if (ec) co_return;
        }
        if (step == Step::stop) co_return;
        // A shutdown ends an idle console through the session janitor, which cancels
        // this read (racing the read against a timer could drop a command that
        // arrives at the same moment).
        auto [ec, n] = co_await client.read_some(asio::buffer(buf));
        if (ec || n == 0) co_return;
        pending.append(buf, n);
    }
}

}  // namespace pgrouter::admin
