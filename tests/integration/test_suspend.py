"""SUSPEND as PgBouncer's: it answers once every connection has flushed what it was
forwarding (nobody in the middle of a write or logging in), and after suspend_timeout
it drops the connections still busy ("suspend_timeout", 08P01). Unlike PgBouncer, a
client queued for a server is not waited for: it stays queued and is served after
RESUME. RESUME or SIGUSR2 ends it. Logins that arrive meanwhile wait for RESUME; the
console still opens (PgBouncer stops listening altogether: see README)."""

import signal
import socket
import threading
import time

import psycopg2
import pytest

import helpers
import pgwire

pytestmark = pytest.mark.pgrouter_only("a console opened during SUSPEND and SHOW STATE are pgrouter's; "
                                       "PgBouncer stops listening while suspended")

# About 50 MB of rows: far more than the kernel buffers between pgrouter and a client
# that does not read, so pgrouter is left in the middle of a write to it.
BIG = "SELECT repeat('x', 1000) FROM generate_series(1, 50000)"
BIG_ROWS = 50000


def state(p):
    return dict(p.admin("SHOW STATE"))


def timed_suspend(p):
    t0 = time.monotonic()
    p.admin("SUSPEND")
    return time.monotonic() - t0


class Background:
    """Runs fn in a thread; result() gives its value or raises its exception."""

    def __init__(self, fn):
        self.value, self.exc = None, None
        self.done = threading.Event()

        def run():
            try:
                self.value = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the test
                self.exc = e
            finally:
                self.done.set()

        threading.Thread(target=run, daemon=True).start()

    def result(self, timeout):
        assert self.done.wait(timeout), "the background call did not finish"
        if self.exc:
            raise self.exc
        return self.value


def stalled_client(p):
    """A client that sends BIG and never reads: pgrouter blocks writing to it."""
    c = p.wire()
    pid = c.scalar("SELECT pg_backend_pid()")
    c.send(pgwire.query_msg(BIG))
    time.sleep(1.0)  # the server has sent far more than the buffers hold
    return c, int(pid)


def drain_until_closed(c, timeout=20):
    """Reads raw bytes until EOF; returns how many (fails on timeout)."""
    n, deadline = len(c.buf), time.monotonic() + timeout
    while time.monotonic() < deadline:
        c.sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = c.sock.recv(1 << 20)
        except socket.timeout:
            break
        except ConnectionResetError:
            return n
        if not chunk:
            return n
        n += len(chunk)
    pytest.fail(f"the connection stayed open ({n} bytes read)")


def test_suspend_drops_a_client_that_does_not_read_after_suspend_timeout(pgrouter, pg):
    p = pgrouter({"suspend_timeout": 1, "default_pool_size": 1})
    c, old_pid = stalled_client(p)
    try:
        took = timed_suspend(p)
        # It waited for the stalled write (an answer at once means it did not look),
        # then gave up after suspend_timeout.
        assert took >= 0.9, f"SUSPEND answered after {took:.2f}s, before suspend_timeout"
        assert took < 8, f"SUSPEND took {took:.2f}s with suspend_timeout = 1"
        assert state(p)["suspended"] == "yes"
        assert "suspend_timeout" in p.log()
        p.admin("RESUME")
        # The dropped client's connection is closed (what pgrouter had written before
        # is still in the socket, then EOF).
        received = drain_until_closed(c)
        assert received < BIG_ROWS * 1000, f"the whole result arrived ({received} bytes): nothing was dropped"
        # Its server was mid-result: closed, never given to the next client.
        with p.connect() as fresh:
            with fresh.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                assert cur.fetchone()[0] != old_pid, "the dirty server connection went back to the pool"
        helpers.wait_until(lambda: old_pid not in pg.backend_pids(helpers.DEFAULT_USER), 10,
                           "the dirty server to close")
    finally:
        c.close()


def test_suspend_answers_once_a_slow_client_has_read_what_was_being_written(pgrouter):
    p = pgrouter({"suspend_timeout": 60})
    c, _ = stalled_client(p)
    try:
        suspend = Background(lambda: timed_suspend(p))
        assert not suspend.done.wait(1.0), "SUSPEND answered while a write to a client was stuck"
        # The client starts reading: the write in progress completes, nothing more
        # is forwarded, and SUSPEND answers (long before its 60 s).
        reader = Background(lambda: c.read_until_ready(timeout=60))
        took = suspend.result(30)
        assert took < 30
        assert not reader.done.wait(0.5), "the whole result went through while suspended"
        p.admin("RESUME")
        r = reader.result(60)
        assert r.error is None and len(r.rows) == BIG_ROWS, (r.error, len(r.rows))
        assert c.scalar("SELECT 42") == "42", "the client did not survive SUSPEND"
    finally:
        c.close()


