// pgrouter-ctl consul-hook: reads a Consul health-service watch answer on stdin,
// selects primary and replicas with the built-in watcher's rule
// (routing::select_consul) and applies them with SET PRIMARY / SET REPLICAS over
// the admin console. Exit codes follow GitLab's failover_pgbouncer handler.
#include "consul_hook.hpp"

#include "admin_client.hpp"
#include "pgrouter/routing/topology.hpp"

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::ctl {

namespace {

constexpr int kApplied = 0, kUnreachable = 1, kInvalidJson = 2, kSplitBrain = 3, kNoPrimary = 4, kUsage = 64;

constexpr const char* kHookUsage =
    "Usage: pgrouter-ctl [--admin CONNINFO] consul-hook --cluster NAME\n"
    "           [--primary-tags master,primary] [--replica-tags replica]\n"
    "           [--primary-tag TAG]... [--replica-tag TAG]...\n"
    "\n"
    "Reads a Consul `service` watch answer (GET /v1/health/service/<name>) on stdin\n"
    "and applies its primary and replicas to cluster NAME with SET PRIMARY and\n"
    "SET REPLICAS. An empty --primary-tags '' / --replica-tags '' means no tags\n"
    "(GitLab's untagged `postgresql` service). --kind and --service are accepted and\n"
    "ignored.\n"
    "Exit status: 0 applied, 1 pgrouter unreachable or a command refused,\n"
    "2 invalid JSON, 3 split brain (nothing changed), 4 no healthy primary (nothing\n"
    "changed), 64 bad usage.\n";

int usage_error(const std::string& msg) {
    std::fprintf(stderr, "pgrouter-ctl consul-hook: %s\n%s", msg.c_str(), kHookUsage);
    return kUsage;
}

void add_tags(std::vector<std::string>& out, std::string_view list) {
    std::size_t at = 0;
    while (at <= list.size()) {
        auto comma = list.find(',', at);
        auto part = list.substr(at, comma == std::string_view::npos ? std::string_view::npos : comma - at);
        while (!part.empty() && (part.front() == ' ' || part.front() == '\t')) part.remove_prefix(1);
        while (!part.empty() && (part.back() == ' ' || part.back() == '\t')) part.remove_suffix(1);
        if (!part.empty()) out.emplace_back(part);
        if (comma == std::string_view::npos) break;
        at = comma + 1;
    }
}

bool valid_cluster_name(const std::string& s) {
    if (s.empty() || s.size() > 63) return false;
    for (char c : s) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '-' || c == '.';
        if (!ok) return false;
    }
    return true;
}

std::string quote(const std::string& s, char q) {
    std::string out(1, q);
    for (char c : s) {
        if (c == q) out += q;
        out += c;
    }
    out += q;
    return out;
}

std::string join(const std::vector<routing::HostPort>& v, const char* sep) {
    std::string out;
    for (const auto& hp : v) out += (out.empty() ? "" : sep) + routing::to_string(hp);
    return out;
}

bool read_all(std::FILE* in, std::string& out) {
    char buf[65536];
    for (;;) {
        std::size_t n = std::fread(buf, 1, sizeof buf, in);
        out.append(buf, n);
        if (n < sizeof buf) return !std::ferror(in);
    }
}

}  // namespace

