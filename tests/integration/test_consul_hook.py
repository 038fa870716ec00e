"""pgrouter-ctl consul-hook (SPEC §6): the handler of a Consul `service` watch.

It reads the watch's JSON (GET /v1/health/service/<name>, consul-patroni.md §1.2)
on stdin, selects primary and replicas, and applies them with SET PRIMARY /
SET REPLICAS over the admin console. Exit codes as GitLab's handler: 0 applied,
1 pgrouter unreachable, 2 invalid JSON, 3 split brain, 4 no healthy primary.

Tests marked `# needs SET PRIMARY` need the server side of those admin commands;
the others only need the pgrouter-ctl binary.
"""

import json
import subprocess
import time
import uuid

import pytest

import helpers

pytestmark = pytest.mark.pgrouter_only("pgrouter-ctl consul-hook is pgrouter's own")

ADMIN = "pgbouncer"
CLUSTER = "main"


# --------------------------------------------------------------------------- Consul payloads

def consul_entry(node, address, port=5432, tags=(), service="postgresql-ha", service_address=None,
                 serf="passing", status="passing", extra_checks=()):
    """One ServiceEntry exactly as GET /v1/health/service/:service (and a `service`
    watch) returns it. service_address None = same as the node's address; "" = empty
    (GitLab's `postgresql` service: the address is then Node.Address). serf / status:
    the serfHealth and the service check's Status (None = no such check).
    extra_checks: (CheckID, Status, node_level) tuples, e.g. maintenance mode."""
    svc_id = f"{service}/{node}"
    svc_addr = address if service_address is None else service_address
    tags = list(tags)

    def check(check_id, name, st, node_level, output):
        return {
            "Node": node, "CheckID": check_id, "Name": name, "Status": st, "Notes": "", "Output": output,
            "ServiceID": "" if node_level else svc_id, "ServiceName": "" if node_level else service,
            "ServiceTags": [] if node_level else tags, "Type": "" if node_level else "http",
            "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": {},
            "CreateIndex": 10, "ModifyIndex": 10,
        }

    checks = []
    if serf is not None:
        checks.append(check("serfHealth", "Serf Health Status", serf, True, "Agent alive and reachable"))
    if status is not None:
        checks.append(check(f"service:{svc_id}", f"Service '{service}' check", status, False,
                            f"HTTP GET http://{address}:8008/primary: 200 OK Output: {{}}"))
    for check_id, st, node_level in extra_checks:
        checks.append(check(check_id, check_id, st, node_level, ""))
    return {
        "Node": {
            "ID": str(uuid.uuid5(uuid.NAMESPACE_DNS, node)), "Node": node, "Address": address,
            "Datacenter": "gitlab_consul", "TaggedAddresses": {"lan": address, "wan": address},
            "Meta": {"consul-network-segment": ""}, "CreateIndex": 13, "ModifyIndex": 13,
        },
        "Service": {
            "ID": svc_id, "Service": service, "Tags": tags, "Address": svc_addr,
            "TaggedAddresses": {"lan_ipv4": {"Address": svc_addr, "Port": port}} if svc_addr else {},
            "Meta": {}, "Port": port, "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": True,
            "CreateIndex": 2041, "ModifyIndex": 2041,
        },
        "Checks": checks,
    }


def payload(entries):
    """What Consul writes to the handler's stdin: one line (Go json.Encoder) + newline."""
    return json.dumps(entries, separators=(",", ":")) + "\n"


def patroni_service(primary, replicas, **kw):
    """Patroni's tagged registration: ("host", port) pairs."""
    out = [consul_entry("pg-primary", primary[0], primary[1], tags=("primary", "master"), **kw)]
    for i, (h, p) in enumerate(replicas):
        out.append(consul_entry(f"pg-replica-{i}", h, p, tags=("replica",)))
    return out


