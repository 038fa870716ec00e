// The serving half of a client session: link a server, forward both ways,
// release the server at the first clean point. Login lives in client_login.cpp.
#include "pgrouter/session/client_session.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/admin/admin.hpp"
#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/routing/cluster.hpp"
#include "pgrouter/session/cancel_registry.hpp"
#include "pgrouter/protocol/prepared.hpp"
#include "pgrouter/protocol/protocol.hpp"
#include "pgrouter/session/errors.hpp"
#include "pgrouter/session/server_connection.hpp"
#include "pgrouter/stats/counters.hpp"
#include "pgrouter/util/slab.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

namespace pgrouter::session {

namespace {
constexpr auto token = task_token;
Clock::duration secs(double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); }
constexpr int kSession = 0, kStatement = 2;

// Plain operator new/delete for an operation's memory. (Asio treats an associated
// std::allocator<void> as "no allocator" and recycles anyway.)
template <class T>
struct HeapAllocator {
    using value_type = T;
    HeapAllocator() = default;
    template <class U>
    HeapAllocator(const HeapAllocator<U>&) noexcept {}
    T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T))); }
    void deallocate(T* p, std::size_t) noexcept { ::operator delete(p); }
    template <class U>
    bool operator==(const HeapAllocator<U>&) const noexcept { return true; }
};
}  // namespace

ClientSession::ClientSession(app::Worker& w, net::Stream s, std::uint64_t id)
    : worker_(w), client_(std::move(s)), id_(id) {
    last_activity_ = Clock::now();
    peer_ = client_.peer_address();
}

ClientSession::~ClientSession() {
    if (client_counted_) worker_.runtime().leave_client(database_, user_);
    // The pool counted at login: a cluster session's pool_ moves between the primary's
    // and the replicas' pools, its primary_pool stays.
    if (pool_counted_) (route_ && route_->primary_pool ? route_->primary_pool : pool_)->remove_client();
    worker_.runtime().client_count.fetch_sub(1);
    worker_.runtime().client_frees.fetch_add(1, std::memory_order_relaxed);
}

namespace {
// The completion of a session's coroutine: it holds the session while it runs.
struct SessionDone {
    std::shared_ptr<ClientSession> session;
    void operator()(std::exception_ptr e) const {
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            spdlog::error("client {}: session ended by exception: {}", session->id(), ex.what());
        }
    }
};
}  // namespace

void ClientSession::start(app::Worker& w, net::Stream s) {
    auto& rt = w.runtime();
    auto session = std::make_shared<ClientSession>(w, std::move(s), rt.next_id.fetch_add(1));
    rt.client_count.fetch_add(1);
    w.sessions().push_back(session);
    asio::co_spawn(w.ctx(), session->run(), SessionDone{session});
}

Task<void> ClientSession::send(const std::string& bytes) {
    if (client_broken_) co_return;
    auto ec = co_await client_.write_all(asio::buffer(bytes));
    if (ec) client_broken_ = true;
}

Task<void> ClientSession::fail(std::string_view state, std::string message) {
    std::string out;
    write_pooler_error(out, state, message);
    note_reason(state, std::move(message));  // logged; sent here, not again by finish()
    error_sent_ = true;
    co_await send(out);
    closing_ = true;
}

void ClientSession::note_reason(std::string_view state, std::string message) {
    if (!kill_reason_) kill_reason_ = std::make_unique<std::pair<std::string, std::string>>(std::string(state), std::move(message));
}

namespace {
// One per worker thread: the sessions and logins waiting out a SUSPEND wait on it;
// RESUME cancels it on every worker, a kill on its own. Never destroyed: a wait may
// still be pending on it when the worker's thread ends.
Timer& suspend_gate(asio::io_context& ctx) {
    thread_local Timer* gate = nullptr;
    if (!gate) gate = new Timer(ctx, Timer::time_point::max());
    return *gate;
}
}  // namespace

void ClientSession::kill(std::string_view state, std::string message) {
    note_reason(state, std::move(message));
    closing_ = true;
    client_.cancel();
    if (server_) server_->stream().cancel();
    if (login_ && login_->cancel_check) login_->cancel_check();  // a login waiting for PAM/LDAP
    if (worker_.runtime().suspended.load()) suspend_gate(worker_.ctx()).cancel();  // one waiting out a SUSPEND
    if (waiting_ && pool_) pool_->wake_waiter(worker_, &closing_);  // queued for a server: leave the queue now
}

