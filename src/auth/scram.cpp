// SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it: no channel binding, the
// user name in client-first is ignored, and the stored secret format of pg_authid.
#include "pgrouter/auth/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <charconv>
#include <climits>
#include <stdexcept>

namespace pgrouter::auth {

namespace {

constexpr std::size_t kKeyLen = 32;  // SHA-256 output
constexpr std::size_t kNonceRawLen = 18;
constexpr std::string_view kSecretPrefix = "SCRAM-SHA-256$";

Bytes sha256(const Bytes& data) {
    Bytes out(kKeyLen);
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) != 1 || len != kKeyLen)
        throw std::runtime_error("EVP_Digest(SHA-256) failed");
    return out;
}

Bytes hmac(const Bytes& key, std::string_view data) {
    Bytes out(kKeyLen);
    unsigned int len = 0;
    if (key.size() > static_cast<std::size_t>(INT_MAX) ||
        !HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
              reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &len) ||
        len != kKeyLen)
        throw std::runtime_error("HMAC(SHA-256) failed");
    return out;
}

// Hi() of RFC 5802 is PBKDF2 with HMAC and one output block.
Bytes salted_password(std::string_view password, const Bytes& salt, int iterations) {
    Bytes out(kKeyLen);
    if (password.size() > static_cast<std::size_t>(INT_MAX) || salt.size() > static_cast<std::size_t>(INT_MAX) ||
        PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), salt.data(),
                          static_cast<int>(salt.size()), iterations, EVP_sha256(), static_cast<int>(kKeyLen),
                          out.data()) != 1)
        throw std::runtime_error("PKCS5_PBKDF2_HMAC failed");
    return out;
}

Bytes xor_bytes(const Bytes& a, const Bytes& b) {
    Bytes out(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) out[i] = a[i] ^ b[i];
    return out;
}

bool equal_ct(const Bytes& a, const Bytes& b) {
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string new_nonce() { return base64_encode(random_bytes(kNonceRawLen)); }

// printable = %x21-2B / %x2D-7E (RFC 5802: any printable ASCII except ',').
bool is_printable_nonce(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (c < 0x21 || c > 0x7E || c == ',') return false;
    return true;
}

std::vector<std::string_view> split_commas(std::string_view s) {
    std::vector<std::string_view> parts;
    for (;;) {
        std::size_t comma = s.find(',');
        parts.push_back(s.substr(0, comma));
        if (comma == std::string_view::npos) return parts;
        s.remove_prefix(comma + 1);
    }
}

// attr-val = ALPHA "=" value
bool is_attr(std::string_view part) {
    return part.size() >= 2 && part[1] == '=' &&
           ((part[0] >= 'a' && part[0] <= 'z') || (part[0] >= 'A' && part[0] <= 'Z'));
}

bool is_attr(std::string_view part, char name) { return is_attr(part) && part[0] == name; }

std::optional<int> parse_positive_int(std::string_view s) {
    int v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || ptr != s.data() + s.size() || v <= 0) return std::nullopt;
    return v;
}

std::string_view as_view(const Bytes& b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

}  // namespace

// ---- secrets -------------------------------------------------------------------

std::optional<ScramSecret> parse_scram_secret(std::string_view s) {
    if (!s.starts_with(kSecretPrefix)) return std::nullopt;
    s.remove_prefix(kSecretPrefix.size());
    std::size_t dollar = s.find('$');
    if (dollar == std::string_view::npos) return std::nullopt;
    std::string_view iter_salt = s.substr(0, dollar), keys = s.substr(dollar + 1);
    std::size_t c1 = iter_salt.find(':'), c2 = keys.find(':');
    if (c1 == std::string_view::npos || c2 == std::string_view::npos) return std::nullopt;
    auto iterations = parse_positive_int(iter_salt.substr(0, c1));
    auto salt = base64_decode(iter_salt.substr(c1 + 1));
    auto stored = base64_decode(keys.substr(0, c2));
    auto server = base64_decode(keys.substr(c2 + 1));
    if (!iterations || !salt || salt->empty() || !stored || stored->size() != kKeyLen || !server ||
        server->size() != kKeyLen)
        return std::nullopt;
    return ScramSecret{*iterations, std::move(*salt), std::move(*stored), std::move(*server)};
}

// PostgreSQL runs the password through SASLprep first. For ASCII passwords that is the
// identity (prohibited control characters make PostgreSQL fall back to the raw bytes),
// so using the raw bytes agrees with PostgreSQL for every ASCII password; non-ASCII
// passwords agree only when already in NFKC form without mapped characters.
ScramSecret make_scram_secret(std::string_view password, const Bytes& salt, int iterations) {
    Bytes salted = salted_password(password, salt, iterations);
    ScramSecret out;
    out.iterations = iterations;
    out.salt = salt;
    out.stored_key = sha256(hmac(salted, "Client Key"));
    out.server_key = hmac(salted, "Server Key");
    return out;
}

