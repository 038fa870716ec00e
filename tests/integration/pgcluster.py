"""A real PostgreSQL 15 streaming-replication cluster for the failover tests.

    c = PgCluster(n_replicas=2)        # primary + 2 streaming replicas, started
    p, r1, r2 = c.nodes                # index 0 = the initial primary
    c.sql(p, "CREATE TABLE t (x int)")
    c.wait_replicated()
    c.stop(p, mode="immediate")
    c.promote(r1)                      # pg_ctl promote -w, waits until writable
    c.follow(r2, r1)                   # r2 now streams from r1
    c.rejoin_as_replica(p, r1)         # pg_rewind (or a fresh pg_basebackup), started
    c.cleanup()

Every node is a helpers.PgCluster (one PostgreSQL instance, run as the postgres OS
user, superuser access over its unix socket) with the roles and databases of
helpers.PgCluster.setup_roles (app_md5, app_scram, ...; testdb, benchdb), the same
on every node. A node's `host`, `port` and `addr` ("127.0.0.1:port") are what a
pooler config names.

Speed: initdb + setup_roles run once per process (a stopped template data
directory); a cluster's primary is a copy of it, its replicas are made with
`pg_basebackup -c fast -R -X stream` in parallel. A 3-node cluster is up in about
a second or two.

Only the processes started here are ever stopped: each node by `pg_ctl -D <its
data dir> stop`, and, if that fails, its own postmaster pid (postmaster.pid) by
SIGKILL.
"""

import atexit
import os
import shutil
import signal
import threading
import time

import psycopg2

import helpers
from helpers import HOST, PG_BINDIR, run

# Settings common to every node (postgresql.conf). Per-node ones (port, socket
# directory, primary_conninfo) live in postgresql.auto.conf, rewritten after every
# copy (pg_basebackup and pg_rewind copy the configuration files of their source).
CLUSTER_CONF = {
    "wal_level": "replica",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "wal_log_hints": "on",            # pg_rewind
    "full_page_writes": "on",         # pg_rewind refuses a source without it
    "wal_keep_size": "'256MB'",       # replicas and pg_rewind find the WAL they need
    "min_wal_size": "'8MB'",
    "wal_receiver_status_interval": "1s",
    "wal_retrieve_retry_interval": "'200ms'",
    "shared_buffers": "'16MB'",
    "max_connections": 100,
    "checkpoint_timeout": "'30min'",
    "log_min_messages": "warning",
    "log_checkpoints": "off",
    "max_standby_streaming_delay": "'5s'",
}

REPLICATION_HBA = [
    "local replication all trust",
    f"host replication all {HOST}/32 trust",
]

NODE_KEYS = ("port", "unix_socket_directories", "primary_conninfo", "primary_slot_name")

def lsn_to_int(lsn):
    """'16/B374D848' -> bytes (None stays None)."""
    if lsn is None:
        return None
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def int_to_lsn(n):
    return f"{n >> 32:X}/{n & 0xFFFFFFFF:X}"


class ClusterError(RuntimeError):
    pass


# --------------------------------------------------------------------------- template

class _TemplateNode(helpers.PgCluster):
    """helpers.PgCluster with 1 MB WAL segments (pg_resetwal after initdb): pg_wal is a
    few MB instead of 32, which makes copies and base backups quicker."""

    def init(self):
        super().init()
        run([PG_BINDIR / "pg_resetwal", "--wal-segsize=1", "-D", self.data], timeout=60, as_postgres=True,
            cwd=self.dir)


_template_lock = threading.Lock()
_template = {"dir": None}


def _template_dir():
    """A stopped, initialised data directory with the test roles and databases (made once)."""
    with _template_lock:
        if _template["dir"] is not None:
            return _template["dir"]
        node = _TemplateNode(max_connections=CLUSTER_CONF["max_connections"], extra_conf=dict(CLUSTER_CONF),
                             hba=REPLICATION_HBA + list(helpers.PgCluster.HBA))
        try:
            node.init()
            node.started = True   # stop() must try even if start() failed half-way
            node.start()
            node.setup_roles()
            node.sql("CHECKPOINT")
            node.stop("fast")
        except BaseException:
            node.stop("immediate")
            shutil.rmtree(node.dir, ignore_errors=True)
            raise
        _template["dir"] = node.dir
        atexit.register(shutil.rmtree, str(node.dir), True)
        return node.dir


# --------------------------------------------------------------------------- nodes

