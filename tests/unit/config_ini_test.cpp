// The pgbouncer.ini loader.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>

#include "pgrouter/config/config.hpp"

namespace cfg = pgrouter::config;
namespace fs = std::filesystem;

namespace {

std::string lines(std::initializer_list<const char*> ls) {
    std::string out;
    for (const char* l : ls) out += std::string(l) + "\n";
    return out;
}

std::string dump(const cfg::LoadResult& r) {
    std::string out;
    for (const auto& p : r.problems) out += p.to_string() + "\n";
    return out;
}

const cfg::Problem* find(const cfg::LoadResult& r, const std::string& key) {
    for (const auto& p : r.problems)
        if (p.key == key) return &p;
    return nullptr;
}

cfg::LoadResult load(const std::string& text) { return cfg::load_ini_string(text, "/etc/pgbouncer/pgbouncer.ini"); }

// One error at `key`, `line`, whose reason contains `text`.
void expect_error(const std::string& text, const std::string& key, int line, const std::string& reason) {
    auto r = load(text);
    EXPECT_FALSE(r.ok()) << text;
    ASSERT_EQ(r.problems.size(), 1u) << dump(r);
    const auto* p = find(r, key);
    ASSERT_NE(p, nullptr) << "no problem for " << key << " in:\n" << dump(r);
    EXPECT_FALSE(p->warning);
    EXPECT_EQ(p->line, line) << p->to_string();
    EXPECT_NE(p->reason.find(reason), std::string::npos) << p->to_string() << " lacks " << reason;
}

class IniFiles : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/pgrouter-ini-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override { fs::remove_all(dir_); }
    std::string write(const std::string& name, const std::string& text) {
        fs::path p = fs::path(dir_) / name;
        fs::create_directories(p.parent_path());
        std::ofstream(p) << text;
        return p.string();
    }
    std::string dir_;
};

}  // namespace

TEST(IniDatabases, LibpqStyleLineWithQuoting) {
    auto r = load(lines({
        "[databases]",
        "app = host=db1 port=6543 dbname='my ''big'' db' user=bob password='p w=1' pool_size=5 "
        "min_pool_size=1 reserve_pool=2 max_db_connections=9 max_db_client_connections=90 pool_mode=Session "
        "client_encoding=UTF8 "
        "datestyle=ISO timezone=UTC application_name='a b' auth_user=au auth_dbname=app connect_query='SELECT 1'",
        "[pgbouncer]",
    }));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.problems.empty()) << dump(r);
    const cfg::DatabaseConfig& d = r.config->databases.at("app");
    EXPECT_EQ(d.name, "app");
    EXPECT_EQ(d.host, "db1");
    EXPECT_EQ(d.port, 6543);
    EXPECT_EQ(d.dbname, "my 'big' db");
    EXPECT_EQ(d.user, "bob");
    EXPECT_EQ(d.password, "p w=1");
    EXPECT_EQ(d.pool_size, 5);
    EXPECT_EQ(d.min_pool_size, 1);
    EXPECT_EQ(d.reserve_pool_size, 2);
    EXPECT_EQ(d.max_db_connections, 9);
    EXPECT_EQ(d.max_db_client_connections, 90);
    EXPECT_EQ(d.pool_mode, cfg::PoolMode::session);
    EXPECT_EQ(d.client_encoding, "UTF8");
    EXPECT_EQ(d.datestyle, "ISO");
    EXPECT_EQ(d.timezone, "UTC");
    EXPECT_EQ(d.application_name, "a b");
    EXPECT_EQ(d.auth_user, "au");
    EXPECT_EQ(d.auth_dbname, "app");
    EXPECT_EQ(d.connect_query, "SELECT 1");
}

