// pgrouter-ctl's link to the admin console: libpq, simple query protocol only.
#pragma once

#include <libpq-fe.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pgrouter::ctl {

// PGROUTER_ADMIN, else the SPEC's default (passwords come from .pgpass / PGPASSWORD).
std::string default_conninfo();

struct QueryResult {
    bool ok = false;
    std::string error;   // the server's message (with DETAIL) or the connection problem
    std::string status;  // command tag, e.g. "SHOW", "PAUSE"
    std::vector<std::string> columns;
    std::vector<bool> numeric;  // right-aligned like psql
    std::vector<std::vector<std::optional<std::string>>> rows;
    std::vector<std::string> notices;
};

class AdminClient {
public:
    // Connects; check error() afterwards.
    explicit AdminClient(const std::string& conninfo);
    bool connected() const { return conn_ && PQstatus(conn_.get()) == CONNECTION_OK; }
    std::string error() const;
    // One command through PQexec (simple protocol).
    QueryResult run(const std::string& sql);

private:
    struct Closer {
        void operator()(PGconn* c) const { PQfinish(c); }
    };
    std::unique_ptr<PGconn, Closer> conn_;
    std::vector<std::string> notices_;
};

// psql's aligned format: header, dashes, rows, "(N rows)".
void print_table(std::FILE* out, const QueryResult& r);

}  // namespace pgrouter::ctl