class PgNode(helpers.PgCluster):
    """One member of a PgCluster. `index` is its position in cluster.nodes."""

    def __init__(self, index, name):
        super().__init__(max_connections=CLUSTER_CONF["max_connections"], extra_conf=dict(CLUSTER_CONF),
                         hba=REPLICATION_HBA + list(helpers.PgCluster.HBA))
        self.index = index
        self.name = name
        self.upstream = None      # the node it streams from, when it is a replica
        self.paused = False

    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    @property
    def running(self):
        return self.started

    def __repr__(self):
        return f"<PgNode {self.name} {self.addr}{' up' if self.started else ''}>"

    def conninfo(self, application_name=None):
        s = f"host={self.host} port={self.port} user=postgres dbname=postgres connect_timeout=5"
        if application_name:
            s += f" application_name={application_name}"
        return s

    def write_node_conf(self, upstream=None):
        """Port, socket dir and (for a replica) primary_conninfo + standby.signal."""
        auto = self.data / "postgresql.auto.conf"
        kept = []
        if auto.exists():
            for line in auto.read_text().splitlines():
                key = line.split("=", 1)[0].strip()
                if key not in NODE_KEYS:
                    kept.append(line)
        kept.append(f"port = {self.port}")
        kept.append(f"unix_socket_directories = '{self.dir}'")
        if upstream is not None:
            kept.append(f"primary_conninfo = '{upstream.conninfo(self.name)}'")
        auto.write_text("\n".join(kept) + "\n")
        helpers.chown_pg(auto)
        signal_file = self.data / "standby.signal"
        if upstream is not None:
            signal_file.touch()
            helpers.chown_pg(signal_file)
        else:
            signal_file.unlink(missing_ok=True)
        self.upstream = upstream

    def postmaster_pid(self):
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def live_postmaster(self):
        """The pid of this node's postmaster if it runs: the pid in postmaster.pid, and
        only if that process's working directory is this data directory (the postmaster
        chdirs there; a stale file's pid may belong to anything by now)."""
        pid = self.postmaster_pid()
        if not pid:
            return None
        try:
            if os.path.realpath(os.readlink(f"/proc/{pid}/cwd")) != os.path.realpath(self.data):
                return None
        except OSError:
            return None
        return pid

    def kill(self):
        """Last resort: SIGKILL this node's own postmaster (its children exit on their own)."""
        pid = self.live_postmaster()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while self.live_postmaster() and time.monotonic() < deadline:
                time.sleep(0.05)
        self.started = False

    def connect(self, dbname="postgres", user="postgres", autocommit=True, timeout=5):
        c = psycopg2.connect(host=str(self.dir), port=self.port, dbname=dbname, user=user, connect_timeout=timeout)
        c.autocommit = autocommit
        return c


# --------------------------------------------------------------------------- cluster

