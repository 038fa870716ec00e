// Keeps the running clusters in step with the configuration: creates and
// reconfigures Cluster objects, runs their health checks and discovery, and
// moves the primary pools when a cluster's primary changes.
#pragma once

#include "pgrouter/app/runtime.hpp"

#include <boost/asio/io_context.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pgrouter::discovery {
class Source;
}
namespace pgrouter::health {
class Checker;
}
namespace pgrouter::routing {
struct View;
}
namespace pgrouter::pool {
class Pool;
}

namespace pgrouter::app {

class ClusterManager {
public:
    // Discovery runs on `control` (the control thread); health checks on their own thread.
    ClusterManager(Runtime& rt, asio::io_context& control);
    ~ClusterManager();
    // Startup and RELOAD, on the control thread.
    void sync(const config::Config& cfg);
    void stop();

private:
    void start_discovery(const std::shared_ptr<routing::Cluster>& c, const config::ClusterConfig& cfg);
    void on_change(routing::Cluster& c, const routing::View& before, const routing::View& after);
    // Closes the idle servers of `pools` on every worker (posted to each).
    void close_idle_where(const std::vector<std::shared_ptr<pool::Pool>>& pools);

    Runtime& rt_;
    asio::io_context& control_;
    std::unique_ptr<health::Checker> checker_;
    struct Running {
        config::DiscoveryConfig discovery;
        std::unique_ptr<discovery::Source> source;
    };
    std::map<std::string, Running> running_;
};

}  // namespace pgrouter::app
