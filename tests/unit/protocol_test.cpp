// Round trips for every codec builder through the matching decoder, with every
// truncated prefix of every message (STYLE rule 15).
#include "pgrouter/protocol/protocol.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgrouter::protocol {
namespace {

using namespace std::string_literals;

// A heap copy of exactly the given bytes, so ASan/valgrind flag any read past the end.
std::vector<std::byte> exact(std::string_view s) {
    auto b = as_bytes(s);
    return {b.begin(), b.end()};
}

struct Frame {
    char type = 0;
    std::string body;
};

using HeaderDecoder = HeaderResult (*)(Bytes);

// Decodes the one message that fills `wire`. Every shorter prefix must ask for more
// (under 5 bytes) or give the same header, whose total still exceeds the prefix.
std::optional<Frame> decode_frame(const std::string& wire, HeaderDecoder decode) {
    auto whole = exact(wire);
    auto r = decode(whole);
    EXPECT_EQ(r.status, Decode::ok) << (r.error ? r.error : "");
    if (r.status != Decode::ok) return std::nullopt;
    EXPECT_EQ(r.header.total(), wire.size());
    EXPECT_EQ(r.header.body_size(), wire.size() - 5);
    if (r.header.total() != wire.size()) return std::nullopt;
    for (std::size_t n = 0; n < wire.size(); ++n) {
        auto prefix = exact(std::string_view(wire).substr(0, n));
        auto p = decode(prefix);
        if (n < 5) {
            EXPECT_EQ(p.status, Decode::need_more) << "prefix " << n;
            continue;
        }
        EXPECT_EQ(p.status, Decode::ok) << "prefix " << n;
        EXPECT_EQ(p.header.type, r.header.type) << "prefix " << n;
        EXPECT_EQ(p.header.length, r.header.length) << "prefix " << n;
        EXPECT_GT(p.header.total(), n) << "prefix " << n;
    }
    return Frame{r.header.type, wire.substr(5)};
}

// A body parser must reject every truncated body rather than read past it.
template <class Parse>
void expect_truncated_bodies_rejected(const std::string& body, Parse parse) {
    for (std::size_t n = 0; n < body.size(); ++n) {
        auto prefix = exact(std::string_view(body).substr(0, n));
        EXPECT_FALSE(parse(Bytes(prefix)).has_value()) << "body prefix " << n;
    }
}

// Decodes a startup-phase packet; every prefix must need more, and bytes that follow
// the packet (pipelined data) must not be consumed.
StartupResult decode_startup_checked(const std::string& wire) {
    for (std::size_t n = 0; n < wire.size(); ++n) {
        auto prefix = exact(std::string_view(wire).substr(0, n));
        auto p = decode_startup(prefix);
        EXPECT_EQ(p.status, Decode::need_more) << "prefix " << n;
        EXPECT_EQ(p.consumed, 0u) << "prefix " << n;
    }
    auto longer = exact(wire + "Q\0\0\0\x05X"s);
    auto t = decode_startup(longer);
    EXPECT_EQ(t.status, Decode::ok) << t.error;
    EXPECT_EQ(t.consumed, wire.size());
    auto whole = exact(wire);
    auto r = decode_startup(whole);
    EXPECT_EQ(r.consumed, wire.size());
    return r;
}

// Reads test-side the bodies the codec only builds.
struct Reader {
    std::string_view rest;
    bool failed = false;

