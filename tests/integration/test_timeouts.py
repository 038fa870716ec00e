"""Timeouts: client_idle_timeout, idle_transaction_timeout, query_timeout,
client_login_timeout, server_lifetime, server_idle_timeout, server_connect_timeout."""

import socket
import struct
import time

import psycopg2
import pytest

import helpers
import pgwire
from helpers import sqlstate


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def closed_within(c, lo, hi):
    """Wait for the pooler to close c; return (seconds, messages). Fails outside [lo, hi]."""
    t0 = time.monotonic()
    try:
        msgs = c.wait_closed(hi + 2)
    except pgwire.WireError as e:
        pytest.fail(f"connection not closed within {hi + 2}s: {e}")
    elapsed = time.monotonic() - t0
    assert lo <= elapsed <= hi, f"closed after {elapsed:.1f}s, expected {lo}-{hi}s"
    return elapsed, msgs


def errors(msgs):
    return [pgwire.parse_fields(p) for t, p in msgs if t == b"E"]


def test_client_idle_timeout(pgrouter):
    p = pgrouter({"client_idle_timeout": 1})
    c = p.wire()
    try:
        assert c.scalar("SELECT 1") == "1"
        closed_within(c, 0.5, 6)
    finally:
        c.close()
    # An active client is not idle.
    c = p.connect()
    try:
        for _ in range(4):
            assert one(c, "SELECT 1") == 1
            time.sleep(0.4)
    finally:
        c.close()


def test_idle_transaction_timeout(pgrouter, pg):
    p = pgrouter({"idle_transaction_timeout": 1, "default_pool_size": 1})
    c = p.wire()
    try:
        assert c.query("BEGIN").status == "T"
        c.query("SELECT 1")
        time.sleep(2.5)
        try:
            c.send(pgwire.query_msg("SELECT 1"))
            msgs = c.wait_closed(8)
        except (pgwire.WireError, OSError):
            msgs = []
        errs = errors(msgs)
        if not helpers.is_pgbouncer():
            assert all(e.get("C") == "25P03" for e in errs), errs
        assert not any(t == b"D" for t, _ in msgs), "a query ran in a transaction past idle_transaction_timeout"
    finally:
        c.close()
    # The server was rolled back or closed: the next client is not inside that transaction.
    c2 = p.connect()
    try:
        assert one(c2, "SELECT txid_current_if_assigned() IS NULL") is True
        assert one(c2, "SELECT now() = statement_timestamp()") is True
    finally:
        c2.close()


def test_query_timeout(pgrouter, pg):
    p = pgrouter({"query_timeout": 1, "default_pool_size": 1})
    c = p.connect()
    t0 = time.monotonic()
    try:
        with pytest.raises(psycopg2.Error) as e:
            one(c, "SELECT pg_sleep(5.01)")
        elapsed = time.monotonic() - t0
        assert 0.8 <= elapsed <= 4, f"query_timeout=1 fired after {elapsed:.1f}s"
        if not helpers.is_pgbouncer():
            # SPEC: the query is cancelled (PgBouncer 1.18 instead drops client and server).
            assert e.value.pgcode == "57014", (e.value.pgcode, str(e.value))
    finally:
        c.close()
    if not helpers.is_pgbouncer():
        deadline = time.monotonic() + 3
        while pg.sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5.01)' "
                     "AND state = 'active'")[0][0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pg.sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5.01)' "
                      "AND state = 'active'")[0][0] == 0, "the timed-out query still runs on the server"
    c2 = p.connect()
    try:
        assert one(c2, "SELECT 1") == 1
    finally:
        c2.close()


def test_client_login_timeout_silent_socket(pgrouter):
    p = pgrouter({"client_login_timeout": 1})
    c = p.raw()
    try:
        closed_within(c, 0.5, 6)
    finally:
        c.close()


def test_client_login_timeout_during_auth(pgrouter):
    p = pgrouter({"client_login_timeout": 1, "auth_type": "md5"})
    c = p.raw()
    try:
        c.send(pgwire.startup_packet({"user": "app_md5", "database": "testdb"}))
        t, payload = c.read_message()
        assert t == b"R" and struct.unpack("!I", payload[:4])[0] == 5
        closed_within(c, 0.3, 6)
    finally:
        c.close()


def test_server_lifetime(pgrouter):
    p = pgrouter({"server_lifetime": 1, "default_pool_size": 1})
    c = p.connect()
    try:
        pid1 = one(c, "SELECT pg_backend_pid()")
        time.sleep(2.5)
        pid2 = one(c, "SELECT pg_backend_pid()")
        assert pid1 != pid2, "server_lifetime=1: the server should have been replaced"
    finally:
        c.close()


