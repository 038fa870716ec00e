// Enum names, small value parsers, Problem formatting, effective values and the
// file-type dispatch of load_file.
#include "pgrouter/config/config.hpp"

#include <cctype>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace pgrouter::config {

namespace {

template <class E>
using NameTable = std::initializer_list<std::pair<E, const char*>>;

template <class E>
const char* name_of(NameTable<E> table, E value) {
    for (const auto& [e, name] : table)
        if (e == value) return name;
    return "?";
}

template <class E>
std::optional<E> value_of(NameTable<E> table, std::string_view text) {
    for (const auto& [e, name] : table)
        if (text == name) return e;
    return std::nullopt;
}

constexpr NameTable<PoolMode> pool_modes{
    {PoolMode::session, "session"}, {PoolMode::transaction, "transaction"},
    {PoolMode::statement, "statement"}};
constexpr NameTable<AuthType> auth_types{
    {AuthType::trust, "trust"}, {AuthType::md5, "md5"},
    {AuthType::scram_sha_256, "scram-sha-256"}, {AuthType::hba, "hba"},
    {AuthType::cert, "cert"}, {AuthType::plain, "plain"}, {AuthType::peer, "peer"},
    {AuthType::any, "any"}, {AuthType::pam, "pam"}, {AuthType::ldap, "ldap"}};
constexpr NameTable<SslMode> ssl_modes{
    {SslMode::disable, "disable"}, {SslMode::allow, "allow"}, {SslMode::prefer, "prefer"},
    {SslMode::require, "require"}, {SslMode::verify_ca, "verify-ca"},
    {SslMode::verify_full, "verify-full"}};
constexpr NameTable<LogFormat> log_formats{{LogFormat::text, "text"}, {LogFormat::json, "json"}};
constexpr NameTable<Route> routes{
    {Route::primary, "primary"}, {Route::replica, "replica"}, {Route::auto_, "auto"}};
constexpr NameTable<ReplicaFallback> fallbacks{
    {ReplicaFallback::primary, "primary"}, {ReplicaFallback::error, "error"}};
constexpr NameTable<DiscoveryType> discovery_types{
    {DiscoveryType::static_, "static"}, {DiscoveryType::consul, "consul"},
    {DiscoveryType::patroni, "patroni"}};
constexpr NameTable<LoadBalanceHosts> load_balance_modes{
    {LoadBalanceHosts::round_robin, "round-robin"}, {LoadBalanceHosts::disable, "disable"}};
constexpr NameTable<TargetSessionAttrs> session_attrs{
    {TargetSessionAttrs::any, "any"}, {TargetSessionAttrs::read_write, "read-write"},
    {TargetSessionAttrs::read_only, "read-only"}, {TargetSessionAttrs::primary, "primary"},
    {TargetSessionAttrs::standby, "standby"}};

bool all_digits(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

std::optional<int> parse_port(std::string_view s) {
    if (!all_digits(s) || s.size() > 5) return std::nullopt;
    int port = 0;
    std::from_chars(s.data(), s.data() + s.size(), port);
    if (port < 1 || port > 65535) return std::nullopt;
    return port;
}

bool plain_host_ok(std::string_view host) {
    if (host.empty()) return false;
    for (char c : host)
        if (c == ',' || c == '/' || c == '[' || c == ']' || c == ' ' || c == '\t') return false;
    return true;
}

std::optional<HostPort> parse_unix_dir(std::string_view s) {
    // "/dir" or "/dir:port": a ':' after the last '/' followed by digits is the port.
    auto colon = s.rfind(':');
    if (colon != std::string_view::npos && colon > s.rfind('/')) {
        auto port = parse_port(s.substr(colon + 1));
        if (!port) return std::nullopt;
        return HostPort{std::string(s.substr(0, colon)), *port};
    }
    return HostPort{std::string(s), 5432};
}

std::optional<HostPort> parse_bracketed(std::string_view s) {
    auto close = s.find(']');
    if (close == std::string_view::npos || close == 1) return std::nullopt;
    HostPort hp{std::string(s.substr(1, close - 1)), 5432};
    auto rest = s.substr(close + 1);
    if (rest.empty()) return hp;
    if (rest[0] != ':') return std::nullopt;
    auto port = parse_port(rest.substr(1));
    if (!port) return std::nullopt;
    hp.port = *port;
    return hp;
}

// 0 or an errno value; a directory is EISDIR.
int read_whole_file(const std::string& path, std::string& out) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    struct stat st {};
    int err = ::fstat(fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
    char buf[8192];
    while (err == 0) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0 && errno != EINTR) err = errno;
        if (n > 0) out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return err;
}

}  // namespace