TEST(IniDatabases, DefaultsUnixSocketAndFallback) {
    auto r = load(lines({
        "[pgbouncer]",
        "unix_socket_dir = /var/run/postgresql",
        "[databases]",
        "local =",
        "sock = host=/tmp port=5433",
        "plain = host=10.0.0.1",
        "* = host=10.9.9.9 port=5999",
    }));
    ASSERT_TRUE(r.ok()) << dump(r);
    const auto& dbs = r.config->databases;
    EXPECT_EQ(dbs.at("local").host, "/var/run/postgresql");  // PgBouncer: unix_socket_dir
    EXPECT_EQ(dbs.at("local").dbname, "local");
    EXPECT_EQ(dbs.at("sock").host, "/tmp");
    EXPECT_EQ(dbs.at("sock").port, 5433);
    EXPECT_EQ(dbs.at("plain").port, 5432);
    EXPECT_EQ(dbs.at("plain").pool_size, -1);
    EXPECT_FALSE(dbs.at("plain").pool_mode.has_value());
    EXPECT_EQ(dbs.count("*"), 0u);
    ASSERT_TRUE(r.config->fallback_database.has_value());
    EXPECT_EQ(r.config->fallback_database->name, "*");
    EXPECT_EQ(r.config->fallback_database->host, "10.9.9.9");
    EXPECT_EQ(r.config->fallback_database->port, 5999);
    EXPECT_EQ(r.config->fallback_database->dbname, "");
}

TEST(IniDatabases, Errors) {
    expect_error(lines({"[pgbouncer]", "[databases]", "a = host=h port=abc"}), "databases.a.port", 3,
                 "expected an integer, got \"abc\"");
    expect_error(lines({"[pgbouncer]", "[databases]", "a = host=h pool_mode=fast"}), "databases.a.pool_mode", 3,
                 "session, transaction, statement");
    expect_error(lines({"[pgbouncer]", "[databases]", "a = host=h dbname='x"}), "databases.a", 3,
                 "unterminated quote");
    expect_error(lines({"[pgbouncer]", "[databases]", "a = host=h dbname="}), "databases.a", 3, "empty value");
    expect_error(lines({"[pgbouncer]", "[databases]", "a = host"}), "databases.a", 3, "expected key=value");
    expect_error(lines({"[pgbouncer]", "[databases]", "a = host=h hots=x"}), "databases.a.hots", 3,
                 "unknown parameter");
    expect_error(lines({"[pgbouncer]", "[databases]", "a = host=h1,,h2"}), "databases.a.host", 3,
                 "empty entry in host list \"h1,,h2\"");
    expect_error(lines({"[pgbouncer]", "[databases]", "a = host=h1,"}), "databases.a.host", 3,
                 "empty entry");
    expect_error(lines({"[pgbouncer]", "[databases]", "a = host=h load_balance_hosts=random"}),
                 "databases.a.load_balance_hosts", 3, "expected one of: round-robin, disable");
    expect_error(lines({"[pgbouncer]", "[databases]", "a = host=h target_session_attrs=prefer-standby"}),
                 "databases.a.target_session_attrs", 3,
                 "expected one of: any, read-write, read-only, primary, standby");
    expect_error(lines({"[pgbouncer]", "[databases]", "pgbouncer = host=h"}), "databases.pgbouncer", 3,
                 "reserved");
    expect_error(lines({"[pgbouncer]", "unix_socket_dir =", "listen_addr = *", "[databases]", "a = port=1"}),
                 "databases.a", 5, "needs cluster or host");
}

TEST(IniDatabases, AuthQueryPerDatabase) {
    auto r = load(lines({"[pgbouncer]", "[databases]",
                         "a = host=h auth_query='SELECT usename, passwd FROM pg_shadow WHERE usename=$1' "
                         "server_lifetime=30",
                         "b = host=h"}));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.problems.empty()) << dump(r);
    EXPECT_EQ(r.config->databases.at("a").auth_query, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1");
    EXPECT_EQ(r.config->databases.at("b").auth_query, "");
}

TEST(IniDatabases, HostListWithLoadBalancingAndSessionAttrs) {
    auto r = load(lines({"[pgbouncer]", "[databases]",
                         "a = host=10.0.0.1,db2.example.com,/run/pg port=5433 load_balance_hosts=Disable "
                         "target_session_attrs=read-write",
                         "b = host=h"}));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.problems.empty()) << dump(r);
    const auto& a = r.config->databases.at("a");
    EXPECT_EQ(a.host, "10.0.0.1,db2.example.com,/run/pg");
    EXPECT_EQ(cfg::split_hosts(a.host), (std::vector<std::string>{"10.0.0.1", "db2.example.com", "/run/pg"}));
    EXPECT_EQ(a.port, 5433);
    EXPECT_EQ(a.load_balance_hosts, cfg::LoadBalanceHosts::disable);
    EXPECT_EQ(a.target_session_attrs, cfg::TargetSessionAttrs::read_write);
    const auto& b = r.config->databases.at("b");
    EXPECT_EQ(b.load_balance_hosts, cfg::LoadBalanceHosts::round_robin);
    EXPECT_EQ(b.target_session_attrs, cfg::TargetSessionAttrs::any);
}

