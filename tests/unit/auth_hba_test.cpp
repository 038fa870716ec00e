#include "pgrouter/auth/auth.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include <unistd.h>

namespace pgrouter::auth {
namespace {

HbaRule parse_one(const std::string& line) {
    HbaParseResult r = parse_hba(line);
    EXPECT_TRUE(r.errors.empty()) << line << ": " << (r.errors.empty() ? "" : r.errors.front());
    EXPECT_EQ(r.rules.size(), 1u) << line;
    return r.rules.empty() ? HbaRule{} : r.rules.front();
}

std::string parse_error(const std::string& line) {
    HbaParseResult r = parse_hba(line);
    EXPECT_TRUE(r.rules.empty()) << line;
    EXPECT_EQ(r.errors.size(), 1u) << line;
    return r.errors.empty() ? "" : r.errors.front();
}

std::array<std::uint8_t, 16> v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
    return {a, b, c, d};
}

// ---- parsing -----------------------------------------------------------------------

TEST(AuthHbaParse, Local) {
    HbaRule r = parse_one("local all all trust");
    EXPECT_EQ(r.line, 1);
    EXPECT_EQ(r.type, HbaConnType::local);
    EXPECT_EQ(r.databases, std::vector<std::string>{"all"});
    EXPECT_EQ(r.users, std::vector<std::string>{"all"});
    EXPECT_EQ(r.method, HbaMethod::trust);
}

TEST(AuthHbaParse, HostCidrV4) {
    HbaRule r = parse_one("host mydb alice 10.0.0.0/8 md5");
    EXPECT_EQ(r.type, HbaConnType::host);
    EXPECT_FALSE(r.is_v6);
    EXPECT_FALSE(r.any_addr);
    EXPECT_EQ(r.addr, v4(10, 0, 0, 0));
    EXPECT_EQ(r.prefix_len, 8);
    EXPECT_EQ(r.method, HbaMethod::md5);

    HbaRule h = parse_one("hostssl all all 1.2.3.4/32 scram-sha-256");
    EXPECT_EQ(h.type, HbaConnType::hostssl);
    EXPECT_EQ(h.addr, v4(1, 2, 3, 4));
    EXPECT_EQ(h.prefix_len, 32);
    EXPECT_EQ(h.method, HbaMethod::scram_sha_256);
}

TEST(AuthHbaParse, HostCidrV6) {
    HbaRule r = parse_one("hostnossl all all ::1/128 password");
    EXPECT_EQ(r.type, HbaConnType::hostnossl);
    EXPECT_TRUE(r.is_v6);
    std::array<std::uint8_t, 16> loopback{};
    loopback[15] = 1;
    EXPECT_EQ(r.addr, loopback);
    EXPECT_EQ(r.prefix_len, 128);
    EXPECT_EQ(r.method, HbaMethod::password);
    EXPECT_EQ(parse_one("host all all fe80::/10 reject").prefix_len, 10);
    EXPECT_EQ(parse_one("host all all ::/0 reject").prefix_len, 0);
}

TEST(AuthHbaParse, AddressAndMaskColumns) {
    HbaRule r = parse_one("host all all 127.0.0.1 255.255.255.255 trust");
    EXPECT_EQ(r.addr, v4(127, 0, 0, 1));
    EXPECT_EQ(r.prefix_len, 32);
    EXPECT_EQ(r.method, HbaMethod::trust);
    EXPECT_EQ(parse_one("host all all 192.168.0.0 255.255.0.0 md5").prefix_len, 16);
    EXPECT_EQ(parse_one("host all all 0.0.0.0 0.0.0.0 md5").prefix_len, 0);
    EXPECT_EQ(parse_one("host all all 10.0.0.0 255.255.255.240 md5").prefix_len, 28);
    EXPECT_EQ(parse_one("host all all fe80:: ffc0:: md5").prefix_len, 10);
}

TEST(AuthHbaParse, AllAddresses) {
    HbaRule r = parse_one("hostssl all all all cert");
    EXPECT_TRUE(r.any_addr);
    EXPECT_EQ(r.method, HbaMethod::cert);
}

TEST(AuthHbaParse, ListsAndQuotedNames) {
    HbaRule r = parse_one("host db1,db2,\"My DB\" alice,\"all\" 0.0.0.0/0 md5");
    EXPECT_EQ(r.databases, (std::vector<std::string>{"db1", "db2", "My DB"}));
    EXPECT_EQ(r.database_quoted, (std::vector<bool>{false, false, true}));
    EXPECT_EQ(r.users, (std::vector<std::string>{"alice", "all"}));
    EXPECT_EQ(r.user_quoted, (std::vector<bool>{false, true}));
    // A space after a comma continues the list, as in PostgreSQL.
    EXPECT_EQ(parse_one("local a, b all trust").databases, (std::vector<std::string>{"a", "b"}));
    // "" inside quotes is a literal quote; commas inside quotes do not split.
    EXPECT_EQ(parse_one("local \"x\"\"y,z\" all trust").databases, std::vector<std::string>{"x\"y,z"});
    HbaRule k = parse_one("local sameuser,replication all trust");
    EXPECT_EQ(k.databases, (std::vector<std::string>{"sameuser", "replication"}));
}

TEST(AuthHbaParse, OptionsAreAcceptedAndIgnored) {
    HbaRule r = parse_one("hostssl all all 0.0.0.0/0 cert clientcert=verify-full map=x");
    EXPECT_EQ(r.method, HbaMethod::cert);
    EXPECT_EQ(parse_one("host all all ::/0 scram-sha-256 foo=\"a b\"").method, HbaMethod::scram_sha_256);
}

// ---- LDAP (PostgreSQL's options) ------------------------------------------------------

TEST(AuthLdap, SimpleBindLine) {
    HbaRule r = parse_one(R"(host all all 127.0.0.1/32 ldap ldapserver=127.0.0.1 ldapport=3890 ldapprefix="uid=" ldapsuffix=",ou=people,dc=example,dc=net")");
    ASSERT_EQ(r.method, HbaMethod::ldap);
    ASSERT_TRUE(r.ldap);
    EXPECT_FALSE(r.ldap->search_mode());
    EXPECT_EQ(r.ldap->uri(), "ldap://127.0.0.1:3890");
    EXPECT_EQ(r.ldap->prefix + "bob" + r.ldap->suffix, "uid=bob,ou=people,dc=example,dc=net");
}

TEST(AuthLdap, SearchBindLineAndUrl) {
    HbaRule r = parse_one("host all all 0.0.0.0/0 ldap ldapserver=\"a.example b.example\" ldapscheme=ldaps "
                          "ldapbasedn=\"dc=example,dc=net\" ldapbinddn=\"cn=reader,dc=example,dc=net\" "
                          "ldapbindpasswd=pw ldapsearchattribute=mail");
    ASSERT_TRUE(r.ldap);
    EXPECT_TRUE(r.ldap->search_mode());
    EXPECT_EQ(r.ldap->uri(), "ldaps://a.example ldaps://b.example");
    EXPECT_EQ(ldap_filter_for(*r.ldap, "bob"), "(mail=bob)");

    std::string err;
    auto o = parse_ldap_options({{"ldapurl", "ldap://ldap.example:3890/ou=people%2cdc=example,dc=net?cn?one"}}, err);
    ASSERT_TRUE(o) << err;
    EXPECT_EQ(o->uri(), "ldap://ldap.example:3890");
    EXPECT_EQ(o->basedn, "ou=people,dc=example,dc=net");
    EXPECT_EQ(o->scope, 1);
    EXPECT_EQ(ldap_filter_for(*o, "bob"), "(cn=bob)");
    o = parse_ldap_options({{"ldapserver", "h"}, {"ldapbasedn", "dc=x"}, {"ldapsearchfilter", "(|(uid=$username)(mail=$username))"}},
                           err);
    ASSERT_TRUE(o) << err;
    EXPECT_EQ(ldap_filter_for(*o, "bob"), "(|(uid=bob)(mail=bob))");
    EXPECT_EQ(ldap_filter_for(*parse_ldap_options({{"ldapserver", "h"}, {"ldapbasedn", "dc=x"}}, err), "bob"), "(uid=bob)");
}

TEST(AuthLdap, BadOptionSetsArePostgresErrors) {
    const std::pair<OptionList, const char*> cases[] = {
        {{{"ldapserver", "h"}, {"ldapprefix", "uid="}, {"ldapbasedn", "dc=x"}},
         "cannot mix options for simple bind and search+bind modes"},
        {{{"ldapserver", "h"}}, "requires argument \"ldapbasedn\", \"ldapprefix\", or \"ldapsuffix\" to be set"},
        {{{"ldapprefix", "uid="}}, "requires argument \"ldapserver\" to be set"},
        {{{"ldapserver", "h"}, {"ldapbasedn", "dc=x"}, {"ldapsearchattribute", "uid"}, {"ldapsearchfilter", "(uid=$username)"}},
         "cannot use ldapsearchattribute together with ldapsearchfilter"},
        {{{"ldapserver", "h"}, {"ldapprefix", "x"}, {"ldapport", "99999"}}, "invalid LDAP port number"},
        {{{"ldapserver", "h"}, {"ldapprefix", "x"}, {"ldapscheme", "http"}}, "invalid ldapscheme value"},
        {{{"ldapserver", "h"}, {"ldapprefix", "x"}, {"ldapfoo", "1"}}, "unrecognized LDAP option name: \"ldapfoo\""},
        {{{"ldapurl", "http://h/dc=x"}}, "unsupported LDAP URL scheme"},
        {{{"ldapurl", "ldap://h/dc=x?uid?deep"}}, "invalid scope"},
        {{{"ldapurl", "ldap://h"}}, "must name a base DN"},
        {{{"ldapserver", "h"}, {"ldapprefix", "x"}, {"ldapscheme", "ldaps"}, {"ldaptls", "1"}}, "ldaptls cannot be used"},
    };
    for (auto& [options, want] : cases) {
        std::string err;
        EXPECT_FALSE(parse_ldap_options(options, err)) << want;
        EXPECT_NE(err.find(want), std::string::npos) << err;
    }
    EXPECT_TRUE(parse_error("host all all 0.0.0.0/0 ldap ldapserver=h").find("ldapbasedn") != std::string::npos);
    EXPECT_EQ(parse_error("host all all 0.0.0.0/0 md5 ldapserver=h"),
              "line 1: authentication option \"ldapserver\" is only valid for authentication method ldap");
}

TEST(AuthLdap, SplitOptionsAndUserNames) {
    std::string err;
    auto o = split_options(R"(ldapserver=h  ldapsuffix=", ou=x" ldapbindpasswd="a""b")", err);
    ASSERT_TRUE(o) << err;
    ASSERT_EQ(o->size(), 3u);
    EXPECT_EQ((*o)[1], (std::pair<std::string, std::string>{"ldapsuffix", ", ou=x"}));
    EXPECT_EQ((*o)[2].second, "a\"b");
    EXPECT_FALSE(split_options("ldapserver", err));
    EXPECT_FALSE(split_options("ldapsuffix=\"unterminated", err));
    EXPECT_TRUE(split_options("", err)->empty());
    for (const char* bad : {"a*", "(uid=x)", "a\\b", "a/b", ""}) EXPECT_FALSE(ldap_user_name_allowed(bad)) << bad;
    EXPECT_TRUE(ldap_user_name_allowed("bob.smith@example.net"));
}

TEST(AuthHbaParse, CommentsBlankLinesContinuations) {
    HbaParseResult r = parse_hba(
        "# TYPE DATABASE USER ADDRESS METHOD\n"   // 1
        "\n"                                      // 2
        "   \t  \n"                               // 3
        "local all all trust # trailing comment\n"  // 4
        "host all \\\n"                           // 5
        "  all 10.0.0.0/8 \\\n"                   // 6
        "  md5\n"                                 // 7
        "host \"#notcomment\" all all reject\r\n" // 8
        "local all all md5");                     // 9, no final newline
    ASSERT_TRUE(r.errors.empty()) << r.errors.front();
    ASSERT_EQ(r.rules.size(), 4u);
    EXPECT_EQ(r.rules[0].line, 4);
    EXPECT_EQ(r.rules[0].method, HbaMethod::trust);
    EXPECT_EQ(r.rules[1].line, 5);
    EXPECT_EQ(r.rules[1].prefix_len, 8);
    EXPECT_EQ(r.rules[1].method, HbaMethod::md5);
    EXPECT_EQ(r.rules[2].line, 8);
    EXPECT_EQ(r.rules[2].databases, std::vector<std::string>{"#notcomment"});
    EXPECT_EQ(r.rules[2].method, HbaMethod::reject);
    EXPECT_EQ(r.rules[3].line, 9);
}

TEST(AuthHbaParse, PeerOnLocalLinesOnly) {
    EXPECT_EQ(parse_one("local all all peer").method, HbaMethod::peer);
    for (const char* line : {"host all all 127.0.0.1/32 peer", "hostssl all all all peer"}) {
        std::string err = parse_error(line);
        EXPECT_EQ(err, "line 1: peer authentication is only supported on local sockets") << line;
    }
}

TEST(AuthHbaParse, UnsupportedMethods) {
    for (const char* m : {"ident", "gss", "sspi", "pam", "radius", "bsd", "krb5", "md6"}) {
        std::string err = parse_error(std::string("local all all ") + m);
        EXPECT_TRUE(err.starts_with("line 1: unsupported method")) << err;
    }
}

TEST(AuthHbaParse, Errors) {
    const std::pair<const char*, const char*> cases[] = {
        {"host all all samehost md5", "samehost"},
        {"host all all samenet md5", "samenet"},
        {"hostgssenc all all all md5", "connection type"},
        {"hostnogssenc all all all md5", "connection type"},
        {"bogus all all md5", "invalid connection type"},
        {"include other.conf", "include"},
        {"local", "missing database"},
        {"local all", "missing user"},
        {"local all all", "missing authentication method"},
        {"host all all", "missing address"},
        {"host all all 10.0.0.0/8", "missing authentication method"},
        {"host all all 10.0.0.0/33 md5", "CIDR"},
        {"host all all ::1/129 md5", "CIDR"},
        {"host all all 10.0.0.0/-1 md5", "CIDR"},
        {"host all all 10.0.0.0/ md5", "CIDR"},
        {"host all all 10.0.0.0/8x md5", "CIDR"},
        {"host all all 10.0.0.256/8 md5", "invalid IP address"},
        {"host all all example.com md5", "host names"},
        {"host all all .example.com md5", "host names"},
        {"host all all 127.0.0.1", "netmask"},
        {"host all all 127.0.0.1 ffff:: md5", "do not match"},
        {"host all all 127.0.0.1 255.0.255.0 md5", "non-contiguous"},
        {"host all all 127.0.0.1 notamask md5", "invalid IP mask"},
        {"host all all 10.0.0.0/8,10.1.0.0/16 md5", "multiple values"},
        {"local all all md5,trust", "multiple values"},
        {"local,host all all trust", "multiple values"},
        {"local all +admins md5", "group"},
        {"local @dbs all md5", "@dbs"},
        {"local all @users md5", "@users"},
        {"local samerole all md5", "samerole"},
        {"host all all 0.0.0.0/0 cert", "hostssl"},
        {"local all all cert", "hostssl"},
        {"local all all trust noequals", "invalid authentication option"},
        {"local all all trust =x", "invalid authentication option"},
        {"local \"unterminated all trust", "unterminated"},
    };
    for (const auto& [line, needle] : cases) {
        std::string err = parse_error(line);
        EXPECT_TRUE(err.starts_with("line 1: ")) << line << " -> " << err;
        EXPECT_NE(err.find(needle), std::string::npos) << line << " -> " << err;
    }
}

TEST(AuthHbaParse, QuotedPlusAndAtAreNames) {
    HbaRule r = parse_one("local \"@db\" \"+user\" trust");
    EXPECT_EQ(r.databases, std::vector<std::string>{"@db"});
    EXPECT_EQ(r.users, std::vector<std::string>{"+user"});
}

TEST(AuthHbaParse, BadLinesAreSkippedWithTheirNumbers) {
    HbaParseResult r = parse_hba(
        "local all all trust\n"         // 1
        "local all all ident\n"         // 2
        "host all all \\\n"             // 3
        "  samenet md5\n"               // 4
        "host all all 10.0.0.0/8 md5\n" // 5
        "nonsense\n");                  // 6
    ASSERT_EQ(r.rules.size(), 2u);
    EXPECT_EQ(r.rules[0].line, 1);
    EXPECT_EQ(r.rules[1].line, 5);
    ASSERT_EQ(r.errors.size(), 3u);
    EXPECT_TRUE(r.errors[0].starts_with("line 2: unsupported method")) << r.errors[0];
    EXPECT_TRUE(r.errors[1].starts_with("line 3: ")) << r.errors[1];
    EXPECT_TRUE(r.errors[2].starts_with("line 6: ")) << r.errors[2];
}

TEST(AuthHbaParse, LoadFile) {
    std::string path = testing::TempDir() + "auth_hba_test_" + std::to_string(::getpid()) + ".conf";
    {
        std::ofstream f(path, std::ios::binary);
        f << "local all all trust\nhost all all 1.2.3.4/32 ident\n";
    }
    HbaParseResult r = load_hba(path);
    std::remove(path.c_str());
    EXPECT_EQ(r.rules.size(), 1u);
    ASSERT_EQ(r.errors.size(), 1u);
    EXPECT_TRUE(r.errors[0].starts_with("line 2: unsupported method")) << r.errors[0];

    HbaParseResult missing = load_hba("/nonexistent/pg_hba.conf");
    ASSERT_EQ(missing.errors.size(), 1u);
    EXPECT_TRUE(missing.errors[0].starts_with("cannot read /nonexistent/pg_hba.conf: ")) << missing.errors[0];
}

// ---- matching ----------------------------------------------------------------------

std::vector<HbaRule> rules(const char* text) {
    HbaParseResult r = parse_hba(text);
    EXPECT_TRUE(r.errors.empty()) << r.errors.front();
    return r.rules;
}

HbaRequest unix_req(std::string db, std::string user) {
    HbaRequest r;
    r.unix_socket = true;
    r.database = std::move(db);
    r.user = std::move(user);
    return r;
}

HbaRequest tcp(std::string addr, bool tls, std::string db = "db", std::string user = "u") {
    HbaRequest r;
    r.tls = tls;
    r.address = std::move(addr);
    r.database = std::move(db);
    r.user = std::move(user);
    return r;
}

TEST(AuthHbaMatch, NoRulesNoMatch) {
    EXPECT_FALSE(hba_match({}, tcp("127.0.0.1", false)).has_value());
    EXPECT_FALSE(hba_match({}, unix_req("db", "u")).has_value());
}

TEST(AuthHbaMatch, ConnectionTypeMatrix) {
    struct Case {
        const char* type;
        bool unix_socket, tls, expect;
    };
    const Case cases[] = {
        {"local", true, false, true},      {"local", false, false, false},    {"local", false, true, false},
        {"host", true, false, false},      {"host", false, false, true},      {"host", false, true, true},
        {"hostssl", true, false, false},   {"hostssl", false, false, false},  {"hostssl", false, true, true},
        {"hostnossl", true, false, false}, {"hostnossl", false, false, true}, {"hostnossl", false, true, false},
    };
    for (const Case& c : cases) {
        std::string line = std::string(c.type) + " all all " + (std::string(c.type) == "local" ? "" : "all ") + "md5";
        auto rs = rules(line.c_str());
        HbaRequest req = c.unix_socket ? unix_req("db", "u") : tcp("10.1.2.3", c.tls);
        req.tls = c.tls;
        EXPECT_EQ(hba_match(rs, req).has_value(), c.expect) << line << " unix=" << c.unix_socket << " tls=" << c.tls;
    }
}

TEST(AuthHbaMatch, FirstMatchWins) {
    auto rs = rules(
        "host all all 10.0.0.0/8 reject\n"
        "host all all 10.0.0.0/8 trust\n"
        "host all all 0.0.0.0/0 md5\n");
    EXPECT_EQ(hba_match(rs, tcp("10.9.9.9", false)), HbaMethod::reject);
    EXPECT_EQ(hba_match(rs, tcp("11.0.0.1", false)), HbaMethod::md5);
    auto ordered = rules("hostssl all all all scram-sha-256\nhost all all all md5\n");
    EXPECT_EQ(hba_match(ordered, tcp("1.1.1.1", true)), HbaMethod::scram_sha_256);
    EXPECT_EQ(hba_match(ordered, tcp("1.1.1.1", false)), HbaMethod::md5);
}

TEST(AuthHbaMatch, Ipv4Prefixes) {
    auto rs = rules(
        "host all all 192.168.1.0/24 trust\n"
        "host all all 10.0.0.0/8 md5\n"
        "host all all 172.16.0.0 255.240.0.0 password\n"
        "host all all 1.2.3.4/32 scram-sha-256\n"
        "host all all 128.0.0.0/1 reject\n");
    EXPECT_EQ(hba_match(rs, tcp("192.168.1.77", false)), HbaMethod::trust);
    EXPECT_EQ(hba_match(rs, tcp("192.168.2.1", false)), HbaMethod::reject);  // only the /1 catches it
    EXPECT_EQ(hba_match(rs, tcp("10.255.255.255", false)), HbaMethod::md5);
    EXPECT_EQ(hba_match(rs, tcp("172.31.0.1", false)), HbaMethod::password);
    EXPECT_EQ(hba_match(rs, tcp("172.32.0.1", false)), HbaMethod::reject);  // outside /12, inside /1
    EXPECT_FALSE(hba_match(rs, tcp("100.0.0.1", false)).has_value());
    EXPECT_EQ(hba_match(rs, tcp("1.2.3.4", false)), HbaMethod::scram_sha_256);
    EXPECT_FALSE(hba_match(rs, tcp("1.2.3.5", false)).has_value());
    EXPECT_FALSE(hba_match(rs, tcp("not-an-address", false)).has_value());
    EXPECT_FALSE(hba_match(rs, tcp("", false)).has_value());
}

TEST(AuthHbaMatch, NonByteAlignedPrefix) {
    auto rs = rules("host all all 10.0.0.16/28 trust\nhost all all 2001:db8::/33 md5\n");
    EXPECT_EQ(hba_match(rs, tcp("10.0.0.31", false)), HbaMethod::trust);
    EXPECT_FALSE(hba_match(rs, tcp("10.0.0.32", false)).has_value());
    EXPECT_FALSE(hba_match(rs, tcp("10.0.0.15", false)).has_value());
    EXPECT_EQ(hba_match(rs, tcp("2001:db8:7fff::1", false)), HbaMethod::md5);
    EXPECT_FALSE(hba_match(rs, tcp("2001:db8:8000::1", false)).has_value());
}

TEST(AuthHbaMatch, HostBitsInRuleAreIgnored) {
    auto rs = rules("host all all 10.1.2.3/8 trust\n");
    EXPECT_EQ(hba_match(rs, tcp("10.200.0.1", false)), HbaMethod::trust);
}

TEST(AuthHbaMatch, Ipv6AndFamilies) {
    auto rs = rules(
        "host all all ::1/128 trust\n"
        "host all all fd00::/8 md5\n");
    EXPECT_EQ(hba_match(rs, tcp("::1", false)), HbaMethod::trust);
    EXPECT_EQ(hba_match(rs, tcp("fd12:3456::1", false)), HbaMethod::md5);
    EXPECT_FALSE(hba_match(rs, tcp("fe80::1", false)).has_value());
    // An IPv4 client never matches an IPv6 rule, even ::/0.
    auto any6 = rules("host all all ::/0 trust\n");
    EXPECT_FALSE(hba_match(any6, tcp("127.0.0.1", false)).has_value());
    EXPECT_FALSE(hba_match(any6, tcp("::ffff:127.0.0.1", false)).has_value());  // mapped = IPv4
    EXPECT_EQ(hba_match(any6, tcp("2001:db8::1", false)), HbaMethod::trust);
    // And an IPv6 client never matches an IPv4 rule, even 0.0.0.0/0.
    auto any4 = rules("host all all 0.0.0.0/0 trust\n");
    EXPECT_FALSE(hba_match(any4, tcp("::1", false)).has_value());
    EXPECT_EQ(hba_match(any4, tcp("8.8.8.8", false)), HbaMethod::trust);
}

TEST(AuthHbaMatch, Ipv4MappedClientsAreIpv4) {
    auto rs = rules("host all all 127.0.0.0/8 trust\nhost all all 10.0.0.0/8 md5\n");
    EXPECT_EQ(hba_match(rs, tcp("::ffff:127.0.0.1", false)), HbaMethod::trust);
    EXPECT_EQ(hba_match(rs, tcp("::ffff:10.1.1.1", false)), HbaMethod::md5);
    EXPECT_EQ(hba_match(rs, tcp("::FFFF:0a01:0101", false)), HbaMethod::md5);
    EXPECT_FALSE(hba_match(rs, tcp("::ffff:11.1.1.1", false)).has_value());
    // ::127.0.0.1 (IPv4-compatible, not mapped) stays IPv6.
    EXPECT_FALSE(hba_match(rs, tcp("::127.0.0.1", false)).has_value());
}

TEST(AuthHbaMatch, AllAddressMatchesBothFamilies) {
    auto rs = rules("host all all all md5\n");
    EXPECT_EQ(hba_match(rs, tcp("10.0.0.1", false)), HbaMethod::md5);
    EXPECT_EQ(hba_match(rs, tcp("::1", true)), HbaMethod::md5);
    EXPECT_EQ(hba_match(rs, tcp("::ffff:1.2.3.4", false)), HbaMethod::md5);
}

TEST(AuthHbaMatch, DatabaseAndUserLists) {
    auto rs = rules(
        "local sales,hr alice,bob md5\n"
        "local all carol scram-sha-256\n"
        "local sameuser all trust\n"
        "local replication all password\n"
        "local \"all\" dave reject\n"
        "local db \"all\" trust opt=1\n");
    EXPECT_EQ(hba_match(rs, unix_req("sales", "alice")), HbaMethod::md5);
    EXPECT_EQ(hba_match(rs, unix_req("hr", "bob")), HbaMethod::md5);
    EXPECT_EQ(hba_match(rs, unix_req("anything", "carol")), HbaMethod::scram_sha_256);
    EXPECT_EQ(hba_match(rs, unix_req("erin", "erin")), HbaMethod::trust);  // sameuser
    EXPECT_FALSE(hba_match(rs, unix_req("sales", "erin")).has_value());
    EXPECT_FALSE(hba_match(rs, unix_req("replication", "erin")).has_value());  // keyword never matches
    // Quoted "all" is a database called all, not the keyword.
    EXPECT_EQ(hba_match(rs, unix_req("all", "dave")), HbaMethod::reject);
    EXPECT_FALSE(hba_match(rs, unix_req("other", "dave")).has_value());
    // Quoted "all" as a user is a user called all.
    EXPECT_EQ(hba_match(rs, unix_req("db", "all")), HbaMethod::trust);
    EXPECT_FALSE(hba_match(rs, unix_req("db", "frank")).has_value());
    // Names are case sensitive.
    EXPECT_FALSE(hba_match(rs, unix_req("Sales", "alice")).has_value());
}

TEST(AuthHbaMatch, QuotedKeywordDatabases) {
    auto rs = rules("local \"sameuser\",\"replication\" all trust\n");
    EXPECT_EQ(hba_match(rs, unix_req("sameuser", "x")), HbaMethod::trust);
    EXPECT_EQ(hba_match(rs, unix_req("replication", "x")), HbaMethod::trust);
    EXPECT_FALSE(hba_match(rs, unix_req("x", "x")).has_value());
}

TEST(AuthHbaMatch, HandBuiltRulesWithoutQuotedFlags) {
    HbaRule r;
    r.type = HbaConnType::host;
    r.databases = {"all"};
    r.users = {"u"};
    r.any_addr = true;
    r.method = HbaMethod::md5;
    EXPECT_EQ(hba_match({r}, tcp("1.2.3.4", false)), HbaMethod::md5);
    EXPECT_FALSE(hba_match({r}, tcp("1.2.3.4", false, "db", "v")).has_value());
}

TEST(AuthHbaMatch, Matrix) {
    // Realistic file: every row type, both families, TLS or not.
    auto rs = rules(
        "local   all         postgres                    trust\n"
        "local   all         all                         scram-sha-256\n"
        "hostssl app         app       10.0.0.0/8        scram-sha-256\n"
        "hostnossl app       app       10.0.0.0/8        reject\n"
        "host    all         all       127.0.0.1/32      md5\n"
        "host    all         all       ::1/128           md5\n"
        "hostssl sameuser    all       2001:db8::/32     cert\n"
        "host    all         all       all               reject\n");
    struct Case {
        HbaRequest req;
        std::optional<HbaMethod> want;
    };
    const Case cases[] = {
        {unix_req("x", "postgres"), HbaMethod::trust},
        {unix_req("x", "app"), HbaMethod::scram_sha_256},
        {tcp("10.1.1.1", true, "app", "app"), HbaMethod::scram_sha_256},
        {tcp("10.1.1.1", false, "app", "app"), HbaMethod::reject},
        {tcp("::ffff:10.1.1.1", true, "app", "app"), HbaMethod::scram_sha_256},
        {tcp("10.1.1.1", true, "app", "other"), HbaMethod::reject},
        {tcp("127.0.0.1", false, "x", "y"), HbaMethod::md5},
        {tcp("127.0.0.1", true, "x", "y"), HbaMethod::md5},
        {tcp("::1", true, "x", "y"), HbaMethod::md5},
        {tcp("::ffff:127.0.0.1", false, "x", "y"), HbaMethod::md5},
        {tcp("2001:db8:1::5", true, "eve", "eve"), HbaMethod::cert},
        {tcp("2001:db8:1::5", true, "x", "eve"), HbaMethod::reject},
        {tcp("2001:db8:1::5", false, "eve", "eve"), HbaMethod::reject},
        {tcp("8.8.8.8", false, "x", "y"), HbaMethod::reject},
    };
    for (const Case& c : cases) {
        EXPECT_EQ(hba_match(rs, c.req), c.want)
            << c.req.address << " tls=" << c.req.tls << " db=" << c.req.database << " user=" << c.req.user;
    }
}

}  // namespace
}  // namespace pgrouter::auth