def gitlab_service(primary, replicas):
    """GitLab's own untagged `postgresql` service: address "", leader passing, replicas warning."""
    out = [consul_entry("pg-leader.example.com", primary[0], primary[1], service="postgresql", service_address="")]
    for i, (h, p) in enumerate(replicas):
        out.append(consul_entry(f"pg-{i}.example.com", h, p, service="postgresql", service_address="",
                                status="warning"))
    return out


# --------------------------------------------------------------------------- running the hook

def ctl_binary():
    return helpers.require_binary(helpers.PGROUTER_BIN.parent / "pgrouter-ctl",
                                  "build it first: ninja -C build pgrouter-ctl")


def closed_admin():
    return f"host=127.0.0.1 port={helpers.free_port()} dbname=pgbouncer user={ADMIN} connect_timeout=5"


def hook(stdin, *args, admin=None, pooler=None, cluster=CLUSTER):
    """Runs `pgrouter-ctl --admin ... consul-hook --cluster main ARGS` with stdin."""
    if admin is None:
        admin = (f"host={pooler.host} port={pooler.port} dbname=pgbouncer user={ADMIN} connect_timeout=10"
                 if pooler else closed_admin())
    env = pooler.client_env(ADMIN) if pooler else None
    cmd = [str(ctl_binary()), "--admin", admin, "consul-hook"]
    if cluster is not None:
        cmd += ["--cluster", cluster]
    return subprocess.run(cmd + list(args), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=60, env=env)


def unused_addr():
    """An address nothing listens on (a replica that will show as down)."""
    return ("127.0.0.1", helpers.free_port())


# --------------------------------------------------------------------------- no server needed

@pytest.mark.parametrize("stdin", ["", "not json", "[", '[{"Node":', "{\"a\":1", "nul"])
def test_invalid_json_exits_2(stdin):
    r = hook(stdin)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "JSON" in r.stderr and r.stdout == ""


@pytest.mark.parametrize("stdin", [
    "{}", "42", '"text"', "[1]", "[[]]",
    '[{"Service":{"ID":"a","Port":5432},"Checks":[]}]',                                  # no Node
    '[{"Node":{"Address":"10.0.0.1"},"Checks":[]}]',                                     # no Service
    '[{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a","Port":5432}}]',                # no Checks
    '[{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a","Port":"5432"},"Checks":[]}]',  # Port not a number
    '[{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a"},"Checks":"passing"}]',
])
def test_garbage_shape_exits_2(stdin):
    r = hook(stdin)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr and r.stdout == ""


def test_split_brain_exits_3_and_names_the_candidates():
    entries = patroni_service(("10.6.0.32", 5432), [("10.6.0.31", 5432)])
    entries.append(consul_entry("pg-old-primary", "10.6.0.33", 5432, tags=("master",)))
    r = hook(payload(entries))  # the admin console is closed: exit 3, not 1, proves nothing was tried
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert "10.6.0.32:5432" in r.stderr and "10.6.0.33:5432" in r.stderr, r.stderr
    assert "10.6.0.31" not in r.stderr
    assert r.stdout == ""


def test_gitlab_split_brain_exits_3():
    entries = gitlab_service(("10.6.0.31", 5432), [("10.6.0.32", 5432)])
    entries[1]["Checks"][1]["Status"] = "passing"
    r = hook(payload(entries), "--primary-tags", "", "--replica-tags", "")
    assert r.returncode == 3, (r.returncode, r.stderr)


@pytest.mark.parametrize("stdin", ["[]", "null", "[]\n", "null\n"])
def test_no_instances_exits_4(stdin):
    r = hook(stdin)
    assert r.returncode == 4, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""


def test_all_critical_exits_4():
    entries = patroni_service(("10.6.0.32", 5432), [("10.6.0.31", 5432), ("10.6.0.33", 5432)], serf="critical")
    for e in entries:
        e["Checks"][0]["Status"] = "critical"
    r = hook(payload(entries))
    assert r.returncode == 4, (r.returncode, r.stderr)


