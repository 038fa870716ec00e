"""Integration-test helpers: free ports, a throwaway PostgreSQL 15, and the pooler
under test (pgrouter, or PgBouncer when POOLER=pgbouncer, to validate the tests).

Everything here is bounded in time; a missing dependency raises Missing, which
the fixtures turn into a test failure with a message (never a skip).
"""

import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions

import pgwire

REPO = Path(__file__).resolve().parents[2]
PG_BINDIR = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))
POOLER = os.environ.get("POOLER", "pgrouter").strip().lower() or "pgrouter"
PGROUTER_BIN = Path(os.environ.get("PGROUTER_BIN", str(REPO / "build" / "pgrouter")))
PGBOUNCER_BIN = Path(os.environ.get("PGBOUNCER_BIN", "/usr/sbin/pgbouncer"))
PG_OS_USER = "postgres"
HOST = "127.0.0.1"

# Roles created in the test server; the password is also what the pooler's userlist holds.
# Each one is authenticated by PostgreSQL with a different method (see PgCluster.HBA).
PASSWORDS = {
    "app_md5": "md5-secret",      # stored as md5, server hba: md5
    "app_scram": "scram-secret",  # stored as SCRAM, server hba: scram-sha-256
    "app_plain": "plain-secret",  # server hba: password (cleartext)
    "app_trust": "trust-secret",  # server hba: trust
    "pgbouncer": "admin-secret",  # the pooler's admin console user (not a server role)
}
DEFAULT_USER = "app_md5"
DEFAULT_DB = "testdb"


class Missing(Exception):
    """A dependency (binary, package, OS user) is absent: the test must fail, not skip."""


def is_pgbouncer():
    return POOLER == "pgbouncer"


def sqlstate(spec, pgbouncer="08P01"):
    """The SQLSTATE a pooler-made error must carry: SPEC's named code for pgrouter;
    PgBouncer 1.18 sends 08P01 for nearly all of its own errors."""
    return pgbouncer if is_pgbouncer() else spec


# --------------------------------------------------------------------------- ports

_port_lock = threading.Lock()
_ports_given = set()


def free_port(lo=20000, hi=30000):
    """A TCP port below the ephemeral range, free on 127.0.0.1 right now.

    Binding port 0 is no good: the kernel hands out ephemeral ports (>= 32768),
    which clients may grab as their source port at any time."""
    with _port_lock:
        span = hi - lo
        start = random.randrange(span)
        for i in range(span):
            port = lo + (start + i) % span
            if port in _ports_given:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            finally:
                s.close()
            _ports_given.add(port)
            return port
    raise RuntimeError(f"no free TCP port in {lo}-{hi}")


def wait_until(cond, timeout, what, interval=0.1):
    """Polls cond() until it is true; fails the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    assert cond(), f"not within {timeout}s: {what}"


def wait_port(host, port, timeout, proc=None):
    """Wait until host:port accepts TCP connections; False if proc exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- processes

def running_as_root():
    return os.geteuid() == 0


def pg_user_kwargs():
    """Popen kwargs that run a child as the postgres OS user when we are root."""
    if not running_as_root():
        return {}
    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        raise Missing(f"OS user {PG_OS_USER!r} does not exist (install postgresql-15)") from None
    return {"user": PG_OS_USER, "group": PG_OS_USER, "extra_groups": []}


def chown_pg(path):
    if running_as_root():
        shutil.chown(path, PG_OS_USER, PG_OS_USER)


def make_tmpdir(prefix, for_postgres=False):
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    if for_postgres:
        chown_pg(d)
    return d


