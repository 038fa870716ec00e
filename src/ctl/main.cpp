// pgrouter-ctl: runs admin console commands over libpq and prints the result
// like psql. Exit codes: 0 done, 1 the server refused the command (its message
// on stderr), 2 cannot connect, 64 usage.
#include "admin_client.hpp"
#include "consul_hook.hpp"
#include "pgrouter/version.hpp"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {
constexpr int kOk = 0, kCommandFailed = 1, kUnreachable = 2, kUsage = 64;

constexpr const char* kUsageText =
    "Usage: pgrouter-ctl [--admin CONNINFO] show <what>\n"
    "       pgrouter-ctl [--admin CONNINFO] <admin command words...>\n"
    "       pgrouter-ctl [--admin CONNINFO] consul-hook --cluster NAME\n"
    "                    [--primary-tags master,primary] [--replica-tags replica]\n"
    "       pgrouter-ctl --version | --help\n"
    "\n"
    "  show pools|clients|servers|databases|stats|config|...   runs SHOW <what>\n"
    "  pause [db], resume [db], reload, kill db, set key = value, ...\n"
    "                          any admin console command (see: pgrouter-ctl show help)\n"
    "  consul-hook             handler for a Consul `service` watch: reads the watch's\n"
    "                          JSON on stdin, applies SET PRIMARY / SET REPLICAS;\n"
    "                          '' tags = GitLab's untagged service (see consul-hook --help)\n"
    "  --admin CONNINFO        libpq connection string of the admin console; default\n"
    "                          $PGROUTER_ADMIN, else\n"
    "                          \"host=127.0.0.1 port=6432 dbname=pgbouncer user=pgbouncer\"\n"
    "                          (passwords from ~/.pgpass or PGPASSWORD)\n"
    "\n"
    "Exit status: 0 done, 1 the command failed (the server's message on stderr),\n"
    "2 cannot connect, 64 bad usage. consul-hook: 0 applied, 1 unreachable or refused,\n"
    "2 invalid JSON, 3 split brain, 4 no healthy primary.\n";

// Words are joined with spaces; a word holding spaces or quotes is quoted
// as a string literal, so `set server_check_query = "select 1"` works.
std::string join_command(const std::vector<std::string>& words) {
    std::string sql;
    for (auto& w : words) {
        if (!sql.empty()) sql += ' ';
        bool plain = !w.empty() && w.find_first_of(" \t'\"") == std::string::npos;
        if (plain) {
            sql += w;
            continue;
        }
        sql += '\'';
        for (char c : w) {
            if (c == '\'') sql += '\'';
            sql += c;
        }
        sql += '\'';
    }
    return sql;
}
}  // namespace

int main(int argc, char** argv) {
    std::string conninfo = pgrouter::ctl::default_conninfo();
    std::vector<std::string> words;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (words.empty() && a == "--version") {
            std::printf("pgrouter-ctl %s\n", PGROUTER_VERSION);
            return kOk;
        }
        if (words.empty() && (a == "--help" || a == "-h")) {
            std::fputs(kUsageText, stdout);
            return kOk;
        }
        if (words.empty() && a == "--admin") {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "pgrouter-ctl: --admin needs a connection string\n%s", kUsageText);
                return kUsage;
            }
            conninfo = argv[++i];
            continue;
        }
        if (words.empty() && a.rfind("--admin=", 0) == 0) {
            conninfo = a.substr(8);
            continue;
        }
        if (words.empty() && a.size() > 1 && a[0] == '-') {
            std::fprintf(stderr, "pgrouter-ctl: unknown option: %s\n%s", a.c_str(), kUsageText);
            return kUsage;
        }
        words.push_back(a);
    }
    if (words.empty()) {
        std::fputs(kUsageText, stderr);
        return kUsage;
    }
    // consul-hook (SPEC §6) is another subcommand; it plugs in here.
    if (words[0] == "consul-hook")
        return pgrouter::ctl::consul_hook(conninfo, std::vector<std::string>(words.begin() + 1, words.end()));
    if ((words[0] == "show" || words[0] == "SHOW") && words.size() != 2) {
        std::fprintf(stderr, "pgrouter-ctl: show needs one word (show pools, show clients, ...)\n");
        return kUsage;
    }

    pgrouter::ctl::AdminClient client(conninfo);
    if (!client.connected()) {
        std::fprintf(stderr, "pgrouter-ctl: cannot connect to the admin console: %s\n", client.error().c_str());
        return kUnreachable;
    }
    auto r = client.run(join_command(words));
    for (auto& n : r.notices) std::printf("%s\n", n.c_str());
    if (!r.ok) {
        std::fprintf(stderr, "pgrouter-ctl: %s\n", r.error.c_str());
        return kCommandFailed;
    }
    if (!r.columns.empty())
        pgrouter::ctl::print_table(stdout, r);
    else if (r.notices.empty())
        std::printf("%s\n", r.status.c_str());
    return kOk;
}
