#include "pgrouter/pool/pool.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/session/errors.hpp"
#include "pgrouter/session/server_connection.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

namespace pgrouter::pool {

namespace {
constexpr auto token = task_token;
Clock::duration secs(double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); }
}  // namespace

// A client waiting for a server. Lives on its worker; other threads reach it by posting.
struct Pool::Waiter {
    explicit Waiter(app::Worker& w) : worker(&w), timer(w.ctx()), since(Clock::now()) {}
    app::Worker* worker;
    Timer timer;
    Clock::time_point since;
    std::unique_ptr<ServerConnection> server;  // delivered server
    bool slot = false;                         // or: permission to connect a new one
    bool abandoned = false;                    // timed out; deliveries go back to the pool
    bool reserve_granted = false;
    const bool* stop = nullptr;                // the caller gives up when true
};

namespace {
constexpr std::size_t kSpareWaiters = 64;
}  // namespace

std::vector<std::shared_ptr<Pool::Waiter>>& Pool::spare_waiters() {
    thread_local std::vector<std::shared_ptr<Waiter>> spares;
    return spares;
}

std::shared_ptr<Pool::Waiter> Pool::make_waiter(app::Worker& w) {
    auto& spares = spare_waiters();
    while (!spares.empty()) {
        auto waiter = std::move(spares.back());
        spares.pop_back();
        if (waiter->worker != &w) continue;  // a thread runs one worker; be safe anyway
        waiter->since = Clock::now();
        return waiter;
    }
    return std::make_shared<Waiter>(w);
}

void Pool::recycle(std::shared_ptr<Waiter>&& waiter, app::Worker& w) {
    // Only a waiter nobody else holds (no delivery or grant on its way) and left clean.
    if (!waiter || waiter.use_count() != 1 || waiter->worker != &w || waiter->server || waiter->abandoned ||
        spare_waiters().size() >= kSpareWaiters)
        return;
    waiter->slot = false;
    waiter->reserve_granted = false;
    spare_waiters().push_back(std::move(waiter));
}

bool Limit::try_acquire() {
    int m = max.load();
    int c = count.fetch_add(1);
    if (m > 0 && c >= m) {
        count.fetch_sub(1);
        return false;
    }
    return true;
}

Pool::Pool(app::Runtime& rt, std::string database, std::string user, std::shared_ptr<Limit> db_limit,
           std::shared_ptr<Limit> user_limit, std::string backend)
    : rt_(rt), database_(std::move(database)), user_(std::move(user)), backend_(std::move(backend)),
      db_limit_(std::move(db_limit)),
      user_limit_(std::move(user_limit)) {
    for (std::size_t i = 0; i < rt_.workers.size(); ++i) shards_.push_back(std::make_unique<Shard>());
}

Pool::~Pool() = default;

void Pool::configure(const Settings& s, std::shared_ptr<const Target> target) {
    std::lock_guard lk(m_);
    settings_ = s;
    settings_ptr_.store(std::make_shared<const Settings>(s));
    lifetime_.store(s.server_lifetime);
    wait_timeout_.store(s.query_wait_timeout);
    auto old = target_.load();
    if (!old || old->generation != target->generation) last_failure_.reset();  // never carried to a new target
    // The values new clients are shown come from the server's login: when what a login
    // asks for changes, the next client login learns them afresh.
    if (old && (old->startup_params != target->startup_params || old->connect_query != target->connect_query))
        welcome_.reset();
    generation_.store(target->generation);
    target_.store(std::move(target));
}

Settings Pool::settings() const { return *settings_ptr_.load(); }

std::optional<std::vector<std::pair<std::string, std::string>>> Pool::welcome() const {
    std::lock_guard lk(m_);
    return welcome_;
}
void Pool::set_welcome(std::vector<std::pair<std::string, std::string>> w) {
    std::lock_guard lk(m_);
    if (!welcome_) welcome_ = std::move(w);
}
void Pool::set_scram_keys(auth::Bytes ck, auth::Bytes sk) {
    std::lock_guard lk(m_);
    scram_keys_ = std::make_pair(std::move(ck), std::move(sk));
}
std::optional<std::pair<auth::Bytes, auth::Bytes>> Pool::scram_keys() const {
    std::lock_guard lk(m_);
    return scram_keys_;
}