const char* to_string(PoolMode v) { return name_of(pool_modes, v); }
const char* to_string(AuthType v) { return name_of(auth_types, v); }
const char* to_string(SslMode v) { return name_of(ssl_modes, v); }
const char* to_string(LogFormat v) { return name_of(log_formats, v); }
const char* to_string(Route v) { return name_of(routes, v); }
const char* to_string(ReplicaFallback v) { return name_of(fallbacks, v); }
const char* to_string(DiscoveryType v) { return name_of(discovery_types, v); }

std::optional<PoolMode> parse_pool_mode(std::string_view s) { return value_of(pool_modes, s); }
std::optional<AuthType> parse_auth_type(std::string_view s) { return value_of(auth_types, s); }
std::optional<SslMode> parse_ssl_mode(std::string_view s) { return value_of(ssl_modes, s); }
std::optional<LogFormat> parse_log_format(std::string_view s) { return value_of(log_formats, s); }
std::optional<Route> parse_route(std::string_view s) { return value_of(routes, s); }
std::optional<ReplicaFallback> parse_replica_fallback(std::string_view s) {
    return value_of(fallbacks, s);
}
std::optional<DiscoveryType> parse_discovery_type(std::string_view s) {
    return value_of(discovery_types, s);
}
const char* to_string(LoadBalanceHosts v) { return name_of(load_balance_modes, v); }
const char* to_string(TargetSessionAttrs v) { return name_of(session_attrs, v); }
std::optional<LoadBalanceHosts> parse_load_balance_hosts(std::string_view s) {
    return value_of(load_balance_modes, s);
}
std::optional<TargetSessionAttrs> parse_target_session_attrs(std::string_view s) {
    return value_of(session_attrs, s);
}

std::vector<std::string> split_hosts(std::string_view host) {
    std::vector<std::string> out;
    for (;;) {
        auto comma = host.find(',');
        out.emplace_back(host.substr(0, comma));
        if (comma == std::string_view::npos) break;
        host.remove_prefix(comma + 1);
    }
    return out;
}

std::string Problem::to_string() const {
    std::string out = file;
    if (line > 0) out += ":" + std::to_string(line);
    if (!out.empty()) out += ": ";
    if (!key.empty()) out += key + ": ";
    if (warning) out += "warning: ";
    return out + reason;
}

namespace {
std::string lowered(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}
}  // namespace

std::optional<unsigned> parse_tls_protocols(std::string_view s, std::string& error) {
    unsigned set = 0;
    bool any = false;
    while (!s.empty()) {
        auto end = s.find_first_of(",: ");
        std::string word = lowered(s.substr(0, end));
        s.remove_prefix(end == std::string_view::npos ? s.size() : end + 1);
        if (word.empty()) continue;
        bool remove = word[0] == '!';
        if (remove) word.erase(0, 1);
        unsigned bits = 0;
        if (word == "tlsv1.0" || word == "tlsv1") bits = tls1_0;
        else if (word == "tlsv1.1") bits = tls1_1;
        else if (word == "tlsv1.2") bits = tls1_2;
        else if (word == "tlsv1.3") bits = tls1_3;
        else if (word == "secure" || word == "default") bits = tls1_2 | tls1_3;
        else if (word == "all" || word == "legacy") bits = tls1_0 | tls1_1 | tls1_2 | tls1_3;
        if (!bits) {
            error = "unknown protocol \"" + word + "\"; expected tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3, secure, all or legacy";
            return std::nullopt;
        }
        set = remove ? set & ~bits : set | bits;
        any = true;
    }
    if (!any || set == 0) {
        error = "no protocol version left to allow";
        return std::nullopt;
    }
    return set;
}

