#include "pgrouter/app/app.hpp"
#include "pgrouter/util/task.hpp"

#include "cluster_manager.hpp"

#include "pgrouter/admin/admin.hpp"
#include "pgrouter/app/logging.hpp"
#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/session/errors.hpp"
#include "pgrouter/session/external_auth.hpp"
#include "pgrouter/stats/metrics.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <malloc.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <future>
#include <cstdio>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace pgrouter::app {

namespace {
constexpr auto token = task_token;
using tcp = asio::ip::tcp;
using unix_proto = asio::local::stream_protocol;

// systemd Type=notify: one datagram to $NOTIFY_SOCKET.
void sd_notify(const char* msg) {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (!path || !*path) return;
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
    if (sa.sun_path[0] == '@') sa.sun_path[0] = '\0';
    ::sendto(fd, msg, std::strlen(msg), 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    ::close(fd);
}
}  // namespace

struct App::Impl {
    Options opts;
    Runtime rt;
    asio::io_context control{1};
    std::vector<std::unique_ptr<tcp::acceptor>> tcp_acceptors;  // owned by their worker's thread once running
    std::unique_ptr<unix_proto::acceptor> unix_acceptor;
    std::string unix_path;
    std::uint64_t generation = 1;
    std::unique_ptr<ClusterManager> clusters;
    int signals_seen = 0;
    std::uint64_t trimmed_at = 0;  // client_frees at the last malloc_trim
    int exit_code = 0;

    Task<void> accept_tcp(Worker& w, tcp::acceptor& acc) {
        for (;;) {
            auto [ec, sock] = co_await acc.async_accept(w.ctx(), token);
            if (ec == asio::error::operation_aborted || rt.shutting_down.load()) co_return;
            if (ec) {
                spdlog::warn("accept failed: {}", ec.message());
                Timer t(w.ctx(), std::chrono::milliseconds(100));
                co_await t.async_wait(token);
                continue;
            }
            net::Stream client(std::move(sock));
            if (auto tec = client.tune(rt.snapshot()->tcp))
                spdlog::debug("client socket: cannot set TCP keepalive options: {}", tec.message());
            session::ClientSession::start(w, std::move(client));
        }
    }

    Task<void> accept_unix(Worker& w, unix_proto::acceptor& acc) {
        std::size_t next = 0;
        for (;;) {
            auto [ec, sock] = co_await acc.async_accept(w.ctx(), token);
            if (ec == asio::error::operation_aborted || rt.shutting_down.load()) co_return;
            if (ec) {
                Timer t(w.ctx(), std::chrono::milliseconds(100));
                co_await t.async_wait(token);
                continue;
            }
            // Spread unix clients over the workers like the kernel spreads TCP ones.
            auto& target = *rt.workers[next++ % rt.workers.size()];
            if (&target == &w) {
                session::ClientSession::start(w, net::Stream(std::move(sock)));
                continue;
            }
            boost::system::error_code rec;
            int fd = sock.release(rec);
            if (rec) continue;
            asio::post(target.ctx(), [&target, fd] {
                session::ClientSession::start(target, net::Stream(net::unix_socket(target.ctx(), unix_proto(), fd)));
            });
        }
    }