TEST(IniUsers, PoolModeAndLimits) {
    auto r = load(lines({"[users]", "rep = pool_mode=session max_user_connections=4 max_user_client_connections=8", "[pgbouncer]"}));
    ASSERT_TRUE(r.ok()) << dump(r);
    const auto& u = r.config->users.at("rep");
    EXPECT_EQ(u.name, "rep");
    EXPECT_EQ(u.pool_mode, cfg::PoolMode::session);
    EXPECT_EQ(u.max_user_connections, 4);
    EXPECT_EQ(u.max_user_client_connections, 8);
    expect_error(lines({"[users]", "rep = max_user_connections=-1", "[pgbouncer]"}),
                 "users.rep.max_user_connections", 2, ">= 0");
    expect_error(lines({"[users]", "rep = pool_mod=session", "[pgbouncer]"}), "users.rep.pool_mod", 2,
                 "unknown parameter");
}

TEST(IniUsers, TimeoutAndPoolSizeOverrides) {
    auto r = load(lines({"[users]",
                         "rep = pool_size=2 reserve_pool_size=1 query_timeout=1.5 idle_transaction_timeout=3 "
                         "transaction_timeout=9 client_idle_timeout=60 query_wait_timeout=-1",
                         "[pgbouncer]", "[databases]",
                         "a = host=h server_lifetime=30 query_wait_timeout=7 idle_transaction_timeout=0"}));
    ASSERT_TRUE(r.ok()) << dump(r);
    const auto& u = r.config->users.at("rep");
    EXPECT_EQ(u.pool_size, 2);
    EXPECT_EQ(u.reserve_pool_size, 1);
    EXPECT_EQ(u.query_timeout, 1.5);
    EXPECT_EQ(u.idle_transaction_timeout, 3);
    EXPECT_EQ(u.transaction_timeout, 9);
    EXPECT_EQ(u.client_idle_timeout, 60);
    EXPECT_EQ(u.query_wait_timeout, -1);
    const auto& a = r.config->databases.at("a");
    EXPECT_EQ(a.server_lifetime, 30);
    EXPECT_EQ(a.query_wait_timeout, 7);
    EXPECT_EQ(a.idle_transaction_timeout, 0);
    EXPECT_EQ(a.query_timeout, -1);
    expect_error(lines({"[users]", "rep = query_timeout=-3", "[pgbouncer]"}), "users.rep.query_timeout", 2, ">= 0");
    expect_error(lines({"[users]", "rep = transaction_timeout=1h", "[pgbouncer]"}), "users.rep.transaction_timeout",
                 2, "number of seconds");
    expect_error(lines({"[pgbouncer]", "[databases]", "a = host=h server_lifetime=x"}),
                 "databases.a.server_lifetime", 3, "number of seconds");
}

