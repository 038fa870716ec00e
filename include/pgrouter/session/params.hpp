// The server parameters the pooler keeps in step between clients sharing a
// server connection (PgBouncer's "track_extra_parameters" core set). Pure.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace pgrouter::session {

inline constexpr std::array<std::string_view, 7> kTrackedParams = {
    "client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "standard_conforming_strings",
    "application_name", "default_transaction_read_only"};

// Index in kTrackedParams, case-insensitively; nullopt when not tracked.
std::optional<std::size_t> tracked_index(std::string_view name);

// The tracked values of one client or server. Every session keeps one while idle,
// so the values share one immutable string (32 bytes per set instead of seven
// optional strings' 280), and share() makes equal strings one between the sets of a
// thread (most clients of an application send the same values).
class ParamSet {
public:
    std::optional<std::string_view> get(std::size_t i) const {
        if (!(present_ & (1u << i))) return std::nullopt;
        std::uint16_t b = i ? end_[i - 1] : 0;
        return std::string_view(*blob_).substr(b, end_[i] - b);
    }
    bool has(std::size_t i) const { return present_ & (1u << i); }
    // Values whose total would pass 65535 bytes are not taken (PostgreSQL's whole
    // startup packet is at most 10000 bytes).
    void set(std::size_t i, std::string_view v);
    bool set(std::string_view name, std::string_view v);  // false when not tracked
    // Uses the thread's copy of an equal set of values (util::intern) from now on.
    void share();
    // The same values set (a quick test: one comparison of the packed values).
    bool same_as(const ParamSet& o) const {
        if (present_ != o.present_ || end_ != o.end_) return false;
        if (blob_ == o.blob_) return true;
        return blob_ && o.blob_ && *blob_ == *o.blob_;
    }

private:
    std::shared_ptr<const std::string> blob_;                  // the values, in index order
    std::array<std::uint16_t, kTrackedParams.size()> end_{};  // where value i ends in blob_
    std::uint8_t present_ = 0;                                 // bit i: value i is set
};

// "SET a = 'x'; SET b = 'y';" for every value `want` has that differs from `have`
// (values `want` does not know are left alone). Empty when in step.
std::string build_sync_sql(const ParamSet& want, const ParamSet& have);

}  // namespace pgrouter::session
