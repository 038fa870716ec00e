"""Per-user and per-database overrides of the pool size and the timeouts
(PgBouncer 1.24+ [users] and [databases] options): a user's value wins over its
database's, which wins over the global one; 0 turns a timeout off for that user.
The timeouts are read from the pool's current settings, so a RELOAD or an admin
SET reaches clients that are already connected."""

import threading
import time

import psycopg2
import pytest

import helpers
import pgwire

pytestmark = pytest.mark.pgrouter_only("per-user and per-database timeouts and pool_size are PgBouncer 1.24+ "
                                       "options (the Debian PgBouncer is 1.18)")


def one(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def closed_with(c, within):
    """The SQLSTATEs of the errors the pooler sent before closing c (fails if it stays open)."""
    try:
        msgs = c.wait_closed(within)
    except pgwire.WireError as e:
        pytest.fail(f"connection still open after {within}s: {e}")
    return [pgwire.parse_fields(p).get("C") for t, p in msgs if t == b"E"]


def still_open(c):
    r = c.query("SELECT 'alive'")
    return r.error is None and r.rows == [["alive"]]


@pytest.mark.parametrize("fmt", ["toml", "ini"])
def test_user_idle_transaction_timeout_overrides_the_global_one(pgrouter, fmt):
    """Global idle_transaction_timeout = 1; app_md5 turns it off (0), app_scram has none of
    its own: only app_scram's idle transaction is ended (25P03)."""
    p = pgrouter({"idle_transaction_timeout": 1}, users={"app_md5": {"idle_transaction_timeout": 0}}, fmt=fmt)
    own = p.wire(user="app_md5")
    inherits = p.wire(user="app_scram")
    try:
        for c in (own, inherits):
            assert c.query("BEGIN").status == "T"
        time.sleep(2.5)
        assert closed_with(inherits, 6) == ["25P03"]
        r = own.query("SELECT 1")
        assert r.rows == [["1"]] and r.status == "T", "app_md5 turned the timeout off for itself"
        assert own.query("COMMIT").status == "I"
    finally:
        own.close()
        inherits.close()


def test_user_query_timeout_and_database_client_idle_timeout(pgrouter, pg):
    """A user's query_timeout where the global one is off; a database's
    client_idle_timeout, which a user's own 0 overrides."""
    p = pgrouter({"default_pool_size": 2},
                 databases={"testdb": {"client_idle_timeout": 1}},
                 users={"app_scram": {"query_timeout": 1, "client_idle_timeout": 0}})
    slow = p.connect(user="app_scram")
    try:
        t0 = time.monotonic()
        with pytest.raises(psycopg2.Error) as e:
            one(slow, "SELECT pg_sleep(5.02)")
        assert e.value.pgcode == "57014", (e.value.pgcode, str(e.value))
        assert 0.8 <= time.monotonic() - t0 <= 4
        # app_md5 has no query_timeout: the same kind of statement runs to its end.
        fine = p.connect(user="app_md5")
        try:
            assert one(fine, "SELECT 7 FROM pg_sleep(1.6)") == 7
        finally:
            fine.close()
    finally:
        slow.close()
    idle_md5 = p.wire(user="app_md5")
    idle_scram = p.wire(user="app_scram")
    try:
        assert closed_with(idle_md5, 8) == ["57P05"], "the database's client_idle_timeout = 1"
        assert still_open(idle_scram), "app_scram's client_idle_timeout = 0 wins over the database's"
    finally:
        idle_md5.close()
        idle_scram.close()


def test_user_pool_size_and_query_wait_timeout(pgrouter, pg):
    """app_scram gets pool_size 1 (and query_wait_timeout 1) while the default is 3:
    its second client waits and gives up; app_md5 runs two transactions at once."""
    p = pgrouter({"default_pool_size": 3, "query_wait_timeout": 60},
                 users={"app_scram": {"pool_size": 1, "query_wait_timeout": 1}})
    a, b = p.connect(user="app_scram"), p.connect(user="app_scram")
    m1, m2 = p.connect(user="app_md5"), p.connect(user="app_md5")
    try:
        with a.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT 1")
        t0 = time.monotonic()
        with pytest.raises(psycopg2.Error) as e:
            one(b, "SELECT 2")
        assert 0.7 <= time.monotonic() - t0 <= 6, "app_scram's query_wait_timeout = 1"
        assert "query_wait_timeout" in str(e.value)
        for m in (m1, m2):
            with m.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("SELECT 1")
        assert pg.backends("app_md5", "testdb") == 2, "app_md5's pool has the default size"
        assert pg.backends("app_scram", "testdb") == 1
        pools = {r[1]: r for r in p.admin("SHOW POOLS") if r[0] == "testdb"}
        assert set(pools) >= {"app_md5", "app_scram"}
    finally:
        for c in (a, b, m1, m2):
            c.close()


def test_database_server_lifetime(pgrouter):
    """server_lifetime = 1 on the database line while the global one is an hour."""
    p = pgrouter({"default_pool_size": 1, "server_lifetime": 3600},
                 databases={"testdb": {"server_lifetime": 1}})
    c = p.connect()
    try:
        pid1 = one(c, "SELECT pg_backend_pid()")
        time.sleep(2.5)
        assert one(c, "SELECT pg_backend_pid()") != pid1
    finally:
        c.close()


@pytest.mark.parametrize("how", ["reload", "set"])
def test_new_timeouts_reach_connected_clients(pgrouter, how):
    """A client in a transaction before the change is held to the new limit
    (PgBouncer reads its timeouts at each check too)."""
    p = pgrouter({"idle_transaction_timeout": 0})
    c = p.wire()
    try:
        assert c.query("BEGIN").status == "T"
        if how == "reload":
            p.users["app_md5"] = {"idle_transaction_timeout": 1}
            p.write_config(None)
            p.admin("RELOAD")
        else:
            p.admin("SET idle_transaction_timeout = 1")
        assert closed_with(c, 8) == ["25P03"]
    finally:
        c.close()
