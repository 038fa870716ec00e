// Pure PostgreSQL v3 wire codec: frame validation, startup packets, the few
// message bodies the pooler must understand, and builders. No I/O, no logging.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgrouter::protocol {

using Bytes = std::span<const std::byte>;
inline Bytes as_bytes(std::string_view s) { return {reinterpret_cast<const std::byte*>(s.data()), s.size()}; }

enum class Decode { ok, need_more, error };

constexpr std::uint32_t kProtocol30 = 196608;  // 3.0
constexpr std::uint32_t kCancelRequestCode = 80877102;
constexpr std::uint32_t kSslRequestCode = 80877103;
constexpr std::uint32_t kGssEncRequestCode = 80877104;
constexpr std::uint32_t kMaxStartupPacket = 10000;
constexpr std::uint32_t kMaxMessage = 0x40000000;  // PostgreSQL's 1 GB limit

// A regular message header: type byte + int32 length (which counts itself).
struct MessageHeader {
    char type = 0;
    std::uint32_t length = 0;
    std::size_t total() const { return 1 + static_cast<std::size_t>(length); }
    std::size_t body_size() const { return length - 4; }
};
struct HeaderResult {
    Decode status = Decode::need_more;
    MessageHeader header;
    const char* error = nullptr;  // set when status == error
};
// Validates the type and the length against per-type limits before any body is read.
HeaderResult decode_frontend_header(Bytes buf);
HeaderResult decode_backend_header(Bytes buf);
// The largest length a frontend message of this type may have (0 = unknown type).
std::uint32_t frontend_max_length(char type);

struct StartupPacket {
    enum class Kind { startup, ssl_request, gssenc_request, cancel_request };
    Kind kind = Kind::startup;
    std::uint32_t version = 0;
    std::vector<std::pair<std::string, std::string>> params;
    std::uint32_t cancel_pid = 0, cancel_key = 0;
    const std::string* find(std::string_view name) const;
};
struct StartupResult {
    Decode status = Decode::need_more;
    std::size_t consumed = 0;
    StartupPacket packet;
    std::string error;
};
StartupResult decode_startup(Bytes buf);

// Bodies the pooler reads.
struct ErrorFields {
    std::string severity, sqlstate, message, detail, hint;
};
std::optional<ErrorFields> parse_error_response(Bytes body);
std::optional<std::pair<std::string, std::string>> parse_parameter_status(Bytes body);
struct AuthRequest {
    std::uint32_t code = 0;  // 0 ok, 3 cleartext, 5 md5, 10 SASL, 11 SASL continue, 12 SASL final
    Bytes data;              // the rest of the body
};
std::optional<AuthRequest> parse_auth_request(Bytes body);
std::optional<std::pair<std::uint32_t, std::uint32_t>> parse_backend_key_data(Bytes body);
struct SaslInitial {
    std::string mechanism;
    std::string data;
};
std::optional<SaslInitial> parse_sasl_initial_response(Bytes body);
// A C string at the start of `body` (without the NUL); nullopt when unterminated.
std::optional<std::string_view> read_cstring(Bytes body);

// Builders append one whole message to `out`.
void put_u32(std::string& out, std::uint32_t v);
void put_u16(std::string& out, std::uint16_t v);
std::uint32_t get_u32(const std::byte* p);
std::uint16_t get_u16(const std::byte* p);

void write_error_response(std::string& out, std::string_view severity, std::string_view sqlstate,
                          std::string_view message, std::string_view detail = {});
void write_notice_response(std::string& out, std::string_view sqlstate, std::string_view message);
void write_auth_ok(std::string& out);
void write_auth_cleartext(std::string& out);
void write_auth_md5(std::string& out, const std::uint8_t salt[4]);
void write_auth_sasl(std::string& out, std::string_view mechanism);
void write_auth_sasl_continue(std::string& out, std::string_view data);
void write_auth_sasl_final(std::string& out, std::string_view data);
void write_parameter_status(std::string& out, std::string_view name, std::string_view value);
void write_backend_key_data(std::string& out, std::uint32_t pid, std::uint32_t key);
void write_ready_for_query(std::string& out, char status);
void write_negotiate_protocol_version(std::string& out, std::uint32_t newest_minor,
                                      const std::vector<std::string>& unrecognized);
struct Column {
    std::string name;
    std::uint32_t type_oid = 25;  // text
    std::int16_t type_len = -1;
};
void write_row_description(std::string& out, const std::vector<Column>& cols);
void write_data_row(std::string& out, const std::vector<std::optional<std::string>>& values);
void write_command_complete(std::string& out, std::string_view tag);
void write_empty_query_response(std::string& out);

// Frontend messages the pooler sends to servers.
void write_startup_message(std::string& out, const std::vector<std::pair<std::string, std::string>>& params);
void write_ssl_request(std::string& out);
void write_cancel_request(std::string& out, std::uint32_t pid, std::uint32_t key);
void write_password_message(std::string& out, std::string_view password);
void write_sasl_initial_response(std::string& out, std::string_view mechanism, std::string_view data);
void write_sasl_response(std::string& out, std::string_view data);
void write_query(std::string& out, std::string_view sql);
void write_terminate(std::string& out);

// SQL literal quoting for SET commands the pooler issues: 'it''s'.
std::string quote_literal(std::string_view);
std::string quote_ident(std::string_view);

}  // namespace pgrouter::protocol
