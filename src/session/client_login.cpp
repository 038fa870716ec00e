// The login half of a client session: startup packet, TLS, authentication,
// routing to a pool, and the welcome (ParameterStatus, BackendKeyData).
#include "pgrouter/admin/admin.hpp"
#include "pgrouter/util/task.hpp"
#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/routing/cluster.hpp"
#include "pgrouter/protocol/protocol.hpp"
#include "pgrouter/session/cancel_registry.hpp"
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/session/errors.hpp"
#include "pgrouter/session/server_connection.hpp"
#include "pgrouter/session/external_auth.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <pwd.h>
#include <strings.h>
#include <unistd.h>

namespace pgrouter::session {

namespace {
using namespace boost::asio::experimental::awaitable_operators;
constexpr auto token = task_token;
namespace proto = protocol;
Clock::duration secs(double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); }

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// Reads more bytes into `buf` before `deadline`; false on EOF, error or timeout.
Task<bool> read_more(net::Stream& s, std::string& buf, Clock::time_point deadline) {
    char tmp[4096];
    Timer timer(co_await asio::this_coro::executor, deadline);
    auto r = co_await (s.read_some(asio::buffer(tmp)) || timer.async_wait(token));
    if (r.index() != 0) co_return false;
    auto [ec, n] = std::get<0>(r);
    if (ec || n == 0) co_return false;
    buf.append(tmp, n);
    co_return true;
}

enum Method { kTrust, kReject, kMd5, kScram, kPassword, kCert, kPeer, kPam, kLdap };

// The name of OS user `uid` (peer authentication); nullopt when unknown.
std::optional<std::string> os_user_name(long uid) {
    if (uid < 0) return std::nullopt;
    passwd pw{}, *found = nullptr;
    std::vector<char> buf(16384);
    if (::getpwuid_r(static_cast<uid_t>(uid), &pw, buf.data(), buf.size(), &found) != 0 || !found)
        return std::nullopt;
    return std::string(found->pw_name);
}

// Splits a libpq `options` value into -c name=value pairs (backslash escapes spaces).
std::optional<std::vector<std::pair<std::string, std::string>>> parse_options(std::string_view opts) {
    std::vector<std::string> words;
    std::string cur;
    bool esc = false;
    for (char c : opts) {
        if (esc) {
            cur.push_back(c);
            esc = false;
        } else if (c == '\\') {
            esc = true;
        } else if (c == ' ' || c == '\t') {
            if (!cur.empty()) words.push_back(std::move(cur)), cur.clear();
        } else {
            cur.push_back(c);
        }
    }
    if (!cur.empty()) words.push_back(std::move(cur));
    std::vector<std::pair<std::string, std::string>> out;
    for (std::size_t i = 0; i < words.size(); ++i) {
        std::string kv;
        if (words[i] == "-c" && i + 1 < words.size()) {
            kv = words[++i];
        } else if (words[i].rfind("-c", 0) == 0 && words[i].size() > 2) {
            kv = words[i].substr(2);
        } else if (words[i].rfind("--", 0) == 0) {
            kv = words[i].substr(2);
        } else {
            return std::nullopt;
        }
        auto eq = kv.find('=');
        if (eq == std::string::npos) return std::nullopt;
        std::string name = kv.substr(0, eq);
        std::replace(name.begin(), name.end(), '-', '_');
        out.emplace_back(name, kv.substr(eq + 1));
    }
    return out;
}

bool truthy(std::string_view v) {
    return iequals(v, "on") || iequals(v, "true") || iequals(v, "yes") || v == "1";
}
}  // namespace