Task<void> ClientSession::run() {
    auto self = shared_from_this();
    auto snap = worker_.runtime().snapshot();
    snap_ = snap;
    auto deadline = Clock::now() + secs(snap->config->settings.client_login_timeout > 0
                                            ? snap->config->settings.client_login_timeout
                                            : 24 * 3600.0);
    login_ = std::make_unique<Login>();
    bool ok = co_await read_startup(deadline);
    if (ok) ok = co_await authenticate(deadline);
    if (ok) ok = co_await attach(deadline);
    // Messages the client sent right behind its login, in the same read (PostgreSQL
    // and PgBouncer answer them): served before anything else is read.
    std::string early = ok && login_ ? std::move(login_->buf) : std::string();
    login_.reset();
    if (ok && !early.empty()) {
        // cap above n: these bytes are not a full read buffer asking for a bigger one
        ok = co_await forward_chunk(early.data(), early.size(), early.size() + 1);
        std::string().swap(early);
    }
    if (ok) {
        if (client_.is_tls()) {
            // Serving goes on in a coroutine of its own, so the login's frame is freed.
            spawn_serve();
        } else {
            // Parked from the start, with no buffer: the first message starts serving.
            start_client_wait();
        }
        co_return;
    }
    co_await finish();
    client_.close();
    // A login that failed with an error sent to the client (wrong password, unknown
    // database, ...) is worth a warning, as PgBouncer logs its pooler errors; the
    // reasons are fixed texts and names, never a password.
    // log_pooler_errors = false leaves it to log_disconnections.
    if (kill_reason_ && !logged_in_ && (!snap_ || snap_->config->settings.log_pooler_errors))
        spdlog::warn("C-{}: {}/{}@{} login failed: {} (SQLSTATE {})", id_, database_.str(), user_.str(), peer_,
                     kill_reason_->second, kill_reason_->first);
    else if (snap_ && snap_->config->settings.log_disconnections)  // e.g. an admin console session ending
        spdlog::info("C-{}: {}/{}@{} closing because: {}", id_, database_.str(), user_.str(), peer_,
                     kill_reason_ ? kill_reason_->second
                                  : logged_in_ ? "client close request" : "client left during login");
}

bool ClientSession::suspend_busy() const {
    if (closing_ || admin::is_admin_database(database_)) return false;  // a session ending is not waited for
    if (!logged_in_) return !login_held_;
    // A client queued for a server is not waited for: what it sent stays here, and it
    // gets its server (and is held before sending anything to it) after RESUME.
    return writing_ || pump_writing_ || notice_writing_;
}

bool ClientSession::releasable() const {
    return server_ && pending_ == 0 && !act_->fscan.partial() && !act_->fscan.unsynced() && txn_status_ == 'I' &&
           !writing_ && pool_mode_ != kSession;
}

void ClientSession::spawn_serve() {
    serve_running_ = true;
    asio::co_spawn(worker_.ctx(), serve(), SessionDone{shared_from_this()});
}

void ClientSession::start_client_read(char* data, std::size_t cap) {
    auto& a = active();
    a.read_buf = data;
    a.read_cap = cap;
    read_pending_ = true;
    auto done = [self = shared_from_this()](net::error_code ec, std::size_t n) { self->on_client_read(ec, n); };
    if (auto* t = client_.tcp_stream_socket())
        t->async_read_some(asio::buffer(data, cap), std::move(done));
    else
        client_.unix_stream_socket()->async_read_some(asio::buffer(data, cap), std::move(done));
}

namespace {
util::SlabAllocator& active_slab(std::size_t size) {
    // Never destroyed: a session may outlive static destruction at exit.
    static auto* slab = new util::SlabAllocator(size);
    return *slab;
}
}  // namespace

void* ClientSession::Active::operator new(std::size_t n) {
    return n == sizeof(Active) ? active_slab(sizeof(Active)).allocate() : ::operator new(n);
}

void ClientSession::Active::operator delete(void* p, std::size_t n) noexcept {
    if (n == sizeof(Active))
        active_slab(sizeof(Active)).deallocate(p);
    else
        ::operator delete(p);
}

ClientSession::Active& ClientSession::active() {
    if (!act_) {
        act_ = std::make_unique<Active>();
        act_->fscan.set_capture(track_);
        act_->bscan.set_watch(track_);
        if (snap_) {
            auto max = static_cast<std::uint32_t>(snap_->config->settings.max_packet_size);
            act_->fscan.set_max_message(max);
            act_->bscan.set_max_message(max);
            act_->fscan.set_refuse_simple_query(snap_->config->settings.disable_pqexec);
        }
    }
    return *act_;
}

void ClientSession::start_client_wait() {
    read_pending_ = true;
    // The heap, not Asio's per-thread recycling allocator: that would hand this
    // long-lived operation whatever larger block was freed last (an accept's, 314
    // bytes), and idle clients are many.
    auto done = asio::bind_allocator(HeapAllocator<void>(),
                                     [self = shared_from_this()](net::error_code ec) { self->on_client_ready(ec); });
    if (auto* t = client_.tcp_stream_socket())
        t->async_wait(asio::socket_base::wait_read, std::move(done));
    else
        client_.unix_stream_socket()->async_wait(asio::socket_base::wait_read, std::move(done));
}

void ClientSession::on_client_ready(net::error_code ec) {
    read_pending_ = false;
    std::size_t n = 0;
    if (!ec && !closing_) {
        // Readable: read now (the socket is non-blocking) into the buffer the client
        // gets back for as long as it is active.
        auto& a = active();
        a.read_buf = a.small;
        a.read_cap = sizeof a.small;
        if (auto* t = client_.tcp_stream_socket())
            n = t->read_some(asio::buffer(a.small, sizeof a.small), ec);
        else
            n = client_.unix_stream_socket()->read_some(asio::buffer(a.small, sizeof a.small), ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) {
            start_client_wait();
            return;
        }
    }
    deliver_client_read(ec, n);
}

void ClientSession::shrink(Clock::time_point now) {
    if (!act_ || shrinking_ || closing_ || !logged_in_ || serve_running_ || pump_running_ || server_ ||
        !read_pending_ || read_done_ || act_->read_taker || client_.is_tls() || act_->fscan.partial() ||
        act_->fscan.unsynced() || now - last_activity_ < std::chrono::milliseconds(200))
        return;
    shrinking_ = true;
    client_.cancel();  // the parked read ends with operation_aborted, unless data beat it
}