Pool::Counts Pool::counts() const {
    Counts c;
    std::lock_guard lk(m_);
    c.total = total_;
    c.waiting = static_cast<int>(waiters_.size());
    for (auto& sh : shards_) c.idle += sh->idle_count.load();
    if (!waiters_.empty())
        c.max_wait_seconds = std::chrono::duration<double>(Clock::now() - waiters_.front()->since).count();
    return c;
}

stats::Totals Pool::totals() const {
    stats::Totals t;
    for (auto& sh : shards_) t.add(sh->counters);
    return t;
}

std::unique_ptr<ServerConnection> Pool::take_idle(Shard& sh, bool round_robin) {
    std::unique_ptr<ServerConnection> s;
    if (round_robin) {
        s = std::move(sh.idle.front());
        sh.idle.erase(sh.idle.begin());
    } else {
        s = std::move(sh.idle.back());
        sh.idle.pop_back();
    }
    sh.idle_count.fetch_sub(1);
    return s;
}

bool Pool::try_reserve_slot_locked(bool allow_reserve) {
    int cap = settings_.pool_size + (allow_reserve ? settings_.reserve_pool_size : 0);
    if (total_ >= cap) return false;
    if (!db_limit_->try_acquire()) return false;
    if (!user_limit_->try_acquire()) {
        db_limit_->release();
        return false;
    }
    ++total_;
    return true;
}

void Pool::release_slot_locked() {
    --total_;
    db_limit_->release();
    user_limit_->release();
}

bool Pool::usable(const ServerConnection& s, Clock::time_point now) const {
    if (s.broken() || !const_cast<ServerConnection&>(s).stream().is_open()) return false;
    if (s.generation() != generation_.load(std::memory_order_relaxed)) return false;
    double life = lifetime_.load(std::memory_order_relaxed);
    if (life > 0 && now - s.created() > secs(life)) return false;
    return true;
}

Task<AcquireResult> Pool::acquire(app::Worker& w, Clock::time_point deadline, const bool* stop) {
    auto self = shared_from_this();
    auto& sh = *shards_[w.index()];
    auto settings_now = settings_ptr_.load();
    const Settings& st = *settings_now;
    // Fast path: an idle server on this worker; one due for server_check_query is checked first.
    while (!sh.idle.empty()) {
        if (auto s = take_ready_idle(w)) co_return AcquireResult{std::move(s), {}, {}};
        if (sh.idle.empty()) break;
        auto s = take_idle(sh, st.round_robin);  // the one take_ready_idle() left for its check
        if (!co_await run_check(w, s, st)) continue;
        co_return AcquireResult{std::move(s), {}, {}};
    }
    std::shared_ptr<Waiter> waiter;
    struct Recycle {
        std::shared_ptr<Waiter>& waiter;
        app::Worker& w;
        ~Recycle() { Pool::recycle(std::move(waiter), w); }
    } recycle_on_exit{waiter, w};
    {
        std::lock_guard lk(m_);
        if (!try_reserve_slot_locked(false)) {
            waiter = make_waiter(w);
            waiter->stop = stop;
            waiters_.push_back(waiter);
            n_waiters_.fetch_add(1);
        }
    }
    if (!waiter) co_return co_await connect_new(w, deadline);
    offer_from_others(w);  // an idle server elsewhere is better than waiting
    for (;;) {
        waiter->timer.expires_at(deadline);
        co_await waiter->timer.async_wait(token);
        if (waiter->stop && *waiter->stop) {
            // The caller is going away (killed, shutting down): whatever reached it goes back.
            if (waiter->server) {
                release(w, std::move(waiter->server));
            } else if (waiter->slot) {
                std::lock_guard lk(m_);
                release_slot_locked();
                grant_slot_to_waiter_locked();
            } else {
                std::lock_guard lk(m_);
                auto it = std::find(waiters_.begin(), waiters_.end(), waiter);
                if (it == waiters_.end()) {
                    // A delivery or a slot is on its way to this thread: wait for it.
                    deadline = Clock::now() + std::chrono::hours(1);
                    continue;
                }
                waiters_.erase(it);
                n_waiters_.fetch_sub(1);
                waiter->abandoned = true;
            }
            waiter->slot = false;
            co_return AcquireResult{nullptr, std::string(session::sqlstate::query_canceled), "client closing"};
        }
        if (waiter->server) {
            auto s = std::move(waiter->server);
            // Straight from a release it is fresh; from another worker's idle list it
            // may have been idle long enough to need the same look as the fast path's.
            auto now = Clock::now();
            if (!vetted(w, s, st, now) || (check_due(*s, st, now) && !co_await run_check(w, s, st))) {
                // the slot went with the discard; queue again
                std::lock_guard lk(m_);
                if (try_reserve_slot_locked(false)) {
                    waiter.reset();
                } else {
                    waiter->abandoned = false;
                    waiters_.push_back(waiter);
                    n_waiters_.fetch_add(1);
                    continue;
                }
            } else {
                co_return AcquireResult{std::move(s), {}, {}};
            }
            co_return co_await connect_new(w, deadline);
        }
        if (waiter->slot) co_return co_await connect_new(w, deadline);
        if (Clock::now() >= deadline) {
            std::lock_guard lk(m_);
            auto it = std::find(waiters_.begin(), waiters_.end(), waiter);
            if (it != waiters_.end()) {
                waiters_.erase(it);
                n_waiters_.fetch_sub(1);
                waiter->abandoned = true;
                co_return AcquireResult{nullptr, std::string(session::sqlstate::query_canceled), "query_wait_timeout"};
            }
            // A delivery is on its way to this thread: wait for it.
            deadline = Clock::now() + std::chrono::hours(1);
        }
    }
}

