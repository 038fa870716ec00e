#include "pgrouter/protocol/protocol.hpp"

#include <cstring>

namespace pgrouter::protocol {

namespace {
constexpr std::uint32_t kSmall = 10000;  // names, short control messages

HeaderResult decode_header(Bytes buf, std::uint32_t max_length, bool exact4) {
    HeaderResult r;
    if (buf.size() < 5) return r;
    r.header.type = static_cast<char>(buf[0]);
    r.header.length = get_u32(buf.data() + 1);
    if (max_length == 0) {
        r.status = Decode::error;
        r.error = "unexpected message type";
        return r;
    }
    if (r.header.length < 4 || (exact4 && r.header.length != 4)) {
        r.status = Decode::error;
        r.error = "invalid message length";
        return r;
    }
    if (r.header.length > max_length) {
        r.status = Decode::error;
        r.error = "message too large";
        return r;
    }
    r.status = Decode::ok;
    return r;
}
}  // namespace

std::uint32_t get_u32(const std::byte* p) {
    return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) |
           std::uint32_t(p[3]);
}
std::uint16_t get_u16(const std::byte* p) {
    return static_cast<std::uint16_t>((std::uint16_t(p[0]) << 8) | std::uint16_t(p[1]));
}
void put_u32(std::string& out, std::uint32_t v) {
    char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
    out.append(b, 4);
}
void put_u16(std::string& out, std::uint16_t v) {
    char b[2] = {char(v >> 8), char(v)};
    out.append(b, 2);
}

std::uint32_t frontend_max_length(char type) {
    switch (type) {
        case 'Q': case 'P': case 'B': case 'd': case 'F': case 'f':
            return kMaxMessage;
        case 'E': case 'C': case 'D': case 'p':
            return kSmall;
        case 'S': case 'H': case 'X': case 'c':
            return 4;
        default:
            return 0;
    }
}

HeaderResult decode_frontend_header(Bytes buf) {
    if (buf.empty()) return {};
    char t = static_cast<char>(buf[0]);
    std::uint32_t max = frontend_max_length(t);
    return decode_header(buf, max, max == 4);
}

HeaderResult decode_backend_header(Bytes buf) { return decode_header(buf, kMaxMessage, false); }

const std::string* StartupPacket::find(std::string_view name) const {
    for (auto& [k, v] : params)
        if (k == name) return &v;
    return nullptr;
}

StartupResult decode_startup(Bytes buf) {
    StartupResult r;
    if (buf.size() < 4) return r;
    std::uint32_t len = get_u32(buf.data());
    if (len < 8 || len > kMaxStartupPacket) {
        r.status = Decode::error;
        r.error = "invalid startup packet length";
        return r;
    }
    if (buf.size() < len) return r;
    r.consumed = len;
    std::uint32_t code = get_u32(buf.data() + 4);
    auto& p = r.packet;
    p.version = code;
    if (code == kSslRequestCode || code == kGssEncRequestCode) {
        if (len != 8) {
            r.status = Decode::error;
            r.error = "invalid length of encryption request";
            return r;
        }
        p.kind = code == kSslRequestCode ? StartupPacket::Kind::ssl_request : StartupPacket::Kind::gssenc_request;
        r.status = Decode::ok;
        return r;
    }
    if (code == kCancelRequestCode) {
        if (len != 16) {
            r.status = Decode::error;
            r.error = "invalid length of cancel request";
            return r;
        }
        p.kind = StartupPacket::Kind::cancel_request;
        p.cancel_pid = get_u32(buf.data() + 8);
        p.cancel_key = get_u32(buf.data() + 12);
        r.status = Decode::ok;
        return r;
    }
    p.kind = StartupPacket::Kind::startup;
    // Parameters: name\0value\0 ... \0
    const char* s = reinterpret_cast<const char*>(buf.data()) + 8;
    const char* end = reinterpret_cast<const char*>(buf.data()) + len;
    bool terminated = false;
    while (s < end) {
        if (*s == '\0') {
            terminated = (s + 1 == end);
            if (!terminated) {
                r.status = Decode::error;
                r.error = "invalid startup packet layout: data after terminator";
                return r;
            }
            break;
        }
        const char* nz = static_cast<const char*>(std::memchr(s, 0, end - s));
        if (!nz) break;
        std::string name(s, nz);
        s = nz + 1;
        const char* vz = s < end ? static_cast<const char*>(std::memchr(s, 0, end - s)) : nullptr;
        if (!vz) break;
        p.params.emplace_back(std::move(name), std::string(s, vz));
        s = vz + 1;
    }
    if (!terminated && (code >> 16) == 3) {
        r.status = Decode::error;
        r.error = "invalid startup packet layout: expected terminator as last byte";
        return r;
    }
    r.status = Decode::ok;
    return r;
}

