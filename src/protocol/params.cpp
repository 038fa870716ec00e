// Pure: lives with the codec so unit tests need no I/O modules.
#include "pgrouter/session/params.hpp"

#include "pgrouter/protocol/protocol.hpp"
#include "pgrouter/util/intern.hpp"

#include <strings.h>


namespace pgrouter::session {

std::optional<std::size_t> tracked_index(std::string_view name) {
    for (std::size_t i = 0; i < kTrackedParams.size(); ++i) {
        auto t = kTrackedParams[i];
        if (t.size() == name.size() && strncasecmp(t.data(), name.data(), t.size()) == 0) return i;
    }
    return std::nullopt;
}

void ParamSet::set(std::size_t i, std::string_view v) {
    std::uint16_t b = i ? end_[i - 1] : 0;
    std::uint16_t old_len = static_cast<std::uint16_t>(end_[i] - b);
    std::size_t total = end_.back();
    if (total - old_len + v.size() > 65535) return;
    std::string next = blob_ ? *blob_ : std::string();
    next.replace(b, old_len, v);
    blob_ = std::make_shared<const std::string>(std::move(next));
    auto delta = static_cast<std::int64_t>(v.size()) - static_cast<std::int64_t>(old_len);
    for (std::size_t j = i; j < end_.size(); ++j) end_[j] = static_cast<std::uint16_t>(end_[j] + delta);
    present_ = static_cast<std::uint8_t>(present_ | (1u << i));
}

void ParamSet::share() {
    if (blob_) blob_ = util::intern(*blob_);
}

bool ParamSet::set(std::string_view name, std::string_view v) {
    auto i = tracked_index(name);
    if (!i) return false;
    set(*i, v);
    return true;
}

std::string build_sync_sql(const ParamSet& want, const ParamSet& have) {
    std::string sql;
    if (want.same_as(have)) return sql;  // the usual case: clients alike, servers in step
    for (std::size_t i = 0; i < kTrackedParams.size(); ++i) {
        auto w = want.get(i);
        if (!w || w == have.get(i)) continue;
        sql += "SET ";
        sql += kTrackedParams[i];
        sql += " = ";
        sql += protocol::quote_literal(*w);
        sql += ";";
    }
    return sql;
}

}  // namespace pgrouter::session
