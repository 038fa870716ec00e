#include "pgrouter/session/cancel_registry.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/session/client_session.hpp"

#include <boost/asio/post.hpp>
#include <openssl/crypto.h>

namespace pgrouter::session {

void CancelRegistry::cancel(std::uint32_t pid, std::uint32_t key) {
    for (auto& w : rt_.workers) {
        boost::asio::post(w->ctx(), [worker = w.get(), pid, key] {
            for (auto& weak : worker->sessions()) {
                auto s = weak.lock();
                if (!s || !s->cancelable() || static_cast<std::uint32_t>(s->id()) != pid) continue;
                std::uint32_t mine = s->cancel_key();
                if (CRYPTO_memcmp(&mine, &key, sizeof key) == 0) s->forward_cancel();
                return;  // ids are unique: no other session has this pid
            }
        });
    }
}

}  // namespace pgrouter::session