Task<bool> ClientSession::read_startup(Clock::time_point deadline) {
    auto& rt = worker_.runtime();
    for (;;) {
        auto r = proto::decode_startup(proto::as_bytes(login_->buf));
        if (r.status == proto::Decode::need_more) {
            if (!co_await read_more(client_, login_->buf, deadline)) co_return false;
            continue;
        }
        if (r.status == proto::Decode::error) {
            co_await fail(sqlstate::protocol_violation, r.error);
            co_return false;
        }
        login_->buf.erase(0, r.consumed);
        auto& p = r.packet;
        using Kind = proto::StartupPacket::Kind;
        if (p.kind == Kind::cancel_request) {
            rt.cancels->cancel(p.cancel_pid, p.cancel_key);
            co_return false;
        }
        if (p.kind == Kind::gssenc_request) {
            co_await send("N");
            continue;
        }
        if (p.kind == Kind::ssl_request) {
            if (!login_->buf.empty()) {  // data after SSLRequest before our answer: a protocol violation
                co_await fail(sqlstate::protocol_violation, "unexpected data after SSLRequest");
                co_return false;
            }
            if (snap_->client_tls && !client_.is_tls() && !client_.is_unix()) {
                co_await send("S");
                auto ec = co_await client_.tls_handshake(*snap_->client_tls, asio::ssl::stream_base::server, {});
                if (ec) {
                    spdlog::info("C-{}: TLS handshake failed: {}", id_, ec.message());
                    co_return false;
                }
            } else {
                co_await send("N");
            }
            continue;
        }
        auto tls_mode = snap_->config->tls.client_tls_sslmode;
        bool tls_required = tls_mode == config::SslMode::require || tls_mode == config::SslMode::verify_ca ||
                            tls_mode == config::SslMode::verify_full;
        if (tls_required && !client_.is_tls() && !client_.is_unix()) {
            co_await fail(sqlstate::invalid_authorization, "SSL required");
            co_return false;
        }
        std::uint32_t major = p.version >> 16, minor = p.version & 0xFFFF;
        if (major != 3) {
            co_await fail(sqlstate::feature_not_supported,
                          "unsupported frontend protocol " + std::to_string(major) + "." + std::to_string(minor) +
                              ": server supports 3.0 to 3.0");
            co_return false;
        }
        login_->requested_minor = minor;
        login_->startup_params = std::move(p.params);
        co_return true;
    }
}

Task<bool> ClientSession::read_auth_message(std::string& body, Clock::time_point deadline) {
    for (;;) {
        auto h = proto::decode_frontend_header(proto::as_bytes(login_->buf));
        if (h.status == proto::Decode::error || (h.status == proto::Decode::ok && h.header.type != 'p')) {
            co_await fail(sqlstate::protocol_violation, "expected a password message");
            co_return false;
        }
        if (h.status == proto::Decode::ok && login_->buf.size() >= h.header.total()) {
            body.assign(login_->buf, 5, h.header.body_size());
            login_->buf.erase(0, h.header.total());
            co_return true;
        }
        if (!co_await read_more(client_, login_->buf, deadline)) co_return false;
    }
}

