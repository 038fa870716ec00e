// The process: workers, listeners, signals, reload, shutdown.
#pragma once

#include "pgrouter/config/config.hpp"

#include <memory>
#include <string>

namespace pgrouter::app {

struct Options {
    std::string config_path;
    int verbosity = 0;  // -1 quiet, 0 normal, 1+ verbose
    bool daemonize = false;
};

class App {
public:
    App(Options opts, config::Config cfg);
    ~App();
    // Runs until shutdown; returns the process exit code (SPEC §1).
    int run();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pgrouter::app
