#include "pgrouter/session/external_auth.hpp"
#include "pgrouter/util/task.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <dlfcn.h>
#include <ldap.h>
#include <security/pam_appl.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>

namespace pgrouter::session {

namespace asio = boost::asio;

namespace {

// Two threads: a slow PAM or LDAP source delays other such logins, never the workers.
// Never destroyed, so an exit does not wait for a check that hangs.
asio::thread_pool& check_threads() {
    static auto* pool = new asio::thread_pool(2);
    return *pool;
}

// Answers go to the awaiting worker's event loop only while those loops exist:
// stop_external_checks() closes the gate before they are destroyed.
struct AnswerGate {
    std::mutex mutex;
    bool open = true;
};
AnswerGate& answer_gate() {
    static auto* gate = new AnswerGate;  // never destroyed: check threads may outlive main
    return *gate;
}

// Runs `check` on the pool and waits for it until `deadline` (the client's login
// deadline): a check that has not answered by then is abandoned (its answer, when it
// comes, is dropped), and one still queued then is never started. `check` owns what
// it uses: the awaiting coroutine may be gone when it runs.
Task<ExternalAuthResult> run_blocking(std::function<ExternalAuthResult()> check,
                                                 std::chrono::steady_clock::time_point deadline,
                                                 CheckCanceller* cancel) {
    auto ex = co_await asio::this_coro::executor;
    // Shared with the check thread, which may drop its reference after the workers'
    // event loops are gone: so no I/O object in here (the timer stays in this frame).
    struct Pending {
        ExternalAuthResult result;
        bool done = false;                   // worker thread only
        Timer* timer = nullptr;  // this frame's, while `abandoned` is false
        std::atomic<bool> abandoned{false};
    };
    auto pending = std::make_shared<Pending>();
    Timer timer(ex, deadline);  // woken by the answer, or expiring at the deadline
    pending->timer = &timer;
    // However this frame ends (answer, deadline, or destroyed with its event loop), a
    // later answer must not touch it.
    struct Abandon {
        Pending& p;
        CheckCanceller* cancel;
        ~Abandon() {
            p.abandoned = true;
            if (cancel) *cancel = nullptr;
        }
    } abandon{*pending, cancel};
    if (cancel) *cancel = [&timer] { timer.cancel(); };
    asio::post(check_threads(), [pending, ex, check = std::move(check)] {
        ExternalAuthResult r = pending->abandoned.load() ? ExternalAuthResult{false, "abandoned"} : check();
        auto& gate = answer_gate();
        std::lock_guard lock(gate.mutex);
        if (!gate.open) return;  // pgrouter is stopping: no event loop to answer to
        asio::post(ex, [pending, r = std::move(r)]() mutable {
            // Runs on the awaiting worker's thread, as the frame's own code: no race.
            if (pending->abandoned.load()) return;
            pending->result = std::move(r);
            pending->done = true;
            pending->timer->cancel();
        });
    });
    co_await timer.async_wait(task_token);
    if (!pending->done) {
        if (std::chrono::steady_clock::now() < deadline)
            co_return ExternalAuthResult{false, "the login ended while the check was running"};
        co_return ExternalAuthResult{false, "no answer before client_login_timeout"};
    }
    co_return std::move(pending->result);
}

// ---- the libraries, loaded at first use ----------------------------------------------
// libpam and libldap (with GnuTLS and SASL behind it) are opened only when a login
// needs them: a pgrouter that authenticates otherwise never maps them (about 3 MB of
// resident pages), and starts on a machine that lacks them.

template <typename F>
bool bind_symbol(void* lib, const char* name, F*& fn, std::string& why) {
    fn = reinterpret_cast<F*>(::dlsym(lib, name));
    if (!fn && why.empty()) {
        why = "symbol ";
        why.append(name).append(" not found");
    }
    return fn != nullptr;
}

void* open_library(std::initializer_list<const char*> names, std::string& why) {
    for (const char* name : names)
        if (void* lib = ::dlopen(name, RTLD_NOW | RTLD_LOCAL)) return lib;
    const char* err = ::dlerror();
    why = "cannot load ";
    why.append(*names.begin());
    if (err) why.append(": ").append(err);
    return nullptr;
}

struct PamApi {
    decltype(&::pam_start) start;
    decltype(&::pam_set_item) set_item;
    decltype(&::pam_authenticate) authenticate;
    decltype(&::pam_acct_mgmt) acct_mgmt;
    decltype(&::pam_strerror) strerror;
    decltype(&::pam_end) end;
};

struct LdapApi {
    decltype(&::ldap_initialize) initialize;
    decltype(&::ldap_set_option) set_option;
    decltype(&::ldap_get_option) get_option;
    decltype(&::ldap_start_tls_s) start_tls_s;
    decltype(&::ldap_sasl_bind_s) sasl_bind_s;
    decltype(&::ldap_search_ext_s) search_ext_s;
    decltype(&::ldap_count_entries) count_entries;
    decltype(&::ldap_first_entry) first_entry;
    decltype(&::ldap_get_dn) get_dn;
    decltype(&::ldap_memfree) memfree;
    decltype(&::ldap_msgfree) msgfree;
    decltype(&::ldap_unbind_ext_s) unbind_ext_s;
    decltype(&::ldap_err2string) err2string;
};

template <typename Api>
struct Loaded {
    std::optional<Api> api;
    std::string why;  // when not loaded
};

const Loaded<PamApi>& pam_library() {
    static const Loaded<PamApi> loaded = [] {
        Loaded<PamApi> l;
        void* lib = open_library({"libpam.so.0", "libpam.so"}, l.why);
        if (!lib) return l;
        PamApi a{};
        if (bind_symbol(lib, "pam_start", a.start, l.why) && bind_symbol(lib, "pam_set_item", a.set_item, l.why) &&
            bind_symbol(lib, "pam_authenticate", a.authenticate, l.why) &&
            bind_symbol(lib, "pam_acct_mgmt", a.acct_mgmt, l.why) &&
            bind_symbol(lib, "pam_strerror", a.strerror, l.why) && bind_symbol(lib, "pam_end", a.end, l.why))
            l.api = a;
        return l;
    }();
    return loaded;
}

const Loaded<LdapApi>& ldap_library() {
    static const Loaded<LdapApi> loaded = [] {
        Loaded<LdapApi> l;
        void* lib = open_library({"libldap-2.5.so.0", "libldap.so.2", "libldap-2.4.so.2", "libldap.so"}, l.why);
        if (!lib) return l;
        LdapApi a{};
        if (bind_symbol(lib, "ldap_initialize", a.initialize, l.why) &&
            bind_symbol(lib, "ldap_set_option", a.set_option, l.why) &&
            bind_symbol(lib, "ldap_get_option", a.get_option, l.why) &&
            bind_symbol(lib, "ldap_start_tls_s", a.start_tls_s, l.why) &&
            bind_symbol(lib, "ldap_sasl_bind_s", a.sasl_bind_s, l.why) &&
            bind_symbol(lib, "ldap_search_ext_s", a.search_ext_s, l.why) &&
            bind_symbol(lib, "ldap_count_entries", a.count_entries, l.why) &&
            bind_symbol(lib, "ldap_first_entry", a.first_entry, l.why) &&
            bind_symbol(lib, "ldap_get_dn", a.get_dn, l.why) && bind_symbol(lib, "ldap_memfree", a.memfree, l.why) &&
            bind_symbol(lib, "ldap_msgfree", a.msgfree, l.why) &&
            bind_symbol(lib, "ldap_unbind_ext_s", a.unbind_ext_s, l.why) &&
            bind_symbol(lib, "ldap_err2string", a.err2string, l.why))
            l.api = a;
        return l;
    }();
    return loaded;
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
    auto& lib = pam_library();
    if (!lib.api) return {false, "PAM is not available: " + lib.why};
    const PamApi& pam = *lib.api;
    pam_conv conv{&converse, const_cast<char*>(password.c_str())};
    pam_handle_t* pamh = nullptr;
    int rc = pam.start(service.c_str(), user.c_str(), &conv, &pamh);
    if (rc != PAM_SUCCESS) return {false, std::string("pam_start: ") + pam.strerror(pamh, rc)};
    if (!rhost.empty()) pam.set_item(pamh, PAM_RHOST, rhost.c_str());
    rc = pam.authenticate(pamh, PAM_SILENT);
    if (rc == PAM_SUCCESS) rc = pam.acct_mgmt(pamh, PAM_SILENT);
    ExternalAuthResult r{rc == PAM_SUCCESS, rc == PAM_SUCCESS ? std::string() : std::string(pam.strerror(pamh, rc))};
    pam.end(pamh, rc);
    return r;
}

// ---- LDAP --------------------------------------------------------------------------

// Only called once ldap_blocking has seen the library loaded.
const LdapApi& api() { return *ldap_library().api; }

struct Ldap {
    LDAP* ld = nullptr;
    ~Ldap() {
        if (ld) api().unbind_ext_s(ld, nullptr, nullptr);
    }
};

std::string ldap_error(LDAP* ld, int rc) {
    std::string out = api().err2string(rc);
    char* diag = nullptr;
    if (ld && api().get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag) == LDAP_OPT_SUCCESS && diag) {
        if (*diag && std::strcmp(diag, "(unknown error code)") != 0) out += std::string(" (") + diag + ")";
        api().memfree(diag);
    }
    return out;
}

// A connection set up as PostgreSQL does: protocol 3, then StartTLS when asked.
bool ldap_open(const auth::LdapOptions& o, int timeout_seconds, Ldap& conn, std::string& why) {
    std::string uri = o.uri();
    int rc = api().initialize(&conn.ld, uri.c_str());
    if (rc != LDAP_SUCCESS) {
        why = "could not initialize LDAP for " + uri + ": " + api().err2string(rc);
        return false;
    }
    int version = LDAP_VERSION3;
    api().set_option(conn.ld, LDAP_OPT_PROTOCOL_VERSION, &version);
    timeval tv{timeout_seconds, 0};
    api().set_option(conn.ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    api().set_option(conn.ld, LDAP_OPT_TIMEOUT, &tv);
    api().set_option(conn.ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    if (o.starttls) {
        rc = api().start_tls_s(conn.ld, nullptr, nullptr);
        if (rc != LDAP_SUCCESS) {
            why = "could not start LDAP TLS session: " + ldap_error(conn.ld, rc);
            return false;
        }
    }
    return true;
}

int simple_bind(LDAP* ld, const std::string& dn, const std::string& password) {
    berval cred{static_cast<ber_len_t>(password.size()), const_cast<char*>(password.data())};
    return api().sasl_bind_s(ld, dn.c_str(), LDAP_SASL_SIMPLE, &cred, nullptr, nullptr, nullptr);
}

ExternalAuthResult ldap_blocking(const auth::LdapOptions& o, const std::string& user, const std::string& password,
                                 int timeout_seconds) {
    if (auto& lib = ldap_library(); !lib.api) return {false, "LDAP is not available: " + lib.why};
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
        rc = api().search_ext_s(search.ld, o.basedn.c_str(), o.scope, filter.c_str(), attrs, 0, nullptr, nullptr,
                                 &tv, 2, &res);
        struct Free {
            LDAPMessage* m;
            ~Free() {
                if (m) api().msgfree(m);
            }
        } free_res{res};
        if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED)
            return {false, "could not search LDAP for filter \"" + filter + "\" on server \"" + o.uri() +
                               "\": " + ldap_error(search.ld, rc)};
        int count = api().count_entries(search.ld, res);
        if (count != 1 || rc == LDAP_SIZELIMIT_EXCEEDED)
            return {false, count == 0 ? "LDAP user \"" + user + "\" does not exist (filter \"" + filter + "\")"
                                      : "LDAP user \"" + user + "\" is not unique (filter \"" + filter + "\")"};
        char* found = api().get_dn(search.ld, api().first_entry(search.ld, res));
        if (!found) return {false, "could not get dn for the first entry matching \"" + filter + "\""};
        dn = found;
        api().memfree(found);
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

void stop_external_checks() {
    auto& gate = answer_gate();
    std::lock_guard lock(gate.mutex);
    gate.open = false;
}

Task<ExternalAuthResult> pam_check(const std::string& service, const std::string& user,
                                              const std::string& password, const std::string& rhost,
                                              std::chrono::steady_clock::time_point deadline,
                                              CheckCanceller* cancel) {
    std::function<ExternalAuthResult()> check = [service, user, password, rhost] {
        return pam_blocking(service, user, password, rhost);
    };
    co_return co_await run_blocking(std::move(check), deadline, cancel);
}

Task<ExternalAuthResult> ldap_check(const auth::LdapOptions& options, const std::string& user,
                                               const std::string& password,
                                               std::chrono::steady_clock::time_point deadline,
                                               CheckCanceller* cancel, int timeout_seconds) {
    // An empty password would be an unauthenticated bind, which LDAP servers accept.
    if (password.empty()) co_return ExternalAuthResult{false, "empty password"};
    std::function<ExternalAuthResult()> check = [options, user, password, timeout_seconds] {
        return ldap_blocking(options, user, password, timeout_seconds);
    };
    co_return co_await run_blocking(std::move(check), deadline, cancel);
}

}  // namespace pgrouter::session
