#include "cluster_manager.hpp"

#include "pgrouter/discovery/discovery.hpp"
#include "pgrouter/health/checker.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/routing/cluster.hpp"

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

namespace pgrouter::app {

namespace {
bool same_discovery(const config::DiscoveryConfig& a, const config::DiscoveryConfig& b) {
    return a.type == b.type && a.consul_url == b.consul_url && a.consul_service == b.consul_service &&
           a.consul_primary_tags == b.consul_primary_tags && a.consul_replica_tags == b.consul_replica_tags &&
           a.consul_token_file == b.consul_token_file && a.consul_datacenter == b.consul_datacenter &&
           a.consul_wait == b.consul_wait && a.patroni_urls == b.patroni_urls;
}

std::string read_token(const std::string& path) {
    if (path.empty()) return {};
    std::ifstream f(path);
    if (!f) {
        spdlog::error("consul_token_file {}: cannot read it; querying Consul without a token", path);
        return {};
    }
    std::stringstream ss;
    ss << f.rdbuf();
    auto t = ss.str();
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
    return t;
}
}  // namespace

ClusterManager::ClusterManager(Runtime& rt, asio::io_context& control)
    : rt_(rt), control_(control), checker_(std::make_unique<health::Checker>(rt)) {
    checker_->start();
}

ClusterManager::~ClusterManager() { stop(); }

void ClusterManager::stop() {
    for (auto& [n, r] : running_)
        if (r.source) r.source->stop();
    running_.clear();
    if (checker_) checker_->stop();
    for (auto& [n, c] : *rt_.clusters()) {
        c->set_wakeup(nullptr);
        c->set_listener(nullptr);
    }
}

void ClusterManager::start_discovery(const std::shared_ptr<routing::Cluster>& c, const config::ClusterConfig& cfg) {
    auto& slot = running_[cfg.name];
    if (slot.source && same_discovery(slot.discovery, cfg.discovery)) return;
    if (slot.source) slot.source->stop();
    slot.source.reset();
    slot.discovery = cfg.discovery;
    std::weak_ptr<routing::Cluster> weak = c;
    discovery::Callbacks cb;
    cb.publish = [weak](routing::Discovered d) {
        if (auto c = weak.lock()) {
            if (c->apply(d)) {
                auto v = c->view();
                spdlog::info("cluster {}: {} says primary {}, replicas {}", c->name(), d.source,
                             v->primary ? routing::to_string(*v->primary) : std::string("none"),
                             d.replicas.size());
            }
        }
    };
    cb.status = [weak](std::string s) {
        if (auto c = weak.lock()) c->set_discovery_status(std::move(s));
    };
    switch (cfg.discovery.type) {
    case config::DiscoveryType::consul:
        slot.source = discovery::start_consul(control_.get_executor(), cfg.discovery,
                                              read_token(cfg.discovery.consul_token_file), cb);
        break;
    case config::DiscoveryType::patroni:
        slot.source = discovery::start_patroni(control_.get_executor(), cfg.discovery,
                                               std::max(0.2, cfg.health_check_period), cb);
        break;
    case config::DiscoveryType::static_:
        break;
    }
}

void ClusterManager::close_idle_where(const std::vector<std::shared_ptr<pool::Pool>>& pools) {
    if (pools.empty()) return;
    for (auto& w : rt_.workers) {
        Worker* wp = w.get();
        asio::post(w->ctx(), [wp, pools] {
            for (auto& p : pools) p->close_idle(*wp);
        });
    }
}

void ClusterManager::on_change(routing::Cluster& c, const routing::View& before, const routing::View& after) {
    // A backend found down: its idle servers are dead too; close them before a client gets one.
    std::vector<routing::HostPort> went_down;
    for (auto& b : after.backends) {
        if (b.health.state != routing::BackendState::down) continue;
        for (auto& o : before.backends)
            if (o.addr == b.addr && o.health.state != routing::BackendState::down) went_down.push_back(b.addr);
    }
    if (!went_down.empty()) {
        std::vector<std::shared_ptr<pool::Pool>> dead;
        for (auto& p : rt_.pools->all()) {
            auto t = p->target();
            if (!t) continue;
            for (auto& a : went_down)
                if (t->host == a.host && t->port == a.port) dead.push_back(p);
        }
        close_idle_where(dead);
    }
    if (before.primary_epoch == after.primary_epoch) return;
    auto old_p = before.primary ? routing::to_string(*before.primary) : std::string("none");
    auto new_p = after.primary ? routing::to_string(*after.primary) : std::string("none");
    spdlog::warn("cluster {}: primary {} -> {}", c.name(), old_p, new_p);
    // Every pool that follows this cluster's primary gets the new target (a new
    // generation: no server and no failed-connect memory carries over), and its
    // idle servers on the old primary close now, on their own workers.
    auto snap = rt_.snapshot();
    std::vector<std::shared_ptr<pool::Pool>> moved;
    for (auto& p : rt_.pools->all()) {
        if (!p->backend().empty()) continue;
        auto it = snap->config->databases.find(p->database());
        if (it == snap->config->databases.end() || it->second.cluster != c.name()) continue;
        pool::apply_config(*p, *snap, it->second);
        moved.push_back(p);
    }
    close_idle_where(moved);
}

void ClusterManager::sync(const config::Config& cfg) {
    auto old = rt_.clusters();
    auto next = std::make_shared<Runtime::ClusterMap>();
    for (auto& [name, cc] : cfg.clusters) {
        std::shared_ptr<routing::Cluster> c;
        if (auto it = old->find(name); it != old->end()) {
            c = it->second;
            c->reconfigure(cc);
        } else {
            c = std::make_shared<routing::Cluster>(cc);
            routing::Cluster* raw = c.get();
            c->set_listener([this, raw](const routing::View& b, const routing::View& a) { on_change(*raw, b, a); });
            checker_->watch(c);
        }
        (*next)[name] = c;
        start_discovery(c, cc);
    }
    for (auto& [name, c] : *old) {
        if (next->count(name)) continue;
        checker_->unwatch(name);
        if (auto it = running_.find(name); it != running_.end()) {
            if (it->second.source) it->second.source->stop();
            running_.erase(it);
        }
        c->set_listener(nullptr);
        c->set_wakeup(nullptr);
    }
    rt_.publish_clusters(next);
}

}  // namespace pgrouter::app