Task<bool> ClientSession::authenticate(Clock::time_point& deadline) {
    auto& cfg = *snap_->config;
    auto& st = cfg.settings;
    const auto& ignore = st.ignore_startup_parameters;
    for (auto& [k, v] : login_->startup_params) {
        if (k == "user") {
            user_ = v;
        } else if (k == "database") {
            database_ = v;
        } else if (k.rfind("_pq_.", 0) == 0) {
            login_->unrecognized_options.push_back(k);
        } else if (k == "options") {
            auto opts = parse_options(v);
            bool ignored = std::find(ignore.begin(), ignore.end(), "options") != ignore.end();
            if (!opts && !ignored) {
                co_await fail(sqlstate::protocol_violation, "unsupported startup parameter in options: " + v);
                co_return false;
            }
            for (auto& [name, value] : opts ? *opts : std::vector<std::pair<std::string, std::string>>{}) {
                if (iequals(name, "default_transaction_read_only") && truthy(value)) read_only_intent_ = true;
                if (!client_params_.set(name, value) && !ignored &&
                    std::find(ignore.begin(), ignore.end(), name) == ignore.end()) {
                    co_await fail(sqlstate::protocol_violation, "unsupported startup parameter in options: " + name);
                    co_return false;
                }
            }
        } else if (k == "target_session_attrs") {
            read_only_intent_ = v == "read-only" || v == "prefer-standby" || v == "standby";
        } else if (client_params_.set(k, v)) {
            if (iequals(k, "default_transaction_read_only") && truthy(v)) read_only_intent_ = true;
        } else if (std::find(ignore.begin(), ignore.end(), k) == ignore.end()) {
            co_await fail(sqlstate::protocol_violation, "unsupported startup parameter: " + k);
            co_return false;
        }
    }
    std::vector<std::pair<std::string, std::string>>().swap(login_->startup_params);  // parsed: give the memory back
    if (st.application_name_add_host) {
        // PgBouncer's "<application_name or app> - <address>:<port>", once, at login.
        std::size_t i = *tracked_index("application_name");
        std::string app = client_params_.has(i) ? std::string(*client_params_.get(i)) : std::string("app");
        std::string where = client_.is_unix() ? "unix:" + std::to_string(st.listen_port) : peer_;
        if (!client_.is_unix() && client_.peer_ip().find(':') != std::string::npos)
            where = "[" + client_.peer_ip() + "]" + peer_.substr(peer_.rfind(':'));
        client_params_.set(i, app + " - " + where);
    }
    if (user_.empty()) {
        co_await fail(sqlstate::invalid_authorization, "no PostgreSQL user name specified in startup packet");
        co_return false;
    }
    if (database_.empty()) database_ = user_;
    if (st.log_connections) spdlog::info("C-{}: {}/{}@{} login attempt", id_, database_.str(), user_.str(), peer_);
    if (worker_.runtime().suspended.load() && !admin::is_admin_database(database_)) {
        // SUSPEND: the login goes on at RESUME (a console still opens, to RESUME with).
        // PgBouncer leaves such clients in the listen backlog; the wait does not count
        // against client_login_timeout there, nor here.
        login_held_ = true;
        auto held = Clock::now();
        co_await wait_while_suspended();
        login_held_ = false;
        deadline += Clock::now() - held;
        if (closing_) co_return false;
    }

    // PgBouncer's rule: our own OS user on the unix socket may open the console as pgbouncer.
    if (admin::is_admin_database(database_) && user_ == "pgbouncer" && client_.is_unix() &&
        client_.peer_uid() == static_cast<long>(::getuid())) {
        login_->console_admin = true;
        co_return true;
    }
    if (st.auth_type == config::AuthType::any) {
        // PgBouncer's "any": no authentication and the user name given is ignored. Every
        // database logs in as its forced user. Anyone may open the console as pgbouncer:
        // a name in admin_users with full rights, any other for SHOW (as PgBouncer).
        if (admin::is_admin_database(database_)) {
            auto& admins = st.admin_users;
            login_->console_admin = std::find(admins.begin(), admins.end(), user_) != admins.end();
            login_->console_any_user = true;
            user_ = "pgbouncer";
            co_return true;
        }
        auto db = resolve_database(*snap_->config, database_);
        if (!db) co_return true;  // attach answers 3D000
        if (db->user.empty()) {
            spdlog::warn("C-{}: auth_type any needs user= on database \"{}\"", id_, database_.str());
            co_await fail(sqlstate::invalid_authorization,
                          "auth_type \"any\" requires a forced user, and database \"" + database_ + "\" has none");
            co_return false;
        }
        user_ = db->user;
        co_return true;
    }
    int method = kReject;
    std::string map;  // the matching hba line's ident map (peer, cert)
    std::optional<auth::LdapOptions> ldap;  // the matching hba line's LDAP options
    switch (st.auth_type) {
        case config::AuthType::trust: method = kTrust; break;
        case config::AuthType::md5: method = kMd5; break;
        case config::AuthType::scram_sha_256: method = kScram; break;
        case config::AuthType::plain: method = kPassword; break;
        case config::AuthType::cert: method = kCert; break;
        case config::AuthType::peer: method = kPeer; break;
        case config::AuthType::any: method = kTrust; break;  // handled above
        case config::AuthType::pam: method = kPam; break;
        case config::AuthType::ldap: method = kLdap; break;
        case config::AuthType::hba: {
            auth::HbaRequest req{client_.is_unix(), client_.is_tls(), database_, user_, client_.peer_ip()};
            const auth::HbaRule* rule = auth::hba_match_rule(snap_->hba, req);
            if (!rule) {
                method = kReject;
                break;
            }
            map = rule->map;
            switch (rule->method) {
                case auth::HbaMethod::trust: method = kTrust; break;
                case auth::HbaMethod::reject: method = kReject; break;
                case auth::HbaMethod::md5: method = kMd5; break;
                case auth::HbaMethod::scram_sha_256: method = kScram; break;
                case auth::HbaMethod::password: method = kPassword; break;
                case auth::HbaMethod::cert: method = kCert; break;
                case auth::HbaMethod::peer: method = kPeer; break;
                case auth::HbaMethod::ldap:
                    method = kLdap;
                    ldap = rule->ldap;
                    break;
            }
            break;
        }
    }
    if (method == kReject) {
        co_await fail(sqlstate::invalid_authorization,
                      "no pg_hba.conf entry for host \"" + client_.peer_ip() + "\", user \"" + user_ +
                          "\", database \"" + database_ + "\"");
        co_return false;
    }
    if (method == kTrust) co_return true;
    if (method == kPeer) {
        // The OS user at the other end of a unix socket (SO_PEERCRED) must be the
        // user the client asks for, as PostgreSQL's and PgBouncer's peer method.
        auto os_user = client_.is_unix() ? os_user_name(client_.peer_uid()) : std::nullopt;
        bool allowed = os_user && (map.empty() ? *os_user == user_ : auth::ident_allows(snap_->ident, map, *os_user, user_));
        if (!allowed) {
            if (client_.is_unix())
                spdlog::info("C-{}: peer authentication: OS user {} asked for user \"{}\"{}", id_,
                             os_user ? "\"" + *os_user + "\"" : "uid " + std::to_string(client_.peer_uid()),
                             user_.str(), map.empty() ? std::string() : " (ident map \"" + map + "\" has no such line)");
            // A named message: GCC 12 destroys a conditional's temporaries too early in co_await.
            std::string why = client_.is_unix() ? "Peer authentication failed for user \"" + user_.str() + "\""
                                                : std::string("peer authentication is only supported on unix sockets");
            co_await fail(sqlstate::invalid_authorization, std::move(why));
            co_return false;
        }
        co_return true;
    }
    if (method == kCert) {
        bool named = client_.is_tls() && client_.peer_cert_verified() &&
                     (map.empty() ? client_.peer_cert_common_name() == user_
                                  : auth::ident_allows(snap_->ident, map, client_.peer_cert_common_name(), user_));
        if (!named) {
            co_await fail(sqlstate::invalid_authorization,
                          "certificate authentication failed for user \"" + user_ + "\"");
            co_return false;
        }
        co_return true;
    }
    if (method == kPam || method == kLdap) {
        // PAM and LDAP (PgBouncer's, PostgreSQL's): the cleartext password is checked by
        // that authority (auth_file and auth_query are not used) and becomes the password
        // of this user's server logins.
        const char* kind = method == kPam ? "PAM" : "LDAP";
        if (method == kLdap && !ldap) {
            std::string why;  // auth_type = "ldap": auth_ldap_options (checked at load)
            auto options = auth::split_options(st.auth_ldap_options, why);
            if (options) ldap = auth::parse_ldap_options(*options, why);
            if (!ldap) {
                spdlog::error("C-{}: auth_ldap_options: {}", id_, why);
                co_await fail(sqlstate::invalid_authorization, "LDAP authentication is not configured");
                co_return false;
            }
        }
        std::string out, body;
        proto::write_auth_cleartext(out);
        co_await send(out);
        if (!co_await read_auth_message(body, deadline)) co_return false;
        std::string password(body.c_str());
        ::explicit_bzero(body.data(), body.size());
        const std::string user = user_.str();
        const std::string rhost = client_.is_unix() ? std::string() : client_.peer_ip();
        ExternalAuthResult checked{false, "empty password"};  // as PostgreSQL: never asked
        if (!password.empty() && method == kPam)
            checked = co_await pam_check(st.auth_pam_service, user, password, rhost, deadline, &login_->cancel_check);
        else if (!password.empty())
            checked = co_await ldap_check(*ldap, user, password, deadline, &login_->cancel_check);
        if (closing_) co_return false;  // killed while it waited: the kill's error is the answer
        if (!checked.ok) {
            spdlog::info("C-{}: {} authentication failed for user \"{}\": {}", id_, kind, user, checked.reason);
            // PostgreSQL's message and SQLSTATE for these methods.
            std::string message = std::string(kind) + " authentication failed for user \"" + user + "\"";
            co_await fail(sqlstate::invalid_authorization, std::move(message));
            co_return false;
        }
        if (!auth_query_creds_) auth_query_creds_ = std::make_unique<std::map<std::string, auth::Credential>>();
        (*auth_query_creds_)[user] = auth::Credential{user, std::move(password), auth::SecretKind::plain};
        co_return true;
    }
    co_return co_await auth_password_exchange(method, deadline);
}

