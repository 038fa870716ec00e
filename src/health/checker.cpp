#include "pgrouter/health/checker.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/routing/cluster.hpp"
#include "pgrouter/session/server_connection.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <thread>

namespace pgrouter::health {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using routing::BackendState;
using routing::Health;
using routing::HostPort;
constexpr auto token = task_token;

std::optional<std::uint64_t> parse_lsn(std::string_view s) {
    auto slash = s.find('/');
    if (slash == std::string_view::npos || slash == 0 || slash + 1 == s.size() || slash > 8 || s.size() - slash - 1 > 8)
        return std::nullopt;
    std::uint64_t hi = 0, lo = 0;
    auto hex = [](std::string_view part, std::uint64_t& out) {
        for (char c : part) {
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0) return false;
            out = out * 16 + static_cast<std::uint64_t>(d);
        }
        return true;
    };
    if (!hex(s.substr(0, slash), hi) || !hex(s.substr(slash + 1), lo)) return std::nullopt;
    return (hi << 32) | lo;
}

namespace {

// One backend, checked over a connection kept open between checks.
struct Probe {
    explicit Probe(asio::io_context& ctx, HostPort a) : addr(std::move(a)), timer(ctx) {}
    HostPort addr;
    Timer timer;
    std::unique_ptr<session::ServerConnection> conn;
    bool stopped = false;
    BackendState last = BackendState::checking;
};

struct Loop {
    explicit Loop(asio::io_context& ctx, std::shared_ptr<routing::Cluster> c) : cluster(std::move(c)), timer(ctx) {}
    std::shared_ptr<routing::Cluster> cluster;
    Timer timer;
    std::map<HostPort, std::shared_ptr<Probe>> probes;
    bool stopped = false;
};

}  // namespace

struct Checker::Impl {
    explicit Impl(app::Runtime& r) : rt(r) {}
    app::Runtime& rt;
    asio::io_context ctx{1};
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
    std::thread thread;
    std::map<std::string, std::shared_ptr<Loop>> loops;  // ctx thread only

    Task<Health> check(std::shared_ptr<Loop> loop, std::shared_ptr<Probe> p);
    Task<void> run_probe(std::shared_ptr<Loop> loop, std::shared_ptr<Probe> p);
    Task<void> run_loop(std::shared_ptr<Loop> loop);
    void stop_loop(Loop& l) {
        l.stopped = true;
        l.timer.cancel();
        for (auto& [a, p] : l.probes) {
            p->stopped = true;
            p->timer.cancel();
            if (p->conn) p->conn->close();
        }
    }
};

Task<Health> Checker::Impl::check(std::shared_ptr<Loop> loop, std::shared_ptr<Probe> p) {
    auto cfg = loop->cluster->config();
    auto snap = rt.snapshot();
    Health h;
    h.last_check = std::chrono::system_clock::now();
    auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<long>(
                                       1000 * std::clamp(cfg->health_check_period * 2, 1.0, 5.0)));
    if (!p->conn || p->conn->broken()) {
        pool::Target t;
        t.host = p->addr.host;
        t.port = p->addr.port;
        t.dbname = cfg->health_check_dbname.empty() ? "postgres" : cfg->health_check_dbname;
        t.user = !cfg->health_check_user.empty()     ? cfg->health_check_user
                 : !snap->config->settings.auth_user.empty() ? snap->config->settings.auth_user
                                                             : "postgres";
        if (auto u = snap->users.find(t.user); u != snap->users.end()) t.credential = u->second;
        auto [conn, res] = co_await session::ServerConnection::connect(rt, t, std::nullopt, deadline);
        if (!conn) {
            h.state = BackendState::down;
            h.error = res.message;
            co_return h;
        }
        p->conn = std::move(conn);
    }
    auto rows = co_await p->conn->query_rows(
        "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
        "ELSE pg_current_wal_lsn() END",
        deadline);
    if (!rows.ok || rows.rows.size() != 1 || rows.rows[0].size() != 2 || !rows.rows[0][0]) {
        p->conn.reset();
        h.state = BackendState::down;
        h.error = rows.ok ? "unexpected health check answer" : rows.message;
        co_return h;
    }
    h.state = BackendState::up;
    h.in_recovery = *rows.rows[0][0] == "t";
    if (rows.rows[0][1]) h.lsn = parse_lsn(*rows.rows[0][1]);
    if (*h.in_recovery && h.lsn) {
        // Lag against the primary's position from its latest check (at most a period old).
        auto v = loop->cluster->view();
        for (auto& b : v->backends)
            if (b.role == routing::Backend::Role::primary && b.health.in_recovery == false && b.health.lsn)
                h.lag_bytes = *b.health.lsn > *h.lsn ? static_cast<std::int64_t>(*b.health.lsn - *h.lsn) : 0;
    }
    co_return h;
}

