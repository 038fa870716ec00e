// A byte stream to a client or a server: TCP, unix socket, or TLS over TCP.
#pragma once

#include "pgrouter/util/task.hpp"
#include "pgrouter/net/tcp_tuning.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <memory>
#include <string>
#include <tuple>
#include <system_error>
#include <variant>

namespace pgrouter::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
// Sockets on their io_context's own executor type rather than any_io_executor: the
// socket and every operation pending on it (one per idle client) are smaller.
using executor = asio::io_context::executor_type;
using tcp_socket = asio::basic_stream_socket<tcp, executor>;
using unix_socket = asio::basic_stream_socket<asio::local::stream_protocol, executor>;
using ssl_stream = asio::ssl::stream<tcp_socket>;
using boost::system::error_code;

class Stream {
public:
    // Sockets are switched to non-blocking mode (write_all tries a direct write
    // first) and TCP ones get TCP_NODELAY.
    explicit Stream(tcp_socket s);
    explicit Stream(unix_socket s);
    Stream(Stream&&) = default;
    Stream& operator=(Stream&&) = default;

    // Wraps the TCP socket in TLS and runs the handshake (client or server role).
    Task<error_code> tls_handshake(asio::ssl::context& ctx, asio::ssl::stream_base::handshake_type type,
                                              const std::string& sni);
    // Not a coroutine itself: it hands back Asio's own operation, so a parked
    // read costs no extra frame.
    Task<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer buf);
    Task<error_code> write_all(asio::const_buffer buf);
    // The hot path's write, in two steps so that the usual case costs no coroutine frame:
    // write_now() writes what the socket takes at once and returns true when that was
    // everything (or the write failed: `ec`); otherwise `buf` is left at what remains,
    // for write_rest(), which waits for the socket (TLS: all of it goes there).
    bool write_now(asio::const_buffer& buf, error_code& ec);
    Task<error_code> write_rest(asio::const_buffer buf);
    // Non-blocking attempt to write everything; returns bytes written (may be partial).
    std::size_t try_write(asio::const_buffer buf, error_code& ec);

    // For a connection that should be silent (an idle server): true when the peer
    // closed it or sent something unasked (a termination notice). One MSG_PEEK.
    bool peer_spoke();
    // True when the peer has shut down its side (FIN or reset received), even with
    // bytes still unread. One poll().
    bool peer_hung_up();
    // Applies `t` to a TCP connection (TLS included); nothing for a unix socket.
    error_code tune(const TcpTuning& t);
    void cancel();
    void close();
    bool is_open() const;
    bool is_unix() const { return std::holds_alternative<unix_socket>(s_); }
    bool is_tls() const { return std::holds_alternative<std::unique_ptr<ssl_stream>>(s_); }
    int native_handle();
    // The plain socket underneath, for callback-style operations (null for TLS).
    tcp_socket* tcp_stream_socket() { return std::get_if<tcp_socket>(&s_); }
    unix_socket* unix_stream_socket() { return std::get_if<unix_socket>(&s_); }
    // The TCP socket under a plain or a TLS stream (null for unix).
    tcp_socket* lowest_tcp_socket() {
        if (auto* t = std::get_if<tcp_socket>(&s_)) return t;
        if (auto* t = std::get_if<std::unique_ptr<ssl_stream>>(&s_)) return &(*t)->next_layer();
        return nullptr;
    }
    // Detaches the plain socket from its io_context and re-creates it on another
    // (moving a connection between workers). Not possible for TLS: returns false.
    bool rebind(asio::io_context& ctx);
    // Peer address text ("127.0.0.1:5432" / "unix"); client certificate CN when TLS.
    std::string peer_address() const;
    std::string peer_ip() const;
    std::string peer_cert_common_name() const;
    bool peer_cert_verified() const;
    SSL* ssl_handle();
    // The peer's OS user id on a unix socket (SO_PEERCRED); -1 otherwise.
    long peer_uid();

private:
    std::variant<tcp_socket, unix_socket, std::unique_ptr<ssl_stream>> s_;
};

}  // namespace pgrouter::net