TEST(IniSettings, KeysMapOntoSettingsAndTls) {
    auto r = load(lines({
        "; comment",
        "# another comment",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1, ::1",
        "listen_port = 6543",
        "auth_type = plain",
        "admin_users = admin, ops ,root",
        "stats_users = mon",
        "ignore_startup_parameters = extra_float_digits,search_path",
        "pool_mode = statement",
        "default_pool_size = 12",
        "server_idle_timeout = 1.5",
        "autodb_idle_timeout = 120",
        "max_packet_size = 4096",
        "tcp_defer_accept = 1",
        "tcp_socket_buffer = 65536",
        "verbose = 2",
        "disable_pqexec = 1",
        "client_tls_ecdhcurve = prime256v1",
        "client_tls_dheparams = Legacy",
        "max_db_client_connections = 50",
        "max_user_client_connections = 40",
        "transaction_timeout = 30",
        "query_wait_notify = 0",
        "suspend_timeout = 2.5",
        "scram_iterations = 10000",
        "server_reset_query = DISCARD ALL; SELECT 1",
        "log_connections = no",
        "log_disconnections = off",
        "application_name_add_host = yes",
        "server_reset_query_always = On",
        "client_tls_sslmode = disable",
        "server_tls_sslmode = VERIFY-FULL",
    }));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.problems.empty()) << dump(r);
    const cfg::Settings& s = r.config->settings;
    EXPECT_EQ(s.listen_addr, (std::vector<std::string>{"127.0.0.1", "::1"}));
    EXPECT_EQ(s.listen_port, 6543);
    EXPECT_EQ(s.auth_type, cfg::AuthType::plain);
    EXPECT_EQ(s.admin_users, (std::vector<std::string>{"admin", "ops", "root"}));
    EXPECT_EQ(s.stats_users, (std::vector<std::string>{"mon"}));
    EXPECT_EQ(s.ignore_startup_parameters, (std::vector<std::string>{"extra_float_digits", "search_path"}));
    EXPECT_EQ(s.pool_mode, cfg::PoolMode::statement);
    EXPECT_EQ(s.default_pool_size, 12);
    EXPECT_DOUBLE_EQ(s.server_idle_timeout, 1.5);
    EXPECT_DOUBLE_EQ(s.autodb_idle_timeout, 120.0);
    EXPECT_EQ(s.max_packet_size, 4096);
    EXPECT_TRUE(s.tcp_defer_accept);
    EXPECT_EQ(s.tcp_socket_buffer, 65536);
    EXPECT_EQ(s.verbose, 2);
    EXPECT_TRUE(s.disable_pqexec);
    EXPECT_EQ(r.config->tls.client_tls_ecdhcurve, "prime256v1");
    EXPECT_EQ(r.config->tls.client_tls_dheparams, "legacy");
    EXPECT_EQ(s.max_db_client_connections, 50);
    EXPECT_EQ(s.max_user_client_connections, 40);
    EXPECT_DOUBLE_EQ(s.transaction_timeout, 30.0);
    EXPECT_DOUBLE_EQ(s.query_wait_notify, 0.0);
    EXPECT_DOUBLE_EQ(s.suspend_timeout, 2.5);
    EXPECT_EQ(s.scram_iterations, 10000);
    EXPECT_EQ(s.server_reset_query, "DISCARD ALL; SELECT 1");
    EXPECT_FALSE(s.log_connections);
    EXPECT_FALSE(s.log_disconnections);
    EXPECT_TRUE(s.application_name_add_host);
    EXPECT_TRUE(s.server_reset_query_always);
    EXPECT_EQ(r.config->tls.server_tls_sslmode, cfg::SslMode::verify_full);
}

TEST(IniSettings, TcpKeepaliveKeysAndUserTimeoutInMilliseconds) {
    auto r = load(lines({
        "[pgbouncer]",
        "tcp_keepalive = 0",
        "tcp_keepcnt = 4",
        "tcp_keepidle = 30",
        "tcp_keepintvl = 5",
        "tcp_user_timeout = 2500",
        "server_round_robin = 1",
        "server_fast_close = 1",
    }));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.problems.empty()) << dump(r);
    const cfg::Settings& s = r.config->settings;
    EXPECT_FALSE(s.tcp_keepalive);
    EXPECT_EQ(s.tcp_keepcnt, 4);
    EXPECT_EQ(s.tcp_keepidle, 30);
    EXPECT_EQ(s.tcp_keepintvl, 5);
    EXPECT_DOUBLE_EQ(s.tcp_user_timeout, 2.5);  // PgBouncer's milliseconds, pgrouter's seconds
    EXPECT_TRUE(s.server_round_robin);
    EXPECT_TRUE(s.server_fast_close);
    auto d = load(lines({"[pgbouncer]"}));
    ASSERT_TRUE(d.ok()) << dump(d);
    EXPECT_TRUE(d.config->settings.tcp_keepalive);  // PgBouncer's default: on
    EXPECT_DOUBLE_EQ(d.config->settings.tcp_user_timeout, 0.0);
    EXPECT_FALSE(d.config->settings.server_round_robin);

    expect_error(lines({"[pgbouncer]", "tcp_user_timeout = 2.5s"}), "pgbouncer.tcp_user_timeout", 2,
                 "expected a number of milliseconds, got \"2.5s\"");
    expect_error(lines({"[pgbouncer]", "tcp_user_timeout = 1.5"}), "pgbouncer.tcp_user_timeout", 2,
                 "milliseconds");
    expect_error(lines({"[pgbouncer]", "tcp_user_timeout = -1"}), "pgbouncer.tcp_user_timeout", 2, ">= 0");
    expect_error(lines({"[pgbouncer]", "tcp_user_timeout = 99999999999"}), "pgbouncer.tcp_user_timeout", 2,
                 "at most");
    expect_error(lines({"[pgbouncer]", "tcp_keepcnt = 200"}), "pgbouncer.tcp_keepcnt", 2, "between 0 and 127");
    expect_error(lines({"[pgbouncer]", "tcp_keepidle = -1"}), "pgbouncer.tcp_keepidle", 2,
                 "between 0 and 32767");
    expect_error(lines({"[pgbouncer]", "tcp_keepalive = sometimes"}), "pgbouncer.tcp_keepalive", 2,
                 "expected a boolean");
}

