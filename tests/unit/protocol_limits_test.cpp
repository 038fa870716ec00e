// Per-type length limits, checked from the header alone before any body is read
// (STYLE rule 2), and the startup packet's layout rules.
#include "pgrouter/protocol/protocol.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::protocol {
namespace {

using namespace std::string_literals;

// Only the 5 header bytes, exactly sized, so a decoder that reads the body would overrun.
std::vector<std::byte> header(char type, std::uint32_t length) {
    std::string s(1, type);
    put_u32(s, length);
    auto b = as_bytes(s);
    return {b.begin(), b.end()};
}

std::vector<std::byte> exact(std::string_view s) {
    auto b = as_bytes(s);
    return {b.begin(), b.end()};
}

// Startup-phase packet: int32 length (counting itself), int32 code, then `rest`.
std::string startup_packet(std::uint32_t code, std::string_view rest) {
    std::string s;
    put_u32(s, static_cast<std::uint32_t>(8 + rest.size()));
    put_u32(s, code);
    s.append(rest);
    return s;
}

void expect_header_error(char type, std::uint32_t length) {
    auto r = decode_frontend_header(header(type, length));
    EXPECT_EQ(r.status, Decode::error) << "type " << int(static_cast<unsigned char>(type)) << " length " << length;
    EXPECT_NE(r.error, nullptr);
}

void expect_header_ok(char type, std::uint32_t length) {
    auto r = decode_frontend_header(header(type, length));
    ASSERT_EQ(r.status, Decode::ok) << "type " << type << " length " << length << ": " << (r.error ? r.error : "");
    EXPECT_EQ(r.header.type, type);
    EXPECT_EQ(r.header.length, length);
}

const std::string kControl = "SHXc";  // Sync, Flush, Terminate, CopyDone
const std::string kLarge = "QPBdFf";  // Query, Parse, Bind, CopyData, FunctionCall, CopyFail
const std::string kSmallTypes = "ECDp";  // Execute, Close, Describe, password/SASL

TEST(ProtocolLimits, FrontendTypeTable) {
    for (int i = 0; i < 256; ++i) {
        char t = static_cast<char>(i);
        std::uint32_t expected = 0;
        if (kControl.find(t) != std::string::npos) expected = 4;
        if (kLarge.find(t) != std::string::npos) expected = kMaxMessage;
        if (kSmallTypes.find(t) != std::string::npos) expected = 10000;
        EXPECT_EQ(frontend_max_length(t), expected) << "type " << i;
    }
}

TEST(ProtocolLimits, UnknownFrontendTypeIsError) {
    for (int i = 0; i < 256; ++i) {
        char t = static_cast<char>(i);
        if (frontend_max_length(t) != 0) continue;
        expect_header_error(t, 4);
        expect_header_error(t, 100);
    }
    // Backend-only types a client must never send.
    for (char t : {'R', 'Z', 'T', 'K', 'N', 'A', 'G', 'W', 'v', '1', '2', '3', 'n', 's', 't', 'I', '\0'})
        expect_header_error(t, 4);
}

TEST(ProtocolLimits, ControlMessagesMustBeExactlyFour) {
    for (char t : kControl) {
        expect_header_ok(t, 4);
        for (std::uint32_t len : {0u, 1u, 3u, 5u, 8u, 10000u, kMaxMessage, 0xFFFFFFFFu}) expect_header_error(t, len);
    }
}

TEST(ProtocolLimits, LengthBelowFourIsError) {
    for (char t : kControl + kLarge + kSmallTypes)
        for (std::uint32_t len = 0; len < 4; ++len) expect_header_error(t, len);
    for (std::uint32_t len = 0; len < 4; ++len) {
        auto r = decode_backend_header(header('D', len));
        EXPECT_EQ(r.status, Decode::error) << len;
        EXPECT_NE(r.error, nullptr);
    }
}

TEST(ProtocolLimits, LargeMessagesCappedAtOneGigabyte) {
    for (char t : kLarge) {
        expect_header_ok(t, 4);
        expect_header_ok(t, 5);
        expect_header_ok(t, kMaxMessage);
        expect_header_error(t, kMaxMessage + 1);
        expect_header_error(t, 0x7FFFFFFFu);
        expect_header_error(t, 0xFFFFFFFFu);
    }
}

TEST(ProtocolLimits, ExecuteCloseDescribePasswordCappedAt10000) {
    for (char t : kSmallTypes) {
        expect_header_ok(t, 4);
        expect_header_ok(t, 10000);
        expect_header_error(t, 10001);
        expect_header_error(t, 1u << 20);
        expect_header_error(t, kMaxMessage);
    }
}

TEST(ProtocolLimits, BackendHeaderAcceptsAnyTypeUpToOneGigabyte) {
    for (int i = 0; i < 256; ++i) {
        auto r = decode_backend_header(header(static_cast<char>(i), 4));
        EXPECT_EQ(r.status, Decode::ok) << i;
    }
    EXPECT_EQ(decode_backend_header(header('D', kMaxMessage)).status, Decode::ok);
    EXPECT_EQ(decode_backend_header(header('D', kMaxMessage + 1)).status, Decode::error);
    EXPECT_EQ(decode_backend_header(header('D', 0xFFFFFFFFu)).status, Decode::error);
}

TEST(ProtocolLimits, HeaderErrorsNeedOnlyFiveBytes) {
    // An oversized length is refused at once rather than waited for.
    auto big = header('Q', kMaxMessage + 1);
    EXPECT_EQ(decode_frontend_header(big).status, Decode::error);
    for (std::size_t n = 0; n < 5; ++n) {
        EXPECT_EQ(decode_frontend_header(Bytes(big).first(n)).status, Decode::need_more) << n;
        EXPECT_EQ(decode_backend_header(Bytes(big).first(n)).status, Decode::need_more) << n;
    }
    // Unknown types too wait for the whole header: callers only ever see need_more below 5 bytes.
    EXPECT_EQ(decode_frontend_header(exact("?")).status, Decode::need_more);
    EXPECT_EQ(decode_frontend_header(Bytes{}).status, Decode::need_more);
}

// ---- Startup packets ----

TEST(ProtocolLimits, StartupLengthBelowEightIsErrorFromFourBytes) {
    for (std::uint32_t len = 0; len < 8; ++len) {
        std::string s;
        put_u32(s, len);
        auto r = decode_startup(exact(s));
        EXPECT_EQ(r.status, Decode::error) << len;
        EXPECT_FALSE(r.error.empty());
        EXPECT_EQ(r.consumed, 0u);
    }
}

TEST(ProtocolLimits, StartupLengthOver10000IsErrorFromFourBytes) {
    for (std::uint32_t len : {10001u, 65536u, kMaxMessage, 0x80000000u, 0xFFFFFFFFu}) {
        std::string s;
        put_u32(s, len);
        auto r = decode_startup(exact(s));
        EXPECT_EQ(r.status, Decode::error) << len;
        EXPECT_FALSE(r.error.empty());
    }
}

TEST(ProtocolLimits, StartupOfExactly10000BytesIsAccepted) {
    std::string params = "user"s + '\0' + "bob"s + '\0' + "options"s + '\0';
    std::string value(10000 - 8 - params.size() - 2, 'x');
    auto wire = startup_packet(kProtocol30, params + value + '\0' + '\0');
    ASSERT_EQ(wire.size(), 10000u);
    auto r = decode_startup(exact(wire));
    ASSERT_EQ(r.status, Decode::ok) << r.error;
    EXPECT_EQ(r.consumed, 10000u);
    ASSERT_EQ(r.packet.params.size(), 2u);
    EXPECT_EQ(r.packet.params[1].second, value);
}

TEST(ProtocolLimits, StartupMissingTerminatorIsError) {
    for (auto rest : {"user\0bob\0"s, "user\0bob"s, "user\0"s, "user"s, ""s, "user\0bob\0database"s}) {
        auto wire = startup_packet(kProtocol30, rest);
        auto r = decode_startup(exact(wire));
        EXPECT_EQ(r.status, Decode::error) << "rest of " << rest.size() << " bytes";
        EXPECT_FALSE(r.error.empty());
    }
}

TEST(ProtocolLimits, StartupDataAfterTerminatorIsError) {
    for (auto rest : {"\0\0"s, "user\0bob\0\0x"s, "user\0bob\0\0\0"s}) {
        auto wire = startup_packet(kProtocol30, rest);
        auto r = decode_startup(exact(wire));
        EXPECT_EQ(r.status, Decode::error) << "rest of " << rest.size() << " bytes";
        EXPECT_FALSE(r.error.empty());
    }
}

TEST(ProtocolLimits, StartupKeepsMinorVersion) {
    auto wire = startup_packet(0x00030002, "user\0bob\0\0"s);
    auto r = decode_startup(exact(wire));
    ASSERT_EQ(r.status, Decode::ok) << r.error;
    EXPECT_EQ(r.packet.kind, StartupPacket::Kind::startup);
    EXPECT_EQ(r.packet.version, 0x00030002u);
    ASSERT_NE(r.packet.find("user"), nullptr);
    EXPECT_EQ(*r.packet.find("user"), "bob");
}

TEST(ProtocolLimits, EncryptionRequestsMustBeEightBytes) {
    for (std::uint32_t code : {kSslRequestCode, kGssEncRequestCode}) {
        auto ok = startup_packet(code, "");
        auto r = decode_startup(exact(ok));
        ASSERT_EQ(r.status, Decode::ok) << r.error;
        EXPECT_EQ(r.consumed, 8u);
        EXPECT_EQ(r.packet.kind, code == kSslRequestCode ? StartupPacket::Kind::ssl_request
                                                         : StartupPacket::Kind::gssenc_request);
        for (auto rest : {"\0\0\0\0"s, "\0"s, std::string(100, '\0')}) {
            auto bad = startup_packet(code, rest);
            auto e = decode_startup(exact(bad));
            EXPECT_EQ(e.status, Decode::error) << code << " length " << bad.size();
            EXPECT_FALSE(e.error.empty());
        }
    }
}

TEST(ProtocolLimits, CancelRequestMustBeSixteenBytes) {
    for (auto rest : {""s, "\0\0\0\x01"s, "\0\0\0\x01\0\0\0\x02\0\0\0\x03"s}) {
        auto bad = startup_packet(kCancelRequestCode, rest);
        auto e = decode_startup(exact(bad));
        EXPECT_EQ(e.status, Decode::error) << "length " << bad.size();
        EXPECT_FALSE(e.error.empty());
    }
    auto ok = startup_packet(kCancelRequestCode, "\0\0\0\x01\0\0\0\x02"s);
    auto r = decode_startup(exact(ok));
    ASSERT_EQ(r.status, Decode::ok) << r.error;
    EXPECT_EQ(r.packet.cancel_pid, 1u);
    EXPECT_EQ(r.packet.cancel_key, 2u);
}

}  // namespace
}  // namespace pgrouter::protocol
