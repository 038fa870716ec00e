"""Cancel requests: they reach the right query, and never a server that now serves someone else."""

import threading
import time

import psycopg2
import psycopg2.errors
import pytest

import pgwire


def cancel_after(conn, delay):
    def run():
        time.sleep(delay)
        conn.cancel()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_cancel_long_query(pgrouter, mode):
    p = pgrouter({"pool_mode": mode, "default_pool_size": 2})
    c = p.connect()
    try:
        t = cancel_after(c, 1.0)
        t0 = time.monotonic()
        with pytest.raises(psycopg2.errors.QueryCanceled) as e:
            with c.cursor() as cur:
                cur.execute("SELECT pg_sleep(30)")
        elapsed = time.monotonic() - t0
        t.join(5)
        assert e.value.pgcode == "57014"
        assert elapsed < 6, f"cancel took {elapsed:.1f}s"
        with c.cursor() as cur:   # the connection stays usable
            cur.execute("SELECT 1")
            assert cur.fetchone()[0] == 1
    finally:
        c.close()


def test_cancel_inside_transaction(pgrouter):
    p = pgrouter({"default_pool_size": 1})
    c = p.connect()
    try:
        with c.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT 1")
            cancel_after(c, 1.0)
            with pytest.raises(psycopg2.errors.QueryCanceled):
                cur.execute("SELECT pg_sleep(30)")
            with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
                cur.execute("SELECT 1")
            cur.execute("ROLLBACK")
            cur.execute("SELECT 2")
            assert cur.fetchone()[0] == 2
    finally:
        c.close()


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_cancel_from_idle_client_does_not_hit_others(pgrouter, mode):
    """Idle client A and busy client B share one server: A's cancel must not cancel B."""
    p = pgrouter({"pool_mode": mode, "default_pool_size": 1})
    a, b = p.connect(), p.connect()
    try:
        with a.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid_a = cur.fetchone()[0]
        result = {}

        def run_b():
            try:
                with b.cursor() as cur:
                    cur.execute("SELECT pg_backend_pid(), pg_sleep(2)")
                    result["pid"] = cur.fetchone()[0]
            except Exception as e:
                result["error"] = e

        t = threading.Thread(target=run_b, daemon=True)
        t.start()
        time.sleep(0.7)
        a.cancel()
        time.sleep(0.2)
        a.cancel()
        t.join(15)
        assert not t.is_alive()
        assert "error" not in result, f"B was cancelled by A's cancel request: {result.get('error')}"
        assert result["pid"] == pid_a, "the test needs A and B on the same server"
    finally:
        a.close()
        b.close()


def test_cancel_key_of_departed_client(pgrouter):
    """A cancel with the key of a client that has left must not reach the server's new client."""
    p = pgrouter({"default_pool_size": 1})
    gone = p.wire()
    pid, key = gone.backend_key
    gone.terminate()
    b = p.wire()
    try:
        b.send(pgwire.query_msg("SELECT pg_sleep(1.5)"))
        time.sleep(0.5)
        raw = p.raw()
        raw.send(pgwire.cancel_request(pid, key))
        raw.wait_closed(5)
        raw.close()
        r = b.read_until_ready(10)
        assert r.error is None, f"cancelled by a stale key: {r.error}"
    finally:
        b.terminate()


def test_backend_key_is_not_the_servers(pgrouter, pg):
    """Clients get pooler-issued BackendKeyData, not a server's pid/key (SPEC / STYLE rule 11)."""
    p = pgrouter({"default_pool_size": 1})
    a, b = p.wire(), p.wire()
    try:
        assert a.scalar("SELECT pg_backend_pid()") == b.scalar("SELECT pg_backend_pid()")
        assert a.backend_key != b.backend_key, "two clients of one server share one cancel key"
    finally:
        a.terminate()
        b.terminate()


def test_many_cancels_under_load(pgrouter):
    """Cancel one of several busy clients; only it is cancelled."""
    p = pgrouter({"default_pool_size": 4})
    conns = [p.connect() for _ in range(4)]
    results = [None] * 4

    def run(i):
        try:
            with conns[i].cursor() as cur:
                cur.execute("SELECT pg_sleep(%s)", (2.5 if i else 30,))
            results[i] = "done"
        except psycopg2.errors.QueryCanceled:
            results[i] = "cancelled"
        except Exception as e:
            results[i] = repr(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        conns[0].cancel()
        for t in threads:
            t.join(20)
        assert results == ["cancelled", "done", "done", "done"], results
    finally:
        for c in conns:
            c.close()