    std::string take(std::size_t n) {
        if (failed || rest.size() < n) {
            failed = true;
            return {};
        }
        std::string s(rest.substr(0, n));
        rest.remove_prefix(n);
        return s;
    }
    std::uint32_t u32() {
        auto s = take(4);
        return failed ? 0 : get_u32(as_bytes(s).data());
    }
    std::uint16_t u16() {
        auto s = take(2);
        return failed ? 0 : get_u16(as_bytes(s).data());
    }
    char byte() {
        auto s = take(1);
        return failed ? 0 : s[0];
    }
    std::string cstring() {
        auto z = rest.find('\0');
        if (failed || z == std::string_view::npos) {
            failed = true;
            return {};
        }
        auto s = take(z);
        take(1);
        return s;
    }
    bool done() const { return !failed && rest.empty(); }
};

// ErrorResponse/NoticeResponse fields in wire order.
std::vector<std::pair<char, std::string>> fields_of(const std::string& body) {
    Reader r{body};
    std::vector<std::pair<char, std::string>> out;
    for (char code = r.byte(); !r.failed && code != 0; code = r.byte()) out.emplace_back(code, r.cstring());
    EXPECT_TRUE(r.done()) << "fields not terminated by a single NUL";
    return out;
}

// ---- Backend messages ----

TEST(ProtocolBuilders, ErrorResponseWithDetail) {
    std::string wire;
    write_error_response(wire, "FATAL", "28P01", "password authentication failed for user \"bob\"", "no such user");
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, 'E');
    auto e = parse_error_response(as_bytes(f->body));
    ASSERT_TRUE(e);
    EXPECT_EQ(e->severity, "FATAL");
    EXPECT_EQ(e->sqlstate, "28P01");
    EXPECT_EQ(e->message, "password authentication failed for user \"bob\"");
    EXPECT_EQ(e->detail, "no such user");
    EXPECT_EQ(e->hint, "");
    // 'V' (non-localized severity) lets drivers branch on it whatever the server language.
    std::vector<std::pair<char, std::string>> expected{
        {'S', "FATAL"}, {'V', "FATAL"}, {'C', "28P01"},
        {'M', "password authentication failed for user \"bob\""}, {'D', "no such user"}};
    EXPECT_EQ(fields_of(f->body), expected);
    expect_truncated_bodies_rejected(f->body, parse_error_response);
}

TEST(ProtocolBuilders, ErrorResponseWithoutDetailOmitsField) {
    std::string wire;
    write_error_response(wire, "ERROR", "08P01", "protocol violation");
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, 'E');
    auto e = parse_error_response(as_bytes(f->body));
    ASSERT_TRUE(e);
    EXPECT_EQ(e->severity, "ERROR");
    EXPECT_EQ(e->sqlstate, "08P01");
    EXPECT_EQ(e->message, "protocol violation");
    EXPECT_EQ(e->detail, "");
    for (auto& [code, value] : fields_of(f->body)) EXPECT_NE(code, 'D') << value;
    expect_truncated_bodies_rejected(f->body, parse_error_response);
}

TEST(ProtocolBuilders, ErrorResponseEmptyMessage) {
    std::string wire;
    write_error_response(wire, "ERROR", "XX000", "");
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    auto e = parse_error_response(as_bytes(f->body));
    ASSERT_TRUE(e);
    EXPECT_EQ(e->message, "");
    EXPECT_EQ(e->sqlstate, "XX000");
    expect_truncated_bodies_rejected(f->body, parse_error_response);
}

TEST(ProtocolBuilders, NoticeResponse) {
    std::string wire;
    write_notice_response(wire, "01000", "pgrouter: pool is paused");
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, 'N');
    auto e = parse_error_response(as_bytes(f->body));
    ASSERT_TRUE(e);
    EXPECT_EQ(e->severity, "NOTICE");
    EXPECT_EQ(e->sqlstate, "01000");
    EXPECT_EQ(e->message, "pgrouter: pool is paused");
    EXPECT_EQ(e->detail, "");
    std::vector<std::pair<char, std::string>> expected{
        {'S', "NOTICE"}, {'V', "NOTICE"}, {'C', "01000"}, {'M', "pgrouter: pool is paused"}};
    EXPECT_EQ(fields_of(f->body), expected);
    expect_truncated_bodies_rejected(f->body, parse_error_response);
}

// Checks an Authentication* message: type 'R', its code, and the data after the code.
void expect_auth(const std::string& wire, std::uint32_t code, const std::string& data) {
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, 'R');
    EXPECT_EQ(wire.size(), 9 + data.size());
    auto a = parse_auth_request(as_bytes(f->body));
    ASSERT_TRUE(a);
    EXPECT_EQ(a->code, code);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(a->data.data()), a->data.size()), data);
    for (std::size_t n = 0; n < 4; ++n) {
        auto prefix = exact(std::string_view(f->body).substr(0, n));
        EXPECT_FALSE(parse_auth_request(prefix)) << "body prefix " << n;
    }
}

TEST(ProtocolBuilders, AuthOk) {
    std::string wire;
    write_auth_ok(wire);
    EXPECT_EQ(wire, "R\0\0\0\x08\0\0\0\0"s);
    expect_auth(wire, 0, "");
}

TEST(ProtocolBuilders, AuthCleartext) {
    std::string wire;
    write_auth_cleartext(wire);
    expect_auth(wire, 3, "");
}

