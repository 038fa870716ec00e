// PostgreSQL's MD5 password scheme, and cleartext password checks against any stored secret.
#include "pgrouter/auth/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <stdexcept>

namespace pgrouter::auth {

namespace {

std::string to_hex(const unsigned char* p, std::size_t n) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(n * 2);
    for (std::size_t i = 0; i < n; ++i) {
        out += digits[p[i] >> 4];
        out += digits[p[i] & 15];
    }
    return out;
}

bool equal_ct(std::string_view a, std::string_view b) {
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool equal_ct(const Bytes& a, const Bytes& b) {
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::array<unsigned char, 32> sha256(std::string_view data) {
    std::array<unsigned char, 32> out{};
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) != 1 || len != out.size())
        throw std::runtime_error("EVP_Digest(SHA-256) failed");
    return out;
}

// The 32 hex digits PostgreSQL stores after "md5": from the stored md5 secret, or computed
// from a plaintext one.
std::string md5_inner_hex(std::string_view stored, std::string_view user) {
    if (classify_secret(stored) == SecretKind::md5) return std::string(stored.substr(3));
    std::string buf;
    buf.reserve(stored.size() + user.size());
    buf.append(stored).append(user);
    return md5_hex(buf);
}

}  // namespace

std::string md5_hex(std::string_view data) {
    unsigned char digest[16];
    unsigned int len = 0;
    // MD5 is unavailable only under a FIPS-only provider setup: a deployment error.
    if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_md5(), nullptr) != 1 || len != sizeof digest)
        throw std::runtime_error("EVP_Digest(MD5) failed");
    return to_hex(digest, sizeof digest);
}

std::string md5_password_hash(std::string_view password, std::string_view user) {
    std::string buf;
    buf.reserve(password.size() + user.size());
    buf.append(password).append(user);
    return "md5" + md5_hex(buf);
}

std::string md5_client_response(std::string_view stored, std::string_view user,
                                const std::array<std::uint8_t, 4>& salt) {
    std::string buf = md5_inner_hex(stored, user);
    buf.append(reinterpret_cast<const char*>(salt.data()), salt.size());
    return "md5" + md5_hex(buf);
}

bool md5_verify(const Credential& cred, const std::array<std::uint8_t, 4>& salt,
                std::string_view client_response) {
    // An empty password never authenticates (PostgreSQL refuses empty passwords too).
    if (cred.kind == SecretKind::scram || cred.secret.empty()) return false;
    std::string expected = md5_client_response(cred.secret, cred.user, salt);
    return equal_ct(expected, client_response);
}

bool cleartext_verify(const Credential& cred, std::string_view password) {
    if (cred.secret.empty() || password.empty()) return false;
    switch (classify_secret(cred.secret)) {
    case SecretKind::plain: {
        // Compare digests so the comparison time does not depend on where or whether lengths differ.
        auto a = sha256(cred.secret);
        auto b = sha256(password);
        return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
    }
    case SecretKind::md5:
        return equal_ct(md5_password_hash(password, cred.user), cred.secret);
    case SecretKind::scram: {
        auto secret = parse_scram_secret(cred.secret);
        if (!secret) return false;
        ScramSecret derived = make_scram_secret(password, secret->salt, secret->iterations);
        return equal_ct(derived.stored_key, secret->stored_key) && equal_ct(derived.server_key, secret->server_key);
    }
    }
    return false;
}

}  // namespace pgrouter::auth