std::unique_ptr<ServerConnection> Pool::take_ready_idle(app::Worker& w) {
    auto& sh = *shards_[w.index()];
    if (sh.idle.empty()) return nullptr;
    auto settings_now = settings_ptr_.load();
    const Settings& st = *settings_now;
    while (!sh.idle.empty()) {
        auto s = take_idle(sh, st.round_robin);
        auto now = Clock::now();
        if (!vetted(w, s, st, now)) continue;
        if (check_due(*s, st, now)) {
            // acquire() runs the check: back where take_idle() will find it next.
            if (st.round_robin)
                sh.idle.insert(sh.idle.begin(), std::move(s));
            else
                sh.idle.push_back(std::move(s));
            sh.idle_count.fetch_add(1);
            return nullptr;
        }
        return s;
    }
    return nullptr;
}

bool Pool::vetted(app::Worker& w, std::unique_ptr<ServerConnection>& s, const Settings& st, Clock::time_point now) {
    // A server idle for a while may have been terminated meanwhile: look first.
    if (usable(*s, now) &&
        !s->spoke_while_idle(st.check_idle_always || now - s->last_used() > std::chrono::milliseconds(500)))
        return true;
    s->mark_broken();
    discard(w, std::move(s));
    return false;
}

bool Pool::check_due(const ServerConnection& s, const Settings& st, Clock::time_point now) const {
    return st.server_check_delay >= 0 && now - s.last_used() > secs(st.server_check_delay);
}

Task<bool> Pool::run_check(app::Worker& w, std::unique_ptr<ServerConnection>& s, const Settings& st) {
    auto r = co_await s->query(st.server_check_query, Clock::now() + secs(std::max(1.0, st.server_connect_timeout)));
    if (r.ok && s->txn_status() == 'I') co_return true;
    s->mark_broken();
    discard(w, std::move(s));
    co_return false;
}

