// The TOML loader, the value parsers, and the shipped example files.
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

const cfg::Problem* find(const cfg::LoadResult& r, const std::string& key) {
    for (const auto& p : r.problems)
        if (p.key == key) return &p;
    return nullptr;
}

std::string dump(const cfg::LoadResult& r) {
    std::string out;
    for (const auto& p : r.problems) out += p.to_string() + "\n";
    return out;
}

// Expects exactly one problem, an error at `key` and `line` whose reason contains `text`.
void expect_error(const std::string& toml, const std::string& key, int line, const std::string& text) {
    auto r = cfg::load_toml_string(toml, "/etc/pgrouter/test.toml");
    EXPECT_FALSE(r.ok()) << toml;
    ASSERT_EQ(r.problems.size(), 1u) << dump(r);
    const auto* p = find(r, key);
    ASSERT_NE(p, nullptr) << "no problem for " << key << " in:\n" << dump(r);
    EXPECT_EQ(p->line, line) << p->to_string();
    EXPECT_FALSE(p->warning);
    EXPECT_NE(p->reason.find(text), std::string::npos) << p->to_string() << " lacks " << text;
    EXPECT_EQ(p->file, "/etc/pgrouter/test.toml");
}

class TempDir : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/pgrouter-config-test-XXXXXX";
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

std::string find_example(const std::string& name) {
    std::vector<std::string> candidates;
    if (const char* src = std::getenv("PGROUTER_SOURCE_DIR")) candidates.push_back(std::string(src) + "/conf/" + name);
    candidates.push_back("../conf/" + name);
    candidates.push_back("conf/" + name);
    for (const auto& c : candidates)
        if (fs::exists(c)) return c;
    return "";
}

}  // namespace

// ---- good input ---------------------------------------------------------------

using TomlLoad = TempDir;

TEST_F(TomlLoad, EverySection) {
    write("users.txt", "\"bob\" \"secret\"\n");
    write("token", "t0ken\n");
    std::string path = write("pgrouter.toml", lines({
        "[pgrouter]",
        "listen_addr = [\"127.0.0.1\", \"::1\"]",
        "listen_port = 7432",
        "workers = 4",
        "auth_type = \"md5\"",
        "auth_file = \"users.txt\"",
        "admin_users = [\"admin\", \"root\"]",
        "pool_mode = \"session\"",
        "default_pool_size = 33",
        "reserve_pool_timeout = 2",
        "server_lifetime = 1.5",
        "server_reset_query_always = true",
        "log_format = \"json\"",
        "metrics_listen = \"127.0.0.1:9127\"",
        "[tls]",
        "server_tls_sslmode = \"verify-full\"",
        "[clusters.main]",
        "primary = \"10.0.0.1:5432\"",
        "replicas = [\"10.0.0.2\", \"[::1]:5433\", \"/var/run/postgresql:5434\"]",
        "health_check_period = 0.5",
        "max_replica_lag = \"512kB\"",
        "replica_fallback = \"error\"",
        "failover_timeout = 10",
        "[clusters.main.discovery]",
        "type = \"consul\"",
        "consul_service = \"postgresql\"",
        "consul_primary_tags = []",
        "consul_token_file = \"token\"",
        "consul_wait = 30",
        "[databases.app]",
        "cluster = \"main\"",
        "route = \"replica\"",
        "pool_size = 7",
        "pool_mode = \"statement\"",
        "[databases.legacy]",
        "host = \"10.0.0.9\"",
        "port = 6000",
        "dbname = \"old\"",
        "[users.reporting]",
        "pool_mode = \"session\"",
        "max_user_connections = 10",
    }));
    auto r = cfg::load_file(path);
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.problems.empty()) << dump(r);
    const cfg::Config& c = *r.config;
    EXPECT_EQ(c.path, path);
    EXPECT_EQ(c.settings.listen_addr, (std::vector<std::string>{"127.0.0.1", "::1"}));
    EXPECT_EQ(c.settings.listen_port, 7432);
    EXPECT_EQ(c.settings.workers, 4);
    EXPECT_EQ(c.settings.auth_type, cfg::AuthType::md5);
    EXPECT_EQ(c.settings.auth_file, (fs::path(dir_) / "users.txt").string());
    EXPECT_EQ(c.settings.admin_users, (std::vector<std::string>{"admin", "root"}));
    EXPECT_EQ(c.settings.pool_mode, cfg::PoolMode::session);
    EXPECT_EQ(c.settings.default_pool_size, 33);
    EXPECT_DOUBLE_EQ(c.settings.reserve_pool_timeout, 2.0);
    EXPECT_DOUBLE_EQ(c.settings.server_lifetime, 1.5);
    EXPECT_TRUE(c.settings.server_reset_query_always);
    EXPECT_EQ(c.settings.log_format, cfg::LogFormat::json);
    EXPECT_EQ(c.settings.metrics_listen, "127.0.0.1:9127");
    EXPECT_EQ(c.tls.server_tls_sslmode, cfg::SslMode::verify_full);
    EXPECT_EQ(c.tls.client_tls_sslmode, cfg::SslMode::disable);

    ASSERT_EQ(c.clusters.count("main"), 1u);
    const cfg::ClusterConfig& m = c.clusters.at("main");
    EXPECT_EQ(m.name, "main");
    ASSERT_TRUE(m.primary.has_value());
    EXPECT_EQ(*m.primary, (cfg::HostPort{"10.0.0.1", 5432}));
    ASSERT_EQ(m.replicas.size(), 3u);
    EXPECT_EQ(m.replicas[0], (cfg::HostPort{"10.0.0.2", 5432}));
    EXPECT_EQ(m.replicas[1], (cfg::HostPort{"::1", 5433}));
    EXPECT_EQ(m.replicas[2], (cfg::HostPort{"/var/run/postgresql", 5434}));
    EXPECT_DOUBLE_EQ(m.health_check_period, 0.5);
    EXPECT_EQ(m.max_replica_lag, 512 * 1024);
    EXPECT_EQ(m.replica_fallback, cfg::ReplicaFallback::error);
    EXPECT_DOUBLE_EQ(m.failover_timeout, 10.0);
    EXPECT_EQ(m.discovery.type, cfg::DiscoveryType::consul);
    EXPECT_EQ(m.discovery.consul_service, "postgresql");
    EXPECT_TRUE(m.discovery.consul_primary_tags.empty());
    EXPECT_EQ(m.discovery.consul_replica_tags, (std::vector<std::string>{"replica"}));
    EXPECT_EQ(m.discovery.consul_token_file, (fs::path(dir_) / "token").string());
    EXPECT_DOUBLE_EQ(m.discovery.consul_wait, 30.0);

    const cfg::DatabaseConfig& app = c.databases.at("app");
    EXPECT_EQ(app.name, "app");
    EXPECT_EQ(app.dbname, "app");
    EXPECT_EQ(app.cluster, "main");
    EXPECT_EQ(app.route, cfg::Route::replica);
    EXPECT_EQ(app.pool_size, 7);
    EXPECT_EQ(app.pool_mode, cfg::PoolMode::statement);
    const cfg::DatabaseConfig& legacy = c.databases.at("legacy");
    EXPECT_EQ(legacy.host, "10.0.0.9");
    EXPECT_EQ(legacy.port, 6000);
    EXPECT_EQ(legacy.dbname, "old");
    EXPECT_EQ(legacy.pool_size, -1);
    const cfg::UserConfig& rep = c.users.at("reporting");
    EXPECT_EQ(rep.name, "reporting");
    EXPECT_EQ(rep.pool_mode, cfg::PoolMode::session);
    EXPECT_EQ(rep.max_user_connections, 10);
}