Task<void> Checker::Impl::run_probe(std::shared_ptr<Loop> loop, std::shared_ptr<Probe> p) {
    while (!p->stopped && !loop->stopped) {
        auto h = co_await check(loop, p);
        if (p->stopped || loop->stopped) break;
        if (h.state != p->last) {
            if (h.state == BackendState::down)
                spdlog::warn("cluster {}: backend {} is down: {}", loop->cluster->name(), routing::to_string(p->addr), h.error);
            else if (p->last == BackendState::down)
                spdlog::info("cluster {}: backend {} is up", loop->cluster->name(), routing::to_string(p->addr));
            p->last = h.state;
        }
        loop->cluster->report_health(p->addr, h);
        auto cfg = loop->cluster->config();
        auto v = loop->cluster->view();
        double period = cfg->health_check_period;
        // While writes wait for this node, look often: a promotion ends the wait.
        if (v->primary == p->addr && !v->writable) period = std::min(period, 0.1);
        p->timer.expires_after(std::chrono::milliseconds(static_cast<long>(period * 1000)));
        co_await p->timer.async_wait(token);
    }
    if (p->conn) p->conn->close();
}

Task<void> Checker::Impl::run_loop(std::shared_ptr<Loop> loop) {
    while (!loop->stopped) {
        auto want = loop->cluster->backends();
        for (auto it = loop->probes.begin(); it != loop->probes.end();) {
            if (std::find(want.begin(), want.end(), it->first) == want.end()) {
                it->second->stopped = true;
                it->second->timer.cancel();
                it = loop->probes.erase(it);
            } else {
                ++it;
            }
        }
        for (auto& a : want) {
            if (loop->probes.count(a)) continue;
            auto p = std::make_shared<Probe>(ctx, a);
            loop->probes[a] = p;
            asio::co_spawn(ctx, run_probe(loop, p), [name = loop->cluster->name()](std::exception_ptr e) {
                if (e) spdlog::error("cluster {}: health probe ended by exception", name);
            });
        }
        loop->timer.expires_after(std::chrono::milliseconds(200));
        co_await loop->timer.async_wait(token);
    }
}

Checker::Checker(app::Runtime& rt) : impl_(std::make_unique<Impl>(rt)) {}

Checker::~Checker() { stop(); }

void Checker::start() {
    impl_->guard.emplace(impl_->ctx.get_executor());
    impl_->thread = std::thread([this] { impl_->ctx.run(); });
}

void Checker::stop() {
    if (!impl_->thread.joinable()) return;
    asio::post(impl_->ctx, [this] {
        for (auto& [n, l] : impl_->loops) impl_->stop_loop(*l);
        impl_->loops.clear();
        impl_->guard.reset();
        // A connect in progress may take up to its deadline: do not wait for it at exit.
        auto t = std::make_shared<Timer>(impl_->ctx, std::chrono::milliseconds(300));
        t->async_wait([this, t](const boost::system::error_code&) { impl_->ctx.stop(); });
    });
    impl_->thread.join();
}

void Checker::watch(std::shared_ptr<routing::Cluster> c) {
    asio::post(impl_->ctx, [this, c] {
        auto& slot = impl_->loops[c->name()];
        if (slot && slot->cluster == c) return;
        if (slot) impl_->stop_loop(*slot);
        slot = std::make_shared<Loop>(impl_->ctx, c);
        std::weak_ptr<Loop> weak = slot;
        c->set_wakeup([this, weak] {
            asio::post(impl_->ctx, [weak] {
                if (auto l = weak.lock())
                    for (auto& [a, p] : l->probes) p->timer.cancel();
            });
        });
        asio::co_spawn(impl_->ctx, impl_->run_loop(slot), [name = c->name()](std::exception_ptr e) {
            if (e) spdlog::error("cluster {}: health checker ended by exception", name);
        });
    });
}

void Checker::unwatch(const std::string& name) {
    asio::post(impl_->ctx, [this, name] {
        if (auto it = impl_->loops.find(name); it != impl_->loops.end()) {
            impl_->stop_loop(*it->second);
            impl_->loops.erase(it);
        }
    });
}

}  // namespace pgrouter::health
