#include "pgrouter/net/stream.hpp"
#include "pgrouter/util/task.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <openssl/x509.h>
#include <netinet/in.h>
#include <poll.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

namespace pgrouter::net {

namespace {
constexpr auto token = task_token;
}

Stream::Stream(tcp_socket s) : s_(std::move(s)) {
    error_code ec;
    auto& sock = std::get<tcp_socket>(s_);
    sock.non_blocking(true, ec);
    sock.set_option(tcp::no_delay(true), ec);
}

Stream::Stream(unix_socket s) : s_(std::move(s)) {
    error_code ec;
    std::get<unix_socket>(s_).non_blocking(true, ec);
}

error_code Stream::tune(const TcpTuning& t) {
    if (is_unix()) return {};
    int fd = native_handle();
    auto set = [fd](int level, int name, int value) -> error_code {
        if (::setsockopt(fd, level, name, &value, sizeof value) != 0)
            return error_code(errno, boost::system::system_category());
        return {};
    };
    error_code ec = set(SOL_SOCKET, SO_KEEPALIVE, t.keepalive ? 1 : 0);
    if (!ec && t.keepalive && t.keepcnt > 0) ec = set(IPPROTO_TCP, TCP_KEEPCNT, t.keepcnt);
    if (!ec && t.keepalive && t.keepidle > 0) ec = set(IPPROTO_TCP, TCP_KEEPIDLE, t.keepidle);
    if (!ec && t.keepalive && t.keepintvl > 0) ec = set(IPPROTO_TCP, TCP_KEEPINTVL, t.keepintvl);
    if (!ec && t.user_timeout_ms > 0) ec = set(IPPROTO_TCP, TCP_USER_TIMEOUT, static_cast<int>(t.user_timeout_ms));
    if (!ec && t.socket_buffer > 0) ec = set(SOL_SOCKET, SO_SNDBUF, t.socket_buffer);
    if (!ec && t.socket_buffer > 0) ec = set(SOL_SOCKET, SO_RCVBUF, t.socket_buffer);
    return ec;
}

Task<error_code> Stream::tls_handshake(asio::ssl::context& ctx,
                                                  asio::ssl::stream_base::handshake_type type,
                                                  const std::string& sni) {
    auto* sock = std::get_if<tcp_socket>(&s_);
    if (!sock) co_return asio::error::operation_not_supported;
    auto tls = std::make_unique<ssl_stream>(std::move(*sock), ctx);
    if (!sni.empty() && type == asio::ssl::stream_base::client)
        SSL_set_tlsext_host_name(tls->native_handle(), sni.c_str());
    auto [ec] = co_await tls->async_handshake(type, token);
    s_ = std::move(tls);
    co_return ec;
}

Task<std::tuple<error_code, std::size_t>> Stream::read_some(asio::mutable_buffer buf) {
    if (auto* s = std::get_if<tcp_socket>(&s_)) return s->async_read_some(buf, token);
    if (auto* u = std::get_if<unix_socket>(&s_)) return u->async_read_some(buf, token);
    return std::get<std::unique_ptr<ssl_stream>>(s_)->async_read_some(buf, token);
}

Task<error_code> Stream::write_all(asio::const_buffer buf) {
    error_code ec;
    if (auto* s = std::get_if<tcp_socket>(&s_)) {
        // Most writes fit in the socket buffer: one syscall, no suspension.
        std::size_t done = s->write_some(buf, ec);
        if (!ec && done == buf.size()) co_return ec;
        if (ec == asio::error::would_block || ec == asio::error::try_again || !ec) {
            auto [ec2, n] = co_await asio::async_write(*s, buf + done, token);
            co_return ec2;
        }
        co_return ec;
    }
    if (auto* u = std::get_if<unix_socket>(&s_)) {
        std::size_t done = u->write_some(buf, ec);
        if (!ec && done == buf.size()) co_return ec;
        if (ec == asio::error::would_block || ec == asio::error::try_again || !ec) {
            auto [ec2, n] = co_await asio::async_write(*u, buf + done, token);
            co_return ec2;
        }
        co_return ec;
    }
    auto [ec2, n] = co_await asio::async_write(*std::get<std::unique_ptr<ssl_stream>>(s_), buf, token);
    co_return ec2;
}

bool Stream::write_now(asio::const_buffer& buf, error_code& ec) {
    ec = {};
    if (std::holds_alternative<std::unique_ptr<ssl_stream>>(s_)) return false;
    std::size_t done = try_write(buf, ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) ec = {};
    if (ec) return true;
    buf += done;
    return buf.size() == 0;
}

Task<error_code> Stream::write_rest(asio::const_buffer buf) {
    if (auto* s = std::get_if<tcp_socket>(&s_)) {
        auto [ec, n] = co_await asio::async_write(*s, buf, token);
        co_return ec;
    }
    if (auto* u = std::get_if<unix_socket>(&s_)) {
        auto [ec, n] = co_await asio::async_write(*u, buf, token);
        co_return ec;
    }
    auto [ec, n] = co_await asio::async_write(*std::get<std::unique_ptr<ssl_stream>>(s_), buf, token);
    co_return ec;
}

std::size_t Stream::try_write(asio::const_buffer buf, error_code& ec) {
    if (auto* s = std::get_if<tcp_socket>(&s_)) return s->write_some(buf, ec);
    if (auto* u = std::get_if<unix_socket>(&s_)) return u->write_some(buf, ec);
    ec = asio::error::operation_not_supported;  // TLS needs the async machinery
    return 0;
}

bool Stream::peer_spoke() {
    char c;
    ssize_t n = ::recv(native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
    return true;  // EOF (0) or unsolicited bytes
}

bool Stream::peer_hung_up() {
    pollfd p{native_handle(), POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

void Stream::cancel() {
    error_code ec;
    std::visit([&](auto& s) {
        if constexpr (std::is_same_v<std::decay_t<decltype(s)>, std::unique_ptr<ssl_stream>>)
            s->next_layer().cancel(ec);
        else
            s.cancel(ec);
    }, s_);
}

void Stream::close() {
    error_code ec;
    std::visit([&](auto& s) {
        if constexpr (std::is_same_v<std::decay_t<decltype(s)>, std::unique_ptr<ssl_stream>>)
            s->next_layer().close(ec);
        else
            s.close(ec);
    }, s_);
}

bool Stream::is_open() const {
    return std::visit([&](auto& s) {
        if constexpr (std::is_same_v<std::decay_t<decltype(s)>, std::unique_ptr<ssl_stream>>)
            return s->next_layer().is_open();
        else
            return s.is_open();
    }, s_);
}

int Stream::native_handle() {
    return std::visit([&](auto& s) -> int {
        if constexpr (std::is_same_v<std::decay_t<decltype(s)>, std::unique_ptr<ssl_stream>>)
            return s->next_layer().native_handle();
        else
            return s.native_handle();
    }, s_);
}

bool Stream::rebind(asio::io_context& ctx) {
    error_code ec;
    if (auto* s = std::get_if<tcp_socket>(&s_)) {
        auto proto = s->local_endpoint(ec).protocol();
        if (ec) return false;
        int fd = s->release(ec);
        if (ec) return false;
        tcp_socket moved(ctx, proto, fd);
        moved.non_blocking(true, ec);
        s_ = std::move(moved);
        return true;
    }
    if (auto* u = std::get_if<unix_socket>(&s_)) {
        int fd = u->release(ec);
        if (ec) return false;
        unix_socket moved(ctx, asio::local::stream_protocol(), fd);
        moved.non_blocking(true, ec);
        s_ = std::move(moved);
        return true;
    }
    return false;
}

std::string Stream::peer_ip() const {
    error_code ec;
    const tcp_socket* s = std::get_if<tcp_socket>(&s_);
    if (!s) {
        if (auto* t = std::get_if<std::unique_ptr<ssl_stream>>(&s_)) s = &(*t)->next_layer();
    }
    if (!s) return "unix";
    auto ep = s->remote_endpoint(ec);
    if (ec) return "?";
    auto a = ep.address();
    if (a.is_v6() && a.to_v6().is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string();
    return a.to_string();
}

std::string Stream::peer_address() const {
    error_code ec;
    const tcp_socket* s = std::get_if<tcp_socket>(&s_);
    if (!s) {
        if (auto* t = std::get_if<std::unique_ptr<ssl_stream>>(&s_)) s = &(*t)->next_layer();
    }
    if (!s) return "unix";
    auto ep = s->remote_endpoint(ec);
    if (ec) return "?";
    return peer_ip() + ":" + std::to_string(ep.port());
}

long Stream::peer_uid() {
    auto* u = std::get_if<unix_socket>(&s_);
    if (!u) return -1;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(u->native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    return static_cast<long>(cred.uid);
}

SSL* Stream::ssl_handle() {
    auto* t = std::get_if<std::unique_ptr<ssl_stream>>(&s_);
    return t ? (*t)->native_handle() : nullptr;
}

std::string Stream::peer_cert_common_name() const {
    auto* t = std::get_if<std::unique_ptr<ssl_stream>>(&s_);
    if (!t) return {};
    X509* cert = SSL_get1_peer_certificate(const_cast<ssl_stream&>(**t).native_handle());
    if (!cert) return {};
    char buf[256] = {0};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf - 1);
    X509_free(cert);
    return buf;
}

bool Stream::peer_cert_verified() const {
    auto* t = std::get_if<std::unique_ptr<ssl_stream>>(&s_);
    if (!t) return false;
    auto* ssl = const_cast<ssl_stream&>(**t).native_handle();
    X509* cert = SSL_get1_peer_certificate(ssl);
    if (!cert) return false;
    X509_free(cert);
    return SSL_get_verify_result(ssl) == X509_V_OK;
}

}  // namespace pgrouter::net
