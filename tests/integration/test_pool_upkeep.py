"""Pool upkeep (SPEC §2): min_pool_size, the reserve pool, server_check_delay /
server_check_query, server_login_retry and shutdown_timeout.

Server connections are counted in pg_stat_activity under a role of these tests'
own, so connections left by other tests never blur the counts."""

import signal
import socket
import struct
import threading
import time

import psycopg2
import pytest

import helpers
import pgwire
from helpers import sqlstate, wait_until

ROLE = "upkeep"
ROLE_PASSWORD = "upkeep-secret"


@pytest.fixture
def role(pg):
    pg.sql("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'upkeep') THEN "
           f"CREATE ROLE upkeep LOGIN PASSWORD '{ROLE_PASSWORD}'; END IF; END$$")
    # Servers of an earlier test's pooler go away when it stops; wait for them.
    wait_until(lambda: pg.backends(ROLE) == 0, 15, "no server of the role left from earlier tests")
    return ROLE


def start(pgrouter, overrides, databases=None):
    return pgrouter(overrides, databases=databases, userlist=dict(helpers.PASSWORDS, **{ROLE: ROLE_PASSWORD}))


def connect(p, dbname=helpers.DEFAULT_DB):
    return p.connect(user=ROLE, dbname=dbname, password=ROLE_PASSWORD)


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


class Peak(threading.Thread):
    """The largest number of the role's server connections seen while it runs."""

    def __init__(self, pg):
        super().__init__(daemon=True)
        self.pg, self.peak, self.stop_ = pg, 0, threading.Event()

    def run(self):
        while not self.stop_.is_set():
            self.peak = max(self.peak, self.pg.backends(ROLE))
            time.sleep(0.05)

    def finish(self):
        self.stop_.set()
        self.join(10)
        return max(self.peak, self.pg.backends(ROLE))


# --------------------------------------------------------------------------- min_pool_size

def test_min_pool_size_opens_keeps_and_replaces_servers(pgrouter, pg, role):
    p = start(pgrouter, {"default_pool_size": 5, "min_pool_size": 3, "server_idle_timeout": 1})
    c = connect(p)  # the pool exists from the first login on
    try:
        assert one(c, "SELECT 1") == 1
        # Topped up to 3 with no client asking for more than one.
        wait_until(lambda: pg.backends(ROLE) == 3, 15, "min_pool_size=3 servers opened")
        first = set(pg.backend_pids(ROLE))
        # server_idle_timeout=1 closes idle servers, never below min_pool_size ...
        peak = Peak(pg)
        peak.start()
        time.sleep(3)
        assert peak.finish() == 3
        assert set(pg.backend_pids(ROLE)) == first, "idle servers above min_pool_size only are closed"
        # ... and servers that die are replaced.
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (ROLE,))
        wait_until(lambda: len(set(pg.backend_pids(ROLE)) - first) == 3, 15, "3 new servers after the old ones died")
        assert one(c, "SELECT 2") == 2
    finally:
        c.close()


@pytest.mark.pgrouter_only("PgBouncer 1.18 keeps min_pool_size only while a client is connected")
def test_min_pool_size_is_kept_after_every_client_left(pgrouter, pg, role):
    """README, deviations: the warm servers are there when load comes back after a
    quiet period with no client at all, which is what min_pool_size is for."""
    p = start(pgrouter, {"default_pool_size": 5, "min_pool_size": 2, "server_idle_timeout": 1})
    c = connect(p)
    try:
        assert one(c, "SELECT 1") == 1
    finally:
        c.close()
    wait_until(lambda: pg.backends(ROLE) == 2, 15, "min_pool_size=2 servers opened with no client connected")
    time.sleep(2.5)  # past server_idle_timeout
    assert pg.backends(ROLE) == 2


def test_min_pool_size_zero_opens_nothing_ahead(pgrouter, pg, role):
    p = start(pgrouter, {"default_pool_size": 5, "min_pool_size": 0})
    c = connect(p)
    try:
        assert one(c, "SELECT 1") == 1
        time.sleep(2.5)
        assert pg.backends(ROLE) == 1
    finally:
        c.close()


# --------------------------------------------------------------------------- reserve pool

def hold_transaction(p):
    c = connect(p)
    c.autocommit = False
    one(c, "SELECT 1")  # BEGIN (psycopg2) + SELECT: the pool's server is now this client's
    return c


