"""Patroni discovery against a real Patroni (Debian's patroni 3.0, etcd-server as its
DCS) managing three PostgreSQL 15 nodes: pgrouter polls GET /cluster on the nodes'
REST APIs, writes go to the leader, read-only sessions to the streaming replicas, and
a Patroni switchover is followed with no reload while clients keep writing."""

import psycopg2
import pytest

import helpers
from patroni_cluster import PatroniCluster
from test_failover import Writers
from test_routing import clusters_rows, server_port, wait_for, _try_connect

pytestmark = pytest.mark.pgrouter_only("pgrouter's Patroni discovery")


@pytest.fixture(scope="module")
def patroni_cluster():
    pc = PatroniCluster(n=3)
    try:
        pc.start()
    except helpers.Missing as e:
        pc.cleanup()
        pytest.fail(f"missing dependency: {e}", pytrace=False)
    except Exception:
        pc.cleanup()
        raise
    leader = pc.leader()
    # The roles and database the pooler fixtures log in with (helpers.PASSWORDS); they
    # reach the replicas by streaming replication.
    c = psycopg2.connect(host=leader["host"], port=leader["port"], user="postgres", dbname="postgres")
    c.autocommit = True
    with c.cursor() as cur:
        cur.execute("SET password_encryption = 'md5'")
        cur.execute("CREATE ROLE app_md5 LOGIN PASSWORD %s", (helpers.PASSWORDS["app_md5"],))
        cur.execute("CREATE DATABASE testdb")
    c.close()
    c = psycopg2.connect(host=leader["host"], port=leader["port"], user="postgres", dbname="testdb")
    c.autocommit = True
    with c.cursor() as cur:
        cur.execute("CREATE TABLE fo (client int, at timestamptz); GRANT ALL ON fo TO PUBLIC")
    c.close()
    # Replicas replay them asynchronously (slowly on a loaded machine): a read-only
    # session routed there before they arrive would fail its login.
    for m in pc.members():
        wait_for(lambda: _replayed(m), 60, f"the role, database and table on {m['name']}")
    yield pc
    pc.cleanup()


def _replayed(member):
    try:
        c = psycopg2.connect(host=member["host"], port=member["port"], user="postgres", dbname="testdb",
                             connect_timeout=5)
    except psycopg2.Error:
        return False
    try:
        with c.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'app_md5'")
            role = cur.fetchone()[0] == 1
            cur.execute("SELECT to_regclass('public.fo') IS NOT NULL")
            return role and cur.fetchone()[0]
    finally:
        c.close()


def patroni_router(pgrouter, pc, first=None):
    """pgrouter polling every node's REST API (`first`'s listed first)."""
    urls = sorted((pc.url(n) for n in pc.nodes), key=lambda u: u != (pc.url(pc.node(first)) if first else u))
    return pgrouter({"pool_mode": "transaction", "default_pool_size": 10},
                    databases={"testdb": {"cluster": "main", "route": "auto"}},
                    clusters={"main": {"health_check_period": 0.2, "failover_timeout": 30.0,
                                       "max_replica_lag": "64MB",
                                       "discovery": {"type": "patroni", "patroni_urls": urls}}})


def router_sees(p, pc):
    """SHOW CLUSTERS has Patroni's leader as the checked-up primary and its replicas up."""
    members = pc.members()
    leader = [m["port"] for m in members if m["role"] == "leader"]
    replicas = {m["port"] for m in members if m["role"] == "replica"}
    rows = clusters_rows(p)
    prim = [r["port"] for r in rows if r["role"] == "primary" and r["state"] == "up" and r["in_recovery"] == "no"]
    reps = {r["port"] for r in rows if r["role"] == "replica" and r["state"] == "up"}
    return len(leader) == 1 and prim == leader and reps == replicas


def test_leader_takes_writes_replicas_take_reads(pgrouter, patroni_cluster):
    pc = patroni_cluster
    p = patroni_router(pgrouter, pc)
    wait_for(lambda: router_sees(p, pc), 30, "pgrouter following Patroni's members")
    leader = pc.leader()
    replicas = {m["port"] for m in pc.members() if m["role"] == "replica"}
    assert len(replicas) == 2
    assert "patroni" in clusters_rows(p)[0]["discovery"]
    conn = p.connect()
    assert server_port(conn) == (leader["port"], False)
    conn.close()
    ro = p.connect(options="-c default_transaction_read_only=on")
    assert {server_port(ro) for _ in range(8)} == {(port, True) for port in replicas}
    ro.close()