def nothing_within(c, seconds):
    """True when c receives nothing for that long."""
    try:
        m = c.read_message(timeout=seconds)
    except pgwire.WireError:
        return True
    raise AssertionError(f"got {m!r} while suspended")


def test_suspend_keeps_a_client_queued_for_a_server_and_serves_it_after_resume(pgrouter):
    """A queued client holds nothing that needs flushing (there is no socket hand-over):
    SUSPEND answers at once, the client stays queued, and when a server is released
    after RESUME it gets it. PgBouncer waits for it and drops it at suspend_timeout."""
    p = pgrouter({"suspend_timeout": 5, "default_pool_size": 1})
    holder = p.wire()
    holder.query("BEGIN")
    holder.query("SELECT 1")  # holds the only server, idle in its transaction
    queued = p.wire()
    queued.send(pgwire.query_msg("SELECT 2"))
    try:
        time.sleep(0.3)
        took = timed_suspend(p)
        assert took < 3, f"SUSPEND took {took:.2f}s with only a queued client"
        # While suspended the holder's COMMIT is not read, so the server stays with it.
        holder.send(pgwire.query_msg("COMMIT"))
        assert nothing_within(holder, 0.5) and nothing_within(queued, 0.1)
        assert state(p)["suspended"] == "yes", state(p)
        p.admin("RESUME")
        r = holder.read_until_ready()
        assert r.error is None and r.status == "I", r.error
        r = queued.read_until_ready()
        assert r.error is None and r.rows == [["2"]], (r.error, r.rows)
        assert holder.scalar("SELECT 3") == "3" and queued.scalar("SELECT 4") == "4"
    finally:
        holder.close()
        queued.close()


def test_answers_and_queries_already_under_way_wait_for_resume(pgrouter, pg):
    """SUSPEND while a query runs on the only server and another client is queued: it
    answers at once (nothing is being written), the running query's answer is held until
    RESUME, and only then does the server go on to the queued client."""
    p = pgrouter({"suspend_timeout": 5, "default_pool_size": 1})
    slow = p.wire()
    slow.send(pgwire.query_msg("SELECT pg_sleep(0.5)"))
    time.sleep(0.2)
    queued = p.wire()
    queued.send(pgwire.query_msg("SELECT pg_backend_pid(), now() = statement_timestamp()"))
    try:
        time.sleep(0.1)
        took = timed_suspend(p)
        assert took < 3, f"SUSPEND took {took:.2f}s"
        assert nothing_within(slow, 1.2), "an answer was forwarded while suspended"
        assert nothing_within(queued, 0.1)
        active = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_md5' AND state = 'active'",
                        dbname="testdb")[0][0]
        assert active == 0, "a query reached the server while suspended"
        p.admin("RESUME")
        r = slow.read_until_ready(timeout=10)
        assert r.error is None and r.status == "I", r.error
        r = queued.read_until_ready(timeout=10)
        assert r.error is None and len(r.rows) == 1 and r.rows[0][1] == "t", (r.error, r.rows)
    finally:
        slow.close()
        queued.close()


def test_a_client_leaving_while_its_answer_is_held_frees_its_server_at_once(pgrouter, pg):
    """The answer held by SUSPEND has nobody to go to: the server, left with half a
    conversation, is closed now, not at RESUME."""
    p = pgrouter({"suspend_timeout": 5, "default_pool_size": 1})
    slow = p.wire()
    slow.send(pgwire.query_msg("SELECT pg_sleep(0.3)"))
    time.sleep(0.1)
    try:
        timed_suspend(p)
        time.sleep(0.6)  # the answer is in, held
        slow.abort()
        deadline = time.monotonic() + 3
        while pg.backends("app_md5", "testdb") > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pg.backends("app_md5", "testdb") == 0, "the server stayed with a client that left"
        assert state(p)["suspended"] == "yes", state(p)
    finally:
        slow.close()
        p.admin("RESUME")
    c = p.wire()
    try:
        assert c.scalar("SELECT 5") == "5"
    finally:
        c.terminate()


