#include "pgrouter/auth/auth.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include <unistd.h>

namespace pgrouter::auth {
namespace {

TEST(AuthClassify, SecretKinds) {
    EXPECT_EQ(classify_secret("md553f48b7c4b76a86ce72276c5755f217d"), SecretKind::md5);
    EXPECT_EQ(classify_secret("md553F48B7C4B76A86CE72276C5755F217D"), SecretKind::plain);  // uppercase
    EXPECT_EQ(classify_secret("md553f48b7c4b76a86ce72276c5755f217"), SecretKind::plain);   // 31 digits
    EXPECT_EQ(classify_secret("md553f48b7c4b76a86ce72276c5755f217d0"), SecretKind::plain); // 33 digits
    EXPECT_EQ(classify_secret("md553f48b7c4b76a86ce72276c5755f217g"), SecretKind::plain);  // not hex
    EXPECT_EQ(classify_secret("MD553f48b7c4b76a86ce72276c5755f217d"), SecretKind::plain);
    EXPECT_EQ(classify_secret("SCRAM-SHA-256$4096:abc$def:ghi"), SecretKind::scram);
    EXPECT_EQ(classify_secret("scram-sha-256$4096:abc$def:ghi"), SecretKind::plain);
    EXPECT_EQ(classify_secret("SCRAM-SHA-256"), SecretKind::plain);
    EXPECT_EQ(classify_secret("hunter2"), SecretKind::plain);
    EXPECT_EQ(classify_secret(""), SecretKind::plain);
}

TEST(AuthUserlist, ParsesUsersAndKinds) {
    std::string scram = format_scram_secret(make_scram_secret("pw", random_bytes(16), 4096));
    std::string text = "\"alice\" \"secret\"\n"
                       "\"bob\"\t\"md553f48b7c4b76a86ce72276c5755f217d\"\n"
                       "\"carol\" \"" + scram + "\"\n";
    UserListResult r = parse_userlist(text);
    EXPECT_TRUE(r.errors.empty());
    ASSERT_EQ(r.users.size(), 3u);
    EXPECT_EQ(r.users.at("alice").user, "alice");
    EXPECT_EQ(r.users.at("alice").secret, "secret");
    EXPECT_EQ(r.users.at("alice").kind, SecretKind::plain);
    EXPECT_EQ(r.users.at("bob").kind, SecretKind::md5);
    EXPECT_EQ(r.users.at("carol").kind, SecretKind::scram);
    EXPECT_EQ(r.users.at("carol").secret, scram);
}

TEST(AuthUserlist, QuotingAndEscapes) {
    UserListResult r = parse_userlist(
        "\"we\"\"ird\" \"pa\"\"ss\"\"\"\n"
        "\"with space\" \"two words\"\n"
        "\"semi;colon#hash\" \";not a comment\"\n"
        "\"\"\"\" \"\"\n");
    EXPECT_TRUE(r.errors.empty()) << r.errors.front();
    ASSERT_EQ(r.users.size(), 4u);
    EXPECT_EQ(r.users.at("we\"ird").secret, "pa\"ss\"");
    EXPECT_EQ(r.users.at("with space").secret, "two words");
    EXPECT_EQ(r.users.at("semi;colon#hash").secret, ";not a comment");
    EXPECT_EQ(r.users.at("\"").secret, "");  // empty secret parses; verification rejects it
}

TEST(AuthUserlist, ExtraFieldsIgnored) {
    UserListResult r = parse_userlist("\"u\" \"p\" \"extra\" more stuff\n\"v\" \"q\"junk\n");
    EXPECT_TRUE(r.errors.empty());
    ASSERT_EQ(r.users.size(), 2u);
    EXPECT_EQ(r.users.at("u").secret, "p");
    EXPECT_EQ(r.users.at("v").secret, "q");
}

TEST(AuthUserlist, CommentsBlankLinesAndLineEndings) {
    UserListResult r = parse_userlist(
        "; comment\r\n"
        "# another \"x\" \"y\"\n"
        "\n"
        "   \t\n"
        "  \"a\" \"1\"\r\n"
        "   ; indented comment\n"
        "\"b\" \"2\"");  // no final newline
    EXPECT_TRUE(r.errors.empty()) << r.errors.front();
    ASSERT_EQ(r.users.size(), 2u);
    EXPECT_EQ(r.users.at("a").secret, "1");  // no stray \r
    EXPECT_EQ(r.users.at("b").secret, "2");
}

TEST(AuthUserlist, EmptyInput) {
    UserListResult r = parse_userlist("");
    EXPECT_TRUE(r.errors.empty());
    EXPECT_TRUE(r.users.empty());
}

TEST(AuthUserlist, ErrorsCarryLineNumbersAndTheRestParses) {
    UserListResult r = parse_userlist(
        "\"ok1\" \"a\"\n"               // 1
        "bare \"x\"\n"                  // 2 unquoted user
        "\"open \"x\"\n"                // 3 -> user `open `, then x"... : no whitespace after
        "\"lonely\"\n"                  // 4 missing secret
        "\"u\" unquoted\n"              // 5 secret not quoted
        "\"u\" \"unterminated\n"        // 6
        "\"\" \"x\"\n"                  // 7 empty user
        "\"s\" \"SCRAM-SHA-256$junk\"\n" // 8 bad SCRAM secret
        "\"unterminated user\n"         // 9
        "\"ok2\" \"b\"\n");             // 10
    ASSERT_EQ(r.errors.size(), 8u);
    EXPECT_TRUE(r.errors[0].starts_with("line 2: ")) << r.errors[0];
    EXPECT_TRUE(r.errors[1].starts_with("line 3: ")) << r.errors[1];
    EXPECT_TRUE(r.errors[2].starts_with("line 4: ")) << r.errors[2];
    EXPECT_NE(r.errors[2].find("missing secret"), std::string::npos) << r.errors[2];
    EXPECT_TRUE(r.errors[3].starts_with("line 5: ")) << r.errors[3];
    EXPECT_TRUE(r.errors[4].starts_with("line 6: ")) << r.errors[4];
    EXPECT_NE(r.errors[4].find("unterminated"), std::string::npos) << r.errors[4];
    EXPECT_TRUE(r.errors[5].starts_with("line 7: ")) << r.errors[5];
    EXPECT_TRUE(r.errors[6].starts_with("line 8: ")) << r.errors[6];
    EXPECT_TRUE(r.errors[7].starts_with("line 9: ")) << r.errors[7];
    ASSERT_EQ(r.users.size(), 2u);
    EXPECT_TRUE(r.users.count("ok1"));
    EXPECT_TRUE(r.users.count("ok2"));
}

TEST(AuthUserlist, ErrorsNeverEchoSecrets) {
    UserListResult r = parse_userlist("\"u\" \"SCRAM-SHA-256$topsecret\"\n\"v\" \"hunter2\n");
    ASSERT_EQ(r.errors.size(), 2u);
    for (const auto& e : r.errors) {
        EXPECT_EQ(e.find("topsecret"), std::string::npos) << e;
        EXPECT_EQ(e.find("hunter2"), std::string::npos) << e;
    }
}

TEST(AuthUserlist, LastDuplicateWins) {
    UserListResult r = parse_userlist("\"u\" \"first\"\n\"u\" \"second\"\n");
    ASSERT_EQ(r.users.size(), 1u);
    EXPECT_EQ(r.users.at("u").secret, "second");
}

TEST(AuthUserlist, LoadFromFile) {
    std::string path = testing::TempDir() + "auth_userlist_test_" + std::to_string(::getpid()) + ".txt";
    {
        std::ofstream f(path, std::ios::binary);
        f << "\"alice\" \"secret\"\nbroken\n";
    }
    UserListResult r = load_userlist(path);
    std::remove(path.c_str());
    ASSERT_EQ(r.users.size(), 1u);
    EXPECT_EQ(r.users.at("alice").secret, "secret");
    ASSERT_EQ(r.errors.size(), 1u);
    EXPECT_TRUE(r.errors[0].starts_with("line 2: "));
}

TEST(AuthUserlist, LoadMissingFile) {
    UserListResult r = load_userlist("/nonexistent/pgrouter/userlist.txt");
    EXPECT_TRUE(r.users.empty());
    ASSERT_EQ(r.errors.size(), 1u);
    EXPECT_TRUE(r.errors[0].starts_with("cannot read /nonexistent/pgrouter/userlist.txt: ")) << r.errors[0];
}

}  // namespace
}  // namespace pgrouter::auth
