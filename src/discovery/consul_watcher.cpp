// Consul discovery: one blocking query loop on GET /v1/health/service/<name>
// (unfiltered), the topology computed client-side by routing::select_consul.
// Blocking-query contract: consul-patroni.md §1.3; hung-agent timeouts: §7.5.
#include "pgrouter/discovery/discovery.hpp"

#include "http_client.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <charconv>
#include <cmath>

namespace pgrouter::discovery {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

// A request without `index` answers at once: a short deadline finds a hung agent fast.
constexpr auto kImmediateTimeout = std::chrono::milliseconds(5000);
constexpr auto kTimeoutMargin = std::chrono::milliseconds(5000);

struct ConsulState : detail::LoopState {
    ConsulState(asio::any_io_executor ex, const config::DiscoveryConfig& c, std::string t, Callbacks callbacks)
        : LoopState(std::move(ex), std::move(callbacks)), cfg(c), acl_token(std::move(t)) {}

    config::DiscoveryConfig cfg;
    std::string acl_token;
    Url url;
    Headers headers;
    std::string path_and_dc;  // "/v1/health/service/<name>" [+ "?dc=..."]
    std::chrono::milliseconds wait{60000};
    std::string wait_param;   // "60s" | "1500ms"
    std::string name;         // for logs: "consul <service> at <url>"
};

bool parse_u64(std::string_view s, std::uint64_t& out) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    if (s.empty()) return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
}

std::string target_for(const ConsulState& s, std::uint64_t index, bool blocking) {
    std::string t = s.url.base_path + s.path_and_dc;
    if (blocking) {
        t += s.path_and_dc.find('?') == std::string::npos ? '?' : '&';
        t += "index=" + std::to_string(index) + "&wait=" + s.wait_param;
    }
    return t;
}

// An empty answer with index 1 is how some Consul versions answer a revoked ACL
// token (hashicorp/consul#20790): unknown, not "the cluster is gone" (§7.5).
bool suspicious_empty(const routing::Discovered& d, std::uint64_t new_index,
                      const std::optional<routing::Discovered>& last) {
    return new_index <= 1 && d.primaries.empty() && d.replicas.empty() && last &&
           (!last->primaries.empty() || !last->replicas.empty());
}

asio::awaitable<void> consul_loop(std::shared_ptr<ConsulState> st) {
    auto& s = *st;
    std::uint64_t index = 0;
    bool blocking = false;  // the next request may carry index/wait
    std::optional<routing::Discovered> last;
    bool failing = false;
    for (;;) {
        if (!co_await s.pace()) co_return;
        const bool block = blocking && index > 0;
        auto timeout = block ? s.wait + s.wait / 16 + kTimeoutMargin : std::min(kImmediateTimeout, s.wait + kTimeoutMargin);
        auto r = co_await s.http.get(s.url, target_for(s, index, block), s.headers, timeout);
        if (s.halted()) co_return;

        std::string err;
        std::uint64_t new_index = 0;
        std::optional<routing::Discovered> d;
        if (!r.ok()) {
            err = r.error;
        } else if (r.status != 200) {
            err = "HTTP " + std::to_string(r.status);
            if (auto e = detail::body_excerpt(r.body); !e.empty()) err += ": " + e;
            if (r.status == 403) err += " (check the ACL token)";
        } else if (!r.consul_index || !parse_u64(*r.consul_index, new_index)) {
            err = "answer without a valid X-Consul-Index header";
        } else {
            std::string perr;
            d = routing::select_consul(r.body, s.cfg.consul_primary_tags, s.cfg.consul_replica_tags, perr);
            if (!d) err = "invalid answer: " + perr;
            else if (suspicious_empty(*d, new_index, last)) err = "empty answer with index " + std::to_string(new_index) +
                                                                   " (ACL token revoked?); keeping the last topology";
        }

        if (!err.empty()) {
            blocking = false;  // the first answer after a failure must come at once
            auto delay = s.backoff.next(s.rng);
            if (!failing) {
                spdlog::warn("{}: {}; keeping the last topology, retrying with backoff", s.name, err);
                failing = true;
            } else {
                spdlog::debug("{}: still failing: {}", s.name, err);
            }
            s.status("consul error: " + err + " (retry in " + detail::seconds_text(delay) + ")");
            if (!co_await s.sleep(delay)) co_return;
            continue;
        }

        if (new_index < index) {
            spdlog::info("{}: X-Consul-Index went backwards ({} -> {}); starting over", s.name, index, new_index);
            index = 0;
            blocking = false;
        } else {
            index = std::max<std::uint64_t>(new_index, 1);  // index 0 would never block
            blocking = true;
        }
        if (failing) {
            spdlog::info("{}: answering again after {} failed attempts", s.name, s.backoff.failures());
            failing = false;
        }
        s.backoff.reset();
        if (!last || !detail::same_topology(*last, *d)) {
            spdlog::info("{}: {}", s.name, detail::describe(*d));
            last = d;
            s.publish(*d);
        }
        std::string text = "consul ok index=" + std::to_string(index);
        if (r.consul_known_leader && *r.consul_known_leader == "false") text += " (no known leader: stale)";
        s.status(std::move(text));
    }
}

std::string format_wait(std::chrono::milliseconds w) {
    if (w.count() % 1000 == 0) return std::to_string(w.count() / 1000) + "s";
    return std::to_string(w.count()) + "ms";
}

}  // namespace

std::unique_ptr<Source> start_consul(asio::any_io_executor ex, const config::DiscoveryConfig& cfg, std::string token,
                                     Callbacks cb) {
    auto st = std::make_shared<ConsulState>(std::move(ex), cfg, std::move(token), std::move(cb));
    st->name = "consul " + cfg.consul_service + " at " + cfg.consul_url;
    double wait_s = cfg.consul_wait > 0 && std::isfinite(cfg.consul_wait) ? std::min(cfg.consul_wait, 600.0) : 60.0;
    st->wait = std::max(std::chrono::milliseconds(1), std::chrono::milliseconds(std::llround(wait_s * 1000)));
    st->wait_param = format_wait(st->wait);
    st->path_and_dc = "/v1/health/service/" + url_encode(cfg.consul_service);
    if (!cfg.consul_datacenter.empty()) st->path_and_dc += "?dc=" + url_encode(cfg.consul_datacenter);
    if (!st->acl_token.empty()) st->headers.emplace_back("X-Consul-Token", st->acl_token);
    std::string err;
    auto url = parse_url(cfg.consul_url, err);
    if (!url) {
        spdlog::error("{}: {}", st->name, err);
        asio::post(st->strand, [st, msg = "consul error: consul_url: " + err] { st->status(msg); });
        return std::make_unique<detail::LoopSource>(st);
    }
    st->url = std::move(*url);
    asio::co_spawn(st->strand, consul_loop(st), [](std::exception_ptr e) { detail::log_loop_exit(e, "consul discovery"); });
    return std::make_unique<detail::LoopSource>(st);
}

}  // namespace pgrouter::discovery
