// metrics_listen: a small HTTP/1.1 server (Beast) on worker 0 answering
// GET /metrics. Requests are bounded in size and time; keep-alive is honoured.
#include "pgrouter/stats/metrics.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/config/config.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>

namespace pgrouter::stats {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto token = task_token;

constexpr std::size_t kMaxRequestBytes = 8 * 1024;    // headers; a GET has no body
constexpr auto kReadDeadline = std::chrono::seconds(10);  // a whole request, or keep-alive idle time
constexpr auto kWriteDeadline = std::chrono::seconds(10);
constexpr int kMaxConnections = 32;                    // more scrapers than this is a leak or an attack

struct Server {
    Server(app::Worker& w, tcp::acceptor a) : worker(w), acceptor(std::move(a)) {}
    app::Worker& worker;
    tcp::acceptor acceptor;
    int connections = 0;  // worker 0's thread only
};

void log_exception(std::exception_ptr e, const char* what) {
    if (!e) return;
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        spdlog::error("{}: {}", what, ex.what());
    }
}

http::response<http::string_body> answer(const http::request<http::empty_body>& req, std::string metrics_body,
                                         bool is_metrics) {
    http::response<http::string_body> res;
    res.version(req.version());
    res.keep_alive(req.keep_alive());
    res.set(http::field::server, "pgrouter");
    if (is_metrics) {
        res.result(http::status::ok);
        res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
        res.body() = std::move(metrics_body);
    } else if (req.target().substr(0, req.target().find('?')) == "/metrics") {
        res.result(http::status::method_not_allowed);
        res.set(http::field::allow, "GET");
        res.set(http::field::content_type, "text/plain; charset=utf-8");
        res.body() = "method not allowed\n";
    } else {
        res.result(http::status::not_found);
        res.set(http::field::content_type, "text/plain; charset=utf-8");
        res.body() = "not found; try /metrics\n";
    }
    res.prepare_payload();
    return res;
}

Task<void> serve(std::shared_ptr<Server> srv, tcp::socket sock) {
    beast::tcp_stream stream(std::move(sock));
    beast::flat_buffer buffer(kMaxRequestBytes);
    for (;;) {
        http::request_parser<http::empty_body> parser;
        parser.header_limit(static_cast<std::uint32_t>(kMaxRequestBytes));
        stream.expires_after(kReadDeadline);
        auto [rec, rn] = co_await http::async_read(stream, buffer, parser, token);
        if (rec) break;  // closed, timed out, too large or malformed
        auto& req = parser.get();
        auto target = req.target();
        bool is_metrics = req.method() == http::verb::get && target.substr(0, target.find('?')) == "/metrics";
        std::string body;
        if (is_metrics) {
            stream.expires_never();  // a slow census must not count against the client
            body = co_await render_metrics(srv->worker);
        }
        auto res = answer(req, std::move(body), is_metrics);
        stream.expires_after(kWriteDeadline);
        auto [wec, wn] = co_await http::async_write(stream, res, token);
        if (wec || !res.keep_alive()) break;
    }
    boost::system::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

Task<void> accept_loop(std::shared_ptr<Server> srv) {
    for (;;) {
        auto [ec, sock] = co_await srv->acceptor.async_accept(token);
        if (ec == asio::error::operation_aborted) co_return;
        if (ec) {
            spdlog::warn("metrics: accept failed: {}", ec.message());
            Timer t(srv->worker.ctx(), std::chrono::milliseconds(100));
            co_await t.async_wait(token);
            continue;
        }
        if (srv->connections >= kMaxConnections) continue;  // closed by the socket's destructor
        ++srv->connections;
        asio::co_spawn(srv->worker.ctx(), serve(srv, std::move(sock)), [srv](std::exception_ptr e) {
            --srv->connections;
            log_exception(e, "metrics: connection");
        });
    }
}

}  // namespace

std::string start_metrics_server(app::Runtime& rt, const std::string& listen) {
    if (listen.empty() || rt.workers.empty()) return {};
    auto hp = config::parse_host_port(listen);
    if (!hp || hp->host.empty() || hp->host[0] == '/')
        return "metrics_listen: invalid address \"" + listen + "\"; expected host:port";
    auto& w = *rt.workers[0];
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(hp->host, ec);
    if (ec) {
        tcp::resolver r(w.ctx());
        auto res = r.resolve(hp->host, std::to_string(hp->port), ec);
        if (ec || res.empty()) return "metrics_listen: cannot resolve " + hp->host + ": " + ec.message();
        addr = res.begin()->endpoint().address();
    }
    tcp::endpoint ep(addr, static_cast<unsigned short>(hp->port));
    tcp::acceptor acc(w.ctx());
    acc.open(ep.protocol(), ec);
    if (!ec) acc.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acc.bind(ep, ec);
    if (!ec) acc.listen(64, ec);
    if (ec) return "metrics_listen: cannot listen on " + listen + ": " + ec.message();
    auto srv = std::make_shared<Server>(w, std::move(acc));
    asio::co_spawn(w.ctx(), accept_loop(srv), [](std::exception_ptr e) { log_exception(e, "metrics: server stopped"); });
    spdlog::info("metrics on http://{}/metrics", listen);
    return {};
}

}  // namespace pgrouter::stats
