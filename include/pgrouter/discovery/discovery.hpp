// Discovery sources that run in the background (on the control thread's
// io_context, never on a worker): Consul blocking queries and Patroni polling.
// Each hands what it learns to `publish`; it never decides routing itself.
#pragma once

#include "pgrouter/config/config.hpp"
#include "pgrouter/routing/topology.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <functional>
#include <memory>
#include <string>

namespace pgrouter::discovery {

struct Callbacks {
    // A new answer (called only when it differs from the previous one).
    std::function<void(routing::Discovered)> publish;
    // Human-readable state for SHOW CLUSTERS' discovery column and logs, e.g.
    // "consul ok index=42", "consul error: connection refused (retry in 1.2s)".
    std::function<void(std::string)> status;
};

class Source {
public:
    virtual ~Source() = default;
    // Stops the loop; safe to call from any thread. Outstanding requests are cancelled.
    virtual void stop() = 0;
};

// Starts the watcher for one cluster, on `ex`. `token` is the Consul ACL token
// (already read from consul_token_file; "" = none).
std::unique_ptr<Source> start_consul(boost::asio::any_io_executor ex, const config::DiscoveryConfig& cfg,
                                     std::string token, Callbacks cb);
// Polls GET /cluster on each of cfg.patroni_urls in turn every `period` seconds.
std::unique_ptr<Source> start_patroni(boost::asio::any_io_executor ex, const config::DiscoveryConfig& cfg,
                                      double period, Callbacks cb);

}  // namespace pgrouter::discovery
