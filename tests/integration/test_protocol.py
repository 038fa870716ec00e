"""Wire protocol through the pooler: simple and extended query, errors, notices,
LISTEN/NOTIFY, large messages, COPY, and the startup-packet edge cases."""

import hashlib
import os
import select
import struct
import time
import uuid

import psycopg2
import psycopg2.errors
import pytest

import helpers
import pgwire
from pgwire import (bind_msg, close_msg, describe_msg, execute_msg, flush_msg, parse_msg, startup_packet,
                    sync_msg)


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


@pytest.fixture
def table(pg):
    """A fresh table in testdb, writable by every test role; dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    pg.sql(f"CREATE TABLE {name} (id int, payload text)", dbname="testdb")
    pg.sql(f"GRANT ALL ON {name} TO PUBLIC", dbname="testdb")
    yield name
    pg.sql(f"DROP TABLE IF EXISTS {name}", dbname="testdb")


# --------------------------------------------------------------------------- simple query

def test_simple_query(pgrouter):
    p = pgrouter()
    with p.connect() as c:
        assert one(c, "SELECT 'hello'::text") == "hello"
        assert one(c, "SELECT 1; SELECT 2; SELECT 3") == 3
        with c.cursor() as cur:
            cur.execute("SELECT g, g * g FROM generate_series(1, 100) g")
            rows = cur.fetchall()
        assert rows[-1] == (100, 10000) and len(rows) == 100


def test_simple_query_raw_messages(pgrouter):
    p = pgrouter()
    c = p.wire()
    try:
        r = c.query("SELECT 1 AS a; SELECT 2 AS b")
        assert r.types() == "TDCTDCZ"
        assert r.rows == [["1"], ["2"]] and r.tags == ["SELECT 1", "SELECT 1"]
        r = c.query("")
        assert r.types() == "IZ"
        r = c.query("SELECT 1/0; SELECT 2")
        assert r.error and r.error.sqlstate == "22012" and r.status == "I"
        assert c.scalar("SELECT 3") == "3"
    finally:
        c.terminate()


def test_error_mid_transaction_and_recovery(pgrouter):
    p = pgrouter({"default_pool_size": 1})
    c = p.connect()
    try:
        with c.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT 1")
            with pytest.raises(psycopg2.errors.DivisionByZero):
                cur.execute("SELECT 1/0")
            with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
                cur.execute("SELECT 1")
            cur.execute("ROLLBACK")
            cur.execute("SELECT 42")
            assert cur.fetchone()[0] == 42
            # An error left unrolled-back, then the client goes away: the next
            # client on the same (single) server must not inherit the aborted transaction.
            cur.execute("BEGIN")
            with pytest.raises(psycopg2.errors.UndefinedTable):
                cur.execute("SELECT * FROM no_such_table_xyz")
    finally:
        c.close()
    c2 = p.connect()
    try:
        assert one(c2, "SELECT 7") == 7
    finally:
        c2.close()


def test_notice_is_forwarded(pgrouter):
    p = pgrouter()
    c = p.connect()
    try:
        with c.cursor() as cur:
            cur.execute("DO $$ BEGIN RAISE NOTICE 'hello from the server %', 42; END $$")
        assert any("hello from the server 42" in n for n in c.notices), c.notices
    finally:
        c.close()


def _dribble(c, data, step, pause=0.02):
    for i in range(0, len(data), step):
        c.send(data[i:i + step])
        time.sleep(pause)


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_messages_arriving_in_pieces_with_pauses(pgrouter, mode):
    """Bytes that come after a read has emptied the socket, in both directions, must
    still be read (a reader that skips the next read attempt after a short read was
    tried and rejected: bench/RESULTS.md, 20:10 UTC). Client: queries and an extended
    pipeline sent a few bytes at a time, the first query of the session and later ones.
    Server: an answer whose parts are sent 0.3 s apart (a NOTICE, then the rest after a
    sleep)."""
    p = pgrouter({"pool_mode": mode, "default_pool_size": 1})
    c = p.wire()
    try:
        for step in (1, 3, 7):
            _dribble(c, pgwire.query_msg(f"SELECT {step} * 2"), step)
            r = c.read_until_ready()
            assert r.rows == [[str(step * 2)]] and r.status == "I", r.types()
        pipeline = (parse_msg("SELECT $1::int + 1") + bind_msg(("41",)) + execute_msg() + sync_msg()) * 2
        _dribble(c, pipeline, 5, pause=0.005)
        for _ in range(2):
            r = c.read_until_ready()
            assert r.rows == [["42"]] and r.types() == "12DCZ"
        started = time.monotonic()
        c.send(pgwire.query_msg(
            "DO $$ BEGIN RAISE NOTICE 'first part'; PERFORM pg_sleep(0.3); RAISE NOTICE 'second part'; END $$;"
            " SELECT 'after the pause'"))
        r = c.read_until_ready(timeout=10)
        notices = [m for m in r.messages if m[0] == b"N"]
        assert len(notices) == 2 and b"second part" in notices[1][1], r.types()
        assert r.rows == [["after the pause"]] and r.status == "I"
        assert time.monotonic() - started >= 0.3
        # The server, idle in the pool meanwhile, still answers the next client write.
        time.sleep(0.2)
        _dribble(c, pgwire.query_msg("SELECT 'still here'"), 4)
        assert c.read_until_ready().rows == [["still here"]]
    finally:
        c.terminate()


def test_listen_notify_session_mode(pgrouter):
    p = pgrouter({"pool_mode": "session"})
    listener, sender = p.connect(), p.connect()
    try:
        with listener.cursor() as cur:
            cur.execute("LISTEN pgrouter_chan")
        with sender.cursor() as cur:
            cur.execute("NOTIFY pgrouter_chan, 'payload-1'")
        deadline = time.monotonic() + 10
        while not listener.notifies and time.monotonic() < deadline:
            select.select([listener], [], [], 0.5)
            listener.poll()
        assert listener.notifies, "notification not delivered through the pooler"
        n = listener.notifies.pop(0)
        assert (n.channel, n.payload) == ("pgrouter_chan", "payload-1")
    finally:
        listener.close()
        sender.close()


# --------------------------------------------------------------------------- extended query

def test_extended_unnamed_statement(pgrouter):
    p = pgrouter()
    c = p.wire()
    try:
        c.send(parse_msg("SELECT $1::int + $2::int AS s", param_types=(23, 23)) + bind_msg(("1", "2"))
               + describe_msg("P") + execute_msg() + sync_msg())
        r = c.read_until_ready()
        assert r.types() == "12TDCZ", r.types()
        assert r.rows == [["3"]]
        # Describe of a statement: ParameterDescription + RowDescription.
        c.send(parse_msg("SELECT $1::text, 2") + describe_msg("S") + sync_msg())
        r = c.read_until_ready()
        assert r.types() == "1tTZ", r.types()
        assert c.scalar("SELECT 'simple again'") == "simple again"
    finally:
        c.terminate()


def test_extended_pipeline_with_error(pgrouter):
    """Three Sync-delimited units in one write; the failing one is skipped up to its Sync only."""
    p = pgrouter({"default_pool_size": 1})
    c = p.wire()
    try:
        good = parse_msg("SELECT $1::int * 10") + bind_msg(("4",)) + execute_msg() + sync_msg()
        bad = parse_msg("SELECT * FROM no_such_table_abc") + bind_msg() + execute_msg() + sync_msg()
        c.send(good + bad + good)
        r1, r2, r3 = c.read_until_ready(), c.read_until_ready(), c.read_until_ready()
        assert r1.rows == [["40"]] and r1.types() == "12DCZ"
        assert r2.types() == "EZ" and r2.error.sqlstate == "42P01"
        assert r3.rows == [["40"]] and r3.status == "I"
    finally:
        c.terminate()


def test_extended_flush_before_sync(pgrouter):
    p = pgrouter({"default_pool_size": 1})
    c = p.wire()
    try:
        c.send(parse_msg("SELECT 5") + bind_msg() + execute_msg() + flush_msg())
        got = [c.read_message() for _ in range(4)]
        assert [t for t, _ in got] == [b"1", b"2", b"D", b"C"], got
        c.send(sync_msg())
        r = c.read_until_ready()
        assert r.types() == "Z" and r.status == "I"
    finally:
        c.terminate()


def test_extended_portal_suspended_inside_transaction(pgrouter):
    p = pgrouter({"default_pool_size": 1})
    c = p.wire()
    other = p.wire()
    try:
        assert c.query("BEGIN").status == "T"
        c.send(parse_msg("SELECT g FROM generate_series(1, 5) g") + bind_msg(portal="p1")
               + execute_msg("p1", 2) + sync_msg())
        r = c.read_until_ready()
        assert r.types() == "12DDsZ" and r.rows == [["1"], ["2"]] and r.status == "T"
        c.send(execute_msg("p1", 2) + sync_msg())
        r = c.read_until_ready()
        assert r.rows == [["3"], ["4"]] and r.status == "T"
        c.send(close_msg("P", "p1") + sync_msg())
        assert c.read_until_ready().types() == "3Z"
        assert c.query("COMMIT").status == "I"
        assert other.scalar("SELECT 1") == "1"
    finally:
        c.terminate()
        other.terminate()


def test_extended_named_statement_session_mode(pgrouter):
    p = pgrouter({"pool_mode": "session"})
    c = p.wire()
    try:
        c.send(parse_msg("SELECT $1::int + 100", name="st_add") + sync_msg())
        assert c.read_until_ready().types() == "1Z"
        for i in range(3):
            c.send(bind_msg((str(i),), stmt="st_add") + execute_msg() + sync_msg())
            r = c.read_until_ready()
            assert r.rows == [[str(100 + i)]], r.types()
        c.send(close_msg("S", "st_add") + sync_msg())
        assert c.read_until_ready().types() == "3Z"
    finally:
        c.terminate()


@pytest.mark.pgrouter_only("protocol-level named prepared statements in transaction mode "
                           "(max_prepared_statements; PgBouncer 1.21+, not 1.18)")
def test_extended_named_statements_transaction_mode(pgrouter, pg):
    p = pgrouter({"pool_mode": "transaction", "default_pool_size": 1})
    a, b = p.wire(), p.wire()
    try:
        # Same statement name, different text, on two clients sharing one server.
        a.send(parse_msg("SELECT 'a:' || $1::text", name="st") + sync_msg())
        b.send(parse_msg("SELECT 'b:' || $1::text", name="st") + sync_msg())
        assert a.read_until_ready().types() == "1Z"
        assert b.read_until_ready().types() == "1Z"
        for i in range(20):
            holder = b if i % 2 else a
            holder.send(bind_msg((str(i),), stmt="st") + execute_msg() + sync_msg())
            other = a if i % 2 else b
            other.send(bind_msg((str(i),), stmt="st") + execute_msg() + sync_msg())
            ra, rb = (holder.read_until_ready(), other.read_until_ready())
            r_a, r_b = (ra, rb) if holder is a else (rb, ra)
            assert r_a.rows == [[f"a:{i}"]], (r_a.types(), r_a.error)
            assert r_b.rows == [[f"b:{i}"]], (r_b.types(), r_b.error)
        a.send(close_msg("S", "st") + sync_msg())
        assert a.read_until_ready().types() == "3Z"
        a.send(bind_msg(("x",), stmt="st") + execute_msg() + sync_msg())
        r = a.read_until_ready()
        assert r.error and r.error.sqlstate == "26000", r.types()
    finally:
        a.terminate()
        b.terminate()


@pytest.mark.pgrouter_only("protocol-level named prepared statements in transaction mode "
                           "(max_prepared_statements; PgBouncer 1.21+, not 1.18)")
@pytest.mark.parametrize("command", ["DISCARD ALL", "DEALLOCATE ALL", "discard all;"])
def test_named_statements_survive_another_clients_discard_all(pgrouter, command):
    """A client's DISCARD ALL / DEALLOCATE ALL empties the shared server of the
    statements the pooler prepared there for every client (application-side pools such
    as Npgsql send DISCARD ALL when a connection goes back): the pooler must forget
    them and prepare them again on next use, not Bind a statement that is gone."""
    p = pgrouter({"pool_mode": "transaction", "default_pool_size": 1})
    a, b = p.wire(), p.wire()
    try:
        b.send(parse_msg("SELECT 'b:' || $1::text", name="st") + sync_msg())
        assert b.read_until_ready().types() == "1Z"
        b.send(bind_msg(("0",), stmt="st") + execute_msg() + sync_msg())
        assert b.read_until_ready().rows == [["b:0"]]
        r = a.query(command)
        assert r.error is None, r.error
        for i in range(1, 4):
            b.send(bind_msg((str(i),), stmt="st") + execute_msg() + sync_msg())
            r = b.read_until_ready()
            assert r.error is None and r.rows == [[f"b:{i}"]], (r.types(), r.error)
            assert a.query("SELECT 1").rows == [["1"]]
        # The server that ran it stayed in use: forgetting is enough, nothing was closed.
        assert len({a.scalar("SELECT pg_backend_pid()"), b.scalar("SELECT pg_backend_pid()")}) == 1
        # The client's own DISCARD ALL ends its own statements, as on PostgreSQL...
        assert b.query(command).error is None
        b.send(bind_msg(("9",), stmt="st") + execute_msg() + sync_msg())
        r = b.read_until_ready()
        assert r.error and r.error.sqlstate == "26000" and '"st"' in str(r.error), (r.types(), r.error)
        # ... and it can prepare it again.
        b.send(parse_msg("SELECT 'b2:' || $1::text", name="st") + bind_msg(("9",), stmt="st") + execute_msg()
               + sync_msg())
        r = b.read_until_ready()
        assert r.error is None and r.rows == [["b2:9"]], (r.types(), r.error)
    finally:
        a.terminate()
        b.terminate()


PGBENCH_SCRIPT = """\
\\set a random(1, 100000)
SELECT :a::int + 1;
BEGIN;
SELECT :a::int * 2;
SELECT now();
END;
"""


def run_pgbench_script(p, tmp_path, mode, clients=4, tx=200, jobs=2):
    script = tmp_path / "script.sql"
    script.write_text(PGBENCH_SCRIPT)
    r = p.pgbench("-n", "-M", mode, "-c", str(clients), "-j", str(jobs), "-t", str(tx), "-f", str(script), timeout=60)
    assert r.returncode == 0, f"pgbench -M {mode} failed:\n{r.stdout}\n{r.stderr}"
    assert f"number of transactions actually processed: {clients * tx}/{clients * tx}" in r.stdout, r.stdout
    assert "number of failed transactions: 0" in r.stdout, r.stdout


def test_pgbench_extended_transaction_mode(pgrouter, tmp_path):
    run_pgbench_script(pgrouter({"default_pool_size": 2}), tmp_path, "extended")


def test_pgbench_simple_transaction_mode(pgrouter, tmp_path):
    run_pgbench_script(pgrouter({"default_pool_size": 2}), tmp_path, "simple")


def test_pgbench_prepared_session_mode(pgrouter, tmp_path):
    run_pgbench_script(pgrouter({"pool_mode": "session", "default_pool_size": 4}), tmp_path, "prepared")


@pytest.mark.pgrouter_only("named prepared statements in transaction mode (PgBouncer 1.18 lacks them)")
def test_pgbench_prepared_transaction_mode(pgrouter, tmp_path):
    # One client per pgbench thread: pgbench prepares with a blocking PQprepare, which
    # would stall a thread's other clients while they hold servers mid-transaction
    # (a deadlock of pgbench itself with any transaction pooler when pool < clients).
    run_pgbench_script(pgrouter({"default_pool_size": 2}), tmp_path, "prepared", clients=6, jobs=6)


# --------------------------------------------------------------------------- large messages, COPY

def test_large_result_50mb(pgrouter):
    p = pgrouter()
    c = p.connect()
    try:
        with c.cursor() as cur:
            t0 = time.monotonic()
            cur.execute("SELECT g, repeat('x', 1024) FROM generate_series(1, 51200) g")
            rows = cur.fetchall()
            elapsed = time.monotonic() - t0
        assert len(rows) == 51200
        assert sum(len(r[1]) for r in rows) == 51200 * 1024
        assert rows[-1][0] == 51200
        assert elapsed < 60
        assert one(c, "SELECT 1") == 1
    finally:
        c.close()


def test_large_single_value_20mb(pgrouter):
    p = pgrouter()
    c = p.connect()
    big = (hashlib.sha256(os.urandom(32)).hexdigest() * (20 * 1024 * 1024 // 64 + 1))[:20 * 1024 * 1024]
    try:
        with c.cursor() as cur:
            cur.execute("SELECT %s::text", (big,))
            assert cur.fetchone()[0] == big
            cur.execute("SELECT md5(%s), length(%s)", (big, big))
            assert cur.fetchone() == (hashlib.md5(big.encode()).hexdigest(), len(big))
    finally:
        c.close()


def test_large_bind_parameter_extended(pgrouter):
    p = pgrouter()
    c = p.wire(timeout=60)
    big = b"y" * (20 * 1024 * 1024)
    try:
        c.send(parse_msg("SELECT length($1::text), md5($1::text)") + bind_msg((big,)) + execute_msg() + sync_msg())
        r = c.read_until_ready(60)
        assert r.rows == [[str(len(big)), hashlib.md5(big).hexdigest()]], r.types()
    finally:
        c.terminate()


def test_copy_in_and_out_100k_rows_psql(pgrouter, table):
    p = pgrouter()
    data = "".join(f"{i}\trow-{i}\n" for i in range(100000))
    r = p.psql("-c", f"\\copy {table} FROM STDIN", input=data, timeout=120)
    assert r.returncode == 0, r.stderr
    r = p.psql("-At", "-c", f"SELECT count(*), sum(id) FROM {table}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"100000|{sum(range(100000))}"
    r = p.psql("-c", f"\\copy {table} TO STDOUT", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


def test_copy_error_mid_stream(pgrouter, table):
    """A COPY that fails on the server (bad row) leaves a usable connection and no rows."""
    p = pgrouter({"default_pool_size": 1})
    data = "1\tok\nnot-a-number\tbad\n2\tok\n"
    r = p.psql("-c", f"\\copy {table} FROM STDIN", input=data)
    assert r.returncode != 0 and "invalid input syntax" in r.stderr
    r = p.psql("-At", "-c", f"SELECT count(*) FROM {table}")
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stdout + r.stderr


# --------------------------------------------------------------------------- startup packet

def expect_rejected(c, timeout=10):
    """Either an ErrorResponse followed by close, or a plain close. The SQLSTATE is
    08P01 (protocol violation), or 0A000 where PostgreSQL itself reads the bytes as
    an unsupported protocol version ("unsupported frontend protocol 18.54919")."""
    msgs = c.wait_closed(timeout)
    for t, payload in msgs:
        if t == b"E":
            fields = pgwire.parse_fields(payload)
            assert fields.get("C") in ("08P01", "0A000"), fields
    assert all(t in (b"E", b"N") for t, _ in msgs), msgs
    return msgs


def assert_still_serving(p):
    c = p.wire()
    try:
        assert c.scalar("SELECT 'alive'") == "alive"
    finally:
        c.terminate()


def test_oversized_startup_packet(pgrouter):
    p = pgrouter()
    c = p.raw()
    try:
        c.send(struct.pack("!II", 0x7FFFFFFF, pgwire.PROTOCOL_3_0) + b"user\0")
        expect_rejected(c)
    finally:
        c.close()
    assert_still_serving(p)


def test_startup_packet_just_over_10000_bytes(pgrouter):
    p = pgrouter()
    c = p.raw()
    try:
        c.send(startup_packet({"user": "app_md5", "database": "testdb", "application_name": "x" * 10100}))
        expect_rejected(c)
    finally:
        c.close()
    assert_still_serving(p)


@pytest.mark.parametrize("garbage", [
    struct.pack("!II", 8, 1234567),                 # unknown request code
    struct.pack("!II", 4, pgwire.PROTOCOL_3_0),     # length shorter than the header itself
    struct.pack("!II", 12, pgwire.PROTOCOL_3_0) + b"use",   # truncated, then EOF
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["unknown-code", "short-length", "truncated", "http"])
def test_malformed_startup_packet(pgrouter, garbage):
    p = pgrouter()
    c = p.raw()
    try:
        c.send(garbage)
        if garbage.endswith(b"use"):
            c.sock.shutdown(1)
        expect_rejected(c)
    finally:
        c.close()
    assert_still_serving(p)


def test_ssl_request_answered_n_when_tls_off(pgrouter):
    p = pgrouter()
    c = p.raw()
    try:
        c.send(struct.pack("!II", 8, pgwire.SSL_REQUEST_CODE))
        assert c.read_byte() == b"N"
        c.login("app_md5", "testdb", helpers.PASSWORDS["app_md5"])
        assert c.scalar("SELECT 1") == "1"
    finally:
        c.terminate()
    # libpq's own sslmode=prefer path, and require failing cleanly.
    with p.connect(sslmode="prefer") as conn:
        assert one(conn, "SELECT 2") == 2
    with pytest.raises(psycopg2.OperationalError):
        p.connect(sslmode="require")


def test_gssenc_request_answered_n(pgrouter):
    p = pgrouter()
    c = p.raw()
    try:
        c.send(struct.pack("!II", 8, pgwire.GSSENC_REQUEST_CODE))
        assert c.read_byte() == b"N"
        c.login("app_md5", "testdb", helpers.PASSWORDS["app_md5"])
        assert c.scalar("SELECT 1") == "1"
    finally:
        c.terminate()


def test_protocol_4_0_rejected(pgrouter):
    p = pgrouter()
    c = p.raw()
    try:
        c.send(startup_packet({"user": "app_md5", "database": "testdb"}, 4 << 16))
        msgs = c.wait_closed(10)
        assert msgs and msgs[0][0] == b"E", msgs
    finally:
        c.close()
    assert_still_serving(p)


@pytest.mark.pgrouter_only("PgBouncer 1.18 accepts 3.1 silently and rejects _pq_ options; "
                           "PostgreSQL (and pgrouter) answer NegotiateProtocolVersion")
def test_protocol_3_1_negotiated_down(pgrouter):
    p = pgrouter()
    c = p.raw()
    try:
        c.login("app_md5", "testdb", helpers.PASSWORDS["app_md5"], params={"_pq_.pgrouter_test": "1"},
                version=(3 << 16) | 1)
        assert c.negotiate is not None, "no NegotiateProtocolVersion"
        newest, unknown = c.negotiate
        # The protocol docs say "newest minor version"; PostgreSQL 15 actually sends
        # the whole version number 3.0 (196608). Either means 3.0.
        assert newest in (0, 196608), newest
        assert unknown == ["_pq_.pgrouter_test"]
        assert c.scalar("SELECT 1") == "1"
    finally:
        c.terminate()


def test_cancel_request_with_unknown_key_is_harmless(pgrouter):
    p = pgrouter()
    c = p.raw()
    try:
        c.send(pgwire.cancel_request(12345, 67890))
        assert c.wait_closed(10) == []
    finally:
        c.close()
    assert_still_serving(p)


@pytest.mark.parametrize("fmt", ["toml", "ini"])
def test_disable_pqexec_refuses_simple_queries(pgrouter, fmt):
    """disable_pqexec: the extended protocol is served; a Query message (simple
    protocol, which can carry several statements) ends the session with 08P01 and
    never reaches the server. The admin console (simple queries only) still works."""
    p = pgrouter({"disable_pqexec": True}, fmt=fmt)
    c = p.wire()
    try:
        c.send(pgwire.parse_msg("SELECT $1::int * 10") + pgwire.bind_msg(("4",)) + pgwire.execute_msg()
               + pgwire.sync_msg())
        r = c.read_until_ready()
        assert r.error is None and r.rows == [["40"]], r.messages
        c.send(pgwire.query_msg("SELECT 1; SELECT 2"))
        msgs = c.wait_closed(10)
        errors = [pgwire.PgError(pgwire.parse_fields(b)) for t, b in msgs if t == b"E"]
        assert not any(t == b"D" for t, _ in msgs), msgs
        assert errors and errors[-1].sqlstate == "08P01", msgs
        if p.kind == "pgrouter":
            assert "disable_pqexec" in errors[-1].message
    finally:
        c.close()
    if p.kind == "pgrouter":  # PgBouncer 1.18 refuses the console's queries too
        assert p.admin("SHOW VERSION")  # the console still takes simple queries
