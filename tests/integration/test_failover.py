"""Discovery-driven failover against a real primary and two streaming replicas:
Consul (through the HTTP API double) and Patroni (through a GET /cluster double)."""
import threading
import time

import psycopg2
import pytest

from consul_double import ConsulDouble
from patroni_double import PatroniDouble
from test_routing import clusters_rows, server_port, wait_for, _try_connect

pytestmark = pytest.mark.pgrouter_only

SERVICE = "postgresql-ha"


@pytest.fixture
def consul():
    d = ConsulDouble(port=0).start()
    yield d
    d.stop()


@pytest.fixture
def patroni():
    d = PatroniDouble(port=0).start()
    yield d
    d.stop()


def patroni_instances(c, primary, replicas, down=(), extra_primaries=()):
    out = []
    for i, n in enumerate(c.nodes):
        if n is primary or n in extra_primaries:
            tags, check = ["primary", "master"], "passing"
        elif n in replicas:
            tags, check = ["replica"], "passing"
        else:
            tags, check = ["replica"], "critical"
        serf = "critical" if n in down else "passing"
        out.append({"node": f"pg-node-{i}", "address": "127.0.0.1", "port": n.port, "tags": tags,
                    "serf": serf, "check": check})
    return out


def consul_router(pgrouter, c, consul, failover_timeout=10.0, token_file=None, **disc):
    discovery = {"type": "consul", "consul_url": consul.url, "consul_service": SERVICE, "consul_wait": 5.0}
    if token_file:
        discovery["consul_token_file"] = str(token_file)
    discovery.update(disc)
    # No primary/replicas in the file: Consul names them.
    return pgrouter({"pool_mode": "transaction", "default_pool_size": 10},
                    databases={"testdb": {"cluster": "main", "route": "auto"}},
                    clusters={"main": {"health_check_period": 0.2, "failover_timeout": failover_timeout,
                                       "max_replica_lag": "64MB", "discovery": discovery}})


def writable_on(p, node, timeout=15):
    def ok():
        conn = _try_connect(p)
        if not conn:
            return False
        try:
            return server_port(conn) == (node.port, False)
        finally:
            conn.close()
    wait_for(ok, timeout, f"writes reaching {node}")


class Writers:
    """n clients, each one connection, each committing one-row INSERTs in a loop."""

    def __init__(self, p, n=4):
        self.p = p
        self.stop_ev = threading.Event()
        self.events = []  # (t, client, ok, sqlstate or port)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(n)]

    def run(self, i):
        conn = None
        while not self.stop_ev.is_set():
            try:
                if conn is None:
                    conn = self.p.connect()
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO fo (client, at) VALUES (%s, clock_timestamp()) "
                                "RETURNING inet_server_port()", (i,))
                    port = cur.fetchone()[0]
                with self.lock:
                    self.events.append((time.monotonic(), i, True, port))
            except psycopg2.Error as e:
                with self.lock:
                    self.events.append((time.monotonic(), i, False, e.pgcode or "conn", str(e).strip()))
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop_ev.set()
        for t in self.threads:
            t.join(20)