void ClientSession::on_client_read(net::error_code ec, std::size_t n) {
    read_pending_ = false;
    if (std::exchange(shrinking_, false) && ec == asio::error::operation_aborted && !closing_ && !serve_running_ &&
        !server_ && act_ && !act_->read_taker) {
        act_.reset();
        worker_.runtime().client_frees.fetch_add(1, std::memory_order_relaxed);
        start_client_wait();
        return;
    }
    deliver_client_read(ec, n);
}

void ClientSession::deliver_client_read(net::error_code ec, std::size_t n) {
    auto& a = active();  // made here only when a wait with no Active failed
    if (a.read_taker) {
        auto h = std::move(a.read_taker);
        std::move(h)(ec, n);
        return;
    }
    read_done_ = true;
    a.read_ec = ec;
    a.read_n = n;
    if (!serve_running_) spawn_serve();
}

Task<std::tuple<net::error_code, std::size_t>> ClientSession::wait_client_read() {
    return asio::async_initiate<decltype(token), void(net::error_code, std::size_t)>(
        [this](auto handler) {
            active().read_taker = util::ReadHandler(std::move(handler));
        },
        token);
}

void ClientSession::park() {
    if (!act_ || !act_->read_taker || closing_) return;
    auto h = std::move(act_->read_taker);
    asio::post(worker_.ctx(), asio::append(std::move(h), net::error_code(asio::error::would_block), std::size_t{0}));
}

Task<void> ClientSession::serve() {
    auto& rt = worker_.runtime();
    const bool plain = !client_.is_tls();
    for (;;) {
        if (closing_) break;
        if (rt.suspended.load(std::memory_order_relaxed)) co_await wait_while_suspended();
        if (closing_) break;
        // Small reads land in the session's own few bytes; a read that fills them
        // borrows a worker buffer until the client goes quiet again. Reading directly
        // (not waiting for readability first) lets Asio try the read at once and
        // park it without re-arming epoll.
        char* data = nullptr;
        std::size_t cap = 0;
        if (!read_done_ && !read_pending_) {
            auto& a = active();
            data = a.big.data ? a.big.data : a.small;
            cap = a.big.data ? app::BufferPool::kSize : sizeof a.small;
        }
        net::error_code rec;
        std::size_t n = 0;
        if (!plain) {
            std::tie(rec, n) = co_await client_.read_some(asio::buffer(data, cap));
        } else {
            if (!read_done_ && !read_pending_) start_client_read(data, cap);
            if (!read_done_) {
                auto [ec, got] = co_await wait_client_read();
                if (ec == asio::error::would_block && !read_done_) {
                    // Parked between transactions: the pending read starts serving again.
                    serve_running_ = false;
                    co_return;
                }
                rec = ec;
                n = got;
            }
            if (read_done_) {
                read_done_ = false;
                rec = act_->read_ec;
                n = act_->read_n;
            }
            data = act_->read_buf;
            cap = act_->read_cap;
        }
        // A read already pending when SUSPEND came: what it brought waits here for RESUME.
        if (!rec && n > 0 && rt.suspended.load(std::memory_order_relaxed)) co_await wait_while_suspended();
        if (rec && rec != asio::error::eof && rec != asio::ssl::error::stream_truncated && !closing_) {
            // Reset, or found dead by keepalive / tcp_user_timeout: say so in the log.
            note_reason(sqlstate::connection_failure, "client connection lost: " + rec.message());
            client_broken_ = true;  // nobody left to send an error to
        }
        if (rec || n == 0 || closing_) break;
        // The chunk's work has a frame of its own, alive only while it runs.
        if (!co_await forward_chunk(data, n, cap)) break;
    }
    co_await finish();
    client_.close();
    if (snap_ && snap_->config->settings.log_disconnections)
        spdlog::info("C-{}: {}/{}@{} closing because: {}", id_, database_.str(), user_.str(), peer_,
                     kill_reason_ ? kill_reason_->second : "client close request");
}