Task<bool> ClientSession::auth_password_exchange(int method, Clock::time_point deadline) {
    auto it = snap_->users.find(user_);
    const auth::Credential* cred = it == snap_->users.end() ? nullptr : &it->second;
    std::optional<auth::Credential> queried;
    if (!cred) {
        auto looked = co_await lookup_auth_query(deadline);
        if (looked.failed) {
            co_await fail(looked.sqlstate, looked.message);
            co_return false;
        }
        queried = std::move(looked.cred);
        if (queried) cred = &*queried;
    }
    auto denied = [&]() -> Task<bool> {
        co_await fail(sqlstate::invalid_password, "password authentication failed for user \"" + user_ + "\"");
        co_return false;
    };
    if (!cred) {
        // Unknown user: still ask for a password so user names cannot be probed.
        std::string out;
        proto::write_auth_cleartext(out);
        co_await send(out);
        std::string body;
        co_await read_auth_message(body, deadline);
        co_return co_await denied();
    }
    // What the stored secret allows: md5 challenges need plain or md5; SCRAM needs plain or SCRAM.
    if (method == kMd5 && cred->kind == auth::SecretKind::scram) method = kScram;
    // As PostgreSQL and PgBouncer: scram-sha-256 never falls back to an md5 secret.
    if (method == kScram && cred->kind == auth::SecretKind::md5) {
        spdlog::info("C-{}: SCRAM authentication failed: user \"{}\" has an md5 secret", id_, user_.str());
        co_return co_await denied();
    }
    std::string out, body;
    if (method == kPassword) {
        proto::write_auth_cleartext(out);
        co_await send(out);
        if (!co_await read_auth_message(body, deadline)) co_return false;
        std::string pw(body.c_str());
        bool ok = false;
        if (cred->kind == auth::SecretKind::plain) {
            ok = pw == cred->secret;
        } else if (cred->kind == auth::SecretKind::md5) {
            ok = auth::md5_password_hash(pw, user_) == cred->secret;
        } else if (auto sec = auth::parse_scram_secret(cred->secret)) {
            auto derived = auth::make_scram_secret(pw, sec->salt, sec->iterations);
            ok = derived.stored_key == sec->stored_key;
        }
        if (!ok) co_return co_await denied();
        co_return true;
    }
    if (method == kMd5) {
        std::array<std::uint8_t, 4> salt;
        auto rnd = auth::random_bytes(4);
        std::memcpy(salt.data(), rnd.data(), 4);
        proto::write_auth_md5(out, salt.data());
        co_await send(out);
        if (!co_await read_auth_message(body, deadline)) co_return false;
        if (!auth::md5_verify(*cred, salt, std::string_view(body.c_str()))) co_return co_await denied();
        co_return true;
    }
    // SCRAM-SHA-256
    std::optional<auth::ScramServer> scram;
    if (cred->kind == auth::SecretKind::plain) {
        scram.emplace(auth::ScramServer::from_password(cred->secret, snap_->config->settings.scram_iterations));
    } else if (auto sec = auth::parse_scram_secret(cred->secret)) {
        scram.emplace(*sec);
    } else {
        co_await fail(sqlstate::invalid_password, "invalid SCRAM secret in auth_file for user \"" + user_ + "\"");
        co_return false;
    }
    proto::write_auth_sasl(out, "SCRAM-SHA-256");
    co_await send(out);
    if (!co_await read_auth_message(body, deadline)) co_return false;
    auto initial = proto::parse_sasl_initial_response(proto::as_bytes(body));
    if (!initial || initial->mechanism != "SCRAM-SHA-256") {
        co_await fail(sqlstate::protocol_violation, "client selected an invalid SASL authentication mechanism");
        co_return false;
    }
    auto first = scram->handle_client_first(initial->data);
    if (!first) {
        co_await fail(sqlstate::protocol_violation, "malformed SCRAM message: " + scram->error());
        co_return false;
    }
    out.clear();
    proto::write_auth_sasl_continue(out, *first);
    co_await send(out);
    if (!co_await read_auth_message(body, deadline)) co_return false;
    auto final_msg = scram->handle_client_final(body);
    if (!final_msg) {
        if (scram->proof_failed()) co_return co_await denied();
        co_await fail(sqlstate::protocol_violation, "malformed SCRAM message: " + scram->error());
        co_return false;
    }
    out.clear();
    proto::write_auth_sasl_final(out, *final_msg);
    co_await send(out);
    if (cred->kind == auth::SecretKind::scram) scram_keys_ = std::make_unique<std::pair<auth::Bytes, auth::Bytes>>(scram->client_key(), scram->secret().server_key);
    co_return true;
}

