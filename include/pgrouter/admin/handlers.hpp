// Every admin command handler; commands.cpp registers them.
#pragma once

#include "pgrouter/util/task.hpp"
#include "pgrouter/admin/command.hpp"

namespace pgrouter::admin {

// show_pools.cpp
Task<void> show_pools(Context&, const Command&);
// show_sockets.cpp
Task<void> show_clients(Context&, const Command&);
Task<void> show_servers(Context&, const Command&);
Task<void> show_sockets(Context&, const Command&);
Task<void> show_active_sockets(Context&, const Command&);
Task<void> show_fds(Context&, const Command&);
// show_stats.cpp
Task<void> show_stats(Context&, const Command&);
Task<void> show_stats_totals(Context&, const Command&);
Task<void> show_stats_averages(Context&, const Command&);
Task<void> show_totals(Context&, const Command&);
// show_databases.cpp
Task<void> show_databases(Context&, const Command&);
Task<void> show_users(Context&, const Command&);
// show_config.cpp
Task<void> show_config(Context&, const Command&);
Task<void> set(Context&, const Command&);
// show_misc.cpp
Task<void> show_help(Context&, const Command&);
Task<void> show_version(Context&, const Command&);
Task<void> show_state(Context&, const Command&);
Task<void> show_lists(Context&, const Command&);
Task<void> show_mem(Context&, const Command&);
Task<void> show_dns_hosts(Context&, const Command&);
Task<void> show_dns_zones(Context&, const Command&);
// pause.cpp
Task<void> pause(Context&, const Command&);
Task<void> resume(Context&, const Command&);
Task<void> suspend(Context&, const Command&);
Task<void> disable(Context&, const Command&);
Task<void> enable(Context&, const Command&);
// kill.cpp
Task<void> kill(Context&, const Command&);
Task<void> kill_client(Context&, const Command&);
Task<void> reconnect(Context&, const Command&);
Task<void> wait_close(Context&, const Command&);
// clusters.cpp
Task<void> show_clusters(Context&, const Command&);
Task<void> set_topology(Context&, const Command&);
// reload.cpp
Task<void> reload(Context&, const Command&);
Task<void> shutdown(Context&, const Command&);

// Helpers shared by the handlers (commands.cpp).
// The database named by token i of cmd when it exists (configured, or with a
// pool); otherwise writes the error and returns nullopt.
std::optional<std::string> database_arg(Context& ctx, const Command& cmd, std::size_t i);
// For COMMAND [db]: "" when no database is named, the database when it exists;
// otherwise writes the error and returns nullopt.
std::optional<std::string> optional_database_arg(Context& ctx, const Command& cmd);
// Every configured or pooled database name (not the admin one).
std::vector<std::string> known_databases(app::Runtime& rt);
// Closes the idle servers of db's pools (every pool when db is empty) on every
// worker; with `retire`, busy ones too as soon as they are released (RECONNECT).
Task<void> close_servers(Context& ctx, const std::string& db, bool retire);
// Poll interval for commands that wait (PAUSE, WAIT_CLOSE).
inline constexpr auto kPollInterval = std::chrono::milliseconds(100);
Task<void> sleep_for(Context& ctx, std::chrono::milliseconds d);

}  // namespace pgrouter::admin
