// Finds the client a CancelRequest names (by the BackendKeyData pgrouter gave it)
// and has it forward the cancel. No table is kept: each worker looks through its
// own sessions when a cancel arrives (cancels are rare, clients are many, and an
// entry per client cost every idle client 64 bytes), as PgBouncer searches its
// client lists.
#pragma once

#include <cstdint>

namespace pgrouter::app {
class Runtime;
}

namespace pgrouter::session {

class CancelRegistry {
public:
    explicit CancelRegistry(app::Runtime& rt) : rt_(rt) {}
    // Posts the search to every worker; the logged-in client with this pid and key,
    // if any, forwards the cancel to its server.
    void cancel(std::uint32_t pid, std::uint32_t key);

private:
    app::Runtime& rt_;
};

}  // namespace pgrouter::session
