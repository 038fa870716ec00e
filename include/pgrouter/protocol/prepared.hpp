// Protocol-level named prepared statements in transaction pooling: the pieces
// that rename a client's statements to pooler-wide names. Pure.
#pragma once

#include "pgrouter/protocol/protocol.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace pgrouter::protocol {

// The statement a Parse/Bind/Describe/Close message names ("" = unnamed, or a
// portal for Describe/Close 'P'). `message` is a whole message, header included.
struct StatementRef {
    char type = 0;
    std::string_view name;      // statement name
    bool is_statement = false;  // false for portal Describe/Close and for Bind (portal part)
};
std::optional<StatementRef> statement_of(std::string_view message);

// For Parse: a name that depends only on the query text and parameter types, so
// every client preparing the same statement shares one server-side statement.
std::optional<std::string> global_statement_name(std::string_view parse_message);

// The same message with its statement name replaced.
std::optional<std::string> rename_statement(std::string_view message, std::string_view new_name);

// Close of a statement by name.
void write_close_statement(std::string& out, std::string_view name);

}  // namespace pgrouter::protocol