TEST(IniSettings, UnixSocketModeIsOctal) {
    auto r = load(lines({"[pgbouncer]", "unix_socket_mode = 0777", "listen_backlog = 128", "log_stats = 0"}));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.problems.empty()) << dump(r);
    EXPECT_EQ(r.config->settings.unix_socket_mode, 0777);
    EXPECT_EQ(r.config->settings.listen_backlog, 128);
    EXPECT_FALSE(r.config->settings.log_stats);
    auto g = load(lines({"[pgbouncer]", "unix_socket_mode = 600"}));
    ASSERT_TRUE(g.ok()) << dump(g);
    EXPECT_EQ(g.config->settings.unix_socket_mode, 0600);
    expect_error(lines({"[pgbouncer]", "unix_socket_mode = rw"}), "pgbouncer.unix_socket_mode", 2, "octal");
}

TEST(IniSettings, TlsProtocolsAndCiphers) {
    auto r = load(lines({"[pgbouncer]", "client_tls_protocols = tlsv1.2,tlsv1.3", "client_tls_ciphers = fast",
                         "server_tls_protocols = secure", "server_tls13_ciphers = TLS_AES_128_GCM_SHA256"}));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.problems.empty()) << dump(r);
    EXPECT_EQ(r.config->tls.client_tls_protocols, "tlsv1.2,tlsv1.3");
    EXPECT_EQ(r.config->tls.client_tls_ciphers, "fast");
    EXPECT_EQ(r.config->tls.server_tls13_ciphers, "TLS_AES_128_GCM_SHA256");
    expect_error(lines({"[pgbouncer]", "client_tls_protocols = tlsv2"}), "pgbouncer.client_tls_protocols", 2,
                 "unknown protocol");
}

TEST(IniSettings, AuthTypeAny) {
    auto r = load(lines({"[databases]", "app = host=127.0.0.1 user=appuser", "[pgbouncer]", "auth_type = any"}));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config->settings.auth_type, cfg::AuthType::any);
    EXPECT_STREQ(cfg::to_string(cfg::AuthType::any), "any");
}

TEST(IniSettings, AuthTypePam) {
    auto r = load(lines({"[pgbouncer]", "auth_type = pam"}));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config->settings.auth_type, cfg::AuthType::pam);
    EXPECT_EQ(r.config->settings.auth_pam_service, "pgbouncer");  // PgBouncer's service name
}

TEST(IniSettings, PgbouncerDefaultsWhenAbsent) {
    auto r = load(lines({"[pgbouncer]"}));
    ASSERT_TRUE(r.ok()) << dump(r);
    const cfg::Settings& s = r.config->settings;
    EXPECT_EQ(s.pool_mode, cfg::PoolMode::session);
    EXPECT_EQ(s.auth_type, cfg::AuthType::md5);
    EXPECT_EQ(s.max_client_conn, 100);
    EXPECT_TRUE(s.listen_addr.empty());  // unix socket only, as PgBouncer
    EXPECT_TRUE(s.admin_users.empty());
    EXPECT_EQ(s.listen_port, 6432);
    EXPECT_EQ(s.unix_socket_dir, "/tmp");
}

TEST(IniSettings, BooleansAcceptPgbouncerSpellings) {
    const std::pair<const char*, bool> cases[] = {{"1", true}, {"0", false}, {"yes", true}, {"no", false},
                                                  {"on", true}, {"off", false}, {"true", true},
                                                  {"FALSE", false}};
    for (const auto& [text, want] : cases) {
        auto r = load("[pgbouncer]\nlog_connections = " + std::string(text) + "\n");
        ASSERT_TRUE(r.ok()) << text << "\n" << dump(r);
        EXPECT_EQ(r.config->settings.log_connections, want) << text;
    }
    expect_error(lines({"[pgbouncer]", "log_connections = maybe"}), "pgbouncer.log_connections", 2,
                 "expected a boolean");
}

