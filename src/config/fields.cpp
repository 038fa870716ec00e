// One table per config struct: key name -> typed setter. Both loaders and admin SET
// go through these, so a key has one type and one range wherever it is written.
#include "pgrouter/config/config.hpp"
#include "pgrouter/session/params.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <cmath>

namespace pgrouter::config {

namespace {

SetResult bad(std::string reason) { return {SetStatus::bad_value, std::move(reason)}; }

std::string untracked_reason() {
    std::string r = "pgrouter keeps ";
    for (std::size_t i = 0; i < session::kTrackedParams.size(); ++i) {
        if (i) r.append(i + 1 == session::kTrackedParams.size() ? " and " : ", ");
        r.append(session::kTrackedParams[i]);
    }
    r.append(" in step for every client; PostgreSQL 15 reports no other parameter a session sets");
    return r;
}
const SetResult ok_result{};

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

const char* type_name(const SettingValue& v) {
    static constexpr const char* names[] = {"a boolean", "an integer", "a float", "a string",
                                            "an array"};
    return names[v.data.index()];
}

SetResult wrong_type(const SettingValue& v, const char* expected) {
    return bad(std::string("expected ") + expected + ", got " + type_name(v));
}

const std::string* text_of(const SettingValue& v) {
    return v.is_text ? std::get_if<std::string>(&v.data) : nullptr;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

std::vector<std::string> split_commas(std::string_view s) {
    std::vector<std::string> out;
    while (true) {
        auto comma = s.find(',');
        auto item = trim(s.substr(0, comma));
        if (!item.empty()) out.emplace_back(item);
        if (comma == std::string_view::npos) return out;
        s.remove_prefix(comma + 1);
    }
}

// ---- converters: write `out` only on success ---------------------------------

SetResult to_int64(const SettingValue& v, std::int64_t& out) {
    if (const auto* i = std::get_if<std::int64_t>(&v.data)) {
        out = *i;
        return ok_result;
    }
    const auto* text = text_of(v);
    if (!text) return wrong_type(v, "an integer");
    std::int64_t n = 0;
    auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), n);
    if (text->empty() || ec != std::errc{} || ptr != text->data() + text->size())
        return bad("expected an integer, got " + quoted(*text));
    out = n;
    return ok_result;
}

SetResult to_int(const SettingValue& v, int min, int max, int& out) {
    std::int64_t n = 0;
    if (auto r = to_int64(v, n); !r.ok()) return r;
    if (n < min || n > max) {
        if (max == INT_MAX) return bad("must be >= " + std::to_string(min));
        return bad("must be between " + std::to_string(min) + " and " + std::to_string(max));
    }
    out = static_cast<int>(n);
    return ok_result;
}

SetResult to_seconds(const SettingValue& v, bool positive, double& out) {
    double d = 0;
    if (const auto* i = std::get_if<std::int64_t>(&v.data)) {
        d = static_cast<double>(*i);
    } else if (const auto* f = std::get_if<double>(&v.data)) {
        d = *f;
    } else if (const auto* text = text_of(v)) {
        auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), d);
        if (text->empty() || ec != std::errc{} || ptr != text->data() + text->size())
            return bad("expected a number of seconds, got " + quoted(*text));
    } else {
        return wrong_type(v, "a number of seconds");
    }
    if (!std::isfinite(d)) return bad("must be a finite number of seconds");
    if (positive && d <= 0) return bad("must be > 0");
    if (d < 0) return bad("must be >= 0");
    out = d;
    return ok_result;
}

SetResult to_bool(const SettingValue& v, bool& out) {
    if (const auto* b = std::get_if<bool>(&v.data)) {
        out = *b;
        return ok_result;
    }
    const auto* text = text_of(v);
    if (!text) return wrong_type(v, "a boolean");
    auto t = lower(*text);
    bool yes = t == "1" || t == "yes" || t == "on" || t == "true";
    bool no = t == "0" || t == "no" || t == "off" || t == "false";
    if (yes || no) {
        out = yes;
        return ok_result;
    }
    return bad("expected a boolean (yes/no, on/off, true/false, 1/0), got " + quoted(*text));
}

