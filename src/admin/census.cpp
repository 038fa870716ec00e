// Gathers sessions and servers from every worker, each on its own thread.
#include "pgrouter/admin/census.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/admin/admin.hpp"
#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/session/server_connection.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <arpa/inet.h>
#include <iterator>
#include <mutex>
#include <netinet/in.h>
#include <sys/socket.h>
#include <openssl/ssl.h>

namespace pgrouter::admin {

namespace {
constexpr auto token = task_token;

// "1.2.3.4:5" / "[::1]:5" / "::1:5" / "unix" -> addr and port.
Endpoint split_peer(const std::string& peer, int unix_port) {
    if (peer == "unix" || peer.empty() || peer == "?") return {peer.empty() ? "?" : peer, unix_port};
    auto colon = peer.rfind(':');
    if (colon == std::string::npos) return {peer, 0};
    std::string addr = peer.substr(0, colon);
    if (addr.size() > 2 && addr.front() == '[' && addr.back() == ']') addr = addr.substr(1, addr.size() - 2);
    return {addr, std::atoi(peer.c_str() + colon + 1)};
}

Endpoint sock_endpoint(int fd, bool local, int unix_port) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    auto* sa = reinterpret_cast<sockaddr*>(&ss);
    int rc = fd < 0 ? -1 : local ? ::getsockname(fd, sa, &len) : ::getpeername(fd, sa, &len);
    if (rc != 0) return {"?", 0};
    char buf[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET) {
        auto* in = reinterpret_cast<sockaddr_in*>(&ss);
        ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
        return {buf, ntohs(in->sin_port)};
    }
    if (ss.ss_family == AF_INET6) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
        ::inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
        return {buf, ntohs(in6->sin6_port)};
    }
    return {"unix", unix_port};
}

std::chrono::system_clock::time_point wall(std::chrono::steady_clock::time_point t) {
    auto age = std::chrono::steady_clock::now() - t;
    return std::chrono::system_clock::now() - std::chrono::duration_cast<std::chrono::system_clock::duration>(age);
}

std::string tls_text(session::ServerConnection& s) {
    SSL* ssl = s.stream().is_tls() ? s.stream().ssl_handle() : nullptr;
    if (!ssl) return {};
    return fmt::format("{}/{}", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}

std::optional<std::string> param(session::ServerConnection& s, std::string_view name) {
    auto i = session::tracked_index(name);
    if (!i) return std::nullopt;
    auto v = s.params().get(*i);
    return v ? std::optional<std::string>(std::string(*v)) : std::nullopt;
}

ServerRow describe(session::ServerConnection& s, const pool::Pool& p, int unix_port) {
    ServerRow r;
    r.id = s.id();
    r.database = p.database();
    r.pool_user = p.user();
    auto target = p.target();
    r.login_user = target ? target->user : p.user();
    r.fd = s.stream().native_handle();
    r.remote = sock_endpoint(r.fd, false, s.port());
    if (r.remote.addr == "unix") r.remote.port = s.port();
    r.local = sock_endpoint(r.fd, true, unix_port);
    r.connect_time = wall(s.created());
    r.request_time = wall(s.last_used());
    r.close_needed = s.broken() || (target && s.generation() != target->generation);
    r.remote_pid = s.backend_pid();
    r.cancel_key = s.backend_key();
    r.tls = tls_text(s);
    r.client_encoding = param(s, "client_encoding");
    r.std_strings = param(s, "standard_conforming_strings");
    r.datestyle = param(s, "DateStyle");
    r.timezone = param(s, "TimeZone");
    return r;
}

// Runs on worker w.
Census collect(app::Worker& w) {
    Census c;
    auto& rt = w.runtime();
    auto snap = rt.snapshot();
    int port = snap->config->settings.listen_port;
    double check_delay = snap->config->settings.server_check_delay;
    for (auto& weak : w.sessions()) {
        auto s = weak.lock();
        if (!s) continue;
        ClientRow row;
        row.info = s->info();
        row.admin = is_admin_database(row.info.database);
        if (row.admin) row.info.state = "active";  // a console is always being served
        row.fd = s->client_fd();
        row.remote = split_peer(row.info.peer, port);
        row.local = sock_endpoint(row.fd, true, port);
        if (auto* server = s->server(); server && s->pool()) {
            auto sr = describe(*server, *s->pool(), port);
            sr.state = "active";
            sr.client_id = row.info.id;
            sr.client_fd = row.fd;
            sr.application_name = row.info.application_name;
            row.server_fd = sr.fd;
            c.servers.push_back(std::move(sr));
        }
        c.clients.push_back(std::move(row));
    }
    auto now = std::chrono::steady_clock::now();
    for (auto& p : rt.pools->all()) {
        for (auto& server : p->idle_servers(w.index())) {
            auto sr = describe(*server, *p, port);
            bool used = check_delay >= 0 && now - server->last_used() > std::chrono::duration<double>(check_delay);
            sr.state = used ? "used" : "idle";
            c.servers.push_back(std::move(sr));
        }
    }
    return c;
}
}  // namespace

std::string ptr_text(std::uint64_t id) { return fmt::format("0x{:x}", id); }

Task<bool> on_every_worker(app::Worker& self, const WorkerFn& fn,
                                      std::chrono::milliseconds limit) {
    struct Join {
        explicit Join(asio::io_context& ctx, int n) : done(ctx), left(n) {}
        Timer done;  // on self: cancelled when the last worker reports
        std::mutex m;
        int left;
    };
    auto& workers = self.runtime().workers;
    auto join = std::make_shared<Join>(self.ctx(), static_cast<int>(workers.size()));
    auto shared_fn = std::make_shared<WorkerFn>(fn);
    for (auto& wp : workers) {
        app::Worker* w = wp.get();
        asio::post(w->ctx(), [join, shared_fn, w] {
            (*shared_fn)(*w);
            std::lock_guard lk(join->m);
            if (--join->left == 0) asio::post(join->done.get_executor(), [join] { join->done.cancel(); });
        });
    }
    auto deadline = std::chrono::steady_clock::now() + limit;
    join->done.expires_at(deadline);
    for (;;) {
        {
            std::lock_guard lk(join->m);
            if (join->left == 0) co_return true;
        }
        if (std::chrono::steady_clock::now() >= deadline) co_return false;
        co_await join->done.async_wait(token);
    }
}

Task<Census> take_census(app::Worker& self) {
    auto& workers = self.runtime().workers;
    struct Parts {
        std::mutex m;
        std::vector<Census> parts;
    };
    auto parts = std::make_shared<Parts>();
    parts->parts.resize(workers.size());
    WorkerFn fn = [parts](app::Worker& w) {
        auto c = collect(w);
        std::lock_guard lk(parts->m);
        parts->parts[static_cast<std::size_t>(w.index())] = std::move(c);
    };
    bool all = co_await on_every_worker(self, fn);
    Census out;
    out.complete = all;
    std::lock_guard lk(parts->m);
    for (auto& p : parts->parts) {
        std::move(p.clients.begin(), p.clients.end(), std::back_inserter(out.clients));
        std::move(p.servers.begin(), p.servers.end(), std::back_inserter(out.servers));
    }
    std::sort(out.clients.begin(), out.clients.end(),
              [](const ClientRow& a, const ClientRow& b) { return a.info.id < b.info.id; });
    std::sort(out.servers.begin(), out.servers.end(),
              [](const ServerRow& a, const ServerRow& b) { return a.id < b.id; });
    co_return out;
}

}  // namespace pgrouter::admin
