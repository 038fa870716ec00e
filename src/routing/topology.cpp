// Pure selection rules: a Consul health answer or a Patroni /cluster answer ->
// Discovered. No I/O, no logging; every problem is reported through `error`.
#include "pgrouter/routing/topology.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

namespace pgrouter::routing {

namespace json = boost::json;

namespace {

constexpr int kDefaultPort = 5432;

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::optional<int> parse_port(std::string_view s, std::string& error) {
    bool digits = !s.empty() && s.size() <= 5 &&
                  std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
    int port = 0;
    if (digits) std::from_chars(s.data(), s.data() + s.size(), port);
    if (!digits || port < 1 || port > 65535) {
        error = "invalid port " + quoted(s) + "; expected 1..65535";
        return std::nullopt;
    }
    return port;
}

bool plain_host_ok(std::string_view host) {
    return !host.empty() && host.find_first_of(",/[] \t") == std::string_view::npos;
}

// ---- JSON helpers ------------------------------------------------------------

std::optional<json::value> parse_json(std::string_view body, std::string& error) {
    json::error_code ec;
    json::value v = json::parse(body, ec);
    if (ec) {
        error = "invalid JSON: " + ec.message();
        return std::nullopt;
    }
    return v;
}

// A string member: absent or null -> "", a string -> its value, anything else -> error.
bool get_string(const json::object& o, std::string_view key, std::string& out, std::string& error,
                const std::string& where) {
    out.clear();
    const json::value* v = o.if_contains(key);
    if (!v || v->is_null()) return true;
    if (!v->is_string()) {
        error = where + "." + std::string(key) + " is not a string";
        return false;
    }
    out.assign(v->get_string().data(), v->get_string().size());
    return true;
}

// An integer member: absent or null -> nullopt; an integral number -> value; otherwise error.
bool get_int(const json::object& o, std::string_view key, std::optional<std::int64_t>& out,
             std::string& error, const std::string& where) {
    out.reset();
    const json::value* v = o.if_contains(key);
    if (!v || v->is_null()) return true;
    if (v->is_int64()) {
        out = v->get_int64();
        return true;
    }
    if (v->is_uint64() && v->get_uint64() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        out = static_cast<std::int64_t>(v->get_uint64());
        return true;
    }
    if (v->is_double()) {
        double d = v->get_double();
        if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e18) {
            out = static_cast<std::int64_t>(d);
            return true;
        }
    }
    error = where + "." + std::string(key) + " is not an integer";
    return false;
}

bool get_port(const json::object& o, std::string_view key, int& out, std::string& error, const std::string& where) {
    std::optional<std::int64_t> p;
    if (!get_int(o, key, p, error, where)) return false;
    if (!p || *p == 0) {
        out = kDefaultPort;
        return true;
    }
    if (*p < 0 || *p > 65535) {
        error = where + "." + std::string(key) + " " + std::to_string(*p) + " is out of range";
        return false;
    }
    out = static_cast<int>(*p);
    return true;
}

bool contains_any(const std::vector<std::string>& have, const std::vector<std::string>& wanted) {
    for (const auto& w : wanted)
        if (std::find(have.begin(), have.end(), w) != have.end()) return true;
    return false;
}

void push_unique(std::vector<HostPort>& v, const HostPort& hp) {
    if (std::find(v.begin(), v.end(), hp) == v.end()) v.push_back(hp);
}

// One ServiceEntry, reduced to what the rules need.
struct ConsulInstance {
    HostPort address;
    std::vector<std::string> tags;
    bool node_healthy = true;
    int service_checks = 0;
    bool service_all_passing = true;
    bool service_any_critical = false;
};

bool read_consul_entry(const json::value& entry, std::size_t index, ConsulInstance& out, std::string& error) {
    const std::string where = "entry " + std::to_string(index);
    const json::object* e = entry.if_object();
    if (!e) {
        error = where + " is not an object";
        return false;
    }
    const json::value* node_v = e->if_contains("Node");
    const json::value* service_v = e->if_contains("Service");
    const json::value* checks_v = e->if_contains("Checks");
    if (!node_v || !node_v->is_object()) {
        error = where + ": Node is missing or not an object";
        return false;
    }
    if (!service_v || !service_v->is_object()) {
        error = where + ": Service is missing or not an object";
        return false;
    }
    // Go encodes an empty slice as null: accept it as "no checks".
    if (!checks_v || !(checks_v->is_array() || checks_v->is_null())) {
        error = where + ": Checks is missing or not an array";
        return false;
    }
    const json::object& node = node_v->get_object();
    const json::object& service = service_v->get_object();

    std::string node_address, service_address, service_id, service_name;
    if (!get_string(node, "Address", node_address, error, where + ": Node")) return false;
    if (!get_string(service, "Address", service_address, error, where + ": Service")) return false;
    if (!get_string(service, "ID", service_id, error, where + ": Service")) return false;
    if (!get_string(service, "Service", service_name, error, where + ": Service")) return false;
    if (service_id.empty()) service_id = service_name;  // Consul's default ID is the name
    out.address.host = !service_address.empty() ? service_address : node_address;
    if (out.address.host.empty()) {
        error = where + ": neither Service.Address nor Node.Address is set";
        return false;
    }
    if (!get_port(service, "Port", out.address.port, error, where + ": Service")) return false;

    out.tags.clear();
    if (const json::value* tags = service.if_contains("Tags"); tags && !tags->is_null()) {
        if (!tags->is_array()) {
            error = where + ": Service.Tags is not an array";
            return false;
        }
        for (const auto& t : tags->get_array()) {
            if (!t.is_string()) {
                error = where + ": Service.Tags holds a non-string";
                return false;
            }
            out.tags.emplace_back(t.get_string().data(), t.get_string().size());
        }
    }

    if (checks_v->is_array()) {
        std::size_t ci = 0;
        for (const auto& cv : checks_v->get_array()) {
            const std::string cwhere = where + ": Checks[" + std::to_string(ci++) + "]";
            const json::object* c = cv.if_object();
            if (!c) {
                error = cwhere + " is not an object";
                return false;
            }
            std::string status, check_service;
            if (!get_string(*c, "Status", status, error, cwhere)) return false;
            if (!get_string(*c, "ServiceID", check_service, error, cwhere)) return false;
            const bool passing = status == "passing";
            const bool critical = !passing && status != "warning";  // unknown statuses count as critical
            if (check_service.empty()) {
                if (!passing) out.node_healthy = false;
            } else if (check_service == service_id) {
                ++out.service_checks;
                if (!passing) out.service_all_passing = false;
                if (critical) out.service_any_critical = true;
            }
            // A check of another service on the same node says nothing about this one.
        }
    }
    return true;
}

}  // namespace