SetResult to_text(const SettingValue& v, std::string& out) {
    const auto* s = std::get_if<std::string>(&v.data);
    if (!s) return wrong_type(v, "a string");
    out = *s;
    return ok_result;
}

// An array of strings, or one string holding a comma-separated list.
SetResult to_list(const SettingValue& v, std::vector<std::string>& out) {
    if (const auto* list = std::get_if<std::vector<std::string>>(&v.data)) {
        out = *list;
        return ok_result;
    }
    if (const auto* s = std::get_if<std::string>(&v.data)) {
        out = split_commas(*s);
        return ok_result;
    }
    return wrong_type(v, "an array of strings");
}

SetResult to_size(const SettingValue& v, std::int64_t& out) {
    if (const auto* i = std::get_if<std::int64_t>(&v.data)) {
        if (*i < 0) return bad("must be >= 0");
        out = *i;
        return ok_result;
    }
    const auto* s = std::get_if<std::string>(&v.data);
    if (!s) return wrong_type(v, "a size (bytes, or a string like \"16MB\")");
    auto size = parse_size(*s);
    if (!size) return bad("invalid size " + quoted(*s) + "; expected bytes or a number with B, kB, MB, GB or TB");
    out = *size;
    return ok_result;
}

SetResult to_host_port(std::string_view s, HostPort& out) {
    auto hp = parse_host_port(s);
    if (!hp) return bad("invalid address " + quoted(s) + "; expected host:port, [ipv6]:port or /socket/dir");
    out = *hp;
    return ok_result;
}

// ---- enums -----------------------------------------------------------------

template <class E>
struct EnumInfo;
template <>
struct EnumInfo<PoolMode> {
    static constexpr auto parse = &parse_pool_mode;
    static constexpr const char* names = "session, transaction, statement";
};
template <>
struct EnumInfo<AuthType> {
    static constexpr auto parse = &parse_auth_type;
    static constexpr const char* names = "trust, md5, scram-sha-256, hba, cert, plain, peer";
};
template <>
struct EnumInfo<SslMode> {
    static constexpr auto parse = &parse_ssl_mode;
    static constexpr const char* names = "disable, allow, prefer, require, verify-ca, verify-full";
};
template <>
struct EnumInfo<LogFormat> {
    static constexpr auto parse = &parse_log_format;
    static constexpr const char* names = "text, json";
};
template <>
struct EnumInfo<Route> {
    static constexpr auto parse = &parse_route;
    static constexpr const char* names = "primary, replica, auto";
};
template <>
struct EnumInfo<ReplicaFallback> {
    static constexpr auto parse = &parse_replica_fallback;
    static constexpr const char* names = "primary, error";
};
template <>
struct EnumInfo<DiscoveryType> {
    static constexpr auto parse = &parse_discovery_type;
    static constexpr const char* names = "static, consul, patroni";
};
template <>
struct EnumInfo<LoadBalanceHosts> {
    static constexpr auto parse = &parse_load_balance_hosts;
    static constexpr const char* names = "round-robin, disable";
};
template <>
struct EnumInfo<TargetSessionAttrs> {
    static constexpr auto parse = &parse_target_session_attrs;
    static constexpr const char* names = "any, read-write, read-only, primary, standby";
};

// Text (pgbouncer.ini) is matched case-insensitively, as PgBouncer does; TOML exactly.
template <class E>
SetResult to_enum(const SettingValue& v, bool empty_ok, std::optional<E>& out) {
    const auto* s = std::get_if<std::string>(&v.data);
    if (!s) return wrong_type(v, "a string");
    if (s->empty() && empty_ok) {
        out = std::nullopt;
        return ok_result;
    }
    auto e = EnumInfo<E>::parse(v.is_text ? lower(*s) : *s);
    if (!e) return bad("invalid value " + quoted(*s) + "; expected one of: " + EnumInfo<E>::names);
    out = e;
    return ok_result;
}

// ---- field setters, parameterized by the member they write --------------------