std::optional<std::string_view> read_cstring(Bytes body) {
    if (body.empty()) return std::nullopt;  // an empty span may hold a null pointer: memchr(nullptr) is UB
    const void* z = std::memchr(body.data(), 0, body.size());
    if (!z) return std::nullopt;
    return std::string_view(reinterpret_cast<const char*>(body.data()),
                            static_cast<const std::byte*>(z) - body.data());
}

std::optional<ErrorFields> parse_error_response(Bytes body) {
    ErrorFields f;
    std::size_t i = 0;
    while (i < body.size()) {
        char code = static_cast<char>(body[i]);
        if (code == 0) return f;
        auto v = read_cstring(body.subspan(i + 1));
        if (!v) return std::nullopt;
        switch (code) {
            case 'S': f.severity = *v; break;
            case 'C': f.sqlstate = *v; break;
            case 'M': f.message = *v; break;
            case 'D': f.detail = *v; break;
            case 'H': f.hint = *v; break;
            default: break;
        }
        i += 1 + v->size() + 1;
    }
    return std::nullopt;
}

std::optional<std::pair<std::string, std::string>> parse_parameter_status(Bytes body) {
    auto name = read_cstring(body);
    if (!name) return std::nullopt;
    auto value = read_cstring(body.subspan(name->size() + 1));
    if (!value || name->size() + value->size() + 2 != body.size()) return std::nullopt;
    return std::make_pair(std::string(*name), std::string(*value));
}

std::optional<AuthRequest> parse_auth_request(Bytes body) {
    if (body.size() < 4) return std::nullopt;
    return AuthRequest{get_u32(body.data()), body.subspan(4)};
}

std::optional<std::pair<std::uint32_t, std::uint32_t>> parse_backend_key_data(Bytes body) {
    if (body.size() != 8) return std::nullopt;
    return std::make_pair(get_u32(body.data()), get_u32(body.data() + 4));
}

std::optional<SaslInitial> parse_sasl_initial_response(Bytes body) {
    auto mech = read_cstring(body);
    if (!mech) return std::nullopt;
    auto rest = body.subspan(mech->size() + 1);
    if (rest.size() < 4) return std::nullopt;
    std::int32_t n = static_cast<std::int32_t>(get_u32(rest.data()));
    rest = rest.subspan(4);
    SaslInitial s{std::string(*mech), {}};
    if (n == -1) return rest.empty() ? std::optional(s) : std::nullopt;  // -1: no data, and nothing after it
    if (n < 0 || static_cast<std::size_t>(n) != rest.size()) return std::nullopt;
    s.data.assign(reinterpret_cast<const char*>(rest.data()), rest.size());
    return s;
}

namespace {
// Begins a message: type + placeholder length; finish() patches the length.
std::size_t begin(std::string& out, char type) {
    if (type) out.push_back(type);
    std::size_t at = out.size();
    out.append(4, '\0');
    return at;
}
void finish(std::string& out, std::size_t at) {
    std::uint32_t len = static_cast<std::uint32_t>(out.size() - at);
    out[at] = char(len >> 24);
    out[at + 1] = char(len >> 16);
    out[at + 2] = char(len >> 8);
    out[at + 3] = char(len);
}
void put_cstring(std::string& out, std::string_view s) {
    out.append(s);
    out.push_back('\0');
}
}  // namespace

void write_error_response(std::string& out, std::string_view severity, std::string_view sqlstate,
                          std::string_view message, std::string_view detail) {
    auto at = begin(out, 'E');
    out.push_back('S');
    put_cstring(out, severity);
    out.push_back('V');
    put_cstring(out, severity);
    out.push_back('C');
    put_cstring(out, sqlstate);
    out.push_back('M');
    put_cstring(out, message);
    if (!detail.empty()) {
        out.push_back('D');
        put_cstring(out, detail);
    }
    out.push_back('\0');
    finish(out, at);
}

void write_notice_response(std::string& out, std::string_view sqlstate, std::string_view message) {
    auto at = begin(out, 'N');
    out.push_back('S');
    put_cstring(out, "NOTICE");
    out.push_back('V');
    put_cstring(out, "NOTICE");
    out.push_back('C');
    put_cstring(out, sqlstate);
    out.push_back('M');
    put_cstring(out, message);
    out.push_back('\0');
    finish(out, at);
}

static void write_auth(std::string& out, std::uint32_t code, std::string_view data) {
    auto at = begin(out, 'R');
    put_u32(out, code);
    out.append(data);
    finish(out, at);
}
void write_auth_ok(std::string& out) { write_auth(out, 0, {}); }
void write_auth_cleartext(std::string& out) { write_auth(out, 3, {}); }
void write_auth_md5(std::string& out, const std::uint8_t salt[4]) {
    write_auth(out, 5, std::string_view(reinterpret_cast<const char*>(salt), 4));
}
void write_auth_sasl(std::string& out, std::string_view mechanism) {
    std::string data(mechanism);
    data.push_back('\0');
    data.push_back('\0');
    write_auth(out, 10, data);
}
void write_auth_sasl_continue(std::string& out, std::string_view data) { write_auth(out, 11, data); }
void write_auth_sasl_final(std::string& out, std::string_view data) { write_auth(out, 12, data); }