    // Pools nobody uses any more are freed: those of databases served through "*" (not
    // named in the configuration, not paused) after autodb_idle_timeout without a
    // client, those of databases a RELOAD removed once their last client left, and any
    // other pool without clients and servers for pool_idle_timeout.
    void free_unused_pools(std::chrono::steady_clock::time_point now) {
        auto snap = rt.snapshot();
        auto& cfg = *snap->config;
        auto& st = cfg.settings;
        auto autodb = [&](const pool::Pool& p) {
            return !cfg.databases.contains(p.database()) && cfg.fallback_database && st.autodb_idle_timeout > 0;
        };
        auto limit = [&](const pool::Pool& p) -> double {
            if (!p.backend().empty() || rt.is_paused(p.database())) return -1;
            if (!cfg.databases.contains(p.database()) && !cfg.fallback_database) return 0;  // removed
            if (autodb(p)) return st.autodb_idle_timeout;
            // pool_idle_timeout counts only while the pool has no server either (its
            // idle servers go by server_idle_timeout, or are kept by min_pool_size).
            return st.pool_idle_timeout > 0 && p.counts().total == 0 ? st.pool_idle_timeout : -1;
        };
        for (auto& p : rt.pools->free_unused(now, limit)) {
            if (!cfg.databases.contains(p->database()) && !cfg.fallback_database)
                spdlog::info("pool {}/{} freed: its database was removed from the configuration", p->database(),
                             p->user());
            else if (autodb(*p))
                spdlog::info("pool {}/{} freed: unused for autodb_idle_timeout ({} s)", p->database(), p->user(),
                             st.autodb_idle_timeout);
            else
                spdlog::info("pool {}/{} freed: no client and no server for pool_idle_timeout ({} s)", p->database(),
                             p->user(), st.pool_idle_timeout);
        }
    }

    Task<void> janitor(Worker& w) {
        Timer t(w.ctx());
        for (;;) {
            t.expires_after(std::chrono::seconds(1));
            co_await t.async_wait(token);
            auto now = std::chrono::steady_clock::now();
            auto& list = w.sessions();
            for (std::size_t i = 0; i < list.size();) {
                if (auto s = list[i].lock()) {
                    s->janitor(now);
                    ++i;
                } else {
                    list[i] = std::move(list.back());
                    list.pop_back();
                }
            }
            if (list.capacity() > 64 && list.size() < list.capacity() / 4) list.shrink_to_fit();
            // After a burst of clients leaving or going idle, the whole pages their
            // blocks freed inside the heap go back to the OS. malloc_trim walks the
            // heap (0.5 ms at 8,000 idle clients, a few ms after a burst of logins):
            // the control thread does it, not an event loop that serves clients.
            if (w.index() == 0) {
                auto frees = rt.client_frees.load(std::memory_order_relaxed);
                if (frees - trimmed_at >= 1000) {
                    trimmed_at = frees;
                    asio::post(control, [] { ::malloc_trim(0); });
                }
            }
            if (w.index() == 0) free_unused_pools(now);
            auto pools = rt.pools->all();
            for (auto& p : pools) p->janitor(w);
            // A pool held back by max_db_connections / max_user_connections takes an
            // idle server from another pool under the same limit.
            for (auto& p : pools) {
                if (!p->blocked_by_shared_limit()) continue;
                for (auto& other : pools) {
                    if (other == p || (&other->db_limit() != &p->db_limit() && &other->user_limit() != &p->user_limit()))
                        continue;
                    if (other->evict_one_idle(w)) break;
                }
            }
        }
    }

