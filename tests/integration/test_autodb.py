"""Pools that nobody uses any more. The "*" fallback database (PgBouncer's autodb):
any database name a client asks for is served from the fallback's server, one pool
per (database, user), and autodb_idle_timeout frees those pools once no client has
used them for that long. The pool of a database a RELOAD removed is freed when its
last client leaves."""

import time

import psycopg2
import pytest

import helpers
from helpers import wait_until

USER = helpers.DEFAULT_USER
AUTO_DBS = ("autodb_a", "autodb_b")


@pytest.fixture
def auto_dbs(pg):
    have = {r[0] for r in pg.sql("SELECT datname FROM pg_database")}
    for name in AUTO_DBS:
        if name not in have:
            pg.sql(f"CREATE DATABASE {name}")
    # Servers of an earlier test's pooler go away when it stops; wait for them.
    for name in AUTO_DBS:
        wait_until(lambda: pg.backends(USER, name) == 0, 15, f"no server on {name} left from earlier tests")
    return AUTO_DBS


def start(pgrouter, overrides):
    # "*" has no dbname: the client's database name is used on the server.
    return pgrouter(overrides, databases={helpers.DEFAULT_DB: {}, "*": {"dbname": None}})


def show(p, what):
    c = p.connect(user="pgbouncer", dbname="pgbouncer")
    try:
        with c.cursor() as cur:
            cur.execute(f"SHOW {what}")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        c.close()


def pooled(p, db):
    return any(r["database"] == db and r["user"] == USER for r in show(p, "POOLS"))


def use(p, db):
    c = p.connect(dbname=db)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT current_database()")
            return cur.fetchone()[0]
    finally:
        c.close()


def test_fallback_database_serves_any_database(pgrouter, pg, auto_dbs):
    p = start(pgrouter, {})
    for db in auto_dbs:
        assert use(p, db) == db
        assert pooled(p, db)
    assert use(p, helpers.DEFAULT_DB) == helpers.DEFAULT_DB
    # A name the server does not know: the server's own error reaches the client.
    with pytest.raises(psycopg2.OperationalError) as e:
        p.connect(dbname="autodb_no_such_database").close()
    assert "does not exist" in str(e.value)


@pytest.mark.pgrouter_only("PgBouncer 1.18 counts a database with idle servers as in use: it frees it only "
                           "after server_idle_timeout closed them, and never while min_pool_size keeps one")
def test_autodb_idle_timeout_frees_unused_pools(pgrouter, pg, auto_dbs):
    """A pool reached through "*" that no client used for autodb_idle_timeout is
    freed: its server connections closed (also the ones min_pool_size keeps), its
    SHOW POOLS / SHOW DATABASES rows gone. Pools of named databases stay; a
    connected client, even idle, keeps its pool."""
    p = start(pgrouter, {"autodb_idle_timeout": 2, "min_pool_size": 1})
    a, b = auto_dbs
    keeper = p.connect(dbname=b)  # stays connected, idle
    try:
        keeper.cursor().execute("SELECT 1")
        assert use(p, a) == a
        assert use(p, helpers.DEFAULT_DB) == helpers.DEFAULT_DB
        assert pooled(p, a) and pg.backends(USER, a) >= 1
        t0 = time.monotonic()
        wait_until(lambda: not pooled(p, a), 10, f"the unused pool of {a} freed")
        freed_after = time.monotonic() - t0
        assert freed_after >= 1.0, f"freed after {freed_after:.1f} s with autodb_idle_timeout = 2"
        wait_until(lambda: pg.backends(USER, a) == 0, 10, f"the servers of {a} closed")
        assert a not in {r["name"] for r in show(p, "DATABASES")}
        assert "freed: unused for autodb_idle_timeout" in p.log()
        # The named database keeps its pool and its min_pool_size server; the held one stays.
        time.sleep(1.5)
        assert pooled(p, helpers.DEFAULT_DB) and pg.backends(USER, helpers.DEFAULT_DB) >= 1
        assert pooled(p, b) and pg.backends(USER, b) >= 1
        with keeper.cursor() as cur:
            cur.execute("SELECT current_database()")
            assert cur.fetchone()[0] == b
        # A client coming back gets a new pool.
        assert use(p, a) == a
        assert pooled(p, a)
    finally:
        keeper.close()
    wait_until(lambda: not pooled(p, b), 10, f"the pool of {b} freed once its client left")
    wait_until(lambda: pg.backends(USER, b) == 0, 10, f"the servers of {b} closed")


