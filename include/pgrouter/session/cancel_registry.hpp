// Maps the BackendKeyData pgrouter gave each client to that client's session.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace pgrouter::app {
class Worker;
}

namespace pgrouter::session {

class ClientSession;

class CancelRegistry {
public:
    void add(std::uint32_t pid, std::uint32_t key, app::Worker& w, std::weak_ptr<ClientSession> s);
    void remove(std::uint32_t pid);
    // When pid and key match a live session, posts the cancel to its worker.
    bool cancel(std::uint32_t pid, std::uint32_t key);

private:
    struct Entry {
        std::uint32_t key;
        app::Worker* worker;
        std::weak_ptr<ClientSession> session;
    };
    std::mutex m_;
    std::unordered_map<std::uint32_t, Entry> entries_;
};

}  // namespace pgrouter::session