Task<AcquireResult> Pool::connect_new(app::Worker& w, Clock::time_point deadline) {
    auto self = shared_from_this();
    auto target = target_.load();
    Settings st = settings();
    {
        std::lock_guard lk(m_);
        if (last_failure_ && last_failure_->generation == target->generation &&
            Clock::now() - last_failure_->at < secs(st.server_login_retry)) {
            auto f = *last_failure_;
            release_slot_locked();
            grant_slot_to_waiter_locked();
            co_return AcquireResult{nullptr, f.sqlstate, f.message};
        }
    }
    auto keys = scram_keys();
    std::unique_ptr<ServerConnection> server;
    session::ServerResult result;
    // A host list: one entry per attempt (the next one, or the current one with
    // load_balance_hosts = disable); an entry that fails or does not match
    // target_session_attrs hands the attempt on to the next, each tried once.
    std::size_t n = std::max<std::size_t>(1, target->hosts.size());
    unsigned start = n == 1                                                      ? 0
                     : target->load_balance == config::LoadBalanceHosts::disable ? host_cursor_.load()
                                                                                 : host_cursor_.fetch_add(1);
    for (std::size_t k = 0; k < n && !server; ++k) {
        auto connect_deadline = std::min(deadline, Clock::now() + secs(st.server_connect_timeout));
        if (st.server_connect_timeout <= 0) connect_deadline = deadline;
        if (k > 0 && Clock::now() >= connect_deadline) break;
        if (n == 1) {
            std::tie(server, result) = co_await session::ServerConnection::connect(w, *target, keys, connect_deadline);
            break;
        }
        auto i = static_cast<unsigned>((start + k) % n);
        Target one = *target;
        one.host = target->hosts[i];
        one.hosts.clear();
        std::tie(server, result) = co_await session::ServerConnection::connect(w, one, keys, connect_deadline);
        if (server) {
            if (target->load_balance == config::LoadBalanceHosts::disable) host_cursor_.store(i);
        } else if (k + 1 < n) {
            spdlog::warn("pool {}/{}: {}; trying the next host", database_, user_, result.message);
        }
    }
    if (!server) {
        spdlog::warn("pool {}/{}: server login failed: {}", database_, user_, result.message);
        std::lock_guard lk(m_);
        last_failure_ = Failure{Clock::now(), target->generation, result.sqlstate, result.message};
        release_slot_locked();
        grant_slot_to_waiter_locked();
        co_return AcquireResult{nullptr, result.sqlstate, result.message};
    }
    {
        std::lock_guard lk(m_);
        if (last_failure_ && last_failure_->generation == target->generation) last_failure_.reset();
        if (!welcome_ && server->generation() == generation_.load()) welcome_ = server->login_params();
    }
    spdlog::debug("pool {}/{}: new server connection to {}:{} (backend pid {})", database_, user_, server->host(),
                  server->port(), server->backend_pid());
    co_return AcquireResult{std::move(server), {}, {}};
}

void Pool::wake_waiter(app::Worker& w, const bool* stop) {
    std::shared_ptr<Waiter> found;
    {
        std::lock_guard lk(m_);
        for (auto& waiter : waiters_)
            if (waiter->stop == stop && waiter->worker == &w) {
                found = waiter;
                break;
            }
    }
    // Not queued: a delivery is on its way and wakes it anyway.
    if (found) found->timer.cancel();
}

void Pool::release(app::Worker& w, std::unique_ptr<ServerConnection> s) {
    auto now = Clock::now();
    {
        if (!usable(*s, now) || s->txn_status() != 'I') {
            discard(w, std::move(s));
            return;
        }
    }
    s->touch();
    s->watch_idle();
    if (n_waiters_.load() > 0 && deliver(w, s)) return;
    auto& sh = *shards_[w.index()];
    sh.idle.push_back(std::move(s));
    sh.idle_count.fetch_add(1);
    if (n_waiters_.load() > 0) offer(w);  // a waiter queued while we were looking
}

void Pool::discard(app::Worker& w, std::unique_ptr<ServerConnection> s) {
    spdlog::debug("pool {}/{}: closing server connection to {}:{} (backend pid {})", database_, user_, s->host(),
                  s->port(), s->backend_pid());
    s->close();
    s.reset();
    std::lock_guard lk(m_);
    release_slot_locked();
    grant_slot_to_waiter_locked();
}