TEST(TomlDefaults, EmptyFileIsTheDefaults) {
    auto r = cfg::load_toml_string("", "x.toml");
    ASSERT_TRUE(r.ok()) << dump(r);
    const cfg::Settings& s = r.config->settings;
    const cfg::Settings d;
    EXPECT_EQ(s.listen_addr, std::vector<std::string>{"0.0.0.0"});
    EXPECT_EQ(s.listen_port, 6432);
    EXPECT_EQ(s.unix_socket_dir, "/tmp");
    EXPECT_EQ(s.auth_type, cfg::AuthType::scram_sha_256);
    EXPECT_EQ(s.pool_mode, cfg::PoolMode::transaction);
    EXPECT_EQ(s.default_pool_size, 20);
    EXPECT_EQ(s.max_client_conn, 10000);
    EXPECT_EQ(s.max_prepared_statements, 200);
    EXPECT_EQ(s.admin_users, std::vector<std::string>{"pgbouncer"});
    EXPECT_EQ(s.auth_query, d.auth_query);
    EXPECT_DOUBLE_EQ(s.query_wait_timeout, 120.0);
    EXPECT_EQ(r.config->tls.server_tls_sslmode, cfg::SslMode::prefer);
    EXPECT_TRUE(r.config->databases.empty());
    EXPECT_FALSE(r.config->fallback_database.has_value());
}

TEST(TomlDefaults, AbsentKeysKeepStructDefaults) {
    auto r = cfg::load_toml_string(lines({
        "[clusters.c]",
        "primary = \"db\"",
        "[databases.d]",
        "host = \"/var/run/postgresql\"",
        "[users.u]",
    }), "x.toml");
    ASSERT_TRUE(r.ok()) << dump(r);
    const auto& d = r.config->databases.at("d");
    EXPECT_EQ(d.port, 5432);
    EXPECT_EQ(d.dbname, "d");
    EXPECT_EQ(d.route, cfg::Route::auto_);
    EXPECT_EQ(d.pool_size, -1);
    EXPECT_EQ(d.min_pool_size, -1);
    EXPECT_EQ(d.reserve_pool_size, -1);
    EXPECT_EQ(d.max_db_connections, -1);
    EXPECT_FALSE(d.pool_mode.has_value());
    const auto& c = r.config->clusters.at("c");
    EXPECT_EQ(*c.primary, (cfg::HostPort{"db", 5432}));
    EXPECT_EQ(c.max_replica_lag, 16 * 1024 * 1024);
    EXPECT_EQ(c.discovery.type, cfg::DiscoveryType::static_);
    EXPECT_EQ(c.discovery.consul_primary_tags, (std::vector<std::string>{"master", "primary"}));
    EXPECT_EQ(r.config->users.at("u").max_user_connections, -1);
    EXPECT_FALSE(r.config->users.at("u").pool_mode.has_value());
}

TEST(TomlDefaults, ListenAddrAsStringAndStarFallback) {
    auto r = cfg::load_toml_string(lines({
        "[pgrouter]",
        "listen_addr = \"*\"",
        "[databases.\"*\"]",
        "host = \"10.1.1.1\"",
    }), "x.toml");
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config->settings.listen_addr, std::vector<std::string>{"*"});
    ASSERT_TRUE(r.config->fallback_database.has_value());
    EXPECT_EQ(r.config->fallback_database->host, "10.1.1.1");
    EXPECT_EQ(r.config->fallback_database->name, "*");
    EXPECT_EQ(r.config->fallback_database->dbname, "");  // the client's database name
    EXPECT_TRUE(r.config->databases.empty());
}

// ---- bad input: one problem, naming key and line ------------------------------------