// One chunk from the client: scan it, link a server if needed, forward it.
// Returns false when the session ends.
Task<bool> ClientSession::forward_chunk(char* data, std::size_t n, std::size_t cap) {
    struct Resize {
        ClientSession* s;
        std::size_t n, cap;
        ~Resize() {
            if (!s->act_) return;
            auto& a = *s->act_;
            if (!a.big.data && n == cap)
                a.big = s->worker_.buffers().get();
            else if (a.big.data && n < sizeof a.small)
                a.big = {};
        }
    } resize{this, n, cap};
    auto& a = active();
    struct {
        char* data;
    } buf{data};
    last_activity_ = Clock::now();
    request_time_ = std::chrono::system_clock::now();
    auto r = a.fscan.scan(buf.data, n);
    if (r.sync_points > 0 && pending_ == 0) {
        a.query_started = last_activity_;
        if (txn_status_ == 'I') a.xact_started = last_activity_;
    }
    pending_ += r.sync_points;
    bool capture = a.fscan.capture();
    if (capture ? !r.items.empty() : r.forward > 0) {
        if (!server_ && !link_now()) {
            if (!co_await link()) co_return false;
            if (closing_) {
                // Killed while it waited: what it sent never reaches the server, which
                // goes back clean if this chunk held whole transactions only.
                pending_ -= r.sync_points;
                co_return false;
            }
        } else if (route_ && server_->generation() != pool_->generation()) {
            // The primary changed under this session: its transaction (or, in
            // session mode, its whole session) cannot move to the new one.
            server_->mark_broken();
            kill(sqlstate::connection_failure, "the primary of cluster \"" + route_->cluster->name() +
                                                   "\" changed; this server connection was closed");
            co_return false;
        }
        stats::Counters::add(pool_->counters(worker_.index()).bytes_received, n);
        writing_ = true;
        net::error_code wec;
        if (capture && r.messages.empty() && r.items.size() == 1) {
            // Nothing to rewrite (a simple Query, unnamed statements): forward in place.
            auto& it = r.items.front();
            asio::const_buffer out(buf.data + it.begin, it.end - it.begin);
            if (!server_->stream().write_now(out, wec)) wec = co_await server_->stream().write_rest(out);
        } else if (capture) {
            std::string out;
            rewrite_statements(buf.data, r, out);
            wec = co_await server_->stream().write_all(asio::buffer(out));
        } else {
            asio::const_buffer out(buf.data, r.forward);
            if (!server_->stream().write_now(out, wec)) wec = co_await server_->stream().write_rest(out);
        }
        writing_ = false;
        if (wec) {
            if (server_) server_->mark_broken();
            kill(sqlstate::connection_failure, "server connection lost while sending");
            co_return false;
        }
    }
    act_->syncs_sent += r.sync_points;
    if (r.error) {
        kill(sqlstate::protocol_violation, std::string("invalid client message: ") + r.error);
        co_return false;
    }
    if (r.terminate) {
        // Messages ahead of the Terminate (one packet: Query + Terminate, a pipeline
        // + Terminate) are answered first, as PostgreSQL answers them: finish() lets
        // the pump deliver what is pending before the session ends.
        // Not during a COPY from the client: the server would wait for data that never comes.
        if (pending_ > 0 && server_ && pump_running_ && !copy_in_) draining_ = true;
        co_return false;
    }
    co_return true;
}

void wake_suspended(app::Runtime& rt) {
    for (auto& w : rt.workers) {
        asio::io_context* ctx = &w->ctx();
        asio::post(*ctx, [ctx] { suspend_gate(*ctx).cancel(); });
    }
}

Task<void> ClientSession::wait_while_suspended(const bool* stop) {
    auto& rt = worker_.runtime();
    // Checked and awaited on this thread with nothing in between, and RESUME clears the
    // flag before it posts the wake-up here: a RESUME cannot slip past.
    while (rt.suspended.load() && !closing_ && !(stop && *stop))
        co_await suspend_gate(worker_.ctx()).async_wait(token);
}

Task<bool> ClientSession::link() {
    auto& settings = snap_->config->settings;
    double wait_limit = settings.query_wait_timeout;
    if (pool_) wait_limit = pool_->query_wait_timeout();
    double wait = wait_limit > 0 ? wait_limit : 24 * 3600.0;
    auto& a = active();
    a.wait_started = Clock::now();
    waiting_ = true;
    wait_notified_ = false;
    // PAUSE holds new transactions until RESUME (bounded by query_wait_timeout).
    while (worker_.runtime().is_paused(database_) && !closing_) {
        if (Clock::now() - a.wait_started > secs(wait)) {
            waiting_ = false;
            kill(sqlstate::query_canceled, "query_wait_timeout");
            co_return false;
        }
        Timer t(worker_.ctx(), std::chrono::milliseconds(50));
        co_await t.async_wait(token);
    }
    bool got = server_ != nullptr;  // taken by link_now(), with parameters to re-sync
    if (!got) got = co_await acquire_server(a.wait_started + secs(wait));
    waiting_ = false;
    // A query_wait_notify NOTICE still being written goes out whole before anything else.
    while (notice_writing_) {  // also when killed: kill() cancels it, so it ends at once
        Timer t(worker_.ctx(), std::chrono::milliseconds(1));
        co_await t.async_wait(token);
    }
    if (!got) {
        count_wait(Clock::now() - a.wait_started);
        co_return false;
    }
    count_assignment(Clock::now() - a.wait_started);
    // Given a server during SUSPEND (one released by a session that finished its
    // answer): nothing goes to it before RESUME. A kill meanwhile leaves it clean
    // (the caller sees closing_ and the server goes back unused).
    if (worker_.runtime().suspended.load(std::memory_order_relaxed)) co_await wait_while_suspended();
    if (closing_) co_return true;
    for (int attempt = 1;; ++attempt) {
        auto sql = build_sync_sql(client_params_, server_->params());
        if (sql.empty()) break;
        auto r = co_await server_->query(sql, Clock::now() + secs(std::max(5.0, settings.server_connect_timeout)));
        if (r.ok) break;
        // Gone (terminated, say) before any of this client's own bytes reached it:
        // another server does as well, and the client never hears of it.
        bool lost = server_->broken() || sqlstate::server_gone(r.sqlstate);
        if (!lost || attempt >= 3 || closing_) {
            kill(r.sqlstate, r.message);
            co_return false;
        }
        spdlog::info("C-{}: server connection lost before the transaction ({}); taking another", id_, r.message);
        server_->mark_broken();
        pool_->discard(worker_, std::move(server_));
        waiting_ = true;
        bool again = co_await acquire_server(a.wait_started + secs(wait));
        waiting_ = false;
        if (!again) co_return false;
        if (closing_) co_return true;
    }
    start_pump();
    co_return true;
}