TEST(IniSettings, UnsupportedAndUnknownKeysAreWarnings) {
    auto r = load(lines({
        "[pgbouncer]",
        "so_reuseport = 1",
        "sbuf_loopcnt = 10",
        "dns_max_ttl = 15",
        "service_name = x",
        "listen_prot = 6432",
        "listen_port = 7000",
        "[peers]",
        "1 = host=/tmp/pgbouncer1",
    }));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config->settings.listen_port, 7000);
    ASSERT_EQ(r.problems.size(), 6u) << dump(r);
    for (const auto& p : r.problems) EXPECT_TRUE(p.warning) << p.to_string();
    EXPECT_EQ(r.problems[0].to_string(),
              "/etc/pgbouncer/pgbouncer.ini:2: pgbouncer.so_reuseport: warning: ignored: pgrouter's own workers "
              "share the port; a second pgrouter cannot");
    EXPECT_EQ(find(r, "pgbouncer.sbuf_loopcnt")->line, 3);
    EXPECT_EQ(find(r, "pgbouncer.dns_max_ttl")->reason,
              "ignored: pgrouter resolves host names at each new server connection and caches nothing");
    EXPECT_EQ(find(r, "pgbouncer.service_name")->reason, "not supported by pgrouter, ignored");
    EXPECT_EQ(find(r, "pgbouncer.service_name")->line, 5);
    EXPECT_EQ(find(r, "pgbouncer.listen_prot")->reason, "unknown key, ignored");
    EXPECT_EQ(find(r, "peers")->line, 8);
}

TEST(IniSettings, TrackExtraParametersWarnsAboutNamesPgrouterDoesNotTrack) {
    auto r = load(lines({"[pgbouncer]", "track_extra_parameters = IntervalStyle, search_path,timezone"}));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config->settings.track_extra_parameters, (std::vector<std::string>{"IntervalStyle", "TimeZone"}));
    ASSERT_EQ(r.problems.size(), 1u) << dump(r);
    EXPECT_TRUE(r.problems[0].warning);
    EXPECT_EQ(r.problems[0].line, 2);
    EXPECT_EQ(r.problems[0].key, "pgbouncer.track_extra_parameters");
    EXPECT_NE(r.problems[0].reason.find("\"search_path\" is not tracked: pgrouter keeps client_encoding"),
              std::string::npos) << dump(r);
    EXPECT_TRUE(r.problems[0].reason.ends_with("; ignored")) << dump(r);
}

TEST(IniSettings, BadValuesAreErrors) {
    expect_error(lines({"[pgbouncer]", "listen_port = abc"}), "pgbouncer.listen_port", 2,
                 "expected an integer, got \"abc\"");
    expect_error(lines({"[pgbouncer]", "listen_port = 0"}), "pgbouncer.listen_port", 2, "between 1 and 65535");
    expect_error(lines({"[pgbouncer]", "", "pool_mode = fast"}), "pgbouncer.pool_mode", 3,
                 "session, transaction, statement");
    expect_error(lines({"[pgbouncer]", "auth_type = radius"}), "pgbouncer.auth_type", 2, "invalid value \"radius\"");
    expect_error(lines({"[pgbouncer]", "auth_type = ldap"}), "pgbouncer.auth_ldap_options", 1,
                 "requires argument \"ldapserver\" to be set");
    expect_error(lines({"[pgbouncer]", "default_pool_size = -3"}), "pgbouncer.default_pool_size", 2, ">= 0");
    expect_error(lines({"[pgbouncer]", "query_timeout = -1"}), "pgbouncer.query_timeout", 2, ">= 0");
    expect_error(lines({"[pgbouncer]", "query_timeout = 5s"}), "pgbouncer.query_timeout", 2,
                 "expected a number of seconds");
    expect_error(lines({"[pgbouncer]", "auth_type = hba"}), "pgbouncer.auth_type", 2, "requires auth_hba_file");
}

TEST(IniSyntax, Errors) {
    expect_error(lines({"[pgbouncer]", "just words"}), "", 2, "expected key = value");
    expect_error(lines({"[pgbouncer]", "[databases", "listen_port = 1"}), "", 2, "expected ']'");
    expect_error(lines({"listen_port = 1", "[pgbouncer]"}), "listen_port", 1, "outside of any section");
    expect_error(lines({"[pgbouncer]", "[pgbouncre]", "x = 1"}), "pgbouncre", 2, "unknown section");
    expect_error(lines({"[databases]", "a = host=h"}), "pgbouncer", 0, "missing [pgbouncer] section");
}

