// What pgrouter tells about its counters: the Prometheus exporter behind
// metrics_listen (GET /metrics, served on worker 0) and the stats line logged
// every stats_period.
#pragma once

#include "pgrouter/util/task.hpp"
#include "pgrouter/stats/counters.hpp"

#include <boost/asio/awaitable.hpp>

#include <string>
#include <string_view>

namespace pgrouter::app {
class Runtime;
class Worker;
}  // namespace pgrouter::app

namespace pgrouter::stats {

// Binds `listen` ("host:port") on worker 0 and serves /metrics from there.
// Call once the workers exist (before or after they run). Returns "" or why it
// cannot listen: the caller exits 2 then.
std::string start_metrics_server(app::Runtime& rt, const std::string& listen);

// The exposition text (format 0.0.4); gathers client states from every worker.
// Runs on worker `self`.
Task<std::string> render_metrics(app::Worker& self);

// Appends one histogram's samples: cumulative `le` buckets from the
// non-cumulative `counts` (bounds kBuckets, then +Inf), _sum and _count.
// `labels` is the label text without braces, e.g. `database="db"`.
void append_histogram(std::string& out, std::string_view name, std::string_view labels,
                      const std::uint64_t (&counts)[kBucketCount], double sum_seconds);

// A label value escaped for the exposition format (\\, \", \n).
std::string label_value(std::string_view v);

// PgBouncer's periodic line: "stats: N xacts/s, N queries/s, in N B/s, out N B/s,
// xact N us, query N us, wait N us" over `seconds` between two samples.
std::string stats_line(const Totals& from, const Totals& to, double seconds);

// Logs stats_line at info level every stats_period (re-read after each line,
// so RELOAD changes it), on worker 0. Call once the workers exist.
void start_stats_log(app::Runtime& rt);

}  // namespace pgrouter::stats