int consul_hook(std::string conninfo, const std::vector<std::string>& args) {
    std::string cluster;
    std::optional<std::vector<std::string>> primary_tags, replica_tags;

    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--help" || a == "-h") {
            std::fputs(kHookUsage, stdout);
            return kApplied;
        }
        std::string opt = a, value;
        bool inline_value = false;
        if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
            opt = a.substr(0, eq);
            value = a.substr(eq + 1);
            inline_value = true;
        }
        static const char* const known[] = {"--cluster",     "--primary-tags", "--replica-tags", "--primary-tag",
                                            "--replica-tag", "--admin",        "--kind",         "--service"};
        bool is_known = false;
        for (const char* k : known) is_known = is_known || opt == k;
        if (!is_known) return usage_error(a.rfind("-", 0) == 0 ? "unknown option: " + a : "unexpected argument: " + a);
        if (!inline_value) {
            if (i + 1 >= args.size() || args[i + 1].rfind("--", 0) == 0) return usage_error(opt + " needs a value");
            value = args[++i];
        }
        if (opt == "--cluster") {
            cluster = value;
        } else if (opt == "--primary-tags" || opt == "--primary-tag") {
            if (!primary_tags) primary_tags.emplace();
            if (opt == "--primary-tag" && value.empty()) return usage_error("--primary-tag needs a tag");
            add_tags(*primary_tags, value);
        } else if (opt == "--replica-tags" || opt == "--replica-tag") {
            if (!replica_tags) replica_tags.emplace();
            if (opt == "--replica-tag" && value.empty()) return usage_error("--replica-tag needs a tag");
            add_tags(*replica_tags, value);
        } else if (opt == "--admin") {
            conninfo = value;
        }
        // --kind / --service: passed by older watch examples; the payload says it all.
    }
    if (cluster.empty()) return usage_error("--cluster NAME is required");
    if (!valid_cluster_name(cluster))
        return usage_error("invalid cluster name \"" + cluster + "\" (letters, digits, '_', '-', '.'; at most 63)");
    if (!primary_tags) primary_tags = std::vector<std::string>{"master", "primary"};
    if (!replica_tags) replica_tags = std::vector<std::string>{"replica"};

    std::string body;
    if (!read_all(stdin, body)) {
        std::fprintf(stderr, "pgrouter-ctl consul-hook: cannot read stdin\n");
        return kInvalidJson;
    }
    std::string error;
    auto found = routing::select_consul(body, *primary_tags, *replica_tags, error);
    if (!found) {
        std::fprintf(stderr, "pgrouter-ctl consul-hook: invalid watch input: %s; nothing changed\n", error.c_str());
        return kInvalidJson;
    }
    if (found->primaries.size() > 1) {
        std::fprintf(stderr,
                     "pgrouter-ctl consul-hook: split brain in cluster %s: %zu primary candidates: %s; "
                     "nothing changed\n",
                     cluster.c_str(), found->primaries.size(), join(found->primaries, ", ").c_str());
        return kSplitBrain;
    }
    if (found->primaries.empty()) {
        std::fprintf(stderr, "pgrouter-ctl consul-hook: no healthy primary for cluster %s; nothing changed\n",
                     cluster.c_str());
        return kNoPrimary;
    }

    const std::string primary = routing::to_string(found->primaries.front());
    const std::string replicas = join(found->replicas, ",");

    // A handler runs inline in Consul's watch loop: never hang on a black-holed address.
    ::setenv("PGCONNECT_TIMEOUT", "10", /*overwrite=*/0);
    AdminClient client(conninfo);
    if (!client.connected()) {
        std::fprintf(stderr, "pgrouter-ctl consul-hook: cannot connect to the admin console: %s\n",
                     client.error().c_str());
        return kUnreachable;
    }
    const std::string target = quote(cluster, '"');
    const std::string commands[] = {"SET PRIMARY " + target + " " + quote(primary, '\''),
                                    "SET REPLICAS " + target + " " + quote(replicas, '\'')};
    for (const auto& sql : commands) {
        auto r = client.run(sql);
        if (!r.ok) {
            std::fprintf(stderr, "pgrouter-ctl consul-hook: %s: %s\n", sql.c_str(), r.error.c_str());
            return kUnreachable;
        }
    }
    std::printf("cluster %s: primary %s, replicas %s\n", cluster.c_str(), primary.c_str(),
                replicas.empty() ? "(none)" : replicas.c_str());
    return kApplied;
}

}  // namespace pgrouter::ctl