def test_primary_in_maintenance_exits_4():
    entries = patroni_service(("10.6.0.32", 5432), [("10.6.0.31", 5432)],
                              extra_checks=[("_service_maintenance:postgresql-ha/pg-primary", "critical", False)])
    r = hook(payload(entries))
    assert r.returncode == 4, (r.returncode, r.stderr)


def test_untagged_input_with_default_tags_has_no_primary():
    r = hook(payload(gitlab_service(("10.6.0.31", 5432), [("10.6.0.32", 5432)])))
    assert r.returncode == 4, (r.returncode, r.stderr)


def test_admin_unreachable_exits_1():
    r = hook(payload(patroni_service(("10.6.0.32", 5432), [("10.6.0.31", 5432)])))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "connect" in r.stderr and r.stdout == ""


def test_usage_errors():
    good = payload(patroni_service(("10.6.0.32", 5432), []))
    assert hook(good, cluster=None).returncode == 64                   # --cluster is required
    for bad in ("a b", "main;drop", "x'y", 'q"', ""):
        r = hook(good, cluster=bad)
        assert r.returncode == 64, (bad, r.returncode, r.stderr)
    assert hook(good, "--no-such-option").returncode == 64
    # Old watch examples pass --kind / --service: accepted (then exit 1: nothing listens).
    r = hook(good, "--kind=service", "--service=postgresql-ha")
    assert r.returncode == 1, (r.returncode, r.stderr)
    r = hook(good, "--kind", "service", "--service", "postgresql-ha", "--primary-tag", "master",
             "--replica-tag", "replica")
    assert r.returncode == 1, (r.returncode, r.stderr)


# --------------------------------------------------------------------------- with a pooler

def start_with_cluster(pgrouter, pg, primary, replicas=()):
    """A pgrouter whose testdb is served by [clusters.main] (static discovery)."""
    p = pgrouter(databases={"testdb": {"host": None, "port": None, "cluster": CLUSTER}}, start=False)
    with open(p.config_path, "a") as f:
        f.write(f"\n[clusters.{CLUSTER}]\n")
        f.write(f'primary = "{primary[0]}:{primary[1]}"\n')
        f.write("replicas = [" + ", ".join(f'"{h}:{port}"' for h, port in replicas) + "]\n")
        f.write("health_check_period = 0.5\n")
    return p.start()


def cluster_rows(p):
    """SHOW CLUSTERS rows of CLUSTER as {(role, host, port)}, primary and replicas only
    (a backend dropped from the topology may linger as role "unknown" while it drains)."""
    rows = p.admin("SHOW CLUSTERS")
    return {(r[1], r[2], int(r[3])) for r in rows if r[0] == CLUSTER and r[1] in ("primary", "replica")}


def wait_rows(p, expected, timeout=10.0):
    end = time.monotonic() + timeout
    rows = cluster_rows(p)
    while rows != expected and time.monotonic() < end:
        time.sleep(0.2)
        rows = cluster_rows(p)
    return rows


def query_through(p, sql="SELECT 1", timeout=20.0):
    """Runs sql through the pooler, retrying while the new primary is being checked."""
    end = time.monotonic() + timeout
    while True:
        try:
            c = p.connect()
            try:
                with c.cursor() as cur:
                    cur.execute(sql)
                    return cur.fetchone()[0]
            finally:
                c.close()
        except Exception:
            if time.monotonic() >= end:
                raise
            time.sleep(0.3)


# needs SET PRIMARY
def test_apply_switches_primary_and_replicas(pgrouter, pg):
    old = unused_addr()
    p = start_with_cluster(pgrouter, pg, old)
    r1, r2 = unused_addr(), unused_addr()
    entries = patroni_service((pg.host, pg.port), [r1, r2])
    r = hook(payload(entries), pooler=p)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == (f"cluster {CLUSTER}: primary {pg.host}:{pg.port}, "
                        f"replicas {r1[0]}:{r1[1]},{r2[0]}:{r2[1]}\n"), r.stdout
    assert r.stderr == ""
    expected = {("primary", pg.host, pg.port), ("replica", r1[0], r1[1]), ("replica", r2[0], r2[1])}
    assert wait_rows(p, expected) == expected
    # Writes now reach the real server.
    assert query_through(p, "SELECT pg_is_in_recovery()") is False