void write_parameter_status(std::string& out, std::string_view name, std::string_view value) {
    auto at = begin(out, 'S');
    put_cstring(out, name);
    put_cstring(out, value);
    finish(out, at);
}
void write_backend_key_data(std::string& out, std::uint32_t pid, std::uint32_t key) {
    auto at = begin(out, 'K');
    put_u32(out, pid);
    put_u32(out, key);
    finish(out, at);
}
void write_ready_for_query(std::string& out, char status) {
    auto at = begin(out, 'Z');
    out.push_back(status);
    finish(out, at);
}
void write_negotiate_protocol_version(std::string& out, std::uint32_t newest_minor,
                                      const std::vector<std::string>& unrecognized) {
    auto at = begin(out, 'v');
    put_u32(out, (3u << 16) | newest_minor);
    put_u32(out, static_cast<std::uint32_t>(unrecognized.size()));
    for (auto& u : unrecognized) put_cstring(out, u);
    finish(out, at);
}
void write_row_description(std::string& out, const std::vector<Column>& cols) {
    auto at = begin(out, 'T');
    put_u16(out, static_cast<std::uint16_t>(cols.size()));
    for (auto& c : cols) {
        put_cstring(out, c.name);
        put_u32(out, 0);  // table oid
        put_u16(out, 0);  // attnum
        put_u32(out, c.type_oid);
        put_u16(out, static_cast<std::uint16_t>(c.type_len));
        put_u32(out, 0xFFFFFFFFu);  // typmod -1
        put_u16(out, 0);            // text format
    }
    finish(out, at);
}
void write_data_row(std::string& out, const std::vector<std::optional<std::string>>& values) {
    auto at = begin(out, 'D');
    put_u16(out, static_cast<std::uint16_t>(values.size()));
    for (auto& v : values) {
        if (!v) {
            put_u32(out, 0xFFFFFFFFu);
        } else {
            put_u32(out, static_cast<std::uint32_t>(v->size()));
            out.append(*v);
        }
    }
    finish(out, at);
}
void write_command_complete(std::string& out, std::string_view tag) {
    auto at = begin(out, 'C');
    put_cstring(out, tag);
    finish(out, at);
}
void write_empty_query_response(std::string& out) {
    auto at = begin(out, 'I');
    finish(out, at);
}

void write_startup_message(std::string& out, const std::vector<std::pair<std::string, std::string>>& params) {
    auto at = begin(out, 0);
    put_u32(out, kProtocol30);
    for (auto& [k, v] : params) {
        put_cstring(out, k);
        put_cstring(out, v);
    }
    out.push_back('\0');
    finish(out, at);
}
void write_ssl_request(std::string& out) {
    put_u32(out, 8);
    put_u32(out, kSslRequestCode);
}
void write_cancel_request(std::string& out, std::uint32_t pid, std::uint32_t key) {
    put_u32(out, 16);
    put_u32(out, kCancelRequestCode);
    put_u32(out, pid);
    put_u32(out, key);
}
void write_password_message(std::string& out, std::string_view password) {
    auto at = begin(out, 'p');
    put_cstring(out, password);
    finish(out, at);
}
void write_sasl_initial_response(std::string& out, std::string_view mechanism, std::string_view data) {
    auto at = begin(out, 'p');
    put_cstring(out, mechanism);
    put_u32(out, static_cast<std::uint32_t>(data.size()));
    out.append(data);
    finish(out, at);
}
void write_sasl_response(std::string& out, std::string_view data) {
    auto at = begin(out, 'p');
    out.append(data);
    finish(out, at);
}
void write_query(std::string& out, std::string_view sql) {
    auto at = begin(out, 'Q');
    put_cstring(out, sql);
    finish(out, at);
}
void write_terminate(std::string& out) {
    out.push_back('X');
    put_u32(out, 4);
}

std::string quote_literal(std::string_view s) {
    std::string r;
    bool backslash = s.find('\\') != std::string_view::npos;
    if (backslash) r.push_back('E');
    r.push_back('\'');
    for (char c : s) {
        if (c == '\'' || c == '\\') r.push_back(c);
        r.push_back(c);
    }
    r.push_back('\'');
    return r;
}
std::string quote_ident(std::string_view s) {
    std::string r = "\"";
    for (char c : s) {
        if (c == '"') r.push_back('"');
        r.push_back(c);
    }
    r.push_back('"');
    return r;
}

}  // namespace pgrouter::protocol
