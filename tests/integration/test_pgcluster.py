"""The pg_cluster fixture itself: a real streaming-replication cluster (no pooler involved)."""

import psycopg2
import pytest

import helpers


def count(cluster, node, table="t", dbname="testdb"):
    return cluster.value(node, f"SELECT count(*) FROM {table}", dbname=dbname)


def test_replicas_stream_writes_and_roles(pg_cluster):
    c = pg_cluster(n_replicas=2)
    primary, r1, r2 = c.nodes
    assert c.primary is primary
    assert c.in_recovery(primary) is False
    assert c.in_recovery(r1) is True and c.in_recovery(r2) is True
    streaming = {r[0] for r in c.sql(primary, "SELECT application_name FROM pg_stat_replication "
                                              "WHERE state = 'streaming'")}
    assert streaming == {"node1", "node2"}
    assert len({n.port for n in c.nodes}) == 3 and all(n.addr == f"127.0.0.1:{n.port}" for n in c.nodes)

    c.sql(primary, "CREATE TABLE t (id int PRIMARY KEY)", dbname="testdb")
    c.sql(primary, "INSERT INTO t SELECT generate_series(1, 500)", dbname="testdb")
    c.sql(primary, "GRANT SELECT, INSERT ON t TO PUBLIC", dbname="testdb")
    c.wait_replicated(timeout=10)
    assert [count(c, n) for n in c.nodes] == [500, 500, 500]
    assert 0 < c.replay_lsn(r1) <= c.current_lsn()

    # The app roles log in over TCP with their passwords on a replica too; it is read-only.
    conn = psycopg2.connect(host=r1.host, port=r1.port, dbname="testdb", user="app_scram",
                            password=helpers.PASSWORDS["app_scram"], connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), pg_is_in_recovery() FROM t")
            assert cur.fetchone() == (500, True)
            with pytest.raises(psycopg2.Error) as e:
                cur.execute("INSERT INTO t VALUES (0)")
            assert e.value.pgcode == "25006"  # read_only_sql_transaction
    finally:
        conn.close()

    # A paused replica falls behind; resumed, it catches up.
    c.pause_replay(r2)
    c.sql(primary, "INSERT INTO t VALUES (1000)", dbname="testdb")
    c.wait_replicated(timeout=10)
    assert count(c, r1) == 501 and count(c, r2) == 500
    c.resume_replay(r2)
    c.wait_replicated(timeout=10)
    assert count(c, r2) == 501


def test_failover_promote_follow_and_rejoin(pg_cluster):
    c = pg_cluster(n_replicas=2)
    old, r1, r2 = c.nodes
    c.sql(old, "CREATE TABLE t (id int)", dbname="testdb")
    c.sql(old, "INSERT INTO t VALUES (1)", dbname="testdb")
    c.wait_replicated(timeout=10)

    c.stop(old, mode="immediate")
    c.promote(r1)
    assert c.primary is r1 and c.in_recovery(r1) is False
    c.follow(r2, r1)
    c.sql(r1, "INSERT INTO t VALUES (2)", dbname="testdb")

    method = c.rejoin_as_replica(old, r1)
    assert method == "rewind", old.rewind_output
    assert c.in_recovery(old) is True
    c.wait_replicated(timeout=10)
    assert [count(c, n) for n in c.nodes] == [2, 2, 2]
    streaming = {r[0] for r in c.sql(r1, "SELECT application_name FROM pg_stat_replication "
                                         "WHERE state = 'streaming'")}
    assert streaming == {"node0", "node2"}


def test_rejoin_after_divergence(pg_cluster):
    """The old primary committed writes no replica received: pg_rewind discards them."""
    c = pg_cluster(n_replicas=1)
    old, new = c.nodes
    c.sql(old, "CREATE TABLE t (id int)", dbname="testdb")
    c.wait_replicated(timeout=10)
    c.stop(new)                                   # the replica misses what follows
    c.sql(old, "INSERT INTO t SELECT generate_series(1, 1000)", dbname="testdb")
    c.stop(old, mode="immediate")
    c.start(new, wait=False)                      # its upstream is down
    c.promote(new)
    c.sql(new, "INSERT INTO t VALUES (-1)", dbname="testdb")

    assert c.rejoin_as_replica(old, new) == "rewind", old.rewind_output
    assert "servers diverged" in old.rewind_output
    c.wait_replicated(timeout=10)
    assert count(c, old) == 1 and count(c, new) == 1

    # The fallback path: a fresh base backup.
    c.stop(old)
    assert c.rejoin_as_replica(old, new, method="basebackup") == "basebackup"
    assert count(c, old) == 1
