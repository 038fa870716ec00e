// SHOW CONFIG and SET key = value. The running config is an immutable snapshot:
// SET builds a modified copy, validates it whole and publishes it.
#include "pgrouter/auth/auth.hpp"
#include "pgrouter/util/task.hpp"
#include "pgrouter/admin/handlers.hpp"

#include "pgrouter/app/logging.hpp"
#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/session/errors.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <functional>

namespace pgrouter::admin {

namespace {
namespace sqlstate = session::sqlstate;
using config::Config;

std::string text(int v) { return std::to_string(v); }
std::string text(double v) { return fmt::format("{}", v); }
std::string text(bool v) { return v ? "1" : "0"; }
std::string text(const std::string& v) { return v; }
std::string text(const std::vector<std::string>& v) {
    std::string out;
    for (auto& s : v) out += (out.empty() ? "" : ",") + s;
    return out;
}
template <class E>
    requires std::is_enum_v<E>
std::string text(E v) { return config::to_string(v); }

// auth_ldap_options as written, but for ldapbindpasswd's value: no secret on the console.
std::string masked_ldap_options(const std::string& options) {
    std::string error;
    auto list = auth::split_options(options, error);
    if (!list) return options.find("ldapbindpasswd") == std::string::npos ? options : "(unparsable, not shown)";
    std::string out;
    for (auto& [name, value] : *list) {
        if (!out.empty()) out += ' ';
        std::string shown = name == "ldapbindpasswd" ? std::string("********") : value;
        bool quote = shown.empty() || shown.find_first_of(" \t\"") != std::string::npos;
        if (quote) {
            std::string q = "\"";
            for (char ch : shown) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
            shown = q + "\"";
        }
        out += name + "=" + shown;
    }
    return out;
}

struct Key {
    std::string_view name;
    std::function<std::string(const Config&)> get;
    bool changeable;
};

#define SETTING(field, changeable) \
    Key { #field, [](const Config& c) { return text(c.settings.field); }, changeable }
#define TLS(field) \
    Key { #field, [](const Config& c) { return text(c.tls.field); }, true }

// Every [pgrouter] and [tls] key, in alphabetical order (as PgBouncer lists them).
// Keys that bind sockets, name files opened at start or size the process need a restart.
const std::vector<Key>& keys() {
    static const std::vector<Key> all = [] {
        std::vector<Key> k = {
            SETTING(listen_addr, false),           SETTING(listen_port, false),
            SETTING(unix_socket_dir, false),       SETTING(workers, false),
            Key{"unix_socket_mode", [](const Config& c) { return fmt::format("0{:o}", c.settings.unix_socket_mode); },
                false},
            SETTING(unix_socket_group, false),     SETTING(listen_backlog, false),
            SETTING(log_stats, true),              SETTING(log_pooler_errors, true),
            SETTING(auth_type, true),              SETTING(auth_file, true),
            SETTING(auth_hba_file, true),          SETTING(auth_ident_file, true),         SETTING(auth_pam_service, true),
            Key{"auth_ldap_options", [](const Config& c) { return masked_ldap_options(c.settings.auth_ldap_options); },
                true},
            SETTING(auth_user, true),
            SETTING(auth_query, true),             SETTING(auth_dbname, true),             SETTING(admin_users, true),
            SETTING(stats_users, true),            SETTING(pool_mode, true),
            SETTING(default_pool_size, true),      SETTING(min_pool_size, true),
            SETTING(reserve_pool_size, true),      SETTING(reserve_pool_timeout, true),
            SETTING(max_client_conn, true),        SETTING(max_db_connections, true),
            SETTING(max_user_connections, true),   SETTING(max_prepared_statements, true),
            SETTING(max_packet_size, true),        SETTING(scram_iterations, true),
            SETTING(max_db_client_connections, true), SETTING(max_user_client_connections, true),
            SETTING(transaction_timeout, true),    SETTING(query_wait_notify, true),
            SETTING(login_notify_message, true),
            SETTING(server_reset_query, true),     SETTING(server_reset_query_always, true),
            SETTING(server_check_query, true),     SETTING(server_check_delay, true),
            SETTING(server_round_robin, true),     SETTING(server_fast_close, true),
            SETTING(server_lifetime, true),        SETTING(server_idle_timeout, true),
            SETTING(server_connect_timeout, true), SETTING(server_login_retry, true),
            SETTING(query_timeout, true),          SETTING(query_wait_timeout, true),
            SETTING(client_idle_timeout, true),    SETTING(client_login_timeout, true),
            SETTING(idle_transaction_timeout, true), SETTING(shutdown_timeout, true),
            SETTING(suspend_timeout, true),        SETTING(track_extra_parameters, true),
            SETTING(autodb_idle_timeout, true),    SETTING(pool_idle_timeout, true),
            SETTING(ignore_startup_parameters, true), SETTING(application_name_add_host, true),
            SETTING(log_connections, true),        SETTING(log_disconnections, true),
            SETTING(log_format, false),            SETTING(logfile, false),
            SETTING(pidfile, false),               SETTING(stats_period, true),
            SETTING(metrics_listen, false),
            SETTING(tcp_keepalive, true),          SETTING(tcp_keepcnt, true),
            SETTING(tcp_keepidle, true),           SETTING(tcp_keepintvl, true),
            SETTING(tcp_user_timeout, true),       SETTING(tcp_socket_buffer, true),
            SETTING(tcp_defer_accept, false),      SETTING(verbose, true),
            SETTING(disable_pqexec, true),
            TLS(client_tls_sslmode),    TLS(client_tls_cert_file), TLS(client_tls_key_file),
            TLS(client_tls_ca_file),    TLS(server_tls_sslmode),   TLS(server_tls_ca_file),
            TLS(server_tls_cert_file),  TLS(server_tls_key_file),
            TLS(client_tls_protocols),  TLS(client_tls_ciphers),   TLS(client_tls13_ciphers),
            TLS(server_tls_protocols),  TLS(server_tls_ciphers),   TLS(server_tls13_ciphers),
            TLS(client_tls_ecdhcurve),  TLS(client_tls_dheparams),
            Key{"conffile", [](const Config& c) { return c.path; }, false},
        };
        std::sort(k.begin(), k.end(), [](const Key& a, const Key& b) { return a.name < b.name; });
        return k;
    }();
    return all;
}

#undef SETTING
#undef TLS

const Key* find_key(std::string_view name) {
    for (auto& k : keys())
        if (k.name == name) return &k;
    return nullptr;
}

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}
}  // namespace

Task<void> show_config(Context& ctx, const Command& cmd) {
    auto snap = ctx.rt.snapshot();
    static const Config defaults{};
    ResultSet rs({{"key"}, {"value"}, {"default"}, {"changeable"}});
    for (auto& k : keys())
        rs.add({cell(k.name), cell(k.get(*snap->config)), cell(k.get(defaults)), cell(k.changeable ? "yes" : "no")});
    rs.write(ctx.out);
    co_return;
}

// SET key = value | SET key TO value; the value a word or a 'string'.
Task<void> set(Context& ctx, const Command& cmd) {
    if ((cmd.keyword(1) == "PRIMARY" || cmd.keyword(1) == "REPLICAS") &&
        (cmd.size() < 3 || cmd.tokens[2].kind != Token::Kind::equals)) {
        co_await set_topology(ctx, cmd);
        co_return;
    }
    bool shape = cmd.size() == 4 && cmd.tokens[1].kind == Token::Kind::word &&
                 (cmd.tokens[2].kind == Token::Kind::equals || cmd.keyword(2) == "TO") &&
                 (cmd.tokens[3].kind == Token::Kind::word || cmd.tokens[3].kind == Token::Kind::string);
    if (!shape) {
        invalid_command(ctx, cmd);
        co_return;
    }
    std::string key = lower(cmd.tokens[1].text);
    const std::string& value = cmd.tokens[3].text;
    const Key* k = find_key(key);
    if (!k) {
        ctx.error(sqlstate::undefined_object, "unknown configuration key: " + key);
        co_return;
    }
    if (!k->changeable) {
        ctx.error(sqlstate::object_not_in_prerequisite_state, key + " cannot be changed at run time (restart needed)");
        co_return;
    }
    auto snap = ctx.rt.snapshot();
    auto cfg = std::make_shared<Config>(*snap->config);
    auto r = config::set_setting(*cfg, "", key, config::SettingValue::text(value));
    if (!r.ok()) {
        ctx.error(sqlstate::invalid_parameter_value, key + ": " + r.reason);
        co_return;
    }
    std::string problems;
    for (auto& p : config::validate(*cfg))
        if (!p.warning) problems += (problems.empty() ? "" : "\n") + p.to_string();
    std::vector<std::string> errors;
    // Same generation: servers stay valid unless their target really changed.
    auto next = problems.empty() ? app::build_snapshot(cfg, snap->generation, errors) : nullptr;
    for (auto& e : errors) problems += (problems.empty() ? "" : "\n") + e;
    if (!problems.empty()) {
        ctx.error(sqlstate::invalid_parameter_value, "SET " + key + " rejected, configuration unchanged:\n" + problems);
        co_return;
    }
    ctx.rt.publish(next);
    pool::reconfigure_all(*ctx.rt.pools, *next);
    app::apply_log_level(next->config->settings);
    ctx.complete("SET " + key + "=" + value);
}

}  // namespace pgrouter::admin