def test_server_lifetime_not_cut_mid_transaction(pgrouter):
    p = pgrouter({"server_lifetime": 1, "default_pool_size": 1})
    c = p.connect()
    try:
        with c.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
            time.sleep(2)
            cur.execute("SELECT pg_backend_pid()")
            assert cur.fetchone()[0] == pid
            cur.execute("COMMIT")
    finally:
        c.close()


def test_server_idle_timeout(pgrouter, pg):
    p = pgrouter({"server_idle_timeout": 1, "default_pool_size": 1})
    c = p.connect()
    try:
        pid1 = one(c, "SELECT pg_backend_pid()")
        deadline = time.monotonic() + 8
        while pid1 in pg.backend_pids("app_md5") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pid1 not in pg.backend_pids("app_md5"), "idle server not closed after server_idle_timeout=1"
        assert one(c, "SELECT pg_backend_pid()") != pid1
    finally:
        c.close()


def unused_port():
    return helpers.free_port()


def test_server_unreachable(pgrouter):
    port = unused_port()   # nothing listens there
    p = pgrouter({"server_connect_timeout": 1, "server_login_retry": 1, "query_wait_timeout": 5},
                 databases={"testdb": {}, "deaddb": {"dbname": "testdb", "port": port}})
    t0 = time.monotonic()
    with pytest.raises(pgwire.PgError) as e:
        c = p.wire(dbname="deaddb", timeout=20)
        try:
            c.scalar("SELECT 1", timeout=20)
        finally:
            c.terminate()
    elapsed = time.monotonic() - t0
    assert elapsed <= 12, f"error after {elapsed:.1f}s"
    assert e.value.sqlstate == sqlstate("08006"), e.value
    # The other database is unaffected.
    c = p.wire()
    try:
        assert c.scalar("SELECT 1") == "1"
    finally:
        c.terminate()


def test_server_connect_timeout_blackhole(pgrouter):
    """A server that accepts TCP but never answers the startup packet."""
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    port = unused_port()
    hole.bind(("127.0.0.1", port))
    hole.listen(64)
    try:
        p = pgrouter({"server_connect_timeout": 1, "server_login_retry": 1, "query_wait_timeout": 8},
                     databases={"testdb": {}, "holedb": {"dbname": "testdb", "port": port}})
        t0 = time.monotonic()
        with pytest.raises(pgwire.PgError) as e:
            c = p.wire(dbname="holedb", timeout=20)
            try:
                c.scalar("SELECT 1", timeout=20)
            finally:
                c.terminate()
        elapsed = time.monotonic() - t0
        assert elapsed <= 12, f"error after {elapsed:.1f}s"
        assert e.value.sqlstate == sqlstate("08006"), e.value
    finally:
        hole.close()


@pytest.mark.pgrouter_only("transaction_timeout is newer than PgBouncer 1.18")
@pytest.mark.parametrize("shape", ["one-long-statement", "busy-transaction"])
def test_transaction_timeout(pgrouter, pg, shape):
    """transaction_timeout = 1: a statement outside a transaction, or a transaction
    kept busy with short statements, that runs past it ends the session with 25P04 and
    its server is closed (the backend goes away); short transactions are unaffected."""
    p = pgrouter({"transaction_timeout": 1, "default_pool_size": 1})
    short = p.wire()
    for _ in range(3):  # short ones, spread over more than the timeout
        assert short.query("BEGIN").status == "T"
        assert short.query("COMMIT").status == "I"
        time.sleep(0.5)
    pid = int(short.scalar("SELECT pg_backend_pid()"))
    short.terminate()
    c = p.wire()
    try:
        t0 = time.monotonic()
        if shape == "one-long-statement":
            c.send(pgwire.query_msg("SELECT pg_sleep(10)"))
            msgs = c.wait_closed(10)
        else:
            assert c.query("BEGIN").status == "T"
            msgs = []
            while time.monotonic() - t0 < 8:
                c.send(pgwire.query_msg("SELECT pg_sleep(0.2)"))
                closed = False
                while True:  # up to ReadyForQuery, or the end of the connection
                    m = c.read_message()
                    if m is None:
                        closed = True
                        break
                    msgs.append(m)
                    if m[0] == b"Z":
                        break
                if closed:
                    break
        elapsed = time.monotonic() - t0
        assert 0.9 <= elapsed <= 5, f"ended after {elapsed:.1f} s"
        assert [e.get("C") for e in errors(msgs)] == ["25P04"], msgs
    finally:
        c.close()
    # The server in the middle of it was closed, not pooled.
    helpers.wait_until(lambda: pg.sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])[0][0] == 0,
                       10, "the server of the timed-out transaction closed")
    c2 = p.connect()
    try:
        assert one(c2, "SELECT txid_current_if_assigned() IS NULL") is True
    finally:
        c2.close()
