#!/usr/bin/python3
"""Failover benchmark driver (run by bench/failover.sh, which documents the figures).

Starts a 3-node PostgreSQL 15 streaming-replication cluster
(tests/integration/pgcluster.py), a Consul double (tests/integration/consul_double.py)
announcing node0 as the primary, and pgrouter with Consul discovery in front of it
(`--target pgrouter`), or nothing in front (`--target direct`: each writer connects
straight to the primary the double announces, re-reading it at every reconnect: the
"client-side discovery" baseline). Then N writer threads run small INSERT
transactions in a loop for --duration seconds; at --fail-at seconds the primary
is stopped (pg_ctl -m fast|immediate), the double marks it critical, replica
node1 is promoted, the double names node1 the primary, and node2 is re-pointed at
node1. At the end every acknowledged commit is looked for on the new primary.

Prints a short summary (markdown) and, with --json, writes the raw figures.
Every process started here (PostgreSQL nodes, pgrouter, the double's threads) is
stopped here, by pid or pg_ctl -D, also on SIGTERM/SIGINT.
"""

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import psycopg2  # noqa: E402
import psycopg2.errorcodes  # noqa: E402
import psycopg2.extensions  # noqa: E402

import helpers  # noqa: E402
import pgcluster  # noqa: E402

SERVICE = "postgresql-ha"
TABLE = "failover_writes"
DBNAME = "benchdb"       # server-side database (made by PgServer.setup_roles on every node)
CLIENT_DB = "bench"      # what clients name through pgrouter

# --------------------------------------------------------------------------- bounded libpq waits

_HARD_END = {"t": float("inf")}     # no libpq call waits past this (monotonic)
CONNECT_LIMIT = 5.0


def _bounded_wait(conn):
    connecting = conn.status == psycopg2.extensions.STATUS_SETUP
    deadline = _HARD_END["t"]
    if connecting:
        deadline = min(deadline, time.monotonic() + CONNECT_LIMIT)
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise psycopg2.OperationalError("client timeout: no " + ("login" if connecting else "answer")
                                            + " in time (driver limit)")
        step = min(left, 0.5)
        if state == psycopg2.extensions.POLL_READ:
            select.select([conn.fileno()], [], [], step)
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [conn.fileno()], [], step)
        else:
            raise psycopg2.OperationalError(f"bad poll state {state}")


# libpq gives no SQLSTATE for an error during connection setup (psycopg2's pgcode is
# None): the server's usual login refusals are recognised by their message.
LOGIN_MESSAGES = {
    "the database system is shutting down": "57P03",
    "the database system is starting up": "57P03",
    "the database system is in recovery mode": "57P03",
    "the database system is not yet accepting connections": "57P03",
    "the database system is not accepting connections": "57P03",
    "terminating connection due to administrator command": "57P01",
    "sorry, too many clients already": "53300",
}


def error_key(e):
    """'08006 connection_failure' / 'no SQLSTATE: <kind>' for a psycopg2 error."""
    code = getattr(e, "pgcode", None)
    if code:
        name = (psycopg2.errorcodes.lookup(code) or "").lower()
        return f"{code} {name}".strip()
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    low = msg.lower()
    for text, code in LOGIN_MESSAGES.items():
        if text in low:
            name = (psycopg2.errorcodes.lookup(code) or "").lower()
            return f"{code} {name} (SQLSTATE inferred from the message)"
    if "client timeout" in low:
        kind = "client timeout"
    elif "connection refused" in low:
        kind = "connection refused"
    elif "server closed the connection" in low or "terminating connection" in low or "eof" in low:
        kind = "connection closed by server"
    elif "connection already closed" in low or "connection not open" in low:
        kind = "connection already closed"
    elif low.startswith("fatal:"):
        kind = "FATAL: " + msg[6:].strip()[:70]
    elif "could not connect" in low or "connection to server" in low:
        kind = "could not connect"
    else:
        kind = msg[:70]
    return f"no SQLSTATE: {kind}"


# --------------------------------------------------------------------------- writers