bool ClientSession::link_now() {
    auto& rt = worker_.runtime();
    if (closing_ || route_ || rt.suspended.load(std::memory_order_relaxed) || rt.is_paused(database_)) return false;
    auto idle = pool_->take_ready_idle(worker_);
    if (!idle) return false;
    server_ = std::move(idle);
    if (!build_sync_sql(client_params_, server_->params()).empty()) return false;  // link() re-syncs it
    count_assignment(Clock::duration::zero());
    start_pump();
    return true;
}

void ClientSession::count_wait(Clock::duration waited) {
    auto& counters = pool_->counters(worker_.index());
    auto us = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(waited).count());
    stats::Counters::add(counters.wait_time_us, us);
    stats::Counters::add(counters.wait_hist[stats::bucket_of(us)], 1);
}

void ClientSession::count_assignment(Clock::duration waited) {
    count_wait(waited);
    stats::Counters::add(pool_->counters(worker_.index()).server_assignments, 1);
}

void ClientSession::start_pump() {
    auto& a = *act_;
    a.bscan.reset();
    a.expect.clear();
    a.held.clear();
    a.syncs_sent = a.rfq_seen = 0;
    pump_running_ = true;
    stop_pump_ = false;
    auto self = shared_from_this();
    asio::co_spawn(worker_.ctx(), pump(), [self](std::exception_ptr e) {
        if (e) spdlog::error("client {}: pump ended by exception", self->id());
    });
}

Task<void> ClientSession::notify_waiting() {
    auto self = shared_from_this();
    std::string out;
    protocol::write_notice_response(
        out, "01000", "no server connection available in pool " + database_.str() + "/" + user_.str() + ": query queued");
    co_await send(out);
    notice_writing_ = false;
}

void ClientSession::left_while_waiting() {
    // Gone while queued: leave the queue; what it sent never reaches a server.
    client_broken_ = true;
    kill(sqlstate::connection_failure, "client close request while waiting for a server");
}

Task<bool> ClientSession::acquire_server(Clock::time_point wait_deadline) {
    if (!route_) {
        // link_now() already tried this worker's idle servers; Pool::acquire() tries them
        // again first (one may be back), then waits or connects.
        auto res = co_await pool_->acquire(worker_, wait_deadline, &closing_);
        if (!res.server) {
            kill(res.sqlstate.empty() ? sqlstate::connection_failure : std::string_view(res.sqlstate), res.message);
            co_return false;
        }
        server_ = std::move(res.server);
        co_return true;
    }
    auto since = Clock::now();
    int replica_failures = 0;
    for (;;) {
        // The login already chose the first transaction's pool: do not advance the round-robin twice.
        if (!std::exchange(route_->prerouted, false) && !co_await choose_pool(since, wait_deadline)) co_return false;
        auto res = co_await pool_->acquire(worker_, wait_deadline, &closing_);
        bool to_primary = pool_ == route_->primary_pool;
        if (res.server) {
            if (!to_primary || !res.server->hot_standby()) {
                server_ = std::move(res.server);
                co_return true;
            }
            // Discovery named a node that is still (or again) in recovery: never write there.
            route_->cluster->report_not_writable(config::HostPort{res.server->host(), res.server->port()},
                                          "in recovery (in_hot_standby=on at login)");
            pool_->discard(worker_, std::move(res.server));
            continue;
        }
        // Unreachable, or refusing logins while it shuts down or starts (57P01-57P03):
        // a node on its way out of the topology.
        bool unreachable = res.sqlstate.empty() || sqlstate::server_gone(res.sqlstate);
        if (unreachable && !to_primary && ++replica_failures <= 3) {
            // A replica that went away before its health check noticed: try the next one.
            if (auto t = pool_->target()) {
                routing::Health h;
                h.state = routing::BackendState::down;
                h.error = res.message;
                h.last_check = std::chrono::system_clock::now();
                route_->cluster->report_health(config::HostPort{t->host, t->port}, h);
            }
            continue;
        }
        if (unreachable && to_primary && Clock::now() < failover_deadline(since, wait_deadline) && !closing_) {
            // The primary may be going down before discovery says so: wait for the next one.
            route_->cluster->wake_checker();
            Timer t(worker_.ctx(), std::chrono::milliseconds(100));
            co_await t.async_wait(token);
            continue;
        }
        kill(res.sqlstate.empty() ? sqlstate::connection_failure : std::string_view(res.sqlstate), res.message);
        co_return false;
    }
}

