"""Dead-peer detection on TCP connections: tcp_keepalive, tcp_keepcnt, tcp_keepidle,
tcp_keepintvl and tcp_user_timeout (PgBouncer's keys; tcp_user_timeout is in seconds
in pgrouter.toml and in milliseconds in pgbouncer.ini).

A peer that vanishes without a FIN or RST (a host powered off, a network cut) is
simulated with a netfilter rule that drops every packet of one TCP connection: the
kernel then sees exactly what it would see on a real network. The socket options
themselves are read back from the pooler's own sockets (pidfd_getfd)."""

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import time

import pytest

import helpers
import pgwire
from helpers import wait_until

SYS_PIDFD_GETFD = 438  # x86_64 and aarch64


def pooler_sockets(pid, listening=False):
    """Every connected TCP socket of process `pid`, duplicated into this process:
    a list of (local (host, port), peer (host, port), socket). With `listening`:
    its listening TCP sockets instead, as (local, None, socket)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    out = []
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                err = ctypes.get_errno()
                if err in (1, 38):  # EPERM, ENOSYS: not allowed or not available here
                    pytest.skip(f"pidfd_getfd: {os.strerror(err)}")
                continue  # the fd was closed meanwhile
            s = socket.socket(fileno=fd)
            if s.family not in (socket.AF_INET, socket.AF_INET6) or s.type != socket.SOCK_STREAM:
                s.close()
                continue
            try:
                peer = s.getpeername()[:2]
            except OSError:  # a listening socket
                peer = None
            if (peer is None) == listening:
                out.append((s.getsockname()[:2], peer, s))
            else:
                s.close()
    finally:
        os.close(pidfd)
    return out


def tcp_options(s):
    return {
        "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "keepidle": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        "keepintvl": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        "keepcnt": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        "user_timeout_ms": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    }


def side_options(p, pg, client_port, read=tcp_options):
    """TCP options (`read` of a socket) of the pooler's socket to the client at
    `client_port`, and of each of its sockets to the server: (client, [servers])."""
    socks = pooler_sockets(p.proc.pid)
    try:
        client = [read(s) for local, peer, s in socks if local[1] == p.port and peer[1] == client_port]
        servers = [read(s) for local, peer, s in socks if peer[1] == pg.port]
    finally:
        for _, _, s in socks:
            s.close()
    assert len(client) == 1, f"the pooler's socket to client port {client_port} not found"
    assert servers, "the pooler holds no socket to the server"
    return client[0], servers


def local_port(conn):
    """The client-side port of a psycopg2 connection."""
    s = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        return s.getsockname()[1]
    finally:
        s.close()


@contextlib.contextmanager
def cable_cut(port_a, port_b):
    """Drops every TCP packet between local ports a and b, both ways: the peers see
    silence, as when a host vanishes from the network (no FIN, no RST)."""
    if not helpers.running_as_root():
        pytest.skip("cutting a connection needs netfilter (root)")
    nft = shutil.which("nft") or "/usr/sbin/nft"
    if not os.path.exists(nft):
        pytest.fail("nft not found: install nftables (scripts/test.sh does)", pytrace=False)
    table = f"pgrouter_it_{os.getpid()}_{port_a}_{port_b}"
    rules = (f"table inet {table} {{\n"
             f"  chain out {{\n"
             f"    type filter hook output priority 0; policy accept;\n"
             f"    tcp sport {port_a} tcp dport {port_b} drop\n"
             f"    tcp sport {port_b} tcp dport {port_a} drop\n"
             f"  }}\n"
             f"}}\n")
    r = subprocess.run([nft, "-f", "-"], input=rules, text=True, capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"this machine refuses netfilter rules: {r.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([nft, "delete", "table", "inet", table], capture_output=True, timeout=30)


def assert_new_server(p, old_pid):
    """A new client is served, by another backend than `old_pid`."""
    c = p.connect()
    try:
        with c.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            assert cur.fetchone()[0] != old_pid
    finally:
        c.close()


def server_ports(p, pg):
    """Local ports of the pooler's connections to the server."""
    socks = pooler_sockets(p.proc.pid)
    for _, _, s in socks:
        s.close()
    return [local[1] for local, peer, _ in socks if peer[1] == pg.port]


# --------------------------------------------------------------------------- the options