TEST(ProtocolBuilders, AuthMd5CarriesSaltVerbatim) {
    const std::uint8_t salt[4] = {0x00, 0xFF, 0x7F, 0x80};
    std::string wire;
    write_auth_md5(wire, salt);
    expect_auth(wire, 5, "\x00\xFF\x7F\x80"s);
}

TEST(ProtocolBuilders, AuthSaslListsOneMechanism) {
    std::string wire;
    write_auth_sasl(wire, "SCRAM-SHA-256");
    expect_auth(wire, 10, "SCRAM-SHA-256\0\0"s);
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    Reader r{std::string_view(f->body).substr(4)};
    EXPECT_EQ(r.cstring(), "SCRAM-SHA-256");
    EXPECT_EQ(r.cstring(), "");  // the empty name ends the list
    EXPECT_TRUE(r.done());
}

TEST(ProtocolBuilders, AuthSaslContinue) {
    const std::string data = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
    std::string wire;
    write_auth_sasl_continue(wire, data);
    expect_auth(wire, 11, data);
}

TEST(ProtocolBuilders, AuthSaslFinalKeepsBinaryData) {
    const std::string data = "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=\0\xff"s;
    std::string wire;
    write_auth_sasl_final(wire, data);
    expect_auth(wire, 12, data);
}

TEST(ProtocolBuilders, ParameterStatus) {
    std::string wire;
    write_parameter_status(wire, "server_version", "16.2 (pgrouter)");
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, 'S');
    auto p = parse_parameter_status(as_bytes(f->body));
    ASSERT_TRUE(p);
    EXPECT_EQ(p->first, "server_version");
    EXPECT_EQ(p->second, "16.2 (pgrouter)");
    expect_truncated_bodies_rejected(f->body, parse_parameter_status);
}

TEST(ProtocolBuilders, ParameterStatusEmptyValue) {
    std::string wire;
    write_parameter_status(wire, "application_name", "");
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    auto p = parse_parameter_status(as_bytes(f->body));
    ASSERT_TRUE(p);
    EXPECT_EQ(p->first, "application_name");
    EXPECT_EQ(p->second, "");
    expect_truncated_bodies_rejected(f->body, parse_parameter_status);
}

TEST(ProtocolBuilders, BackendKeyData) {
    for (auto [pid, key] : {std::pair<std::uint32_t, std::uint32_t>{4242, 0xDEADBEEF}, {0, 0},
                            {0xFFFFFFFF, 0x80000000}}) {
        std::string wire;
        write_backend_key_data(wire, pid, key);
        auto f = decode_frame(wire, decode_backend_header);
        ASSERT_TRUE(f);
        EXPECT_EQ(f->type, 'K');
        auto k = parse_backend_key_data(as_bytes(f->body));
        ASSERT_TRUE(k);
        EXPECT_EQ(k->first, pid);
        EXPECT_EQ(k->second, key);
        expect_truncated_bodies_rejected(f->body, parse_backend_key_data);
    }
}

TEST(ProtocolBuilders, ReadyForQuery) {
    for (char status : {'I', 'T', 'E'}) {
        std::string wire;
        write_ready_for_query(wire, status);
        EXPECT_EQ(wire.size(), 6u);
        auto f = decode_frame(wire, decode_backend_header);
        ASSERT_TRUE(f);
        EXPECT_EQ(f->type, 'Z');
        EXPECT_EQ(f->body, std::string(1, status));
    }
}

TEST(ProtocolBuilders, NegotiateProtocolVersion) {
    for (auto unrecognized :
         {std::vector<std::string>{}, std::vector<std::string>{"_pq_.compression", "_pq_.other"}}) {
        std::string wire;
        write_negotiate_protocol_version(wire, 0, unrecognized);
        auto f = decode_frame(wire, decode_backend_header);
        ASSERT_TRUE(f);
        EXPECT_EQ(f->type, 'v');
        Reader r{f->body};
        EXPECT_EQ(r.u32(), kProtocol30);  // the full version code, as PostgreSQL sends it
        ASSERT_EQ(r.u32(), unrecognized.size());
        for (auto& name : unrecognized) EXPECT_EQ(r.cstring(), name);
        EXPECT_TRUE(r.done());
    }
    std::string wire;
    write_negotiate_protocol_version(wire, 2, {});
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    Reader r{f->body};
    EXPECT_EQ(r.u32(), 0x00030002u);
}

