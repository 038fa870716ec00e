"""Pool limits: pool_size queueing, max_client_conn, query_wait_timeout,
max_db_connections, max_user_connections."""

import threading
import time

import psycopg2
import pytest

import helpers
import pgwire
from helpers import sqlstate


class Observer(threading.Thread):
    """Polls pg_stat_activity and records the peak number of backends of one user."""

    def __init__(self, pg, user, dbname=None):
        super().__init__(daemon=True)
        self.pg, self.user, self.dbname = pg, user, dbname
        self.peak = 0
        self.stop_ = threading.Event()
        self.conn = pg.connect()

    def sample(self):
        q = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
             " AND usename = ANY(%s)" + (" AND datname = %s" if self.dbname else ""))
        users = self.user if isinstance(self.user, (list, tuple)) else [self.user]
        with self.conn.cursor() as cur:
            cur.execute(q, (list(users), self.dbname) if self.dbname else (list(users),))
            return cur.fetchone()[0]

    def run(self):
        while not self.stop_.is_set():
            self.peak = max(self.peak, self.sample())
            time.sleep(0.02)

    def finish(self):
        self.stop_.set()
        self.join(10)
        self.peak = max(self.peak, self.sample())
        self.conn.close()
        return self.peak


def run_clients(n, fn, timeout=60):
    results = [None] * n

    def worker(i):
        try:
            results[i] = ("ok", fn(i))
        except Exception as e:
            results[i] = ("error", e)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "clients still running after the deadline"
    return results


def test_pool_size_queues_clients(pgrouter, pg):
    p = pgrouter({"default_pool_size": 2})
    obs = Observer(pg, "app_md5", "testdb")
    obs.start()

    def client(i):
        c = p.connect()
        try:
            with c.cursor() as cur:
                cur.execute("SELECT pg_sleep(0.2), %s", (i,))
                return cur.fetchone()[1]
        finally:
            c.close()

    t0 = time.monotonic()
    results = run_clients(10, client)
    elapsed = time.monotonic() - t0
    peak = obs.finish()
    assert all(r[0] == "ok" for r in results), results
    assert sorted(r[1] for r in results) == list(range(10))
    assert 1 <= peak <= 2, f"{peak} server connections with default_pool_size = 2"
    assert elapsed >= 0.9, "10 x 0.2 s on 2 servers cannot take less than 1 s"


def test_max_client_conn(pgrouter):
    p = pgrouter({"max_client_conn": 3})
    held = [p.wire() for _ in range(3)]
    try:
        with pytest.raises(pgwire.PgError) as e:
            extra = p.wire()
            extra.terminate()
        assert e.value.sqlstate == sqlstate("53300"), e.value
        assert held[0].scalar("SELECT 1") == "1"
    finally:
        for c in held:
            c.terminate()
    # Slots are given back when clients leave.
    deadline = time.monotonic() + 5
    while True:
        try:
            c = p.wire()
            c.terminate()
            break
        except pgwire.PgError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_query_wait_timeout(pgrouter):
    p = pgrouter({"default_pool_size": 1, "query_wait_timeout": 1})
    a = p.connect()
    b = p.connect()
    try:
        with a.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT 1")
        t0 = time.monotonic()
        with pytest.raises(psycopg2.Error):
            with b.cursor() as cur:
                cur.execute("SELECT 2")
        waited = time.monotonic() - t0
        assert 0.7 <= waited <= 6, f"query_wait_timeout=1 fired after {waited:.1f}s"
        with a.cursor() as cur:
            cur.execute("SELECT 3")
            assert cur.fetchone()[0] == 3, "the client holding the server is unaffected"
            cur.execute("COMMIT")
    finally:
        a.close()
        b.close()


def test_max_db_connections(pgrouter, pg):
    """Two users, each with a pool of 5, but at most 2 servers for the database."""
    p = pgrouter({"default_pool_size": 5, "max_db_connections": 2},
                 databases={"testdb": {}})
    obs = Observer(pg, ["app_md5", "app_scram"], "testdb")
    obs.start()

    def client(i):
        c = p.connect(user="app_md5" if i % 2 else "app_scram")
        try:
            with c.cursor() as cur:
                cur.execute("SELECT pg_sleep(0.2)")
            return i
        finally:
            c.close()

    results = run_clients(8, client)
    peak = obs.finish()
    assert all(r[0] == "ok" for r in results), results
    assert 1 <= peak <= 2, f"{peak} server connections with max_db_connections = 2"


