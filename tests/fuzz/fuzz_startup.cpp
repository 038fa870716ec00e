// libFuzzer target: arbitrary bytes as the first packet a client sends
// (StartupMessage, SSLRequest, GSSENCRequest or CancelRequest).
#include "pgrouter/protocol/protocol.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using namespace pgrouter::protocol;

void check(bool ok, const char* what) {
    if (ok) return;
    std::fprintf(stderr, "fuzz_startup: invariant broken: %s\n", what);
    std::abort();
}

void check_packet(Bytes buf, const StartupResult& r) {
    std::uint32_t len = get_u32(buf.data());
    check(r.consumed == len, "consumed == declared length");
    check(len >= 8 && len <= kMaxStartupPacket && len <= buf.size(), "length within limits and buffer");
    check(r.packet.version == get_u32(buf.data() + 4), "version is the second word");
    switch (r.packet.kind) {
        case StartupPacket::Kind::ssl_request:
        case StartupPacket::Kind::gssenc_request: check(len == 8, "encryption request is 8 bytes"); break;
        case StartupPacket::Kind::cancel_request:
            check(len == 16, "cancel request is 16 bytes");
            check(r.packet.cancel_pid == get_u32(buf.data() + 8), "cancel pid");
            check(r.packet.cancel_key == get_u32(buf.data() + 12), "cancel key");
            break;
        case StartupPacket::Kind::startup: {
            std::size_t encoded = 8 + 1;
            for (auto& [k, v] : r.packet.params) {
                check(!k.empty(), "parameter names are not empty");
                check(k.find('\0') == std::string::npos && v.find('\0') == std::string::npos, "no NUL inside");
                encoded += k.size() + v.size() + 2;
            }
            if ((r.packet.version >> 16) != 3) break;
            // A v3 packet is exactly its parameters and a terminator: re-encoding gives the same bytes.
            check(encoded == len, "v3 parameters fill the packet");
            std::string again;
            write_startup_message(again, r.packet.params);
            check(again.size() == len, "re-encoded length");
            check(std::equal(again.begin() + 8, again.end(), reinterpret_cast<const char*>(buf.data()) + 8),
                  "re-encoded bytes");
            break;
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Bytes buf(reinterpret_cast<const std::byte*>(data), size);
    auto r = decode_startup(buf);
    switch (r.status) {
        case Decode::need_more:
            check(r.consumed == 0, "need_more consumes nothing");
            check(size < 4 || size < get_u32(buf.data()), "need_more only before the whole packet");
            return 0;
        case Decode::error: check(!r.error.empty(), "errors carry a message"); return 0;
        case Decode::ok: break;
    }
    check_packet(buf, r);
    // The packet alone gives the same result, and any shorter prefix needs more.
    auto alone = decode_startup(buf.first(r.consumed));
    check(alone.status == Decode::ok && alone.packet.params == r.packet.params, "trailing bytes are ignored");
    for (std::size_t n : {std::size_t{0}, std::size_t{3}, std::size_t{4}, std::size_t{7}, r.consumed / 2,
                          r.consumed - 1}) {
        if (n >= r.consumed) continue;
        auto p = decode_startup(buf.first(n));
        check(p.status == Decode::need_more, "a truncated packet needs more");
    }
    return 0;
}