TEST(TomlErrors, WrongType) {
    expect_error(lines({"[pgrouter]", "listen_port = \"6432\""}), "pgrouter.listen_port", 2,
                 "expected an integer, got a string");
    expect_error(lines({"[pgrouter]", "", "default_pool_size = 2.5"}), "pgrouter.default_pool_size", 3,
                 "expected an integer, got a float");
    expect_error(lines({"[pgrouter]", "log_connections = \"yes\""}), "pgrouter.log_connections", 2,
                 "expected a boolean");
    expect_error(lines({"[pgrouter]", "query_timeout = \"5s\""}), "pgrouter.query_timeout", 2,
                 "expected a number of seconds");
    expect_error(lines({"[pgrouter]", "admin_users = [1, 2]"}), "pgrouter.admin_users", 2,
                 "expected an array of strings");
    expect_error(lines({"[pgrouter]", "auth_file = 5"}), "pgrouter.auth_file", 2,
                 "expected a string, got an integer");
    expect_error(lines({"pgrouter = 5"}), "pgrouter", 1, "expected a table");
    expect_error(lines({"[databases]", "app = \"host=x\""}), "databases.app", 2, "expected a table");
}

TEST(TomlErrors, OutOfRange) {
    expect_error(lines({"[pgrouter]", "listen_port = 70000"}), "pgrouter.listen_port", 2,
                 "between 1 and 65535");
    expect_error(lines({"[pgrouter]", "listen_port = 0"}), "pgrouter.listen_port", 2, "between 1 and 65535");
    expect_error(lines({"[pgrouter]", "default_pool_size = -1"}), "pgrouter.default_pool_size", 2, ">= 0");
    expect_error(lines({"[pgrouter]", "workers = -2"}), "pgrouter.workers", 2, "between 0 and 1024");
    expect_error(lines({"[pgrouter]", "query_timeout = -1.5"}), "pgrouter.query_timeout", 2, ">= 0");
    expect_error(lines({"[pgrouter]", "stats_period = 0"}), "pgrouter.stats_period", 2, "> 0");
    expect_error(lines({"[pgrouter]", "autodb_idle_timeout = -1"}), "pgrouter.autodb_idle_timeout", 2, ">= 0");
    expect_error(lines({"[pgrouter]", "suspend_timeout = -1"}), "pgrouter.suspend_timeout", 2, ">= 0");
    expect_error(lines({"[pgrouter]", "max_packet_size = 0"}), "pgrouter.max_packet_size", 2, ">= 1");
    expect_error(lines({"[pgrouter]", "auth_dbname = \"nodb\"", "[databases.d]", "host = \"h\""}),
                 "pgrouter.auth_dbname", 2, "no database named \"nodb\"");
    expect_error(lines({"[databases.d]", "host = \"h\"", "auth_dbname = \"d2\""}), "databases.d.auth_dbname", 3,
                 "no database named \"d2\"");
    expect_error(lines({"[tls]", "client_tls_dheparams = \"huge\""}), "tls.client_tls_dheparams", 2,
                 "expected auto, none or legacy, got \"huge\"");
    expect_error(lines({"[pgrouter]", "max_client_conn = 0"}), "pgrouter.max_client_conn", 2, ">= 1");
    expect_error(lines({"[pgrouter]", "listen_port = 4294967297"}), "pgrouter.listen_port", 2, "between");
    expect_error(lines({"[databases.d]", "host = \"h\"", "pool_size = -1"}), "databases.d.pool_size", 3,
                 ">= 0");
    expect_error(lines({"[databases.d]", "host = \"h\"", "port = 65536"}), "databases.d.port", 3,
                 "between 1 and 65535");
    expect_error(lines({"[users.u]", "max_user_connections = -5"}), "users.u.max_user_connections", 2,
                 ">= 0");
    expect_error(lines({"[clusters.c]", "primary = \"h\"", "max_replica_lag = -1"}),
                 "clusters.c.max_replica_lag", 3, ">= 0");
}

TEST(TlsProtocols, PgbouncerSyntax) {
    std::string error;
    const std::pair<const char*, unsigned> good[] = {
        {"secure", cfg::tls1_2 | cfg::tls1_3},
        {"default", cfg::tls1_2 | cfg::tls1_3},
        {"all", 15},
        {"legacy", 15},
        {"tlsv1.3", cfg::tls1_3},
        {"TLSv1.2", cfg::tls1_2},
        {"tlsv1.0,tlsv1.1", cfg::tls1_0 | cfg::tls1_1},
        {"tlsv1:tlsv1.3", cfg::tls1_0 | cfg::tls1_3},
        {"all,!tlsv1.0,!tlsv1.1", cfg::tls1_2 | cfg::tls1_3},
        {" tlsv1.2 , tlsv1.3 ", cfg::tls1_2 | cfg::tls1_3},
    };
    for (const auto& [text, want] : good) {
        auto got = cfg::parse_tls_protocols(text, error);
        ASSERT_TRUE(got) << text << ": " << error;
        EXPECT_EQ(*got, want) << text;
    }
    EXPECT_FALSE(cfg::parse_tls_protocols("tlsv1.4", error));
    EXPECT_NE(error.find("unknown protocol \"tlsv1.4\""), std::string::npos) << error;
    EXPECT_FALSE(cfg::parse_tls_protocols("", error));
    EXPECT_EQ(error, "no protocol version left to allow");
    EXPECT_FALSE(cfg::parse_tls_protocols("tlsv1.2,!tlsv1.2", error));
    EXPECT_FALSE(cfg::parse_tls_protocols(",", error));
}

TEST(TlsCiphers, Shortcuts) {
    EXPECT_EQ(cfg::openssl_cipher_list("default"), "");
    EXPECT_EQ(cfg::openssl_cipher_list("fast"), "");
    EXPECT_EQ(cfg::openssl_cipher_list("Secure"), "");
    EXPECT_EQ(cfg::openssl_cipher_list("all"), "ALL");
    EXPECT_EQ(cfg::openssl_cipher_list("compat"), "HIGH:!aNULL");
    EXPECT_EQ(cfg::openssl_cipher_list("ECDHE-ECDSA-AES256-GCM-SHA384"), "ECDHE-ECDSA-AES256-GCM-SHA384");
}