void Pool::grant_slot_to_waiter_locked() {
    while (!waiters_.empty()) {
        auto& front = waiters_.front();
        if (!try_reserve_slot_locked(front->reserve_granted)) return;
        auto waiter = std::move(front);
        waiters_.pop_front();
        n_waiters_.fetch_sub(1);
        asio::post(waiter->worker->ctx(), [waiter] {
            waiter->slot = true;
            waiter->timer.cancel();
        });
        return;
    }
}

bool Pool::deliver(app::Worker& w, std::unique_ptr<ServerConnection>& s) {
    std::shared_ptr<Waiter> waiter;
    {
        std::lock_guard lk(m_);
        if (waiters_.empty()) return false;
        // Prefer a waiter on this worker: moving a socket between workers costs
        // several syscalls. Look a little way down the queue, oldest first.
        auto it = waiters_.begin();
        for (auto j = waiters_.begin(); j != waiters_.end() && j - waiters_.begin() < 64; ++j) {
            if ((*j)->worker == &w) {
                it = j;
                break;
            }
        }
        waiter = std::move(*it);
        waiters_.erase(it);
        n_waiters_.fetch_sub(1);
    }
    if (waiter->worker == &w) {
        waiter->server = std::move(s);
        waiter->timer.cancel();
        return true;
    }
    s->unwatch();  // its pending read belongs to this worker (a server that spoke is now broken: the waiter discards it)
    if (!s->stream().rebind(waiter->worker->ctx())) {
        // TLS connections cannot move between workers: close it, the waiter opens its own.
        s->close();
        s.reset();
        asio::post(waiter->worker->ctx(), [waiter] {
            waiter->slot = true;
            waiter->timer.cancel();
        });
        return true;
    }
    auto self = shared_from_this();
    asio::post(waiter->worker->ctx(), [self, waiter, server = std::move(s)]() mutable {
        if (waiter->abandoned) {
            self->release(*waiter->worker, std::move(server));
            return;
        }
        waiter->server = std::move(server);
        waiter->timer.cancel();
    });
    return true;
}

void Pool::offer(app::Worker& w) {
    auto& sh = *shards_[w.index()];
    bool round_robin = settings_ptr_.load()->round_robin;
    while (n_waiters_.load() > 0 && !sh.idle.empty()) {
        auto s = take_idle(sh, round_robin);
        if (!deliver(w, s)) {
            sh.idle.push_back(std::move(s));
            sh.idle_count.fetch_add(1);
            return;
        }
    }
}

void Pool::offer_from_others(app::Worker& w) {
    auto self = shared_from_this();
    for (std::size_t i = 0; i < shards_.size(); ++i) {
        if (static_cast<int>(i) == w.index() || shards_[i]->idle_count.load() == 0) continue;
        auto& other = *rt_.workers[i];
        asio::post(other.ctx(), [self, &other] { self->offer(other); });
    }
}

void Pool::janitor(app::Worker& w) {
    auto st = settings();
    auto now = Clock::now();
    auto& sh = *shards_[w.index()];
    bool retire = retiring();
    if (retire) close_idle(w);
    // Oldest idle first (front of the LIFO list): close what outlived its limits,
    // keeping min_pool_size servers.
    for (std::size_t i = 0; i < sh.idle.size();) {
        auto& s = sh.idle[i];
        bool expired = !usable(*s, now) || s->spoke_while_idle(false) ||
                       (st.server_idle_timeout > 0 && now - s->last_used() > secs(st.server_idle_timeout) &&
                        counts().total > st.min_pool_size);
        if (!expired) {
            ++i;
            continue;
        }
        auto victim = std::move(s);
        sh.idle.erase(sh.idle.begin() + static_cast<std::ptrdiff_t>(i));
        sh.idle_count.fetch_sub(1);
        discard(w, std::move(victim));
    }
    if (w.index() != 0) return;
    bool top_up = false;
    {
        std::lock_guard lk(m_);
        // Reserve pool: waiters that waited longer than reserve_pool_timeout may use it.
        if (st.reserve_pool_size > 0 && !waiters_.empty() && now - waiters_.front()->since >= secs(st.reserve_pool_timeout))
            waiters_.front()->reserve_granted = true;
        // Slots freed in other pools (max_db_connections / max_user_connections) reach waiters here.
        grant_slot_to_waiter_locked();
        bool failing = last_failure_ && now - last_failure_->at < secs(st.server_login_retry);
        top_up = !retire && total_ < st.min_pool_size && !failing && try_reserve_slot_locked(false);
    }
    // min_pool_size: open one server per tick until the pool has that many.
    if (top_up) {
        auto self = shared_from_this();
        asio::co_spawn(w.ctx(), [self, &w]() -> Task<void> {
            auto r = co_await self->connect_new(w, Clock::now() + std::chrono::seconds(30));
            if (r.server) self->release(w, std::move(r.server));
        }, asio::detached);
    }
}