def test_consul_failover_under_write_load(pgrouter, pg_cluster, consul):
    c = pg_cluster()
    old, new, other = c.nodes
    c.sql(old, "CREATE TABLE fo (client int, at timestamptz); GRANT ALL ON fo TO PUBLIC", dbname="testdb")
    c.wait_replicated()
    consul.set_instances(SERVICE, patroni_instances(c, old, [new, other]))
    p = consul_router(pgrouter, c, consul)
    writable_on(p, old)
    with Writers(p, n=4) as w:
        time.sleep(1.5)
        t_stop = time.monotonic()
        c.stop(old, mode="fast")
        c.promote(new)
        # Patroni would now re-register: the new leader passing, the old node gone critical.
        t_change = time.monotonic()
        consul.set_instances(SERVICE, patroni_instances(c, new, [other], down=[old]))
        time.sleep(2.5)
    ev = sorted(w.events)
    oks = [e for e in ev if e[2]]
    errors = [e for e in ev if not e[2]]
    before = [e for e in oks if e[0] < t_stop]
    after = [e for e in oks if e[0] > t_change]
    assert before and after, ev[-10:]
    assert all(e[3] == old.port for e in before)
    first_after = min(e[0] for e in oks if e[3] == new.port)
    gap = first_after - max(e[0] for e in before)
    print(f"failover: {len(oks)} commits, {len(errors)} errors {[e[3:] for e in errors]}, "
          f"write gap {gap:.3f}s, resumed {first_after - t_change:.3f}s after the Consul change")
    # Every commit after the change went to the new primary; none reached a node in recovery.
    assert all(e[3] == new.port for e in oks if e[0] > first_after)
    assert c.in_recovery(new) is False
    # Clients between transactions see no error: only a statement running on the old
    # primary at the instant it stopped may fail (PostgreSQL's own 57P01 / a lost link).
    assert len(errors) <= 4, errors
    in_flight = ("terminating connection due to administrator command", "server conn crashed")
    assert all(e[3] in ("57P01", "08006", "conn") and any(m in e[4] for m in in_flight) for e in errors), errors
    assert len({e[1] for e in errors}) == len(errors), "at most one error per client"
    assert gap < 10
    rows = c.value(new, "SELECT count(*) FROM fo", dbname="testdb")
    assert rows >= len([e for e in oks if e[3] == new.port])
    primary_rows = [r for r in clusters_rows(p) if r["role"] == "primary"]
    assert [r["port"] for r in primary_rows] == [new.port]
    assert "consul" in primary_rows[0]["discovery"]


def test_consul_primary_in_recovery_never_gets_writes(pgrouter, pg_cluster, consul):
    c = pg_cluster()
    consul.set_instances(SERVICE, patroni_instances(c, c.nodes[1], [c.nodes[2]]))  # wrong: node1 is a replica
    p = consul_router(pgrouter, c, consul, failover_timeout=1.5)
    wait_for(lambda: any(r["role"] == "primary" and r["in_recovery"] == "yes" for r in clusters_rows(p)),
             10, "primary checked")
    with pytest.raises(psycopg2.OperationalError) as e:
        conn = p.connect()
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE never (x int)")
    assert "no writable primary" in str(e.value)
    # Reads still work on the replicas.
    conn = p.connect(options="-c default_transaction_read_only=on")
    assert server_port(conn)[1] is True
    conn.close()
    consul.set_instances(SERVICE, patroni_instances(c, c.nodes[0], [c.nodes[1], c.nodes[2]]))
    writable_on(p, c.nodes[0])


def test_consul_two_primary_candidates(pgrouter, pg_cluster, consul):
    c = pg_cluster()
    a, b, r = c.nodes
    consul.set_instances(SERVICE, patroni_instances(c, a, [b, r]))
    p = consul_router(pgrouter, c, consul, failover_timeout=1.5)
    writable_on(p, a)
    # The seconds after a switchover: both tagged primary. The current one is among
    # them and still out of recovery: keep it.
    consul.set_instances(SERVICE, patroni_instances(c, a, [r], extra_primaries=[b]))
    time.sleep(0.5)
    conn = p.connect()
    assert server_port(conn) == (a.port, False)
    conn.close()
    # Two candidates, neither the current one: hold writes.
    consul.set_instances(SERVICE, patroni_instances(c, b, [], extra_primaries=[r]))
    wait_for(lambda: not any(x["role"] == "primary" for x in clusters_rows(p)), 5, "primary withdrawn")
    with pytest.raises(psycopg2.OperationalError) as e:
        conn = p.connect()
        server_port(conn)
    assert "split brain" in str(e.value)
    consul.set_instances(SERVICE, patroni_instances(c, a, [b, r]))
    writable_on(p, a)


def test_consul_down_garbage_or_hanging_keeps_last_topology(pgrouter, pg_cluster, consul, tmp_path):
    c = pg_cluster()
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    consul.set_instances(SERVICE, patroni_instances(c, c.nodes[0], [c.nodes[1], c.nodes[2]]))
    p = consul_router(pgrouter, c, consul, token_file=token, consul_wait=1.0)
    writable_on(p, c.nodes[0])
    reqs = consul.requests(f"/v1/health/service/{SERVICE}")
    assert reqs and all(r.headers.get("x-consul-token") == "s3cr3t-token" for r in reqs)
    assert any(r.param("index") for r in reqs), "blocking queries use index"
    for mode in ("error", "garbage", "hang", "refuse"):
        consul.set_mode(mode)
        time.sleep(1.2)
        conn = p.connect()
        assert server_port(conn) == (c.nodes[0].port, False), mode
        conn.close()
        ro = p.connect(options="-c default_transaction_read_only=on")
        assert server_port(ro)[1] is True, mode
        ro.close()
        rows = clusters_rows(p)
        assert len(rows) == 3, (mode, rows)
        if mode != "hang":
            assert "error" in rows[0]["discovery"], (mode, rows[0]["discovery"])
    consul.set_mode("ok")
    # After recovery a real change is followed.
    c.promote(c.nodes[1])
    consul.set_instances(SERVICE, patroni_instances(c, c.nodes[1], [c.nodes[2]]))
    writable_on(p, c.nodes[1])