TEST(TomlSettings, TlsProtocolKeys) {
    auto r = cfg::load_toml_string(lines({"[tls]", "client_tls_protocols = \"tlsv1.3\"",
                                          "server_tls_ciphers = \"HIGH\"",
                                          "client_tls13_ciphers = \"TLS_AES_256_GCM_SHA384\""}),
                                   "t.toml");
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config->tls.client_tls_protocols, "tlsv1.3");
    EXPECT_EQ(r.config->tls.server_tls_protocols, "secure");
    EXPECT_EQ(r.config->tls.server_tls_ciphers, "HIGH");
    EXPECT_EQ(r.config->tls.client_tls13_ciphers, "TLS_AES_256_GCM_SHA384");
    expect_error(lines({"[tls]", "server_tls_protocols = \"ssl3\""}), "tls.server_tls_protocols", 2,
                 "unknown protocol \"ssl3\"");
    expect_error(lines({"[tls]", "client_tls_protocols = 13"}), "tls.client_tls_protocols", 2, "expected a string");
}

TEST(TomlSettings, ListenKeys) {
    auto r = cfg::load_toml_string(lines({"[pgrouter]", "unix_socket_mode = \"0660\"", "listen_backlog = 50",
                                          "log_stats = false"}),
                                   "t.toml");
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config->settings.unix_socket_mode, 0660);
    EXPECT_EQ(r.config->settings.listen_backlog, 50);
    EXPECT_FALSE(r.config->settings.log_stats);
    auto octal = cfg::load_toml_string(lines({"[pgrouter]", "unix_socket_mode = 0o600"}), "t.toml");
    ASSERT_TRUE(octal.ok()) << dump(octal);
    EXPECT_EQ(octal.config->settings.unix_socket_mode, 0600);
    const cfg::Settings defaults;
    EXPECT_EQ(defaults.unix_socket_mode, 0777);
    EXPECT_TRUE(defaults.log_stats);
    expect_error(lines({"[pgrouter]", "unix_socket_mode = \"0789\""}), "pgrouter.unix_socket_mode", 2,
                 "expected an octal mode like \"0777\", got \"0789\"");
    expect_error(lines({"[pgrouter]", "unix_socket_mode = 0o1777"}), "pgrouter.unix_socket_mode", 2,
                 "between 0 and 0777");
    expect_error(lines({"[pgrouter]", "unix_socket_mode = true"}), "pgrouter.unix_socket_mode", 2,
                 "expected an octal mode");
    expect_error(lines({"[pgrouter]", "listen_backlog = 0"}), "pgrouter.listen_backlog", 2, "between 1 and 65535");
    expect_error(lines({"[pgrouter]", "unix_socket_group = \"no-such-group-pgrouter\""}),
                 "pgrouter.unix_socket_group", 2, "no group named \"no-such-group-pgrouter\"");
}

TEST(TomlSettings, TcpKeepaliveKeys) {
    auto r = cfg::load_toml_string(lines({"[pgrouter]", "tcp_keepalive = false", "tcp_keepcnt = 3",
                                          "tcp_keepidle = 60", "tcp_keepintvl = 10", "tcp_user_timeout = 1.5",
                                          "server_round_robin = true"}),
                                   "t.toml");
    ASSERT_TRUE(r.ok()) << dump(r);
    const cfg::Settings& s = r.config->settings;
    EXPECT_FALSE(s.tcp_keepalive);
    EXPECT_EQ(s.tcp_keepcnt, 3);
    EXPECT_EQ(s.tcp_keepidle, 60);
    EXPECT_EQ(s.tcp_keepintvl, 10);
    EXPECT_DOUBLE_EQ(s.tcp_user_timeout, 1.5);  // seconds, like every duration in the TOML file
    EXPECT_TRUE(s.server_round_robin);
    const cfg::Settings defaults;
    EXPECT_TRUE(defaults.tcp_keepalive);
    EXPECT_EQ(defaults.tcp_keepidle, 0);
    EXPECT_FALSE(defaults.server_round_robin);

    expect_error(lines({"[pgrouter]", "tcp_keepcnt = 128"}), "pgrouter.tcp_keepcnt", 2, "between 0 and 127");
    expect_error(lines({"[pgrouter]", "tcp_keepintvl = 40000"}), "pgrouter.tcp_keepintvl", 2,
                 "between 0 and 32767");
    expect_error(lines({"[pgrouter]", "tcp_keepidle = 1.5"}), "pgrouter.tcp_keepidle", 2, "expected an integer");
    expect_error(lines({"[pgrouter]", "tcp_user_timeout = -2"}), "pgrouter.tcp_user_timeout", 2, ">= 0");
    expect_error(lines({"[pgrouter]", "tcp_user_timeout = 3000000"}), "pgrouter.tcp_user_timeout", 2,
                 "at most 2147483 seconds");
    expect_error(lines({"[pgrouter]", "tcp_keepalive = 1"}), "pgrouter.tcp_keepalive", 2, "expected a boolean");
}

TEST(TomlSettings, TrackExtraParametersNamesOnlyTrackedOnes) {
    auto r = cfg::load_toml_string(
        lines({"[pgrouter]", "track_extra_parameters = [\"intervalstyle\", \"default_transaction_read_only\"]"}), "t.toml");
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config->settings.track_extra_parameters,
              (std::vector<std::string>{"IntervalStyle", "default_transaction_read_only"}));  // pgrouter's spelling
    EXPECT_EQ(cfg::Settings{}.track_extra_parameters, std::vector<std::string>{"IntervalStyle"});  // PgBouncer's default
    auto empty = cfg::load_toml_string(lines({"[pgrouter]", "track_extra_parameters = []"}), "t.toml");
    ASSERT_TRUE(empty.ok()) << dump(empty);
    EXPECT_TRUE(empty.config->settings.track_extra_parameters.empty());

    expect_error(lines({"[pgrouter]", "track_extra_parameters = [\"IntervalStyle\", \"search_path\"]"}),
                 "pgrouter.track_extra_parameters", 2,
                 "\"search_path\" is not tracked: pgrouter keeps client_encoding, DateStyle, IntervalStyle, TimeZone, "
                 "standard_conforming_strings, application_name and default_transaction_read_only in step for every "
                 "client; PostgreSQL 15 reports no other parameter a session sets");
    expect_error(lines({"[pgrouter]", "track_extra_parameters = 3"}), "pgrouter.track_extra_parameters", 2,
                 "expected an array of strings");
}