template <class T>
struct owner_of;
template <class C, class V>
struct owner_of<V C::*> {
    using type = C;
};
template <auto M>
using Owner = typename owner_of<decltype(M)>::type;

template <auto M, int Min = 0, int Max = INT_MAX>
SetResult int_field(Owner<M>& o, const SettingValue& v) {
    return to_int(v, Min, Max, o.*M);
}

template <auto M>
SetResult port_field(Owner<M>& o, const SettingValue& v) {
    return to_int(v, 1, 65535, o.*M);
}

template <auto M>
SetResult seconds_field(Owner<M>& o, const SettingValue& v) {
    return to_seconds(v, false, o.*M);
}

// A per-database or per-user override of a global duration: seconds, or -1 for "not
// set" (as PgBouncer writes it), the value it starts with.
template <auto M>
SetResult override_seconds_field(Owner<M>& o, const SettingValue& v) {
    bool minus_one = false;
    if (const auto* i = std::get_if<std::int64_t>(&v.data)) minus_one = *i == -1;
    else if (const auto* f = std::get_if<double>(&v.data)) minus_one = *f == -1;
    else if (const auto* text = text_of(v)) minus_one = trim(*text) == "-1";
    if (minus_one) {
        o.*M = -1;
        return ok_result;
    }
    return to_seconds(v, false, o.*M);
}

// A duration the kernel takes in milliseconds, in an unsigned int.
template <auto M>
SetResult millisecond_seconds_field(Owner<M>& o, const SettingValue& v) {
    double d = 0;
    if (auto r = to_seconds(v, false, d); !r.ok()) return r;
    if (d > INT_MAX / 1000.0) return bad("must be at most " + std::to_string(INT_MAX / 1000) + " seconds");
    o.*M = d;
    return ok_result;
}

// Unix permission bits: octal text ("0777", "660", as pgbouncer.ini writes them) or
// an integer (TOML 0o777).
template <auto M>
SetResult file_mode_field(Owner<M>& o, const SettingValue& v) {
    std::int64_t mode = 0;
    if (const auto* text = std::get_if<std::string>(&v.data)) {
        auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), mode, 8);
        if (text->empty() || ec != std::errc{} || ptr != text->data() + text->size())
            return bad("expected an octal mode like \"0777\", got " + quoted(*text));
    } else if (const auto* i = std::get_if<std::int64_t>(&v.data)) {
        mode = *i;
    } else {
        return wrong_type(v, "an octal mode (string \"0777\" or integer 0o777)");
    }
    if (mode < 0 || mode > 0777) return bad("must be between 0 and 0777 (octal)");
    o.*M = static_cast<int>(mode);
    return ok_result;
}

template <auto M>
SetResult tls_protocols_field(Owner<M>& o, const SettingValue& v) {
    std::string s;
    if (auto r = to_text(v, s); !r.ok()) return r;
    std::string error;
    if (!parse_tls_protocols(s, error)) return bad(error);
    o.*M = std::move(s);
    return ok_result;
}

template <auto M>
SetResult dheparams_field(Owner<M>& o, const SettingValue& v) {
    std::string s;
    if (auto r = to_text(v, s); !r.ok()) return r;
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (s != "auto" && s != "none" && s != "legacy") return bad("expected auto, none or legacy, got \"" + s + "\"");
    o.*M = std::move(s);
    return ok_result;
}

template <auto M>
SetResult positive_seconds_field(Owner<M>& o, const SettingValue& v) {
    return to_seconds(v, true, o.*M);
}

template <auto M>
SetResult bool_field(Owner<M>& o, const SettingValue& v) {
    return to_bool(v, o.*M);
}

template <auto M>
SetResult string_field(Owner<M>& o, const SettingValue& v) {
    return to_text(v, o.*M);
}

template <auto M>
SetResult list_field(Owner<M>& o, const SettingValue& v) {
    return to_list(v, o.*M);
}