TEST(ProtocolBuilders, RowDescription) {
    std::vector<Column> cols{{"database", 25, -1}, {"pool_size", 23, 4}, {"", 16, 1}};
    std::string wire;
    write_row_description(wire, cols);
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, 'T');
    Reader r{f->body};
    ASSERT_EQ(r.u16(), cols.size());
    for (auto& c : cols) {
        EXPECT_EQ(r.cstring(), c.name);
        EXPECT_EQ(r.u32(), 0u);  // table oid
        EXPECT_EQ(r.u16(), 0u);  // attribute number
        EXPECT_EQ(r.u32(), c.type_oid);
        EXPECT_EQ(static_cast<std::int16_t>(r.u16()), c.type_len);
        EXPECT_EQ(static_cast<std::int32_t>(r.u32()), -1);  // typmod
        EXPECT_EQ(r.u16(), 0u);                             // text format
    }
    EXPECT_TRUE(r.done());
}

TEST(ProtocolBuilders, RowDescriptionNoColumns) {
    std::string wire;
    write_row_description(wire, {});
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, 'T');
    EXPECT_EQ(f->body, "\0\0"s);
}

TEST(ProtocolBuilders, DataRowWithNullEmptyAndBinary) {
    std::vector<std::optional<std::string>> values{"pgrouter", std::nullopt, "", "a\0b\xff"s, std::nullopt};
    std::string wire;
    write_data_row(wire, values);
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, 'D');
    Reader r{f->body};
    ASSERT_EQ(r.u16(), values.size());
    for (auto& v : values) {
        auto len = static_cast<std::int32_t>(r.u32());
        if (!v) {
            EXPECT_EQ(len, -1);  // NULL has no bytes, unlike the empty string
            continue;
        }
        ASSERT_EQ(len, static_cast<std::int32_t>(v->size()));
        EXPECT_EQ(r.take(v->size()), *v);
    }
    EXPECT_TRUE(r.done());
}

TEST(ProtocolBuilders, DataRowNoColumns) {
    std::string wire;
    write_data_row(wire, {});
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->body, "\0\0"s);
}

TEST(ProtocolBuilders, CommandComplete) {
    for (std::string tag : {"SHOW", "SELECT 3", "SET", ""}) {
        std::string wire;
        write_command_complete(wire, tag);
        auto f = decode_frame(wire, decode_backend_header);
        ASSERT_TRUE(f);
        EXPECT_EQ(f->type, 'C');
        EXPECT_EQ(f->body.size(), tag.size() + 1);
        EXPECT_EQ(read_cstring(as_bytes(f->body)), tag);
        expect_truncated_bodies_rejected(f->body, read_cstring);
    }
}

TEST(ProtocolBuilders, EmptyQueryResponse) {
    std::string wire;
    write_empty_query_response(wire);
    EXPECT_EQ(wire, "I\0\0\0\x04"s);
    auto f = decode_frame(wire, decode_backend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, 'I');
    EXPECT_TRUE(f->body.empty());
}

// ---- Frontend messages ----

TEST(ProtocolBuilders, StartupMessage) {
    std::vector<std::pair<std::string, std::string>> params{
        {"user", "alice"}, {"database", "app"}, {"application_name", ""}, {"options", "-c search_path=a,b"}};
    std::string wire;
    write_startup_message(wire, params);
    EXPECT_EQ(get_u32(as_bytes(wire).data()), wire.size());
    auto r = decode_startup_checked(wire);
    ASSERT_EQ(r.status, Decode::ok) << r.error;
    EXPECT_EQ(r.packet.kind, StartupPacket::Kind::startup);
    EXPECT_EQ(r.packet.version, kProtocol30);
    EXPECT_EQ(r.packet.params, params);
    ASSERT_TRUE(r.packet.find("user"));
    EXPECT_EQ(*r.packet.find("user"), "alice");
    ASSERT_TRUE(r.packet.find("application_name"));
    EXPECT_EQ(*r.packet.find("application_name"), "");
    EXPECT_EQ(r.packet.find("missing"), nullptr);
    EXPECT_EQ(r.packet.find("USER"), nullptr);
    EXPECT_TRUE(r.error.empty());
}

TEST(ProtocolBuilders, StartupMessageNoParams) {
    std::string wire;
    write_startup_message(wire, {});
    EXPECT_EQ(wire, "\0\0\0\x09\0\x03\0\0\0"s);
    auto r = decode_startup_checked(wire);
    ASSERT_EQ(r.status, Decode::ok) << r.error;
    EXPECT_EQ(r.packet.kind, StartupPacket::Kind::startup);
    EXPECT_TRUE(r.packet.params.empty());
}