TEST(TomlErrors, BadEnum) {
    expect_error(lines({"[pgrouter]", "pool_mode = \"sessions\""}), "pgrouter.pool_mode", 2,
                 "expected one of: session, transaction, statement");
    expect_error(lines({"[pgrouter]", "auth_type = \"MD5\""}), "pgrouter.auth_type", 2, "\"MD5\"");
    expect_error(lines({"[tls]", "client_tls_sslmode = \"verify\""}), "tls.client_tls_sslmode", 2,
                 "verify-full");
    expect_error(lines({"[pgrouter]", "log_format = \"xml\""}), "pgrouter.log_format", 2, "text, json");
    expect_error(lines({"[databases.d]", "host = \"h\"", "route = \"any\""}), "databases.d.route", 3,
                 "primary, replica, auto");
    expect_error(lines({"[clusters.c]", "primary = \"h\"", "[clusters.c.discovery]", "type = \"etcd\""}),
                 "clusters.c.discovery.type", 4, "static, consul, patroni");
    expect_error(lines({"[clusters.c]", "primary = \"h\"", "replica_fallback = \"none\""}),
                 "clusters.c.replica_fallback", 3, "primary, error");
}

TEST(TomlErrors, UnknownKeyAndSection) {
    auto text = lines({"[pgrouter]", "listen_port = 6432", "listen_prot = 6432"});
    expect_error(text, "pgrouter.listen_prot", 3, "unknown key");
    auto r = cfg::load_toml_string(text, "/etc/pgrouter/test.toml");
    ASSERT_EQ(r.problems.size(), 1u);
    EXPECT_EQ(r.problems[0].to_string(), "/etc/pgrouter/test.toml:3: pgrouter.listen_prot: unknown key");

    expect_error(lines({"[pgrouter]", "[foo]", "x = 1"}), "foo", 2, "unknown section");
    expect_error(lines({"bar = 1"}), "bar", 1, "unknown key");
    expect_error(lines({"[tls]", "listen_port = 1"}), "tls.listen_port", 2, "unknown key");
    expect_error(lines({"[databases.d]", "host = \"h\"", "hots = \"x\""}), "databases.d.hots", 3,
                 "unknown key");
    expect_error(lines({"[clusters.c]", "primary = \"h\"", "[clusters.c.discovery]", "consul_ur = \"\""}),
                 "clusters.c.discovery.consul_ur", 4, "unknown key");
    expect_error(lines({"[users.u]", "pool_sise = 3"}), "users.u.pool_sise", 2, "unknown key");
}

TEST(TomlOverrides, PerDatabaseAndPerUserTimeoutsAndSizes) {
    auto r = cfg::load_toml_string(lines({"[databases.d]", "host = \"h\"", "server_lifetime = 60",
                                          "query_timeout = 2.5", "query_wait_timeout = -1", "[users.u]",
                                          "pool_size = 3", "reserve_pool_size = 1", "query_timeout = 0",
                                          "idle_transaction_timeout = 4", "transaction_timeout = 30",
                                          "client_idle_timeout = 600", "query_wait_timeout = 5"}),
                                   "/t.toml");
    ASSERT_TRUE(r.ok()) << dump(r);
    const auto& d = r.config->databases.at("d");
    EXPECT_EQ(d.server_lifetime, 60);
    EXPECT_EQ(d.query_timeout, 2.5);
    EXPECT_EQ(d.query_wait_timeout, -1);  // PgBouncer's "not set"
    EXPECT_EQ(d.idle_transaction_timeout, -1);
    const auto& u = r.config->users.at("u");
    EXPECT_EQ(u.pool_size, 3);
    EXPECT_EQ(u.reserve_pool_size, 1);
    EXPECT_EQ(u.query_timeout, 0);  // set to 0: off for this user, whatever the global says
    EXPECT_EQ(u.idle_transaction_timeout, 4);
    EXPECT_EQ(u.transaction_timeout, 30);
    EXPECT_EQ(u.client_idle_timeout, 600);
    EXPECT_EQ(u.query_wait_timeout, 5);
    expect_error(lines({"[users.u]", "query_timeout = -2"}), "users.u.query_timeout", 2, ">= 0");
    expect_error(lines({"[users.u]", "client_idle_timeout = \"soon\""}), "users.u.client_idle_timeout", 2,
                 "number of seconds");
    expect_error(lines({"[users.u]", "pool_size = -1"}), "users.u.pool_size", 2, ">= 0");
    expect_error(lines({"[databases.d]", "host = \"h\"", "server_lifetime = true"}), "databases.d.server_lifetime",
                 3, "number of seconds");
}

