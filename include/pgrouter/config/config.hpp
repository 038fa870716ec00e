// The configuration model: plain structs with defaults. Field names are the
// TOML key names (SPEC §2). Both loaders (TOML and pgbouncer.ini) fill this.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace pgrouter::config {

enum class PoolMode { session, transaction, statement };
enum class AuthType { trust, md5, scram_sha_256, hba, cert, plain, peer, any, pam, ldap };
enum class LogFormat { text, json };
enum class SslMode { disable, allow, prefer, require, verify_ca, verify_full };
enum class Route { primary, replica, auto_ };
enum class ReplicaFallback { primary, error };
enum class DiscoveryType { static_, consul, patroni };
// [databases] load_balance_hosts: how a host list is walked for new server connections.
enum class LoadBalanceHosts { round_robin, disable };
// [databases] target_session_attrs: which servers a new server connection may land on.
enum class TargetSessionAttrs { any, read_write, read_only, primary, standby };

const char* to_string(PoolMode);
const char* to_string(AuthType);
const char* to_string(SslMode);
std::optional<PoolMode> parse_pool_mode(std::string_view);
std::optional<AuthType> parse_auth_type(std::string_view);
std::optional<SslMode> parse_ssl_mode(std::string_view);

struct Settings {  // [pgrouter]
    std::vector<std::string> listen_addr{"0.0.0.0"};
    int listen_port = 6432;
    std::string unix_socket_dir = "/tmp";
    int unix_socket_mode = 0777;      // permissions of the socket file
    std::string unix_socket_group;    // group of the socket file; "" = the process's
    int listen_backlog = 1024;        // listen(2) queue of each listening socket
    int workers = 0;
    AuthType auth_type = AuthType::scram_sha_256;
    std::string auth_file;
    std::string auth_hba_file;
    std::string auth_ident_file;  // ident maps for map= in auth_hba_file (peer, cert)
    std::string auth_pam_service = "pgbouncer";  // PAM service name for auth_type = "pam" (PgBouncer's)
    std::string auth_ldap_options;  // PostgreSQL's ldap* options, for auth_type = "ldap"
    std::string auth_user;
    std::string auth_query = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";
    std::string auth_dbname;  // database (of [databases]) auth_query runs in; "" = the client's
    std::vector<std::string> admin_users{"pgbouncer"};
    std::vector<std::string> stats_users;
    PoolMode pool_mode = PoolMode::transaction;
    int default_pool_size = 20;
    int min_pool_size = 0;
    int reserve_pool_size = 0;
    double reserve_pool_timeout = 5.0;
    int max_client_conn = 10000;
    int max_db_connections = 0;
    int max_user_connections = 0;
    int max_db_client_connections = 0;    // clients per database (the name they connect to); 0 = no limit
    int max_user_client_connections = 0;  // clients per login user; 0 = no limit
    int max_prepared_statements = 200;
    int scram_iterations = 4096;  // rounds of a SCRAM secret made from a plain-text auth_file password
    int max_packet_size = 2147483647;  // longest message allowed either way (type byte and length included)
    std::string server_reset_query = "DISCARD ALL";
    bool server_reset_query_always = false;
    std::string server_check_query;
    double server_check_delay = 30.0;
    bool server_round_robin = false;  // idle servers reused least recently used first
    bool server_fast_close = false;   // session mode: a server RECONNECT/RELOAD retired ends its session
    double server_lifetime = 3600.0;
    double server_idle_timeout = 600.0;
    double server_connect_timeout = 15.0;
    double server_login_retry = 15.0;
    double query_timeout = 0.0;
    double query_wait_timeout = 120.0;
    double client_idle_timeout = 0.0;
    double client_login_timeout = 60.0;
    double idle_transaction_timeout = 0.0;
    double transaction_timeout = 0.0;     // a transaction (or a lone query) longer than this ends the session
    double query_wait_notify = 5.0;       // a NOTICE to a client queued this long for a server; 0 = none
    std::string login_notify_message;     // a NOTICE sent to every client at login; "" = none
    double shutdown_timeout = 30.0;
    double suspend_timeout = 10.0;  // SUSPEND waits this long for buffers to flush, then drops the rest; 0 = no limit
    double autodb_idle_timeout = 3600.0;  // pools made through the "*" database, unused this long, are freed; 0 = never
    double pool_idle_timeout = 0;         // a pool without clients and servers this long is freed; 0 = never
    // TCP keepalive and TCP_USER_TIMEOUT on client and server TCP connections, as
    // PgBouncer's tcp_* keys; 0 = the operating system's default.
    bool tcp_keepalive = true;
    int tcp_keepcnt = 0;             // unanswered probes before the connection is dropped
    int tcp_keepidle = 0;            // seconds idle before the first probe
    int tcp_keepintvl = 0;           // seconds between probes
    double tcp_user_timeout = 0.0;   // seconds sent data may stay unacknowledged
    int tcp_socket_buffer = 0;       // SO_SNDBUF and SO_RCVBUF in bytes; 0 = the OS default
    bool tcp_defer_accept = false;   // TCP_DEFER_ACCEPT (45 s) on TCP listeners: woken by data, not SYN
    int verbose = 0;                 // as -v given this many times (1 debug, 2+ trace)
    bool disable_pqexec = false;     // refuse the simple query protocol ('Q') from clients
    std::vector<std::string> ignore_startup_parameters{"extra_float_digits"};
    // PgBouncer's key, accepted for the parameters pgrouter always keeps in step (see
    // session/params.hpp); it changes nothing, since every one of them is tracked anyway.
    std::vector<std::string> track_extra_parameters{"IntervalStyle"};
    bool application_name_add_host = false;
    bool log_connections = true;
    bool log_disconnections = true;
    bool log_pooler_errors = true;  // log the errors pgrouter itself sends to clients at login
    LogFormat log_format = LogFormat::text;
    std::string logfile;
    std::string pidfile;
    double stats_period = 60.0;
    bool log_stats = true;  // the stats line every stats_period
    std::string metrics_listen;
};

