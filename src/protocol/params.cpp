// Pure: lives with the codec so unit tests need no I/O modules.
#include "pgrouter/session/params.hpp"

#include "pgrouter/protocol/protocol.hpp"

#include <strings.h>

namespace pgrouter::session {

std::optional<std::size_t> tracked_index(std::string_view name) {
    for (std::size_t i = 0; i < kTrackedParams.size(); ++i) {
        auto t = kTrackedParams[i];
        if (t.size() == name.size() && strncasecmp(t.data(), name.data(), t.size()) == 0) return i;
    }
    return std::nullopt;
}

bool ParamSet::set(std::string_view name, std::string v) {
    auto i = tracked_index(name);
    if (!i) return false;
    values[*i] = std::move(v);
    return true;
}

std::string build_sync_sql(const ParamSet& want, const ParamSet& have) {
    std::string sql;
    for (std::size_t i = 0; i < kTrackedParams.size(); ++i) {
        if (!want.values[i] || want.values[i] == have.values[i]) continue;
        sql += "SET ";
        sql += kTrackedParams[i];
        sql += " = ";
        sql += protocol::quote_literal(*want.values[i]);
        sql += ";";
    }
    return sql;
}

}  // namespace pgrouter::session