std::optional<config::DatabaseConfig> ClientSession::resolve_database(const config::Config& cfg,
                                                                     const std::string& name) {
    if (auto it = cfg.databases.find(name); it != cfg.databases.end()) return it->second;
    if (!cfg.fallback_database) return std::nullopt;
    auto db = *cfg.fallback_database;
    db.name = name;
    db.dbname = name;
    return db;
}

std::shared_ptr<pool::Pool> ClientSession::pool_for(const config::DatabaseConfig& db, const std::string& user,
                                                    const std::string& backend) {
    auto& rt = worker_.runtime();
    std::optional<auth::Credential> queried;
    if (auth_query_creds_) {
        if (auto q = auth_query_creds_->find(db.user.empty() ? user : db.user); q != auth_query_creds_->end())
            queried = q->second;
    }
    auto p = rt.pools->get_or_create(
        db.name, user, [&](pool::Pool& pool) { pool::apply_config(pool, *snap_, db, queried); }, backend);
    // auth_query found a (possibly changed) secret: servers must log in with it.
    if (queried && (!p->target()->credential || p->target()->credential->secret != queried->secret))
        pool::apply_config(*p, *snap_, db, queried);
    return p;
}

Task<ClientSession::AuthLookup> ClientSession::lookup_auth_query(Clock::time_point deadline) {
    AuthLookup out;
    auto& cfg = *snap_->config;
    auto db = resolve_database(cfg, database_);
    if (!db) co_return out;
    std::string auth_user = !db->auth_user.empty() ? db->auth_user : cfg.settings.auth_user;
    if (auth_user.empty()) co_return out;
    // The client's database decides the query, also when auth_dbname runs it elsewhere.
    std::string sql = !db->auth_query.empty() ? db->auth_query : cfg.settings.auth_query;
    // auth_dbname: the lookup runs in that database, not the one the client asked for.
    // A copy: `db` is replaced below while the name is still needed.
    const std::string auth_db = !db->auth_dbname.empty() ? db->auth_dbname : cfg.settings.auth_dbname;
    if (!auth_db.empty() && auth_db != db->name) {
        db = resolve_database(cfg, auth_db);
        if (!db) {
            spdlog::warn("C-{}: auth_dbname: no database named \"{}\"", id_, auth_db);
            co_return out;
        }
    }
    auto at = sql.find("$1");
    if (at != std::string::npos) sql.replace(at, 2, protocol::quote_literal(user_));
    auto p = pool_for(*db, auth_user);
    auto failed = [&](std::string_view state, std::string message) {
        out.failed = true;
        out.sqlstate = std::string(state);
        out.message = std::move(message);
        return std::move(out);
    };
    // A pooled auth_user connection may have been terminated a moment ago (its idle watch
    // not yet told): a lookup cut off that way is tried again on another connection.
    for (int attempt = 1;; ++attempt) {
        auto res = co_await p->acquire(worker_, deadline);
        if (!res.server) {
            spdlog::warn("C-{}: auth_query: cannot connect as {}: {}", id_, auth_user, res.message);
            co_return failed(sqlstate::connection_failure,
                             "could not look up user \"" + user_.str() + "\": no server connection for the lookup");
        }
        auto rows = co_await res.server->query_rows(sql, deadline);
        if (rows.ok) {
            if (rows.rows.size() == 1 && rows.rows[0].size() >= 2 && rows.rows[0][1]) {
                auto& secret = *rows.rows[0][1];
                out.cred = auth::Credential{user_, secret, auth::classify_secret(secret)};
            }
            if (res.server->txn_status() == 'I')
                p->release(worker_, std::move(res.server));
            else
                p->discard(worker_, std::move(res.server));
            break;
        }
        bool cut_off = res.server->broken() || sqlstate::server_gone(rows.sqlstate);
        res.server->mark_broken();
        p->discard(worker_, std::move(res.server));
        if (cut_off && attempt < 3 && Clock::now() < deadline) {
            spdlog::info("C-{}: auth_query: connection lost ({}), trying again", id_, rows.message);
            continue;
        }
        spdlog::warn("C-{}: auth_query failed: {}", id_, rows.message);
        if (cut_off)
            co_return failed(sqlstate::connection_failure,
                             "could not look up user \"" + user_.str() + "\": the server connection was lost");
        co_return failed(sqlstate::invalid_authorization,
                         "could not look up user \"" + user_.str() + "\": auth_query failed (see the pgrouter log)");
    }
    if (out.cred) {
        if (!auth_query_creds_) auth_query_creds_ = std::make_unique<std::map<std::string, auth::Credential>>();
        (*auth_query_creds_)[user_] = *out.cred;
    }
    co_return out;
}

