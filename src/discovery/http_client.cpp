#include "http_client.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string>

namespace pgrouter::discovery {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {
constexpr auto token = asio::as_tuple(asio::use_awaitable);
constexpr std::uint32_t kMaxHeaderBytes = 64 * 1024;

bool lower_prefix(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
    return true;
}
}  // namespace

// ---- URLs -----------------------------------------------------------------------

std::string Url::host_header() const {
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return port == "80" ? h : h + ":" + port;
}

std::optional<Url> parse_url(std::string_view s, std::string& error) {
    Url u;
    u.text = std::string(s);
    if (lower_prefix(s, "https://")) {
        error = "https not supported (use http:// to a local agent): " + u.text;
        return std::nullopt;
    }
    if (!lower_prefix(s, "http://")) {
        error = "expected an http:// URL, got \"" + u.text + "\"";
        return std::nullopt;
    }
    std::string_view rest = s.substr(7);
    auto slash = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, slash);
    std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
    if (authority.find('@') != std::string_view::npos) {
        error = "credentials in the URL are not supported: " + u.text;
        return std::nullopt;
    }
    std::string_view host = authority, port;
    if (!authority.empty() && authority.front() == '[') {
        auto close = authority.find(']');
        if (close == std::string_view::npos) {
            error = "unterminated IPv6 address in " + u.text;
            return std::nullopt;
        }
        host = authority.substr(1, close - 1);
        auto after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') {
                error = "invalid authority in " + u.text;
                return std::nullopt;
            }
            port = after.substr(1);
        }
    } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
        host = authority.substr(0, colon);
        port = authority.substr(colon + 1);
    }
    if (host.empty()) {
        error = "no host in " + u.text;
        return std::nullopt;
    }
    if (port.empty()) port = "80";
    bool digits = port.size() <= 5 && std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || std::stoi(std::string(port)) < 1 || std::stoi(std::string(port)) > 65535) {
        error = "invalid port in " + u.text;
        return std::nullopt;
    }
    auto q = path.find_first_of("?#");
    if (q != std::string_view::npos) path = path.substr(0, q);
    while (!path.empty() && path.back() == '/') path.remove_suffix(1);
    u.host = std::string(host);
    u.port = std::string(port);
    u.base_path = std::string(path);
    return u;
}