@pytest.mark.parametrize("fmt", ["toml", "ini"])
def test_keepalive_options_reach_client_and_server_sockets(pgrouter, pg, fmt):
    p = pgrouter({"tcp_keepalive": True, "tcp_keepidle": 7, "tcp_keepintvl": 3, "tcp_keepcnt": 4,
                  "tcp_user_timeout": 2.5, "workers": 1}, fmt=fmt)
    c = p.connect(autocommit=False)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT 1")  # in a transaction: the server stays linked
        want = {"keepalive": 1, "keepidle": 7, "keepintvl": 3, "keepcnt": 4, "user_timeout_ms": 2500}
        client, servers = side_options(p, pg, local_port(c))
        assert client == want
        assert servers == [want] * len(servers)
        c.rollback()
        if p.kind == "pgrouter":
            # Changeable: a RELOAD applies to connections opened after it, as in PgBouncer.
            p.settings.update({"tcp_keepidle": 11, "tcp_user_timeout": 0})
            p.write_config(None)
            p.admin("RELOAD")
            p.admin("RECONNECT")  # servers opened from now on get the new values
            c2 = p.connect(autocommit=False)
            try:
                with c2.cursor() as cur:
                    cur.execute("SELECT 1")
                client2, servers2 = side_options(p, pg, local_port(c2))
                new = dict(want, keepidle=11, user_timeout_ms=0)
                assert client2 == new
                assert new in servers2
                assert side_options(p, pg, local_port(c))[0] == want  # an open connection keeps its own
            finally:
                c2.close()
    finally:
        c.close()


def test_keepalive_is_on_by_default_and_can_be_turned_off(pgrouter, pg):
    on = pgrouter({"workers": 1})
    off = pgrouter({"workers": 1, "tcp_keepalive": False})
    conns = []
    try:
        for p, want in ((on, 1), (off, 0)):
            c = p.connect(autocommit=False)
            conns.append(c)
            with c.cursor() as cur:
                cur.execute("SELECT 1")
            client, servers = side_options(p, pg, local_port(c))
            assert client["keepalive"] == want, p.settings
            assert [s["keepalive"] for s in servers] == [want] * len(servers)
            assert client["user_timeout_ms"] == 0 and {s["user_timeout_ms"] for s in servers} == {0}
    finally:
        for c in conns:
            c.close()


def buffer_sizes(s):
    return (s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF), s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


@pytest.mark.parametrize("fmt", ["toml", "ini"])
def test_tcp_socket_buffer_sets_both_buffers_on_both_sides(pgrouter, pg, fmt):
    p = pgrouter({"tcp_socket_buffer": 50000, "workers": 1}, fmt=fmt)
    c = p.connect(autocommit=False)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT 1")  # in a transaction: the server stays linked
        client, servers = side_options(p, pg, local_port(c), read=buffer_sizes)
        want = (100000, 100000)  # Linux doubles what setsockopt asked for (bookkeeping overhead)
        assert client == want
        assert servers == [want] * len(servers)
    finally:
        c.close()


def listener_defer_accept(p):
    socks = pooler_sockets(p.proc.pid, listening=True)
    try:
        vals = [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) for local, _, s in socks
                if local[1] == p.port]
    finally:
        for _, _, s in socks:
            s.close()
    assert vals, "no TCP listener of the pooler found"
    return vals


@pytest.mark.pgrouter_only("PgBouncer 1.18 defers by default on Linux; pgrouter does not")
def test_tcp_defer_accept_on_the_listeners(pgrouter, pg):
    on = pgrouter({"tcp_defer_accept": True, "workers": 2}, fmt="ini")
    off = pgrouter({"workers": 2})
    # Set in seconds, kept by the kernel as SYN-ACK retransmissions: reads back as the
    # retransmission schedule's time that covers 45 s.
    assert all(v >= 45 for v in listener_defer_accept(on)), listener_defer_accept(on)
    assert listener_defer_accept(off) == [0] * len(listener_defer_accept(off))
    c = on.connect()  # clients speak first: served as usual
    try:
        with c.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        c.close()


# --------------------------------------------------------------------------- dead peers

