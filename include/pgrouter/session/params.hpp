// The server parameters the pooler keeps in step between clients sharing a
// server connection (PgBouncer's "track_extra_parameters" core set). Pure.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace pgrouter::session {

inline constexpr std::array<std::string_view, 7> kTrackedParams = {
    "client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "standard_conforming_strings",
    "application_name", "default_transaction_read_only"};

// Index in kTrackedParams, case-insensitively; nullopt when not tracked.
std::optional<std::size_t> tracked_index(std::string_view name);

struct ParamSet {
    std::array<std::optional<std::string>, kTrackedParams.size()> values;
    void set(std::size_t i, std::string v) { values[i] = std::move(v); }
    bool set(std::string_view name, std::string v);  // false when not tracked
};

// "SET a = 'x'; SET b = 'y';" for every value `want` has that differs from `have`
// (values `want` does not know are left alone). Empty when in step.
std::string build_sync_sql(const ParamSet& want, const ParamSet& have);

}  // namespace pgrouter::session