std::string url_encode(std::string_view s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

// ---- HttpClient -------------------------------------------------------------------

// One request's I/O objects. The deadline handler holds a shared_ptr to its own
// attempt, so a late expiry can only ever close that attempt's socket.
struct HttpClient::Attempt {
    explicit Attempt(const asio::any_io_executor& ex) : resolver(ex), socket(ex), timer(ex) {}
    tcp::resolver resolver;
    tcp::socket socket;
    asio::steady_timer timer;
    bool timed_out = false;
    bool cancelled = false;

    bool aborted() const { return timed_out || cancelled; }
    void abort() {
        resolver.cancel();
        boost::system::error_code ec;
        socket.close(ec);
    }
};

void HttpClient::cancel() {
    if (!current_) return;
    current_->cancelled = true;
    current_->abort();
}

asio::awaitable<HttpResponse> HttpClient::get(const Url& url, std::string target, const Headers& headers,
                                              std::chrono::milliseconds timeout) {
    auto a = std::make_shared<Attempt>(ex_);
    current_ = a;
    a->timer.expires_after(timeout);
    a->timer.async_wait([a](const boost::system::error_code& ec) {
        if (ec) return;  // cancelled: the request finished first
        a->timed_out = true;
        a->abort();
    });
    HttpResponse res = co_await run(a, url, target, headers);
    a->timer.cancel();
    boost::system::error_code ignored;
    a->socket.close(ignored);
    if (current_ == a) current_.reset();
    if (a->timed_out) {
        res = HttpResponse();
        res.error = "no answer within " + detail::seconds_text(timeout) + " from " + url.host_header();
    } else if (a->cancelled) {
        res = HttpResponse();
        res.error = "cancelled";
    }
    co_return res;
}

asio::awaitable<HttpResponse> HttpClient::run(std::shared_ptr<Attempt> a, const Url& url, const std::string& target,
                                              const Headers& headers) {
    HttpResponse res;
    auto where = url.host_header();
    auto [rec, results] = co_await a->resolver.async_resolve(url.host, url.port, token);
    if (a->aborted()) co_return res;
    if (rec) {
        res.error = "cannot resolve " + url.host + ": " + rec.message();
        co_return res;
    }
    auto [cec, ep] = co_await asio::async_connect(a->socket, results, token);
    if (a->aborted()) co_return res;
    if (cec) {
        res.error = "cannot connect to " + where + ": " + cec.message();
        co_return res;
    }
    boost::system::error_code opt_ec;
    a->socket.set_option(tcp::no_delay(true), opt_ec);
    a->socket.set_option(asio::socket_base::keep_alive(true), opt_ec);

    http::request<http::empty_body> req(http::verb::get, target, 11);
    req.set(http::field::host, where);
    req.set(http::field::user_agent, "pgrouter");
    req.set(http::field::accept, "application/json");
    req.set(http::field::connection, "close");
    for (const auto& [name, value] : headers) req.set(name, value);
    auto [wec, wn] = co_await http::async_write(a->socket, req, token);
    if (a->aborted()) co_return res;
    if (wec) {
        res.error = "sending the request to " + where + ": " + wec.message();
        co_return res;
    }

    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.header_limit(kMaxHeaderBytes);
    parser.body_limit(kMaxBodyBytes);
    auto [rdec, rn] = co_await http::async_read(a->socket, buffer, parser, token);
    if (a->aborted()) co_return res;
    if (rdec) {
        if (rdec == http::error::body_limit)
            res.error = "answer from " + where + " larger than " + std::to_string(kMaxBodyBytes >> 20) + " MB";
        else if (rdec == http::error::end_of_stream || rdec == asio::error::eof)
            res.error = where + " closed the connection without an answer";
        else
            res.error = "reading the answer from " + where + ": " + rdec.message();
        co_return res;
    }
    auto& msg = parser.get();
    res.status = static_cast<int>(msg.result_int());
    if (auto it = msg.find("X-Consul-Index"); it != msg.end()) res.consul_index = std::string(it->value());
    if (auto it = msg.find("X-Consul-KnownLeader"); it != msg.end())
        res.consul_known_leader = std::string(it->value());
    res.body = std::move(msg.body());
    co_return res;
}

// ---- shared loop pieces -------------------------------------------------------------

namespace detail {

std::chrono::milliseconds Backoff::next(std::mt19937_64& rng) {
    ++failures_;
    auto d = first_;
    for (int i = 1; i < failures_ && d < cap_; ++i) d *= 2;
    d = std::min(d, cap_);
    std::uniform_int_distribution<std::int64_t> dist(d.count() / 2, d.count());
    return std::chrono::milliseconds(dist(rng));
}

Clock::duration RateLimiter::take(Clock::time_point now) {
    if (last_) {
        double elapsed = std::chrono::duration<double>(now - *last_).count();
        tokens_ = std::min(burst_, tokens_ + elapsed * rate_);
    }
    last_ = now;
    tokens_ -= 1.0;
    if (tokens_ >= 0) return Clock::duration::zero();
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(-tokens_ / rate_));
}

namespace {
using routing::HostPort;
bool hp_less(const HostPort& a, const HostPort& b) {
    return a.host != b.host ? a.host < b.host : a.port < b.port;
}
}  // namespace

bool same_topology(const routing::Discovered& a, const routing::Discovered& b) {
    auto prim = [](const routing::Discovered& d) {
        auto v = d.primaries;
        std::sort(v.begin(), v.end(), hp_less);
        return v;
    };
    using Rep = std::pair<HostPort, std::optional<std::int64_t>>;
    auto reps = [](const routing::Discovered& d) {
        std::vector<Rep> v;
        for (std::size_t i = 0; i < d.replicas.size(); ++i)
            v.emplace_back(d.replicas[i], i < d.replica_lag.size() ? d.replica_lag[i] : std::nullopt);
        std::sort(v.begin(), v.end(), [](const Rep& x, const Rep& y) {
            if (!(x.first == y.first)) return hp_less(x.first, y.first);
            return x.second < y.second;
        });
        return v;
    };
    return prim(a) == prim(b) && reps(a) == reps(b);
}

std::string describe(const routing::Discovered& d) {
    std::string s = "primaries=[";
    for (std::size_t i = 0; i < d.primaries.size(); ++i) s += (i ? ", " : "") + routing::to_string(d.primaries[i]);
    s += "] replicas=[";
    for (std::size_t i = 0; i < d.replicas.size(); ++i) {
        s += (i ? ", " : "") + routing::to_string(d.replicas[i]);
        if (i < d.replica_lag.size() && d.replica_lag[i]) s += " (lag " + std::to_string(*d.replica_lag[i]) + ")";
    }
    return s + "]";
}

std::string body_excerpt(std::string_view body) {
    auto nl = body.find_first_of("\r\n");
    if (nl != std::string_view::npos) body = body.substr(0, nl);
    std::string out;
    for (char c : body.substr(0, 200)) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
    if (body.size() > 200) out += "...";
    return out;
}

std::string seconds_text(std::chrono::milliseconds d) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(d.count()) / 1000.0);
    return buf;
}

LoopState::LoopState(asio::any_io_executor ex, Callbacks callbacks)
    : strand(asio::make_strand(ex)), http(strand), sleeper(strand), cb(std::move(callbacks)),
      rng(std::random_device{}()) {}

void LoopState::on_stop() {
    stopped = true;
    http.cancel();
    sleeper.cancel();
}

asio::awaitable<bool> LoopState::sleep(Clock::duration d) {
    if (halted()) co_return false;
    if (d > Clock::duration::zero()) {
        sleeper.expires_after(d);
        auto [ec] = co_await sleeper.async_wait(token);
        (void)ec;
    }
    co_return !halted();
}

asio::awaitable<bool> LoopState::pace() {
    auto d = limiter.take(Clock::now());
    co_return co_await sleep(d);
}

void LoopState::publish(const routing::Discovered& d) {
    if (halted() || !cb.publish) return;
    cb.publish(d);
}

void LoopState::status(std::string s) {
    if (halted() || s == last_status) return;
    last_status = s;
    if (cb.status) cb.status(std::move(s));
}

void LoopSource::stop() {
    st_->stop_requested.store(true, std::memory_order_relaxed);
    asio::post(st_->strand, [st = st_] { st->on_stop(); });
}

void log_loop_exit(std::exception_ptr e, const char* what) {
    if (!e) return;
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        spdlog::error("{}: stopped by an exception: {}", what, ex.what());
    } catch (...) {
        spdlog::error("{}: stopped by an unknown exception", what);
    }
}

}  // namespace detail

}  // namespace pgrouter::discovery
