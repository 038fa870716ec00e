// Patroni discovery without Consul: GET <url>/cluster every `period` seconds on
// the first of patroni_urls that answers (consul-patroni.md §5.2, §5.4); the
// topology is computed by routing::select_patroni.
#include "pgrouter/discovery/discovery.hpp"

#include "http_client.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <cmath>

namespace pgrouter::discovery {

namespace asio = boost::asio;

namespace {

// Patroni's REST API answers from memory; its own non-blocking DCS reads use retry_timeout/3.
constexpr auto kRequestTimeout = std::chrono::milliseconds(3000);

struct PatroniState : detail::LoopState {
    PatroniState(asio::any_io_executor ex, Callbacks callbacks) : LoopState(std::move(ex), std::move(callbacks)) {}

    std::vector<Url> urls;
    Clock::duration period{std::chrono::seconds(1)};
    std::string name;
};

asio::awaitable<void> patroni_loop(std::shared_ptr<PatroniState> st) {
    auto& s = *st;
    std::size_t preferred = 0;  // the URL that answered last is asked first
    std::optional<routing::Discovered> last;
    bool failing = false;
    const Headers no_headers;
    for (;;) {
        if (!co_await s.pace()) co_return;
        const auto started = Clock::now();
        std::optional<routing::Discovered> d;
        std::string errors;
        std::size_t answered = 0;
        for (std::size_t k = 0; k < s.urls.size() && !d; ++k) {
            const std::size_t i = (preferred + k) % s.urls.size();
            const Url& u = s.urls[i];
            auto r = co_await s.http.get(u, u.base_path + "/cluster", no_headers, kRequestTimeout);
            if (s.halted()) co_return;
            std::string err;
            if (!r.ok()) {
                err = r.error;
            } else if (r.status != 200) {
                err = "HTTP " + std::to_string(r.status);
                if (auto e = detail::body_excerpt(r.body); !e.empty()) err += ": " + e;
            } else {
                std::string perr;
                d = routing::select_patroni(r.body, perr);
                if (!d) err = "invalid answer: " + perr;
            }
            if (d) {
                answered = i;
            } else {
                if (!errors.empty()) errors += "; ";
                errors += u.text + ": " + err;
            }
        }

        if (!d) {
            auto delay = s.backoff.next(s.rng);
            if (!failing) {
                spdlog::warn("{}: {}; keeping the last topology, retrying with backoff", s.name, errors);
                failing = true;
            } else {
                spdlog::debug("{}: still failing: {}", s.name, errors);
            }
            s.status("patroni error: " + errors + " (retry in " + detail::seconds_text(delay) + ")");
            if (!co_await s.sleep(delay)) co_return;
            continue;
        }

        if (failing) {
            spdlog::info("{}: answering again after {} failed attempts", s.name, s.backoff.failures());
            failing = false;
        }
        s.backoff.reset();
        if (answered != preferred && s.urls.size() > 1)
            spdlog::info("{}: now asking {} first", s.name, s.urls[answered].text);
        preferred = answered;
        if (!last || !detail::same_topology(*last, *d)) {
            spdlog::info("{}: {}", s.name, detail::describe(*d));
            last = d;
            s.publish(*d);
        }
        s.status("patroni ok " + s.urls[answered].text);
        if (!co_await s.sleep(started + s.period - Clock::now())) co_return;
    }
}

}  // namespace

std::unique_ptr<Source> start_patroni(asio::any_io_executor ex, const config::DiscoveryConfig& cfg, double period,
                                      Callbacks cb) {
    auto st = std::make_shared<PatroniState>(std::move(ex), std::move(cb));
    std::string list;
    for (const auto& u : cfg.patroni_urls) list += (list.empty() ? "" : ",") + u;
    st->name = "patroni at " + list;
    double p = std::isfinite(period) ? std::clamp(period, 0.1, 3600.0) : 1.0;
    st->period = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(p));
    std::string errors;
    for (const auto& text : cfg.patroni_urls) {
        std::string err;
        if (auto u = parse_url(text, err)) {
            st->urls.push_back(std::move(*u));
        } else {
            spdlog::error("{}: patroni_urls: {}", st->name, err);
            errors += (errors.empty() ? "" : "; ") + err;
        }
    }
    if (st->urls.empty()) {
        if (errors.empty()) errors = "patroni_urls is empty";
        asio::post(st->strand, [st, msg = "patroni error: " + errors] { st->status(msg); });
        return std::make_unique<detail::LoopSource>(st);
    }
    asio::co_spawn(st->strand, patroni_loop(st), [](std::exception_ptr e) { detail::log_loop_exit(e, "patroni discovery"); });
    return std::make_unique<detail::LoopSource>(st);
}

}  // namespace pgrouter::discovery