def test_max_user_connections(pgrouter, pg):
    """One user across two databases (two pools of 5) may hold at most 2 servers."""
    p = pgrouter({"default_pool_size": 5, "max_user_connections": 2},
                 databases={"testdb": {}, "testdb_alias": {"dbname": "testdb"}})
    obs = Observer(pg, "app_md5")
    obs.start()

    def client(i):
        c = p.connect(dbname="testdb" if i % 2 else "testdb_alias")
        try:
            with c.cursor() as cur:
                cur.execute("SELECT pg_sleep(0.2)")
            return i
        finally:
            c.close()

    results = run_clients(8, client)
    peak = obs.finish()
    assert all(r[0] == "ok" for r in results), results
    assert 1 <= peak <= 2, f"{peak} server connections with max_user_connections = 2"


def test_per_user_max_user_connections(pgrouter, pg):
    p = pgrouter({"default_pool_size": 5}, users={"app_md5": {"max_user_connections": 1}})
    obs = Observer(pg, "app_md5")
    obs.start()

    def client(i):
        c = p.connect()
        try:
            with c.cursor() as cur:
                cur.execute("SELECT pg_sleep(0.1)")
            return i
        finally:
            c.close()

    results = run_clients(5, client)
    peak = obs.finish()
    assert all(r[0] == "ok" for r in results), results
    assert 1 <= peak <= 1, f"{peak} server connections with [users.app_md5] max_user_connections = 1"


def test_database_pool_size_overrides_default(pgrouter, pg):
    p = pgrouter({"default_pool_size": 5}, databases={"testdb": {"pool_size": 1}})
    obs = Observer(pg, "app_md5", "testdb")
    obs.start()

    def client(i):
        c = p.connect()
        try:
            with c.cursor() as cur:
                cur.execute("SELECT pg_sleep(0.1)")
        finally:
            c.close()

    results = run_clients(4, client)
    peak = obs.finish()
    assert all(r[0] == "ok" for r in results), results
    assert 1 <= peak <= 1


def pools_waiting(p, user="app_md5"):
    c = p.connect(user="pgbouncer", dbname="pgbouncer")
    try:
        with c.cursor() as cur:
            cur.execute("SHOW POOLS")
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        c.close()
    return sum(int(r["cl_waiting"]) for r in rows if r["database"] == "testdb" and r["user"] == user)


@pytest.mark.pgrouter_only("PgBouncer 1.18 keeps a client that hung up queued until a server frees up, "
                           "then runs what it pipelined")
@pytest.mark.parametrize("how", ["query-then-close", "pipelined-then-close", "paused-then-close"])
def test_client_gone_while_queued_never_runs_its_query(pgrouter, pg, how):
    """A client that sends a query, is queued for a server (pool full, or the database
    PAUSEd) and hangs up leaves the queue within a janitor round (a second), and its
    query never reaches PostgreSQL when a server frees up. Pipelined: it sends a second query while
    queued before hanging up (bytes arrive first, the hang-up after)."""
    pg.sql("CREATE TABLE IF NOT EXISTS gone_waiting (v int)", dbname="testdb")
    pg.sql("GRANT ALL ON gone_waiting TO PUBLIC", dbname="testdb")
    pg.sql("TRUNCATE gone_waiting", dbname="testdb")
    p = pgrouter({"default_pool_size": 1, "query_wait_timeout": 60})
    holder = p.connect(autocommit=False)
    victim = p.wire()
    console = p.connect(user="pgbouncer", dbname="pgbouncer")
    try:
        if how == "paused-then-close":
            console.cursor().execute("PAUSE testdb")
        else:
            holder.cursor().execute("SELECT 1")  # in a transaction: the only server is the holder's
        victim.send(pgwire.query_msg("INSERT INTO gone_waiting VALUES (1)"))
        deadline = time.monotonic() + 10
        while pools_waiting(p) != 1:
            assert time.monotonic() < deadline, "the client never queued"
            time.sleep(0.1)
        if how == "pipelined-then-close":
            victim.send(pgwire.query_msg("INSERT INTO gone_waiting VALUES (2)"))
            time.sleep(0.3)
            assert pools_waiting(p) == 1, "a queued client that sent more is still there"
        victim.close()
        # It leaves the queue while the server is still held (or the database paused).
        deadline = time.monotonic() + 5
        while pools_waiting(p) != 0:
            assert time.monotonic() < deadline, "a client that hung up stays queued"
            time.sleep(0.1)
        # The server is free: a query still queued would run now.
        if how == "paused-then-close":
            console.cursor().execute("RESUME testdb")
        holder.commit()
        time.sleep(1)
        assert pg.sql("SELECT count(*) FROM gone_waiting", dbname="testdb")[0][0] == 0
        with holder.cursor() as cur:  # the pool goes on, on a clean server
            cur.execute("SELECT txid_current_if_assigned() IS NULL")
            assert cur.fetchone()[0] is True
        holder.commit()
    finally:
        victim.close()
        holder.close()
        console.close()