TEST(TomlErrors, CrossReferences) {
    expect_error(lines({"[databases.app]", "cluster = \"nope\""}), "databases.app.cluster", 2,
                 "unknown cluster \"nope\"");
    expect_error(lines({"[clusters.c]", "primary = \"h\"", "[databases.app]", "cluster = \"c\"",
                        "host = \"h\""}),
                 "databases.app.host", 5, "either cluster or host");
    expect_error(lines({"[databases.app]", "port = 5432"}), "databases.app", 1, "needs cluster or host");
    expect_error(lines({"[databases.pgbouncer]", "host = \"h\""}), "databases.pgbouncer", 1, "reserved");
    expect_error(lines({"[databases.d]", "host = \"h\"", "route = \"replica\""}), "databases.d.route", 3,
                 "cluster");
    expect_error(lines({"[clusters.c]", "replicas = [\"h\"]"}), "clusters.c.primary", 1,
                 "static discovery needs a primary");
    expect_error(lines({"[clusters.c]", "[clusters.c.discovery]", "type = \"patroni\""}),
                 "clusters.c.discovery.patroni_urls", 2, "at least one URL");
}

TEST(TomlErrors, CombinationsOfSettings) {
    expect_error(lines({"[pgrouter]", "auth_type = \"hba\""}), "pgrouter.auth_type", 2,
                 "requires auth_hba_file");
    expect_error(lines({"[tls]", "client_tls_sslmode = \"require\""}), "tls.client_tls_sslmode", 2,
                 "requires client_tls_cert_file and client_tls_key_file");
    expect_error(lines({"[pgrouter]", "listen_addr = []", "unix_socket_dir = \"\""}), "pgrouter.listen_addr",
                 2, "nothing to listen on");
    expect_error(lines({"[pgrouter]", "auth_type = \"cert\""}), "pgrouter.auth_type", 2,
                 "verify-ca or verify-full");
    expect_error(lines({"[pgrouter]", "auth_type = \"pam\"", "auth_pam_service = \"\""}),
                 "pgrouter.auth_pam_service", 3, "requires a PAM service name");
}

TEST(TomlErrors, BadSize) {
    expect_error(lines({"[clusters.c]", "primary = \"h\"", "max_replica_lag = \"16 parsecs\""}),
                 "clusters.c.max_replica_lag", 3, "invalid size \"16 parsecs\"");
    expect_error(lines({"[clusters.c]", "primary = \"h\"", "max_replica_lag = 1.5"}),
                 "clusters.c.max_replica_lag", 3, "expected a size");
}

TEST(TomlErrors, BadHostPort) {
    expect_error(lines({"[clusters.c]", "primary = \"db1:99999\""}), "clusters.c.primary", 2,
                 "invalid address \"db1:99999\"");
    expect_error(lines({"[clusters.c]", "primary = \"db1\"", "replicas = [\"db2:5432\", \"::1\"]"}),
                 "clusters.c.replicas", 3, "invalid address \"::1\"");
    expect_error(lines({"[clusters.c]", "primary = \"db1:\""}), "clusters.c.primary", 2, "invalid address");
    expect_error(lines({"[databases.d]", "host = \"a,,b\""}), "databases.d.host", 2, "empty entry in host list");
    expect_error(lines({"[databases.d]", "host = \"a,b\"", "target_session_attrs = \"Read-Write\""}),
                 "databases.d.target_session_attrs", 3, "invalid value \"Read-Write\"");
    expect_error(lines({"[databases.d]", "host = \"a,b\"", "load_balance_hosts = true"}),
                 "databases.d.load_balance_hosts", 3, "a string");
    expect_error(lines({"[pgrouter]", "metrics_listen = \"localhost\""}), "pgrouter.metrics_listen", 2,
                 "expected host:port");
}

TEST(TomlErrors, SyntaxErrorHasLine) {
    auto r = cfg::load_toml_string(lines({"[pgrouter]", "listen_port = 1", "listen_addr = "}), "s.toml");
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.problems.size(), 1u) << dump(r);
    EXPECT_EQ(r.problems[0].line, 3);
    EXPECT_EQ(r.problems[0].file, "s.toml");
    EXPECT_TRUE(r.problems[0].to_string().starts_with("s.toml:3: ")) << r.problems[0].to_string();
}

TEST(TomlErrors, AllProblemsAreReportedInLineOrder) {
    auto r = cfg::load_toml_string(lines({
        "[pgrouter]",
        "listen_port = \"x\"",
        "pool_mode = \"bad\"",
        "nope = 1",
        "[databases.a]",
        "cluster = \"missing\"",
    }), "m.toml");
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.problems.size(), 4u) << dump(r);
    EXPECT_EQ(r.problems[0].key, "pgrouter.listen_port");
    EXPECT_EQ(r.problems[1].key, "pgrouter.pool_mode");
    EXPECT_EQ(r.problems[2].key, "pgrouter.nope");
    EXPECT_EQ(r.problems[3].key, "databases.a.cluster");
    EXPECT_EQ(r.problems[3].line, 6);
}

using TomlFiles = TempDir;

TEST_F(TomlFiles, UnreadableAuthFile) {
    std::string path = write("p.toml", lines({"[pgrouter]", "auth_file = \"missing.txt\""}));
    auto r = cfg::load_file(path);
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.problems.size(), 1u) << dump(r);
    const auto& p = r.problems[0];
    EXPECT_EQ(p.key, "pgrouter.auth_file");
    EXPECT_EQ(p.line, 2);
    std::string resolved = (fs::path(dir_) / "missing.txt").string();
    EXPECT_EQ(p.reason, "cannot read " + resolved + ": No such file or directory");
}

TEST_F(TomlFiles, DirectoryIsNotReadableAsFile) {
    fs::create_directories(fs::path(dir_) / "certs");
    std::string path = write("p.toml", lines({"[tls]", "server_tls_ca_file = \"certs\""}));
    auto r = cfg::load_file(path);
    EXPECT_FALSE(r.ok());
    ASSERT_NE(find(r, "tls.server_tls_ca_file"), nullptr) << dump(r);
    EXPECT_NE(find(r, "tls.server_tls_ca_file")->reason.find("Is a directory"), std::string::npos);
}