def test_tcp_user_timeout_ends_a_query_whose_server_stopped_answering(pgrouter, pg):
    """A query sent to a server that no longer answers (its host gone): with
    tcp_user_timeout the connection is given up after that long, the client gets an
    error, and the pool serves the next client from a new server. Without it the
    client would hang for the kernel's retransmission limit (about 15 minutes)."""
    p = pgrouter({"tcp_user_timeout": 1.5, "default_pool_size": 1, "workers": 1, "query_timeout": 0,
                  "server_connect_timeout": 5})
    c = p.wire(timeout=120)
    pid = None
    try:
        c.query("BEGIN")
        pid = int(c.scalar("SELECT pg_backend_pid()"))
        port = pg.sql("SELECT client_port FROM pg_stat_activity WHERE pid = %s", (pid,))[0][0]
        with cable_cut(port, pg.port):
            started = time.monotonic()
            c.send(pgwire.query_msg("SELECT 1"))
            msgs = c.wait_closed()
            took = time.monotonic() - started
        # The kernel gives up at the first retransmission after 1.5 s; far below the
        # 15 minutes it takes without the option.
        assert took < 60, f"the dead server was given up only after {took:.1f}s"
        errors = [pgwire.PgError(pgwire.parse_fields(body)) for t, body in msgs if t == b"E"]
        assert [t for t, _ in msgs] == [b"E"], msgs
        assert errors[0].sqlstate == helpers.sqlstate("08006"), errors[0].fields
        assert "server" in errors[0].message
        assert_new_server(p, pid)
    finally:
        c.close()
        if pid:
            pg.sql("SELECT pg_terminate_backend(%s)", (pid,))


def server_socket_inodes(p, pg):
    """Inodes of the pooler's sockets connected to the server."""
    socks = pooler_sockets(p.proc.pid)
    inodes = [os.fstat(s.fileno()).st_ino for _, peer, s in socks if peer[1] == pg.port]
    for _, _, s in socks:
        s.close()
    return inodes


def open_inodes(pid):
    """Inodes of the sockets process `pid` has open."""
    out = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def test_keepalive_drops_an_idle_server_whose_host_vanished(pgrouter, pg):
    """An idle pooled server whose host disappears is found dead by keepalive probes
    and dropped from the pool (its socket closed), instead of being handed to the
    next client."""
    p = pgrouter({"tcp_keepidle": 1, "tcp_keepintvl": 1, "tcp_keepcnt": 2, "default_pool_size": 1,
                  "workers": 1, "server_check_delay": 3600})
    c = p.connect()
    with c.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    c.close()
    try:
        ports = server_ports(p, pg)
        assert len(ports) == 1, ports
        inodes = server_socket_inodes(p, pg)
        wait_until(lambda: (p.pool_row() or {}).get("sv_idle") == 1, 10, "the server idle in the pool")
        with cable_cut(ports[0], pg.port):
            # 1 s idle + 2 unanswered probes 1 s apart: dead after about 3 s.
            wait_until(lambda: (p.pool_row() or {}).get("sv_idle") == 0, 30, "the dead server dropped from the pool")
            row = p.pool_row()
            assert row["sv_active"] == 0 and row["sv_used"] == 0, row
            wait_until(lambda: not open_inodes(p.proc.pid) & set(inodes), 10, "the dead server's socket closed")
        assert_new_server(p, pid)
    finally:
        pg.sql("SELECT pg_terminate_backend(%s)", (pid,))


def test_keepalive_ends_a_session_whose_client_vanished(pgrouter, pg):
    """Session pooling, one server: a client whose host vanishes while idle holds that
    server until keepalive finds it dead; then the session ends, the server goes
    back to the pool (reset) and the next client gets it."""
    p = pgrouter({"pool_mode": "session", "tcp_keepidle": 1, "tcp_keepintvl": 1, "tcp_keepcnt": 2,
                  "default_pool_size": 1, "workers": 1, "query_wait_timeout": 60})
    c = p.connect()
    try:
        with c.cursor() as cur:
            cur.execute("SET application_name = 'vanishing'")
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        # Let the client's (delayed) ACK of that answer through first: keepalive probes
        # only start on a connection with nothing unacknowledged (else retransmissions
        # run, bounded by tcp_user_timeout, tested above).
        time.sleep(1)
        with cable_cut(local_port(c), p.port):
            wait_until(lambda: (p.pool_row() or {}).get("cl_active") == 0, 30, "the vanished client's session ended")
            row = p.pool_row()
            assert row["sv_active"] == 0, row
        if p.kind == "pgrouter":
            assert "closing because: client connection lost: Connection timed out" in p.log(), p.log()[-2000:]
        c2 = p.connect()
        try:
            with c2.cursor() as cur:
                cur.execute("SELECT pg_backend_pid(), current_setting('application_name')")
                got_pid, app = cur.fetchone()
            assert got_pid == pid, "the server was not given back to the pool"
            assert app != "vanishing", "the server went back without its reset"
        finally:
            c2.close()
    finally:
        c.close()
