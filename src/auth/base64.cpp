// Base64 (RFC 4648, padded, strict) and OpenSSL randomness for SCRAM.
#include "pgrouter/auth/auth.hpp"

#include <openssl/rand.h>

#include <climits>
#include <stdexcept>

namespace pgrouter::auth {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int decode_char(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

}  // namespace

std::string base64_encode(const std::uint8_t* data, std::size_t n) {
    std::string out;
    out.reserve((n + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) | data[i + 2];
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += kAlphabet[(v >> 6) & 63];
        out += kAlphabet[v & 63];
    }
    if (std::size_t rest = n - i; rest > 0) {
        std::uint32_t v = std::uint32_t{data[i]} << 16;
        if (rest == 2) v |= std::uint32_t{data[i + 1]} << 8;
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

// Strict: no whitespace, padding required, padding only at the end, unused bits zero.
// SCRAM attributes and stored secrets are always canonical, so anything else is an error.
std::optional<Bytes> base64_decode(std::string_view in) {
    if (in.size() % 4 != 0) return std::nullopt;
    Bytes out;
    out.reserve(in.size() / 4 * 3);
    for (std::size_t i = 0; i < in.size(); i += 4) {
        const bool last = i + 4 == in.size();
        int pad = 0;
        if (last && in[i + 3] == '=') pad = in[i + 2] == '=' ? 2 : 1;
        int v[4] = {0, 0, 0, 0};
        for (int k = 0; k < 4 - pad; ++k) {
            v[k] = decode_char(in[i + static_cast<std::size_t>(k)]);
            if (v[k] < 0) return std::nullopt;
        }
        std::uint32_t w = (static_cast<std::uint32_t>(v[0]) << 18) | (static_cast<std::uint32_t>(v[1]) << 12) |
                          (static_cast<std::uint32_t>(v[2]) << 6) | static_cast<std::uint32_t>(v[3]);
        if (pad == 2 && (w & 0xFFFF) != 0) return std::nullopt;
        if (pad == 1 && (w & 0xFF) != 0) return std::nullopt;
        out.push_back(static_cast<std::uint8_t>(w >> 16));
        if (pad < 2) out.push_back(static_cast<std::uint8_t>(w >> 8));
        if (pad < 1) out.push_back(static_cast<std::uint8_t>(w));
    }
    return out;
}

// A failing CSPRNG is not an expected condition we can serve around: it is a bug or a
// broken host, so it throws rather than handing out predictable nonces or salts.
Bytes random_bytes(std::size_t n) {
    Bytes out(n);
    if (n > static_cast<std::size_t>(INT_MAX) || (n > 0 && RAND_bytes(out.data(), static_cast<int>(n)) != 1))
        throw std::runtime_error("RAND_bytes failed");
    return out;
}

}  // namespace pgrouter::auth
