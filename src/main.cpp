// argv -> Config -> App.run(); nothing else.
#include "pgrouter/app/app.hpp"
#include "pgrouter/config/config.hpp"
#include "pgrouter/version.hpp"

#include <cstdio>
#include <cstring>
#include <string>

namespace {
constexpr const char* kUsage =
    "Usage: pgrouter [--check] [--verbose|-v] [--quiet|-q] [--daemon|-d] CONFIG\n"
    "       pgrouter --version | --help\n"
    "\n"
    "  CONFIG          TOML configuration (or a PgBouncer pgbouncer.ini when it ends in .ini)\n"
    "  --check         validate CONFIG and exit: 0 when valid, 1 with one line per problem\n"
    "  -v, --verbose   more logging (debug)\n"
    "  -q, --quiet     only warnings and errors\n"
    "  -d, --daemon    run in the background and write pidfile\n"
    "  --version       print the version\n"
    "  --help          print this help\n"
    "\n"
    "Signals: HUP reload, INT/TERM safe shutdown (twice: immediate), QUIT immediate.\n";
}

int main(int argc, char** argv) {
    pgrouter::app::Options opts;
    bool check = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--version") {
            std::printf("%s\n", PGROUTER_VERSION_STRING);
            return 0;
        } else if (a == "--help" || a == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        } else if (a == "--check") {
            check = true;
        } else if (a == "-v" || a == "--verbose") {
            ++opts.verbosity;
        } else if (a == "-q" || a == "--quiet") {
            opts.verbosity = -1;
        } else if (a == "-d" || a == "--daemon") {
            opts.daemonize = true;
        } else if (!a.empty() && a[0] == '-') {
            std::fprintf(stderr, "pgrouter: unknown option: %s\n%s", a.c_str(), kUsage);
            return 1;
        } else if (opts.config_path.empty()) {
            opts.config_path = a;
        } else {
            std::fprintf(stderr, "pgrouter: unexpected argument: %s (only one CONFIG)\n", a.c_str());
            return 1;
        }
    }
    if (opts.config_path.empty()) {
        std::fprintf(stderr, "pgrouter: missing CONFIG argument\n%s", kUsage);
        return 1;
    }
    auto loaded = pgrouter::config::load_file(opts.config_path);
    for (auto& p : loaded.problems)
        std::fprintf(stderr, "%s\n", p.to_string().c_str());  // a warning says so after the key
    if (!loaded.ok()) return 1;
    if (check) return 0;
    pgrouter::app::App app(opts, std::move(*loaded.config));
    return app.run();
}