std::optional<HostPort> parse_host_port(std::string_view input, std::string& error) {
    std::string_view s = trim(input);
    if (s.empty()) {
        error = "empty address; expected host:port";
        return std::nullopt;
    }
    if (s[0] == '/') {  // unix socket directory, "/dir" or "/dir:port" (as in the config)
        auto colon = s.rfind(':');
        if (colon != std::string_view::npos && colon > s.rfind('/')) {
            auto port = parse_port(s.substr(colon + 1), error);
            if (!port) return std::nullopt;
            return HostPort{std::string(s.substr(0, colon)), *port};
        }
        return HostPort{std::string(s), kDefaultPort};
    }
    if (s[0] == '[') {
        auto close = s.find(']');
        if (close == std::string_view::npos) {
            error = "invalid address " + quoted(s) + ": missing ']'";
            return std::nullopt;
        }
        auto host = s.substr(1, close - 1);
        if (host.empty() || host.find_first_of("[]/, \t") != std::string_view::npos) {
            error = "invalid address " + quoted(s) + ": bad IPv6 host";
            return std::nullopt;
        }
        auto rest = s.substr(close + 1);
        if (rest.empty()) return HostPort{std::string(host), kDefaultPort};
        if (rest[0] != ':') {
            error = "invalid address " + quoted(s) + ": expected ':' after ']'";
            return std::nullopt;
        }
        auto port = parse_port(rest.substr(1), error);
        if (!port) return std::nullopt;
        return HostPort{std::string(host), *port};
    }
    auto colon = s.find(':');
    if (colon != std::string_view::npos && s.find(':', colon + 1) != std::string_view::npos) {
        error = "invalid address " + quoted(s) + ": write an IPv6 address in brackets, e.g. [::1]:5432";
        return std::nullopt;
    }
    auto host = colon == std::string_view::npos ? s : s.substr(0, colon);
    if (!plain_host_ok(host)) {
        error = "invalid address " + quoted(s) + ": bad host";
        return std::nullopt;
    }
    int port = kDefaultPort;
    if (colon != std::string_view::npos) {
        auto p = parse_port(s.substr(colon + 1), error);
        if (!p) return std::nullopt;
        port = *p;
    }
    return HostPort{std::string(host), port};
}

