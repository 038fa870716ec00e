// auth_type = "pam": a client's cleartext password checked by PAM. PAM modules
// block (files, LDAP, a forked helper), so the check runs on a small thread pool
// of its own and the worker that awaits it keeps serving its other clients.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <string>

namespace pgrouter::session {

struct PamResult {
    bool ok = false;
    std::string reason;  // PAM's pam_strerror when not ok
};

// pam_authenticate then pam_acct_mgmt for `user` under `service`, answering every
// prompt with `password`; `rhost` (the client's address) is given as PAM_RHOST.
// Resumes on the awaiting coroutine's executor.
boost::asio::awaitable<PamResult> pam_check(const std::string& service, const std::string& user,
                                            const std::string& password, const std::string& rhost);

}  // namespace pgrouter::session
