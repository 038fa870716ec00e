"""Pool modes: transaction, session, statement (PgBouncer semantics)."""

import threading
import time

import psycopg2
import pytest

import helpers


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def test_transaction_mode_clients_share_one_server(pgrouter, pg):
    p = pgrouter({"pool_mode": "transaction", "default_pool_size": 1})
    a, b = p.connect(), p.connect()
    try:
        pid_a = one(a, "SELECT pg_backend_pid()")
        pid_b = one(b, "SELECT pg_backend_pid()")
        assert pid_a == pid_b, "pool_size=1: both clients must get the same server"
        for _ in range(3):
            assert one(a, "SELECT pg_backend_pid()") == pid_a
            assert one(b, "SELECT pg_backend_pid()") == pid_a
        assert pg.backends("app_md5", "testdb") == 1
    finally:
        a.close()
        b.close()


def test_transaction_block_keeps_its_server_and_blocks_others(pgrouter, pg):
    p = pgrouter({"pool_mode": "transaction", "default_pool_size": 1})
    a, b = p.connect(), p.connect()
    try:
        cur = a.cursor()
        cur.execute("BEGIN")
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        got = {}

        def client_b():
            try:
                t0 = time.monotonic()
                got["pid"] = one(b, "SELECT pg_backend_pid()")
                got["waited"] = time.monotonic() - t0
            except Exception as e:  # reported by the main thread
                got["error"] = e

        t = threading.Thread(target=client_b)
        t.start()
        time.sleep(0.8)
        assert t.is_alive(), "client B ran while client A held the only server inside a transaction"
        for _ in range(3):
            cur.execute("SELECT pg_backend_pid()")
            assert cur.fetchone()[0] == pid, "a transaction must keep its server"
        cur.execute("COMMIT")
        t.join(15)
        assert not t.is_alive(), "client B still waiting after A committed"
        assert "error" not in got, got.get("error")
        assert got["pid"] == pid
        assert got["waited"] >= 0.7
    finally:
        a.close()
        b.close()


def test_transaction_mode_psycopg2_implicit_transactions(pgrouter):
    """psycopg2 without autocommit: BEGIN is implicit, COMMIT/ROLLBACK end it."""
    p = pgrouter({"pool_mode": "transaction", "default_pool_size": 1})
    a = p.connect(autocommit=False)
    b = p.connect(autocommit=False)
    try:
        pid = one(a, "SELECT pg_backend_pid()")
        assert one(a, "SELECT pg_backend_pid()") == pid
        a.commit()
        assert one(b, "SELECT pg_backend_pid()") == pid
        b.rollback()
        assert one(a, "SELECT 1") == 1
        a.commit()
    finally:
        a.close()
        b.close()


def test_session_mode_client_keeps_its_server(pgrouter, pg):
    p = pgrouter({"pool_mode": "session", "default_pool_size": 2})
    a, b = p.connect(), p.connect()
    try:
        pid_a = one(a, "SELECT pg_backend_pid()")
        pid_b = one(b, "SELECT pg_backend_pid()")
        assert pid_a != pid_b, "session mode: two live sessions need two servers"
        for _ in range(3):
            assert one(a, "SELECT pg_backend_pid()") == pid_a
            assert one(b, "SELECT pg_backend_pid()") == pid_b
        with a.cursor() as cur:
            cur.execute("CREATE TEMP TABLE sess_t (x int)")
            cur.execute("INSERT INTO sess_t VALUES (1)")
            cur.execute("SELECT count(*) FROM sess_t")
            assert cur.fetchone()[0] == 1
    finally:
        a.close()
        b.close()


def test_session_mode_server_reset_query(pgrouter, pg):
    p = pgrouter({"pool_mode": "session", "default_pool_size": 1})
    a = p.connect()
    pid = one(a, "SELECT pg_backend_pid()")
    with a.cursor() as cur:
        cur.execute("CREATE TEMP TABLE leak_a (x int)")
        cur.execute("SET work_mem = '7MB'")
        cur.execute("PREPARE leak_stmt AS SELECT 1")
    a.close()
    b = p.connect()
    try:
        assert one(b, "SELECT pg_backend_pid()") == pid, "pool_size=1: B must reuse A's server"
        assert one(b, "SELECT count(*) FROM pg_class WHERE relname = 'leak_a' AND relpersistence = 't'") == 0
        assert one(b, "SHOW work_mem") == "4MB"
        assert one(b, "SELECT count(*) FROM pg_prepared_statements") == 0
    finally:
        b.close()