std::string openssl_cipher_list(std::string_view s) {
    std::string v = lowered(s);
    if (v == "default" || v == "secure" || v == "fast" || v == "normal") return "";
    if (v == "all" || v == "insecure") return "ALL";
    if (v == "compat") return "HIGH:!aNULL";
    if (v == "legacy") return "HIGH:MEDIUM:!aNULL";
    return std::string(s);
}

std::optional<std::int64_t> parse_size(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    std::size_t digits = 0;
    while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
    if (digits == 0) return std::nullopt;
    std::int64_t number = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + digits, number);
    if (ec != std::errc{}) return std::nullopt;
    auto unit = s.substr(digits);
    while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
    static constexpr std::pair<std::string_view, int> units[] = {
        {"", 0}, {"B", 0}, {"kB", 10}, {"KB", 10}, {"MB", 20}, {"GB", 30}, {"TB", 40}};
    for (const auto& [name, shift] : units) {
        if (unit != name) continue;
        if (number > (std::numeric_limits<std::int64_t>::max() >> shift)) return std::nullopt;
        return number << shift;
    }
    return std::nullopt;
}

std::optional<HostPort> parse_host_port(std::string_view s) {
    if (s.empty()) return std::nullopt;
    if (s[0] == '/') return parse_unix_dir(s);
    if (s[0] == '[') return parse_bracketed(s);
    auto colon = s.find(':');
    if (colon == std::string_view::npos) {
        if (!plain_host_ok(s)) return std::nullopt;
        return HostPort{std::string(s), 5432};
    }
    if (s.find(':', colon + 1) != std::string_view::npos) return std::nullopt;  // bare IPv6
    auto host = s.substr(0, colon);
    auto port = parse_port(s.substr(colon + 1));
    if (!plain_host_ok(host) || !port) return std::nullopt;
    return HostPort{std::string(host), *port};
}

std::string to_string(const HostPort& hp) {
    bool v6 = hp.host.find(':') != std::string::npos && (hp.host.empty() || hp.host[0] != '/');
    std::string host = v6 ? "[" + hp.host + "]" : hp.host;
    return host + ":" + std::to_string(hp.port);
}

PoolMode effective_pool_mode(const Config& cfg, const DatabaseConfig& db, const std::string& user) {
    auto it = cfg.users.find(user);
    if (it != cfg.users.end() && it->second.pool_mode) return *it->second.pool_mode;
    if (db.pool_mode) return *db.pool_mode;
    return cfg.settings.pool_mode;
}

int effective_pool_size(const Config& cfg, const DatabaseConfig& db) {
    return db.pool_size >= 0 ? db.pool_size : cfg.settings.default_pool_size;
}

std::optional<std::string> read_config_file(const std::string& path, std::string& error) {
    std::string text;
    if (int err = read_whole_file(path, text); err != 0) {
        error = "cannot read " + path + ": " + std::strerror(err);
        return std::nullopt;
    }
    return text;
}

LoadResult load_file(const std::string& path) {
    std::string error;
    auto text = read_config_file(path, error);
    if (!text) {
        LoadResult r;
        r.problems.push_back({path, 0, "", error});
        return r;
    }
    bool ini = path.size() >= 4 && path.compare(path.size() - 4, 4, ".ini") == 0;
    return ini ? load_ini_string(*text, path) : load_toml_string(*text, path);
}

}  // namespace pgrouter::config
