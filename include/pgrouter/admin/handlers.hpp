// Every admin command handler; commands.cpp registers them.
#pragma once

#include "pgrouter/admin/command.hpp"

namespace pgrouter::admin {

// show_pools.cpp
asio::awaitable<void> show_pools(Context&, const Command&);
// show_sockets.cpp
asio::awaitable<void> show_clients(Context&, const Command&);
asio::awaitable<void> show_servers(Context&, const Command&);
asio::awaitable<void> show_sockets(Context&, const Command&);
asio::awaitable<void> show_active_sockets(Context&, const Command&);
asio::awaitable<void> show_fds(Context&, const Command&);
// show_stats.cpp
asio::awaitable<void> show_stats(Context&, const Command&);
asio::awaitable<void> show_stats_totals(Context&, const Command&);
asio::awaitable<void> show_stats_averages(Context&, const Command&);
asio::awaitable<void> show_totals(Context&, const Command&);
// show_databases.cpp
asio::awaitable<void> show_databases(Context&, const Command&);
asio::awaitable<void> show_users(Context&, const Command&);
// show_config.cpp
asio::awaitable<void> show_config(Context&, const Command&);
asio::awaitable<void> set(Context&, const Command&);
// show_misc.cpp
asio::awaitable<void> show_help(Context&, const Command&);
asio::awaitable<void> show_version(Context&, const Command&);
asio::awaitable<void> show_state(Context&, const Command&);
asio::awaitable<void> show_lists(Context&, const Command&);
asio::awaitable<void> show_mem(Context&, const Command&);
asio::awaitable<void> show_dns_hosts(Context&, const Command&);
asio::awaitable<void> show_dns_zones(Context&, const Command&);
// pause.cpp
asio::awaitable<void> pause(Context&, const Command&);
asio::awaitable<void> resume(Context&, const Command&);
asio::awaitable<void> suspend(Context&, const Command&);
asio::awaitable<void> disable(Context&, const Command&);
asio::awaitable<void> enable(Context&, const Command&);
// kill.cpp
asio::awaitable<void> kill(Context&, const Command&);
asio::awaitable<void> kill_client(Context&, const Command&);
asio::awaitable<void> reconnect(Context&, const Command&);
asio::awaitable<void> wait_close(Context&, const Command&);
// clusters.cpp
asio::awaitable<void> show_clusters(Context&, const Command&);
asio::awaitable<void> set_topology(Context&, const Command&);
// reload.cpp
asio::awaitable<void> reload(Context&, const Command&);
asio::awaitable<void> shutdown(Context&, const Command&);

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
asio::awaitable<void> close_servers(Context& ctx, const std::string& db, bool retire);
// Poll interval for commands that wait (PAUSE, WAIT_CLOSE).
inline constexpr auto kPollInterval = std::chrono::milliseconds(100);
asio::awaitable<void> sleep_for(Context& ctx, std::chrono::milliseconds d);

}  // namespace pgrouter::admin
