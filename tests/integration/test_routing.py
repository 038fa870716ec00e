"""Clusters and routing against a real primary and two streaming replicas:
reads spread over the replicas, writes only to a primary seen out of recovery,
lagging and stopped replicas skipped, SET PRIMARY / SET REPLICAS hot swaps."""
import threading
import time

import psycopg2
import pytest

import helpers
import pgwire

pytestmark = pytest.mark.pgrouter_only


def cluster_conf(c, **kw):
    conf = {
        "primary": c.nodes[0].addr,
        "replicas": [n.addr for n in c.nodes[1:]],
        "health_check_period": 0.2,
        "max_replica_lag": "1MB",
        "failover_timeout": 5.0,
    }
    conf.update(kw)
    return conf


def start_router(pgrouter, c, route="auto", pool_mode="transaction", cluster=None, **settings):
    overrides = {"pool_mode": pool_mode}
    overrides.update(settings)
    return pgrouter(overrides,
                    databases={"testdb": {"cluster": "main", "route": route}},
                    clusters={"main": cluster or cluster_conf(c)})


def clusters_rows(p):
    cols = ["cluster", "role", "host", "port", "state", "lag_bytes", "in_recovery", "sv_active", "sv_idle",
            "last_check", "discovery"]
    return [dict(zip(cols, r)) for r in p.admin("SHOW CLUSTERS")]


