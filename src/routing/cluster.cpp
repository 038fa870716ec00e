#include "pgrouter/routing/cluster.hpp"

#include <algorithm>

namespace pgrouter::routing {

const char* to_string(BackendState s) {
    switch (s) {
    case BackendState::checking: return "checking";
    case BackendState::up: return "up";
    case BackendState::down: return "down";
    case BackendState::lagging: return "lagging";
    }
    return "checking";
}

const char* to_string(Backend::Role r) {
    switch (r) {
    case Backend::Role::primary: return "primary";
    case Backend::Role::replica: return "replica";
    case Backend::Role::unknown: return "unknown";
    }
    return "unknown";
}

namespace {
bool contains(const std::vector<HostPort>& v, const HostPort& a) { return std::find(v.begin(), v.end(), a) != v.end(); }
void erase(std::vector<HostPort>& v, const HostPort& a) { v.erase(std::remove(v.begin(), v.end(), a), v.end()); }
std::string join(const std::vector<HostPort>& v) {
    std::string s;
    for (auto& a : v) s += (s.empty() ? "" : ", ") + to_string(a);
    return s;
}
}  // namespace

Cluster::Cluster(const config::ClusterConfig& cfg) : name_(cfg.name) {
    cfg_.store(std::make_shared<const config::ClusterConfig>(cfg));
    view_.store(std::make_shared<const View>());
    std::shared_ptr<const View> before, after;
    std::lock_guard lk(m_);
    apply_file_locked(cfg);
    publish_locked(before, after);
}

void Cluster::apply_file_locked(const config::ClusterConfig& cfg) {
    Discovered d;
    if (cfg.primary) d.primaries.push_back(*cfg.primary);
    d.replicas = cfg.replicas;
    d.source = cfg.discovery.type == config::DiscoveryType::static_ ? "static" : "config (until discovery answers)";
    apply_locked(d);
    topo_.former.clear();  // the file states the whole topology
    if (!cfg.primary) topo_.hold_reason = "no primary configured";
}

bool Cluster::healthy_writable(const HostPort& a) const {
    auto it = health_.find(a);
    return it != health_.end() && it->second.state == BackendState::up && it->second.in_recovery == false;
}

bool Cluster::apply_locked(const Discovered& d) {
    Topology t = topo_;
    t.hold_reason.clear();
    if (d.primaries.size() == 1) {
        t.primary = d.primaries[0];
    } else if (d.primaries.empty()) {
        t.primary.reset();
        t.hold_reason = "no primary candidate (" + d.source + ")";
    } else if (topo_.primary && contains(d.primaries, *topo_.primary) && healthy_writable(*topo_.primary)) {
        t.primary = topo_.primary;  // split brain, but the one we use still takes writes
    } else {
        t.primary.reset();
        t.hold_reason = "split brain: " + join(d.primaries);
    }
    if (topo_.primary && t.primary != topo_.primary && !contains(t.former, *topo_.primary))
        t.former.push_back(*topo_.primary);
    t.replicas.clear();
    for (auto& r : d.replicas)
        if (r != t.primary && !contains(t.replicas, r)) t.replicas.push_back(r);
    if (t.primary) erase(t.former, *t.primary);
    for (auto& r : t.replicas) erase(t.former, r);
    t.source = d.source;
    t.candidates = d.primaries;
    bool changed = t.primary != topo_.primary || t.replicas != topo_.replicas || t.former != topo_.former ||
                   t.hold_reason != topo_.hold_reason;
    if (t.primary != topo_.primary) ++primary_epoch_;
    topo_ = std::move(t);
    return changed;
}

void Cluster::publish_locked(std::shared_ptr<const View>& before, std::shared_ptr<const View>& after) {
    auto cfg = cfg_.load();
    auto v = std::make_shared<View>();
    v->epoch = ++epoch_;
    v->primary_epoch = primary_epoch_;
    v->primary = topo_.primary;
    auto health_of = [&](const HostPort& a) {
        auto it = health_.find(a);
        return it == health_.end() ? Health{} : it->second;
    };
    if (topo_.primary) {
        Backend b{*topo_.primary, Backend::Role::primary, health_of(*topo_.primary), false};
        v->writable = topo_.hold_reason.empty() && b.health.state == BackendState::up && b.health.in_recovery == false;
        if (!v->writable) {
            if (!topo_.hold_reason.empty()) v->hold_reason = topo_.hold_reason;
            else if (b.health.state == BackendState::checking) v->hold_reason = "primary " + to_string(b.addr) + " not checked yet";
            else if (b.health.state == BackendState::down) v->hold_reason = "primary " + to_string(b.addr) + " is down: " + b.health.error;
            else v->hold_reason = "primary " + to_string(b.addr) + " is in recovery";
        }
        v->backends.push_back(std::move(b));
    } else {
        v->hold_reason = topo_.hold_reason.empty() ? "no primary known" : topo_.hold_reason;
    }
    auto add_replica = [&](const HostPort& a, bool former) {
        Backend b{a, Backend::Role::replica, health_of(a), false};
        if (former && b.health.in_recovery != true) b.role = Backend::Role::unknown;
        if (b.health.state == BackendState::up && b.health.in_recovery == true) {
            bool lagging = cfg->max_replica_lag > 0 && b.health.lag_bytes && *b.health.lag_bytes > cfg->max_replica_lag;
            if (lagging) b.health.state = BackendState::lagging;
            else b.usable_replica = true;
        }
        if (b.usable_replica) v->usable_replicas.push_back(a);
        v->backends.push_back(std::move(b));
    };
    for (auto& r : topo_.replicas) add_replica(r, false);
    for (auto& r : topo_.former) add_replica(r, true);
    // "consul ok index=42", "admin (consul error: ...)": where the topology came from, and
    // the discovery source's own state when it says more.
    if (discovery_status_.empty() || discovery_status_.rfind(topo_.source, 0) == 0)
        v->discovery = discovery_status_.empty() ? topo_.source : discovery_status_;
    else
        v->discovery = topo_.source + " (" + discovery_status_ + ")";
    before = view_.load();
    after = v;
    view_.store(std::move(v), std::memory_order_release);
}

void Cluster::notify(const std::shared_ptr<const View>& before, const std::shared_ptr<const View>& after) {
    std::function<void(const View&, const View&)> f;
    {
        std::lock_guard lk(m_);
        f = listener_;
    }
    if (f && before && after) f(*before, *after);
}

bool Cluster::apply(const Discovered& d) {
    std::shared_ptr<const View> before, after;
    bool changed;
    {
        std::lock_guard lk(m_);
        changed = apply_locked(d);
        publish_locked(before, after);
    }
    notify(before, after);
    if (changed) wake_checker();
    return changed;
}

bool Cluster::set_primary(const HostPort& p) {
    Discovered d;  // one candidate: the operator's word ends a split brain too
    {
        std::lock_guard lk(m_);
        d.replicas = topo_.replicas;
    }
    d.primaries.push_back(p);
    d.source = "admin";
    return apply(d);
}

bool Cluster::set_replicas(const std::vector<HostPort>& r) {
    Discovered d;
    {
        std::lock_guard lk(m_);
        // The primary side stays as it was decided, split brain included.
        d.primaries = topo_.candidates;
    }
    d.replicas = r;
    d.source = "admin";
    return apply(d);
}

void Cluster::report_health(const HostPort& addr, const Health& h) {
    std::shared_ptr<const View> before, after;
    {
        std::lock_guard lk(m_);
        health_[addr] = h;
        publish_locked(before, after);
    }
    notify(before, after);
}

void Cluster::report_not_writable(const HostPort& addr, const std::string& why) {
    std::shared_ptr<const View> before, after;
    {
        std::lock_guard lk(m_);
        auto& h = health_[addr];
        h.in_recovery = true;
        h.error = why;
        publish_locked(before, after);
    }
    notify(before, after);
    wake_checker();
}

void Cluster::set_discovery_status(std::string s) {
    std::shared_ptr<const View> before, after;
    {
        std::lock_guard lk(m_);
        if (discovery_status_ == s) return;
        discovery_status_ = std::move(s);
        publish_locked(before, after);
    }
    notify(before, after);
}

void Cluster::reconfigure(const config::ClusterConfig& cfg) {
    cfg_.store(std::make_shared<const config::ClusterConfig>(cfg));
    std::shared_ptr<const View> before, after;
    {
        std::lock_guard lk(m_);
        // With discovery, the file's addresses are only a starting point: keep what was discovered.
        if (cfg.discovery.type == config::DiscoveryType::static_) apply_file_locked(cfg);
        publish_locked(before, after);
    }
    notify(before, after);
    wake_checker();
}

std::optional<HostPort> Cluster::next_replica() {
    auto v = view();
    if (v->usable_replicas.empty()) return std::nullopt;
    auto i = rr_.fetch_add(1, std::memory_order_relaxed);
    return v->usable_replicas[i % v->usable_replicas.size()];
}

std::vector<HostPort> Cluster::backends() const {
    std::lock_guard lk(m_);
    std::vector<HostPort> out;
    if (topo_.primary) out.push_back(*topo_.primary);
    for (auto& r : topo_.replicas) out.push_back(r);
    for (auto& r : topo_.former) out.push_back(r);
    return out;
}

void Cluster::set_listener(std::function<void(const View&, const View&)> f) {
    std::lock_guard lk(m_);
    listener_ = std::move(f);
}

void Cluster::set_wakeup(std::function<void()> f) {
    std::lock_guard lk(m_);
    wakeup_ = std::move(f);
}

void Cluster::wake_checker() {
    std::function<void()> f;
    {
        std::lock_guard lk(m_);
        f = wakeup_;
    }
    if (f) f();
}

}  // namespace pgrouter::routing
