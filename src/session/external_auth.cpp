#include "pgrouter/session/external_auth.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <ldap.h>
#include <security/pam_appl.h>

#include <cstdlib>
#include <cstring>
#include <functional>

namespace pgrouter::session {

namespace asio = boost::asio;

namespace {

// Two threads: a slow PAM or LDAP source delays other such logins, never the workers.
// Never destroyed, so an exit does not wait for a check that hangs.
asio::thread_pool& check_threads() {
    static auto* pool = new asio::thread_pool(2);
    return *pool;
}

// Runs `check` on the pool; resumes the awaiting coroutine on its own executor.
asio::awaitable<ExternalAuthResult> run_blocking(const std::function<ExternalAuthResult()>& check) {
    ExternalAuthResult result;
    // `check` and `result` live in this frame, which outlives the call: the coroutine
    // resumes only after the pool thread has finished with them.
    co_await asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
        [&](auto handler) {
            auto ex = asio::get_associated_executor(handler);
            asio::post(check_threads(), [&, ex, handler = std::move(handler)]() mutable {
                result = check();
                asio::post(ex, std::move(handler));
            });
        },
        asio::use_awaitable);
    co_return result;
}

// ---- PAM ---------------------------------------------------------------------------

// Answers PAM's prompts with the client's password (as PostgreSQL's pam method).
int converse(int n, const pam_message** msg, pam_response** resp, void* appdata) {
    if (n <= 0 || n > PAM_MAX_NUM_MSG) return PAM_CONV_ERR;
    auto* out = static_cast<pam_response*>(std::calloc(static_cast<std::size_t>(n), sizeof(pam_response)));
    if (!out) return PAM_BUF_ERR;
    const char* password = static_cast<const char*>(appdata);
    for (int i = 0; i < n; ++i) {
        int style = msg[i]->msg_style;
        if (style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON) {
            out[i].resp = ::strdup(password);
            if (out[i].resp) continue;
        } else if (style == PAM_ERROR_MSG || style == PAM_TEXT_INFO) {
            continue;
        }
        // A prompt we cannot answer, or no memory: give back what was answered.
        for (int j = 0; j < i; ++j) {
            if (!out[j].resp) continue;
            ::explicit_bzero(out[j].resp, std::strlen(out[j].resp));
            std::free(out[j].resp);
        }
        std::free(out);
        return PAM_CONV_ERR;
    }
    *resp = out;
    return PAM_SUCCESS;
}

ExternalAuthResult pam_blocking(const std::string& service, const std::string& user, const std::string& password,
                                const std::string& rhost) {
    pam_conv conv{&converse, const_cast<char*>(password.c_str())};
    pam_handle_t* pamh = nullptr;
    int rc = ::pam_start(service.c_str(), user.c_str(), &conv, &pamh);
    if (rc != PAM_SUCCESS) return {false, std::string("pam_start: ") + ::pam_strerror(pamh, rc)};
    if (!rhost.empty()) ::pam_set_item(pamh, PAM_RHOST, rhost.c_str());
    rc = ::pam_authenticate(pamh, PAM_SILENT);
    if (rc == PAM_SUCCESS) rc = ::pam_acct_mgmt(pamh, PAM_SILENT);
    ExternalAuthResult r{rc == PAM_SUCCESS, rc == PAM_SUCCESS ? std::string() : std::string(::pam_strerror(pamh, rc))};
    ::pam_end(pamh, rc);
    return r;
}

// ---- LDAP --------------------------------------------------------------------------

struct Ldap {
    LDAP* ld = nullptr;
    ~Ldap() {
        if (ld) ::ldap_unbind_ext_s(ld, nullptr, nullptr);
    }
};

std::string ldap_error(LDAP* ld, int rc) {
    std::string out = ::ldap_err2string(rc);
    char* diag = nullptr;
    if (ld && ::ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag) == LDAP_OPT_SUCCESS && diag) {
        if (*diag && std::strcmp(diag, "(unknown error code)") != 0) out += std::string(" (") + diag + ")";
        ::ldap_memfree(diag);
    }
    return out;
}