TEST_F(TomlFiles, AbsoluteAndRelativePaths) {
    std::string hba = write("sub/hba.conf", "local all all trust\n");
    std::string path = write("conf/p.toml", lines({
        "[pgrouter]",
        "auth_type = \"hba\"",
        "auth_hba_file = \"../sub/hba.conf\"",
    }));
    auto r = cfg::load_file(path);
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config->settings.auth_hba_file, hba);
    auto r2 = cfg::load_toml_string(lines({"[pgrouter]", ("auth_file = \"" + hba + "\"").c_str()}), "rel.toml");
    ASSERT_TRUE(r2.ok()) << dump(r2);
    EXPECT_EQ(r2.config->settings.auth_file, hba);
}

TEST_F(TomlFiles, MissingConfigFile) {
    auto r = cfg::load_file(dir_ + "/nope.toml");
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.problems.size(), 1u);
    EXPECT_EQ(r.problems[0].to_string(),
              dir_ + "/nope.toml: cannot read " + dir_ + "/nope.toml: No such file or directory");
}

TEST_F(TomlFiles, IniSuffixSelectsTheIniLoader) {
    std::string path = write("p.ini", lines({"[pgbouncer]", "listen_port = 7000"}));
    auto r = cfg::load_file(path);
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config->settings.listen_port, 7000);
    EXPECT_EQ(r.config->settings.pool_mode, cfg::PoolMode::session);  // PgBouncer's default
}

// ---- the shipped examples -------------------------------------------------------

TEST(Examples, PgrouterTomlLoadsWithoutProblems) {
    std::string path = find_example("pgrouter.toml");
    ASSERT_FALSE(path.empty()) << "conf/pgrouter.toml not found: set PGROUTER_SOURCE_DIR or run from the "
                                  "source or build directory";
    auto r = cfg::load_file(path);
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.problems.empty()) << dump(r);
    const cfg::Config& c = *r.config;
    EXPECT_EQ(c.settings.listen_port, 6432);
    EXPECT_EQ(c.settings.listen_addr, std::vector<std::string>{"127.0.0.1"});
    EXPECT_EQ(c.settings.auth_type, cfg::AuthType::md5);
    EXPECT_TRUE(c.settings.auth_file.ends_with("/conf/userlist.txt")) << c.settings.auth_file;
    EXPECT_EQ(c.databases.at("postgres").host, "127.0.0.1");
    EXPECT_EQ(c.databases.at("postgres").port, 5432);
    EXPECT_EQ(c.databases.at("appdb").cluster, "main");
    const auto& main = c.clusters.at("main");
    EXPECT_EQ(*main.primary, (cfg::HostPort{"127.0.0.1", 5432}));
    EXPECT_EQ(main.replicas, (std::vector<cfg::HostPort>{{"127.0.0.1", 5433}, {"127.0.0.1", 5434}}));
}

TEST(Examples, PgbouncerIniLoadsWithoutProblems) {
    std::string path = find_example("pgbouncer.ini");
    ASSERT_FALSE(path.empty()) << "conf/pgbouncer.ini not found";
    auto r = cfg::load_file(path);
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.problems.empty()) << dump(r);
    EXPECT_EQ(r.config->settings.listen_addr, std::vector<std::string>{"127.0.0.1"});
    EXPECT_EQ(r.config->settings.pool_mode, cfg::PoolMode::transaction);
    EXPECT_EQ(r.config->databases.at("appdb").host, "127.0.0.1");
}

// ---- value parsers ----------------------------------------------------------------

TEST(ParseSize, Table) {
    struct Case {
        const char* text;
        std::optional<std::int64_t> want;
    };
    const Case cases[] = {
        {"0", 0},
        {"123", 123},
        {"123B", 123},
        {"1kB", 1024},
        {"512kB", 512 * 1024},
        {"2KB", 2048},
        {"16MB", 16LL << 20},
        {"16 MB", 16LL << 20},
        {"1GB", 1LL << 30},
        {"3TB", 3LL << 40},
        {" 7MB ", 7LL << 20},
        {"", std::nullopt},
        {"MB", std::nullopt},
        {"-1", std::nullopt},
        {"-1MB", std::nullopt},
        {"1.5GB", std::nullopt},
        {"16mb", std::nullopt},
        {"16 parsecs", std::nullopt},
        {"1PB", std::nullopt},
        {"9999999999TB", std::nullopt},
        {"99999999999999999999", std::nullopt},
        {"12 34", std::nullopt},
    };
    for (const auto& c : cases) EXPECT_EQ(cfg::parse_size(c.text), c.want) << "\"" << c.text << "\"";
}

TEST(ParseHostPort, Table) {
    using HP = cfg::HostPort;
    struct Case {
        const char* text;
        std::optional<HP> want;
    };
    const Case cases[] = {
        {"db1:5433", HP{"db1", 5433}},
        {"db1", HP{"db1", 5432}},
        {"10.0.0.1:1", HP{"10.0.0.1", 1}},
        {"[::1]:6000", HP{"::1", 6000}},
        {"[fe80::1]", HP{"fe80::1", 5432}},
        {"/var/run/postgresql", HP{"/var/run/postgresql", 5432}},
        {"/tmp:5433", HP{"/tmp", 5433}},
        {"", std::nullopt},
        {"db1:", std::nullopt},
        {"db1:0", std::nullopt},
        {"db1:65536", std::nullopt},
        {"db1:54x", std::nullopt},
        {":5432", std::nullopt},
        {"::1", std::nullopt},
        {"[::1", std::nullopt},
        {"[]:5432", std::nullopt},
        {"[::1]5432", std::nullopt},
        {"a,b:5432", std::nullopt},
        {"/tmp:x", std::nullopt},
    };
    for (const auto& c : cases) EXPECT_EQ(cfg::parse_host_port(c.text), c.want) << "\"" << c.text << "\"";
    EXPECT_EQ(cfg::to_string(HP{"::1", 6000}), "[::1]:6000");
    EXPECT_EQ(cfg::to_string(HP{"db", 5432}), "db:5432");
    EXPECT_EQ(cfg::parse_host_port(cfg::to_string(HP{"/tmp", 7000})), (HP{"/tmp", 7000}));
}

