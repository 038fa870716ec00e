#include "pgrouter/session/cancel_registry.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/session/client_session.hpp"

#include <boost/asio/post.hpp>
#include <openssl/crypto.h>

namespace pgrouter::session {

void CancelRegistry::add(std::uint32_t pid, std::uint32_t key, app::Worker& w, std::weak_ptr<ClientSession> s) {
    std::lock_guard lk(m_);
    entries_[pid] = Entry{key, &w, std::move(s)};
}

void CancelRegistry::remove(std::uint32_t pid) {
    std::lock_guard lk(m_);
    entries_.erase(pid);
}

bool CancelRegistry::cancel(std::uint32_t pid, std::uint32_t key) {
    Entry e;
    {
        std::lock_guard lk(m_);
        auto it = entries_.find(pid);
        if (it == entries_.end()) return false;
        if (CRYPTO_memcmp(&it->second.key, &key, sizeof key) != 0) return false;
        e = it->second;
    }
    boost::asio::post(e.worker->ctx(), [s = e.session] {
        if (auto session = s.lock()) session->forward_cancel();
    });
    return true;
}

}  // namespace pgrouter::session
