// Random and mutated bytes into every decoder: no crash, no read past the buffer
// (each input is an exactly sized heap copy, so ASan/valgrind see overruns), and
// results that stay consistent with the input.
#include "pgrouter/protocol/protocol.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::protocol {
namespace {

using namespace std::string_literals;
using Buffer = std::vector<std::byte>;

constexpr int kIterations = 20000;

class Rng {
public:
    explicit Rng(std::uint32_t seed) : gen_(seed) {}

    std::size_t below(std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(gen_); }

    // Skewed towards NULs, letters and 0xFF so parsers reach their deeper branches.
    std::byte byte() {
        switch (below(8)) {
            case 0: case 1: return std::byte{0};
            case 2: return std::byte{0xFF};
            case 3: case 4: return static_cast<std::byte>("SVCMDHQpEXcSZ"[below(13)]);
            default: return static_cast<std::byte>(below(256));
        }
    }

    std::size_t length() { return below(10) == 0 ? below(600) : below(40); }

    Buffer bytes(std::size_t n) {
        Buffer b(n);
        for (auto& x : b) x = byte();
        return b;
    }

    std::uint32_t u32() { return static_cast<std::uint32_t>(gen_()); }

private:
    std::mt19937 gen_;
};

Buffer buffer(std::string_view s) {
    auto b = as_bytes(s);
    return {b.begin(), b.end()};
}

std::string text(Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

// ---- Invariant checks, one per decoder ----

void check_header(Bytes buf, HeaderResult (*decode)(Bytes), bool frontend) {
    auto r = decode(buf);
    if (buf.size() < 5) {
        ASSERT_EQ(r.status, Decode::need_more);
        return;
    }
    ASSERT_NE(r.status, Decode::need_more);
    // The verdict depends on the 5 header bytes only.
    auto h = decode(buf.first(5));
    ASSERT_EQ(h.status, r.status);
    if (r.status == Decode::error) {
        ASSERT_NE(r.error, nullptr);
        return;
    }
    ASSERT_EQ(r.header.type, static_cast<char>(buf[0]));
    ASSERT_EQ(r.header.length, get_u32(buf.data() + 1));
    ASSERT_GE(r.header.length, 4u);
    ASSERT_LE(r.header.length, kMaxMessage);
    if (frontend) {
        auto max = frontend_max_length(r.header.type);
        ASSERT_NE(max, 0u);
        ASSERT_LE(r.header.length, max);
        if (max == 4) {
            ASSERT_EQ(r.header.length, 4u);
        }
    }
}

void check_startup(Bytes buf) {
    auto r = decode_startup(buf);
    if (r.status == Decode::need_more) {
        ASSERT_EQ(r.consumed, 0u);
        if (buf.size() >= 4) {
            ASSERT_LT(buf.size(), get_u32(buf.data()));
        }
        return;
    }
    if (r.status == Decode::error) {
        ASSERT_FALSE(r.error.empty());
        return;
    }
    ASSERT_GE(buf.size(), 8u);
    ASSERT_EQ(r.consumed, get_u32(buf.data()));
    ASSERT_GE(r.consumed, 8u);
    ASSERT_LE(r.consumed, std::min<std::size_t>(buf.size(), kMaxStartupPacket));
    ASSERT_EQ(r.packet.version, get_u32(buf.data() + 4));
    // Bytes after the packet do not change the verdict.
    auto alone = decode_startup(buf.first(r.consumed));
    ASSERT_EQ(alone.status, Decode::ok);
    ASSERT_EQ(alone.packet.params, r.packet.params);
    std::size_t encoded = 0;
    for (auto& [k, v] : r.packet.params) {
        ASSERT_FALSE(k.empty());
        ASSERT_EQ(k.find('\0'), std::string::npos);
        ASSERT_EQ(v.find('\0'), std::string::npos);
        encoded += k.size() + v.size() + 2;
    }
    ASSERT_LE(8 + encoded, r.consumed);
    if (r.packet.kind == StartupPacket::Kind::startup && (r.packet.version >> 16) == 3) {
        // A well-formed v3 startup packet re-encodes to the same bytes after the version.
        std::string again;
        write_startup_message(again, r.packet.params);
        ASSERT_EQ(again.substr(8), text(buf.subspan(8, r.consumed - 8)));
    }
}

void check_bodies(Bytes body) {
    if (auto s = read_cstring(body)) {
        ASSERT_LT(s->size(), body.size());
        ASSERT_EQ(static_cast<char>(body[s->size()]), '\0');
    }
    if (auto e = parse_error_response(body)) {
        ASSERT_FALSE(body.empty());
        for (auto* f : {&e->severity, &e->sqlstate, &e->message, &e->detail, &e->hint}) {
            ASSERT_LT(f->size(), body.size());
            ASSERT_EQ(f->find('\0'), std::string::npos);
        }
    }
    if (auto p = parse_parameter_status(body)) {
        std::string again;
        write_parameter_status(again, p->first, p->second);
        ASSERT_EQ(again.substr(5), text(body));
    }
    if (auto s = parse_sasl_initial_response(body)) {
        ASSERT_EQ(s->mechanism.find('\0'), std::string::npos);
        ASSERT_EQ(s->mechanism.size() + 5 + s->data.size(), body.size());
        auto n = get_u32(body.data() + s->mechanism.size() + 1);
        if (n != 0xFFFFFFFFu) {
            std::string again;
            write_sasl_initial_response(again, s->mechanism, s->data);
            ASSERT_EQ(again.substr(5), text(body));
        }
    }
    if (auto a = parse_auth_request(body)) {
        ASSERT_EQ(a->code, get_u32(body.data()));
        ASSERT_EQ(a->data.size() + 4, body.size());
    }
    if (auto k = parse_backend_key_data(body)) {
        std::string again;
        write_backend_key_data(again, k->first, k->second);
        ASSERT_EQ(again.substr(5), text(body));
    }
}

void check_all(const Buffer& b) {
    ASSERT_NO_FATAL_FAILURE(check_header(b, decode_frontend_header, true));
    ASSERT_NO_FATAL_FAILURE(check_header(b, decode_backend_header, false));
    ASSERT_NO_FATAL_FAILURE(check_startup(b));
    ASSERT_NO_FATAL_FAILURE(check_bodies(b));
}

// ---- Inputs ----

TEST(ProtocolRandom, RandomBytesIntoEveryDecoder) {
    Rng rng(0x5eed0001);
    for (int i = 0; i < kIterations; ++i) {
        auto b = rng.bytes(rng.length());
        ASSERT_NO_FATAL_FAILURE(check_all(b)) << "iteration " << i;
    }
}

// Valid type bytes and lengths near the limits, so headers get past the type check.
TEST(ProtocolRandom, HeaderShapedBytes) {
    Rng rng(0x5eed0002);
    const std::string types = "QPBdFfECDpSHXcRZTKNv";
    const std::uint32_t lengths[] = {0, 3, 4, 5, 9999, 10000, 10001, kMaxMessage, kMaxMessage + 1, 0xFFFFFFFF};
    for (int i = 0; i < kIterations; ++i) {
        std::string s(1, types[rng.below(types.size())]);
        put_u32(s, rng.below(2) ? lengths[rng.below(std::size(lengths))] : rng.u32());
        auto b = buffer(s);
        auto extra = rng.bytes(rng.below(8));
        b.insert(b.end(), extra.begin(), extra.end());
        b.resize(rng.below(b.size() + 1));
        ASSERT_NO_FATAL_FAILURE(check_all(b)) << "iteration " << i;
    }
}

// A length that matches the buffer and a plausible code, so decode_startup reaches the parameter loop.
TEST(ProtocolRandom, StartupShapedBytes) {
    Rng rng(0x5eed0003);
    const std::uint32_t codes[] = {kProtocol30, 0x00030002, 0x00020000, kSslRequestCode, kGssEncRequestCode,
                                   kCancelRequestCode, 80877105};
    for (int i = 0; i < kIterations; ++i) {
        auto body = rng.bytes(rng.length());
        if (rng.below(2)) body.push_back(std::byte{0});
        std::string s;
        std::uint32_t len = static_cast<std::uint32_t>(8 + body.size());
        if (rng.below(8) == 0) len = rng.below(4) ? len + static_cast<std::uint32_t>(rng.below(9)) - 4 : rng.u32();
        put_u32(s, len);
        put_u32(s, rng.below(8) ? codes[rng.below(std::size(codes))] : rng.u32());
        auto b = buffer(s);
        b.insert(b.end(), body.begin(), body.end());
        ASSERT_NO_FATAL_FAILURE(check_all(b)) << "iteration " << i;
    }
}

std::vector<std::string> valid_messages() {
    std::vector<std::string> out;
    std::string m;
    write_error_response(m, "FATAL", "28P01", "password authentication failed", "detail");
    out.push_back(m.substr(5));
    m.clear();
    write_notice_response(m, "01000", "notice");
    out.push_back(m.substr(5));
    m.clear();
    write_parameter_status(m, "TimeZone", "UTC");
    out.push_back(m.substr(5));
    m.clear();
    write_sasl_initial_response(m, "SCRAM-SHA-256", "n,,n=,r=abc");
    out.push_back(m.substr(5));
    out.push_back("SCRAM-SHA-256\0\xff\xff\xff\xff"s);
    m.clear();
    write_backend_key_data(m, 1, 2);
    out.push_back(m.substr(5));
    m.clear();
    write_auth_sasl(m, "SCRAM-SHA-256");
    out.push_back(m.substr(5));
    m.clear();
    write_startup_message(m, {{"user", "alice"}, {"database", "app"}});
    out.push_back(m);
    m.clear();
    write_cancel_request(m, 7, 8);
    out.push_back(m);
    m.clear();
    write_ssl_request(m);
    out.push_back(m);
    m.clear();
    write_query(m, "SELECT 1");
    write_terminate(m);
    out.push_back(m);
    return out;
}

// Small edits to valid messages reach the paths random bytes rarely do.
TEST(ProtocolRandom, MutatedValidMessages) {
    Rng rng(0x5eed0004);
    const auto seeds = valid_messages();
    for (auto& s : seeds) ASSERT_NO_FATAL_FAILURE(check_all(buffer(s)));
    for (int i = 0; i < kIterations; ++i) {
        auto b = buffer(seeds[rng.below(seeds.size())]);
        for (std::size_t edits = 1 + rng.below(4); edits > 0; --edits) {
            switch (rng.below(4)) {
                case 0:
                    if (!b.empty()) b[rng.below(b.size())] = rng.byte();
                    break;
                case 1: b.insert(b.begin() + static_cast<std::ptrdiff_t>(rng.below(b.size() + 1)), rng.byte()); break;
                case 2:
                    if (!b.empty()) b.erase(b.begin() + static_cast<std::ptrdiff_t>(rng.below(b.size())));
                    break;
                default: b.resize(rng.below(b.size() + 1)); break;
            }
        }
        ASSERT_NO_FATAL_FAILURE(check_all(b)) << "iteration " << i;
    }
}

}  // namespace
}  // namespace pgrouter::protocol
