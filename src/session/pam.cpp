#include "pgrouter/session/pam.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <security/pam_appl.h>

#include <cstdlib>
#include <cstring>

namespace pgrouter::session {

namespace asio = boost::asio;

namespace {

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

PamResult check_blocking(const std::string& service, const std::string& user, const std::string& password,
                         const std::string& rhost) {
    pam_conv conv{&converse, const_cast<char*>(password.c_str())};
    pam_handle_t* pamh = nullptr;
    int rc = ::pam_start(service.c_str(), user.c_str(), &conv, &pamh);
    if (rc != PAM_SUCCESS) return {false, std::string("pam_start: ") + ::pam_strerror(pamh, rc)};
    if (!rhost.empty()) ::pam_set_item(pamh, PAM_RHOST, rhost.c_str());
    rc = ::pam_authenticate(pamh, PAM_SILENT);
    if (rc == PAM_SUCCESS) rc = ::pam_acct_mgmt(pamh, PAM_SILENT);
    PamResult r{rc == PAM_SUCCESS, rc == PAM_SUCCESS ? std::string() : std::string(::pam_strerror(pamh, rc))};
    ::pam_end(pamh, rc);
    return r;
}

// Two threads: a slow PAM source delays other PAM logins, never the workers.
// Never destroyed, so an exit does not wait for a PAM call that hangs.
asio::thread_pool& pam_threads() {
    static auto* pool = new asio::thread_pool(2);
    return *pool;
}

}  // namespace

asio::awaitable<PamResult> pam_check(const std::string& service, const std::string& user,
                                     const std::string& password, const std::string& rhost) {
    PamResult result;
    // The strings and `result` live in this frame, which outlives the check: the
    // coroutine resumes only after the pool thread has finished with them.
    co_await asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
        [&](auto handler) {
            auto ex = asio::get_associated_executor(handler);
            asio::post(pam_threads(), [&, ex, handler = std::move(handler)]() mutable {
                result = check_blocking(service, user, password, rhost);
                asio::post(ex, std::move(handler));
            });
        },
        asio::use_awaitable);
    co_return result;
}

}  // namespace pgrouter::session
