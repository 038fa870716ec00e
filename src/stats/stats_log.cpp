// The stats line logged every stats_period, as PgBouncer's.
#include "pgrouter/stats/metrics.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>

namespace pgrouter::stats {

namespace {

namespace asio = boost::asio;

// Counters only grow; a pool that went away makes a difference negative: clamp.
std::uint64_t diff(std::uint64_t to, std::uint64_t from) { return to > from ? to - from : 0; }

Totals sum_all(app::Runtime& rt) {
    Totals t;
    for (auto& p : rt.pools->all()) {
        auto pt = p->totals();
        t.xact_count += pt.xact_count;
        t.query_count += pt.query_count;
        t.bytes_received += pt.bytes_received;
        t.bytes_sent += pt.bytes_sent;
        t.xact_time_us += pt.xact_time_us;
        t.query_time_us += pt.query_time_us;
        t.wait_time_us += pt.wait_time_us;
        t.server_assignments += pt.server_assignments;
    }
    return t;
}

Task<void> stats_logger(app::Runtime& rt) {
    Timer t(co_await asio::this_coro::executor);
    auto prev = sum_all(rt);
    auto prev_at = std::chrono::steady_clock::now();
    for (;;) {
        double period = rt.snapshot()->config->settings.stats_period;
        t.expires_after(std::chrono::duration_cast<Timer::duration>(
            std::chrono::duration<double>(period > 0 ? period : 60.0)));
        auto [ec] = co_await t.async_wait(task_token);
        if (ec) co_return;
        auto now = std::chrono::steady_clock::now();
        auto cur = sum_all(rt);
        if (rt.snapshot()->config->settings.log_stats)
            spdlog::info("{}", stats_line(prev, cur, std::chrono::duration<double>(now - prev_at).count()));
        prev = cur;
        prev_at = now;
    }
}

}  // namespace

std::string stats_line(const Totals& from, const Totals& to, double seconds) {
    auto rate = [&](std::uint64_t Totals::*f) {
        return seconds > 0 ? static_cast<std::uint64_t>(static_cast<double>(diff(to.*f, from.*f)) / seconds) : 0;
    };
    auto avg = [&](std::uint64_t Totals::*time, std::uint64_t Totals::*count) {
        auto n = diff(to.*count, from.*count);
        return n ? diff(to.*time, from.*time) / n : 0;
    };
    return fmt::format("stats: {} xacts/s, {} queries/s, in {} B/s, out {} B/s, xact {} us, query {} us, wait {} us",
                       rate(&Totals::xact_count), rate(&Totals::query_count), rate(&Totals::bytes_received),
                       rate(&Totals::bytes_sent), avg(&Totals::xact_time_us, &Totals::xact_count),
                       avg(&Totals::query_time_us, &Totals::query_count),
                       avg(&Totals::wait_time_us, &Totals::server_assignments));
}

void start_stats_log(app::Runtime& rt) {
    if (rt.workers.empty()) return;
    asio::co_spawn(rt.workers[0]->ctx(), stats_logger(rt), [](std::exception_ptr e) {
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            spdlog::error("stats log stopped: {}", ex.what());
        }
    });
}

}  // namespace pgrouter::stats