struct TlsSettings {  // [tls]
    SslMode client_tls_sslmode = SslMode::disable;
    std::string client_tls_cert_file;
    std::string client_tls_key_file;
    std::string client_tls_ca_file;
    SslMode server_tls_sslmode = SslMode::prefer;
    std::string server_tls_ca_file;
    std::string server_tls_cert_file;
    std::string server_tls_key_file;
    // Allowed protocol versions and ciphers, as PgBouncer's keys (see parse_tls_protocols).
    std::string client_tls_protocols = "secure";
    std::string client_tls_ciphers = "default";  // OpenSSL syntax (TLS 1.2 and lower) or a shortcut
    std::string client_tls13_ciphers;            // TLS 1.3 suites, ':'-separated; "" = OpenSSL's
    // Key exchange with clients (TLS 1.2 and lower for `none`): ECDHE groups ("auto" =
    // OpenSSL's, "none", or curve names) and finite-field DHE ("auto", "none", "legacy").
    std::string client_tls_ecdhcurve = "auto";
    std::string client_tls_dheparams = "auto";
    std::string server_tls_protocols = "secure";
    std::string server_tls_ciphers = "default";
    std::string server_tls13_ciphers;
};

struct DiscoveryConfig {  // [clusters.X.discovery]
    DiscoveryType type = DiscoveryType::static_;
    std::string consul_url = "http://127.0.0.1:8500";
    std::string consul_service = "postgresql-ha";
    std::vector<std::string> consul_primary_tags{"master", "primary"};
    std::vector<std::string> consul_replica_tags{"replica"};
    std::string consul_token_file;
    std::string consul_datacenter;
    double consul_wait = 60.0;
    std::vector<std::string> patroni_urls;
};

struct HostPort {
    std::string host;  // hostname, IP, or a unix socket directory (starts with '/')
    int port = 5432;
    bool operator==(const HostPort&) const = default;
    auto operator<=>(const HostPort&) const = default;
};

struct ClusterConfig {  // [clusters.X]
    std::string name;
    std::optional<HostPort> primary;
    std::vector<HostPort> replicas;
    double health_check_period = 1.0;
    std::int64_t max_replica_lag = 16 * 1024 * 1024;
    ReplicaFallback replica_fallback = ReplicaFallback::primary;
    double failover_timeout = 30.0;
    // Who the health checker logs in as (password from auth_file); "" = auth_user,
    // else "postgres". pgrouter's own keys: the SPEC names none.
    std::string health_check_user;
    std::string health_check_dbname = "postgres";
    DiscoveryConfig discovery;
};