// Server -> client until the server can go back to the pool.
Task<void> ClientSession::pump() {
    auto self = shared_from_this();
    struct Done {
        ClientSession* s;
        ~Done() {
            s->pump_running_ = false;
            if (s->act_ && s->act_->pump_done) s->act_->pump_done->cancel();
        }
    } done{this};
    auto& rt = worker_.runtime();
    auto& a = *act_;  // kept while a server is linked
    for (;;) {
        if (rt.suspended.load(std::memory_order_relaxed)) co_await wait_while_suspended(&stop_pump_);
        if (stop_pump_ || closing_ || !server_) co_return;
        struct {
            char* data;
        } buf{server_->io_buffer()};
        // The first read of a link usually is the idle watch's, pending since the release.
        auto [rec, n] = co_await server_->read_some(asio::buffer(buf.data, ServerConnection::kIoBuffer));
        if (stop_pump_ || closing_) co_return;
        if (!rec && n > 0 && rt.suspended.load(std::memory_order_relaxed)) {
            // Read while SUSPEND came: forwarded after RESUME. Ended meanwhile, the server
            // is left with an answer half delivered, and finish() closes it.
            co_await wait_while_suspended(&stop_pump_);
            if (stop_pump_ || closing_) co_return;
        }
        if (rec || n == 0) {
            server_->mark_broken();
            kill(sqlstate::connection_failure, "server conn crashed?");
            co_return;
        }
        auto r = a.bscan.scan(buf.data, n);
        if (r.error) {
            server_->mark_broken();
            if (r.too_large)
                kill(sqlstate::program_limit_exceeded, "server message larger than max_packet_size");
            else
                kill(sqlstate::protocol_violation, "invalid server message framing");
            co_return;
        }
        for (auto& [k, v] : r.params) {
            server_->update_param(k, v);
            client_params_.set(k, v);
        }
        auto& counters = pool_->counters(worker_.index());
        stats::Counters::add(counters.bytes_sent, n);
        if (r.ready_for_query > 0) {
            auto now = Clock::now();
            auto us = [](Clock::duration d) {
                return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
            };
            stats::Counters::add(counters.query_count, static_cast<std::uint64_t>(r.ready_for_query));
            stats::Counters::add(counters.query_time_us, us(now - a.query_started));
            a.query_started = now;
            timeout_cancel_sent_ = false;
            if (r.txn_status == 'I') {
                auto xact_us = us(now - a.xact_started);
                stats::Counters::add(counters.xact_count, 1);
                stats::Counters::add(counters.xact_time_us, xact_us);
                stats::Counters::add(counters.xact_hist[stats::bucket_of(xact_us)], 1);
            }
            pending_ = std::max(0, pending_ - r.ready_for_query);
            copy_in_ = false;
            txn_status_ = r.txn_status;
            server_->set_txn_status(r.txn_status);
            a.last_ready = now;
        }
        if (r.copy_in) {  // after the chunk's ReadyForQuery (an earlier query's), if any
            copy_in_ = true;
            if (draining_) co_return;  // the client left with a COPY unfinished: finish() closes the server
        }
        net::error_code wec;
        bool rewrite = false;
        std::vector<std::pair<long, long>> drops;
        if (a.bscan.watch()) {
            drops = track_statements(r);
            rewrite = !drops.empty() || !a.held.empty() || a.bscan.partial_header() > 0;
        }
        if (rewrite) {
            // Hide the pooler's own ParseComplete/CloseComplete; hold back a split header.
            std::string v = std::move(a.held);
            a.held.clear();
            long base = static_cast<long>(v.size());
            std::size_t keep = n - static_cast<std::size_t>(a.bscan.partial_header());
            v.append(buf.data, keep);
            a.held.assign(buf.data + keep, n - keep);
            for (auto it = drops.rbegin(); it != drops.rend(); ++it)
                v.erase(static_cast<std::size_t>(base + it->first), static_cast<std::size_t>(it->second - it->first));
            pump_writing_ = true;
            wec = co_await client_.write_all(asio::buffer(v));
        } else {
            pump_writing_ = true;
            asio::const_buffer out(buf.data, n);
            if (!client_.write_now(out, wec)) wec = co_await client_.write_rest(out);
        }
        pump_writing_ = false;
        if (wec) {
            client_broken_ = true;
            closing_ = true;
            client_.cancel();
            co_return;
        }
        if (r.ready_for_query > 0 && pool_mode_ == kStatement && txn_status_ != 'I' && pending_ == 0) {
            kill(sqlstate::feature_not_supported, "transaction blocks not allowed in statement pooling mode");
            co_return;
        }
        if (releasable() && !a.bscan.partial()) {
            if (!release_server_now()) co_await release_server();
            co_return;
        }
        if (r.ready_for_query > 0 && !a.bscan.partial() && fast_close()) co_return;
        if (draining_ && pending_ == 0 && !a.bscan.partial()) co_return;  // all answered: finish() ends the session
    }
}

Task<void> ClientSession::release_server() {
    auto s = std::move(server_);
    // A cancel for this server still on its way must not hit its next client.
    for (int i = 0; i < 500 && s->cancel_gate()->in_flight > 0; ++i) {
        Timer t(worker_.ctx(), std::chrono::milliseconds(10));
        co_await t.async_wait(token);
    }
    if (s->cancel_gate()->in_flight > 0) s->mark_broken();
    hand_back(std::move(s));
}

bool ClientSession::release_server_now() {
    if (server_->cancel_gate()->in_flight > 0) return false;
    hand_back(std::move(server_));
    return true;
}

void ClientSession::hand_back(std::unique_ptr<ServerConnection> s) {
    auto& st = snap_->config->settings;
    int max_prepared = st.max_prepared_statements;
    if (max_prepared > 0 && static_cast<int>(s->prepared().size()) > max_prepared) s->mark_broken();
    if (st.server_reset_query_always && !st.server_reset_query.empty() && pool_mode_ != kSession && !s->broken()) {
        // PgBouncer's server_reset_query_always: every release resets the server. The
        // session is done with it: the reset runs on its own, and the server reaches
        // the pool (or its next client) only once it is clean.
        asio::co_spawn(worker_.ctx(), reset_and_release(pool_, worker_, std::move(s), st.server_reset_query),
                       asio::detached);
    } else {
        pool_->release(worker_, std::move(s));
    }
    if (worker_.runtime().shutting_down.load()) kill(sqlstate::admin_shutdown, "pgrouter is shutting down");
    park();  // between transactions: the serving coroutine, waiting on the client, can end
}