class Writer(threading.Thread):
    def __init__(self, wid, dsn_for, end, think):
        super().__init__(daemon=True, name=f"writer{wid}")
        self.wid = wid
        self.dsn_for = dsn_for        # () -> dsn (re-read at each connect)
        self.end = end
        self.think = think
        self.commits = []             # (t, seq, server port, in_recovery)
        self.errors = []              # (t, key, message, phase)
        self.connects = 0

    def run(self):
        conn = None
        seq = 0
        while time.monotonic() < self.end:
            phase = "connect"
            try:
                if conn is None or conn.closed:
                    conn = psycopg2.connect(self.dsn_for())
                    conn.autocommit = False
                    self.connects += 1
                phase = "insert"
                seq += 1
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {TABLE} (writer, seq, port) VALUES (%s, %s, inet_server_port()) "
                                "RETURNING port, pg_is_in_recovery()", (self.wid, seq))
                    port, rec = cur.fetchone()
                phase = "commit"
                conn.commit()
                self.commits.append((time.monotonic(), seq, port, rec))
            except psycopg2.Error as e:
                self.errors.append((time.monotonic(), error_key(e), str(e).strip()[:200], phase))
                broken = conn is None or conn.closed or isinstance(e, psycopg2.OperationalError)
                if conn is not None and not conn.closed:
                    try:
                        if broken:
                            conn.close()
                        else:
                            conn.rollback()
                    except psycopg2.Error:
                        conn.close()
                if broken:
                    conn = None
                    time.sleep(0.05)   # an application's reconnect delay
                continue
            if self.think:
                time.sleep(self.think)
        if conn is not None and not conn.closed:
            conn.close()


# --------------------------------------------------------------------------- pgrouter