def timed_query(p, results, i):
    t0 = time.monotonic()
    try:
        c = connect(p)
        try:
            results[i] = ("ok", one(c, "SELECT %s", (i,)), time.monotonic() - t0)
        finally:
            c.close()
    except psycopg2.Error as e:
        results[i] = ("error", e.pgcode, time.monotonic() - t0)


def test_reserve_pool_serves_clients_that_waited_reserve_pool_timeout(pgrouter, pg, role):
    p = start(pgrouter, {"default_pool_size": 1, "reserve_pool_size": 1, "reserve_pool_timeout": 1,
                         "query_wait_timeout": 30})
    holder = hold_transaction(p)
    peak = Peak(pg)
    peak.start()
    try:
        results = [None] * 4
        threads = [threading.Thread(target=timed_query, args=(p, results, i), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(25)
        # The pool's only server stays in the holder's transaction: every client was
        # served by the one reserve server, after waiting about reserve_pool_timeout.
        assert [r[:2] for r in results] == [("ok", i) for i in range(4)], results
        first = min(r[2] for r in results)
        assert first >= 0.8, f"a client got the reserve after {first:.2f}s (reserve_pool_timeout=1)"
        assert peak.finish() == 2, "pool_size 1 + reserve_pool_size 1"
        assert one(holder, "SELECT 5") == 5  # the holder's transaction went on undisturbed
    finally:
        holder.rollback()
        holder.close()


def test_without_reserve_pool_clients_wait_for_the_pool(pgrouter, pg, role):
    p = start(pgrouter, {"default_pool_size": 1, "reserve_pool_size": 0, "reserve_pool_timeout": 1,
                         "query_wait_timeout": 30})
    holder = hold_transaction(p)
    results = [None]
    t = threading.Thread(target=timed_query, args=(p, results, 0), daemon=True)
    try:
        t.start()
        t.join(3)
        assert t.is_alive(), f"served while the only server was in a transaction: {results}"
        assert pg.backends(ROLE) == 1
    finally:
        holder.rollback()
        holder.close()
    t.join(10)
    assert results[0][:2] == ("ok", 0), results


# --------------------------------------------------------------------------- server_check_delay / server_check_query

@pytest.fixture
def check_counter(pg, role):
    pg.sql("CREATE SEQUENCE IF NOT EXISTS upkeep_checks", dbname=helpers.DEFAULT_DB)
    pg.sql("GRANT ALL ON SEQUENCE upkeep_checks TO PUBLIC", dbname=helpers.DEFAULT_DB)

    def count():
        # nextval() calls so far, whatever earlier tests left
        last, called = pg.sql("SELECT last_value, is_called FROM upkeep_checks", dbname=helpers.DEFAULT_DB)[0]
        return last if called else 0

    return count


def test_server_check_query_runs_on_servers_idle_longer_than_the_delay(pgrouter, pg, check_counter):
    p = start(pgrouter, {"default_pool_size": 1, "server_check_delay": 1,
                         "server_check_query": "SELECT nextval('upkeep_checks')"})
    c = connect(p)
    try:
        pid = one(c, "SELECT pg_backend_pid()")
        before = check_counter()
        for i in range(10):  # back to back: the server was just used, no check
            assert one(c, "SELECT %s", (i,)) == i
        assert check_counter() == before
        time.sleep(1.6)  # idle longer than server_check_delay: checked before reuse
        assert one(c, "SELECT pg_backend_pid()") == pid
        assert check_counter() == before + 1
        time.sleep(1.6)
        assert one(c, "SELECT 7") == 7
        assert check_counter() == before + 2
    finally:
        c.close()


def test_server_check_also_runs_when_the_server_moves_to_another_worker(pgrouter, pg, check_counter):
    """An idle server on one worker handed to a client of the other worker gets the
    same check as one reused where it sits. Six clients land on both workers (but
    for a 1-in-32 chance); each reuses the one server after it sat idle."""
    p = start(pgrouter, {"default_pool_size": 1, "workers": 2, "server_check_delay": 0.5,
                         "server_check_query": "SELECT nextval('upkeep_checks')"})
    clients = [connect(p) for _ in range(6)]
    try:
        pid = one(clients[0], "SELECT pg_backend_pid()")
        before = check_counter()
        for c in clients:
            time.sleep(0.9)
            assert one(c, "SELECT pg_backend_pid()") == pid
        assert check_counter() == before + len(clients)
    finally:
        for c in clients:
            c.close()


@pytest.mark.pgrouter_only("PgBouncer 1.18 keeps a server whose check query answered with an error")
def test_server_failing_its_check_is_replaced(pgrouter, pg, role):
    p = start(pgrouter, {"default_pool_size": 1, "server_check_delay": 1, "server_check_query": "SELECT 1/0"})
    c = connect(p)
    try:
        pid = one(c, "SELECT pg_backend_pid()")
        time.sleep(1.6)
        # The check fails: that server is closed and the client gets a fresh one.
        pid2 = one(c, "SELECT pg_backend_pid()")
        assert pid2 != pid
        wait_until(lambda: pg.backend_pids(ROLE) == [pid2], 10, "the server that failed its check closed")
    finally:
        c.close()


def test_server_check_delay_zero_checks_every_reuse(pgrouter, pg, check_counter):
    p = start(pgrouter, {"default_pool_size": 1, "server_check_delay": 0,
                         "server_check_query": "SELECT nextval('upkeep_checks')"})
    c = connect(p)
    try:
        one(c, "SELECT 1")
        before = check_counter()
        for i in range(3):
            time.sleep(0.05)
            assert one(c, "SELECT %s", (i,)) == i
        assert check_counter() == before + 3
    finally:
        c.close()


# --------------------------------------------------------------------------- server_login_retry

class RefusingServer(threading.Thread):
    """Accepts TCP connections, declines TLS, reads the startup packet and answers
    FATAL 57P03 ("the database system is starting up") as a starting PostgreSQL
    does; counts the connection attempts."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = helpers.free_port()
        self.sock.bind((helpers.HOST, self.port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.attempts = 0
        self.stop_ = threading.Event()

    def run(self):
        while not self.stop_.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.attempts += 1
            with conn:
                conn.settimeout(2)
                try:
                    packet = conn.recv(8192)
                    if packet[4:8] == struct.pack("!I", 80877103):  # SSLRequest
                        conn.sendall(b"N")
                        conn.recv(8192)
                    body = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
                    conn.sendall(b"E" + struct.pack("!I", len(body) + 4) + body)
                except OSError:
                    pass

    def close(self):
        self.stop_.set()
        self.join(5)
        self.sock.close()


@pytest.mark.pgrouter_only("pgbouncer(5) says new clients get an error at once during server_login_retry; "
                            "1.18 made them wait for the next attempt here")
def test_server_login_retry_holds_off_new_attempts(pgrouter):
    fake = RefusingServer()
    fake.start()
    try:
        p = pgrouter({"server_login_retry": 3, "server_connect_timeout": 2, "query_wait_timeout": 10},
                     databases={"testdb": {}, "refusedb": {"dbname": "testdb", "port": fake.port}})

        def attempt():
            t0 = time.monotonic()
            with pytest.raises(pgwire.PgError) as e:
                c = p.wire(dbname="refusedb", timeout=20)
                try:
                    c.scalar("SELECT 1", timeout=20)
                finally:
                    c.terminate()
            return e.value.sqlstate, time.monotonic() - t0

        code, _ = attempt()
        failed_at = time.monotonic()
        assert code == sqlstate("57P03"), code  # the server's own error reaches the client
        assert fake.attempts == 1
        # Within server_login_retry: answered at once with the last error, no new attempt.
        for _ in range(3):
            code, took = attempt()
            assert code == sqlstate("57P03") and took < 1.5, (code, took)
        assert fake.attempts == 1, "server_login_retry=3 did not hold off new login attempts"
        # After it, the next client tries again.
        time.sleep(max(0.0, failed_at + 3.5 - time.monotonic()))
        attempt()
        assert fake.attempts == 2
        # The healthy database was never held off.
        c = p.connect()
        try:
            assert one(c, "SELECT 1") == 1
        finally:
            c.close()
    finally:
        fake.close()


# --------------------------------------------------------------------------- shutdown_timeout

@pytest.mark.pgrouter_only("shutdown_timeout (SPEC §1); PgBouncer waits without a limit")
def test_shutdown_timeout_ends_a_transaction_that_outlasts_it(pgrouter, pg, role):
    p = start(pgrouter, {"shutdown_timeout": 2})
    c = pgwire.connect(p.host, p.port, ROLE, helpers.DEFAULT_DB, ROLE_PASSWORD)
    try:
        assert c.query("BEGIN").status == "T"
        assert c.scalar("SELECT 1") == "1"
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        time.sleep(1)
        assert p.proc.poll() is None, "exited before shutdown_timeout with a transaction in flight"
        assert p.proc.wait(timeout=10) == 0
        took = time.monotonic() - t0
        assert 1.8 <= took <= 6, f"exited {took:.1f}s after SIGTERM (shutdown_timeout=2)"
        # The client is told why, as PostgreSQL tells it at a shutdown.
        msgs = c.wait_closed(5)
        errs = [pgwire.parse_fields(b) for t, b in msgs if t == b"E"]
        assert errs and errs[-1].get("C") == "57P01", msgs
    finally:
        c.close()
    # Its server was closed, not left in the transaction.
    wait_until(lambda: pg.backends(ROLE) == 0, 10, "the server of the cut transaction closed")


@pytest.mark.pgrouter_only("SIGTERM is a safe shutdown (SPEC §1); PgBouncer 1.18 exits at once")
def test_safe_shutdown_turns_away_queued_clients_and_finishes_the_transaction(pgrouter, pg, role):
    p = start(pgrouter, {"shutdown_timeout": 20, "default_pool_size": 1, "query_wait_timeout": 30})
    holder = pgwire.connect(p.host, p.port, ROLE, helpers.DEFAULT_DB, ROLE_PASSWORD)
    queued = pgwire.connect(p.host, p.port, ROLE, helpers.DEFAULT_DB, ROLE_PASSWORD)
    try:
        assert holder.query("BEGIN").status == "T"
        queued.send(pgwire.query_msg("SELECT 1"))  # waits: the only server is in the holder's transaction
        time.sleep(0.5)
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        # The queued client gets 57P01 within a janitor round, not at query_wait_timeout.
        msgs = queued.wait_closed(10)
        assert time.monotonic() - t0 < 4
        errs = [pgwire.parse_fields(b) for t, b in msgs if t == b"E"]
        assert [e.get("C") for e in errs] == ["57P01"], msgs
        assert not any(t == b"D" for t, _ in msgs), "the queued query ran"
        # The transaction in flight finishes; then the pooler exits.
        assert holder.scalar("SELECT 2") == "2"
        assert p.proc.poll() is None
        assert holder.query("COMMIT").status == "I"
        assert p.proc.wait(timeout=10) == 0
    finally:
        holder.close()
        queued.close()


def test_reload_raising_pool_size_serves_queued_clients(pgrouter, pg, role):
    """A RELOAD that raises default_pool_size lets clients already queued open the
    new servers, without waiting for a server to be released."""
    p = start(pgrouter, {"default_pool_size": 1, "query_wait_timeout": 30})
    holder = hold_transaction(p)
    results = [None] * 2
    threads = [threading.Thread(target=timed_query, args=(p, results, i), daemon=True) for i in range(2)]
    try:
        for t in threads:
            t.start()
        time.sleep(1)
        assert results == [None, None], "served while the only server was in a transaction"
        p.settings["default_pool_size"] = 3
        p.write_config(None)
        p.admin("RELOAD")
        for t in threads:
            t.join(8)
        assert [r[:2] if r else None for r in results] == [("ok", 0), ("ok", 1)], results
        assert pg.backends(ROLE) <= 3
    finally:
        holder.rollback()
        holder.close()


# --------------------------------------------------------------------------- server_round_robin

@pytest.mark.parametrize("round_robin", [False, True])
def test_server_round_robin_decides_which_idle_server_is_reused(pgrouter, pg, role, round_robin):
    """Three idle servers; six transactions one after another. By default the most
    recently used server serves them all (LIFO: few hot servers); with
    server_round_robin each takes the least recently used one, so they cycle."""
    p = start(pgrouter, {"default_pool_size": 3, "workers": 1, "server_round_robin": round_robin,
                         "server_check_delay": 3600})
    holders = [connect(p) for _ in range(3)]
    try:
        for h in holders:
            h.autocommit = False
            one(h, "SELECT 1")  # each holds a server until its commit
        opened = {one(h, "SELECT pg_backend_pid()") for h in holders}
        assert len(opened) == 3
        for h in holders:
            h.commit()
    finally:
        for h in holders:
            h.close()
    c = connect(p)
    try:
        used = [one(c, "SELECT pg_backend_pid()") for _ in range(6)]
    finally:
        c.close()
    assert set(used) <= opened
    if round_robin:
        assert len(set(used[:3])) == 3 and used[3:] == used[:3], used
    else:
        assert len(set(used)) == 1, used
