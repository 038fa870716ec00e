#include "pgrouter/session/server_connection.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/protocol/protocol.hpp"
#include "pgrouter/session/errors.hpp"
#include "pgrouter/util/read_handler.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <openssl/x509v3.h>

#include <cassert>
#include <spdlog/spdlog.h>

namespace pgrouter::session {

namespace {
using namespace boost::asio::experimental::awaitable_operators;
constexpr auto token = task_token;
namespace proto = protocol;

ServerResult fail(std::string_view state, std::string msg) { return {false, std::string(state), std::move(msg)}; }

// Races `op` against a deadline; returns nullopt on timeout.
template <class T>
Task<std::optional<T>> with_deadline(Task<T> op, Clock::time_point deadline) {
    Timer timer(co_await asio::this_coro::executor, deadline);
    auto r = co_await (std::move(op) || timer.async_wait(token));
    if (r.index() == 0) co_return std::get<0>(std::move(r));
    co_return std::nullopt;
}

Task<std::pair<net::error_code, std::optional<net::Stream>>> open_stream(const pool::Target& t) {
    auto ex = co_await asio::this_coro::executor;
    auto& io = static_cast<asio::io_context&>(asio::query(ex, asio::execution::context));
    if (t.unix_socket()) {
        net::unix_socket s(io);
        std::string path = t.host + "/.s.PGSQL." + std::to_string(t.port);
        auto [ec] = co_await s.async_connect(asio::local::stream_protocol::endpoint(path), token);
        if (ec) co_return std::make_pair(ec, std::optional<net::Stream>{});
        co_return std::make_pair(ec, std::optional<net::Stream>(net::Stream(std::move(s))));
    }
    net::tcp::resolver resolver(ex);
    auto [rec, results] = co_await resolver.async_resolve(t.host, std::to_string(t.port), token);
    if (rec) co_return std::make_pair(rec, std::optional<net::Stream>{});
    net::tcp_socket s(io);
    auto [ec, ep] = co_await asio::async_connect(s, results, token);
    if (ec) co_return std::make_pair(ec, std::optional<net::Stream>{});
    co_return std::make_pair(ec, std::optional<net::Stream>(net::Stream(std::move(s))));
}
}  // namespace

ServerConnection::ServerConnection(std::uint64_t id, net::Stream stream)
    : stream_(std::move(stream)), id_(id), created_(Clock::now()), last_used_(created_) {}

ServerConnection::~ServerConnection() { close(); }

void ServerConnection::close() {
    if (stream_.is_open()) {
        if (!broken_) {
            // Best effort Terminate so the server logs a clean disconnect.
            std::string t;
            proto::write_terminate(t);
            net::error_code ec;
            stream_.try_write(asio::buffer(t), ec);
        }
        stream_.close();
    }
}

// The idle watch's state, shared with its pending read's handler (which may run
// after the connection is gone). `gen` tells a read taken back by unwatch() from
// the current one.
struct ServerConnection::IdleWatch {
    std::uint64_t gen = 0;
    bool armed = false;  // pending (or finished) and not yet taken by read_some/unwatch
    bool done = false;   // the read finished: bytes, EOF or an error
    net::error_code ec;
    std::size_t n = 0;
    util::ReadHandler taker;  // read_some's waiting pump
};

void ServerConnection::watch_idle() {
    if (broken_ || (watch_ && watch_->armed)) return;
    auto* tcp = stream_.tcp_stream_socket();
    auto* ux = stream_.unix_stream_socket();
    if ((!tcp || !tcp->is_open()) && (!ux || !ux->is_open())) return;  // TLS or closed: no watch
    if (!watch_) watch_ = std::make_shared<IdleWatch>();
    auto& st = *watch_;
    st.armed = true;
    st.done = false;
    st.ec = {};
    st.n = 0;
    auto handler = [w = watch_, gen = ++st.gen](net::error_code ec, std::size_t n) {
        if (w->gen != gen) return;  // taken back by unwatch(): nobody's read any more
        w->done = true;
        w->ec = ec;
        w->n = n;
        if (w->taker) {
            auto h = std::move(w->taker);
            std::move(h)(ec, n);
        }
    };
    auto buf = asio::buffer(io_buffer(), kIoBuffer);
    if (tcp)
        tcp->async_read_some(buf, std::move(handler));
    else
        ux->async_read_some(buf, std::move(handler));
}

bool ServerConnection::spoke_while_idle(bool peek) {
    if (watch_ && watch_->armed) return watch_->done;
    return peek && stream_.peer_spoke();
}

bool ServerConnection::unwatch() {
    if (!watch_ || !watch_->armed) return true;
    auto& w = *watch_;
    w.armed = false;
    ++w.gen;
    if (w.done) {
        broken_ = true;  // what it said is gone into the buffer: the connection cannot be used
        return false;
    }
    stream_.cancel();
    // The cancelled read's handler still holds this state and runs later on this
    // worker, perhaps after the connection moved to another one: the next watch gets
    // a state of its own rather than sharing one across threads.
    watch_.reset();
    return true;
}

Task<std::tuple<net::error_code, std::size_t>> ServerConnection::read_some(asio::mutable_buffer buf) {
    if (!watch_ || !watch_->armed) return stream_.read_some(buf);
    assert(buf.data() == io_buf_.get() && buf.size() == kIoBuffer);  // where the pending read reads
    watch_->armed = false;  // the pending read is the caller's now
    return asio::async_initiate<decltype(token), void(net::error_code, std::size_t)>(
        [w = watch_](auto handler) {
            if (w->done) {
                auto ex = asio::get_associated_executor(handler);
                asio::post(ex, asio::append(std::move(handler), w->ec, w->n));
            } else {
                w->taker = util::ReadHandler(std::move(handler));
            }
        },
        token);
}

void ServerConnection::update_param(const std::string& name, const std::string& value) {
    params_.set(name, value);
}

Task<std::pair<std::unique_ptr<ServerConnection>, ServerResult>> ServerConnection::connect(
    app::Worker& w, const pool::Target& target, const std::optional<std::pair<auth::Bytes, auth::Bytes>>& scram_keys,
    Clock::time_point deadline) {
    return connect(w.runtime(), target, scram_keys, deadline);
}

Task<std::pair<std::unique_ptr<ServerConnection>, ServerResult>> ServerConnection::connect(
    app::Runtime& rt, const pool::Target& target, const std::optional<std::pair<auth::Bytes, auth::Bytes>>& scram_keys,
    Clock::time_point deadline) {
    using Ret = std::pair<std::unique_ptr<ServerConnection>, ServerResult>;
    auto where = target.unix_socket() ? target.host : target.host + ":" + std::to_string(target.port);
    auto opened = co_await with_deadline(open_stream(target), deadline);
    if (!opened) co_return Ret{nullptr, fail(sqlstate::connection_failure, "server connect timeout: " + where)};
    if (opened->first || !opened->second)
        co_return Ret{nullptr, fail(sqlstate::connection_failure,
                                    "could not connect to server " + where + ": " + opened->first.message())};
    auto snap = rt.snapshot();
    if (auto tec = opened->second->tune(snap->tcp))
        spdlog::debug("server {}: cannot set TCP keepalive options: {}", where, tec.message());
    auto mode = snap->config->tls.server_tls_sslmode;
    if (snap->server_tls && mode != config::SslMode::disable && !target.unix_socket()) {
        auto& s = *opened->second;
        std::string req;
        proto::write_ssl_request(req);
        if (co_await s.write_all(asio::buffer(req)))
            co_return Ret{nullptr, fail(sqlstate::connection_failure, "server write failed during SSLRequest: " + where)};
        char answer = 0;
        auto got = co_await with_deadline(s.read_some(asio::buffer(&answer, 1)), deadline);
        if (!got || std::get<0>(*got) || std::get<1>(*got) != 1)
            co_return Ret{nullptr, fail(sqlstate::connection_failure, "server closed the connection during SSLRequest: " + where)};
        if (answer == 'S') {
            auto ec = co_await s.tls_handshake(*snap->server_tls, asio::ssl::stream_base::client, target.host);
            if (!ec && mode == config::SslMode::verify_full) {
                // verify-full: the certificate must name the host we connected to.
                X509* cert = SSL_get1_peer_certificate(s.ssl_handle());
                bool match = cert && X509_check_host(cert, target.host.c_str(), target.host.size(), 0, nullptr) == 1;
                if (!match && cert) match = X509_check_ip_asc(cert, target.host.c_str(), 0) == 1;
                if (cert) X509_free(cert);
                if (!match) co_return Ret{nullptr, fail(sqlstate::connection_failure,
                                                        "server certificate does not match host " + target.host)};
            }
            if (ec) co_return Ret{nullptr, fail(sqlstate::connection_failure, "TLS handshake with server " + where + " failed: " + ec.message())};
        } else if (answer != 'N') {
            // PostgreSQL answers S or N; anything else is not a server we can talk to.
            co_return Ret{nullptr, fail(sqlstate::connection_failure,
                                        "server " + where + " answered the SSLRequest with neither S nor N: "
                                        "not a PostgreSQL server?")};
        } else if (mode == config::SslMode::require || mode == config::SslMode::verify_ca ||
                   mode == config::SslMode::verify_full) {
            co_return Ret{nullptr, fail(sqlstate::connection_failure,
                                        "server " + where + " does not accept TLS and server_tls_sslmode requires it")};
        }
    }
    auto conn = std::make_unique<ServerConnection>(rt.next_id.fetch_add(1), std::move(*opened->second));
    conn->host_ = target.host;
    conn->port_ = target.port;
    conn->generation_ = target.generation;
    auto r = co_await conn->login(target, scram_keys, deadline);
    if (!r.ok) {
        conn->broken_ = true;
        co_return Ret{nullptr, r};
    }
    if (!target.connect_query.empty()) {
        auto q = co_await conn->query(target.connect_query, deadline);
        if (conn->broken_)
            co_return Ret{nullptr, fail(sqlstate::connection_failure, "server " + where + " lost during connect_query")};
        if (!q.ok) spdlog::warn("server {}: connect_query failed: {} ({})", where, q.message, q.sqlstate);
        if (conn->txn_status_ != 'I') {
            // A server handed out inside a transaction would be dirty for every client.
            conn->broken_ = true;
            co_return Ret{nullptr, fail(sqlstate::connection_failure,
                                        "connect_query left the server connection inside a transaction: " + where)};
        }
        // What it SET is this server's starting state, which clients that did not
        // name their own values are given.
        for (auto& [name, value] : conn->login_params_)
            if (auto i = tracked_index(name); i && conn->params_.has(*i)) value = std::string(*conn->params_.get(*i));
    }
    if (auto why = conn->session_attrs_mismatch(target.session_attrs)) {
        conn->close();
        co_return Ret{nullptr, fail(sqlstate::connection_failure,
                                    "server " + where + " " + *why + " (target_session_attrs = " +
                                        config::to_string(target.session_attrs) + ")")};
    }
    co_return Ret{std::move(conn), r};
}

std::optional<std::string> ServerConnection::session_attrs_mismatch(config::TargetSessionAttrs want) const {
    using A = config::TargetSessionAttrs;
    if (want == A::any) return std::nullopt;
    auto reported = [&](std::string_view name) -> std::optional<bool> {
        for (auto& [k, v] : login_params_)
            if (k == name) return v == "on";
        return std::nullopt;
    };
    // PostgreSQL 14+ reports both at login (and default_transaction_read_only again
    // when connect_query changed it).
    auto standby = reported("in_hot_standby");
    auto read_only = reported("default_transaction_read_only");
    if (!standby || (!read_only && (want == A::read_write || want == A::read_only)))
        return "does not report in_hot_standby and default_transaction_read_only (PostgreSQL 14 or later needed)";
    switch (want) {
        case A::read_write:
            if (*standby) return std::string("is in hot standby mode");
            if (*read_only) return std::string("is read-only (default_transaction_read_only = on)");
            return std::nullopt;
        case A::read_only:
            if (!*standby && !*read_only) return std::string("is not read-only");
            return std::nullopt;
        case A::primary:
            if (*standby) return std::string("is in hot standby mode");
            return std::nullopt;
        case A::standby:
            if (!*standby) return std::string("is not in hot standby mode");
            return std::nullopt;
        case A::any:
            break;
    }
    return std::nullopt;
}

Task<bool> ServerConnection::read_message(char& type, Clock::time_point deadline) {
    for (;;) {
        auto h = proto::decode_backend_header(proto::as_bytes(rbuf_));
        if (h.status == proto::Decode::error) co_return false;
        if (h.status == proto::Decode::ok && rbuf_.size() >= h.header.total()) {
            type = h.header.type;
            body_.assign(rbuf_, 5, h.header.body_size());
            rbuf_.erase(0, h.header.total());
            co_return true;
        }
        char tmp[8192];
        auto r = co_await with_deadline(stream_.read_some(asio::buffer(tmp)), deadline);
        if (!r || std::get<0>(*r) || std::get<1>(*r) == 0) co_return false;
        rbuf_.append(tmp, std::get<1>(*r));
    }
}

Task<ServerResult> ServerConnection::login(const pool::Target& target,
                                                      const std::optional<std::pair<auth::Bytes, auth::Bytes>>& scram_keys,
                                                      Clock::time_point deadline) {
    std::string out;
    std::vector<std::pair<std::string, std::string>> startup{{"user", target.user}, {"database", target.dbname}};
    startup.insert(startup.end(), target.startup_params.begin(), target.startup_params.end());
    proto::write_startup_message(out, startup);
    auto werr = co_await stream_.write_all(asio::buffer(out));
    if (werr) co_return fail(sqlstate::connection_failure, "server write failed: " + werr.message());

    std::optional<auth::ScramClient> scram;
    const auth::Credential* cred = target.credential ? &*target.credential : nullptr;
    for (;;) {
        char type = 0;
        if (!co_await read_message(type, deadline))
            co_return fail(sqlstate::connection_failure, "server closed the connection during login");
        auto body = proto::as_bytes(body_);
        if (type == 'E') {
            auto e = proto::parse_error_response(body);
            if (!e) co_return fail(sqlstate::protocol_violation, "malformed error from server");
            co_return fail(e->sqlstate, e->message);
        }
        if (type == 'R') {
            auto a = proto::parse_auth_request(body);
            if (!a) co_return fail(sqlstate::protocol_violation, "malformed authentication request from server");
            out.clear();
            switch (a->code) {
                case 0:
                    continue;
                case 3:  // cleartext
                    if (!cred || cred->kind != auth::SecretKind::plain)
                        co_return fail(sqlstate::invalid_password,
                                       "server asked for a cleartext password, but no plaintext password is known for user \"" +
                                           target.user + "\"");
                    proto::write_password_message(out, cred->secret);
                    break;
                case 5: {  // md5
                    if (!cred || cred->kind == auth::SecretKind::scram || a->data.size() != 4)
                        co_return fail(sqlstate::invalid_password,
                                       "server asked for an md5 password, but no password or md5 hash is known for user \"" +
                                           target.user + "\"");
                    std::array<std::uint8_t, 4> salt;
                    std::memcpy(salt.data(), a->data.data(), 4);
                    proto::write_password_message(out, auth::md5_client_response(cred->secret, target.user, salt));
                    break;
                }
                case 10: {  // SASL: we speak SCRAM-SHA-256 only
                    std::string mechs(reinterpret_cast<const char*>(a->data.data()), a->data.size());
                    if (mechs.find("SCRAM-SHA-256") == std::string::npos)
                        co_return fail(sqlstate::feature_not_supported, "server offers no supported SASL mechanism");
                    if (cred && cred->kind == auth::SecretKind::plain)
                        scram.emplace(cred->secret);
                    else if (scram_keys)
                        scram.emplace(scram_keys->first, scram_keys->second);
                    else
                        co_return fail(sqlstate::invalid_password,
                                       "server asked for SCRAM, but no plaintext password (or SCRAM keys from a "
                                       "client login) is known for user \"" + target.user + "\"");
                    proto::write_sasl_initial_response(out, "SCRAM-SHA-256", scram->client_first());
                    break;
                }
                case 11: {
                    if (!scram) co_return fail(sqlstate::protocol_violation, "unexpected SASL continue");
                    auto reply = scram->handle_server_first(
                        std::string_view(reinterpret_cast<const char*>(a->data.data()), a->data.size()));
                    if (!reply) co_return fail(sqlstate::invalid_password, "SCRAM: " + scram->error());
                    proto::write_sasl_response(out, *reply);
                    break;
                }
                case 12:
                    if (!scram || !scram->verify_server_final(std::string_view(
                                      reinterpret_cast<const char*>(a->data.data()), a->data.size())))
                        co_return fail(sqlstate::invalid_password, "SCRAM: server signature mismatch");
                    continue;
                default:
                    co_return fail(sqlstate::feature_not_supported,
                                   "unsupported server authentication method " + std::to_string(a->code));
            }
            auto ec = co_await stream_.write_all(asio::buffer(out));
            if (ec) co_return fail(sqlstate::connection_failure, "server write failed: " + ec.message());
            continue;
        }
        if (type == 'S') {
            if (auto p = proto::parse_parameter_status(body)) {
                params_.set(p->first, p->second);
                if (p->first == "in_hot_standby") hot_standby_ = p->second == "on";
                login_params_.push_back(std::move(*p));
            }
            continue;
        }
        if (type == 'K') {
            if (auto k = proto::parse_backend_key_data(body)) std::tie(backend_pid_, backend_key_) = *k;
            continue;
        }
        if (type == 'Z') {
            txn_status_ = body_.empty() ? 'I' : body_[0];
            co_return ServerResult{true, {}, {}};
        }
        if (type == 'N') continue;
        if (type == 'v') continue;  // NegotiateProtocolVersion: we asked for 3.0 only
        co_return fail(sqlstate::protocol_violation, std::string("unexpected message during server login: ") + type);
    }
}

Task<ServerResult> ServerConnection::query(const std::string& sql, Clock::time_point deadline) {
    if (!unwatch()) co_return fail(sqlstate::connection_failure, "server closed the connection while idle");
    std::string out;
    proto::write_query(out, sql);
    auto ec = co_await stream_.write_all(asio::buffer(out));
    if (ec) {
        broken_ = true;
        co_return fail(sqlstate::connection_failure, "server write failed: " + ec.message());
    }
    ServerResult result{true, {}, {}};
    for (;;) {
        char type = 0;
        if (!co_await read_message(type, deadline)) {
            broken_ = true;
            co_return fail(sqlstate::connection_failure, "server connection lost");
        }
        if (type == 'E') {
            auto e = proto::parse_error_response(proto::as_bytes(body_));
            result = fail(e ? e->sqlstate : std::string(sqlstate::protocol_violation), e ? e->message : "server error");
        } else if (type == 'S') {
            if (auto p = proto::parse_parameter_status(proto::as_bytes(body_))) params_.set(p->first, p->second);
        } else if (type == 'Z') {
            txn_status_ = body_.empty() ? 'I' : body_[0];
            rbuf_.shrink_to_fit();
            body_.clear();
            body_.shrink_to_fit();
            co_return result;
        }
    }
}

Task<ServerConnection::Rows> ServerConnection::query_rows(const std::string& sql,
                                                                     Clock::time_point deadline) {
    Rows out;
    if (!unwatch()) {
        out.sqlstate = sqlstate::connection_failure;
        out.message = "server closed the connection while idle";
        co_return out;
    }
    std::string msg;
    proto::write_query(msg, sql);
    if (auto ec = co_await stream_.write_all(asio::buffer(msg))) {
        broken_ = true;
        out.sqlstate = sqlstate::connection_failure;
        out.message = "server write failed: " + ec.message();
        co_return out;
    }
    out.ok = true;
    for (;;) {
        char type = 0;
        if (!co_await read_message(type, deadline)) {
            broken_ = true;
            out.ok = false;
            out.sqlstate = sqlstate::connection_failure;
            out.message = "server connection lost";
            co_return out;
        }
        auto body = proto::as_bytes(body_);
        if (type == 'E') {
            auto e = proto::parse_error_response(body);
            out.ok = false;
            out.sqlstate = e ? e->sqlstate : std::string(sqlstate::protocol_violation);
            out.message = e ? e->message : "server error";
        } else if (type == 'D' && body.size() >= 2) {
            std::vector<std::optional<std::string>> row;
            std::size_t n = proto::get_u16(body.data()), at = 2;
            for (std::size_t i = 0; i < n && at + 4 <= body.size(); ++i) {
                auto len = static_cast<std::int32_t>(proto::get_u32(body.data() + at));
                at += 4;
                if (len < 0) {
                    row.emplace_back(std::nullopt);
                } else if (at + static_cast<std::size_t>(len) <= body.size()) {
                    row.emplace_back(std::string(body_.data() + at, static_cast<std::size_t>(len)));
                    at += static_cast<std::size_t>(len);
                }
            }
            out.rows.push_back(std::move(row));
        } else if (type == 'Z') {
            txn_status_ = body_.empty() ? 'I' : body_[0];
            co_return out;
        }
    }
}

Task<void> ServerConnection::send_cancel(asio::any_io_executor ex, std::string host, int port,
                                                    std::uint32_t pid, std::uint32_t key) {
    pool::Target t;
    t.host = host;
    t.port = port;
    auto deadline = Clock::now() + std::chrono::seconds(5);
    auto opened = co_await with_deadline(open_stream(t), deadline);
    if (!opened || opened->first || !opened->second) co_return;
    std::string out;
    proto::write_cancel_request(out, pid, key);
    auto& s = *opened->second;
    if (co_await s.write_all(asio::buffer(out))) co_return;
    // The server closes the connection once it has signalled the backend.
    char tmp[64];
    co_await with_deadline(s.read_some(asio::buffer(tmp)), deadline);
    s.close();
}

}  // namespace pgrouter::session