Task<void> ClientSession::reset_and_release(std::shared_ptr<pool::Pool> pool, app::Worker& w,
                                                       std::unique_ptr<ServerConnection> server, std::string sql) {
    auto r = co_await server->query(sql, Clock::now() + std::chrono::seconds(10));
    if (!r.ok || server->txn_status() != 'I') server->mark_broken();
    server->prepared().clear();  // DISCARD ALL (or DEALLOCATE ALL): nothing stays prepared
    pool->release(w, std::move(server));
}

Task<void> ClientSession::finish() {
    // Wait for the pump to end. After a Terminate behind messages still being answered
    // it goes on until they are (the client gets them; query_timeout and kills still
    // apply) and stops by itself; otherwise it is stopped now.
    while (pump_running_) {
        if (!(draining_ && !closing_) && !stop_pump_) {
            stop_pump_ = true;
            if (worker_.runtime().suspended.load()) suspend_gate(worker_.ctx()).cancel();  // a pump held by SUSPEND
            if (server_) server_->stream().cancel();
            client_.cancel();  // a pump blocked writing to a client that stopped reading
        }
        auto& a = active();
        if (!a.pump_done) a.pump_done = std::make_unique<Timer>(worker_.ctx());
        a.pump_done->expires_after(std::chrono::seconds(30));
        co_await a.pump_done->async_wait(token);
    }
    if (server_) {
        auto& a = active();
        bool clean = pending_ == 0 && !a.fscan.partial() && !a.fscan.unsynced() && !a.bscan.partial() &&
                     txn_status_ == 'I' && !server_->broken();
        if (clean && pool_mode_ == kSession) {
            auto& st = snap_->config->settings;
            if (!st.server_reset_query.empty()) {
                auto r = co_await server_->query(st.server_reset_query, Clock::now() + std::chrono::seconds(10));
                clean = r.ok && server_->txn_status() == 'I';
            }
        }
        if (clean) {
            co_await release_server();
        } else {
            server_->mark_broken();
            pool_->discard(worker_, std::move(server_));
        }
    }
    if (kill_reason_ && !client_broken_ && !error_sent_) {
        std::string out;
        write_pooler_error(out, kill_reason_->first, kill_reason_->second);
        // The client may have stopped reading: never wait long for it.
        net::error_code ec;
        client_.try_write(asio::buffer(out), ec);
        if (ec == asio::error::operation_not_supported) co_await send(out);
    }
}

void ClientSession::rewrite_statements(const char* chunk, const protocol::FrontendScanner::Result& r,
                                       std::string& out) {
    auto& on_server = server_->prepared();
    for (auto& item : r.items) {
        if (item.message < 0) {
            out.append(chunk + item.begin, item.end - item.begin);
            continue;
        }
        const std::string& m = r.messages[static_cast<std::size_t>(item.message)];
        auto ref = protocol::statement_of(m);
        if (!ref || !ref->is_statement || ref->name.empty()) {
            out.append(m);
            continue;
        }
        auto& expect = act_->expect;
        int seq = act_->syncs_sent + item.syncs_before;
        std::string name(ref->name);
        if (ref->type == 'P') {
            auto global = protocol::global_statement_name(m);
            auto renamed = global ? protocol::rename_statement(m, *global) : std::nullopt;
            if (!renamed) {
                out.append(m);
                continue;
            }
            if (on_server.erase(*global)) {  // re-prepare: the old one must go first
                protocol::write_close_statement(out, *global);
                expect.push_back({seq, '3', true});
            }
            out.append(*renamed);
            expect.push_back({seq, '1', false});
            on_server.insert(*global);
            if (!statements_) statements_ = std::make_unique<std::unordered_map<std::string, Statement>>();
            (*statements_)[name] = Statement{*global, std::move(*renamed)};
            continue;
        }
        Statement* known = nullptr;
        if (statements_)
            if (auto it = statements_->find(name); it != statements_->end()) known = &it->second;
        if (!known) {  // unknown to us: the server answers as PostgreSQL would
            out.append(m);
            continue;
        }
        if (ref->type == 'C') {
            // The server statement may serve other clients: close a name that does
            // not exist instead, which still answers CloseComplete.
            statements_->erase(name);
            protocol::write_close_statement(out, "PGR_closed");
            continue;
        }
        if (!on_server.count(known->global)) {
            out.append(known->parse);
            expect.push_back({seq, '1', true});
            on_server.insert(known->global);
        }
        if (auto renamed = protocol::rename_statement(m, known->global)) out.append(*renamed);
    }
}

