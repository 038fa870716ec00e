#!/usr/bin/python3
"""Write gap and client errors across a leader change of a real Patroni cluster, through
pgrouter with `patroni` discovery (run by bench/patroni_failover.sh, which documents it).

Starts Patroni 3.0 (Debian) with etcd managing three PostgreSQL 15 nodes
(tests/integration/patroni_cluster.py) and pgrouter polling GET /cluster on every node's
REST API. N writers run single-row INSERT transactions (bench/failover_driver.py's
Writer) for --duration seconds; at --fail-at seconds the leader is either switched over
to a replica (POST /switchover: Patroni's planned change) or crashed (its Patroni killed,
its PostgreSQL stopped at once: the others elect a new leader when the leader key's ttl
runs out). A thread polls Patroni every 50 ms to timestamp when it names the new
leader. At the end every acknowledged commit is looked for on the new leader.
"""

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))

import psycopg2  # noqa: E402

import failover_driver as fd  # noqa: E402
import helpers  # noqa: E402
from patroni_cluster import PatroniCluster  # noqa: E402

TABLE = fd.TABLE


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("switchover", "crash"), default="switchover")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--fail-at", type=float, default=5.0)
    ap.add_argument("--pool-size", type=int, default=20)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--health-check-period", type=float, default=0.5)
    ap.add_argument("--failover-timeout", type=float, default=30.0)
    ap.add_argument("--pgrouter-bin", default=str(REPO / "build" / "pgrouter"))
    args = ap.parse_args()
    psycopg2.extensions.set_wait_callback(fd._bounded_wait)

    work = Path(tempfile.mkdtemp(prefix="pgrouter-patroni-bench-"))
    pc = router = None
    try:
        t_setup = time.monotonic()
        pc = PatroniCluster(n=3).start()
        old = pc.leader()
        fd.log(f"Patroni cluster up in {time.monotonic() - t_setup:.1f} s, leader {old['name']}")
        c = psycopg2.connect(host=old["host"], port=old["port"], user="postgres", dbname="postgres")
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(f"CREATE DATABASE {fd.DBNAME}")
        c.close()
        c = psycopg2.connect(host=old["host"], port=old["port"], user="postgres", dbname=fd.DBNAME)
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(f"CREATE TABLE {TABLE} (writer int, seq int, port int, "
                        "at timestamptz DEFAULT clock_timestamp(), PRIMARY KEY (writer, seq))")
            cur.execute(f"ALTER DATABASE {fd.DBNAME} SET synchronous_commit = on")
        c.close()

        port = helpers.free_port()
        urls = ", ".join(fd.toml_str(pc.url(n)) for n in pc.nodes)
        cfg = fd.write_pgrouter_config(work, port, args, f'type = "patroni"\npatroni_urls = [{urls}]\n')
        router = fd.Router(Path(args.pgrouter_bin), cfg, work)
        router.start(port)

        def dsn_for():
            return f"host=127.0.0.1 port={port} dbname={fd.CLIENT_DB} user=postgres application_name=patroni-bench"

        fd.wait_first_write(dsn_for(), TABLE, 30, "pgrouter")

        t0 = time.monotonic()
        end = t0 + args.duration
        fd._HARD_END["t"] = end + args.failover_timeout + 5
        writers = [fd.Writer(i, dsn_for, end, 0.0) for i in range(args.clients)]
        for w in writers:
            w.start()
        time.sleep(max(0.0, t0 + args.fail_at - time.monotonic()))

        ev = {}
        seen = {}

        def watch():  # when Patroni names another leader, as seen from outside
            while time.monotonic() < end and "patroni_new_leader" not in ev:
                try:
                    leaders = [m for m in pc.members() if m["role"] == "leader" and m["state"] == "running"
                               and m["name"] != old["name"]]
                except Exception:
                    leaders = []
                if leaders:
                    ev["patroni_new_leader"] = time.monotonic()
                    seen["leader"] = leaders[0]
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        ev["change"] = time.monotonic()
        watcher.start()
        if args.mode == "switchover":
            candidate = next(m for m in pc.members() if m["role"] == "replica")
            pc.switchover(candidate["name"], timeout=60)
        else:
            pc.crash(old["name"])
        watcher.join(args.duration + 10)
        for w in writers:
            w.join(max(0.0, fd._HARD_END["t"] - time.monotonic()) + 5)
        new = seen.get("leader")
        if new is None:
            raise RuntimeError("Patroni named no new leader during the run")
        c = psycopg2.connect(host=new["host"], port=new["port"], user="postgres", dbname=fd.DBNAME)
        with c.cursor() as cur:
            cur.execute(f"SELECT writer, seq FROM {TABLE} WHERE writer >= 0")
            on_new = {(w, s) for w, s in cur.fetchall()}
        c.close()

        commits = sorted((t, w.wid, s, p, r) for w in writers for (t, s, p, r) in w.commits)
        errors = sorted((t, k) for w in writers for (t, k, m, ph) in w.errors)
        before = [x for x in commits if x[3] == old["port"]]
        after = [x for x in commits if x[3] == new["port"]]
        gap = after[0][0] - before[-1][0] if before and after else None
        from_patroni = after[0][0] - ev["patroni_new_leader"] if after else None
        by_key = {}
        for _, k in errors:
            by_key[k] = by_key.get(k, 0) + 1
        missing = [x for x in commits if (x[1], x[2]) not in on_new]
        rel = lambda t: f"{t - t0:.2f}"
        print(f"### Patroni {args.mode} under {args.clients} writers through pgrouter (patroni discovery)\n")
        print("| measure | value |\n|---|---:|")
        print(f"| leader change started / Patroni names {new['name']} (s) | {rel(ev['change'])} / "
              f"{rel(ev['patroni_new_leader'])} |")
        print(f"| commits (old leader + new leader) | {len(commits)} ({len(before)} + {len(after)}) |")
        print(f"| write gap: last commit on old -> first on new | {gap:.3f} s |" if gap is not None else
              "| write gap | n/a |")
        print(f"| first commit on new leader after Patroni named it | {from_patroni:.3f} s |"
              if from_patroni is not None else "| first commit after Patroni named it | n/a |")
        print(f"| client errors | {len(errors)} {dict(by_key) if by_key else ''} |")
        print(f"| acknowledged commits missing on the new leader | {len(missing)} |")
        print(f"| commits that ran on a node in recovery | {sum(1 for x in commits if x[4])} |")
        print(f"| commits on another node | {sum(1 for x in commits if x[3] not in (old['port'], new['port']))} |")
        return 0 if after else 1
    finally:
        fd._HARD_END["t"] = time.monotonic() + 10
        if router is not None:
            router.stop()
        if pc is not None:
            pc.cleanup()
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
