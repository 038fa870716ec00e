// pgrouter-ctl: runs admin commands over libpq (issue 3/4 fill this in).
#include "pgrouter/version.hpp"

#include <libpq-fe.h>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
    if (argc > 1 && std::string(argv[1]) == "--version") {
        std::printf("pgrouter-ctl %s\n", PGROUTER_VERSION);
        return 0;
    }
    std::fprintf(stderr, "usage: pgrouter-ctl [--admin CONNINFO] show <what> | <admin command>\n");
    return 1;
}
