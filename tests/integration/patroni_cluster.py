"""A real Patroni cluster (Debian's `patroni`, `etcd-server` as its DCS) for the
discovery tests: one etcd member and N Patroni nodes, each managing a PostgreSQL 15
on loopback ports.

    pc = PatroniCluster(n=3).start()   # waits for a leader and N-1 streaming replicas
    pc.leader()                        # {"name", "host", "port", "role", "state", ...}
    pc.switchover("node1")             # POST /switchover, waits until node1 leads
    pc.cleanup()

Processes run as the postgres OS user when we are root (PostgreSQL refuses root).
Only the processes started here are stopped, by their PIDs: each Patroni gets SIGTERM
(it stops its PostgreSQL first), etcd last; a PostgreSQL left behind by a Patroni
that had to be killed is stopped through its own postmaster.pid.
"""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import helpers
from helpers import HOST, PG_BINDIR

SCOPE = "pgr-it"


class PatroniMissing(helpers.Missing):
    pass


def _binary(name):
    path = f"/usr/bin/{name}"
    if not os.access(path, os.X_OK):
        raise PatroniMissing(f"{path} (install patroni and etcd-server)")
    return path


class PatroniCluster:
    def __init__(self, n=3):
        self.n = n
        self.base = helpers.make_tmpdir("pgrouter-it-patroni-", for_postgres=True)
        self.etcd_port = helpers.free_port()
        self.etcd_peer_port = helpers.free_port()
        self.nodes = []
        for i in range(n):
            self.nodes.append({"name": f"node{i}", "api_port": helpers.free_port(), "pg_port": helpers.free_port()})
        self.etcd = None
        self.procs = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout=90):
        _binary("patroni")
        etcd = _binary("etcd")
        etcd_dir = self.base / "etcd"
        self.etcd = subprocess.Popen(
            [etcd, "--name", "it", "--data-dir", str(etcd_dir),
             "--listen-client-urls", f"http://{HOST}:{self.etcd_port}",
             "--advertise-client-urls", f"http://{HOST}:{self.etcd_port}",
             "--listen-peer-urls", f"http://{HOST}:{self.etcd_peer_port}",
             "--initial-advertise-peer-urls", f"http://{HOST}:{self.etcd_peer_port}",
             "--initial-cluster", f"it=http://{HOST}:{self.etcd_peer_port}",
             "--log-level", "warn"],
            stdout=open(self.base / "etcd.log", "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not helpers.wait_port(HOST, self.etcd_port, 20, self.etcd):
            raise RuntimeError(f"etcd did not start: {(self.base / 'etcd.log').read_text()[-2000:]}")
        # The first node bootstraps (initdb); the others clone it once it leads.
        self._start_node(self.nodes[0])
        self.wait(lambda m: any(x["role"] == "leader" and x["state"] == "running" for x in m), timeout,
                  "a leader")
        for node in self.nodes[1:]:
            self._start_node(node)
        self.wait(lambda m: sum(x["role"] == "replica" and x["state"] in ("streaming", "running")
                                for x in m) == self.n - 1, timeout, f"{self.n - 1} streaming replicas")
        return self

    def _start_node(self, node):
        d = self.base / node["name"]
        d.mkdir()
        helpers.chown_pg(d)
        conf = {
            "scope": SCOPE,
            "name": node["name"],
            "log": {"level": "WARNING"},
            "restapi": {"listen": f"{HOST}:{node['api_port']}", "connect_address": f"{HOST}:{node['api_port']}"},
            "etcd3": {"hosts": [f"{HOST}:{self.etcd_port}"]},
            "bootstrap": {
                "dcs": {
                    "ttl": 10, "loop_wait": 1, "retry_timeout": 3,
                    "maximum_lag_on_failover": 16 * 1024 * 1024,
                    "postgresql": {"use_pg_rewind": False, "use_slots": True,
                                   "parameters": {"max_connections": 100, "wal_level": "replica",
                                                  "hot_standby": "on", "max_wal_senders": 10,
                                                  "max_replication_slots": 10, "fsync": "off",
                                                  "synchronous_commit": "off"}},
                },
                "initdb": [{"encoding": "UTF8"}, "no-locale"],
                "pg_hba": ["local all all trust", f"host all all {HOST}/32 trust",
                           f"host replication all {HOST}/32 trust"],
            },
            "postgresql": {
                "listen": f"{HOST}:{node['pg_port']}",
                "connect_address": f"{HOST}:{node['pg_port']}",
                "data_dir": str(d / "data"),
                "bin_dir": str(PG_BINDIR),
                "pgpass": str(d / "pgpass"),
                "authentication": {"superuser": {"username": "postgres", "password": "postgres"},
                                   "replication": {"username": "replicator", "password": "replicator"}},
                "parameters": {"unix_socket_directories": str(d)},
                "basebackup": [{"checkpoint": "fast"}],
            },
        }
        path = d / "patroni.yml"
        path.write_text(json.dumps(conf))  # JSON is YAML
        helpers.chown_pg(path)
        log = open(d / "patroni.log", "w")
        helpers.chown_pg(d / "patroni.log")
        self.procs[node["name"]] = subprocess.Popen(
            [_binary("patroni"), str(path)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(d), **helpers.pg_user_kwargs())

    def cleanup(self):
        for name, proc in self.procs.items():
            helpers.stop_process(proc, signal.SIGTERM, grace=30)
            self._stop_orphan_postgres(self.base / name / "data")
        if self.etcd is not None:
            helpers.stop_process(self.etcd, signal.SIGTERM, grace=10)
        shutil.rmtree(self.base, ignore_errors=True)

    def crash(self, name):
        """The node dies: its Patroni is killed (SIGKILL, so it cannot hand over) and its
        PostgreSQL stopped at once (SIGQUIT, immediate shutdown). The others elect a
        new leader when the leader key expires (ttl)."""
        self.procs[name].kill()
        self.procs[name].wait(timeout=10)
        self._stop_orphan_postgres(self.base / name / "data")

    def _stop_orphan_postgres(self, data):
        pidfile = data / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:
            pass

    def log(self, name):
        try:
            return (self.base / name / "patroni.log").read_text()[-3000:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ API

    def url(self, node):
        return f"http://{HOST}:{node['api_port']}"

    def request(self, node, path, method="GET", body=None, timeout=5):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url(node) + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def members(self):
        """GET /cluster from the first node that answers."""
        for node in self.nodes:
            try:
                status, text = self.request(node, "/cluster", timeout=2)
            except OSError:
                continue
            if status == 200:
                return json.loads(text).get("members", [])
        return []

    def wait(self, cond, timeout, what):
        end = time.monotonic() + timeout
        members = []
        while time.monotonic() < end:
            members = self.members()
            if members and cond(members):
                return members
            time.sleep(0.3)
        logs = "\n".join(f"--- {n['name']}\n{self.log(n['name'])}" for n in self.nodes)
        raise RuntimeError(f"Patroni: no {what} within {timeout}s; members {members}\n{logs}")

    def leader(self):
        return next(m for m in self.members() if m["role"] == "leader")

    def node(self, name):
        return next(n for n in self.nodes if n["name"] == name)

    def switchover(self, candidate, timeout=60):
        leader = self.leader()
        status, text = self.request(self.node(leader["name"]), "/switchover", "POST",
                                    {"leader": leader["name"], "candidate": candidate}, timeout=30)
        if status != 200:
            raise RuntimeError(f"switchover to {candidate}: HTTP {status}: {text}")
        return self.wait(lambda m: any(x["name"] == candidate and x["role"] == "leader" and x["state"] == "running"
                                       for x in m), timeout, f"{candidate} leading")
