// The stats_period sampler behind SHOW STATS averages.
#include "pgrouter/admin/state.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/admin/admin.hpp"
#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

namespace pgrouter::admin {

namespace {
namespace asio = boost::asio;

void add(stats::Totals& a, const stats::Totals& b) {
    a.xact_count += b.xact_count;
    a.query_count += b.query_count;
    a.bytes_received += b.bytes_received;
    a.bytes_sent += b.bytes_sent;
    a.xact_time_us += b.xact_time_us;
    a.query_time_us += b.query_time_us;
    a.wait_time_us += b.wait_time_us;
    a.server_assignments += b.server_assignments;
}

// Counters only grow; a pool that went away makes a difference negative: clamp.
std::uint64_t diff(std::uint64_t to, std::uint64_t from) { return to > from ? to - from : 0; }

Task<void> sampler(app::Runtime& rt, std::shared_ptr<State> st, IoExecutor ex) {
    Timer t(ex);
    for (;;) {
        double period = rt.snapshot()->config->settings.stats_period;
        t.expires_after(std::chrono::duration_cast<Timer::duration>(
            std::chrono::duration<double>(period > 0 ? period : 60.0)));
        auto [ec] = co_await t.async_wait(task_token);
        if (ec) co_return;
        st->sample(rt);
    }
}
}  // namespace

std::map<std::string, stats::Totals> totals_by_database(app::Runtime& rt) {
    std::map<std::string, stats::Totals> out;
    for (auto& p : rt.pools->all()) add(out[p->database()], p->totals());
    return out;
}

Averages average(const stats::Totals& from, const stats::Totals& to, double seconds) {
    Averages a;
    if (seconds <= 0) return a;
    auto per_sec = [&](std::uint64_t t, std::uint64_t f) {
        return static_cast<std::uint64_t>(static_cast<double>(diff(t, f)) / seconds);
    };
    auto per = [](std::uint64_t total, std::uint64_t n) { return n ? total / n : 0; };
    a.xact_count = per_sec(to.xact_count, from.xact_count);
    a.query_count = per_sec(to.query_count, from.query_count);
    a.bytes_received = per_sec(to.bytes_received, from.bytes_received);
    a.bytes_sent = per_sec(to.bytes_sent, from.bytes_sent);
    a.server_assignments = per_sec(to.server_assignments, from.server_assignments);
    a.xact_time = per(diff(to.xact_time_us, from.xact_time_us), diff(to.xact_count, from.xact_count));
    a.query_time = per(diff(to.query_time_us, from.query_time_us), diff(to.query_count, from.query_count));
    a.wait_time = per(diff(to.wait_time_us, from.wait_time_us), diff(to.server_assignments, from.server_assignments));
    return a;
}

State::State(app::Runtime& rt) {
    last_.at = Clock::now();
    last_.dbs = totals_by_database(rt);
}

void State::sample(app::Runtime& rt) {
    Sample s{Clock::now(), totals_by_database(rt)};
    std::lock_guard lk(m_);
    prev_ = std::move(last_);
    last_ = std::move(s);
    have_period_ = true;
}

std::map<std::string, Averages> State::averages() const {
    std::lock_guard lk(m_);
    std::map<std::string, Averages> out;
    if (!have_period_) return out;
    double secs = std::chrono::duration<double>(last_.at - prev_.at).count();
    static const stats::Totals zero{};
    for (auto& [db, to] : last_.dbs) {
        auto it = prev_.dbs.find(db);
        out[db] = average(it == prev_.dbs.end() ? zero : it->second, to, secs);
    }
    return out;
}

State& state(app::Runtime& rt) {
    start(rt);
    return *rt.admin_state.load();
}

void start(app::Runtime& rt) {
    if (rt.admin_state.load()) return;
    auto fresh = std::make_shared<State>(rt);
    std::shared_ptr<State> none;
    if (!rt.admin_state.compare_exchange_strong(none, fresh)) return;  // another thread won
    if (rt.workers.empty()) return;
    auto ex = rt.workers[0]->ctx().get_executor();
    asio::co_spawn(ex, sampler(rt, fresh, ex), [](std::exception_ptr e) {
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            spdlog::error("admin stats sampler stopped: {}", ex.what());
        }
    });
}

}  // namespace pgrouter::admin
