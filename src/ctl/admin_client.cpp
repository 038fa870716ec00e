#include "admin_client.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace pgrouter::ctl {

namespace {
bool numeric_type(Oid t) {
    switch (t) {
        case 20: case 21: case 23: case 26: case 700: case 701: case 1700:  // int8 int2 int4 oid float4/8 numeric
            return true;
        default:
            return false;
    }
}

// Display width: UTF-8 code points (good enough for names and numbers).
std::size_t width(const std::string& s) {
    std::size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
}

void pad(std::FILE* out, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) std::fputc(' ', out);
}

std::string trim_newlines(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}
}  // namespace

std::string default_conninfo() {
    if (const char* env = std::getenv("PGROUTER_ADMIN"); env && *env) return env;
    return "host=127.0.0.1 port=6432 dbname=pgbouncer user=pgbouncer";
}

AdminClient::AdminClient(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
    if (!conn_) return;
    PQsetNoticeReceiver(
        conn_.get(),
        [](void* arg, const PGresult* res) {
            auto* notices = static_cast<std::vector<std::string>*>(arg);
            std::string text = trim_newlines(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
                                                 ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
                                                 : "");
            if (const char* d = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL)) text += "\n" + trim_newlines(d);
            notices->push_back(std::move(text));
        },
        &notices_);
}

std::string AdminClient::error() const {
    if (!conn_) return "out of memory";
    return trim_newlines(PQerrorMessage(conn_.get()));
}

QueryResult AdminClient::run(const std::string& sql) {
    QueryResult r;
    notices_.clear();
    std::unique_ptr<PGresult, void (*)(PGresult*)> res(PQexec(conn_.get(), sql.c_str()), PQclear);
    r.notices = notices_;
    if (!res) {
        r.error = error();
        return r;
    }
    auto status = PQresultStatus(res.get());
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK && status != PGRES_EMPTY_QUERY) {
        const char* primary = PQresultErrorField(res.get(), PG_DIAG_MESSAGE_PRIMARY);
        const char* detail = PQresultErrorField(res.get(), PG_DIAG_MESSAGE_DETAIL);
        r.error = primary ? trim_newlines(primary) : trim_newlines(PQresultErrorMessage(res.get()));
        if (detail) r.error += "\n" + trim_newlines(detail);
        if (const char* state = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE)) r.error += " (SQLSTATE " + std::string(state) + ")";
        return r;
    }
    r.ok = true;
    r.status = PQcmdStatus(res.get());
    if (status != PGRES_TUPLES_OK) return r;
    int nf = PQnfields(res.get()), nt = PQntuples(res.get());
    for (int f = 0; f < nf; ++f) {
        r.columns.emplace_back(PQfname(res.get(), f));
        r.numeric.push_back(numeric_type(PQftype(res.get(), f)));
    }
    for (int t = 0; t < nt; ++t) {
        std::vector<std::optional<std::string>> row;
        for (int f = 0; f < nf; ++f) {
            if (PQgetisnull(res.get(), t, f))
                row.emplace_back(std::nullopt);
            else
                row.emplace_back(std::string(PQgetvalue(res.get(), t, f), PQgetlength(res.get(), t, f)));
        }
        r.rows.push_back(std::move(row));
    }
    return r;
}

void print_table(std::FILE* out, const QueryResult& r) {
    std::size_t n = r.columns.size();
    std::vector<std::size_t> w(n);
    for (std::size_t f = 0; f < n; ++f) {
        w[f] = width(r.columns[f]);
        for (auto& row : r.rows)
            if (row[f]) w[f] = std::max(w[f], width(*row[f]));
    }
    // Header: centred names, as psql does.
    for (std::size_t f = 0; f < n; ++f) {
        std::size_t left = (w[f] - width(r.columns[f])) / 2;
        std::fputs(f ? "| " : " ", out);
        pad(out, left);
        std::fputs(r.columns[f].c_str(), out);
        if (f + 1 < n) pad(out, w[f] - width(r.columns[f]) - left + 1);
    }
    std::fputc('\n', out);
    for (std::size_t f = 0; f < n; ++f) {
        if (f) std::fputc('+', out);
        for (std::size_t i = 0; i < w[f] + 2; ++i) std::fputc('-', out);
    }
    std::fputc('\n', out);
    for (auto& row : r.rows) {
        for (std::size_t f = 0; f < n; ++f) {
            std::string v = row[f].value_or("");
            std::fputs(f ? "| " : " ", out);
            std::size_t gap = w[f] - width(v);
            if (r.numeric[f]) pad(out, gap);
            std::fputs(v.c_str(), out);
            if (!r.numeric[f] && f + 1 < n) pad(out, gap);
            if (f + 1 < n) std::fputc(' ', out);
        }
        std::fputc('\n', out);
    }
    std::fprintf(out, "(%zu row%s)\n", r.rows.size(), r.rows.size() == 1 ? "" : "s");
}

}  // namespace pgrouter::ctl