std::string format_scram_secret(const ScramSecret& s) {
    return std::string(kSecretPrefix) + std::to_string(s.iterations) + ":" + base64_encode(s.salt) + "$" +
           base64_encode(s.stored_key) + ":" + base64_encode(s.server_key);
}

// ---- server ----------------------------------------------------------------------

ScramServer::ScramServer(ScramSecret secret) : secret_(std::move(secret)) {}

ScramServer ScramServer::from_password(std::string_view password, int iterations) {
    return ScramServer(make_scram_secret(password, random_bytes(16), iterations));
}

std::optional<std::string> ScramServer::fail(std::string reason) {
    error_ = std::move(reason);
    state_ = State::failed;
    return std::nullopt;
}

std::optional<std::string> ScramServer::handle_client_first(std::string_view msg) {
    if (state_ != State::initial) return fail("unexpected SCRAM client-first-message");
    if (secret_.stored_key.size() != kKeyLen || secret_.server_key.size() != kKeyLen || secret_.salt.empty() ||
        secret_.iterations <= 0)
        return fail("invalid SCRAM secret");
    // gs2-header = gs2-cbind-flag "," [authzid] ","
    if (msg.empty()) return fail("malformed SCRAM message: empty client-first-message");
    if (msg[0] == 'p')
        return fail("channel binding is not supported: the server did not offer SCRAM-SHA-256-PLUS");
    if ((msg[0] != 'n' && msg[0] != 'y') || msg.size() < 2 || msg[1] != ',')
        return fail("malformed SCRAM message: unexpected channel-binding flag");
    if (msg.size() < 3) return fail("malformed SCRAM message: truncated gs2 header");
    if (msg.substr(2).starts_with("a=")) return fail("SCRAM authorization identity (a=) is not supported");
    if (msg[2] != ',') return fail("malformed SCRAM message: unexpected attribute in gs2 header");
    gs2_header_ = std::string(msg.substr(0, 3));
    std::string_view bare = msg.substr(3);

    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    auto parts = split_commas(bare);
    if (is_attr(parts[0], 'm')) return fail("SCRAM extensions (m=) are not supported");
    // PostgreSQL takes the user from the startup packet; the n= value is ignored.
    if (!is_attr(parts[0], 'n')) return fail("malformed SCRAM message: expected user name attribute (n=)");
    if (parts.size() < 2 || !is_attr(parts[1], 'r'))
        return fail("malformed SCRAM message: expected nonce attribute (r=)");
    std::string_view client_nonce = parts[1].substr(2);
    if (!is_printable_nonce(client_nonce)) return fail("malformed SCRAM message: invalid client nonce");
    for (std::size_t i = 2; i < parts.size(); ++i)
        if (!is_attr(parts[i])) return fail("malformed SCRAM message: invalid attribute");

    if (nonce_.empty()) nonce_ = new_nonce();
    if (!is_printable_nonce(nonce_)) return fail("invalid server nonce");
    client_first_bare_ = std::string(bare);
    full_nonce_ = std::string(client_nonce) + nonce_;
    server_first_ = "r=" + full_nonce_ + ",s=" + base64_encode(secret_.salt) + ",i=" +
                    std::to_string(secret_.iterations);
    state_ = State::sent_first;
    return server_first_;
}

std::optional<std::string> ScramServer::handle_client_final(std::string_view msg) {
    if (state_ != State::sent_first) return fail("unexpected SCRAM client-final-message");
    // client-final-message = channel-binding "," nonce ["," extensions] "," proof
    auto parts = split_commas(msg);
    if (!is_attr(parts[0], 'c')) return fail("malformed SCRAM message: expected channel-binding attribute (c=)");
    auto cbind = base64_decode(parts[0].substr(2));
    if (!cbind) return fail("malformed SCRAM message: invalid base64 in channel-binding attribute");
    if (as_view(*cbind) != gs2_header_) return fail("SCRAM channel binding check failed");
    if (parts.size() < 2 || !is_attr(parts[1], 'r'))
        return fail("malformed SCRAM message: expected nonce attribute (r=)");
    // Constant time is not needed: the nonce is public.
    if (parts[1].substr(2) != full_nonce_) return fail("SCRAM nonce mismatch");
    if (parts.size() < 3 || !is_attr(parts.back(), 'p'))
        return fail("malformed SCRAM message: expected proof attribute (p=)");
    for (std::size_t i = 2; i + 1 < parts.size(); ++i)
        if (!is_attr(parts[i]) || parts[i][0] == 'p') return fail("malformed SCRAM message: invalid attribute");
    auto proof = base64_decode(parts.back().substr(2));
    if (!proof) return fail("malformed SCRAM message: invalid base64 in proof");
    if (proof->size() != kKeyLen) return fail("malformed SCRAM message: invalid proof length");

    std::string_view without_proof = msg.substr(0, msg.size() - parts.back().size() - 1);
    std::string auth_message = client_first_bare_ + "," + server_first_ + "," + std::string(without_proof);
    Bytes client_key = xor_bytes(*proof, hmac(secret_.stored_key, auth_message));
    if (!equal_ct(sha256(client_key), secret_.stored_key)) {
        proof_failed_ = true;
        return fail("SCRAM proof verification failed");
    }
    client_key_ = std::move(client_key);
    state_ = State::done;
    return "v=" + base64_encode(hmac(secret_.server_key, auth_message));
}

