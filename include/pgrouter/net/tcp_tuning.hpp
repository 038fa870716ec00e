// TCP options for client and server connections (no Asio: included by the runtime).
#pragma once

namespace pgrouter::net {

// Dead-peer detection on a TCP connection: keepalive probes while it is idle, and a
// bound on how long sent data may stay unacknowledged. 0 = the OS default.
struct TcpTuning {
    bool keepalive = true;
    int keepcnt = 0;          // unanswered probes before the connection is dropped
    int keepidle = 0;         // seconds idle before the first probe
    int keepintvl = 0;        // seconds between probes
    unsigned user_timeout_ms = 0;  // TCP_USER_TIMEOUT
    int socket_buffer = 0;         // SO_SNDBUF and SO_RCVBUF (bytes)
};

}  // namespace pgrouter::net