TEST(ProtocolBuilders, SslRequest) {
    std::string wire;
    write_ssl_request(wire);
    EXPECT_EQ(wire.size(), 8u);
    auto r = decode_startup_checked(wire);
    ASSERT_EQ(r.status, Decode::ok) << r.error;
    EXPECT_EQ(r.packet.kind, StartupPacket::Kind::ssl_request);
    EXPECT_EQ(r.packet.version, kSslRequestCode);
    EXPECT_TRUE(r.packet.params.empty());
}

TEST(ProtocolBuilders, CancelRequest) {
    for (auto [pid, key] : {std::pair<std::uint32_t, std::uint32_t>{4242, 0xDEADBEEF}, {0xFFFFFFFF, 0}}) {
        std::string wire;
        write_cancel_request(wire, pid, key);
        EXPECT_EQ(wire.size(), 16u);
        auto r = decode_startup_checked(wire);
        ASSERT_EQ(r.status, Decode::ok) << r.error;
        EXPECT_EQ(r.packet.kind, StartupPacket::Kind::cancel_request);
        EXPECT_EQ(r.packet.version, kCancelRequestCode);
        EXPECT_EQ(r.packet.cancel_pid, pid);
        EXPECT_EQ(r.packet.cancel_key, key);
    }
}

TEST(ProtocolBuilders, PasswordMessage) {
    for (std::string pw : {"s3cr'et\\"s, "md5" + std::string(32, 'a'), ""s}) {
        std::string wire;
        write_password_message(wire, pw);
        auto f = decode_frame(wire, decode_frontend_header);
        ASSERT_TRUE(f);
        EXPECT_EQ(f->type, 'p');
        EXPECT_EQ(f->body.size(), pw.size() + 1);
        EXPECT_EQ(read_cstring(as_bytes(f->body)), pw);
        expect_truncated_bodies_rejected(f->body, read_cstring);
    }
}

TEST(ProtocolBuilders, SaslInitialResponse) {
    const std::string data = "n,,n=,r=rOprNGfwEbeRWgbNEkqO";
    std::string wire;
    write_sasl_initial_response(wire, "SCRAM-SHA-256", data);
    auto f = decode_frame(wire, decode_frontend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, 'p');
    auto s = parse_sasl_initial_response(as_bytes(f->body));
    ASSERT_TRUE(s);
    EXPECT_EQ(s->mechanism, "SCRAM-SHA-256");
    EXPECT_EQ(s->data, data);
    expect_truncated_bodies_rejected(f->body, parse_sasl_initial_response);
}

TEST(ProtocolBuilders, SaslInitialResponseEmptyAndBinaryData) {
    for (std::string data : {""s, "\0\xff\0"s}) {
        std::string wire;
        write_sasl_initial_response(wire, "SCRAM-SHA-256-PLUS", data);
        auto f = decode_frame(wire, decode_frontend_header);
        ASSERT_TRUE(f);
        auto s = parse_sasl_initial_response(as_bytes(f->body));
        ASSERT_TRUE(s);
        EXPECT_EQ(s->mechanism, "SCRAM-SHA-256-PLUS");
        EXPECT_EQ(s->data, data);
        expect_truncated_bodies_rejected(f->body, parse_sasl_initial_response);
    }
}

TEST(ProtocolBuilders, SaslResponseIsRawData) {
    const std::string data = "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    std::string wire;
    write_sasl_response(wire, data);
    auto f = decode_frame(wire, decode_frontend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, 'p');
    EXPECT_EQ(f->body, data);
}

TEST(ProtocolBuilders, Query) {
    for (std::string sql : {"SET search_path = 'a''b'", "DISCARD ALL", ""}) {
        std::string wire;
        write_query(wire, sql);
        auto f = decode_frame(wire, decode_frontend_header);
        ASSERT_TRUE(f);
        EXPECT_EQ(f->type, 'Q');
        EXPECT_EQ(f->body.size(), sql.size() + 1);
        EXPECT_EQ(read_cstring(as_bytes(f->body)), sql);
        expect_truncated_bodies_rejected(f->body, read_cstring);
    }
}