// A connection set up as PostgreSQL does: protocol 3, then StartTLS when asked.
bool ldap_open(const auth::LdapOptions& o, int timeout_seconds, Ldap& conn, std::string& why) {
    std::string uri = o.uri();
    int rc = ::ldap_initialize(&conn.ld, uri.c_str());
    if (rc != LDAP_SUCCESS) {
        why = "could not initialize LDAP for " + uri + ": " + ::ldap_err2string(rc);
        return false;
    }
    int version = LDAP_VERSION3;
    ::ldap_set_option(conn.ld, LDAP_OPT_PROTOCOL_VERSION, &version);
    timeval tv{timeout_seconds, 0};
    ::ldap_set_option(conn.ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ::ldap_set_option(conn.ld, LDAP_OPT_TIMEOUT, &tv);
    ::ldap_set_option(conn.ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    if (o.starttls) {
        rc = ::ldap_start_tls_s(conn.ld, nullptr, nullptr);
        if (rc != LDAP_SUCCESS) {
            why = "could not start LDAP TLS session: " + ldap_error(conn.ld, rc);
            return false;
        }
    }
    return true;
}

int simple_bind(LDAP* ld, const std::string& dn, const std::string& password) {
    berval cred{static_cast<ber_len_t>(password.size()), const_cast<char*>(password.data())};
    return ::ldap_sasl_bind_s(ld, dn.c_str(), LDAP_SASL_SIMPLE, &cred, nullptr, nullptr, nullptr);
}

ExternalAuthResult ldap_blocking(const auth::LdapOptions& o, const std::string& user, const std::string& password,
                                 int timeout_seconds) {
    std::string why;
    std::string dn;
    if (o.search_mode()) {
        if (!auth::ldap_user_name_allowed(user)) return {false, "invalid character in user name for LDAP authentication"};
        Ldap search;
        if (!ldap_open(o, timeout_seconds, search, why)) return {false, why};
        int rc = simple_bind(search.ld, o.binddn, o.bindpasswd);
        if (rc != LDAP_SUCCESS)
            return {false, "could not perform initial LDAP bind for ldapbinddn \"" + o.binddn + "\" on server \"" +
                               o.uri() + "\": " + ldap_error(search.ld, rc)};
        std::string filter = auth::ldap_filter_for(o, user);
        char no_attributes[] = "1.1";
        char* attrs[] = {no_attributes, nullptr};
        timeval tv{timeout_seconds, 0};
        LDAPMessage* res = nullptr;
        rc = ::ldap_search_ext_s(search.ld, o.basedn.c_str(), o.scope, filter.c_str(), attrs, 0, nullptr, nullptr,
                                 &tv, 2, &res);
        struct Free {
            LDAPMessage* m;
            ~Free() {
                if (m) ::ldap_msgfree(m);
            }
        } free_res{res};
        if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED)
            return {false, "could not search LDAP for filter \"" + filter + "\" on server \"" + o.uri() +
                               "\": " + ldap_error(search.ld, rc)};
        int count = ::ldap_count_entries(search.ld, res);
        if (count != 1 || rc == LDAP_SIZELIMIT_EXCEEDED)
            return {false, count == 0 ? "LDAP user \"" + user + "\" does not exist (filter \"" + filter + "\")"
                                      : "LDAP user \"" + user + "\" is not unique (filter \"" + filter + "\")"};
        char* found = ::ldap_get_dn(search.ld, ::ldap_first_entry(search.ld, res));
        if (!found) return {false, "could not get dn for the first entry matching \"" + filter + "\""};
        dn = found;
        ::ldap_memfree(found);
    } else {
        dn = o.prefix + user + o.suffix;
    }
    // A fresh connection for the user's own bind, as PostgreSQL.
    Ldap bind;
    if (!ldap_open(o, timeout_seconds, bind, why)) return {false, why};
    int rc = simple_bind(bind.ld, dn, password);
    if (rc != LDAP_SUCCESS)
        return {false, "LDAP login failed for user \"" + dn + "\" on server \"" + o.uri() + "\": " + ldap_error(bind.ld, rc)};
    return {true, {}};
}

}  // namespace

asio::awaitable<ExternalAuthResult> pam_check(const std::string& service, const std::string& user,
                                              const std::string& password, const std::string& rhost) {
    std::function<ExternalAuthResult()> check = [&] { return pam_blocking(service, user, password, rhost); };
    co_return co_await run_blocking(check);
}

asio::awaitable<ExternalAuthResult> ldap_check(const auth::LdapOptions& options, const std::string& user,
                                               const std::string& password, int timeout_seconds) {
    // An empty password would be an unauthenticated bind, which LDAP servers accept.
    if (password.empty()) co_return ExternalAuthResult{false, "empty password"};
    std::function<ExternalAuthResult()> check = [&] { return ldap_blocking(options, user, password, timeout_seconds); };
    co_return co_await run_blocking(check);
}

}  // namespace pgrouter::session