TEST(IniSyntax, CrlfAndBom) {
    auto r = load("\xEF\xBB\xBF[pgbouncer]\r\nlisten_port = 7001\r\n");
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config->settings.listen_port, 7001);
}

TEST_F(IniFiles, NestedIncludesRelativeToTheIncludingFile) {
    write("userlist.txt", "\"u\" \"p\"\n");
    write("conf.d/databases.ini", lines({"[databases]", "%include more/db2.ini", "db1 = host=h1"}));
    write("conf.d/more/db2.ini", lines({"db2 = host=h2 port=5444"}));
    std::string top = write("pgbouncer.ini", lines({
        "[pgbouncer]",
        "auth_file = userlist.txt",
        "%include conf.d/databases.ini",
        "db3 = host=h3",
    }));
    auto r = cfg::load_file(top);
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.problems.empty()) << dump(r);
    const auto& dbs = r.config->databases;
    EXPECT_EQ(dbs.at("db1").host, "h1");
    EXPECT_EQ(dbs.at("db2").host, "h2");
    EXPECT_EQ(dbs.at("db2").port, 5444);
    EXPECT_EQ(dbs.at("db3").host, "h3");  // the [databases] section opened by the include goes on
    EXPECT_EQ(r.config->settings.auth_file, (fs::path(dir_) / "userlist.txt").string());
    EXPECT_EQ(r.config->path, top);
}

TEST_F(IniFiles, ProblemsInIncludedFilesNameThatFile) {
    std::string inc = write("inc/extra.ini", lines({"", "listen_port = nope"}));
    std::string top = write("pgbouncer.ini", lines({"[pgbouncer]", "%include inc/extra.ini"}));
    auto r = cfg::load_file(top);
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.problems.size(), 1u) << dump(r);
    EXPECT_EQ(r.problems[0].file, inc);
    EXPECT_EQ(r.problems[0].line, 2);
    EXPECT_EQ(r.problems[0].key, "pgbouncer.listen_port");
}

TEST_F(IniFiles, MissingIncludeIsAnErrorAtItsLine) {
    std::string top = write("pgbouncer.ini", lines({"[pgbouncer]", "listen_port = 6000", "%include nope.ini",
                                                    "listen_port = x"}));
    auto r = cfg::load_file(top);
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.problems.size(), 2u) << dump(r);  // parsing goes on after a failed include
    const auto* p = find(r, "%include");
    ASSERT_NE(p, nullptr) << dump(r);
    EXPECT_EQ(p->file, top);
    EXPECT_EQ(p->line, 3);
    EXPECT_EQ(p->reason, "cannot read " + dir_ + "/nope.ini: No such file or directory");
    EXPECT_EQ(find(r, "pgbouncer.listen_port")->line, 4);
}

TEST_F(IniFiles, IncludeDepthIsLimited) {
    std::string self = write("loop.ini", lines({"[pgbouncer]", "%include loop.ini"}));
    auto r = cfg::load_file(self);
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.problems.size(), 1u) << dump(r);
    EXPECT_EQ(r.problems[0].key, "%include");
    EXPECT_NE(r.problems[0].reason.find("too deep"), std::string::npos);
}

TEST_F(IniFiles, AuthFileMustBeReadable) {
    std::string top = write("pgbouncer.ini", lines({"[pgbouncer]", "", "auth_file = users.txt"}));
    auto r = cfg::load_file(top);
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.problems.size(), 1u) << dump(r);
    EXPECT_EQ(r.problems[0].key, "pgbouncer.auth_file");
    EXPECT_EQ(r.problems[0].line, 3);
    EXPECT_EQ(r.problems[0].reason, "cannot read " + dir_ + "/users.txt: No such file or directory");
}

TEST_F(IniFiles, CombinationErrorsPointIntoTheIniFile) {
    std::string top = write("pgbouncer.ini", lines({"[pgbouncer]", "client_tls_sslmode = require"}));
    auto r = cfg::load_file(top);
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.problems.size(), 1u) << dump(r);
    EXPECT_EQ(r.problems[0].key, "pgbouncer.client_tls_sslmode");
    EXPECT_EQ(r.problems[0].line, 2);
    EXPECT_EQ(r.problems[0].file, top);
}
