// Placeholder until the admin console lands: refuses with a clear error.
#include "pgrouter/admin/admin.hpp"

#include "pgrouter/protocol/protocol.hpp"

#include <strings.h>

namespace pgrouter::admin {

bool is_admin_database(std::string_view db) { return db == "pgbouncer" || db == "pgrouter"; }

boost::asio::awaitable<void> run_console(app::Worker&, net::Stream& client, ConsoleClient, std::string) {
    std::string out;
    protocol::write_error_response(out, "FATAL", "0A000", "the admin console is not available yet");
    co_await client.write_all(boost::asio::buffer(out));
}

}  // namespace pgrouter::admin
