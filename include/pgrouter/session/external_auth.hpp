// Password checks by an outside authority: PAM (auth_type = "pam") and an LDAP server
// (auth_type = "ldap", hba "ldap" lines). Both libraries block (PAM modules read
// files, run helpers or ask LDAP; libldap's synchronous calls wait for the network),
// so the checks run on a small thread pool of their own and the worker that awaits
// one keeps serving its other clients.
#pragma once

#include "pgrouter/util/task.hpp"
#include "pgrouter/auth/auth.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <string>

namespace pgrouter::session {

struct ExternalAuthResult {
    bool ok = false;
    std::string reason;  // for the log when not ok (never the password)
};

// Set while a check is awaited: calling it ends the wait at once (the check is then
// abandoned as at the deadline). For a session killed while its login waits.
using CheckCanceller = std::function<void()>;

// pam_authenticate then pam_acct_mgmt for `user` under `service`, answering every
// prompt with `password`; `rhost` (the client's address) is given as PAM_RHOST.
// Resumes on the awaiting coroutine's executor, at the latest at `deadline` (the
// client's login deadline: the check is then abandoned, or never started if queued),
// or when *cancel (set during the wait) is called.
Task<ExternalAuthResult> pam_check(const std::string& service, const std::string& user,
                                                     const std::string& password, const std::string& rhost,
                                                     std::chrono::steady_clock::time_point deadline,
                                                     CheckCanceller* cancel = nullptr);

// PostgreSQL's LDAP authentication: a simple bind as prefix + user + suffix, or a
// search for the user's entry (bound as binddn, or anonymously) and a bind as it.
// Each LDAP operation is bounded by `timeout_seconds`, the whole by `deadline` (as PAM's).
Task<ExternalAuthResult> ldap_check(const auth::LdapOptions& options, const std::string& user,
                                                      const std::string& password,
                                                      std::chrono::steady_clock::time_point deadline,
                                                      CheckCanceller* cancel = nullptr, int timeout_seconds = 10);

// Called once the workers have stopped, before their event loops are destroyed: a
// check still running then drops its answer instead of posting it to a dead loop.
void stop_external_checks();

}  // namespace pgrouter::session