// track_extra_parameters: only parameters pgrouter tracks for every client anyway
// (written as pgrouter spells them); PostgreSQL 15 reports no other one a session sets.
template <auto M>
SetResult tracked_params_field(Owner<M>& o, const SettingValue& v) {
    std::vector<std::string> names;
    if (auto r = to_list(v, names); !r.ok()) return r;
    for (auto& n : names) {
        auto i = session::tracked_index(n);
        if (!i) return bad(quoted(n) + " is not tracked: " + untracked_reason());
        n = std::string(session::kTrackedParams[*i]);
    }
    o.*M = std::move(names);
    return ok_result;
}

template <auto M>
SetResult size_field(Owner<M>& o, const SettingValue& v) {
    return to_size(v, o.*M);
}

template <auto M>
SetResult enum_field(Owner<M>& o, const SettingValue& v) {
    std::optional<std::remove_cvref_t<decltype(o.*M)>> e;
    auto r = to_enum(v, false, e);
    if (r.ok()) o.*M = *e;
    return r;
}

template <auto M>  // std::optional<E>: "" = unset (inherit)
SetResult optional_enum_field(Owner<M>& o, const SettingValue& v) {
    return to_enum(v, true, o.*M);
}

// A server host: name, address or unix socket directory, or a comma-separated list
// of them (new connections spread over the list, as PgBouncer 1.17+).
template <auto M>
SetResult host_field(Owner<M>& o, const SettingValue& v) {
    std::string s;
    if (auto r = to_text(v, s); !r.ok()) return r;
    if (std::any_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); }))
        return bad("invalid host " + quoted(s));
    if (s.find(',') != std::string::npos)
        for (auto& h : split_hosts(s))
            if (h.empty()) return bad("empty entry in host list " + quoted(s));
    o.*M = std::move(s);
    return ok_result;
}

// "" = none, else host:port with an explicit port.
template <auto M>
SetResult listen_field(Owner<M>& o, const SettingValue& v) {
    std::string s;
    if (auto r = to_text(v, s); !r.ok()) return r;
    bool has_port = !s.empty() && std::isdigit(static_cast<unsigned char>(s.back())) &&
                    s.find(':') != std::string::npos && s[0] != '/';
    if (!s.empty() && (!has_port || !parse_host_port(s)))
        return bad("invalid address " + quoted(s) + "; expected host:port");
    o.*M = std::move(s);
    return ok_result;
}

template <auto M>  // std::optional<HostPort>: "" = none
SetResult host_port_field(Owner<M>& o, const SettingValue& v) {
    std::string s;
    if (auto r = to_text(v, s); !r.ok()) return r;
    if (s.empty()) {
        o.*M = std::nullopt;
        return ok_result;
    }
    HostPort hp;
    if (auto r = to_host_port(s, hp); !r.ok()) return r;
    o.*M = hp;
    return ok_result;
}

template <auto M>  // std::vector<HostPort>
SetResult host_ports_field(Owner<M>& o, const SettingValue& v) {
    std::vector<std::string> items;
    if (auto r = to_list(v, items); !r.ok()) return r;
    std::vector<HostPort> out(items.size());
    for (std::size_t i = 0; i < items.size(); ++i)
        if (auto r = to_host_port(items[i], out[i]); !r.ok()) return r;
    o.*M = std::move(out);
    return ok_result;
}

template <class Obj>
struct Field {
    std::string_view name;
    SetResult (*set)(Obj&, const SettingValue&);
};

