"""SPEC §5: the admin console (database "pgbouncer"), through psql, libpq
(psycopg2: simple query protocol) and the raw wire; and pgrouter-ctl.

Column lists are PgBouncer's documented ones (doc/usage.md of PgBouncer 1.18);
pgrouter may only add columns after them. POOLER=pgbouncer runs the same tests
against PgBouncer 1.18 to validate them (pgrouter-only behaviour is marked)."""

import os
from contextlib import closing
import signal
import struct
import subprocess
import threading
import time

import psycopg2
import pytest

import helpers
import pgwire
from pgwire import bind_msg, execute_msg, parse_msg, query_msg, sync_msg

ADMIN = "pgbouncer"
STATS_USER = "app_plain"

# PgBouncer 1.18, doc/usage.md ("Show commands"), in order.
DOC_COLUMNS = {
    "STATS": ["database", "total_xact_count", "total_query_count", "total_received", "total_sent",
              "total_xact_time", "total_query_time", "total_wait_time", "avg_xact_count", "avg_query_count",
              "avg_recv", "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time"],
    "STATS_TOTALS": ["database", "xact_count", "query_count", "bytes_received", "bytes_sent", "xact_time",
                     "query_time", "wait_time"],
    "STATS_AVERAGES": ["database", "xact_count", "query_count", "bytes_received", "bytes_sent", "xact_time",
                       "query_time", "wait_time"],
    "TOTALS": ["name", "value"],
    "SERVERS": ["type", "user", "database", "state", "addr", "port", "local_addr", "local_port", "connect_time",
                "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls",
                "application_name"],
    "CLIENTS": ["type", "user", "database", "state", "addr", "port", "local_addr", "local_port", "connect_time",
                "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls",
                "application_name"],
    "POOLS": ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
              "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
              "maxwait", "maxwait_us", "pool_mode"],
    "LISTS": ["list", "items"],
    "USERS": ["name", "pool_mode"],
    "DATABASES": ["name", "host", "port", "database", "force_user", "pool_size", "min_pool_size", "reserve_pool",
                  "pool_mode", "max_connections", "current_connections", "paused", "disabled"],
    "FDS": ["fd", "task", "user", "database", "addr", "port", "cancel", "link", "client_encoding", "std_strings",
            "datestyle", "timezone", "password", "scram_client_key", "scram_server_key"],
    "SOCKETS": ["type", "user", "database", "state", "addr", "port", "local_addr", "local_port", "connect_time",
                "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls",
                "application_name", "recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail",
                "send_avail"],
    "CONFIG": ["key", "value", "default", "changeable"],
    "MEM": ["name", "size", "used", "free", "memtotal"],
    "VERSION": ["version"],
    "DNS_HOSTS": ["hostname", "ttl", "addrs"],
    "DNS_ZONES": ["zonename", "serial", "count"],
}
# Newer PgBouncer documents SHOW STATE: rows active, paused, suspended.
STATE_COLUMNS = ["key", "value"]
STATE_ROWS = ["active", "paused", "suspended"]
# Row names (first column) of SHOW LISTS and SHOW TOTALS, PgBouncer 1.18.
LISTS_ROWS = ["databases", "users", "pools", "free_clients", "used_clients", "login_clients", "free_servers",
              "used_servers", "dns_names", "dns_zones", "dns_queries", "dns_pending"]
TOTALS_ROWS = ["total_xact_count", "total_query_count", "total_client_bytes", "total_server_bytes",
               "total_xact_time", "total_query_time", "total_wait_time", "avg_xact_count", "avg_query_count",
               "avg_client_bytes", "avg_server_bytes", "avg_xact_time", "avg_query_time", "avg_wait_time"]

INT4, INT8, TEXT, NUMERIC = 23, 20, 25, 1700


def start(pgrouter, overrides=None, **kw):
    settings = {"stats_users": [STATS_USER]}
    settings.update(overrides or {})
    return pgrouter(settings, **kw)


def admin_conn(p, user=ADMIN):
    return p.connect(user=user, dbname="pgbouncer")


def run(conn, sql):
    """(column names, type oids, rows); rows is None for commands without a result set."""
    with conn.cursor() as cur:
        cur.execute(sql)
        if cur.description is None:
            return None, None, None
        return [d.name for d in cur.description], [d.type_code for d in cur.description], cur.fetchall()


def show(p, what, user=ADMIN):
    """SHOW <what> as a list of dicts (one per row)."""
    c = admin_conn(p, user)
    try:
        names, _, rows = run(c, f"SHOW {what}")
        return [dict(zip(names, r)) for r in rows]
    finally:
        c.close()


