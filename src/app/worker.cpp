#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/session/cancel_registry.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <spdlog/spdlog.h>

namespace pgrouter::app {

BufferPool::Lease BufferPool::get() {
    if (free_.empty()) return Lease(this, new char[kSize]);
    char* d = free_.back();
    free_.pop_back();
    return Lease(this, d);
}

void BufferPool::put(char* d) {
    if (free_.size() < 256)
        free_.push_back(d);
    else
        delete[] d;
}

BufferPool::~BufferPool() {
    for (char* d : free_) delete[] d;
}

Worker::Worker(Runtime& rt, int index) : rt_(rt), index_(index) {}

void Worker::start() {
    thread_ = std::thread([this] {
        auto guard = asio::make_work_guard(ctx_);
        for (;;) {
            try {
                ctx_.run();
                break;
            } catch (const std::exception& e) {
                spdlog::error("worker {}: unhandled exception: {}", index_, e.what());
            }
        }
    });
}

void Worker::join() {
    if (thread_.joinable()) thread_.join();
}

Runtime::Runtime()
    : pools(std::make_unique<pool::PoolRegistry>(*this)), cancels(std::make_unique<session::CancelRegistry>(*this)) {}
const char* Runtime::admit_client(const std::string& db, const std::string& user, int db_max, int user_max) {
    std::lock_guard lk(clients_m_);
    int& d = db_clients_[db];
    int& u = user_clients_[user];
    const char* refused = db_max > 0 && d >= db_max       ? "max_db_client_connections"
                          : user_max > 0 && u >= user_max ? "max_user_client_connections"
                                                          : nullptr;
    if (!refused) {
        ++d;
        ++u;
    } else {
        if (d == 0) db_clients_.erase(db);  // made by the lookup above
        if (u == 0) user_clients_.erase(user);
    }
    return refused;
}

void Runtime::leave_client(const std::string& db, const std::string& user) {
    std::lock_guard lk(clients_m_);
    auto drop = [](std::map<std::string, int>& m, const std::string& k) {
        auto it = m.find(k);
        if (it != m.end() && --it->second <= 0) m.erase(it);
    };
    drop(db_clients_, db);
    drop(user_clients_, user);
}

void Runtime::set_paused(const std::string& db, bool on) {
    std::lock_guard lk(control_m_);
    if (db == "*" && !on)
        for (auto& [k, v] : control_) v.first = false;
    control_[db].first = on;
    int n = 0;
    for (auto& [k, v] : control_) n += v.first || v.second;
    any_control_.store(n);
}

void Runtime::set_disabled(const std::string& db, bool on) {
    std::lock_guard lk(control_m_);
    control_[db].second = on;
    int n = 0;
    for (auto& [k, v] : control_) n += v.first || v.second;
    any_control_.store(n);
}

bool Runtime::is_paused(const std::string& db) const {
    if (any_control_.load() == 0) return false;
    std::lock_guard lk(control_m_);
    auto all = control_.find("*");
    if (all != control_.end() && all->second.first) return true;
    auto it = control_.find(db);
    return it != control_.end() && it->second.first;
}

bool Runtime::is_disabled(const std::string& db) const {
    if (any_control_.load() == 0) return false;
    std::lock_guard lk(control_m_);
    auto it = control_.find(db);
    return it != control_.end() && it->second.second;
}

Runtime::~Runtime() {
    // Sockets must go before the io_context they belong to: idle servers first,
    // then each worker's context (destroying the sessions parked in it), while
    // the registries the sessions touch on their way out still exist.
    if (pools)
        for (auto& p : pools->all()) p->drop_idle();
    workers.clear();
}

}  // namespace pgrouter::app
