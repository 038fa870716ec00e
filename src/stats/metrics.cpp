// The Prometheus exposition text: pools, clients by state, per-database
// counters and histograms, process figures.
#include "pgrouter/stats/metrics.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/admin/admin.hpp"
#include "pgrouter/admin/census.hpp"
#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/session/client_session.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <dirent.h>
#include <iterator>
#include <map>
#include <mutex>
#include <unistd.h>

namespace pgrouter::stats {

namespace {

namespace asio = boost::asio;
using PoolKey = std::pair<std::string, std::string>;  // database, user

struct ClientStates {
    std::uint64_t active = 0, waiting = 0, idle = 0;
};
using ClientCounts = std::map<PoolKey, ClientStates>;

// Runs on worker w: its sessions by pool and state. Clients still logging in
// belong to no pool yet and are left out (pgrouter_client_connections has them).
ClientCounts count_clients(app::Worker& w) {
    ClientCounts out;
    for (auto& weak : w.sessions()) {
        auto s = weak.lock();
        if (!s) continue;
        auto info = s->info();
        // A console is always being served (as in SHOW CLIENTS).
        std::string_view state = admin::is_admin_database(info.database) ? "active" : info.state;
        if (state == "login") continue;
        auto& c = out[{info.database, info.pool_user}];
        if (state == "active")
            ++c.active;
        else if (state == "waiting")
            ++c.waiting;
        else
            ++c.idle;
    }
    return out;
}

void add(Totals& a, const Totals& b) {
    for (std::size_t i = 0; i < kBucketCount; ++i) {
        a.xact_hist[i] += b.xact_hist[i];
        a.wait_hist[i] += b.wait_hist[i];
    }
    a.xact_count += b.xact_count;
    a.query_count += b.query_count;
    a.bytes_received += b.bytes_received;
    a.bytes_sent += b.bytes_sent;
    a.xact_time_us += b.xact_time_us;
    a.query_time_us += b.query_time_us;
    a.wait_time_us += b.wait_time_us;
    a.server_assignments += b.server_assignments;
}

void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

template <class V>
void sample(std::string& out, std::string_view name, std::string_view labels, V value) {
    if (labels.empty())
        fmt::format_to(std::back_inserter(out), "{} {}\n", name, value);
    else
        fmt::format_to(std::back_inserter(out), "{}{{{}}} {}\n", name, labels, value);
}

std::string pool_labels(const PoolKey& k) {
    return fmt::format("database=\"{}\",user=\"{}\"", label_value(k.first), label_value(k.second));
}

std::uint64_t open_fds() {
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return 0;
    std::uint64_t n = 0;
    while (auto* e = ::readdir(d))
        if (e->d_name[0] != '.') ++n;
    ::closedir(d);
    return n > 0 ? n - 1 : 0;  // the directory's own descriptor
}

std::uint64_t resident_bytes() {
    FILE* f = std::fopen("/proc/self/statm", "re");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    int got = std::fscanf(f, "%llu %llu", &size, &resident);
    std::fclose(f);
    if (got != 2) return 0;
    return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

struct PoolRow {
    pool::Pool::Counts counts;
    int size = 0;
};

void append_pools(std::string& out, const std::map<PoolKey, PoolRow>& pools, const ClientCounts& clients) {
    family(out, "pgrouter_pool_server_connections", "gauge", "Server connections of the pool by state.");
    for (auto& [k, p] : pools) {
        auto l = pool_labels(k);
        sample(out, "pgrouter_pool_server_connections", l + ",state=\"active\"",
               std::max(0, p.counts.total - p.counts.idle));
        sample(out, "pgrouter_pool_server_connections", l + ",state=\"idle\"", p.counts.idle);
    }
    family(out, "pgrouter_pool_client_connections", "gauge", "Client connections of the pool by state.");
    for (auto& [k, c] : clients) {
        auto l = pool_labels(k);
        sample(out, "pgrouter_pool_client_connections", l + ",state=\"active\"", c.active);
        sample(out, "pgrouter_pool_client_connections", l + ",state=\"waiting\"", c.waiting);
        sample(out, "pgrouter_pool_client_connections", l + ",state=\"idle\"", c.idle);
    }
    family(out, "pgrouter_pool_clients_waiting", "gauge", "Clients waiting for a server connection of the pool.");
    for (auto& [k, p] : pools) sample(out, "pgrouter_pool_clients_waiting", pool_labels(k), p.counts.waiting);
    family(out, "pgrouter_pool_max_wait_seconds", "gauge", "How long the oldest waiting client has waited.");
    for (auto& [k, p] : pools) sample(out, "pgrouter_pool_max_wait_seconds", pool_labels(k), p.counts.max_wait_seconds);
    family(out, "pgrouter_pool_size", "gauge", "Configured pool size (server connections).");
    for (auto& [k, p] : pools) sample(out, "pgrouter_pool_size", pool_labels(k), p.size);
}

void append_databases(std::string& out, const std::map<std::string, Totals>& dbs) {
    struct Counter {
        const char* name;
        const char* help;
        std::uint64_t Totals::*field;
        double scale;
    };
    static constexpr Counter counters[] = {
        {"pgrouter_transactions_total", "Transactions served.", &Totals::xact_count, 1},
        {"pgrouter_queries_total", "Queries served.", &Totals::query_count, 1},
        {"pgrouter_received_bytes_total", "Bytes received from clients.", &Totals::bytes_received, 1},
        {"pgrouter_sent_bytes_total", "Bytes sent to clients.", &Totals::bytes_sent, 1},
        {"pgrouter_server_assignments_total", "Times a server connection was assigned to a client.",
         &Totals::server_assignments, 1},
        {"pgrouter_query_duration_seconds_total", "Time spent in queries.", &Totals::query_time_us, 1e-6},
    };
    for (auto& c : counters) {
        family(out, c.name, "counter", c.help);
        for (auto& [db, t] : dbs) {
            auto l = fmt::format("database=\"{}\"", label_value(db));
            if (c.scale == 1)
                sample(out, c.name, l, t.*c.field);
            else
                sample(out, c.name, l, static_cast<double>(t.*c.field) * c.scale);
        }
    }
    family(out, "pgrouter_transaction_duration_seconds", "histogram", "Transaction duration.");
    for (auto& [db, t] : dbs)
        append_histogram(out, "pgrouter_transaction_duration_seconds", fmt::format("database=\"{}\"", label_value(db)),
                         t.xact_hist, static_cast<double>(t.xact_time_us) / 1e6);
    family(out, "pgrouter_server_wait_duration_seconds", "histogram", "Time clients waited for a server connection.");
    for (auto& [db, t] : dbs)
        append_histogram(out, "pgrouter_server_wait_duration_seconds", fmt::format("database=\"{}\"", label_value(db)),
                         t.wait_hist, static_cast<double>(t.wait_time_us) / 1e6);
}

void append_process(std::string& out, app::Runtime& rt) {
    family(out, "pgrouter_client_connections", "gauge", "Client connections, in every state.");
    sample(out, "pgrouter_client_connections", "", rt.client_count.load());
    family(out, "pgrouter_open_fds", "gauge", "Open file descriptors.");
    sample(out, "pgrouter_open_fds", "", open_fds());
    family(out, "pgrouter_resident_memory_bytes", "gauge", "Resident memory size.");
    sample(out, "pgrouter_resident_memory_bytes", "", resident_bytes());
    family(out, "pgrouter_up", "gauge", "1 while pgrouter answers.");
    sample(out, "pgrouter_up", "", 1);
}

}  // namespace

std::string label_value(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

void append_histogram(std::string& out, std::string_view name, std::string_view labels,
                      const std::uint64_t (&counts)[kBucketCount], double sum_seconds) {
    auto it = std::back_inserter(out);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < kBucketCount; ++i) {
        cumulative += counts[i];
        if (i + 1 < kBucketCount)
            fmt::format_to(it, "{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, kBuckets[i], cumulative);
        else
            fmt::format_to(it, "{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels, cumulative);
    }
    fmt::format_to(it, "{}_sum{{{}}} {}\n", name, labels, sum_seconds);
    fmt::format_to(it, "{}_count{{{}}} {}\n", name, labels, cumulative);
}

Task<std::string> render_metrics(app::Worker& self) {
    auto& rt = self.runtime();
    struct Parts {
        std::mutex m;
        ClientCounts counts;
    };
    auto parts = std::make_shared<Parts>();
    admin::WorkerFn fn = [parts](app::Worker& w) {
        auto mine = count_clients(w);
        std::lock_guard lk(parts->m);
        for (auto& [k, c] : mine) {
            auto& t = parts->counts[k];
            t.active += c.active;
            t.waiting += c.waiting;
            t.idle += c.idle;
        }
    };
    // A worker that does not answer in time is left out rather than failing the scrape.
    co_await admin::on_every_worker(self, fn, std::chrono::seconds(2));
    ClientCounts clients;
    {
        std::lock_guard lk(parts->m);
        clients = parts->counts;
    }

    std::map<PoolKey, PoolRow> pools;
    std::map<std::string, Totals> dbs;
    for (auto& p : rt.pools->all()) {
        // A cluster database has one pool per replica besides its primary's: one row each (database, user).
        auto [it, fresh] = pools.try_emplace({p->database(), p->user()}, PoolRow{p->counts(), p->settings().pool_size});
        if (!fresh) {
            auto c = p->counts();
            it->second.counts.total += c.total;
            it->second.counts.idle += c.idle;
            it->second.counts.waiting += c.waiting;
            it->second.counts.max_wait_seconds = std::max(it->second.counts.max_wait_seconds, c.max_wait_seconds);
        }
        add(dbs[p->database()], p->totals());
    }

    std::string out;
    out.reserve(8192);
    append_pools(out, pools, clients);
    append_databases(out, dbs);
    append_process(out, rt);
    co_return out;
}

}  // namespace pgrouter::stats