using S = Settings;
constexpr Field<Settings> settings_fields[] = {
    {"listen_addr", list_field<&S::listen_addr>},
    {"listen_port", port_field<&S::listen_port>},
    {"unix_socket_dir", string_field<&S::unix_socket_dir>},
    {"unix_socket_mode", file_mode_field<&S::unix_socket_mode>},
    {"unix_socket_group", string_field<&S::unix_socket_group>},
    {"listen_backlog", int_field<&S::listen_backlog, 1, 65535>},
    {"workers", int_field<&S::workers, 0, 1024>},
    {"auth_type", enum_field<&S::auth_type>},
    {"auth_file", string_field<&S::auth_file>},
    {"auth_hba_file", string_field<&S::auth_hba_file>},
    {"auth_ident_file", string_field<&S::auth_ident_file>},
    {"auth_pam_service", string_field<&S::auth_pam_service>},
    {"auth_ldap_options", string_field<&S::auth_ldap_options>},
    {"auth_user", string_field<&S::auth_user>},
    {"auth_query", string_field<&S::auth_query>},
    {"auth_dbname", string_field<&S::auth_dbname>},
    {"admin_users", list_field<&S::admin_users>},
    {"stats_users", list_field<&S::stats_users>},
    {"pool_mode", enum_field<&S::pool_mode>},
    {"default_pool_size", int_field<&S::default_pool_size>},
    {"min_pool_size", int_field<&S::min_pool_size>},
    {"reserve_pool_size", int_field<&S::reserve_pool_size>},
    {"reserve_pool_timeout", seconds_field<&S::reserve_pool_timeout>},
    {"max_client_conn", int_field<&S::max_client_conn, 1>},
    {"max_db_connections", int_field<&S::max_db_connections>},
    {"max_user_connections", int_field<&S::max_user_connections>},
    {"max_db_client_connections", int_field<&S::max_db_client_connections>},
    {"max_user_client_connections", int_field<&S::max_user_client_connections>},
    {"max_prepared_statements", int_field<&S::max_prepared_statements>},
    {"max_packet_size", int_field<&S::max_packet_size, 1>},
    {"scram_iterations", int_field<&S::scram_iterations, 1>},
    {"server_reset_query", string_field<&S::server_reset_query>},
    {"server_reset_query_always", bool_field<&S::server_reset_query_always>},
    {"server_check_query", string_field<&S::server_check_query>},
    {"server_check_delay", seconds_field<&S::server_check_delay>},
    {"server_round_robin", bool_field<&S::server_round_robin>},
    {"server_fast_close", bool_field<&S::server_fast_close>},
    {"server_lifetime", seconds_field<&S::server_lifetime>},
    {"server_idle_timeout", seconds_field<&S::server_idle_timeout>},
    {"server_connect_timeout", seconds_field<&S::server_connect_timeout>},
    {"server_login_retry", seconds_field<&S::server_login_retry>},
    {"query_timeout", seconds_field<&S::query_timeout>},
    {"query_wait_timeout", seconds_field<&S::query_wait_timeout>},
    {"client_idle_timeout", seconds_field<&S::client_idle_timeout>},
    {"client_login_timeout", seconds_field<&S::client_login_timeout>},
    {"idle_transaction_timeout", seconds_field<&S::idle_transaction_timeout>},
    {"transaction_timeout", seconds_field<&S::transaction_timeout>},
    {"query_wait_notify", seconds_field<&S::query_wait_notify>},
    {"suspend_timeout", seconds_field<&S::suspend_timeout>},
    {"login_notify_message", string_field<&S::login_notify_message>},
    {"shutdown_timeout", seconds_field<&S::shutdown_timeout>},
    {"autodb_idle_timeout", seconds_field<&S::autodb_idle_timeout>},
    {"pool_idle_timeout", seconds_field<&S::pool_idle_timeout>},
    // The kernel's limits (MAX_TCP_KEEPCNT, MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL).
    {"tcp_keepalive", bool_field<&S::tcp_keepalive>},
    {"tcp_keepcnt", int_field<&S::tcp_keepcnt, 0, 127>},
    {"tcp_keepidle", int_field<&S::tcp_keepidle, 0, 32767>},
    {"tcp_keepintvl", int_field<&S::tcp_keepintvl, 0, 32767>},
    {"tcp_user_timeout", millisecond_seconds_field<&S::tcp_user_timeout>},
    {"tcp_socket_buffer", int_field<&S::tcp_socket_buffer>},
    {"tcp_defer_accept", bool_field<&S::tcp_defer_accept>},
    {"verbose", int_field<&S::verbose, 0, 10>},
    {"disable_pqexec", bool_field<&S::disable_pqexec>},
    {"ignore_startup_parameters", list_field<&S::ignore_startup_parameters>},
    {"track_extra_parameters", tracked_params_field<&S::track_extra_parameters>},
    {"application_name_add_host", bool_field<&S::application_name_add_host>},
    {"log_connections", bool_field<&S::log_connections>},
    {"log_disconnections", bool_field<&S::log_disconnections>},
    {"log_pooler_errors", bool_field<&S::log_pooler_errors>},
    {"log_format", enum_field<&S::log_format>},
    {"logfile", string_field<&S::logfile>},
    {"pidfile", string_field<&S::pidfile>},
    {"stats_period", positive_seconds_field<&S::stats_period>},
    {"log_stats", bool_field<&S::log_stats>},
    {"metrics_listen", listen_field<&S::metrics_listen>},
};