std::optional<Discovered> select_consul(std::string_view body, const std::vector<std::string>& primary_tags,
                                        const std::vector<std::string>& replica_tags, std::string& error) {
    auto doc = parse_json(body, error);
    if (!doc) return std::nullopt;
    Discovered d;
    d.source = "consul";
    if (doc->is_null()) return d;  // no instances
    if (!doc->is_array()) {
        error = "expected a JSON array of service entries (or null)";
        return std::nullopt;
    }
    std::vector<ConsulInstance> instances;
    const auto& arr = doc->get_array();
    instances.reserve(arr.size());
    for (std::size_t i = 0; i < arr.size(); ++i) {
        ConsulInstance inst;
        if (!read_consul_entry(arr[i], i, inst, error)) return std::nullopt;
        instances.push_back(std::move(inst));
    }
    std::vector<HostPort> replicas;
    for (const auto& inst : instances) {
        if (!inst.node_healthy) continue;
        const bool primary = inst.service_checks > 0 && inst.service_all_passing &&
                             (primary_tags.empty() || contains_any(inst.tags, primary_tags));
        if (primary) {
            push_unique(d.primaries, inst.address);
            continue;
        }
        if (!inst.service_any_critical && (replica_tags.empty() || contains_any(inst.tags, replica_tags)))
            push_unique(replicas, inst.address);
    }
    // An address that is a primary candidate is never also a replica.
    for (const auto& r : replicas)
        if (std::find(d.primaries.begin(), d.primaries.end(), r) == d.primaries.end()) d.replicas.push_back(r);
    d.replica_lag.assign(d.replicas.size(), std::nullopt);
    return d;
}

std::optional<Discovered> select_patroni(std::string_view body, std::string& error) {
    auto doc = parse_json(body, error);
    if (!doc) return std::nullopt;
    const json::object* root = doc->if_object();
    if (!root) {
        error = "expected a JSON object with \"members\"";
        return std::nullopt;
    }
    const json::value* members_v = root->if_contains("members");
    if (!members_v || !(members_v->is_array() || members_v->is_null())) {
        error = "\"members\" is missing or not an array";
        return std::nullopt;
    }
    Discovered d;
    d.source = "patroni";
    if (members_v->is_null()) return d;
    std::size_t i = 0;
    for (const auto& mv : members_v->get_array()) {
        const std::string where = "members[" + std::to_string(i++) + "]";
        const json::object* m = mv.if_object();
        if (!m) {
            error = where + " is not an object";
            return std::nullopt;
        }
        std::string role, state, host;
        HostPort hp;
        if (!get_string(*m, "role", role, error, where) || !get_string(*m, "state", state, error, where) ||
            !get_string(*m, "host", host, error, where) || !get_port(*m, "port", hp.port, error, where))
            return std::nullopt;
        std::optional<std::int64_t> lag;
        if (const json::value* lv = m->if_contains("lag"); lv && lv->is_number()) {
            if (!get_int(*m, "lag", lag, error, where)) return std::nullopt;
        }  // "unknown" (or anything else not a number) = unknown
        if (host.empty()) continue;  // Patroni omits host for members without a connection URL
        hp.host = std::move(host);
        if (role == "leader") {
            if (state == "running") push_unique(d.primaries, hp);
        } else if (role == "replica" || role == "sync_standby" || role == "quorum_standby") {
            if ((state == "streaming" || state == "running") &&
                std::find(d.replicas.begin(), d.replicas.end(), hp) == d.replicas.end()) {
                d.replicas.push_back(hp);
                d.replica_lag.push_back(lag);
            }
        }
    }
    return d;
}

}  // namespace pgrouter::routing
