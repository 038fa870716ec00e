// The one place pooler-made errors get their SQLSTATE and wire form.
#pragma once

#include <string>
#include <string_view>

namespace pgrouter::session {

namespace sqlstate {
inline constexpr std::string_view protocol_violation = "08P01";
inline constexpr std::string_view connection_failure = "08006";
inline constexpr std::string_view invalid_catalog_name = "3D000";
inline constexpr std::string_view invalid_password = "28P01";
inline constexpr std::string_view invalid_authorization = "28000";
inline constexpr std::string_view too_many_connections = "53300";
inline constexpr std::string_view admin_shutdown = "57P01";
inline constexpr std::string_view query_canceled = "57014";
inline constexpr std::string_view idle_in_transaction_timeout = "25P03";
inline constexpr std::string_view idle_session_timeout = "57P05";
inline constexpr std::string_view feature_not_supported = "0A000";
inline constexpr std::string_view syntax_error = "42601";
inline constexpr std::string_view insufficient_privilege = "42501";
inline constexpr std::string_view object_not_in_prerequisite_state = "55000";
inline constexpr std::string_view internal_error = "XX000";
inline constexpr std::string_view undefined_object = "42704";
inline constexpr std::string_view invalid_parameter_value = "22023";
inline constexpr std::string_view config_file_error = "F0000";
inline constexpr std::string_view program_limit_exceeded = "54000";
inline constexpr std::string_view transaction_timeout = "25P04";

// The server went away rather than answered: the connection failed or was lost (08),
// or it is shutting down, was terminated, or is not ready yet (57P01-57P03).
inline bool server_gone(std::string_view state) { return state.starts_with("08") || state.starts_with("57P"); }
}  // namespace sqlstate

// Appends an ErrorResponse. `fatal` errors are followed by the pooler closing the client.
void write_pooler_error(std::string& out, std::string_view state, std::string_view message, bool fatal = true);

}  // namespace pgrouter::session