TEST(ProtocolBuilders, Terminate) {
    std::string wire;
    write_terminate(wire);
    EXPECT_EQ(wire, "X\0\0\0\x04"s);
    auto f = decode_frame(wire, decode_frontend_header);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->type, 'X');
    EXPECT_TRUE(f->body.empty());
}

// Builders append: a batch of messages in one buffer splits back at the right places.
TEST(ProtocolBuilders, BuildersAppendToABatch) {
    std::string wire = "garbage-already-sent";
    const std::size_t start = wire.size();
    write_auth_ok(wire);
    write_parameter_status(wire, "client_encoding", "UTF8");
    write_backend_key_data(wire, 1, 2);
    write_ready_for_query(wire, 'I');
    std::string types;
    Bytes rest = as_bytes(wire).subspan(start);
    while (!rest.empty()) {
        auto h = decode_backend_header(rest);
        ASSERT_EQ(h.status, Decode::ok);
        ASSERT_LE(h.header.total(), rest.size());
        types.push_back(h.header.type);
        if (h.header.type == 'S') {
            auto p = parse_parameter_status(rest.subspan(5, h.header.body_size()));
            ASSERT_TRUE(p);
            EXPECT_EQ(p->second, "UTF8");
        }
        rest = rest.subspan(h.header.total());
    }
    EXPECT_EQ(types, "RSKZ");

    std::string front = "x";
    write_query(front, "SELECT 1");
    write_password_message(front, "pw");
    write_terminate(front);
    types.clear();
    rest = as_bytes(front).subspan(1);
    while (!rest.empty()) {
        auto h = decode_frontend_header(rest);
        ASSERT_EQ(h.status, Decode::ok);
        ASSERT_LE(h.header.total(), rest.size());
        types.push_back(h.header.type);
        rest = rest.subspan(h.header.total());
    }
    EXPECT_EQ(types, "QpX");
}

// ---- Helpers and quoting ----

TEST(ProtocolHelpers, IntegersAreBigEndian) {
    std::string s;
    put_u32(s, 0x01020304);
    put_u16(s, 0xA0B0);
    EXPECT_EQ(s, "\x01\x02\x03\x04\xA0\xB0"s);
    EXPECT_EQ(get_u32(as_bytes(s).data()), 0x01020304u);
    EXPECT_EQ(get_u16(as_bytes(s).data() + 4), 0xA0B0u);
    for (std::uint32_t v : {0u, 1u, 0x80u, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu}) {
        std::string b;
        put_u32(b, v);
        EXPECT_EQ(get_u32(as_bytes(b).data()), v);
    }
    for (std::uint16_t v : {std::uint16_t{0}, std::uint16_t{0xFF}, std::uint16_t{0x8000}, std::uint16_t{0xFFFF}}) {
        std::string b;
        put_u16(b, v);
        EXPECT_EQ(get_u16(as_bytes(b).data()), v);
    }
}

TEST(ProtocolHelpers, ReadCString) {
    EXPECT_EQ(read_cstring(as_bytes("abc\0def"s)), "abc");
    EXPECT_EQ(read_cstring(as_bytes("\0"s)), "");
    EXPECT_FALSE(read_cstring(as_bytes("abc")));
    EXPECT_FALSE(read_cstring(as_bytes("")));
    EXPECT_FALSE(read_cstring(Bytes{}));
}

TEST(ProtocolParsers, ErrorResponseSkipsUnknownFieldsAndNeedsTerminator) {
    auto body = "SERROR\0VERROR\0C42P01\0Mno table\0Hcreate it\0Pfile.c\0R42\0\0"s;
    auto e = parse_error_response(as_bytes(body));
    ASSERT_TRUE(e);
    EXPECT_EQ(e->severity, "ERROR");
    EXPECT_EQ(e->sqlstate, "42P01");
    EXPECT_EQ(e->message, "no table");
    EXPECT_EQ(e->hint, "create it");
    auto empty = parse_error_response(as_bytes("\0"s));
    ASSERT_TRUE(empty);
    EXPECT_EQ(empty->message, "");
    EXPECT_FALSE(parse_error_response(as_bytes("")));
    EXPECT_FALSE(parse_error_response(as_bytes("SERROR\0"s)));
    EXPECT_FALSE(parse_error_response(as_bytes("SERROR")));
    EXPECT_FALSE(parse_error_response(as_bytes("S")));
}