bool Pool::evict_one_idle(app::Worker& w) {
    auto& sh = *shards_[w.index()];
    if (sh.idle.empty()) return false;
    auto s = std::move(sh.idle.front());  // the least recently used
    sh.idle.erase(sh.idle.begin());
    sh.idle_count.fetch_sub(1);
    discard(w, std::move(s));
    return true;
}

bool Pool::blocked_by_shared_limit() const {
    std::lock_guard lk(m_);
    return !waiters_.empty() && total_ < settings_.pool_size;
}

void Pool::close_idle(app::Worker& w) {
    auto& sh = *shards_[w.index()];
    while (!sh.idle.empty()) {
        auto s = std::move(sh.idle.back());
        sh.idle.pop_back();
        sh.idle_count.fetch_sub(1);
        discard(w, std::move(s));
    }
}

void Pool::drop_idle() {
    for (auto& sh : shards_) {
        sh->idle.clear();
        sh->idle_count.store(0);
    }
}

std::shared_ptr<Pool> PoolRegistry::get(const std::string& database, const std::string& user,
                                        const std::string& backend) const {
    std::lock_guard lk(m_);
    auto it = pools_.find({database, user, backend});
    return it == pools_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<Pool>> PoolRegistry::all() const {
    std::lock_guard lk(m_);
    std::vector<std::shared_ptr<Pool>> r;
    for (auto& [k, p] : pools_) r.push_back(p);
    return r;
}

std::vector<std::shared_ptr<Pool>> PoolRegistry::free_unused(Clock::time_point now,
                                                             const std::function<double(const Pool&)>& limit) {
    std::vector<std::shared_ptr<Pool>> freed;
    std::lock_guard lk(m_);
    for (auto it = pools_.begin(); it != pools_.end();) {
        auto& p = *it->second;
        double timeout = p.clients_.load(std::memory_order_relaxed) == 0 ? limit(p) : -1;
        if (timeout < 0) {
            p.unused_since_.reset();
            p.retiring_.store(false, std::memory_order_relaxed);
            ++it;
            continue;
        }
        if (!p.unused_since_) p.unused_since_ = now;
        if (now - *p.unused_since_ < secs(timeout)) {
            ++it;
            continue;
        }
        if (p.counts().total > 0) {  // idle servers first: each worker closes its own
            p.retiring_.store(true, std::memory_order_relaxed);
            ++it;
            continue;
        }
        // Held for a moment elsewhere, or by a session that got it from get_or_create and
        // has not counted itself yet (its reference is what stops the erase): later.
        if (it->second.use_count() != 1) {
            ++it;
            continue;
        }
        freed.push_back(std::move(it->second));
        it = pools_.erase(it);
    }
    return freed;
}

std::shared_ptr<Limit> PoolRegistry::limit_locked(std::map<std::string, std::shared_ptr<Limit>>& m,
                                                  const std::string& k) {
    auto& l = m[k];
    if (!l) l = std::make_shared<Limit>();
    return l;
}

std::shared_ptr<Limit> PoolRegistry::db_limit(const std::string& db) {
    std::lock_guard lk(m_);
    return limit_locked(db_limits_, db);
}

std::shared_ptr<Limit> PoolRegistry::user_limit(const std::string& user) {
    std::lock_guard lk(m_);
    return limit_locked(user_limits_, user);
}

}  // namespace pgrouter::pool