std::shared_ptr<pool::Pool> ClientSession::replica_pool(const config::HostPort& addr) {
    // Per transaction in transaction mode: the session's own few pools first, so the
    // registry's lock is taken once per replica, not once per transaction.
    for (auto& [a, p] : route_->replica_pools)
        if (a == addr) return p;
    auto key = routing::to_string(addr);
    auto db = resolve_database(*snap_->config, database_);
    if (!db) return nullptr;
    const std::string& pool_user = db->user.empty() ? user_.str() : db->user;
    auto p = worker_.runtime().pools->get(database_, pool_user, key);
    if (!p) p = pool_for(*db, pool_user, key);
    route_->replica_pools.emplace_back(addr, p);
    return p;
}

Clock::time_point ClientSession::failover_deadline(Clock::time_point since, Clock::time_point limit) const {
    return std::min(limit, since + secs(route_->cluster->config()->failover_timeout));
}

Task<bool> ClientSession::choose_pool(Clock::time_point since, Clock::time_point limit) {
    // Per transaction: one load of the cluster's view; the config only when something waits or fails.
    if (route_->read_route) {
        if (auto r = route_->cluster->next_replica()) {
            if (auto p = replica_pool(*r)) {
                pool_ = std::move(p);
                co_return true;
            }
        }
        if (route_->cluster->config()->replica_fallback == config::ReplicaFallback::error) {
            kill(sqlstate::connection_failure, "no usable replica in cluster \"" + route_->cluster->name() + "\"");
            co_return false;
        }
    }
    pool_ = route_->primary_pool;
    // Writes go only to a primary seen out of recovery; wait for one (failover). The
    // look-again interval grows to 100 ms so that thousands of waiting clients stay cheap.
    auto step = std::chrono::milliseconds(5);
    std::optional<Clock::time_point> deadline;
    for (;;) {
        auto v = route_->cluster->view();
        if (v->writable) break;
        if (!deadline) deadline = failover_deadline(since, limit);
        if (Clock::now() >= *deadline || closing_) {
            kill(sqlstate::connection_failure,
                 "no writable primary in cluster \"" + route_->cluster->name() + "\": " + v->hold_reason);
            co_return false;
        }
        Timer t(worker_.ctx(), step);
        co_await t.async_wait(token);
        step = std::min(step * 2, std::chrono::milliseconds(100));
    }
    co_return true;
}

