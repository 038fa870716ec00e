// A minimal HTTP/1.1 GET client (Boost.Beast over plain TCP) for the discovery
// sources, plus the small pieces both watch loops share (backoff, rate limit,
// the stoppable loop state). Private to src/discovery/.
#pragma once

#include "pgrouter/discovery/discovery.hpp"
#include "pgrouter/routing/topology.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgrouter::discovery {

using Clock = std::chrono::steady_clock;

// http://host[:port][/base/path]. IPv6 literals in brackets.
struct Url {
    std::string host;       // without brackets
    std::string port;       // "80" when absent
    std::string base_path;  // "" or "/prefix" (never a trailing slash)
    std::string text;       // as configured, for messages

    std::string host_header() const;
};

// nullopt + `error` for anything but http://... ("https not supported" for https).
std::optional<Url> parse_url(std::string_view s, std::string& error);

// Percent-encodes a path segment or query value (RFC 3986 unreserved kept).
std::string url_encode(std::string_view s);

struct HttpResponse {
    std::string error;  // "" = an HTTP answer arrived (any status); else why not
    int status = 0;
    std::string body;
    std::optional<std::string> consul_index;         // X-Consul-Index
    std::optional<std::string> consul_known_leader;  // X-Consul-KnownLeader

    bool ok() const { return error.empty(); }
};

using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr std::size_t kMaxBodyBytes = 16 * 1024 * 1024;

// One request at a time, one TCP connection per request ("Connection: close").
// Every request has a deadline: a steady_timer that closes the socket when it
// fires. Use from a single strand.
class HttpClient {
public:
    explicit HttpClient(boost::asio::any_io_executor ex) : ex_(std::move(ex)) {}

    // GET `target` (path + query) from url's host. Never throws for I/O errors.
    // `url` and `headers` are referenced until the call completes.
    boost::asio::awaitable<HttpResponse> get(const Url& url, std::string target, const Headers& headers,
                                             std::chrono::milliseconds timeout);
    // Aborts the request in flight, if any (its answer has error "cancelled").
    void cancel();

    struct Attempt;

private:
    boost::asio::awaitable<HttpResponse> run(std::shared_ptr<Attempt> a, const Url& url, const std::string& target,
                                             const Headers& headers);

    boost::asio::any_io_executor ex_;
    std::shared_ptr<Attempt> current_;
};

namespace detail {

// Capped exponential backoff with jitter: 250 ms, 500 ms, 1 s, ... capped at 5 s,
// each drawn uniformly from [d/2, d].
class Backoff {
public:
    Backoff(std::chrono::milliseconds first = std::chrono::milliseconds(250),
            std::chrono::milliseconds cap = std::chrono::seconds(5))
        : first_(first), cap_(cap) {}
    std::chrono::milliseconds next(std::mt19937_64& rng);
    void reset() { failures_ = 0; }
    int failures() const { return failures_; }

private:
    std::chrono::milliseconds first_, cap_;
    int failures_ = 0;
};

// Token bucket: `burst` requests at once, then `per_second`. take() consumes one
// token and says how long to wait for it (zero when one was there).
class RateLimiter {
public:
    RateLimiter(double burst, double per_second) : burst_(burst), rate_(per_second), tokens_(burst) {}
    Clock::duration take(Clock::time_point now);

private:
    double burst_, rate_, tokens_;
    std::optional<Clock::time_point> last_;
};

// Equal as routing input: the same primaries, replicas and lags, whatever the order.
bool same_topology(const routing::Discovered& a, const routing::Discovered& b);
// "primaries=[a:1] replicas=[b:2 (lag 10), c:3]" for logs.
std::string describe(const routing::Discovered& d);
// First line of an error body, at most 200 characters.
std::string body_excerpt(std::string_view body);
std::string seconds_text(std::chrono::milliseconds d);  // "1.2s"

// What a watch loop shares with its Source: everything runs on `strand`; stop()
// may come from any thread. The loop coroutine holds a shared_ptr to this.
struct LoopState {
    LoopState(boost::asio::any_io_executor ex, Callbacks callbacks);
    virtual ~LoopState() = default;

    boost::asio::strand<boost::asio::any_io_executor> strand;
    HttpClient http;
    boost::asio::steady_timer sleeper;
    Callbacks cb;
    std::mt19937_64 rng;
    Backoff backoff;
    RateLimiter limiter{3, 10};  // a burst of 3, then at most 10 requests/s
    std::atomic<bool> stop_requested{false};
    bool stopped = false;  // strand only
    std::string last_status;

    // Strand only: ends the loop (cancels the request in flight and any sleep).
    void on_stop();
    // Sleeps unless stopped; false when the loop must end.
    boost::asio::awaitable<bool> sleep(Clock::duration d);
    // Waits for a rate-limiter token; false when the loop must end.
    boost::asio::awaitable<bool> pace();
    void publish(const routing::Discovered& d);
    void status(std::string s);  // only when it changed
    bool halted() const { return stopped || stop_requested.load(std::memory_order_relaxed); }
};

// The Source handed to callers: stop() posts on_stop to the strand; the
// destructor stops too.
class LoopSource : public Source {
public:
    explicit LoopSource(std::shared_ptr<LoopState> st) : st_(std::move(st)) {}
    ~LoopSource() override { stop(); }
    void stop() override;

private:
    std::shared_ptr<LoopState> st_;
};

// co_spawn handler: logs what escaped a loop.
void log_loop_exit(std::exception_ptr e, const char* what);

}  // namespace detail

}  // namespace pgrouter::discovery