def wait_for(cond, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_ready(p, c, replicas=2):
    """Until the primary is writable-checked and `replicas` replicas are up."""
    def ok():
        rows = clusters_rows(p)
        prim = [r for r in rows if r["role"] == "primary" and r["state"] == "up" and r["in_recovery"] == "no"]
        reps = [r for r in rows if r["role"] == "replica" and r["state"] == "up"]
        return len(prim) == 1 and len(reps) >= replicas
    wait_for(ok, 15, "cluster checked up")


def server_port(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT inet_server_port(), pg_is_in_recovery()")
        return cur.fetchone()


def test_read_only_session_spreads_over_replicas_never_primary(pgrouter, pg_cluster):
    c = pg_cluster()
    p = start_router(pgrouter, c)
    wait_ready(p, c)
    conn = p.connect(options="-c default_transaction_read_only=on")
    seen = [server_port(conn) for _ in range(20)]
    conn.close()
    ports = {s[0] for s in seen}
    assert ports == {c.nodes[1].port, c.nodes[2].port}, seen
    assert all(s[1] for s in seen)
    # A session that did not declare itself read-only writes to the primary.
    w = p.connect()
    for _ in range(5):
        assert server_port(w) == (c.nodes[0].port, False)
    with w.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS routed (x int)")
        cur.execute("INSERT INTO routed VALUES (1)")
    w.close()


def test_route_replica_database_and_target_session_attrs(pgrouter, pg_cluster):
    c = pg_cluster()
    p = pgrouter({"pool_mode": "transaction"},
                 databases={"testdb": {"cluster": "main", "route": "auto"},
                            "reads": {"cluster": "main", "route": "replica", "dbname": "testdb"}},
                 clusters={"main": cluster_conf(c)})
    wait_ready(p, c)
    conn = p.connect(dbname="reads")
    ports = {server_port(conn)[0] for _ in range(10)}
    conn.close()
    assert ports == {c.nodes[1].port, c.nodes[2].port}
    # target_session_attrs as a startup parameter (drivers that pass it through).
    for attrs in ("read-only", "prefer-standby"):
        w = p.wire(params={"target_session_attrs": attrs})
        got = set()
        for _ in range(6):
            got.add(int(w.scalar("SELECT inet_server_port()")))
        w.close()
        assert got == {c.nodes[1].port, c.nodes[2].port}, attrs


def test_session_mode_read_only_session_stays_on_one_replica(pgrouter, pg_cluster):
    c = pg_cluster()
    p = start_router(pgrouter, c, pool_mode="session")
    wait_ready(p, c)
    used = set()
    for _ in range(4):
        conn = p.connect(options="-c default_transaction_read_only=on")
        ports = {server_port(conn)[0] for _ in range(5)}
        assert len(ports) == 1
        used |= ports
        conn.close()
    assert used == {c.nodes[1].port, c.nodes[2].port}


def test_lagging_replica_is_skipped(pgrouter, pg_cluster):
    c = pg_cluster()
    p = start_router(pgrouter, c)
    wait_ready(p, c)
    lagging = c.nodes[2]
    c.pause_replay(lagging)
    # ~4 MB of WAL on the primary that the paused replica does not replay.
    c.sql(c.nodes[0], "CREATE TABLE bulk AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 15000) g")
    # The other replica may look lagging for a moment while it replays the same WAL:
    # wait until it is up again, or reads would rightly fall back to the primary.
    wait_for(lambda: {(r["port"], r["state"]) for r in clusters_rows(p)} >=
             {(lagging.port, "lagging"), (c.nodes[1].port, "up")}, 10, "replica marked lagging, the other up")
    row = [r for r in clusters_rows(p) if r["port"] == lagging.port][0]
    assert int(row["lag_bytes"]) > 1024 * 1024
    conn = p.connect(options="-c default_transaction_read_only=on")
    assert {server_port(conn)[0] for _ in range(10)} == {c.nodes[1].port}
    c.resume_replay(lagging)
    wait_for(lambda: any(r["port"] == lagging.port and r["state"] == "up" for r in clusters_rows(p)),
             10, "replica caught up")
    assert {server_port(conn)[0] for _ in range(10)} == {c.nodes[1].port, c.nodes[2].port}
    conn.close()


def test_replica_stopped_and_restarted(pgrouter, pg_cluster):
    c = pg_cluster()
    p = start_router(pgrouter, c)
    wait_ready(p, c)
    conn = p.connect(options="-c default_transaction_read_only=on")
    assert {server_port(conn)[0] for _ in range(6)} == {c.nodes[1].port, c.nodes[2].port}
    c.stop(c.nodes[2], mode="immediate")
    # Once the health check saw it down (a transaction that reaches a replica in the
    # instant it dies can still fail, as with any pooler), reads go to the other one
    # without errors.
    wait_for(lambda: any(r["port"] == c.nodes[2].port and r["state"] == "down" for r in clusters_rows(p)),
             10, "replica marked down")
    assert {server_port(conn)[0] for _ in range(10)} == {c.nodes[1].port}
    c.start(c.nodes[2])
    wait_for(lambda: any(r["port"] == c.nodes[2].port and r["state"] == "up" for r in clusters_rows(p)),
             15, "replica back up")
    assert {server_port(conn)[0] for _ in range(10)} == {c.nodes[1].port, c.nodes[2].port}
    conn.close()


def test_replica_fallback(pgrouter, pg_cluster):
    c = pg_cluster(n_replicas=1)
    p = pgrouter({"pool_mode": "transaction"},
                 databases={"testdb": {"cluster": "main", "route": "replica"},
                            "strict": {"cluster": "strict", "route": "replica", "dbname": "testdb"}},
                 clusters={"main": cluster_conf(c), "strict": cluster_conf(c, replica_fallback="error")})
    wait_for(lambda: sum(1 for r in clusters_rows(p) if r["state"] == "up") == 4, 15, "both clusters up")
    c.stop(c.nodes[1], mode="immediate")
    wait_for(lambda: sum(1 for r in clusters_rows(p) if r["state"] == "down") == 2, 10, "replica down")
    conn = p.connect()
    assert server_port(conn) == (c.nodes[0].port, False)  # fallback: primary
    conn.close()
    with pytest.raises(psycopg2.OperationalError) as e:
        conn = p.connect(dbname="strict")
        server_port(conn)
    assert "no usable replica" in str(e.value)


def test_client_logs_in_during_failover_and_its_first_write_waits(pgrouter, pg_cluster):
    """While no writable primary is known, a new client of a pool that already knows
    the server's parameters logs in at once (an application's connect timeout does not
    run out inside the login); its first write waits for the primary."""
    c = pg_cluster()
    p = start_router(pgrouter, c, cluster=cluster_conf(c, failover_timeout=20.0))
    wait_ready(p, c)
    conn = p.connect()
    assert server_port(conn) == (c.nodes[0].port, False)
    conn.close()
    p.admin(f"SET PRIMARY main '{c.nodes[1].addr}'")  # a replica: writes must wait
    wait_for(lambda: any(r["role"] == "primary" and r["port"] == c.nodes[1].port and r["in_recovery"] == "yes"
                         for r in clusters_rows(p)), 10, "the replica checked as the primary")
    conn = p.connect()  # completes with no writable primary anywhere
    assert [r["port"] for r in clusters_rows(p) if r["role"] == "primary"] == [c.nodes[1].port]
    timer = threading.Timer(0.5, p.admin, args=(f"SET PRIMARY main '{c.nodes[0].addr}'",))
    timer.start()
    try:
        assert server_port(conn) == (c.nodes[0].port, False)
    finally:
        timer.join()
        conn.close()


def test_writes_never_reach_a_node_in_recovery(pgrouter, pg_cluster):
    """SET PRIMARY names a replica: writes wait (failover_timeout) and fail with
    pgrouter's error, never with the replica's read-only error."""
    c = pg_cluster()
    p = start_router(pgrouter, c, cluster=cluster_conf(c, failover_timeout=1.5))
    wait_ready(p, c)
    p.admin(f"SET PRIMARY main '{c.nodes[1].addr}'")
    t0 = time.monotonic()
    with pytest.raises(psycopg2.OperationalError) as e:
        conn = p.connect()
        server_port(conn)
    assert "no writable primary" in str(e.value)
    assert 1.0 < time.monotonic() - t0 < 10
    rows = clusters_rows(p)
    prim = [r for r in rows if r["role"] == "primary"][0]
    assert prim["port"] == c.nodes[1].port and prim["in_recovery"] == "yes"
    # Put it back: writes flow again without a restart.
    p.admin(f"SET PRIMARY main '{c.nodes[0].addr}'")
    conn = wait_for(lambda: _try_connect(p), 10, "writable again")
    assert server_port(conn) == (c.nodes[0].port, False)
    conn.close()


def _try_connect(p, **kw):
    try:
        conn = p.connect(**kw)
        server_port(conn)
        return conn
    except psycopg2.Error:
        return None


def test_switchover_hot_swap_in_transaction_mode(pgrouter, pg_cluster):
    """Promote a replica while the old primary still runs, then SET PRIMARY: clients
    between transactions see no error; a transaction open on the old primary ends
    with an error; idle servers on the old primary are closed."""
    c = pg_cluster()
    p = start_router(pgrouter, c)
    wait_ready(p, c)
    idle = [p.connect(autocommit=False) for _ in range(3)]
    for conn in idle:  # three transactions at once: three servers in the pool
        assert server_port(conn)[0] == c.nodes[0].port
    for conn in idle:
        conn.commit()
        conn.autocommit = True
    busy = p.connect(autocommit=False)
    with busy.cursor() as cur:
        cur.execute("SELECT inet_server_port()")
        assert cur.fetchone()[0] == c.nodes[0].port
    old_backends = lambda: c.value(c.nodes[0], "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_md5'")
    assert old_backends() >= 3
    c.promote(c.nodes[1])
    p.admin(f"SET PRIMARY main '{c.nodes[1].addr}'")
    p.admin(f"SET REPLICAS main '{c.nodes[2].addr}'")
    for conn in idle:
        assert server_port(conn) == (c.nodes[1].port, False)
        conn.close()
    with pytest.raises(psycopg2.OperationalError) as e:
        with busy.cursor() as cur:
            cur.execute("SELECT 1")
    assert "changed" in str(e.value)
    busy.close()
    wait_for(lambda: old_backends() == 0, 10, "idle servers on the old primary closed")
    rows = clusters_rows(p)
    assert [r["port"] for r in rows if r["role"] == "primary"] == [c.nodes[1].port]


def test_session_mode_client_on_old_primary_is_disconnected(pgrouter, pg_cluster):
    c = pg_cluster(n_replicas=1)
    p = start_router(pgrouter, c, pool_mode="session")
    wait_ready(p, c, replicas=1)
    conn = p.connect()
    assert server_port(conn)[0] == c.nodes[0].port
    c.promote(c.nodes[1])
    p.admin(f"SET PRIMARY main '{c.nodes[1].addr}'")
    with pytest.raises(psycopg2.OperationalError) as e:
        server_port(conn)
    assert "changed" in str(e.value)
    conn.close()
    conn = wait_for(lambda: _try_connect(p), 10, "new session")
    assert server_port(conn) == (c.nodes[1].port, False)
    conn.close()


def test_admin_set_primary_and_replicas_errors(pgrouter, pg_cluster):
    c = pg_cluster(n_replicas=1)
    p = start_router(pgrouter, c)
    for bad, state in [("SET PRIMARY nosuch '127.0.0.1:5432'", "42704"),
                       ("SET PRIMARY main 'host:notaport'", "22023"),
                       ("SET PRIMARY main '127.0.0.1:1,127.0.0.1:2'", "22023"),
                       ("SET PRIMARY main", "42601")]:
        with pytest.raises(psycopg2.Error) as e:
            p.admin(bad)
        assert e.value.pgcode == state, bad
    # Same value twice: nothing changes, and it still answers SET.
    p.admin(f"SET PRIMARY main '{c.nodes[0].addr}'")
    p.admin(f"SET REPLICAS main ''")
    rows = clusters_rows(p)
    assert [(r["role"], r["port"]) for r in rows] == [("primary", c.nodes[0].port)]
    # stats_users may not change the topology
    # (admin_users only: SET is not a SHOW command).


def test_reload_restores_static_topology(pgrouter, pg_cluster):
    c = pg_cluster()
    p = start_router(pgrouter, c)
    wait_ready(p, c)
    p.admin(f"SET REPLICAS main '{c.nodes[1].addr}'")
    assert {r["port"] for r in clusters_rows(p)} == {c.nodes[0].port, c.nodes[1].port}
    p.admin("RELOAD")
    assert {r["port"] for r in clusters_rows(p)} == {n.port for n in c.nodes}


def test_admin_views_of_a_routed_database(pgrouter, pg_cluster):
    """SHOW POOLS keeps one row per (database, user) although reads use one pool per
    replica; SHOW DATABASES names the primary in use now; SHOW CLUSTERS counts servers
    per backend."""
    c = pg_cluster()
    p = start_router(pgrouter, c)
    wait_ready(p, c)
    ro = p.connect(options="-c default_transaction_read_only=on", autocommit=False)
    rw = p.connect(autocommit=False)
    assert server_port(ro)[1] is True and server_port(rw)[1] is False
    pools = [r for r in p.admin("SHOW POOLS") if r[0] == "testdb"]
    assert len(pools) == 1, pools
    assert pools[0][2] == 2  # cl_active
    assert pools[0][6] == 2  # sv_active: one on the primary, one on a replica
    active = {r["port"]: r["sv_active"] for r in clusters_rows(p)}
    assert active[c.nodes[0].port] == 1 and active[c.nodes[1].port] + active[c.nodes[2].port] == 1
    ro.rollback()
    rw.rollback()
    dbs = {r[0]: r for r in p.admin("SHOW DATABASES")}
    assert (dbs["testdb"][1], dbs["testdb"][2]) == ("127.0.0.1", c.nodes[0].port)
    c.promote(c.nodes[2])
    p.admin(f"SET PRIMARY main '{c.nodes[2].addr}'")
    dbs = {r[0]: r for r in p.admin("SHOW DATABASES")}
    assert dbs["testdb"][2] == c.nodes[2].port
    ro.close()
    rw.close()