    bool bind_listeners(const config::Config& cfg) {
        auto& st = cfg.settings;
        std::vector<std::string> addrs;
        for (auto& a : st.listen_addr) {
            if (a == "*") {
                addrs.push_back("0.0.0.0");
                addrs.push_back("::");
            } else {
                addrs.push_back(a);
            }
        }
        for (auto& a : addrs) {
            boost::system::error_code ec;
            auto addr = asio::ip::make_address(a, ec);
            if (ec) {
                tcp::resolver r(control);
                auto res = r.resolve(a, std::to_string(st.listen_port), ec);
                if (ec || res.empty()) {
                    spdlog::critical("listen_addr: cannot resolve {}: {}", a, ec.message());
                    return false;
                }
                addr = res.begin()->endpoint().address();
            }
            tcp::endpoint ep(addr, static_cast<unsigned short>(st.listen_port));
            // SO_REUSEPORT would let us share a port another pgrouter already
            // listens on: probe with a plain bind first.
            {
                tcp::acceptor probe(control);
                probe.open(ep.protocol(), ec);
                if (!ec) probe.set_option(tcp::acceptor::reuse_address(true), ec);
                if (!ec && addr.is_v6()) probe.set_option(asio::ip::v6_only(true), ec);
                if (!ec) probe.bind(ep, ec);
                if (ec) {
                    spdlog::critical("cannot listen on {}:{}: {}", a, st.listen_port, ec.message());
                    return false;
                }
            }
            for (auto& w : rt.workers) {
                auto acc = std::make_unique<tcp::acceptor>(w->ctx());
                acc->open(ep.protocol(), ec);
                if (!ec) acc->set_option(tcp::acceptor::reuse_address(true), ec);
                if (!ec) {
                    int one = 1;
                    ::setsockopt(acc->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
                    if (addr.is_v6()) acc->set_option(asio::ip::v6_only(true), ec);
                    int defer = 45;  // seconds, as PgBouncer
                    if (st.tcp_defer_accept &&
                        ::setsockopt(acc->native_handle(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof defer) != 0)
                        ec.assign(errno, boost::system::system_category());
                }
                if (!ec) acc->bind(ep, ec);
                if (!ec) acc->listen(st.listen_backlog, ec);
                if (ec) {
                    spdlog::critical("cannot listen on {}:{}: {}", a, st.listen_port, ec.message());
                    return false;
                }
                tcp_acceptors.push_back(std::move(acc));
            }
        }
        if (!st.unix_socket_dir.empty()) {
            unix_path = st.unix_socket_dir + "/.s.PGSQL." + std::to_string(st.listen_port);
            boost::system::error_code ec;
            ::unlink(unix_path.c_str());
            unix_acceptor = std::make_unique<unix_proto::acceptor>(rt.workers[0]->ctx());
            unix_acceptor->open(unix_proto(), ec);
            if (!ec) unix_acceptor->bind(unix_proto::endpoint(unix_path), ec);
            if (!ec) unix_acceptor->listen(st.listen_backlog, ec);
            if (ec) {
                spdlog::critical("cannot listen on unix socket {}: {}", unix_path, ec.message());
                return false;
            }
            if (::chmod(unix_path.c_str(), static_cast<mode_t>(st.unix_socket_mode)) != 0) {
                spdlog::critical("unix_socket_mode: cannot chmod {}: {}", unix_path, std::strerror(errno));
                return false;
            }
            if (!st.unix_socket_group.empty()) {
                struct group* g = ::getgrnam(st.unix_socket_group.c_str());
                if (!g || ::chown(unix_path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0) {
                    spdlog::critical("unix_socket_group: cannot give {} to group {}: {}", unix_path,
                                     st.unix_socket_group, g ? std::strerror(errno) : "no such group");
                    return false;
                }
            }
        }
        return true;
    }

    // Re-reads the file; a file with any error changes nothing.
    std::string reload() {
        auto loaded = config::load_file(opts.config_path);
        std::string errors;
        for (auto& p : loaded.problems) {
            if (p.warning)
                spdlog::warn("{}", p.to_string());
            else
                errors += p.to_string() + "\n";
        }
        if (!loaded.ok()) {
            spdlog::error("RELOAD failed, keeping the running configuration:\n{}", errors);
            return errors.empty() ? "invalid configuration" : errors;
        }
        std::vector<std::string> serrs;
        auto snap = build_snapshot(std::make_shared<const config::Config>(std::move(*loaded.config)), ++generation, serrs);
        if (!serrs.empty()) {
            for (auto& e : serrs) errors += e + "\n";
            spdlog::error("RELOAD failed, keeping the running configuration:\n{}", errors);
            return errors;
        }
        rt.publish(snap);
        clusters->sync(*snap->config);
        pool::reconfigure_all(*rt.pools, *snap);
        // logs: a changed logfile or log_format applies now; the file is reopened either way
        if (auto e = reopen_logs(snap->config->settings); !e.empty()) spdlog::error("{}", e);
        spdlog::info("configuration reloaded from {}", opts.config_path);
        return {};
    }

    void begin_shutdown(bool immediate) {
        if (immediate) {
            spdlog::info("immediate shutdown");
            for (auto& w : rt.workers) w->ctx().stop();
            control.stop();
            return;
        }
        spdlog::info("safe shutdown: waiting for transactions to finish (shutdown_timeout {}s)",
                     rt.snapshot()->config->settings.shutdown_timeout);
        rt.shutting_down.store(true);
        for (std::size_t i = 0; i < rt.workers.size(); ++i) {
            auto& w = *rt.workers[i];
            asio::post(w.ctx(), [this, i] {
                boost::system::error_code ec;
                for (std::size_t k = i; k < tcp_acceptors.size(); k += rt.workers.size()) tcp_acceptors[k]->close(ec);
                if (i == 0 && unix_acceptor) unix_acceptor->close(ec);
            });
        }
        asio::co_spawn(control, wait_for_drain(), asio::detached);
    }

    Task<void> wait_for_drain() {
        auto limit = rt.snapshot()->config->settings.shutdown_timeout;
        auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(limit > 0 ? limit : 1e9);
        Timer t(control);
        while (rt.client_count.load() > 0 && std::chrono::steady_clock::now() < deadline) {
            t.expires_after(std::chrono::milliseconds(100));
            co_await t.async_wait(token);
        }
        if (auto left = rt.client_count.load(); left > 0) {
            // shutdown_timeout is up: end what is left as PostgreSQL ends sessions at
            // its shutdown (57P01 to the client; a server mid-transaction is closed,
            // which rolls the transaction back), then give the sessions a moment to
            // write that and close.
            spdlog::warn("shutdown_timeout reached with {} client(s) connected: closing them", left);
            for (auto& w : rt.workers) {
                asio::post(w->ctx(), [&w = *w] {
                    for (auto& weak : w.sessions())
                        if (auto s = weak.lock())
                            s->kill(session::sqlstate::admin_shutdown, "pgrouter is shutting down (shutdown_timeout)");
                });
            }
            auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(1);
            while (rt.client_count.load() > 0 && std::chrono::steady_clock::now() < grace) {
                t.expires_after(std::chrono::milliseconds(20));
                co_await t.async_wait(token);
            }
        }
        for (auto& w : rt.workers) w->ctx().stop();
        control.stop();
    }

    Task<void> signals() {
        asio::signal_set sigs(control, SIGHUP, SIGINT, SIGTERM);
        sigs.add(SIGQUIT);
        sigs.add(SIGUSR1);
        sigs.add(SIGUSR2);
        for (;;) {
            auto [ec, sig] = co_await sigs.async_wait(token);
            if (ec) co_return;
            if (sig == SIGHUP) {
                spdlog::info("SIGHUP: reloading");
                // logs: a successful reload reopened the logfile; logrotate needs it reopened anyway
                if (!reload().empty())
                    if (auto e = reopen_logs(rt.snapshot()->config->settings); !e.empty()) spdlog::error("{}", e);
            } else if (sig == SIGQUIT) {
                begin_shutdown(true);
            } else if (sig == SIGUSR1) {
                spdlog::info("SIGUSR1: PAUSE (new transactions wait until SIGUSR2 or RESUME)");
                rt.set_paused("*", true);
            } else if (sig == SIGUSR2) {
                spdlog::info("SIGUSR2: RESUME");
                rt.set_paused("*", false);
                rt.suspended.store(false);  // also ends a SUSPEND, as in PgBouncer
                session::wake_suspended(rt);
            } else {
                begin_shutdown(++signals_seen > 1);
            }
        }
    }
};

App::App(Options opts, config::Config cfg) : impl_(std::make_unique<Impl>()) {
    impl_->opts = std::move(opts);
    if (auto e = setup_logging(cfg.settings, impl_->opts.verbosity); !e.empty()) {  // logs
        spdlog::critical("{}", e);
        impl_->exit_code = 2;
        return;
    }
    std::vector<std::string> errors;
    auto snap = build_snapshot(std::make_shared<const config::Config>(std::move(cfg)), impl_->generation, errors);
    if (!errors.empty()) {
        for (auto& e : errors) spdlog::critical("{}", e);
        impl_->exit_code = 1;
        return;
    }
    impl_->rt.publish(snap);
}

App::~App() = default;

int App::run() {
    auto& d = *impl_;
    if (d.exit_code) return d.exit_code;
    auto snap = d.rt.snapshot();
    auto& st = snap->config->settings;
    int n = st.workers > 0 ? st.workers : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int i = 0; i < n; ++i) d.rt.workers.push_back(std::make_unique<Worker>(d.rt, i));
    ::signal(SIGPIPE, SIG_IGN);
    if (!d.bind_listeners(*snap->config)) return 2;
    // metrics: served from worker 0
    if (auto e = stats::start_metrics_server(d.rt, st.metrics_listen); !e.empty()) {
        spdlog::critical("{}", e);
        return 2;
    }
    if (d.opts.daemonize) {
        if (::daemon(1, 0) != 0) {
            spdlog::critical("cannot daemonize: {}", std::strerror(errno));
            return 2;
        }
    }
    if (!st.pidfile.empty()) {
        if (FILE* f = std::fopen(st.pidfile.c_str(), "w")) {
            std::fprintf(f, "%d\n", ::getpid());
            std::fclose(f);
        } else {
            spdlog::critical("cannot write pidfile {}: {}", st.pidfile, std::strerror(errno));
            return 2;
        }
    }
    for (std::size_t i = 0; i < d.tcp_acceptors.size(); ++i) {
        auto& w = *d.rt.workers[i % d.rt.workers.size()];
        asio::co_spawn(w.ctx(), d.accept_tcp(w, *d.tcp_acceptors[i]), asio::detached);
    }
    if (d.unix_acceptor) asio::co_spawn(d.rt.workers[0]->ctx(), d.accept_unix(*d.rt.workers[0], *d.unix_acceptor), asio::detached);
    for (auto& w : d.rt.workers) asio::co_spawn(w->ctx(), d.janitor(*w), asio::detached);
    d.clusters = std::make_unique<ClusterManager>(d.rt, d.control);
    d.clusters->sync(*snap->config);
    // Admin commands arrive on worker threads; reload and shutdown run on the control thread.
    d.rt.reload = [&d] {
        std::promise<std::string> p;
        auto f = p.get_future();
        asio::post(d.control, [&d, &p] { p.set_value(d.reload()); });
        return f.get();
    };
    d.rt.shutdown = [&d](bool immediate) { asio::post(d.control, [&d, immediate] { d.begin_shutdown(immediate); }); };
    asio::co_spawn(d.control, d.signals(), asio::detached);
    admin::start(d.rt);  // SHOW STATS averages from the first period on
    stats::start_stats_log(d.rt);  // logs: the stats line every stats_period
    for (auto& w : d.rt.workers) w->start();
    spdlog::info("pgrouter listening on port {} with {} workers", st.listen_port, n);
    sd_notify("READY=1");
    d.control.run();
    d.clusters->stop();
    for (auto& w : d.rt.workers) {
        w->ctx().stop();
        w->join();
    }
    session::stop_external_checks();  // a PAM/LDAP check still running must not answer a dead loop
    if (!d.unix_path.empty()) ::unlink(d.unix_path.c_str());
    if (!st.pidfile.empty()) ::unlink(st.pidfile.c_str());
    spdlog::info("pgrouter stopped");
    return 0;
}

}  // namespace pgrouter::app