struct DatabaseConfig {  // [databases.X]
    std::string name;                 // what clients name
    std::string cluster;              // either cluster ...
    std::string host;                 // ... or host/port: a loaded Config has exactly one of the two
                                      // (pgbouncer.ini: no host= means host = unix_socket_dir)
    int port = 5432;
    std::string dbname;               // server-side name; empty = name
    Route route = Route::auto_;
    int pool_size = -1;               // -1 = default_pool_size
    int min_pool_size = -1;
    int reserve_pool_size = -1;
    std::optional<PoolMode> pool_mode;
    std::string user;                 // forced server user
    std::string password;             // forced server password (pgbouncer.ini password=)
    int max_db_connections = -1;
    int max_db_client_connections = -1;  // -1 = the global one
    std::string auth_user;
    std::string auth_dbname;          // "" = the global one
    std::string auth_query;           // "" = the global one
    std::string client_encoding, datestyle, timezone, application_name;  // connect-time params (ini)
    std::string connect_query;        // run once on each new server connection (ini connect_query=)
    // host may be a comma-separated list (PgBouncer 1.17+): new server connections go to
    // its entries round-robin, or (disable) stay on one until it fails.
    LoadBalanceHosts load_balance_hosts = LoadBalanceHosts::round_robin;
    TargetSessionAttrs target_session_attrs = TargetSessionAttrs::any;
    // Overrides of the global timeouts for this database's pools (PgBouncer 1.24+
    // database options); -1 = the global one. A user's own value wins over these.
    double server_lifetime = -1;
    double query_wait_timeout = -1;
    double query_timeout = -1;
    double idle_transaction_timeout = -1;
    double transaction_timeout = -1;
    double client_idle_timeout = -1;
};

struct UserConfig {  // [users.X]
    std::string name;
    std::optional<PoolMode> pool_mode;
    int max_user_connections = -1;
    int max_user_client_connections = -1;  // -1 = the global one
    // Overrides for this user's pools and sessions (PgBouncer 1.24+ [users] options),
    // ahead of the database's and the global values; -1 = not set.
    int pool_size = -1;
    int reserve_pool_size = -1;
    double query_wait_timeout = -1;
    double query_timeout = -1;
    double idle_transaction_timeout = -1;
    double transaction_timeout = -1;
    double client_idle_timeout = -1;
};

struct Config {
    std::string path;  // the file it was loaded from
    Settings settings;
    TlsSettings tls;
    std::map<std::string, ClusterConfig> clusters;
    std::map<std::string, DatabaseConfig> databases;
    std::map<std::string, UserConfig> users;
    // "*" database fallback (PgBouncer's wildcard line), when present. Its name is "*"
    // and its dbname stays empty: the server database is the one the client asked for.
    std::optional<DatabaseConfig> fallback_database;
};

// One problem found while loading: `file:line: key: reason`.
struct Problem {
    std::string file;
    int line = 0;  // 0 = unknown
    std::string key;
    std::string reason;
    bool warning = false;  // unsupported-but-harmless keys (e.g. from pgbouncer.ini)
    std::string to_string() const;
};

struct LoadResult {
    std::optional<Config> config;   // set when there are no errors (warnings allowed)
    std::vector<Problem> problems;  // errors and warnings
    bool ok() const { return config.has_value(); }
};

// Loads `path`: TOML, or pgbouncer.ini when it ends in ".ini". Validates types,
// ranges, unknown keys, cross references (cluster names) and that the files it
// names exist and are readable. Never throws.
LoadResult load_file(const std::string& path);
LoadResult load_toml_string(std::string_view text, const std::string& path_for_messages);
LoadResult load_ini_string(std::string_view text, const std::string& path_for_messages);

// TLS protocol versions, as a bit set: 1 = TLS 1.0, 2 = 1.1, 4 = 1.2, 8 = 1.3.
enum TlsProtocol : unsigned { tls1_0 = 1, tls1_1 = 2, tls1_2 = 4, tls1_3 = 8 };
// PgBouncer's tls_protocols syntax: "tlsv1.0".."tlsv1.3" and the shortcuts "secure"
// (1.2 and 1.3), "all" / "legacy" (every version), separated by ',' or ':'; a '!'
// before one removes it. nullopt (and `error`) on an unknown word or an empty set.
std::optional<unsigned> parse_tls_protocols(std::string_view, std::string& error);
// A tls_ciphers value for OpenSSL: "" for OpenSSL's own list (the shortcuts "default",
// "secure", "fast", "normal"), "ALL" for "all" / "insecure", "HIGH:!aNULL" for
// "compat", "HIGH:MEDIUM:!aNULL" for "legacy", anything else as written.
std::string openssl_cipher_list(std::string_view);

