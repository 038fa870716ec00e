"""Pool modes: transaction, session, statement (PgBouncer semantics)."""

import threading
import time

import psycopg2
import pytest


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