using Tls = TlsSettings;
constexpr Field<TlsSettings> tls_fields[] = {
    {"client_tls_sslmode", enum_field<&Tls::client_tls_sslmode>},
    {"client_tls_cert_file", string_field<&Tls::client_tls_cert_file>},
    {"client_tls_key_file", string_field<&Tls::client_tls_key_file>},
    {"client_tls_ca_file", string_field<&Tls::client_tls_ca_file>},
    {"server_tls_sslmode", enum_field<&Tls::server_tls_sslmode>},
    {"server_tls_ca_file", string_field<&Tls::server_tls_ca_file>},
    {"server_tls_cert_file", string_field<&Tls::server_tls_cert_file>},
    {"server_tls_key_file", string_field<&Tls::server_tls_key_file>},
    {"client_tls_protocols", tls_protocols_field<&Tls::client_tls_protocols>},
    {"client_tls_ciphers", string_field<&Tls::client_tls_ciphers>},
    {"client_tls13_ciphers", string_field<&Tls::client_tls13_ciphers>},
    {"client_tls_ecdhcurve", string_field<&Tls::client_tls_ecdhcurve>},
    {"client_tls_dheparams", dheparams_field<&Tls::client_tls_dheparams>},
    {"server_tls_protocols", tls_protocols_field<&Tls::server_tls_protocols>},
    {"server_tls_ciphers", string_field<&Tls::server_tls_ciphers>},
    {"server_tls13_ciphers", string_field<&Tls::server_tls13_ciphers>},
};

using D = DatabaseConfig;
constexpr Field<DatabaseConfig> database_fields[] = {
    {"cluster", string_field<&D::cluster>},
    {"host", host_field<&D::host>},
    {"port", port_field<&D::port>},
    {"dbname", string_field<&D::dbname>},
    {"route", enum_field<&D::route>},
    {"pool_size", int_field<&D::pool_size>},
    {"min_pool_size", int_field<&D::min_pool_size>},
    {"reserve_pool_size", int_field<&D::reserve_pool_size>},
    {"pool_mode", optional_enum_field<&D::pool_mode>},
    {"user", string_field<&D::user>},
    {"password", string_field<&D::password>},
    {"max_db_connections", int_field<&D::max_db_connections>},
    {"max_db_client_connections", int_field<&D::max_db_client_connections>},
    {"auth_user", string_field<&D::auth_user>},
    {"auth_dbname", string_field<&D::auth_dbname>},
    {"auth_query", string_field<&D::auth_query>},
    {"client_encoding", string_field<&D::client_encoding>},
    {"datestyle", string_field<&D::datestyle>},
    {"timezone", string_field<&D::timezone>},
    {"application_name", string_field<&D::application_name>},
    {"connect_query", string_field<&D::connect_query>},
    {"load_balance_hosts", enum_field<&D::load_balance_hosts>},
    {"target_session_attrs", enum_field<&D::target_session_attrs>},
    {"server_lifetime", override_seconds_field<&D::server_lifetime>},
    {"query_wait_timeout", override_seconds_field<&D::query_wait_timeout>},
    {"query_timeout", override_seconds_field<&D::query_timeout>},
    {"idle_transaction_timeout", override_seconds_field<&D::idle_transaction_timeout>},
    {"transaction_timeout", override_seconds_field<&D::transaction_timeout>},
    {"client_idle_timeout", override_seconds_field<&D::client_idle_timeout>},
};