// Parses "16MB", "1GB", "512kB", "123" (bytes); nullopt on bad input.
std::optional<std::int64_t> parse_size(std::string_view);

// Effective values for a (database, user) pair.
PoolMode effective_pool_mode(const Config&, const DatabaseConfig&, const std::string& user);
int effective_pool_size(const Config&, const DatabaseConfig&);

// ---- Added by the config module (nothing above was renamed) -----------------

const char* to_string(LogFormat);
const char* to_string(Route);
const char* to_string(ReplicaFallback);
const char* to_string(DiscoveryType);
std::optional<LogFormat> parse_log_format(std::string_view);
std::optional<Route> parse_route(std::string_view);
std::optional<ReplicaFallback> parse_replica_fallback(std::string_view);
std::optional<DiscoveryType> parse_discovery_type(std::string_view);
const char* to_string(LoadBalanceHosts);
const char* to_string(TargetSessionAttrs);
std::optional<LoadBalanceHosts> parse_load_balance_hosts(std::string_view);
std::optional<TargetSessionAttrs> parse_target_session_attrs(std::string_view);
// The entries of a database's host= (a comma-separated list, PgBouncer 1.17+).
std::vector<std::string> split_hosts(std::string_view host);

// "host:port", "[v6addr]:port", "host" (port 5432), "/unix/socket/dir" or
// "/unix/socket/dir:port". nullopt on bad input (empty, port out of 1..65535, "::1").
std::optional<HostPort> parse_host_port(std::string_view);
std::string to_string(const HostPort&);  // parse_host_port's inverse

// One key at a time: both loaders use these, and so can admin `SET key = value`.
// A value as TOML types it, or text (pgbouncer.ini, admin SET) parsed per the key's type.
struct SettingValue {
    std::variant<bool, std::int64_t, double, std::string, std::vector<std::string>> data;
    bool is_text = false;
    static SettingValue text(std::string s) { return SettingValue{std::move(s), true}; }
};
enum class SetStatus { ok, unknown_key, bad_value };
struct SetResult {
    SetStatus status = SetStatus::ok;
    std::string reason;  // for bad_value, e.g. "must be between 1 and 65535"
    bool ok() const { return status == SetStatus::ok; }
};
// section: "pgrouter" (Settings), "tls" (TlsSettings) or "" (either). The target is
// unchanged unless the result is ok.
SetResult set_setting(Config&, std::string_view section, std::string_view key, const SettingValue&);
// A comma-separated list as the loaders read it: "a, b,,c" -> {a, b, c}.
std::vector<std::string> split_list(std::string_view s);
SetResult set_database_key(DatabaseConfig&, std::string_view key, const SettingValue&);
SetResult set_user_key(UserConfig&, std::string_view key, const SettingValue&);
SetResult set_cluster_key(ClusterConfig&, std::string_view key, const SettingValue&);  // not "discovery"
SetResult set_discovery_key(DiscoveryConfig&, std::string_view key, const SettingValue&);

// Reads a whole file (config, %include, or a file the config names). On failure:
// nullopt and `error` = "cannot read PATH: strerror" (a directory fails too).
std::optional<std::string> read_config_file(const std::string& path, std::string& error);

// Where a key was written, for messages. Keyed by its TOML path ("pgrouter.auth_file",
// "tls.client_tls_ca_file", "databases.app.cluster", "databases.app" for the section);
// `key` is the name to show (a pgbouncer.ini key shows as "pgbouncer.auth_file").
struct KeySource {
    std::string file;
    int line = 0;
    std::string key;
};
using KeySources = std::map<std::string, KeySource>;

// Checks a filled Config as a whole and completes it: names from section names,
// dbname defaults, relative file paths made absolute against the directory of the
// file that set them (else of cfg.path), those files readable, cross references
// (clusters), combinations (auth_type "hba" needs auth_hba_file, TLS modes need
// their files). Both loaders call it; returns errors only. `already`: problems found
// before; nothing is reported again for a key, or a section, that has one of them.
std::vector<Problem> validate(Config& cfg, const KeySources& sources = {},
                              const std::vector<Problem>& already = {});

}  // namespace pgrouter::config
