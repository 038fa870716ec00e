// The admin console's command model: a parsed command, the context a handler
// runs in, the result-set builder, and the registration tables (commands.cpp).
#pragma once

#include "pgrouter/util/task.hpp"
#include "pgrouter/admin/admin.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::app {
class Runtime;
class Worker;
}  // namespace pgrouter::app

namespace pgrouter::admin {

namespace asio = boost::asio;

// ---- parsing (pure) ----------------------------------------------------------

struct Token {
    enum class Kind { word, quoted_ident, string, equals };
    Kind kind = Kind::word;
    std::string text;  // without quotes; escapes ('' and "") resolved
};

struct Command {
    std::vector<Token> tokens;
    std::string text;  // as typed, trimmed, without the final ';'
    std::size_t size() const { return tokens.size(); }
    // Token i upper-cased when it is a plain word, else "".
    std::string keyword(std::size_t i) const;
    // Token i as a name (a word as typed, a quoted identifier, or a string literal).
    std::optional<std::string> name(std::size_t i) const;
};

struct ParseResult {
    std::optional<Command> command;  // nullopt: empty query (error empty) or a syntax error
    std::string error;
};
// Words, "quoted identifiers", 'string literals' and '='; one optional final ';'.
ParseResult parse_command(std::string_view sql);

// ---- replies -----------------------------------------------------------------

enum class ColType { text, int4, int8, numeric, bytea };
using Cell = std::optional<std::string>;

inline Cell cell(std::string_view s) { return std::string(s); }
inline Cell cell(const char* s) { return s ? Cell(std::string(s)) : std::nullopt; }
inline Cell cell(const std::string& s) { return s; }
template <std::integral T>
Cell cell(T v) {
    if constexpr (std::same_as<T, bool>)
        return std::string(v ? "1" : "0");
    else
        return std::to_string(v);
}
// NULL when empty (PgBouncer's convention for unset names).
inline Cell cell_or_null(const std::string& s) { return s.empty() ? Cell() : Cell(s); }

class ResultSet {
public:
    struct Column {
        std::string name;
        ColType type = ColType::text;
    };
    explicit ResultSet(std::vector<Column> cols) : cols_(std::move(cols)) {}
    const std::vector<Column>& columns() const { return cols_; }
    void add(std::vector<Cell> row);  // one value per column
    std::size_t rows() const { return rows_.size(); }
    // RowDescription, DataRows and CommandComplete(tag).
    void write(std::string& out, std::string_view tag = "SHOW") const;

private:
    std::vector<Column> cols_;
    std::vector<std::vector<Cell>> rows_;
};

// "2024-01-02 03:04:05 UTC", PgBouncer's timestamp format.
std::string format_time(std::chrono::system_clock::time_point t);

// ---- handlers ----------------------------------------------------------------

struct Context {
    app::Worker& worker;
    app::Runtime& rt;
    const ConsoleClient& who;
    std::string out;     // the reply, sent before ReadyForQuery
    bool close = false;  // end the session after replying (SHUTDOWN)

    void error(std::string_view sqlstate, std::string_view message);
    void notice(std::string_view message, std::string_view detail = {});
    void complete(std::string_view tag);
};

using Handler = Task<void> (*)(Context&, const Command&);

struct Entry {
    std::string_view name;   // upper case
    Handler run;
    bool stats_ok;           // stats_users may run it (every SHOW but FDS)
};

// First word -> handler; "SHOW <word>" -> handler.
std::span<const Entry> commands();
std::span<const Entry> show_commands();
// The SHOW HELP text (one line per command form).
std::string_view help_text();

// Runs one query: parses, checks access, dispatches, writes the reply to ctx.out.
Task<void> execute(Context& ctx, std::string_view sql);

// An error for a command that has the wrong arguments.
void invalid_command(Context& ctx, const Command& cmd);

}  // namespace pgrouter::admin