def toml_str(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def consul_discovery(consul_url, args):
    """The [clusters.main.discovery] body for the Consul double."""
    return f"""type = "consul"
consul_url = {toml_str(consul_url)}
consul_service = "{SERVICE}"
consul_primary_tags = ["primary"]
consul_replica_tags = ["replica"]
consul_wait = {args.consul_wait}
"""


def wait_first_write(dsn, table, timeout, what):
    """Ready: one INSERT through `dsn` (discovery answered, a primary is known);
    RuntimeError naming `what` and the last error when none succeeds within `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            _HARD_END["t"] = time.monotonic() + 5
            c = psycopg2.connect(dsn)
            c.autocommit = True
            with c.cursor() as cur:
                cur.execute(f"INSERT INTO {table} (writer, seq, port) VALUES (-1, 0, inet_server_port())")
            c.close()
            return
        except psycopg2.Error as e:
            last = error_key(e) + ": " + str(e).strip()[:200]
            if time.monotonic() > deadline:
                raise RuntimeError(f"no write through {what} within {timeout:.0f}s (last error: {last})")
            time.sleep(0.2)


def write_pgrouter_config(work, port, args, discovery, seed=""):
    """pgrouter in front of cluster "main" (transaction pooling, trust, route = primary);
    `discovery` is the body of [clusters.main.discovery], `seed` optional lines of
    [clusters.main] (a starting topology until discovery answers)."""
    (work / "userlist.txt").write_text('"postgres" ""\n"pgbouncer" ""\n')
    cfg = f"""[pgrouter]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = ""
auth_type = "trust"
auth_file = {toml_str(work / "userlist.txt")}
admin_users = ["pgbouncer"]
pool_mode = "transaction"
default_pool_size = {args.pool_size}
max_client_conn = 1000
server_connect_timeout = 2.0
log_connections = false
log_disconnections = false
workers = {args.workers}

[tls]
server_tls_sslmode = "disable"

[clusters.main]
{seed}health_check_period = {args.health_check_period}
failover_timeout = {args.failover_timeout}

[clusters.main.discovery]
{discovery}
[databases.{CLIENT_DB}]
cluster = "main"
dbname = "{DBNAME}"
route = "primary"
"""
    path = work / "pgrouter.toml"
    path.write_text(cfg)
    return path


class Router:
    def __init__(self, binary, config, work):
        self.binary = binary
        self.config = config
        self.log_path = work / "pgrouter.log"
        self.proc = None
        self._fh = None

    def start(self, port, timeout=15.0):
        helpers.require_binary(self.binary, "build it first: cmake --build build (or set PGROUTER_BIN)")
        self._fh = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(self.binary), str(self.config)], stdin=subprocess.DEVNULL,
                                     stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True)
        if not helpers.wait_port("127.0.0.1", port, timeout, self.proc):
            raise RuntimeError(f"pgrouter did not start (exit code {self.proc.poll()}); log:\n{self.log()[-3000:]}")

    def stop(self):
        if self.proc is not None:
            helpers.stop_process(self.proc, signal.SIGTERM, 10)
        if self._fh:
            self._fh.close()
            self._fh = None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# --------------------------------------------------------------------------- consul announcements

def instances(cluster, primary, down=()):
    out = []
    for n in cluster.nodes:
        out.append({"node": f"pg-{n.name}", "address": n.host, "port": n.port,
                    "tags": ["primary"] if n is primary else ["replica"],
                    "check": "critical" if n in down else "passing"})
    return out


def announce(double, insts):
    double.set_instances(SERVICE, insts)


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=("pgrouter", "direct"), default="pgrouter")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--fail-at", type=float, default=5.0)
    ap.add_argument("--stop-mode", choices=("fast", "immediate"), default="fast")
    ap.add_argument("--promote-delay", type=float, default=0.0,
                    help="seconds between the primary going down and the promotion (detection time)")
    ap.add_argument("--think", type=float, default=0.0, help="seconds each writer sleeps between transactions")
    ap.add_argument("--synchronous-commit", choices=("on", "local", "off"), default="on",
                    help="for the benchmark database (replication is asynchronous either way)")
    ap.add_argument("--pool-size", type=int, default=20)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--health-check-period", type=float, default=0.5)
    ap.add_argument("--failover-timeout", type=float, default=15.0)
    ap.add_argument("--consul-wait", type=float, default=10.0)
    ap.add_argument("--seed", action="store_true",
                    help="also put the initial primary/replicas in [clusters.main] (discovery overrides them)")
    ap.add_argument("--pgrouter-bin", default=os.environ.get("PGROUTER_BIN", str(REPO / "build" / "pgrouter")))
    ap.add_argument("--ready-timeout", type=float, default=20.0,
                    help="how long to wait for a first write through pgrouter")
    ap.add_argument("--json", help="also write the raw figures here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (pgrouter log, config)")
    args = ap.parse_args()
    if not 0 < args.fail_at < args.duration:
        ap.error("--fail-at must be inside (0, --duration)")

    signal.signal(signal.SIGTERM, _on_sigterm)
    psycopg2.extensions.set_wait_callback(_bounded_wait)

    work = Path(tempfile.mkdtemp(prefix="pgrouter-failover-"))
    cluster = double = router = None
    ev = {}
    t_setup = time.monotonic()
    try:
        import consul_double   # tests/integration; being written alongside
        cluster = pgcluster.PgCluster(n_replicas=2)
        old, new, other = cluster.nodes
        log(f"cluster up in {cluster.startup_seconds:.2f} s: {cluster.describe()}")
        cluster.sql(old, f"CREATE TABLE {TABLE} (writer int, seq int, port int, "
                         "at timestamptz DEFAULT clock_timestamp(), PRIMARY KEY (writer, seq))", dbname=DBNAME)
        # The test clusters run with synchronous_commit = off; a commit acknowledged here
        # should at least be on the primary's disk (replication stays asynchronous).
        cluster.sql(old, f"ALTER DATABASE {DBNAME} SET synchronous_commit = {args.synchronous_commit}")
        double = consul_double.ConsulDouble(port=helpers.free_port()).start()
        announce(double, instances(cluster, old))

        current = {"node": old}   # direct mode: the primary as the double names it
        if args.target == "pgrouter":
            port = helpers.free_port()
            seed = ""
            if args.seed:   # a starting topology in the file, until discovery answers
                p0, *rs = cluster.nodes
                seed = f"primary = {toml_str(p0.addr)}\nreplicas = [{', '.join(toml_str(r.addr) for r in rs)}]\n"
            cfg = write_pgrouter_config(work, port, args, consul_discovery(double.url, args), seed)
            router = Router(Path(args.pgrouter_bin), cfg, work)
            router.start(port)
            log(f"pgrouter up on {port}, consul double on {double.url}")

            def dsn_for():
                return f"host=127.0.0.1 port={port} dbname={CLIENT_DB} user=postgres application_name=failover-bench"
        else:
            def dsn_for():
                n = current["node"]
                return f"host={n.host} port={n.port} dbname={DBNAME} user=postgres application_name=failover-bench"

        wait_first_write(dsn_for(), TABLE, args.ready_timeout, args.target)
        log(f"ready after {time.monotonic() - t_setup:.1f} s; {args.clients} writers for {args.duration:.0f} s, "
            f"primary {old.name} stopped ({args.stop_mode}) at {args.fail_at:.1f} s")

        t0 = time.monotonic()
        end = t0 + args.duration
        _HARD_END["t"] = end + args.failover_timeout + 5
        writers = [Writer(i, dsn_for, end, args.think) for i in range(args.clients)]
        for w in writers:
            w.start()

        # The failover, in the order a Patroni + Consul setup goes through it.
        time.sleep(max(0.0, t0 + args.fail_at - time.monotonic()))
        ev["stop"] = time.monotonic()
        cluster.stop(old, mode=args.stop_mode)
        ev["stopped"] = time.monotonic()
        announce(double, instances(cluster, old, down=(old,)))       # its check goes critical
        ev["double_down"] = time.monotonic()
        if args.promote_delay:
            time.sleep(args.promote_delay)
        cluster.promote(new)
        ev["promoted"] = time.monotonic()
        announce(double, instances(cluster, new, down=(old,)))       # node1 is the primary
        current["node"] = new
        ev["double_primary"] = time.monotonic()
        follow_error = None
        try:
            cluster.follow(other, new, timeout=10)
            ev["other_follows"] = time.monotonic()
        except Exception as e:  # reported, not fatal
            follow_error = str(e)

        for w in writers:
            w.join(max(0.0, _HARD_END["t"] - time.monotonic()) + 5)
        stuck = [w.name for w in writers if w.is_alive()]
        _HARD_END["t"] = time.monotonic() + 30

        clusters_view = None
        if router is not None:
            try:
                c = psycopg2.connect(f"host=127.0.0.1 port={port} dbname=pgbouncer user=pgbouncer")
                c.autocommit = True
                with c.cursor() as cur:
                    cur.execute("SHOW CLUSTERS")
                    cols = [d[0] for d in cur.description]
                    clusters_view = [dict(zip(cols, r)) for r in cur.fetchall()]
                c.close()
            except psycopg2.Error as e:
                clusters_view = f"SHOW CLUSTERS failed: {error_key(e)}: {str(e).strip()[:200]}"

        # Where did the acknowledged writes go?
        rows = cluster.sql(new, f"SELECT writer, seq, port FROM {TABLE} WHERE writer >= 0", dbname=DBNAME)
        on_new = {(w, s): p for w, s, p in rows}
        res = analyse(args, writers, ev, t0, on_new, old, new)
        reqs = double.requests("/v1/health/service/")
        res.update({"consul_requests": len(reqs),
                    "consul_blocking_requests": sum(1 for q in reqs if q.param("index") not in (None, "", "0")),
                    "stuck_writers": stuck, "follow_error": follow_error, "clusters_view": clusters_view,
                    "cluster_startup_s": cluster.startup_seconds})
        print(summary(args, res, old, new))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2, default=str) + "\n")
        if router is not None and (res["errors_total"] and not res["commits_after"]):
            log("pgrouter log (tail):\n" + router.log()[-3000:])
        return 0 if res["commits_after"] else 1
    except KeyboardInterrupt as e:
        log(f"interrupted ({e})")
        return 143
    except Exception as e:
        log(f"FAILED: {type(e).__name__}: {e}")
        if double is not None and router is not None:
            log(f"pgrouter sent {len(double.requests('/v1/health/service/'))} health-service requests to the double")
        if router is not None:
            log("pgrouter log (tail):\n" + router.log()[-3000:])
        print(f"### Failover through {args.target}: FAILED\n\n{type(e).__name__}: {str(e)[:500]}\n")
        return 1
    finally:
        _HARD_END["t"] = time.monotonic() + 10
        if router is not None:
            router.stop()
        if double is not None:
            double.stop()
        if cluster is not None:
            cluster.cleanup()
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            import shutil
            shutil.rmtree(work, ignore_errors=True)


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def analyse(args, writers, ev, t0, on_new, old, new):
    rel = lambda t: None if t is None else round(t - t0, 3)
    commits = [(t, w.wid, s, p, r) for w in writers for (t, s, p, r) in w.commits]
    commits.sort()
    errors = [(t, w.wid, k, m, ph) for w in writers for (t, k, m, ph) in w.errors]
    errors.sort()
    before = [c for c in commits if c[3] == old.port]
    after = [c for c in commits if c[3] == new.port]
    elsewhere = [c for c in commits if c[3] not in (old.port, new.port)]
    last_before = before[-1][0] if before else None
    first_after = after[0][0] if after else None
    gap = first_after - last_before if (first_after is not None and last_before is not None) else None
    from_double = first_after - ev["double_primary"] if first_after is not None else None
    from_stop = first_after - ev["stop"] if first_after is not None else None

    # Per client: the longest pause between two of its own successful commits, the
    # start and the end of the run counting as commits (a writer that never commits
    # again after the failover pauses until the end).
    per_client = []
    for w in writers:
        ts = [t0] + [t for (t, _, _, _) in w.commits] + [t0 + args.duration]
        per_client.append(max(b - a for a, b in zip(ts, ts[1:])))
    pcs = [g for g in per_client if g is not None]

    by_key = {}
    for (_, _, k, _, ph) in errors:
        by_key[k] = by_key.get(k, 0) + 1
    by_class = {}
    for k, n in by_key.items():
        cls = k[:2] if k[:5].isalnum() and not k.startswith("no ") else "--"
        by_class[cls] = by_class.get(cls, 0) + n
    by_phase = {}
    for (_, _, _, _, ph) in errors:
        by_phase[ph] = by_phase.get(ph, 0) + 1

    missing = [c for c in commits if (c[1], c[2]) not in on_new]
    missing_after = [c for c in missing if c[3] == new.port]
    in_recovery = [c for c in commits if c[4]]
    old_after_stop = [c for c in before if c[0] > ev["stop"]]
    samples = [{"t": rel(t), "writer": w, "error": k, "phase": ph, "message": m} for (t, w, k, m, ph) in errors[:10]]
    return {
        "target": args.target, "clients": args.clients, "duration_s": args.duration, "fail_at_s": args.fail_at,
        "stop_mode": args.stop_mode, "promote_delay_s": args.promote_delay,
        "synchronous_commit": args.synchronous_commit,
        "events_s": {k: rel(v) for k, v in ev.items()},
        "commits": len(commits), "commits_before": len(before), "commits_after": len(after),
        "commits_elsewhere": len(elsewhere),
        "last_commit_old_s": rel(last_before), "first_commit_new_s": rel(first_after),
        "write_gap_s": gap, "gap_from_double_s": from_double, "gap_from_stop_s": from_stop,
        "per_client_max_gap_s": {"max": max(pcs) if pcs else None, "median": statistics.median(pcs) if pcs else None,
                                 "min": min(pcs) if pcs else None},
        "errors_total": len(errors), "errors_by_sqlstate": dict(sorted(by_key.items(), key=lambda kv: -kv[1])),
        "errors_by_class": by_class, "errors_by_phase": by_phase,
        "first_error_s": rel(errors[0][0]) if errors else None, "last_error_s": rel(errors[-1][0]) if errors else None,
        "error_samples": samples,
        "acked_missing_on_new_primary": len(missing), "acked_missing_committed_on_new": len(missing_after),
        "commits_reporting_in_recovery": len(in_recovery), "commits_on_old_after_stop_began": len(old_after_stop),
        "reconnects": sum(w.connects for w in writers) - len(writers),
    }


def fmt_s(v):
    return "n/a" if v is None else f"{v:.3f} s"


def summary(args, r, old, new):
    ev = r["events_s"]
    via = "pgrouter (consul discovery, route = primary)" if r["target"] == "pgrouter" else \
        "direct connections to the announced primary (no pooler; baseline)"
    lines = [
        f"### Failover: {r['clients']} writers through {via}",
        "",
        f"3-node PostgreSQL 15 cluster (asynchronous streaming, synchronous_commit = {r['synchronous_commit']}); "
        f"{r['duration_s']:.0f} s of single-row INSERT transactions; "
        f"primary {old.name} stopped (`pg_ctl -m {r['stop_mode']}`) at {r['fail_at_s']:.1f} s, {new.name} promoted"
        + (f" {r['promote_delay_s']:.1f} s later" if r['promote_delay_s'] else "") + ".",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| timeline (s): stop / stopped / double: old critical / promoted / double: new primary | "
        f"{ev.get('stop')} / {ev.get('stopped')} / {ev.get('double_down')} / {ev.get('promoted')} / "
        f"{ev.get('double_primary')} |",
        f"| writes committed (old primary + new primary) | {r['commits']} ({r['commits_before']} + {r['commits_after']}) |",
        f"| write gap: last commit on old primary -> first on new | {fmt_s(r['write_gap_s'])} "
        f"({r['last_commit_old_s']} -> {r['first_commit_new_s']}) |",
        f"| first commit on new primary after the double named it | {fmt_s(r['gap_from_double_s'])} |",
        f"| first commit on new primary after the stop began | {fmt_s(r['gap_from_stop_s'])} |",
        f"| longest pause per client (run start/end count as commits): max / median | {fmt_s(r['per_client_max_gap_s']['max'])} / "
        f"{fmt_s(r['per_client_max_gap_s']['median'])} |",
        f"| client errors | {r['errors_total']} |",
    ]
    for k, n in r["errors_by_sqlstate"].items():
        lines.append(f"| &nbsp;&nbsp;{k} | {n} |")
    if r["errors_total"]:
        lines.append("| &nbsp;&nbsp;by phase | " + ", ".join(f"{k} {v}" for k, v in r["errors_by_phase"].items())
                     + f" (first at {r['first_error_s']} s, last at {r['last_error_s']} s) |")
    lines += [
        f"| reconnects | {r['reconnects']} |",
        f"| acknowledged commits missing on the new primary (of them acknowledged by it) | "
        f"{r['acked_missing_on_new_primary']} ({r['acked_missing_committed_on_new']}) |",
        f"| commits acknowledged by the old primary after its stop began | {r['commits_on_old_after_stop_began']} |",
        f"| commits that ran on a node in recovery | {r['commits_reporting_in_recovery']} |",
        f"| commits on another node than old/new primary | {r['commits_elsewhere']} |",
    ]
    if r["target"] == "pgrouter":
        lines.append(f"| Consul health-service requests from pgrouter (blocking) | {r['consul_requests']} "
                     f"({r['consul_blocking_requests']}) |")
    if r["stuck_writers"]:
        lines.append(f"| writers still blocked at the end | {len(r['stuck_writers'])} |")
    if r["follow_error"]:
        lines.append(f"| node2 re-pointed at the new primary | failed: {r['follow_error'][:80]} |")
    if isinstance(r.get("clusters_view"), str):
        lines.append(f"| SHOW CLUSTERS | {r['clusters_view'][:100]} |")
    elif r.get("clusters_view"):
        view = "; ".join(f"{row.get('host')}:{row.get('port')} {row.get('role')} {row.get('state')}"
                         for row in r["clusters_view"])
        lines.append(f"| SHOW CLUSTERS after the run | {view} |")
    if r["error_samples"]:
        lines += ["", "First client errors:", ""]
        for s in r["error_samples"][:5]:
            lines.append(f"- t={s['t']} s writer {s['writer']} ({s['phase']}): {s['error']}: "
                         f"{s['message'].splitlines()[0] if s['message'] else ''}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