def test_consul_gitlab_untagged_service(pgrouter, pg_cluster, consul):
    """GitLab's own `postgresql` service: no tags; the leader's check passes, the
    replicas' check-leader script exits 1 (warning); the address is the node's."""
    c = pg_cluster()
    svc = "postgresql"

    def gitlab(leader):
        return [{"node": f"pg-node-{i}", "address": "127.0.0.1", "service_address": "", "port": n.port,
                 "tags": [], "check": "passing" if n is leader else "warning"} for i, n in enumerate(c.nodes)]

    consul.set_instances(svc, gitlab(c.nodes[0]))
    p = consul_router(pgrouter, c, consul, consul_service=svc, consul_primary_tags=[], consul_replica_tags=[])
    writable_on(p, c.nodes[0])
    conn = p.connect(options="-c default_transaction_read_only=on")
    assert {server_port(conn)[0] for _ in range(6)} == {c.nodes[1].port, c.nodes[2].port}
    conn.close()
    c.stop(c.nodes[0])
    c.promote(c.nodes[2])
    consul.set_instances(svc, gitlab(c.nodes[2]))
    writable_on(p, c.nodes[2])


def test_patroni_discovery_follows_leader(pgrouter, pg_cluster, patroni):
    c = pg_cluster()

    def members(leader):
        return [{"name": f"pg{i}", "role": "leader" if n is leader else "replica",
                 "state": "running" if n is leader else "streaming", "host": "127.0.0.1", "port": n.port,
                 "lag": 0} for i, n in enumerate(c.nodes)]

    patroni.set_members(members(c.nodes[0]))
    p = pgrouter({"pool_mode": "transaction"},
                 databases={"testdb": {"cluster": "main", "route": "auto"}},
                 clusters={"main": {"health_check_period": 0.2, "failover_timeout": 10.0,
                                    "discovery": {"type": "patroni", "patroni_urls": [patroni.url]}}})
    writable_on(p, c.nodes[0])
    conn = p.connect(options="-c default_transaction_read_only=on")
    assert {server_port(conn)[0] for _ in range(6)} == {c.nodes[1].port, c.nodes[2].port}
    conn.close()
    c.stop(c.nodes[0])
    c.promote(c.nodes[1])
    patroni.set_members(members(c.nodes[1]))
    writable_on(p, c.nodes[1])
    assert "patroni" in clusters_rows(p)[0]["discovery"]


def test_old_primary_returning_in_recovery_serves_reads(pgrouter, pg_cluster, consul):
    """After a failover the old primary is still known; once it is back as a streaming
    replica (pg_rewind) it takes reads, and never writes, even while Consul does not
    list it yet."""
    c = pg_cluster()
    old, new, other = c.nodes
    consul.set_instances(SERVICE, patroni_instances(c, old, [new, other]))
    p = consul_router(pgrouter, c, consul)
    writable_on(p, old)
    c.stop(old, mode="fast")
    c.promote(new)
    c.follow(other, new)
    consul.set_instances(SERVICE, [i for i in patroni_instances(c, new, [other]) if i["port"] != old.port])
    writable_on(p, new)
    ro = p.connect(options="-c default_transaction_read_only=on")
    assert {server_port(ro)[0] for _ in range(6)} == {other.port}
    c.rejoin_as_replica(old, new)
    wait_for(lambda: any(r["port"] == old.port and r["role"] == "replica" and r["state"] == "up"
                         for r in clusters_rows(p)), 15, "old primary back as a replica")
    assert {server_port(ro)[0] for _ in range(6)} == {old.port, other.port}
    ro.close()
    writable_on(p, new)