def test_switchover_followed_under_write_load(pgrouter, patroni_cluster):
    pc = patroni_cluster
    p = patroni_router(pgrouter, pc)
    wait_for(lambda: router_sees(p, pc), 30, "pgrouter following Patroni's members")
    old = pc.leader()
    candidate = next(m for m in pc.members() if m["role"] == "replica")
    with Writers(p, n=3) as w:
        wait_for(lambda: sum(e[2] for e in w.events) >= 30, 20, "writes flowing")
        pc.switchover(candidate["name"])
        new_port = candidate["port"]
        wait_for(lambda: any(e[2] and e[3] == new_port for e in w.events), 30,
                 "writes reaching the new leader without a reload")
        n_before = len(w.events)
        wait_for(lambda: sum(e[2] for e in w.events[n_before:]) >= 30, 20, "writes flowing on the new leader")
    ok = [e for e in w.events if e[2]]
    failed = [e for e in w.events if not e[2]]
    # Every committed write went to a node that was the leader then: the old one before
    # the switch, the new one after; none anywhere else (a replica would refuse them).
    assert {e[3] for e in ok} <= {old["port"], new_port}
    last_old = max((e[0] for e in ok if e[3] == old["port"]), default=0)
    first_new = min(e[0] for e in ok if e[3] == new_port)
    assert last_old <= first_new, "a write reached the old leader after the new one took writes"
    # Only in-flight transactions may fail, with a connection-class error; none with
    # 25006 (a write sent to a node in recovery).
    assert all(e[3] != "25006" for e in failed), failed
    assert len(failed) <= 3 * 3, failed
    # Nothing acknowledged was lost: every committed row is on the new leader.
    c = psycopg2.connect(host=candidate["host"], port=new_port, user="postgres", dbname="testdb")
    with c.cursor() as cur:
        cur.execute("SELECT count(*) FROM fo")
        assert cur.fetchone()[0] >= len(ok)
    c.close()
    # pgrouter's view agrees with Patroni's.
    wait_for(lambda: router_sees(p, pc), 30, "pgrouter's topology matching Patroni's after the switchover")
    assert _try_connect(p) is not None


def test_leader_crash_followed_through_the_surviving_apis(pgrouter, patroni_cluster):
    """The leader's node dies (Patroni killed, PostgreSQL stopped at once): its REST API
    no longer answers, so pgrouter must ask the other nodes' APIs; writes wait (up to
    failover_timeout) while Patroni elects a new leader, then go there. Runs last: the
    cluster keeps two nodes afterwards."""
    pc = patroni_cluster
    old = pc.leader()
    p = patroni_router(pgrouter, pc, first=old["name"])  # the API that will go away is asked first
    wait_for(lambda: router_sees(p, pc), 30, "pgrouter following Patroni's members")
    with Writers(p, n=3) as w:
        wait_for(lambda: sum(e[2] for e in w.events) >= 30, 20, "writes flowing")
        pc.crash(old["name"])
        members = pc.wait(lambda m: any(x["role"] == "leader" and x["name"] != old["name"] and
                                        x["state"] == "running" for x in m), 60, "a new leader")
        new = next(m for m in members if m["role"] == "leader")
        wait_for(lambda: any(e[2] and e[3] == new["port"] for e in w.events), 30,
                 "writes reaching the new leader")
    ok = [e for e in w.events if e[2]]
    failed = [e for e in w.events if not e[2]]
    assert {e[3] for e in ok} <= {old["port"], new["port"]}
    assert all(e[3] != "25006" for e in failed), failed
    # In-flight transactions on the dead leader fail; the rest waited for the new one.
    assert len(failed) <= 3 * 3, failed
    rows = clusters_rows(p)
    assert [r["port"] for r in rows if r["role"] == "primary"] == [new["port"]]
    assert "patroni" in rows[0]["discovery"]
