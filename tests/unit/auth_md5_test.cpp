#include "pgrouter/auth/auth.hpp"

#include <gtest/gtest.h>

namespace pgrouter::auth {
namespace {

constexpr std::array<std::uint8_t, 4> kSalt1234 = {0x01, 0x02, 0x03, 0x04};
constexpr std::array<std::uint8_t, 4> kSaltDeadBeef = {0xde, 0xad, 0xbe, 0xef};

Credential cred(std::string user, std::string secret) {
    SecretKind kind = classify_secret(secret);
    return Credential{std::move(user), std::move(secret), kind};
}

TEST(AuthMd5, Md5HexKnownValues) {
    // RFC 1321 test suite.
    EXPECT_EQ(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    EXPECT_EQ(md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
    EXPECT_EQ(md5_hex("message digest"), "f96b697d7cb7938d525a2f31aaf161d0");
}

TEST(AuthMd5, PasswordHash) {
    // echo -n secretpostgres | md5sum
    EXPECT_EQ(md5_password_hash("secret", "postgres"), "md553f48b7c4b76a86ce72276c5755f217d");
    // Stored by PostgreSQL 15 for CREATE ROLE bob PASSWORD 'secret' with password_encryption=md5.
    EXPECT_EQ(md5_password_hash("secret", "bob"), "md521f3163f8f86fa10bdefbfbd502a8f06");
    EXPECT_NE(md5_password_hash("secret", "bob"), md5_password_hash("secret", "Bob"));
}

TEST(AuthMd5, ClientResponseMatchesIndependentComputation) {
    // python3: "md5" + md5(md5(b"secretpostgres").hexdigest().encode() + salt).hexdigest()
    EXPECT_EQ(md5_client_response("secret", "postgres", kSalt1234), "md5bb41a296aab6baccb36ff243a562abff");
    EXPECT_EQ(md5_client_response("secret", "postgres", kSaltDeadBeef), "md5c546d0bbed2af888b328536b45c76348");
}

TEST(AuthMd5, ClientResponseFromStoredHashEqualsFromPlaintext) {
    std::string hashed = md5_password_hash("secret", "postgres");
    EXPECT_EQ(md5_client_response(hashed, "postgres", kSalt1234), "md5bb41a296aab6baccb36ff243a562abff");
    // With a stored hash the user name is already baked in and must not be mixed in again.
    EXPECT_EQ(md5_client_response(hashed, "someone-else", kSalt1234), "md5bb41a296aab6baccb36ff243a562abff");
}

TEST(AuthMd5, VerifyAcceptsPlainAndMd5Credentials) {
    std::string response = md5_client_response("secret", "postgres", kSaltDeadBeef);
    EXPECT_TRUE(md5_verify(cred("postgres", "secret"), kSaltDeadBeef, response));
    EXPECT_TRUE(md5_verify(cred("postgres", md5_password_hash("secret", "postgres")), kSaltDeadBeef, response));
}

TEST(AuthMd5, VerifyRejectsWrongResponses) {
    std::string response = md5_client_response("secret", "postgres", kSaltDeadBeef);
    Credential plain = cred("postgres", "secret");
    Credential hashed = cred("postgres", md5_password_hash("secret", "postgres"));
    for (const Credential& c : {plain, hashed}) {
        EXPECT_FALSE(md5_verify(c, kSalt1234, response));  // other salt
        EXPECT_FALSE(md5_verify(c, kSaltDeadBeef, md5_client_response("Secret", "postgres", kSaltDeadBeef)));
        EXPECT_FALSE(md5_verify(c, kSaltDeadBeef, ""));
        EXPECT_FALSE(md5_verify(c, kSaltDeadBeef, response.substr(0, 34)));
        EXPECT_FALSE(md5_verify(c, kSaltDeadBeef, response + "0"));
    }
    // Same password, other user: the hash differs.
    EXPECT_FALSE(md5_verify(cred("alice", "secret"), kSaltDeadBeef, response));
}

TEST(AuthMd5, VerifyNeverAcceptsScramOrEmptySecrets) {
    ScramSecret s = make_scram_secret("secret", random_bytes(16), 4096);
    Credential scram = cred("postgres", format_scram_secret(s));
    ASSERT_EQ(scram.kind, SecretKind::scram);
    EXPECT_FALSE(md5_verify(scram, kSalt1234, md5_client_response("secret", "postgres", kSalt1234)));
    Credential empty = cred("postgres", "");
    EXPECT_FALSE(md5_verify(empty, kSalt1234, md5_client_response("", "postgres", kSalt1234)));
}

TEST(AuthCleartext, VerifiesEverySecretKind) {
    ScramSecret s = make_scram_secret("secret", random_bytes(16), 4096);
    for (const Credential& c : {cred("postgres", "secret"), cred("postgres", md5_password_hash("secret", "postgres")),
                                cred("postgres", format_scram_secret(s))}) {
        EXPECT_TRUE(cleartext_verify(c, "secret")) << static_cast<int>(c.kind);
        EXPECT_FALSE(cleartext_verify(c, "secret ")) << static_cast<int>(c.kind);
        EXPECT_FALSE(cleartext_verify(c, "Secret")) << static_cast<int>(c.kind);
        EXPECT_FALSE(cleartext_verify(c, "")) << static_cast<int>(c.kind);
    }
    EXPECT_FALSE(cleartext_verify(cred("postgres", ""), ""));
    EXPECT_FALSE(cleartext_verify(cred("postgres", "SCRAM-SHA-256$broken"), "SCRAM-SHA-256$broken"));
    // A plaintext secret that merely looks like a hash is compared as the hash string.
    EXPECT_FALSE(cleartext_verify(cred("bob", md5_password_hash("secret", "bob")), md5_password_hash("secret", "bob")));
}

}  // namespace
}  // namespace pgrouter::auth