def admin(p, sql, user=ADMIN):
    c = admin_conn(p, user)
    try:
        return run(c, sql)
    finally:
        c.close()


def psql_admin(p, sql, user=ADMIN):
    """psql -X -A -F '|' ... pgbouncer -c sql: (returncode, header, rows, stderr)."""
    cmd = [helpers.client_tool("psql"), "-X", "-A", "-F", "|", "-h", p.host, "-p", str(p.port), "-U", user,
           "pgbouncer", "-c", sql]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60,
                       env=p.client_env(user))
    lines = [l for l in r.stdout.splitlines() if l]
    header, rows = None, []
    if lines and lines[-1].startswith("(") and lines[-1].endswith(")"):
        header = lines[0].split("|")
        rows = [l.split("|") for l in lines[1:-1]]
    return r.returncode, header, rows, r.stderr


def pool_row(p, db="testdb", user="app_md5"):
    for r in show(p, "POOLS"):
        if r["database"] == db and r["user"] == user:
            return r
    return None


def wait_for(cond, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = cond()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Background(threading.Thread):
    """Runs fn in a thread, keeping its result or exception."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None
        self.start()

    def run(self):
        try:
            self.result = self.fn()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def query_in_thread(conn, sql):
    def fn():
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else None
    return Background(fn)


# --------------------------------------------------------------------------- columns

@pytest.mark.parametrize("what", sorted(DOC_COLUMNS))
def test_show_columns_through_psql(pgrouter, what):
    p = start(pgrouter)
    with closing(p.connect()) as c:  # a client, so CLIENTS/SERVERS/POOLS have a pool row
        c.cursor().execute("SELECT 1")
        code, header, rows, err = psql_admin(p, f"SHOW {what}")
        assert code == 0, err
        doc = DOC_COLUMNS[what]
        assert header is not None, f"no result set for SHOW {what}: {err}"
        assert header[:len(doc)] == doc, f"SHOW {what}: {header}"


@pytest.mark.parametrize("what", sorted(DOC_COLUMNS))
def test_show_columns_through_libpq(pgrouter, what):
    p = start(pgrouter)
    with closing(p.connect()) as c:
        c.cursor().execute("SELECT 1")
        names, types, rows = admin(p, f"SHOW {what}")
        doc = DOC_COLUMNS[what]
        assert names[:len(doc)] == doc, f"SHOW {what}: {names}"
        typed = dict(zip(names, types))
        if what == "POOLS":
            assert typed["cl_active"] == INT4 and typed["database"] == TEXT and typed["maxwait"] == INT4
        if what == "STATS":
            assert all(typed[n] == NUMERIC for n in doc[1:])
        if what in ("CLIENTS", "SERVERS"):
            assert typed["port"] == INT4 and typed["remote_pid"] == INT4


def test_show_help_and_version(pgrouter):
    p = start(pgrouter)
    code, header, rows, err = psql_admin(p, "SHOW HELP")
    assert code == 0 and "Console usage" in err and "SHOW" in err, err
    c = admin_conn(p)
    try:
        run(c, "SHOW HELP")
        assert any("Console usage" in n for n in c.notices), c.notices
        _, _, rows = run(c, "SHOW VERSION")
        assert len(rows) == 1
        if not helpers.is_pgbouncer():
            assert rows[0][0].startswith("pgrouter ") and rows[0][0].split()[1][0].isdigit(), rows
    finally:
        c.close()


def test_row_names_of_lists_and_totals(pgrouter):
    p = start(pgrouter)
    assert [r["list"] for r in show(p, "LISTS")] == LISTS_ROWS
    totals = [r["name"] for r in show(p, "TOTALS")]
    assert totals[:len(TOTALS_ROWS)] == TOTALS_ROWS


@pytest.mark.pgrouter_only("SHOW STATE is newer than PgBouncer 1.18")
def test_show_state(pgrouter):
    p = start(pgrouter)
    names, _, rows = admin(p, "SHOW STATE")
    assert names == STATE_COLUMNS and [r[0] for r in rows] == STATE_ROWS
    assert dict(rows) == {"active": "yes", "paused": "no", "suspended": "no"}
    code, header, prow, err = psql_admin(p, "SHOW STATE")
    assert code == 0 and header == STATE_COLUMNS and [r[0] for r in prow] == STATE_ROWS, err
    admin(p, "PAUSE")
    try:
        assert dict(admin(p, "SHOW STATE")[2]) == {"active": "no", "paused": "yes", "suspended": "no"}
    finally:
        admin(p, "RESUME")


def test_commands_case_insensitive_semicolon_optional(pgrouter):
    p = start(pgrouter)
    c = admin_conn(p)
    try:
        for sql in ("show pools;", "Show Pools", "  SHOW   POOLS  ;  ", "show lists"):
            names, _, _ = run(c, sql)
            assert names and names[0] in ("database", "list"), sql
    finally:
        c.close()


# --------------------------------------------------------------------------- true values

def test_counts_match_real_connections(pgrouter, pg):
    n = 3
    p = start(pgrouter, {"default_pool_size": 5})
    clients = [p.connect(autocommit=False) for _ in range(n)]
    try:
        pids = []
        for c in clients:  # each holds a transaction, so each holds a server
            with c.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                pids.append(cur.fetchone()[0])
        row = pool_row(p)
        assert row["cl_active"] == n and row["cl_waiting"] == 0, row
        assert row["sv_active"] == n and row["sv_idle"] == 0, row
        clients_rows = [r for r in show(p, "CLIENTS") if r["database"] == "testdb"]
        assert len(clients_rows) == n and all(r["state"] == "active" for r in clients_rows), clients_rows
        servers = [r for r in show(p, "SERVERS") if r["database"] == "testdb"]
        assert len(servers) == n and all(r["state"] == "active" for r in servers), servers
        assert sorted(r["remote_pid"] for r in servers) == sorted(pids)
        # Each client's link is its server's ptr, and the other way round.
        by_ptr = {r["ptr"]: r for r in servers}
        for cl in clients_rows:
            assert cl["link"] in by_ptr and by_ptr[cl["link"]]["link"] == cl["ptr"]
        db = [r for r in show(p, "DATABASES") if r["name"] == "testdb"][0]
        assert db["current_connections"] == n and db["pool_size"] == 5, db
        assert pg.backends("app_md5", "testdb") == n
        for c in clients:
            c.commit()
        row = wait_for(lambda: (r := pool_row(p)) and r["sv_active"] == 0 and r, what="servers released")
        assert row["sv_idle"] + row["sv_used"] == n and row["cl_active"] == n, row
        servers = [r for r in show(p, "SERVERS") if r["database"] == "testdb"]
        assert len(servers) == n and all(r["state"] in ("idle", "used") for r in servers)
        assert all(r["link"] in ("", None) for r in servers)
    finally:
        for c in clients:
            c.close()
    row = wait_for(lambda: (r := pool_row(p)) and r["cl_active"] == 0 and r, what="clients gone")
    assert row["sv_idle"] + row["sv_used"] == n


def test_waiting_client_is_counted(pgrouter):
    p = start(pgrouter, {"default_pool_size": 1, "query_wait_timeout": 30})
    holder = p.connect(autocommit=False)
    waiter = p.connect()
    try:
        holder.cursor().execute("SELECT 1")  # holds the only server
        t = query_in_thread(waiter, "SELECT 2")
        row = wait_for(lambda: (r := pool_row(p)) and r["cl_waiting"] == 1 and r, what="a waiting client")
        assert row["sv_active"] == 1 and row["cl_active"] == 1, row
        waiting = [r for r in show(p, "CLIENTS") if r["state"] == "waiting"]
        assert len(waiting) == 1
        holder.commit()
        t.join(15)
        assert not t.is_alive() and t.error is None and t.result == [(2,)]
    finally:
        holder.close()
        waiter.close()


def test_stats_totals_and_averages(pgrouter):
    p = start(pgrouter, {"stats_period": 1})
    show(p, "VERSION")  # the console is up (the sampler runs from now on)
    with closing(p.connect()) as c:
        cur = c.cursor()
        end = time.monotonic() + 2.6
        queries = 0
        while time.monotonic() < end:
            cur.execute("SELECT pg_sleep(0.005)")
            queries += 1
        stats = [r for r in show(p, "STATS") if r["database"] == "testdb"][0]
        assert stats["total_query_count"] >= queries and stats["total_xact_count"] >= queries, stats
        assert stats["total_received"] > 0 and stats["total_sent"] > 0
        assert stats["total_query_time"] >= queries * 5000, stats  # microseconds
        assert stats["avg_query_count"] > 0 and stats["avg_xact_count"] > 0, stats
        assert stats["avg_query_time"] >= 5000, stats
        totals = {r["name"]: r["value"] for r in show(p, "TOTALS")}
        assert totals["total_query_count"] >= queries
        st = [r for r in show(p, "STATS_TOTALS") if r["database"] == "testdb"][0]
        assert st["query_count"] >= queries
        av = [r for r in show(p, "STATS_AVERAGES") if r["database"] == "testdb"][0]
        assert av["query_count"] > 0


# --------------------------------------------------------------------------- config

def test_show_config(pgrouter):
    p = start(pgrouter, {"default_pool_size": 4})
    cfg = {r["key"]: r for r in show(p, "CONFIG")}
    assert cfg["default_pool_size"]["value"] == "4" and cfg["default_pool_size"]["changeable"] == "yes"
    assert cfg["default_pool_size"]["default"] == "20"
    assert cfg["listen_port"]["value"] == str(p.port) and cfg["listen_port"]["changeable"] == "no"
    assert cfg["admin_users"]["value"] == "pgbouncer"


@pytest.mark.pgrouter_only("PgBouncer 1.18 applies the valid part of a bad file and answers RELOAD without error")
def test_reload_bad_then_good_file(pgrouter):
    p = start(pgrouter, {"default_pool_size": 5})
    assert {r["key"]: r["value"] for r in show(p, "CONFIG")}["default_pool_size"] == "5"
    # A bad file: a good new value next to a broken one. Nothing of it may apply.
    p.settings["default_pool_size"] = 7
    p.settings["max_client_conn"] = "lots"
    p.write_config(None)
    c = admin_conn(p)
    try:
        with pytest.raises(psycopg2.Error) as e:
            run(c, "RELOAD")
        assert e.value.pgcode == "F0000" and "max_client_conn" in str(e.value), str(e.value)
        cfg = {r[0]: r[1] for r in run(c, "SHOW CONFIG")[2]}
        assert cfg["default_pool_size"] == "5", "a failed RELOAD changed the running config"
        # The good file.
        p.settings["max_client_conn"] = 100
        p.write_config(None)
        assert run(c, "RELOAD") == (None, None, None)
        cfg = {r[0]: r[1] for r in run(c, "SHOW CONFIG")[2]}
        assert cfg["default_pool_size"] == "7" and cfg["max_client_conn"] == "100"
        with closing(p.connect()) as app:  # still serving
            app.cursor().execute("SELECT 1")
    finally:
        c.close()
    db = [r for r in show(p, "DATABASES") if r["name"] == "testdb"][0]
    assert db["pool_size"] == 7


@pytest.mark.pgrouter_only("error SQLSTATEs and messages (PgBouncer 1.18 says 'SET failed', 08P01)")
def test_set(pgrouter):
    p = start(pgrouter, {"default_pool_size": 2, "query_wait_timeout": 120})
    c = admin_conn(p)
    try:
        run(c, "SET default_pool_size = 3")
        run(c, "set query_wait_timeout to '30'")
        cfg = {r[0]: r[1] for r in run(c, "SHOW CONFIG")[2]}
        assert cfg["default_pool_size"] == "3" and cfg["query_wait_timeout"] == "30"
        for sql, state in (("SET default_pool_size = many", "22023"), ("SET no_such_key = 1", "42704"),
                           ("SET listen_port = 7000", "55000"), ("SET default_pool_size", "42601")):
            with pytest.raises(psycopg2.Error) as e:
                run(c, sql)
            assert e.value.pgcode == state, (sql, str(e.value))
        cfg = {r[0]: r[1] for r in run(c, "SHOW CONFIG")[2]}
        assert cfg["default_pool_size"] == "3" and cfg["listen_port"] == str(p.port)
    finally:
        c.close()
    # The new pool size applies to existing pools: 3 transactions at once.
    clients = [p.connect(autocommit=False) for _ in range(3)]
    try:
        for cl in clients:
            cl.cursor().execute("SELECT 1")
        assert pool_row(p)["sv_active"] == 3
    finally:
        for cl in clients:
            cl.close()


def test_set_as_stats_user_refused(pgrouter):
    p = start(pgrouter)
    with pytest.raises(psycopg2.Error):
        admin(p, "SET default_pool_size = 3", user=STATS_USER)


# --------------------------------------------------------------------------- control

def test_pause_and_resume_with_waiting_client(pgrouter):
    p = start(pgrouter, {"query_wait_timeout": 60})
    client = p.connect()
    busy = p.connect(autocommit=False)
    ctl = admin_conn(p)
    try:
        client.cursor().execute("SELECT 1")
        busy.cursor().execute("SELECT 1")  # a transaction in progress: PAUSE waits for it
        pause = query_in_thread(ctl, "PAUSE testdb")
        time.sleep(1.0)
        assert pause.is_alive(), "PAUSE returned while a transaction was still running"
        busy.commit()
        pause.join(15)
        assert not pause.is_alive() and pause.error is None, pause.error
        q = query_in_thread(client, "SELECT 42")
        time.sleep(1.0)
        assert q.is_alive(), "a query ran on a paused database"
        row = pool_row(p)
        assert row["cl_waiting"] == 1 and row["sv_active"] == 0, row
        db = [r for r in show(p, "DATABASES") if r["name"] == "testdb"][0]
        assert db["paused"] == 1
        run(ctl, "RESUME testdb")
        q.join(15)
        assert not q.is_alive() and q.error is None and q.result == [(42,)], q.error
        assert [r for r in show(p, "DATABASES") if r["name"] == "testdb"][0]["paused"] == 0
    finally:
        for c in (client, busy, ctl):
            c.close()


def test_pause_all_and_resume(pgrouter, pg):
    p = start(pgrouter)
    client = p.connect()
    try:
        client.cursor().execute("SELECT 1")
        admin(p, "PAUSE")
        # PAUSE closes the idle servers, so the database could be restarted now.
        wait_for(lambda: pg.backends("app_md5", "testdb") == 0, what="servers closed by PAUSE")
        q = query_in_thread(client, "SELECT 7")
        time.sleep(0.8)
        assert q.is_alive()
        admin(p, "RESUME")
        q.join(15)
        assert q.error is None and q.result == [(7,)]
    finally:
        client.close()


def test_kill_with_clients_connected(pgrouter, pg):
    p = start(pgrouter)
    idle = p.connect()
    in_txn = p.connect(autocommit=False)
    try:
        idle.cursor().execute("SELECT 1")
        in_txn.cursor().execute("SELECT 1")
        admin(p, "KILL testdb")
        for c in (idle, in_txn):
            with pytest.raises(psycopg2.Error):
                c.cursor().execute("SELECT 2")
        wait_for(lambda: pg.backends("app_md5", "testdb") == 0, what="servers closed by KILL")
        wait_for(lambda: (r := pool_row(p)) is None or (r["cl_active"] == 0 and r["sv_active"] == 0),
                 what="clients gone")
        admin(p, "RESUME testdb")  # KILL leaves the database paused, as in PgBouncer
        with closing(p.connect()) as c:
            c.cursor().execute("SELECT 1")
    finally:
        idle.close()
        in_txn.close()


@pytest.mark.pgrouter_only("KILL_CLIENT is newer than PgBouncer 1.18")
def test_kill_client(pgrouter):
    p = start(pgrouter)
    victim = p.connect()
    other = p.connect()
    try:
        for c in (victim, other):
            c.cursor().execute("SELECT 1")
        with victim.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
        ids = [r["id"] for r in show(p, "CLIENTS") if r["database"] == "testdb"]
        assert len(ids) == 2
        # The newest client of the two is `other` (ids grow).
        admin(p, f"KILL_CLIENT {min(ids)}")
        with pytest.raises(psycopg2.Error):
            victim.cursor().execute("SELECT 2")
        other.cursor().execute("SELECT 3")
        with pytest.raises(psycopg2.Error) as e:
            admin(p, "KILL_CLIENT 999999999")
        assert e.value.pgcode == "42704"
    finally:
        victim.close()
        other.close()


@pytest.mark.pgrouter_only("KILL_CLIENT is newer than PgBouncer 1.18")
def test_killed_waiting_client_never_runs_its_query(pgrouter, pg):
    """KILL_CLIENT of a client queued for a server: the query it sent must not reach
    PostgreSQL when a server frees up later."""
    pg.sql("CREATE TABLE IF NOT EXISTS kill_waiting (v int)", dbname="testdb")
    pg.sql("GRANT ALL ON kill_waiting TO PUBLIC", dbname="testdb")
    pg.sql("TRUNCATE kill_waiting", dbname="testdb")
    p = start(pgrouter, {"default_pool_size": 1, "query_wait_timeout": 30})
    holder = p.connect(autocommit=False)
    victim = p.wire()
    try:
        holder.cursor().execute("SELECT 1")  # in a transaction: the only server is the holder's
        victim.send(pgwire.query_msg("INSERT INTO kill_waiting VALUES (1)"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            waiting = [r["id"] for r in show(p, "CLIENTS") if r["state"] == "waiting"]
            if waiting:
                break
            time.sleep(0.1)
        assert len(waiting) == 1, show(p, "CLIENTS")
        admin(p, f"KILL_CLIENT {waiting[0]}")
        msgs = victim.wait_closed(10)
        assert any(t == b"E" for t, _ in msgs), msgs
        holder.commit()  # the server is free: a queued query would run now
        time.sleep(1)
        assert pg.sql("SELECT count(*) FROM kill_waiting", dbname="testdb")[0][0] == 0
        holder.cursor().execute("SELECT 2")  # the pool goes on
        holder.commit()
    finally:
        victim.close()
        holder.close()


def test_disable_rejects_new_logins(pgrouter):
    p = start(pgrouter)
    existing = p.connect()
    try:
        existing.cursor().execute("SELECT 1")
        admin(p, "DISABLE testdb")
        with pytest.raises(psycopg2.OperationalError):
            p.connect().close()
        existing.cursor().execute("SELECT 2")  # connected clients go on
        assert [r for r in show(p, "DATABASES") if r["name"] == "testdb"][0]["disabled"] == 1
        admin(p, "ENABLE testdb")
        with closing(p.connect()) as c:
            c.cursor().execute("SELECT 3")
    finally:
        existing.close()


def test_reconnect_and_wait_close(pgrouter, pg):
    p = start(pgrouter)
    with closing(p.connect()) as c:
        cur = c.cursor()
        cur.execute("SELECT pg_backend_pid()")
        first = cur.fetchone()[0]
        admin(p, "RECONNECT testdb")
        admin(p, "WAIT_CLOSE testdb")
        cur.execute("SELECT pg_backend_pid()")
        assert cur.fetchone()[0] != first, "RECONNECT kept the old server connection"
    with pytest.raises(psycopg2.Error):
        admin(p, "RECONNECT no_such_db")


@pytest.mark.pgrouter_only("checks SUSPEND through SHOW STATE, newer than PgBouncer 1.18")
def test_suspend_holds_traffic_until_resume(pgrouter):
    import threading

    p = start(pgrouter)
    c = p.connect()
    try:
        with c.cursor() as cur:
            cur.execute("SELECT 1")
        admin(p, "SUSPEND")
        assert dict(admin(p, "SHOW STATE")[2])["suspended"] == "yes"
        done = threading.Event()
        result = []

        def run():
            with c.cursor() as cur:
                cur.execute("SELECT 7")
                result.append(cur.fetchone()[0])
            done.set()

        threading.Thread(target=run, daemon=True).start()
        assert not done.wait(1.0), "a query went through while suspended"
        admin(p, "RESUME")
        assert done.wait(10), "the query did not run after RESUME"
        assert result == [7]
        assert dict(admin(p, "SHOW STATE")[2])["suspended"] == "no"
    finally:
        c.close()


def test_shutdown(pgrouter):
    p = start(pgrouter)
    c = admin_conn(p)
    try:
        try:
            run(c, "SHUTDOWN")
        except psycopg2.Error:
            pass  # PgBouncer exits without answering
    finally:
        c.close()
    p.proc.wait(timeout=30)
    assert p.proc.returncode == 0


# --------------------------------------------------------------------------- access and errors

def test_stats_user_may_only_show(pgrouter):
    p = start(pgrouter)
    assert [r["list"] for r in show(p, "LISTS", user=STATS_USER)] == LISTS_ROWS
    c = admin_conn(p, STATS_USER)
    try:
        for sql in ("PAUSE", "PAUSE testdb", "RESUME", "RELOAD", "KILL testdb", "SHOW FDS"):
            with pytest.raises(psycopg2.Error) as e:
                run(c, sql)
            assert e.value.pgcode == helpers.sqlstate("42501"), (sql, str(e.value))
            assert "admin" in str(e.value)
        assert run(c, "SHOW POOLS")[0][0] == "database"  # the session goes on
    finally:
        c.close()
    # Neither admin nor stats user: refused at login.
    with pytest.raises(psycopg2.OperationalError):
        admin_conn(p, "app_md5").close()


def test_unknown_command_is_an_error_and_the_session_goes_on(pgrouter):
    p = start(pgrouter)
    c = admin_conn(p)
    try:
        for sql in ("FOOBAR", "SHOW NOSUCHTHING", "SHOW", "PAUSE a b c", "SELECT 1"):
            with pytest.raises(psycopg2.Error) as e:
                run(c, sql)
            assert e.value.pgcode == helpers.sqlstate("42601"), (sql, e.value.pgcode, str(e.value))
            assert run(c, "SHOW VERSION")[2], "the session did not go on"
    finally:
        c.close()
    code, header, rows, err = psql_admin(p, "NOSUCHCOMMAND")
    assert code != 0 and "NOSUCHCOMMAND" in err


@pytest.mark.pgrouter_only("raw-protocol details of pgrouter's console")
def test_extended_protocol_gets_a_clear_error(pgrouter):
    p = start(pgrouter)
    c = p.wire(user=ADMIN, dbname="pgbouncer")
    try:
        c.send(parse_msg("SHOW POOLS") + bind_msg() + execute_msg() + sync_msg())
        r = c.read_until_ready()
        assert r.types() == "EZ", r.types()
        assert r.error.sqlstate == "08P01" and "simple query protocol" in r.error.message
        r = c.query("SHOW VERSION")
        assert r.rows and r.rows[0][0].startswith("pgrouter")
        # A query split across writes (and reads) is put back together.
        msg = query_msg("SHOW LISTS")
        c.send(msg[:3])
        time.sleep(0.3)
        c.send(msg[3:9])
        time.sleep(0.3)
        c.send(msg[9:])
        r = c.read_until_ready()
        assert [row[0] for row in r.rows] == LISTS_ROWS
        # Two queries in one write.
        c.send(query_msg("SHOW VERSION") + query_msg("SHOW STATE"))
        assert c.read_until_ready().rows and c.read_until_ready().rows
        r = c.query("")
        assert r.types() == "IZ"
    finally:
        c.terminate()


@pytest.mark.pgrouter_only("message size bound of pgrouter's console")
def test_oversized_message_is_refused(pgrouter):
    p = start(pgrouter)
    c = p.wire(user=ADMIN, dbname="pgbouncer")
    try:
        # Only the header of a 2 MB Query: it is refused before its body arrives.
        c.send(b"Q" + struct.pack("!I", (2 << 20) + 4) + b"SHOW ")
        msgs = c.wait_closed(timeout=10)
        assert msgs and msgs[0][0] == b"E", msgs
        assert pgwire.parse_fields(msgs[0][1]).get("C") == "08P01"
    finally:
        c.close()


# --------------------------------------------------------------------------- pgrouter-ctl

def ctl(p, *args, password=None, conninfo=None):
    binary = helpers.require_binary(helpers.REPO / "build" / "pgrouter-ctl", "build it first: ninja -C build")
    info = conninfo or f"host={p.host} port={p.port} dbname=pgbouncer user={ADMIN}"
    env = p.client_env(ADMIN, password)
    return subprocess.run([str(binary), "--admin", info, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=60, env=env)


def test_ctl_show_pools(pgrouter):
    p = start(pgrouter)
    with closing(p.connect()) as c:
        c.cursor().execute("SELECT 1")
        r = ctl(p, "show", "pools")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = [h.strip() for h in lines[0].split("|")]
    assert header[:len(DOC_COLUMNS["POOLS"])] == DOC_COLUMNS["POOLS"], lines[0]
    assert set(lines[1]) <= {"-", "+"} and lines[1].count("+") == len(header) - 1
    # Aligned: every line has its separators at the same places as the header.
    seps = [i for i, ch in enumerate(lines[0]) if ch == "|"]
    for line in lines[2:-1]:
        assert [i for i, ch in enumerate(line) if ch == "|"] == seps, line
    assert any(l.split("|")[0].strip() == "testdb" for l in lines[2:-1]), r.stdout
    assert lines[-1].startswith("(") and lines[-1].endswith("rows)") or lines[-1] == "(1 row)"


def test_ctl_commands_and_exit_codes(pgrouter):
    p = start(pgrouter)
    r = ctl(p, "pause", "testdb")
    assert r.returncode == 0 and "PAUSE" in r.stdout, r.stderr
    r = ctl(p, "resume", "testdb")
    assert r.returncode == 0 and "RESUME" in r.stdout, r.stderr
    r = ctl(p, "show", "help")
    assert r.returncode == 0 and "SHOW" in r.stdout
    r = ctl(p, "no_such_command")
    assert r.returncode == 1 and "invalid command" in r.stderr, (r.returncode, r.stderr)
    r = ctl(p, "show", "pools", password="wrong-password")
    assert r.returncode == 2 and "password" in r.stderr, (r.returncode, r.stderr)
    r = ctl(p, "show", "pools", conninfo=f"host=127.0.0.1 port={helpers.free_port()} dbname=pgbouncer "
                                         f"user={ADMIN} connect_timeout=5")
    assert r.returncode == 2 and "cannot connect" in r.stderr
    binary = helpers.REPO / "build" / "pgrouter-ctl"
    assert subprocess.run([str(binary)], capture_output=True, timeout=10).returncode == 64


@pytest.mark.pgrouter_only("the test runs as pgrouter's own OS user; PgBouncer runs as postgres here")
@pytest.mark.parametrize("fmt", ["toml", "ini"])
def test_unix_socket_peer_opens_console_without_password(pgrouter, fmt):
    """SPEC §5: on the unix socket, pgrouter's own OS user may open the console as
    pgbouncer without a password, whatever auth_type is, with admin rights even when
    admin_users does not name pgbouncer (pgbouncer.ini's default is empty); over TCP
    the password is needed."""
    import os

    p = start(pgrouter, {"auth_type": "scram-sha-256", "admin_users": []}, fmt=fmt)
    env = dict(os.environ, PGPASSWORD="")
    env.pop("PGPASSFILE", None)
    cmd = [helpers.client_tool("psql"), "-X", "-A", "-t", "-w", "-h", str(p.dir), "-p", str(p.port), "-U", "pgbouncer",
           "pgbouncer", "-c", "SHOW VERSION"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("pgrouter ")
    r = subprocess.run(cmd[:-1] + ["RELOAD"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30,
                       env=env)
    assert r.returncode == 0, r.stderr
    tcp = cmd[:]
    tcp[tcp.index("-h") + 1] = p.host
    r = subprocess.run(tcp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30, env=env)
    assert r.returncode != 0, "TCP login without a password was accepted"


@pytest.mark.pgrouter_only("KILL_CLIENT is newer than PgBouncer 1.18")
def test_admin_commands_under_load_leave_a_consistent_pool(pgrouter, pg, bench_db):
    """pgbench TPC-B with 40 clients on 4 servers (most clients queued) for 8 s while
    the console kills queued clients, RECONNECTs, RELOADs and PAUSE/RESUMEs at random:
    the only client errors are the kills, and the pool ends with nobody waiting, no
    server busy and no more servers than pool_size, none left in a transaction."""
    import random
    import re

    p = start(pgrouter, {"default_pool_size": 4, "query_wait_timeout": 30}, databases={"benchdb": {}})
    bench = threading.Thread(target=lambda: results.append(
        p.pgbench("-n", "-c", "40", "-j", "2", "-T", "8", dbname="benchdb", timeout=90)), daemon=True)
    results = []
    bench.start()
    rng = random.Random(7)
    kills, ops = 0, 0
    end = time.monotonic() + 7
    c = admin_conn(p)
    try:
        while time.monotonic() < end:
            r = rng.random()
            if r < 0.55:
                waiting = [row["id"] for row in show(p, "CLIENTS")
                           if row["state"] == "waiting" and row["database"] == "benchdb"]
                if waiting:
                    run(c, f"KILL_CLIENT {rng.choice(waiting)}")
                    kills += 1
            elif r < 0.7:
                run(c, "RECONNECT benchdb")
            elif r < 0.85:
                run(c, "RELOAD")
            else:
                run(c, "PAUSE benchdb")
                time.sleep(0.1)
                run(c, "RESUME benchdb")
            ops += 1
            time.sleep(0.05)
    finally:
        c.close()
    bench.join(60)
    assert results, "pgbench did not finish"
    out = results[0].stdout + results[0].stderr
    assert kills > 0, f"no queued client seen to kill in {ops} operations"
    errors = [l for l in out.splitlines() if "error" in l.lower() and "Run was aborted" not in l]
    # A client killed between two statements of its transaction sees the close when it
    # sends the next one (as with pg_terminate_backend on PostgreSQL): pgbench reports
    # that as "perhaps the backend died".
    others = [l for l in errors if "client killed by admin command KILL_CLIENT" not in l
              and "perhaps the backend died while processing" not in l]
    assert errors and not others, "\n".join(others[:20])
    assert len(errors) <= kills
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m and int(m.group(1)) > 0, out
    # The pool settles: nobody waiting, no server busy, at most pool_size servers.
    deadline = time.monotonic() + 10
    while True:
        pool = [r for r in show(p, "POOLS") if r["database"] == "benchdb"][0]
        settled = pool["cl_waiting"] == 0 and pool["sv_active"] == 0 and pool["cl_active"] == 0
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert settled, pool
    assert pool["sv_idle"] + pool["sv_used"] <= 4, pool
    rows = pg.sql("SELECT state FROM pg_stat_activity WHERE datname = 'benchdb' AND usename = %s",
                  (helpers.DEFAULT_USER,))
    assert len(rows) <= 4 and all(r[0] == "idle" for r in rows), rows
    r = p.pgbench("-n", "-c", "4", "-j", "2", "-t", "20", dbname="benchdb", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