TEST(Enums, RoundTrip) {
    for (auto m : {cfg::PoolMode::session, cfg::PoolMode::transaction, cfg::PoolMode::statement})
        EXPECT_EQ(cfg::parse_pool_mode(cfg::to_string(m)), m);
    for (auto a : {cfg::AuthType::trust, cfg::AuthType::md5, cfg::AuthType::scram_sha_256, cfg::AuthType::hba,
                   cfg::AuthType::cert, cfg::AuthType::plain})
        EXPECT_EQ(cfg::parse_auth_type(cfg::to_string(a)), a);
    for (auto s : {cfg::SslMode::disable, cfg::SslMode::allow, cfg::SslMode::prefer, cfg::SslMode::require,
                   cfg::SslMode::verify_ca, cfg::SslMode::verify_full})
        EXPECT_EQ(cfg::parse_ssl_mode(cfg::to_string(s)), s);
    EXPECT_STREQ(cfg::to_string(cfg::AuthType::scram_sha_256), "scram-sha-256");
    EXPECT_STREQ(cfg::to_string(cfg::SslMode::verify_ca), "verify-ca");
    EXPECT_STREQ(cfg::to_string(cfg::SslMode::verify_full), "verify-full");
    EXPECT_STREQ(cfg::to_string(cfg::Route::auto_), "auto");
    EXPECT_STREQ(cfg::to_string(cfg::DiscoveryType::static_), "static");
    EXPECT_FALSE(cfg::parse_pool_mode("Session"));
    EXPECT_FALSE(cfg::parse_auth_type("scram_sha_256"));
    EXPECT_FALSE(cfg::parse_ssl_mode(""));
    EXPECT_EQ(cfg::parse_route("auto"), cfg::Route::auto_);
    EXPECT_EQ(cfg::parse_replica_fallback("error"), cfg::ReplicaFallback::error);
    EXPECT_EQ(cfg::parse_discovery_type("patroni"), cfg::DiscoveryType::patroni);
    EXPECT_EQ(cfg::parse_log_format("json"), cfg::LogFormat::json);
}

TEST(Problem, ToString) {
    cfg::Problem p{"a.toml", 12, "pgrouter.x", "bad"};
    EXPECT_EQ(p.to_string(), "a.toml:12: pgrouter.x: bad");
    p.line = 0;
    EXPECT_EQ(p.to_string(), "a.toml: pgrouter.x: bad");
    p.key.clear();
    EXPECT_EQ(p.to_string(), "a.toml: bad");
    cfg::Problem w{"b.ini", 3, "pgbouncer.so_reuseport", "not supported", true};
    EXPECT_EQ(w.to_string(), "b.ini:3: pgbouncer.so_reuseport: warning: not supported");
}

TEST(Effective, PoolModeAndSize) {
    cfg::Config c;
    c.settings.pool_mode = cfg::PoolMode::transaction;
    c.settings.default_pool_size = 25;
    cfg::DatabaseConfig db;
    EXPECT_EQ(cfg::effective_pool_mode(c, db, "alice"), cfg::PoolMode::transaction);
    EXPECT_EQ(cfg::effective_pool_size(c, db), 25);
    db.pool_mode = cfg::PoolMode::statement;
    db.pool_size = 0;
    EXPECT_EQ(cfg::effective_pool_mode(c, db, "alice"), cfg::PoolMode::statement);
    EXPECT_EQ(cfg::effective_pool_size(c, db), 0);
    c.users["alice"].pool_mode = cfg::PoolMode::session;
    c.users["bob"];  // a user entry without pool_mode does not override
    EXPECT_EQ(cfg::effective_pool_mode(c, db, "alice"), cfg::PoolMode::session);
    EXPECT_EQ(cfg::effective_pool_mode(c, db, "bob"), cfg::PoolMode::statement);
}

TEST(SetSetting, TypedTextAndUnchangedOnError) {
    cfg::Config c;
    EXPECT_TRUE(cfg::set_setting(c, "pgrouter", "default_pool_size", cfg::SettingValue::text("40")).ok());
    EXPECT_EQ(c.settings.default_pool_size, 40);
    auto r = cfg::set_setting(c, "", "default_pool_size", cfg::SettingValue::text("4O"));
    EXPECT_EQ(r.status, cfg::SetStatus::bad_value);
    EXPECT_EQ(c.settings.default_pool_size, 40);
    EXPECT_EQ(cfg::set_setting(c, "pgrouter", "default_pool_size", {std::string("50")}).status,
              cfg::SetStatus::bad_value);  // typed: a string is not an integer
    EXPECT_EQ(cfg::set_setting(c, "pgrouter", "client_tls_sslmode", cfg::SettingValue::text("require")).status,
              cfg::SetStatus::unknown_key);
    EXPECT_TRUE(cfg::set_setting(c, "", "client_tls_sslmode", cfg::SettingValue::text("Require")).ok());
    EXPECT_EQ(c.tls.client_tls_sslmode, cfg::SslMode::require);
    EXPECT_TRUE(cfg::set_setting(c, "", "query_timeout", cfg::SettingValue::text("2.5")).ok());
    EXPECT_DOUBLE_EQ(c.settings.query_timeout, 2.5);
    EXPECT_FALSE(cfg::set_setting(c, "", "query_timeout", cfg::SettingValue::text("nan")).ok());
    EXPECT_TRUE(cfg::set_setting(c, "", "stats_users", cfg::SettingValue::text(" a, b ,,c ")).ok());
    EXPECT_EQ(c.settings.stats_users, (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(cfg::set_setting(c, "", "no_such_key", cfg::SettingValue::text("1")).status,
              cfg::SetStatus::unknown_key);
}
