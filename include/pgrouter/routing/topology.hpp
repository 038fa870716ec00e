// What discovery (static config, Consul, Patroni, the admin console) says a
// cluster looks like, and the pure selection rules that turn a Consul health
// answer or a Patroni /cluster answer into it. No I/O here.
#pragma once

#include "pgrouter/config/config.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::routing {

using config::HostPort;

// "host:port"; IPv6 as "[::1]:5432". This is config::to_string(const HostPort&)
// (a using-declaration, not a second function: a second one would make every
// unqualified `to_string(hp)` in this namespace ambiguous with the one ADL finds).
using config::to_string;
// Parses "host:port", "[v6]:port" or "host" (port 5432); nullopt + error when malformed.
std::optional<HostPort> parse_host_port(std::string_view s, std::string& error);

// One discovery answer. `primaries` holds every primary candidate: exactly one
// means "switch to it", none means "no primary" (hold writes), more than one is a
// split brain (keep the current primary only if it is among them and writable).
struct Discovered {
    std::vector<HostPort> primaries;
    std::vector<HostPort> replicas;
    // Patroni reports replica lag (bytes) per member; unknown = nullopt. Same order as replicas.
    std::vector<std::optional<std::int64_t>> replica_lag;
    std::string source;  // "static" | "consul" | "patroni" | "admin"
};

// Consul GET /v1/health/service/<name> answer (a JSON array of ServiceEntry,
// or null) -> Discovered (source "consul"). Rules (SPEC §4, consul-patroni.md §1.2, §4.3):
// - node healthy: every node-level check (ServiceID empty, serfHealth included) is "passing";
// - service check: the checks whose ServiceID is the instance's Service.ID;
// - primary candidate: node healthy, all its service checks "passing" and, when
//   primary_tags is not empty, one of those tags on the instance;
// - replica: not a primary candidate, node healthy, no service check "critical"
//   (any status other than passing/warning counts as critical) and, when
//   replica_tags is not empty, one of those tags;
// - address: Service.Address, else Node.Address; port: Service.Port (5432 when 0/absent).
// Returns nullopt and sets `error` when the body is not JSON or not that shape.
std::optional<Discovered> select_consul(std::string_view body, const std::vector<std::string>& primary_tags,
                                        const std::vector<std::string>& replica_tags, std::string& error);

// Patroni GET /cluster answer -> Discovered (source "patroni"): role "leader"
// (only when state is "running") is a primary candidate; "replica", "sync_standby",
// "quorum_standby" are replicas when state is "streaming" or "running"; `lag` in
// bytes when numeric. host/port from the member's host/port.
std::optional<Discovered> select_patroni(std::string_view body, std::string& error);

}  // namespace pgrouter::routing