using U = UserConfig;
constexpr Field<UserConfig> user_fields[] = {
    {"pool_mode", optional_enum_field<&U::pool_mode>},
    {"max_user_connections", int_field<&U::max_user_connections>},
    {"max_user_client_connections", int_field<&U::max_user_client_connections>},
    {"pool_size", int_field<&U::pool_size>},
    {"reserve_pool_size", int_field<&U::reserve_pool_size>},
    {"query_wait_timeout", override_seconds_field<&U::query_wait_timeout>},
    {"query_timeout", override_seconds_field<&U::query_timeout>},
    {"idle_transaction_timeout", override_seconds_field<&U::idle_transaction_timeout>},
    {"transaction_timeout", override_seconds_field<&U::transaction_timeout>},
    {"client_idle_timeout", override_seconds_field<&U::client_idle_timeout>},
};

using C = ClusterConfig;
constexpr Field<ClusterConfig> cluster_fields[] = {
    {"primary", host_port_field<&C::primary>},
    {"replicas", host_ports_field<&C::replicas>},
    {"health_check_period", positive_seconds_field<&C::health_check_period>},
    {"max_replica_lag", size_field<&C::max_replica_lag>},
    {"replica_fallback", enum_field<&C::replica_fallback>},
    {"failover_timeout", seconds_field<&C::failover_timeout>},
    {"health_check_user", string_field<&C::health_check_user>},
    {"health_check_dbname", string_field<&C::health_check_dbname>},
};

using Disc = DiscoveryConfig;
constexpr Field<DiscoveryConfig> discovery_fields[] = {
    {"type", enum_field<&Disc::type>},
    {"consul_url", string_field<&Disc::consul_url>},
    {"consul_service", string_field<&Disc::consul_service>},
    {"consul_primary_tags", list_field<&Disc::consul_primary_tags>},
    {"consul_replica_tags", list_field<&Disc::consul_replica_tags>},
    {"consul_token_file", string_field<&Disc::consul_token_file>},
    {"consul_datacenter", string_field<&Disc::consul_datacenter>},
    {"consul_wait", positive_seconds_field<&Disc::consul_wait>},
    {"patroni_urls", list_field<&Disc::patroni_urls>},
};

template <class Obj, std::size_t N>
const Field<Obj>* find(const Field<Obj> (&table)[N], std::string_view key) {
    for (const auto& f : table)
        if (f.name == key) return &f;
    return nullptr;
}

template <class Obj, std::size_t N>
SetResult apply(const Field<Obj> (&table)[N], Obj& obj, std::string_view key,
                const SettingValue& v) {
    const auto* f = find(table, key);
    if (!f) return {SetStatus::unknown_key, "unknown key"};
    return f->set(obj, v);
}

}  // namespace

std::vector<std::string> split_list(std::string_view s) { return split_commas(s); }

SetResult set_setting(Config& cfg, std::string_view section, std::string_view key,
                      const SettingValue& v) {
    if ((section.empty() || section == "pgrouter") && find(settings_fields, key))
        return apply(settings_fields, cfg.settings, key, v);
    if ((section.empty() || section == "tls") && find(tls_fields, key))
        return apply(tls_fields, cfg.tls, key, v);
    return {SetStatus::unknown_key, "unknown key"};
}

SetResult set_database_key(DatabaseConfig& db, std::string_view key, const SettingValue& v) {
    return apply(database_fields, db, key, v);
}

SetResult set_user_key(UserConfig& user, std::string_view key, const SettingValue& v) {
    return apply(user_fields, user, key, v);
}

SetResult set_cluster_key(ClusterConfig& cluster, std::string_view key, const SettingValue& v) {
    return apply(cluster_fields, cluster, key, v);
}

SetResult set_discovery_key(DiscoveryConfig& d, std::string_view key, const SettingValue& v) {
    return apply(discovery_fields, d, key, v);
}

}  // namespace pgrouter::config