# needs SET PRIMARY
def test_apply_twice_changes_nothing(pgrouter, pg):
    r1 = unused_addr()
    p = start_with_cluster(pgrouter, pg, unused_addr())
    stdin = payload(patroni_service((pg.host, pg.port), [r1]))
    r = hook(stdin, pooler=p)
    assert r.returncode == 0, (r.returncode, r.stderr)
    expected = {("primary", pg.host, pg.port), ("replica", r1[0], r1[1])}
    assert wait_rows(p, expected) == expected
    c = None
    end = time.monotonic() + 20
    while c is None:
        try:
            c = p.connect()
            c.cursor().execute("SELECT 1")
        except Exception:
            c = None
            if time.monotonic() > end:
                raise
            time.sleep(0.3)
    try:
        cur = c.cursor()
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        r2 = hook(stdin, pooler=p)
        assert r2.returncode == 0, (r2.returncode, r2.stderr)
        assert r2.stdout == r.stdout
        assert cluster_rows(p) == expected
        # The idle server connection to the (same) primary was not dropped.
        cur.execute("SELECT pg_backend_pid()")
        assert cur.fetchone()[0] == pid
    finally:
        c.close()


# needs SET PRIMARY
def test_gitlab_untagged_service(pgrouter, pg):
    r1, r2 = unused_addr(), unused_addr()
    p = start_with_cluster(pgrouter, pg, r1, [(pg.host, pg.port)])
    entries = gitlab_service((pg.host, pg.port), [r1, r2])
    r = hook(payload(entries), "--primary-tags", "", "--replica-tags", "", pooler=p)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    expected = {("primary", pg.host, pg.port), ("replica", r1[0], r1[1]), ("replica", r2[0], r2[1])}
    assert wait_rows(p, expected) == expected
    assert query_through(p, "SELECT pg_is_in_recovery()") is False


# needs SET PRIMARY
def test_no_replicas_sets_an_empty_list(pgrouter, pg):
    r1 = unused_addr()
    p = start_with_cluster(pgrouter, pg, (pg.host, pg.port), [r1])
    r = hook(payload(patroni_service((pg.host, pg.port), [])), pooler=p)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout == f"cluster {CLUSTER}: primary {pg.host}:{pg.port}, replicas (none)\n"
    expected = {("primary", pg.host, pg.port)}
    assert wait_rows(p, expected) == expected


# needs SET PRIMARY
def test_unknown_cluster_is_refused_exit_1(pgrouter, pg):
    p = start_with_cluster(pgrouter, pg, (pg.host, pg.port))
    before = cluster_rows(p)
    r = hook(payload(patroni_service(unused_addr(), [])), pooler=p, cluster="no_such_cluster")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "no_such_cluster" in r.stderr and r.stdout == ""
    assert cluster_rows(p) == before


def test_split_brain_leaves_a_running_pooler_alone(pgrouter, pg):
    p = start_with_cluster(pgrouter, pg, (pg.host, pg.port))
    entries = patroni_service(unused_addr(), [])
    entries.append(consul_entry("pg-other", "127.0.0.1", helpers.free_port(), tags=("primary",)))
    r = hook(payload(entries), pooler=p)
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert query_through(p, "SELECT pg_is_in_recovery()") is False


def test_wrong_admin_password_exits_1(pgrouter, pg):
    p = start_with_cluster(pgrouter, pg, (pg.host, pg.port))
    env = p.client_env(ADMIN, "wrong-password")
    cmd = [str(ctl_binary()), "--admin", f"host={p.host} port={p.port} dbname=pgbouncer user={ADMIN}",
           "consul-hook", "--cluster", CLUSTER]
    r = subprocess.run(cmd, input=payload(patroni_service((pg.host, pg.port), [])), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60, env=env)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "password" in r.stderr