class PgCluster:
    """A primary and n_replicas streaming replicas (see the module docstring)."""

    def __init__(self, n_replicas=2, start=True, timeout=60.0):
        """start=False: nothing runs until create(). timeout: default for every wait."""
        helpers.require_binary(PG_BINDIR / "pg_basebackup", "install postgresql-15")
        helpers.require_binary(PG_BINDIR / "pg_rewind", "install postgresql-15")
        self.n_replicas = n_replicas
        self.timeout = timeout
        self.nodes = []
        self.primary = None
        self.startup_seconds = None
        if start:
            self.create()

    # -- creation

    def create(self):
        t0 = time.monotonic()
        template = _template_dir()
        try:
            self.nodes = [PgNode(i, f"node{i}") for i in range(self.n_replicas + 1)]
            primary = self.nodes[0]
            run(["cp", "-a", template / "data", primary.data], timeout=60)
            primary.write_node_conf(None)
            self._pg_start(primary)
            self.primary = primary
            errors = []

            def make_replica(node):
                try:
                    self._basebackup(node, primary)
                    node.write_node_conf(primary)
                    self._pg_start(node)
                except Exception as e:  # reported below
                    errors.append(f"{node.name}: {e}")

            threads = [threading.Thread(target=make_replica, args=(n,), daemon=True) for n in self.nodes[1:]]
            for t in threads:
                t.start()
            for t in threads:
                t.join(self.timeout)
            if errors or any(t.is_alive() for t in threads):
                raise ClusterError("replica setup failed: " + "; ".join(errors or ["timeout"]))
            for n in self.nodes[1:]:
                self.wait_streaming(n, primary)
        except BaseException:
            self.cleanup()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _basebackup(self, node, source):
        if node.data.exists():
            shutil.rmtree(node.data)
        run([PG_BINDIR / "pg_basebackup", "-D", node.data, "-h", source.dir, "-p", source.port, "-U", "postgres",
             "-c", "fast", "-R", "-X", "stream", "--no-sync", "-w"],
            timeout=self.timeout, as_postgres=True, cwd=node.dir)

    def _pg_start(self, node):
        node.started = True   # from here on, stop() must try
        try:
            node.start()
        except Exception:
            node.stop("immediate")
            raise

    # -- queries

    def sql(self, node, query, args=None, dbname="postgres"):
        return node.sql(query, args, dbname=dbname)

    def value(self, node, query, args=None, dbname="postgres"):
        rows = node.sql(query, args, dbname=dbname)
        return rows[0][0] if rows else None

    def in_recovery(self, node):
        return self.value(node, "SELECT pg_is_in_recovery()")

    def replay_lsn(self, node):
        """pg_last_wal_replay_lsn() of a replica, in bytes (None on a primary that never recovered)."""
        return lsn_to_int(self.value(node, "SELECT pg_last_wal_replay_lsn()::text"))

    def current_lsn(self, primary=None):
        """pg_current_wal_lsn() of the primary, in bytes."""
        return lsn_to_int(self.value(primary or self.primary, "SELECT pg_current_wal_lsn()::text"))

    def _flushed_lsn(self, primary):
        """The primary's WAL write position after a synchronous commit: with
        synchronous_commit = off, pg_current_wal_lsn() can lag behind commits still in
        the WAL buffers; a synchronous commit that wrote WAL (a transactional logical
        message; a bare xid would commit asynchronously) flushes everything before it."""
        conn = primary.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET synchronous_commit = local")
                cur.execute("SELECT pg_logical_emit_message(true, 'pgcluster', 'sync')")
                cur.execute("SELECT pg_current_wal_lsn()::text")
                return cur.fetchone()[0]
        finally:
            conn.close()

    @property
    def replicas(self):
        """Running nodes other than the current primary."""
        return [n for n in self.nodes if n is not self.primary and n.started]

    # -- waiting

    def _wait(self, what, cond, timeout):
        deadline = time.monotonic() + (timeout or self.timeout)
        last = None
        while True:
            try:
                if cond():
                    return
            except psycopg2.Error as e:
                last = e
            if time.monotonic() >= deadline:
                raise ClusterError(f"timeout waiting for {what}" + (f" (last error: {last})" if last else ""))
            time.sleep(0.05)

    def wait_streaming(self, node, upstream=None, timeout=None):
        """Until node is in recovery and upstream's pg_stat_replication shows it streaming."""
        upstream = upstream or node.upstream or self.primary
        self._wait(f"{node.name} in recovery", lambda: self.in_recovery(node), timeout)
        self._wait(f"{node.name} streaming from {upstream.name}",
                   lambda: self.value(upstream, "SELECT count(*) FROM pg_stat_replication "
                                                "WHERE application_name = %s AND state = 'streaming'",
                                      (node.name,)) == 1, timeout)

    def wait_replicated(self, timeout=None, nodes=None, include_paused=False):
        """Until every running replica has replayed all the primary wrote before this
        call. Left out unless listed in nodes: paused replicas (unless include_paused)
        and replicas whose upstream is down (not re-pointed with follow())."""
        target = self._flushed_lsn(self.primary)
        todo = nodes if nodes is not None else [
            n for n in self.replicas
            if (include_paused or not n.paused) and n.upstream is not None and n.upstream.started]
        for n in todo:
            self._wait(f"{n.name} to replay up to {target}",
                       lambda n=n: self.value(n, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)),
                       timeout)

    # -- lifecycle of one node

    def stop(self, node=None, mode="fast"):
        """Stop one node (pg_ctl -m fast|smart|immediate). With no node: stop every node."""
        if node is None:
            for n in self.nodes:
                self.stop(n, "immediate")
            return
        node.stop(mode)
        if node.live_postmaster():
            node.kill()
        node.paused = False

    def start(self, node, wait=True):
        """Start a stopped node. A replica: with wait, until it streams from its
        upstream, or, if that is down, until it is in recovery."""
        self._pg_start(node)
        if wait and node.upstream is not None:
            if node.upstream.started:
                self.wait_streaming(node, node.upstream)
            else:
                self._wait(f"{node.name} in recovery", lambda: self.in_recovery(node), None)

    def promote(self, node, timeout=None):
        """pg_ctl promote -w; returns when node is writable. It becomes cluster.primary."""
        if node.paused:
            self.resume_replay(node)
        run([PG_BINDIR / "pg_ctl", "-D", node.data, "-w", "-t", str(int(timeout or self.timeout)), "promote"],
            timeout=(timeout or self.timeout) + 10, as_postgres=True, cwd=node.dir)
        self._wait(f"{node.name} out of recovery", lambda: not self.in_recovery(node), timeout)
        node.upstream = None
        self.primary = node
        return node

    def follow(self, node, upstream, timeout=None):
        """Point a running replica at another upstream (primary_conninfo is reloadable);
        it follows the new timeline (recovery_target_timeline = 'latest')."""
        node.write_node_conf(upstream)
        if node.started:
            node.sql("SELECT pg_reload_conf()")
            self.wait_streaming(node, upstream, timeout)

    def pause_replay(self, node, timeout=10.0):
        node.sql("SELECT pg_wal_replay_pause()")
        node.paused = True
        self._wait(f"{node.name} replay paused",
                   lambda: self.value(node, "SELECT pg_get_wal_replay_pause_state()") == "paused", timeout)

    def resume_replay(self, node):
        node.sql("SELECT pg_wal_replay_resume()")
        node.paused = False

    def rejoin_as_replica(self, node, new_primary=None, method="auto", timeout=None):
        """Turn an old primary (stopped, or stopped here) into a streaming replica of
        new_primary: pg_rewind from new_primary, or, if that fails, a fresh
        pg_basebackup (method "auto"); method "rewind" or "basebackup" forces one.
        Returns the method used ("rewind" or "basebackup"); pg_rewind's output is
        left in node.rewind_output."""
        if method not in ("auto", "rewind", "basebackup"):
            raise ValueError(f"method must be auto, rewind or basebackup, not {method!r}")
        new_primary = new_primary or self.primary
        if node.started:
            self.stop(node, "fast")
        node.paused = False
        node.rewind_output = ""
        used = "basebackup"
        if method != "basebackup":
            # pg_rewind reads the source's timeline from its control file, which a
            # just-promoted server only updates at its next checkpoint.
            new_primary.sql("CHECKPOINT")
            p = run([PG_BINDIR / "pg_rewind", "--target-pgdata", node.data,
                     "--source-server", new_primary.conninfo(), "--no-sync"],
                    timeout=timeout or self.timeout, check=False, as_postgres=True, cwd=node.dir)
            node.rewind_output = p.stdout + p.stderr
            if p.returncode == 0:
                used = "rewind"
            elif method == "rewind":
                raise ClusterError(f"pg_rewind of {node.name} from {new_primary.name} failed:\n{node.rewind_output}")
        if used == "basebackup":
            self._basebackup(node, new_primary)
        node.write_node_conf(new_primary)
        self._pg_start(node)
        self.wait_streaming(node, new_primary, timeout)
        return used

    # -- load

    def write_load(self, node=None, table="pgcluster_load", dbname="postgres"):
        """A background writer inserting one row per transaction into table on node
        (default: the primary) until .stop(); .stop() returns (committed, errors)."""
        return WriteLoad(node or self.primary, table, dbname)

    # -- teardown

    def cleanup(self):
        for n in self.nodes:
            try:
                self.stop(n, "immediate")
            except Exception:
                n.kill()
        if not os.environ.get("PGROUTER_IT_KEEP"):
            for n in self.nodes:
                shutil.rmtree(n.dir, ignore_errors=True)

    def describe(self):
        out = []
        for n in self.nodes:
            role = "down"
            if n.started:
                try:
                    role = "replica" if self.in_recovery(n) else "primary"
                except psycopg2.Error:
                    role = "unreachable"
            out.append(f"{n.name} {n.addr} {role}")
        return ", ".join(out)


class WriteLoad:
    def __init__(self, node, table, dbname):
        self.node = node
        self.table = table
        self.dbname = dbname
        self.committed = 0
        self.errors = []
        self._stop = threading.Event()
        node.sql(f"CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())",
                 dbname=dbname)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self.node.connect(self.dbname)
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {self.table} DEFAULT VALUES")
                self.committed += 1
            except psycopg2.Error as e:
                self.errors.append(e.pgcode or str(e).strip())
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.05)
        if conn is not None:
            conn.close()

    def stop(self):
        self._stop.set()
        self._thread.join(15)
        return self.committed, self.errors