// ---- client ----------------------------------------------------------------------

ScramClient::ScramClient(std::string_view password) : password_(password) {}

ScramClient::ScramClient(Bytes client_key, Bytes server_key)
    : client_key_(std::move(client_key)), server_key_(std::move(server_key)), have_keys_(true) {}

std::string ScramClient::client_first() {
    if (nonce_.empty()) nonce_ = new_nonce();
    // RFC 5802 requires ',' and '=' in the name to be escaped as =2C and =3D.
    std::string name;
    for (char c : username_) {
        if (c == ',')
            name += "=2C";
        else if (c == '=')
            name += "=3D";
        else
            name += c;
    }
    client_first_bare_ = "n=" + name + ",r=" + nonce_;
    return "n,," + client_first_bare_;
}

std::optional<std::string> ScramClient::handle_server_first(std::string_view msg) {
    auto fail = [this](std::string reason) -> std::optional<std::string> {
        error_ = std::move(reason);
        expected_server_signature_.clear();
        return std::nullopt;
    };
    if (client_first_bare_.empty() || !auth_message_.empty()) return fail("unexpected SCRAM server-first-message");
    // server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]
    auto parts = split_commas(msg);
    if (is_attr(parts[0], 'm')) return fail("SCRAM extensions (m=) are not supported");
    if (!is_attr(parts[0], 'r')) return fail("malformed SCRAM server-first-message: expected nonce (r=)");
    std::string_view full_nonce = parts[0].substr(2);
    if (!full_nonce.starts_with(nonce_) || full_nonce.size() == nonce_.size() || !is_printable_nonce(full_nonce))
        return fail("SCRAM server nonce does not extend the client nonce");
    if (parts.size() < 3 || !is_attr(parts[1], 's') || !is_attr(parts[2], 'i'))
        return fail("malformed SCRAM server-first-message: expected salt (s=) and iteration count (i=)");
    auto salt = base64_decode(parts[1].substr(2));
    if (!salt || salt->empty()) return fail("malformed SCRAM server-first-message: invalid salt");
    auto iterations = parse_positive_int(parts[2].substr(2));
    if (!iterations) return fail("malformed SCRAM server-first-message: invalid iteration count");
    for (std::size_t i = 3; i < parts.size(); ++i)
        if (!is_attr(parts[i])) return fail("malformed SCRAM server-first-message: invalid attribute");

    Bytes client_key, server_key;
    if (have_keys_) {
        // Pass-through: the keys already encode this server's salt and iteration count.
        if (client_key_.size() != kKeyLen || server_key_.size() != kKeyLen)
            return fail("invalid SCRAM pass-through keys");
        client_key = client_key_;
        server_key = server_key_;
    } else {
        Bytes salted = salted_password(password_, *salt, *iterations);
        client_key = hmac(salted, "Client Key");
        server_key = hmac(salted, "Server Key");
    }
    // c= carries the gs2 header "n,," we sent.
    std::string without_proof = "c=biws,r=" + std::string(full_nonce);
    auth_message_ = client_first_bare_ + "," + std::string(msg) + "," + without_proof;
    Bytes proof = xor_bytes(client_key, hmac(sha256(client_key), auth_message_));
    expected_server_signature_ = hmac(server_key, auth_message_);
    return without_proof + ",p=" + base64_encode(proof);
}

bool ScramClient::verify_server_final(std::string_view msg) {
    // server-final-message = (server-error / verifier) ["," extensions]
    std::string_view first = msg.substr(0, msg.find(','));
    if (is_attr(first, 'e')) {
        error_ = "SCRAM authentication failed on the server: " + std::string(first.substr(2));
        return false;
    }
    if (expected_server_signature_.empty()) {
        error_ = "unexpected SCRAM server-final-message";
        return false;
    }
    if (!is_attr(first, 'v')) {
        error_ = "malformed SCRAM server-final-message: expected verifier (v=)";
        return false;
    }
    auto signature = base64_decode(first.substr(2));
    if (!signature) {
        error_ = "malformed SCRAM server-final-message: invalid base64 in verifier";
        return false;
    }
    if (!equal_ct(*signature, expected_server_signature_)) {
        error_ = "SCRAM server signature mismatch: the server does not know the password";
        return false;
    }
    return true;
}

}  // namespace pgrouter::auth