def test_session_mode_waits_for_a_free_server(pgrouter):
    p = pgrouter({"pool_mode": "session", "default_pool_size": 1, "query_wait_timeout": 10})
    a = p.connect()
    pid = one(a, "SELECT pg_backend_pid()")
    result = {}

    def client_b():
        try:
            c = p.connect()
            result["pid"] = one(c, "SELECT pg_backend_pid()")
            c.close()
        except Exception as e:
            result["error"] = e

    t = threading.Thread(target=client_b)
    t.start()
    time.sleep(0.8)
    assert t.is_alive() and not result, "B got a server while A's session held the only one"
    a.close()
    t.join(15)
    assert not t.is_alive()
    assert "error" not in result, result.get("error")
    assert result["pid"] == pid


def test_statement_mode_refuses_transaction_blocks(pgrouter):
    p = pgrouter({"pool_mode": "statement", "default_pool_size": 1})
    c = p.connect()
    try:
        for i in range(3):
            assert one(c, "SELECT %s::int", (i,)) == i
        with pytest.raises(psycopg2.Error):
            with c.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("SELECT 1")
    finally:
        c.close()
    # The pool is still usable afterwards, and the server was not left in a transaction.
    c2 = p.connect()
    try:
        assert one(c2, "SELECT 1") == 1
        assert one(c2, "SELECT txid_current_if_assigned() IS NULL") is True
    finally:
        c2.close()


def test_statement_mode_autocommit_statements_share_server(pgrouter, pg):
    p = pgrouter({"pool_mode": "statement", "default_pool_size": 1})
    a, b = p.connect(), p.connect()
    try:
        pid = one(a, "SELECT pg_backend_pid()")
        assert one(b, "SELECT pg_backend_pid()") == pid
        assert one(a, "SELECT 1; SELECT 2") == 2
    finally:
        a.close()
        b.close()


def test_per_database_pool_mode(pgrouter):
    p = pgrouter({"pool_mode": "transaction", "default_pool_size": 2},
                 databases={"testdb": {}, "sessdb": {"dbname": "testdb", "pool_mode": "session"}})
    s1, s2 = p.connect(dbname="sessdb"), p.connect(dbname="sessdb")
    try:
        assert one(s1, "SELECT pg_backend_pid()") != one(s2, "SELECT pg_backend_pid()")
    finally:
        s1.close()
        s2.close()


# --------------------------------------------------------------------------- server_fast_close

def backend_alive(pg, pid):
    return bool(pg.sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))[0][0])


@pytest.mark.parametrize("fast_close", [False, True])
def test_server_fast_close_ends_sessions_whose_server_was_retired(pgrouter, pg, fast_close):
    """Session pooling. After RECONNECT, by default a client keeps its server (and its
    session state) to the end of its session. With server_fast_close its session ends
    between transactions instead: an idle one right away, one inside a transaction when
    that transaction has finished (nothing in it is lost)."""
    p = pgrouter({"pool_mode": "session", "server_fast_close": fast_close, "default_pool_size": 4})
    idle, busy = p.connect(), p.connect(autocommit=False)
    try:
        idle_pid = one(idle, "SELECT pg_backend_pid()")
        busy_pid = one(busy, "SELECT pg_backend_pid()")  # opens a transaction
        with busy.cursor() as cur:
            cur.execute("CREATE TEMP TABLE fast_close_probe (n int)")
        p.admin("RECONNECT")
        time.sleep(2.5)  # the pooler looks at idle sessions every second
        one(busy, "INSERT INTO fast_close_probe VALUES (1) RETURNING n")  # the transaction goes on
        busy.commit()
        if not fast_close:
            assert one(idle, "SELECT pg_backend_pid()") == idle_pid
            assert one(busy, "SELECT pg_backend_pid()") == busy_pid
            return
        # PgBouncer 1.18 ends only the idle session; its docs (and pgrouter) also end the
        # busy one once its transaction is over.
        for c in (idle,) if helpers.is_pgbouncer() else (idle, busy):
            with pytest.raises(psycopg2.Error) as err:
                one(c, "SELECT 1")
            assert "server_fast_close" in str(err.value) or c.closed, str(err.value)
        deadline = time.monotonic() + 10
        retired = [idle_pid] if helpers.is_pgbouncer() else [idle_pid, busy_pid]
        while any(backend_alive(pg, pid) for pid in retired) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(backend_alive(pg, pid) for pid in retired), "a retired server still open"
        fresh = p.connect()
        try:
            assert one(fresh, "SELECT pg_backend_pid()") != idle_pid
        finally:
            fresh.close()
    finally:
        idle.close()
        busy.close()