def test_suspend_drops_a_connection_that_never_logs_in(pgrouter):
    p = pgrouter({"suspend_timeout": 1})
    silent = p.raw()
    try:
        time.sleep(0.2)
        took = timed_suspend(p)
        assert took >= 0.9, f"SUSPEND answered after {took:.2f}s with a login pending"
        silent.wait_closed(timeout=10)
    finally:
        silent.close()
        p.admin("RESUME")


def test_idle_clients_do_not_hold_suspend_and_are_served_after_resume(pgrouter):
    p = pgrouter({"suspend_timeout": 30})
    idle = [p.wire() for _ in range(5)]
    in_txn = p.wire()
    in_txn.query("BEGIN")
    try:
        took = timed_suspend(p)
        assert took < 10, f"SUSPEND waited {took:.2f}s for clients with nothing to flush"
        q = Background(lambda: idle[0].query("SELECT 5"))
        assert not q.done.wait(1.0), "a query went through while suspended"
        p.admin("RESUME")
        assert q.result(10).rows == [["5"]]
        assert in_txn.query("COMMIT").status == "I"
        for c in idle[1:]:
            assert c.scalar("SELECT 1") == "1"
    finally:
        for c in idle + [in_txn]:
            c.close()


def test_login_during_suspend_waits_for_resume_and_the_console_still_opens(pgrouter):
    # The wait does not count against client_login_timeout (PgBouncer's clients wait
    # in the listen backlog).
    p = pgrouter({"client_login_timeout": 1})
    p.admin("SUSPEND")
    login = Background(lambda: p.wire())
    assert not login.done.wait(1.5), "a login went through while suspended"
    assert state(p)["suspended"] == "yes"  # a console opens meanwhile
    p.admin("RESUME")
    c = login.result(10)
    try:
        assert c.scalar("SELECT 9") == "9"
    finally:
        c.close()


def test_suspend_refused_when_already_suspended_or_paused_and_sigusr2_resumes(pgrouter):
    p = pgrouter()
    p.admin("SUSPEND")
    with pytest.raises(psycopg2.Error, match="already suspended/paused"):
        p.admin("SUSPEND")
    with pytest.raises(psycopg2.Error, match="already suspended/paused"):
        p.admin("PAUSE")
    login = Background(lambda: p.wire())
    assert not login.done.wait(1.0), "a login went through while suspended"
    p.signal(signal.SIGUSR2)
    c = login.result(10)
    try:
        assert c.scalar("SELECT 8") == "8"
    finally:
        c.close()
    assert state(p)["suspended"] == "no"
    p.admin("PAUSE")
    with pytest.raises(psycopg2.Error, match="already suspended/paused"):
        p.admin("SUSPEND")
    p.admin("RESUME")


def test_suspend_and_resume_under_load_lose_no_transaction(pgrouter, pg, bench_db):
    """pgbench select-only (4 clients, 5 servers: nobody queued) runs 6 s while the
    console SUSPENDs and RESUMEs three times: each SUSPEND settles without dropping
    anyone, no transaction fails, and no server is left busy or in a transaction."""
    p = pgrouter({"default_pool_size": 5, "suspend_timeout": 20}, databases={"benchdb": {}})
    bench = Background(lambda: p.pgbench("-n", "-S", "-c", "4", "-j", "2", "-T", "6", dbname="benchdb", timeout=90))
    time.sleep(1)
    for _ in range(3):
        took = timed_suspend(p)
        assert took < 10, f"SUSPEND took {took:.2f}s with nothing queued"
        time.sleep(0.5)
        p.admin("RESUME")
        time.sleep(0.5)
    r = bench.result(90)
    assert r.returncode == 0, r.stderr
    assert "suspend_timeout" not in p.log()
    m = [line for line in r.stdout.splitlines() if line.startswith("number of transactions actually processed")]
    assert m and int(m[0].split(":")[1].split("/")[0]) > 0, r.stdout
    assert "number of failed transactions: 0" in r.stdout or "failed" not in r.stdout, r.stdout
    helpers.wait_until(lambda: all(s == "idle" for s in
                                   (row[2] for row in pg.sql("SELECT pid, datname, state FROM pg_stat_activity "
                                                             "WHERE datname = 'benchdb' AND pid <> pg_backend_pid()"))),
                       10, "the servers to go idle")