def test_autodb_idle_timeout_zero_keeps_pools(pgrouter, pg, auto_dbs):
    p = start(pgrouter, {"autodb_idle_timeout": 0})
    a = auto_dbs[0]
    assert use(p, a) == a
    time.sleep(3)
    assert pooled(p, a)
    assert pg.backends(USER, a) == 1


@pytest.mark.pgrouter_only("PgBouncer 1.18 disconnects the clients of a database a RELOAD removed at once")
def test_pool_of_removed_database_is_freed_when_its_last_client_leaves(pgrouter, pg, auto_dbs):
    """A RELOAD that removes a database refuses new logins to it (3D000) but lets its
    connected clients go on; when the last one leaves, the pool is freed and its
    servers are closed (no "*" database here, so autodb_idle_timeout plays no part)."""
    a = auto_dbs[0]
    p = pgrouter({}, databases={helpers.DEFAULT_DB: {}, "leaving": {"dbname": a}})
    c = p.connect(dbname="leaving")
    try:
        c.cursor().execute("SELECT 1")
        del p.databases["leaving"]
        p.write_config(None)
        p.admin("RELOAD")
        with pytest.raises(psycopg2.OperationalError) as e:
            p.connect(dbname="leaving").close()
        assert "leaving" in str(e.value)
        time.sleep(1.5)  # a janitor round or more: the pool is still in use
        with c.cursor() as cur:
            cur.execute("SELECT current_database()")
            assert cur.fetchone()[0] == a
        assert any(r["database"] == "leaving" for r in show(p, "POOLS"))
    finally:
        c.close()
    wait_until(lambda: not any(r["database"] == "leaving" for r in show(p, "POOLS")), 10,
               "the pool of the removed database freed")
    wait_until(lambda: pg.backends(USER, a) == 0, 10, "its servers closed")
    assert "its database was removed from the configuration" in p.log()
    assert use(p, helpers.DEFAULT_DB) == helpers.DEFAULT_DB  # the others go on


@pytest.mark.pgrouter_only("pool_idle_timeout is newer than PgBouncer 1.18")
def test_pool_idle_timeout_frees_pools_without_clients_and_servers(pgrouter, pg):
    """pool_idle_timeout frees any pool (named databases too) that has had no client and
    no server for that long: the idle server first goes by server_idle_timeout, then
    the pool. A connected client, or a server min_pool_size keeps, keeps the pool."""
    p = pgrouter({"pool_idle_timeout": 1, "server_idle_timeout": 1},
                 databases={helpers.DEFAULT_DB: {}})
    assert use(p, helpers.DEFAULT_DB) == helpers.DEFAULT_DB
    keeper = p.connect(user="app_scram")  # another pool, kept by its idle client
    try:
        keeper.cursor().execute("SELECT 1")
        assert pooled(p, helpers.DEFAULT_DB)
        wait_until(lambda: not pooled(p, helpers.DEFAULT_DB), 15, "the unused pool freed")
        assert pg.backends(USER, helpers.DEFAULT_DB) == 0, "its server went first"
        assert "freed: no client and no server for pool_idle_timeout" in p.log()
        assert any(r["user"] == "app_scram" for r in show(p, "POOLS")), "a connected client keeps its pool"
        assert use(p, helpers.DEFAULT_DB) == helpers.DEFAULT_DB  # made again on demand
    finally:
        keeper.close()
    # min_pool_size keeps a server, so the pool is never empty: it stays.
    q = pgrouter({"pool_idle_timeout": 1, "server_idle_timeout": 1, "min_pool_size": 1},
                 databases={helpers.DEFAULT_DB: {}})
    assert use(q, helpers.DEFAULT_DB) == helpers.DEFAULT_DB
    time.sleep(3.5)
    assert pooled(q, helpers.DEFAULT_DB)
    # Off by default.
    r = pgrouter({"server_idle_timeout": 1}, databases={helpers.DEFAULT_DB: {}})
    assert use(r, helpers.DEFAULT_DB) == helpers.DEFAULT_DB
    time.sleep(3.5)
    assert pooled(r, helpers.DEFAULT_DB)