Task<bool> ClientSession::attach(Clock::time_point deadline) {
    auto& rt = worker_.runtime();
    auto& cfg = *snap_->config;
    auto& st = cfg.settings;
    if (admin::is_admin_database(database_)) {
        auto listed = [&](const std::vector<std::string>& v) { return std::find(v.begin(), v.end(), user_) != v.end(); };
        bool full = login_->console_admin || listed(st.admin_users);
        if (!full && !login_->console_any_user && !listed(st.stats_users)) {
            co_await fail(sqlstate::invalid_authorization, "not allowed");
            co_return false;
        }
        auto key = auth::random_bytes(4);
        std::memcpy(&cancel_key_, key.data(), 4);
        logged_in_ = true;
        co_await admin::run_console(worker_, client_,
                                    admin::ConsoleClient{id_, cancel_key_, user_, database_, full},
                                    std::move(login_->buf));
        co_return false;
    }
    auto db = resolve_database(cfg, database_);
    if (!db) {
        co_await fail(sqlstate::invalid_catalog_name, "no such database: " + database_);
        co_return false;
    }
    if (rt.is_disabled(database_)) {
        co_await fail(sqlstate::connection_failure, "database \"" + database_ + "\" is disabled");
        co_return false;
    }
    {
        int db_max = db->max_db_client_connections >= 0 ? db->max_db_client_connections : st.max_db_client_connections;
        int user_max = st.max_user_client_connections;
        if (auto u = cfg.users.find(user_); u != cfg.users.end() && u->second.max_user_client_connections >= 0)
            user_max = u->second.max_user_client_connections;
        if (auto limit = rt.admit_client(database_, user_, db_max, user_max)) {
            co_await fail(sqlstate::too_many_connections, std::string("no more connections allowed (") + limit + ")");
            co_return false;
        }
        client_counted_ = true;
    }
    pool_mode_ = static_cast<int>(config::effective_pool_mode(cfg, *db, user_));
    // A database with a forced user has one pool, whoever the client is (as PgBouncer):
    // its pool_size bounds the servers of all its clients together.
    pool_ = pool_for(*db, db->user.empty() ? user_.str() : db->user);
    pool_->add_client();  // counted out in ~ClientSession
    pool_counted_ = true;
    if (!db->cluster.empty()) {
        route_ = std::make_unique<Routing>();
        route_->cluster = rt.cluster(db->cluster);
        if (!route_->cluster) {
            co_await fail(sqlstate::connection_failure, "cluster \"" + db->cluster + "\" is not running");
            co_return false;
        }
        route_->primary_pool = pool_;
        route_->read_route = db->route == config::Route::replica || (db->route == config::Route::auto_ && read_only_intent_);
        // Route now when the login needs a server: the pool's first client learns the
        // server's parameters from a real login, and a read-only session must see its
        // replica's (in_hot_standby). A write session of a pool that knows them logs in
        // at once, as PgBouncer's clients do, and waits out a failover at its first
        // transaction (not inside a login that the application may time out).
        if (route_->read_route || !pool_->welcome()) {
            if (!co_await choose_pool(Clock::now(), Clock::time_point::max())) co_return false;
            route_->prerouted = true;
        }
    }
    // Named prepared statements survive server changes only if we rename them.
    bool track = pool_mode_ != static_cast<int>(config::PoolMode::session) && st.max_prepared_statements > 0;
    track_ = track;
    if (act_) {
        act_->fscan.set_capture(track);
        act_->bscan.set_watch(track);
    }
    // The client's SCRAM keys log in as the client's user only (not as a forced user).
    if (scram_keys_ && (db->user.empty() || db->user == user_.str()))
        pool_->set_scram_keys(scram_keys_->first, scram_keys_->second);

    if (rt.client_count.load() > st.max_client_conn) {
        co_await fail(sqlstate::too_many_connections, "no more connections allowed (max_client_conn)");
        co_return false;
    }
    // The first client of a pool learns the server's parameters from a real login,
    // which also reports a server that refuses us before the client goes on.
    if (!pool_->welcome()) {
        auto res = co_await pool_->acquire(worker_, std::max(deadline, Clock::now() + secs(st.server_connect_timeout)));
        if (!res.server) {
            co_await fail(res.sqlstate.empty() ? sqlstate::connection_failure : std::string_view(res.sqlstate),
                          res.message);
            co_return false;
        }
        if (!pool_->welcome()) pool_->set_welcome(res.server->login_params());
        pool_->release(worker_, std::move(res.server));
    }
    auto welcome = pool_->welcome().value_or(std::vector<std::pair<std::string, std::string>>{});
    // Parameters the client did not set take the server's login values.
    for (auto& [k, v] : welcome)
        if (auto i = tracked_index(k); i && !client_params_.has(*i)) client_params_.set(*i, v);
    client_params_.share();  // idle clients with the same values keep them once

    std::string out;
    proto::write_auth_ok(out);
    if (login_->requested_minor > 0 || !login_->unrecognized_options.empty())
        proto::write_negotiate_protocol_version(out, 0, login_->unrecognized_options);
    for (auto& [k, v] : welcome) {
        auto i = tracked_index(k);
        auto mine = i ? client_params_.get(*i) : std::nullopt;
        proto::write_parameter_status(out, k, mine ? *mine : std::string_view(v));
    }
    for (std::size_t i = 0; i < kTrackedParams.size(); ++i) {
        bool in_welcome = std::any_of(welcome.begin(), welcome.end(),
                                      [&](auto& kv) { return tracked_index(kv.first) == i; });
        if (!in_welcome && client_params_.has(i))
            proto::write_parameter_status(out, kTrackedParams[i], *client_params_.get(i));
    }
    auto key = auth::random_bytes(4);
    std::memcpy(&cancel_key_, key.data(), 4);
    proto::write_backend_key_data(out, static_cast<std::uint32_t>(id_), cancel_key_);
    if (!st.login_notify_message.empty())
        proto::write_notice_response(out, "00000", st.login_notify_message);
    proto::write_ready_for_query(out, 'I');
    registered_cancel_ = true;
    co_await send(out);
    last_activity_ = Clock::now();
    logged_in_ = true;
    co_return !client_broken_;
}

}  // namespace pgrouter::session
