"""A [databases] host= that lists several hosts (PgBouncer 1.17+): new server
connections go to the entries round-robin, or with load_balance_hosts = disable stay
on one entry until it fails; target_session_attrs (any, read-write, read-only,
primary, standby) decides which servers a new connection may land on. pgrouter
moves a failing or non-matching attempt on to the next entry, so one dead host or
one replica in the list costs a client nothing."""

import os
import tempfile

import pytest

import helpers

WHERE_SQL = "SELECT pg_backend_pid(), coalesce(host(inet_server_addr()), 'unix'), pg_is_in_recovery()"


def servers_used(p, n):
    """Holds n transactions open at once (so n distinct servers) and returns, for each,
    [backend pid, server address or 'unix', in recovery]."""
    conns = [p.wire() for _ in range(n)]
    try:
        rows = []
        for c in conns:
            assert c.query("BEGIN").status == "T"
            r = c.query(WHERE_SQL)
            assert r.error is None, r.error
            rows.append(r.rows[0])
        for c in conns:
            assert c.query("COMMIT").status == "I"
        assert len({r[0] for r in rows}) == n, rows
        return rows
    finally:
        for c in conns:
            c.close()


def test_round_robin_over_a_host_list(pgrouter, pg):
    """TCP address and unix socket directory of the same server: each new server
    connection takes the next entry."""
    p = pgrouter({"default_pool_size": 4}, databases={"testdb": {"host": f"{pg.host},{pg.dir}"}})
    where = sorted(r[1] for r in servers_used(p, 4))
    assert where == ["127.0.0.1", "127.0.0.1", "unix", "unix"], where
    # The console shows the list as configured, and each server's own address.
    dbs = {r[0]: r for r in p.admin("SHOW DATABASES")}
    assert dbs["testdb"][1] == f"{pg.host},{pg.dir}", dbs["testdb"]
    addrs = sorted(str(r[4]) for r in p.admin("SHOW SERVERS") if r[2] == "testdb")
    assert len(addrs) == 4 and addrs.count("127.0.0.1") == 2, addrs


@pytest.mark.pgrouter_only("PgBouncer 1.18 fails the connections that land on a dead entry (its docs: every "
                           "host of a list must be up)")
def test_a_dead_host_in_the_list_costs_clients_nothing(pgrouter, pg):
    # Nothing listens on 127.0.0.3: each attempt that starts there moves on at once.
    p = pgrouter({"default_pool_size": 4}, databases={"testdb": {"host": f"127.0.0.3,{pg.host}"}})
    where = [r[1] for r in servers_used(p, 4)]
    assert where == ["127.0.0.1"] * 4, where
    assert "trying the next host" in p.log() and "127.0.0.3" in p.log()


@pytest.mark.pgrouter_only("load_balance_hosts is PgBouncer 1.24+ (the Debian PgBouncer is 1.18)")
@pytest.mark.parametrize("fmt", ["toml", "ini"])
def test_load_balance_hosts_disable_stays_on_the_entry_that_works(pgrouter, pg, fmt):
    hosts = f"127.0.0.3,{pg.host},{pg.dir}"
    p = pgrouter({"default_pool_size": 4}, fmt=fmt,
                 databases={"testdb": {"host": hosts, "load_balance_hosts": "disable"}})
    assert [r[1] for r in servers_used(p, 4)] == ["127.0.0.1"] * 4
    # The same list round-robin spreads over the two live entries.
    q = pgrouter({"default_pool_size": 4}, fmt=fmt,
                 databases={"testdb": {"host": hosts, "load_balance_hosts": "round-robin"}})
    assert sorted({r[1] for r in servers_used(q, 4)}) == ["127.0.0.1", "unix"]


def socket_alias(node, port):
    """A directory whose PostgreSQL socket for `port` leads to `node` (a symlink), so
    that one port= reaches two servers of a cluster through a host list."""
    d = tempfile.mkdtemp(prefix="pgrouter-it-alias-")
    os.symlink(str(node.dir / f".s.PGSQL.{node.port}"), os.path.join(d, f".s.PGSQL.{port}"))
    return d


@pytest.mark.pgrouter_only("target_session_attrs is PgBouncer 1.25+ (the Debian PgBouncer is 1.18)")
def test_target_session_attrs_picks_servers_from_a_primary_and_a_replica(pgrouter, pg_cluster):
    c = pg_cluster(n_replicas=1)
    primary, replica = c.nodes
    alias = socket_alias(replica, primary.port)
    try:
        hosts = f"{alias},{primary.dir}"  # the replica first
        seen = {}
        for attrs in ("any", "read-write", "read-only", "primary", "standby"):
            p = pgrouter({"default_pool_size": 4},
                         databases={"testdb": {"host": hosts, "port": primary.port, "target_session_attrs": attrs}})
            seen[attrs] = sorted({r[2] for r in servers_used(p, 4)})
            p.stop()
        assert seen == {"any": ["f", "t"], "read-write": ["f"], "read-only": ["t"], "primary": ["f"],
                        "standby": ["t"]}, seen  # pg_is_in_recovery() in text
        # connect_query can make the primary read-only for its sessions: read-write refuses it too.
        p = pgrouter({"default_pool_size": 2},
                     databases={"testdb": {"host": f"{primary.dir}", "port": primary.port,
                                           "target_session_attrs": "read-write",
                                           "connect_query": "SET default_transaction_read_only = on"}})
        with pytest.raises(Exception) as e:
            p.wire()
        assert "08006" in str(e.value) and "read-only" in str(e.value), e.value
        # No entry matches: the client is told why.
        p = pgrouter({}, databases={"testdb": {"host": f"{primary.dir}", "port": primary.port,
                                               "target_session_attrs": "standby"}})
        with pytest.raises(Exception) as e:
            p.wire()
        assert "08006" in str(e.value) and "is not in hot standby mode" in str(e.value), e.value
    finally:
        os.unlink(os.path.join(alias, f".s.PGSQL.{primary.port}"))
        os.rmdir(alias)