def refused(p, **kw):
    with pytest.raises(pgwire.PgError) as e:
        p.wire(**kw).terminate()
    assert e.value.sqlstate == "53300", e.value
    return e.value.message


@pytest.mark.pgrouter_only("max_db_client_connections is newer than PgBouncer 1.18")
def test_max_db_client_connections(pgrouter):
    """Client connections per database name (all users): the global limit, and a
    database's own; a slot frees when a client leaves."""
    p = pgrouter({"max_db_client_connections": 2},
                 databases={"testdb": {}, "otherdb": {"dbname": "testdb", "max_db_client_connections": 1}})
    held = [p.wire(), p.wire(user="app_scram", password="scram-secret")]
    try:
        assert "max_db_client_connections" in refused(p)
        other = p.wire(dbname="otherdb")  # another name: counted apart
        assert "max_db_client_connections" in refused(p, dbname="otherdb")
        other.terminate()
        assert held[0].scalar("SELECT 1") == "1"
        held.pop().terminate()
        # SHOW CLIENTS: type, user, database, ...
        helpers.wait_until(lambda: len([r for r in p.admin("SHOW CLIENTS") if r[2] == "testdb"]) == 1, 5,
                           "the client gone")
        held.append(p.wire())  # its slot is free again
    finally:
        for c in held:
            c.terminate()


@pytest.mark.pgrouter_only("max_user_client_connections is newer than PgBouncer 1.18")
def test_max_user_client_connections(pgrouter):
    """Client connections per user (all databases): the global limit, and a user's own."""
    p = pgrouter({"max_user_client_connections": 1}, users={"app_scram": {"max_user_client_connections": 2}},
                 databases={"testdb": {}, "otherdb": {"dbname": "testdb"}})
    a = p.wire()
    s1 = p.wire(user="app_scram", password="scram-secret")
    s2 = p.wire(user="app_scram", password="scram-secret", dbname="otherdb")
    try:
        assert "max_user_client_connections" in refused(p, dbname="otherdb")  # app_md5 has its one
        assert "max_user_client_connections" in refused(p, user="app_scram", password="scram-secret")
        assert a.scalar("SELECT 1") == "1" and s2.scalar("SELECT 2") == "2"
    finally:
        for c in (a, s1, s2):
            c.terminate()
    helpers.wait_until(lambda: not [r for r in p.admin("SHOW CLIENTS") if r[1] == "app_md5"], 5, "clients gone")
    p.wire().terminate()


@pytest.mark.pgrouter_only("query_wait_notify is newer than PgBouncer 1.18")
@pytest.mark.parametrize("notify", [1, 0])
def test_query_wait_notify(pgrouter, notify):
    """A client queued for a server longer than query_wait_notify gets one NOTICE
    while it waits (0: none), then its result as usual."""
    p = pgrouter({"default_pool_size": 1, "query_wait_notify": notify})
    holder = p.connect(autocommit=False)
    waiter = p.wire()
    try:
        holder.cursor().execute("SELECT 1")  # in a transaction: the only server is the holder's
        waiter.send(pgwire.query_msg("SELECT 42"))
        seen = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                seen.append(waiter.read_message(timeout=max(0.1, deadline - time.monotonic())))
            except pgwire.WireError:
                break
        notices = [pgwire.parse_fields(b) for t, b in seen if t == b"N"]
        if notify:
            assert len(notices) == 1, seen
            assert "query queued" in notices[0]["M"] and notices[0]["S"] == "NOTICE", notices
        else:
            assert seen == [], seen
        assert not any(t == b"D" for t, _ in seen)
        holder.commit()
        r = waiter.read_until_ready()
        assert r.rows == [["42"]] and r.error is None, r.messages
    finally:
        waiter.close()
        holder.close()


@pytest.mark.pgrouter_only("query_wait_notify is newer than PgBouncer 1.18")
def test_query_wait_notify_then_query_wait_timeout(pgrouter):
    """The NOTICE, then query_wait_timeout's error: both whole, in that order."""
    p = pgrouter({"default_pool_size": 1, "query_wait_notify": 1, "query_wait_timeout": 2.5})
    holder = p.connect(autocommit=False)
    waiter = p.wire()
    try:
        holder.cursor().execute("SELECT 1")
        waiter.send(pgwire.query_msg("SELECT 42"))
        msgs = waiter.wait_closed(10)
        assert [t for t, _ in msgs] == [b"N", b"E"], msgs
        assert pgwire.parse_fields(msgs[1][1])["C"] == "57014", msgs
    finally:
        waiter.close()
        holder.close()