TEST(ProtocolParsers, ParameterStatusRejectsExtraOrMissingParts) {
    EXPECT_FALSE(parse_parameter_status(as_bytes("a\0b\0c"s)));
    EXPECT_FALSE(parse_parameter_status(as_bytes("a\0b\0\0"s)));
    EXPECT_FALSE(parse_parameter_status(as_bytes("a\0"s)));
    EXPECT_FALSE(parse_parameter_status(as_bytes("a")));
    EXPECT_FALSE(parse_parameter_status(Bytes{}));
    auto p = parse_parameter_status(as_bytes("\0\0"s));
    ASSERT_TRUE(p);
    EXPECT_EQ(p->first, "");
    EXPECT_EQ(p->second, "");
}

TEST(ProtocolParsers, BackendKeyDataNeedsExactlyEightBytes) {
    EXPECT_FALSE(parse_backend_key_data(as_bytes("1234567")));
    EXPECT_FALSE(parse_backend_key_data(as_bytes("123456789")));
    EXPECT_TRUE(parse_backend_key_data(as_bytes("12345678")));
}

TEST(ProtocolParsers, AuthRequestNeedsCode) {
    EXPECT_FALSE(parse_auth_request(as_bytes("\0\0\0"s)));
    auto a = parse_auth_request(as_bytes("\0\0\0\x0a" "abc"s));
    ASSERT_TRUE(a);
    EXPECT_EQ(a->code, 10u);
    EXPECT_EQ(a->data.size(), 3u);
}

TEST(ProtocolParsers, SaslInitialResponseLengths) {
    // -1: no initial response.
    auto none = parse_sasl_initial_response(as_bytes("SCRAM-SHA-256\0\xff\xff\xff\xff"s));
    ASSERT_TRUE(none);
    EXPECT_EQ(none->mechanism, "SCRAM-SHA-256");
    EXPECT_EQ(none->data, "");
    EXPECT_FALSE(parse_sasl_initial_response(as_bytes("SCRAM-SHA-256\0\xff\xff\xff\xff" "junk"s)));
    // The declared length must match the bytes present.
    EXPECT_FALSE(parse_sasl_initial_response(as_bytes("M\0\0\0\0\x03" "ab"s)));
    EXPECT_FALSE(parse_sasl_initial_response(as_bytes("M\0\0\0\0\x01" "ab"s)));
    EXPECT_FALSE(parse_sasl_initial_response(as_bytes("M\0\xff\xff\xff\xfe"s)));
    EXPECT_FALSE(parse_sasl_initial_response(as_bytes("M\0\x80\0\0\0"s)));
    EXPECT_FALSE(parse_sasl_initial_response(as_bytes("M\0\0\0\0"s)));
    EXPECT_FALSE(parse_sasl_initial_response(as_bytes("M")));
    EXPECT_FALSE(parse_sasl_initial_response(Bytes{}));
}

TEST(ProtocolQuoting, Literal) {
    EXPECT_EQ(quote_literal(""), "''");
    EXPECT_EQ(quote_literal("abc"), "'abc'");
    EXPECT_EQ(quote_literal("it's"), "'it''s'");
    EXPECT_EQ(quote_literal("''"), "''''''");
    EXPECT_EQ(quote_literal("\"x\""), "'\"x\"'");
    // A backslash switches to E'' so the result means the same whatever standard_conforming_strings is.
    EXPECT_EQ(quote_literal("a\\b"), "E'a\\\\b'");
    EXPECT_EQ(quote_literal("\\"), "E'\\\\'");
    EXPECT_EQ(quote_literal("it's \\'"), "E'it''s \\\\'''");
    EXPECT_EQ(quote_literal("C:\\dir\\'x'"), "E'C:\\\\dir\\\\''x'''");
}

TEST(ProtocolQuoting, Ident) {
    EXPECT_EQ(quote_ident(""), "\"\"");
    EXPECT_EQ(quote_ident("search_path"), "\"search_path\"");
    EXPECT_EQ(quote_ident("Mixed Case"), "\"Mixed Case\"");
    EXPECT_EQ(quote_ident("a\"b"), "\"a\"\"b\"");
    EXPECT_EQ(quote_ident("\"\""), "\"\"\"\"\"\"");
    // Identifiers have no backslash escapes and single quotes need none.
    EXPECT_EQ(quote_ident("a\\b"), "\"a\\b\"");
    EXPECT_EQ(quote_ident("it's"), "\"it's\"");
}

}  // namespace
}  // namespace pgrouter::protocol