std::vector<std::pair<long, long>> ClientSession::track_statements(const protocol::BackendScanner::Result& r) {
    std::vector<std::pair<long, long>> drops;
    auto& expect = act_->expect;
    auto& rfq_seen = act_->rfq_seen;
    auto expire = [&] {
        while (!expect.empty() && expect.front().seq < rfq_seen) {
            // Skipped after an error: what exists on the server is no longer known.
            expect.pop_front();
            if (server_) server_->mark_broken();
        }
    };
    for (auto& ev : r.events) {
        if (ev.type == 'Z') {
            ++rfq_seen;
            expire();
            continue;
        }
        if (ev.type == 'X') {
            // DISCARD ALL / DEALLOCATE ALL ran: the server holds no prepared statement,
            // and this client's own are gone (as PostgreSQL says). With statement
            // messages already sent behind it, what exists is not known: closed at release.
            expire();
            if (!server_) continue;
            if (expect.empty()) {
                server_->prepared().clear();
                if (statements_) statements_->clear();
            } else {
                server_->mark_broken();
            }
            continue;
        }
        expire();
        if (!expect.empty() && expect.front().type == ev.type) {
            if (expect.front().hide) drops.emplace_back(ev.begin, ev.end);
            expect.pop_front();
        }
    }
    return drops;
}

ClientSession::Info ClientSession::info() const {
    Info i;
    i.id = id_;
    i.user = user_;
    i.database = database_;
    i.pool_user = pool_ ? pool_->user() : i.user;
    i.peer = peer_;
    if (auto k = tracked_index("application_name"); k && client_params_.has(*k))
        i.application_name = std::string(*client_params_.get(*k));
    i.state = !logged_in_ ? "login" : waiting_ ? "waiting" : server_ ? "active" : "idle";
    i.connect_time = connect_time_;
    i.request_time = request_time_;
    if (waiting_ && act_) i.wait_seconds = std::chrono::duration<double>(Clock::now() - act_->wait_started).count();
    i.server_id = server_ ? server_->id() : 0;
    i.tls = client_.is_tls();
    i.cancel_key = cancel_key_;
    i.active_state = act_ != nullptr;
    return i;
}

std::size_t ClientSession::active_state_size() { return sizeof(Active); }

void ClientSession::forward_cancel() {
    if (!server_) return;
    auto gate = server_->cancel_gate();
    ++gate->in_flight;
    auto ex = worker_.ctx().get_executor();
    asio::co_spawn(ex, ServerConnection::send_cancel(ex, server_->host(), server_->port(), server_->backend_pid(),
                                                     server_->backend_key()),
                   [gate](std::exception_ptr) { --gate->in_flight; });
}

bool ClientSession::fast_close() {
    if (pool_mode_ != kSession || !server_ || pending_ > 0 || txn_status_ != 'I' || closing_ ||
        !snap_->config->settings.server_fast_close)
        return false;
    if (!server_->broken() && server_->generation() == pool_->generation()) return false;
    kill(sqlstate::admin_shutdown, "server connection closed: configuration changed (server_fast_close)");
    return true;
}

void ClientSession::janitor(Clock::time_point now) {
    if (closing_) return;
    if (!pool_) {  // logging in, or an admin console
        if (logged_in_ && worker_.runtime().shutting_down.load())
            kill(sqlstate::admin_shutdown, "pgrouter is shutting down");
        return;
    }
    auto& st = snap_->config->settings;
    // The timeouts as configured now for this session's pool (its user's and its
    // database's overrides applied), not as they were at login.
    auto limits = pool_->settings_ref();
    const auto& pt = *limits;
    if (worker_.runtime().shutting_down.load() && !server_) {
        kill(sqlstate::admin_shutdown, "pgrouter is shutting down");
        return;
    }
    if (server_) {
        if (fast_close()) return;
        auto& a = *act_;  // kept while a server is linked
        if (pending_ > 0 && pt.query_timeout > 0 && now - a.query_started > secs(pt.query_timeout)) {
            // Cancel the statement (the client gets 57014 and goes on); if the
            // server ignores the cancel, give up on it one period later.
            if (!timeout_cancel_sent_) {
                timeout_cancel_sent_ = true;
                forward_cancel();
            } else if (now - a.query_started > secs(2 * pt.query_timeout + 1)) {
                server_->mark_broken();
                kill(sqlstate::query_canceled, "query timeout");
            }
        } else if (pending_ == 0 && txn_status_ != 'I' && pt.idle_transaction_timeout > 0 &&
                   now - a.last_ready > secs(pt.idle_transaction_timeout)) {
            server_->mark_broken();
            kill(sqlstate::idle_in_transaction_timeout, "idle transaction timeout");
        } else if ((pending_ > 0 || txn_status_ != 'I') && pt.transaction_timeout > 0 &&
                   now - a.xact_started > secs(pt.transaction_timeout)) {
            // A transaction, or a statement outside one, that ran too long: the server
            // is in the middle of it, so it is closed with the session.
            server_->mark_broken();
            kill(sqlstate::transaction_timeout, "transaction timeout");
        }
    } else if (waiting_ && client_.peer_hung_up()) {
        left_while_waiting();
    } else if (waiting_ && !wait_notified_ && st.query_wait_notify > 0 && act_ &&
               now - act_->wait_started > secs(st.query_wait_notify)) {
        wait_notified_ = notice_writing_ = true;
        asio::co_spawn(worker_.ctx(), notify_waiting(), asio::detached);
    } else if (pt.client_idle_timeout > 0 && now - last_activity_ > secs(pt.client_idle_timeout)) {
        kill(sqlstate::idle_session_timeout, "client_idle_timeout");
    } else {
        shrink(now);
    }
}

}  // namespace pgrouter::session