def run(cmd, timeout=60, check=True, as_postgres=False, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    if as_postgres:
        kw.update(pg_user_kwargs())
    p = subprocess.run([str(c) for c in cmd], timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def stop_process(proc, sig=signal.SIGTERM, grace=10.0):
    """Signal, wait up to grace seconds, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def require_binary(path, hint):
    p = Path(path)
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise Missing(f"{p} not found or not executable: {hint}")
    return p


def client_tool(name):
    """psql / pgbench: the PostgreSQL 15 ones, else whatever is on PATH."""
    p = PG_BINDIR / name
    if p.is_file():
        return str(p)
    w = shutil.which(name)
    if not w:
        raise Missing(f"{name} not found (install postgresql-client-15)")
    return w


# --------------------------------------------------------------------------- psycopg2

QUERY_WAIT_LIMIT = float(os.environ.get("PGROUTER_IT_QUERY_LIMIT", "60"))
CONNECT_WAIT_LIMIT = float(os.environ.get("PGROUTER_IT_CONNECT_LIMIT", "15"))


def _bounded_wait(conn):
    """psycopg2 wait callback: like psycopg2.extras.wait_select, but bounded in time
    (libpq ignores connect_timeout in this asynchronous mode, so the login gets
    CONNECT_WAIT_LIMIT and each query QUERY_WAIT_LIMIT seconds), and signals (the
    per-test alarm) are handled between selects: a hung pooler cannot hang the run."""
    import select
    connecting = conn.status == psycopg2.extensions.STATUS_SETUP
    limit = CONNECT_WAIT_LIMIT if connecting else QUERY_WAIT_LIMIT
    deadline = time.monotonic() + limit
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            what = "login" if connecting else "answer"
            raise psycopg2.OperationalError(f"timeout expired: no {what} from the server within {limit:.0f}s "
                                            f"(test harness limit)")
        step = min(left, 0.5)
        if state == psycopg2.extensions.POLL_READ:
            select.select([conn.fileno()], [], [], step)
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [conn.fileno()], [], step)
        else:
            raise psycopg2.OperationalError(f"bad poll state {state}")


def install_bounded_wait():
    psycopg2.extensions.set_wait_callback(_bounded_wait)


# --------------------------------------------------------------------------- PostgreSQL

class PgCluster:
    """One PostgreSQL 15 instance in a temp dir, run as the postgres OS user."""

    HBA = [
        "local all all trust",
        f"host all postgres {HOST}/32 trust",
        f"host all app_trust {HOST}/32 trust",
        f"host all app_plain {HOST}/32 password",
        f"host all app_md5 {HOST}/32 md5",
        f"host all app_scram {HOST}/32 scram-sha-256",
        f"host all all {HOST}/32 scram-sha-256",
    ]

    def __init__(self, base=None, port=None, max_connections=200, extra_conf=None, hba=None):
        require_binary(PG_BINDIR / "initdb", "install postgresql-15")
        require_binary(PG_BINDIR / "pg_ctl", "install postgresql-15")
        self.dir = Path(base) if base else make_tmpdir("pgrouter-it-pg-", for_postgres=True)
        self.data = self.dir / "data"
        self.logfile = self.dir / "postgresql.log"
        self.port = port or free_port()
        self.host = HOST
        self.max_connections = max_connections
        self.extra_conf = extra_conf or {}
        self.hba = list(hba or self.HBA)
        self.started = False

    def init(self):
        run([PG_BINDIR / "initdb", "-D", self.data, "-U", "postgres", "-E", "UTF8", "--no-locale",
             "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
            timeout=120, as_postgres=True, cwd=self.dir)
        conf = {
            "listen_addresses": f"'{HOST}'",
            "port": self.port,
            "unix_socket_directories": f"'{self.dir}'",
            "max_connections": self.max_connections,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "'32MB'",
            "max_wal_size": "'256MB'",
            "log_line_prefix": "'%m [%p] %u@%d '",
            "log_connections": "off",
        }
        conf.update(self.extra_conf)
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# pgrouter integration tests\n")
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        self.write_hba(self.hba)

    def write_hba(self, lines):
        self.hba = list(lines)
        path = self.data / "pg_hba.conf"
        path.write_text("\n".join(self.hba) + "\n")
        chown_pg(path)

    def reload(self):
        self.sql("SELECT pg_reload_conf()")
        time.sleep(0.3)

    def start(self):
        p = run([PG_BINDIR / "pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "-t", "60", "start"],
                timeout=90, check=False, as_postgres=True, cwd=self.dir)
        if p.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(f"PostgreSQL failed to start:\n{p.stdout}\n{p.stderr}\n{log[-4000:]}")
        self.started = True

    def stop(self, mode="fast"):
        if not self.started:
            return
        p = run([PG_BINDIR / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop"],
                timeout=60, check=False, as_postgres=True, cwd=self.dir)
        if p.returncode != 0 and mode != "immediate":
            run([PG_BINDIR / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t", "30", "stop"],
                timeout=60, check=False, as_postgres=True, cwd=self.dir)
        self.started = False

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # superuser access over the unix socket (trust)
    def connect(self, dbname="postgres", user="postgres", autocommit=True):
        c = psycopg2.connect(host=str(self.dir), port=self.port, dbname=dbname, user=user, connect_timeout=10)
        c.autocommit = autocommit
        return c

    def sql(self, query, args=None, dbname="postgres"):
        c = self.connect(dbname)
        try:
            with c.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall() if cur.description else None
        finally:
            c.close()

    def setup_roles(self):
        c = self.connect()
        try:
            cur = c.cursor()
            cur.execute("SET password_encryption = 'md5'")
            cur.execute("CREATE ROLE app_md5 LOGIN PASSWORD %s", (PASSWORDS["app_md5"],))
            cur.execute("SET password_encryption = 'scram-sha-256'")
            for role in ("app_scram", "app_plain", "app_trust"):
                cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (PASSWORDS[role],))
            for db in ("testdb", "benchdb"):
                cur.execute(f"CREATE DATABASE {db}")
                cur.execute(f"GRANT ALL ON DATABASE {db} TO PUBLIC")
        finally:
            c.close()
        for db in ("testdb", "benchdb"):
            self.sql("GRANT ALL ON SCHEMA public TO PUBLIC", dbname=db)

    def rolpassword(self, role):
        return self.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))[0][0]

    def backends(self, user, dbname=None):
        """Client backends of user (optionally on dbname), excluding the observer itself."""
        q = ("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND backend_type = 'client backend' "
             "AND pid <> pg_backend_pid()")
        args = [user]
        if dbname:
            q += " AND datname = %s"
            args.append(dbname)
        return self.sql(q, args)[0][0]

    def backend_pids(self, user):
        rows = self.sql("SELECT pid FROM pg_stat_activity WHERE usename = %s AND backend_type = 'client backend' "
                        "AND pid <> pg_backend_pid()", (user,))
        return sorted(r[0] for r in rows)

    def log(self):
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""


# --------------------------------------------------------------------------- pooler config

# pgrouter keys PgBouncer 1.18 does not know: left out of a pgbouncer.ini.
PGBOUNCER_UNSUPPORTED = {"workers", "max_prepared_statements", "log_format", "metrics_listen", "shutdown_timeout"}


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def toml_key(k):
    """A bare key when it can be one, else quoted ("*")."""
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else toml_value(k)


def render_toml(settings, databases, users, tls, clusters=None):
    out = ["[pgrouter]"]
    out += [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    if tls:
        out += ["", "[tls]"] + [f"{k} = {toml_value(v)}" for k, v in tls.items()]
    for name, c in (clusters or {}).items():
        out += ["", f"[clusters.{name}]"]
        out += [f"{k} = {toml_value(v)}" for k, v in c.items() if k != "discovery"]
        if c.get("discovery"):
            out += ["", f"[clusters.{name}.discovery]"]
            out += [f"{k} = {toml_value(v)}" for k, v in c["discovery"].items()]
    for name, d in databases.items():
        out += ["", f"[databases.{toml_key(name)}]"] + [f"{k} = {toml_value(v)}" for k, v in d.items()]
    for name, u in users.items():
        out += ["", f"[users.{toml_key(name)}]"] + [f"{k} = {toml_value(v)}" for k, v in u.items()]
    return "\n".join(out) + "\n"


def ini_value(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def connstr_value(v):
    s = ini_value(v)
    if s == "" or any(c in s for c in " '\\"):
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return s


def render_ini(settings, databases, users, tls):
    out = ["[databases]"]
    for name, d in databases.items():
        out.append(f"{name} = " + " ".join(f"{k}={connstr_value(v)}" for k, v in d.items()))
    if users:
        out += ["", "[users]"]
        for name, u in users.items():
            out.append(f"{name} = " + " ".join(f"{k}={connstr_value(v)}" for k, v in u.items()))
    out += ["", "[pgbouncer]"]
    for k, v in list(settings.items()) + list((tls or {}).items()):
        if k in PGBOUNCER_UNSUPPORTED:
            continue
        if k == "tcp_user_timeout":  # seconds in the tests (and pgrouter.toml); milliseconds in pgbouncer.ini
            v = int(round(v * 1000))
        out.append(f"{k} = {ini_value(v)}")
    return "\n".join(out) + "\n"


def render_userlist(entries):
    return "".join(f'"{u}" "{p}"\n' for u, p in entries.items())


# --------------------------------------------------------------------------- pooler

class StartError(Exception):
    pass


class Pooler:
    """A running pooler (pgrouter or PgBouncer) and the client helpers that reach it."""

    def __init__(self, kind, pg, settings, databases, users, tls, userlist, hba, fmt, workdir):
        self.kind = kind
        self.pg = pg
        self.dir = workdir
        self.host = HOST
        self.port = settings["listen_port"]
        self.settings = settings
        self.databases = databases
        self.users = users
        self.userlist = userlist
        self.fmt = fmt
        self.log_path = workdir / "pooler.log"
        self.proc = None
        self._log_fh = None
        self.config_path = None
        self.tls = dict(tls or {})
        self.clusters = {}  # [clusters.X] sections (pgrouter TOML only)
        self.env = None  # the pooler's environment (None: the test's own)

    # -- lifecycle

    def write_config(self, hba):
        (self.dir / "userlist.txt").write_text(render_userlist(self.userlist))
        if hba is not None:
            (self.dir / "hba.conf").write_text("\n".join(hba) + "\n")
        if self.kind == "pgbouncer" or self.fmt == "ini":
            self.config_path = self.dir / "pgbouncer.ini"
            self.config_path.write_text(render_ini(self.settings, self.databases, self.users, self.tls))
        else:
            self.config_path = self.dir / "pgrouter.toml"
            self.config_path.write_text(render_toml(self.settings, self.databases, self.users, self.tls,
                                                    self.clusters))
        if self.kind == "pgbouncer":  # it runs as the postgres OS user
            for f in self.dir.iterdir():
                chown_pg(f)

    def command(self):
        if self.kind == "pgbouncer":
            return [str(require_binary(PGBOUNCER_BIN, "install the pgbouncer package")), str(self.config_path)]
        return [str(require_binary(PGROUTER_BIN, "build it first: cmake --build build (or set PGROUTER_BIN)")),
                str(self.config_path)]

    def start(self, timeout=15.0):
        cmd = self.command()
        kw = pg_user_kwargs() if self.kind == "pgbouncer" else {}
        self._log_fh = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT,
                                     cwd=self.dir, start_new_session=True, env=self.env, **kw)
        if not wait_port(self.host, self.port, timeout, self.proc):
            code = self.proc.poll()
            stop_process(self.proc, signal.SIGKILL, 5)
            what = f"exited with code {code}" if code is not None else f"did not accept TCP connections within {timeout:.0f}s"
            raise StartError(f"{self.kind} ({' '.join(cmd)}) {what}\n--- config {self.config_path}:\n"
                             f"{self.config_path.read_text()}\n--- log:\n{self.log()[-6000:]}")
        return self

    def stop(self, sig=signal.SIGTERM, grace=10.0):
        code = None
        if self.proc is not None:
            code = stop_process(self.proc, sig, grace)
        if self._log_fh:
            self._log_fh.close()
            self._log_fh = None
        return code

    def signal(self, sig):
        self.proc.send_signal(sig)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- clients

    def password(self, user):
        return PASSWORDS.get(user, "")

    def dsn(self, user=DEFAULT_USER, dbname=DEFAULT_DB, password=None, **kw):
        pw = self.password(user) if password is None else password
        parts = {"host": self.host, "port": self.port, "dbname": dbname, "user": user, "connect_timeout": 10}
        if pw:
            parts["password"] = pw
        parts.update(kw)
        return " ".join(f"{k}={connstr_value(v)}" for k, v in parts.items())

    def connect(self, user=DEFAULT_USER, dbname=DEFAULT_DB, password=None, autocommit=True, **kw):
        c = psycopg2.connect(self.dsn(user, dbname, password, **kw))
        c.autocommit = autocommit
        return c

    def wire(self, user=DEFAULT_USER, dbname=DEFAULT_DB, password=None, params=None, timeout=10.0):
        """A raw-protocol client, logged in."""
        pw = self.password(user) if password is None else password
        return pgwire.connect(self.host, self.port, user, dbname, pw, params, timeout)

    def raw(self, timeout=10.0):
        """A raw-protocol client, connected but not logged in."""
        return pgwire.WireClient(self.host, self.port, timeout)

    def client_env(self, user=DEFAULT_USER, password=None):
        env = dict(os.environ)
        env["PGPASSWORD"] = self.password(user) if password is None else password
        env["PGCONNECT_TIMEOUT"] = "10"
        for k in ("PGSERVICE", "PGOPTIONS", "PGSSLMODE", "PGTZ", "PGCLIENTENCODING", "PGAPPNAME"):
            env.pop(k, None)
        return env

    def psql(self, *args, user=DEFAULT_USER, dbname=DEFAULT_DB, input=None, timeout=60, password=None):
        cmd = [client_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port),
               "-U", user, "-d", dbname] + list(args)
        return subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, env=self.client_env(user, password))

    def pgbench(self, *args, user=DEFAULT_USER, dbname=DEFAULT_DB, timeout=120):
        cmd = [client_tool("pgbench"), "-h", self.host, "-p", str(self.port), "-U", user] + list(args) + [dbname]
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, env=self.client_env(user))

    def pool_row(self, database=DEFAULT_DB, user=DEFAULT_USER):
        """That pool's row of SHOW POOLS as {column: value}; None when it has none."""
        c = self.connect(user="pgbouncer", dbname="pgbouncer")
        try:
            with c.cursor() as cur:
                cur.execute("SHOW POOLS")
                names = [d[0] for d in cur.description]
                for row in cur.fetchall():
                    r = dict(zip(names, row))
                    if r["database"] == database and r["user"] == user:
                        return r
        finally:
            c.close()
        return None

    def admin(self, command):
        c = self.connect(user="pgbouncer", dbname="pgbouncer")
        try:
            with c.cursor() as cur:
                cur.execute(command)
                return cur.fetchall() if cur.description else None
        finally:
            c.close()


def default_settings(workdir, port):
    return {
        "listen_addr": HOST,
        "listen_port": port,
        "unix_socket_dir": str(workdir),
        "auth_type": "md5",
        "auth_file": str(workdir / "userlist.txt"),
        "admin_users": ["pgbouncer"],
        "pool_mode": "transaction",
        "default_pool_size": 5,
        "workers": 2,
    }


def build_pooler(pg, overrides=None, databases=None, users=None, tls=None, userlist=None, hba=None,
                 fmt="toml", kind=None, clusters=None):
    """Write the config files for a pooler (not started yet).

    overrides: keys of [pgrouter]; databases: name -> dict merged over
    {host, port, dbname=name} (a value of None removes a key); users: [users]
    sections; userlist: user -> secret (default: PASSWORDS); hba: lines of the
    auth_hba_file (sets auth_hba_file); fmt: "toml" or "ini" (pgrouter reading a
    pgbouncer.ini). kind defaults to $POOLER.
    """
    kind = kind or POOLER
    if kind not in ("pgrouter", "pgbouncer"):
        raise Missing(f"POOLER must be pgrouter or pgbouncer, not {kind!r}")
    workdir = make_tmpdir("pgrouter-it-pooler-", for_postgres=(kind == "pgbouncer"))
    settings = default_settings(workdir, free_port())
    if hba is not None:
        settings["auth_hba_file"] = str(workdir / "hba.conf")
    settings.update(overrides or {})
    dbs = {}
    for name, d in (databases or {DEFAULT_DB: {}}).items():
        entry = {"host": pg.host, "port": pg.port, "dbname": name}
        if d and "cluster" in d:  # a cluster database names no single server
            entry = {"dbname": name}
        entry.update(d or {})
        dbs[name] = {k: v for k, v in entry.items() if v is not None}
    ul = dict(PASSWORDS) if userlist is None else dict(userlist)
    p = Pooler(kind, pg, settings, dbs, dict(users or {}), tls, ul, hba, fmt, workdir)
    p.clusters = dict(clusters or {})
    p.write_config(hba)
    return p