namespace pgrouter::auth {

// ---- auth_ident_file -----------------------------------------------------------------

TEST(AuthIdent, ParseAndAllow) {
    auto r = pgrouter::auth::parse_ident(
        "# map   system   database\n"
        "omicron  robert  bob   # trailing comment\n"
        "\n"
        "omicron  ann     all\n"
        "certs    web.example.com  web\n");
    EXPECT_TRUE(r.errors.empty());
    ASSERT_EQ(r.maps.size(), 2u);
    using pgrouter::auth::ident_allows;
    EXPECT_TRUE(ident_allows(r.maps, "omicron", "robert", "bob"));
    EXPECT_FALSE(ident_allows(r.maps, "omicron", "robert", "ann"));
    EXPECT_TRUE(ident_allows(r.maps, "omicron", "ann", "anyone"));
    EXPECT_FALSE(ident_allows(r.maps, "omicron", "bob", "bob"));  // the system name must be listed
    EXPECT_TRUE(ident_allows(r.maps, "certs", "web.example.com", "web"));
    EXPECT_FALSE(ident_allows(r.maps, "nomap", "robert", "bob"));
}

TEST(AuthIdent, Errors) {
    auto r = pgrouter::auth::parse_ident("a b\nm /^(.*)$ \\1\nm x +group\nm x y z\nok x y\n");
    ASSERT_EQ(r.errors.size(), 4u);
    EXPECT_TRUE(r.errors[0].starts_with("line 1: expected")) << r.errors[0];
    EXPECT_TRUE(r.errors[1].starts_with("line 2: regular expressions")) << r.errors[1];
    EXPECT_TRUE(r.errors[2].starts_with("line 3: group names")) << r.errors[2];
    EXPECT_TRUE(r.errors[3].starts_with("line 4: expected")) << r.errors[3];
    EXPECT_EQ(r.maps.size(), 1u);
}

TEST(AuthHbaParse, MapOption) {
    EXPECT_EQ(parse_one("local all all peer map=omicron").map, "omicron");
    EXPECT_EQ(parse_one("hostssl all all all cert clientcert=verify-full map=certs").map, "certs");
    EXPECT_EQ(parse_one("local all all peer").map, "");
    EXPECT_EQ(parse_error("local all all peer map="), "line 1: empty map name");
}

}  // namespace pgrouter::auth
