#include "pgrouter/protocol/prepared.hpp"

#include <cstring>
#include <functional>

namespace pgrouter::protocol {

namespace {
std::optional<std::string_view> cstring_at(std::string_view s, std::size_t at) {
    if (at > s.size()) return std::nullopt;
    auto z = s.find('\0', at);
    if (z == std::string_view::npos) return std::nullopt;
    return s.substr(at, z - at);
}

void put_length(std::string& out, std::size_t at) {
    auto len = static_cast<std::uint32_t>(out.size() - at);
    out[at] = char(len >> 24);
    out[at + 1] = char(len >> 16);
    out[at + 2] = char(len >> 8);
    out[at + 3] = char(len);
}
}  // namespace

std::optional<StatementRef> statement_of(std::string_view m) {
    if (m.size() < 5) return std::nullopt;
    StatementRef r;
    r.type = m[0];
    switch (r.type) {
        case 'P': {
            auto n = cstring_at(m, 5);
            if (!n) return std::nullopt;
            r.name = *n;
            r.is_statement = true;
            return r;
        }
        case 'B': {
            auto portal = cstring_at(m, 5);
            if (!portal) return std::nullopt;
            auto n = cstring_at(m, 5 + portal->size() + 1);
            if (!n) return std::nullopt;
            r.name = *n;
            r.is_statement = true;
            return r;
        }
        case 'D': case 'C': {
            if (m.size() < 6) return std::nullopt;
            auto n = cstring_at(m, 6);
            if (!n) return std::nullopt;
            r.name = *n;
            r.is_statement = m[5] == 'S';
            return r;
        }
        default:
            return std::nullopt;
    }
}

std::optional<std::string> global_statement_name(std::string_view m) {
    auto name = cstring_at(m, 5);
    if (!name || m[0] != 'P') return std::nullopt;
    // Query text plus parameter types: everything after the client's name.
    std::string_view rest = m.substr(5 + name->size() + 1);
    std::size_t h = std::hash<std::string_view>{}(rest);
    char buf[48];
    std::snprintf(buf, sizeof buf, "PGR_%016zx_%zu", h, rest.size());
    return std::string(buf);
}

std::optional<std::string> rename_statement(std::string_view m, std::string_view new_name) {
    auto ref = statement_of(m);
    if (!ref || !ref->is_statement) return std::nullopt;
    std::size_t name_at = static_cast<std::size_t>(ref->name.data() - m.data());
    std::string out;
    out.reserve(m.size() + new_name.size());
    out.append(m.substr(0, name_at));
    out.append(new_name);
    out.append(m.substr(name_at + ref->name.size()));
    put_length(out, 1);
    return out;
}

void write_close_statement(std::string& out, std::string_view name) {
    out.push_back('C');
    std::size_t at = out.size();
    out.append(4, '\0');
    out.push_back('S');
    out.append(name);
    out.push_back('\0');
    put_length(out, at);
}

}  // namespace pgrouter::protocol
