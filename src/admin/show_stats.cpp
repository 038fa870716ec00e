// SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS. Totals count since
// start; averages cover the last whole stats_period. Times in microseconds.
#include "pgrouter/admin/handlers.hpp"
#include "pgrouter/util/task.hpp"
#include "pgrouter/admin/state.hpp"

#include "pgrouter/app/runtime.hpp"

namespace pgrouter::admin {

namespace {
ResultSet::Column num(std::string name) { return {std::move(name), ColType::numeric}; }

std::vector<Cell> total_cells(const stats::Totals& t) {
    return {cell(t.xact_count),   cell(t.query_count),   cell(t.bytes_received), cell(t.bytes_sent),
            cell(t.xact_time_us), cell(t.query_time_us), cell(t.wait_time_us)};
}
std::vector<Cell> average_cells(const Averages& a) {
    return {cell(a.xact_count), cell(a.query_count), cell(a.bytes_received), cell(a.bytes_sent),
            cell(a.xact_time),  cell(a.query_time),  cell(a.wait_time)};
}

struct Figures {
    std::map<std::string, stats::Totals> totals;
    std::map<std::string, Averages> averages;
};

Figures figures(app::Runtime& rt) {
    Figures f{totals_by_database(rt), state(rt).averages()};
    for (auto& [db, t] : f.totals) f.averages.try_emplace(db);  // zero before the first period ends
    return f;
}

std::vector<Cell> concat(std::vector<Cell> a, const std::vector<Cell>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}
}  // namespace

Task<void> show_stats(Context& ctx, const Command& cmd) {
    // PgBouncer 1.18's columns, then the newer server assignment counts.
    ResultSet rs({{"database"}, num("total_xact_count"), num("total_query_count"), num("total_received"),
                  num("total_sent"), num("total_xact_time"), num("total_query_time"), num("total_wait_time"),
                  num("avg_xact_count"), num("avg_query_count"), num("avg_recv"), num("avg_sent"),
                  num("avg_xact_time"), num("avg_query_time"), num("avg_wait_time"),
                  num("total_server_assignment_count"), num("avg_server_assignment_count")});
    auto f = figures(ctx.rt);
    for (auto& [db, t] : f.totals) {
        auto& a = f.averages[db];
        auto row = concat(concat({cell(db)}, total_cells(t)), average_cells(a));
        row.push_back(cell(t.server_assignments));
        row.push_back(cell(a.server_assignments));
        rs.add(std::move(row));
    }
    rs.write(ctx.out);
    co_return;
}

namespace {
ResultSet per_database_columns() {
    return ResultSet({{"database"}, num("xact_count"), num("query_count"), num("bytes_received"),
                      num("bytes_sent"), num("xact_time"), num("query_time"), num("wait_time"),
                      num("server_assignment_count")});
}
}  // namespace

Task<void> show_stats_totals(Context& ctx, const Command& cmd) {
    auto rs = per_database_columns();
    for (auto& [db, t] : totals_by_database(ctx.rt)) {
        auto row = concat({cell(db)}, total_cells(t));
        row.push_back(cell(t.server_assignments));
        rs.add(std::move(row));
    }
    rs.write(ctx.out);
    co_return;
}

Task<void> show_stats_averages(Context& ctx, const Command& cmd) {
    auto rs = per_database_columns();
    auto f = figures(ctx.rt);
    for (auto& [db, a] : f.averages) {
        auto row = concat({cell(db)}, average_cells(a));
        row.push_back(cell(a.server_assignments));
        rs.add(std::move(row));
    }
    rs.write(ctx.out);
    co_return;
}

// SHOW STATS summed over all databases, one figure per row (PgBouncer 1.18's row names).
Task<void> show_totals(Context& ctx, const Command& cmd) {
    auto f = figures(ctx.rt);
    stats::Totals t;
    Averages a;
    for (auto& [db, x] : f.totals) {
        t.xact_count += x.xact_count;
        t.query_count += x.query_count;
        t.bytes_received += x.bytes_received;
        t.bytes_sent += x.bytes_sent;
        t.xact_time_us += x.xact_time_us;
        t.query_time_us += x.query_time_us;
        t.wait_time_us += x.wait_time_us;
        t.server_assignments += x.server_assignments;
    }
    // Per-second rates add up; per-event times are weighted by their event counts.
    std::uint64_t xacts = 0, queries = 0, assignments = 0, xact_time = 0, query_time = 0, wait_time = 0;
    for (auto& [db, x] : f.averages) {
        a.xact_count += x.xact_count;
        a.query_count += x.query_count;
        a.bytes_received += x.bytes_received;
        a.bytes_sent += x.bytes_sent;
        a.server_assignments += x.server_assignments;
        xacts += x.xact_count, xact_time += x.xact_time * x.xact_count;
        queries += x.query_count, query_time += x.query_time * x.query_count;
        assignments += x.server_assignments, wait_time += x.wait_time * x.server_assignments;
    }
    a.xact_time = xacts ? xact_time / xacts : 0;
    a.query_time = queries ? query_time / queries : 0;
    a.wait_time = assignments ? wait_time / assignments : 0;
    ResultSet rs({{"name"}, num("value")});
    std::pair<const char*, std::uint64_t> rows[] = {
        {"total_xact_count", t.xact_count},     {"total_query_count", t.query_count},
        {"total_client_bytes", t.bytes_received}, {"total_server_bytes", t.bytes_sent},
        {"total_xact_time", t.xact_time_us},    {"total_query_time", t.query_time_us},
        {"total_wait_time", t.wait_time_us},    {"avg_xact_count", a.xact_count},
        {"avg_query_count", a.query_count},     {"avg_client_bytes", a.bytes_received},
        {"avg_server_bytes", a.bytes_sent},     {"avg_xact_time", a.xact_time},
        {"avg_query_time", a.query_time},       {"avg_wait_time", a.wait_time},
        {"total_server_assignment_count", t.server_assignments},
        {"avg_server_assignment_count", a.server_assignments},
    };
    for (auto& [name, v] : rows) rs.add({cell(name), cell(v)});
    rs.write(ctx.out);
    co_return;
}

}  // namespace pgrouter::admin
