"""Issue 3: metrics_listen (Prometheus text exposition at /metrics, Boost.Beast),
log_format (text | JSON lines), logfile reopened on SIGHUP, the stats line every
stats_period, and exit code 2 when metrics_listen cannot be bound."""

import http.client
import json
import math
import re
import socket
import struct
import subprocess
import threading
import time

import pytest

import helpers

pytestmark = pytest.mark.pgrouter_only("metrics_listen, log_format and the JSON log are pgrouter's")

# Prometheus text format 0.0.4: `name{label="value",...} value [timestamp]`.
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)"
SAMPLE_RE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?,?\}})? ({VALUE})(?: -?\d+)?$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
HELP_RE = re.compile(rf"^# HELP ({NAME}) .*$")
TYPE_RE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")


def unescape(v):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


class Metrics:
    """A parsed scrape: samples as (name, labels dict, float), and the # TYPE of each family."""

    def __init__(self, text):
        self.text = text
        self.samples = []
        self.types = {}
        self.helps = set()
        for n, line in enumerate(text.split("\n"), 1):
            if line == "":
                continue
            if line.startswith("#"):
                m = TYPE_RE.match(line)
                if m:
                    assert m.group(1) not in self.types, f"line {n}: second TYPE for {m.group(1)}"
                    self.types[m.group(1)] = m.group(2)
                    continue
                m = HELP_RE.match(line)
                assert m, f"line {n}: a comment that is neither HELP nor TYPE: {line!r}"
                self.helps.add(m.group(1))
                continue
            m = SAMPLE_RE.match(line)
            assert m, f"line {n} does not match the exposition grammar: {line!r}"
            labels = {k: unescape(v) for k, v in LABEL_RE.findall(m.group(2) or "")}
            self.samples.append((m.group(1), labels, float(m.group(3))))
        assert text.endswith("\n"), "the exposition must end with a newline"

    def family_of(self, name):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and self.types.get(name[: -len(suffix)]) == "histogram":
                return name[: -len(suffix)]
        return name

    def get(self, name, **labels):
        """The sum of the samples of `name` whose labels include `labels`."""
        found = [v for n, l, v in self.samples if n == name and all(l.get(k) == x for k, x in labels.items())]
        assert found, f"no sample {name}{labels} in:\n{self.text}"
        return sum(found)

    def check_well_formed(self):
        for name, labels, value in self.samples:
            fam = self.family_of(name)
            assert fam in self.types, f"{name}: no # TYPE line for {fam}"
            assert fam in self.helps, f"{name}: no # HELP line for {fam}"
            if self.types[fam] == "counter":
                assert name.endswith("_total"), f"counter {name} should end in _total"
                assert value >= 0, f"{name}{labels} = {value}"
        for fam, kind in self.types.items():
            if kind == "histogram":
                self.check_histogram(fam)

    def check_histogram(self, fam):
        series = {}
        for name, labels, value in self.samples:
            if name == fam + "_bucket":
                key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                series.setdefault(key, {"buckets": [], "sum": None, "count": None})["buckets"].append(
                    (float(labels["le"]), value))
            elif name in (fam + "_sum", fam + "_count"):
                key = tuple(sorted(labels.items()))
                series.setdefault(key, {"buckets": [], "sum": None, "count": None})[name[len(fam) + 1:]] = value
        for key, s in series.items():
            b = s["buckets"]
            assert b, f"{fam}{key}: no buckets"
            bounds = [le for le, _ in b]
            assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), f"{fam}{key}: bucket order {bounds}"
            assert math.isinf(bounds[-1]), f"{fam}{key}: the last bucket must be +Inf"
            counts = [c for _, c in b]
            assert all(x <= y for x, y in zip(counts, counts[1:])), f"{fam}{key}: buckets not cumulative {counts}"
            assert s["count"] is not None and s["sum"] is not None, f"{fam}{key}: _sum or _count missing"
            assert counts[-1] == s["count"], f"{fam}{key}: +Inf bucket {counts[-1]} != _count {s['count']}"
            assert s["sum"] >= 0


def http_get(port, path="/metrics", method="GET", timeout=10):
    c = http.client.HTTPConnection(helpers.HOST, port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read().decode()
    finally:
        c.close()


def scrape(port):
    status, headers, body = http_get(port)
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    m = Metrics(body)
    m.check_well_formed()
    return m


def show(p, command):
    """An admin SHOW as a list of dicts by column name."""
    c = p.connect(user="pgbouncer", dbname="pgbouncer")
    try:
        with c.cursor() as cur:
            cur.execute(command)
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]
    finally:
        c.close()


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out ({timeout}s) waiting for {what}")
        time.sleep(0.1)


def metrics_pooler(pgrouter, **overrides):
    port = helpers.free_port()
    settings = {"metrics_listen": f"{helpers.HOST}:{port}", "default_pool_size": 4}
    settings.update(overrides)
    p = pgrouter(settings, databases={"benchdb": {}, "testdb": {}})
    helpers.wait_port(helpers.HOST, port, 10, p.proc)
    return p, port


# --------------------------------------------------------------------------- metrics

def test_metrics_scraped_under_pgbench_load(pgrouter, bench_db):
    p, port = metrics_pooler(pgrouter)
    result = {}

    def load():
        result["r"] = p.pgbench("-n", "-c", "8", "-j", "2", "-T", "6", dbname="benchdb", timeout=60)

    t = threading.Thread(target=load)
    t.start()
    try:
        def busy_scrape():
            m = scrape(port)
            if 'database="benchdb"' in m.text and m.get("pgrouter_transactions_total", database="benchdb") > 0:
                return m
            return None
        first = wait_for(busy_scrape, 10, "transactions on benchdb in /metrics")
        time.sleep(1.5)
        second = scrape(port)
        assert t.is_alive(), "pgbench finished before the second scrape: the load was too short"
    finally:
        t.join(70)
    r = result["r"]
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"

    tx1 = first.get("pgrouter_transactions_total", database="benchdb")
    tx2 = second.get("pgrouter_transactions_total", database="benchdb")
    assert tx2 > tx1 > 0, (tx1, tx2)
    assert second.get("pgrouter_queries_total", database="benchdb") >= tx2
    assert second.get("pgrouter_received_bytes_total", database="benchdb") > 0
    assert second.get("pgrouter_sent_bytes_total", database="benchdb") > 0
    # Every transaction lands in one bucket; pgbench's tpcb transactions are multi-statement.
    xact_count = second.get("pgrouter_transaction_duration_seconds_count", database="benchdb")
    assert xact_count > 0
    assert second.get("pgrouter_transaction_duration_seconds_sum", database="benchdb") > 0
    assert second.get("pgrouter_server_wait_duration_seconds_count", database="benchdb") > 0
    # Under load 8 clients share at most 4 servers of the pool.
    servers = second.get("pgrouter_pool_server_connections", database="benchdb", user=helpers.DEFAULT_USER)
    assert 0 < servers <= 4
    assert second.get("pgrouter_pool_size", database="benchdb", user=helpers.DEFAULT_USER) == 4
    clients = second.get("pgrouter_pool_client_connections", database="benchdb", user=helpers.DEFAULT_USER)
    assert 1 <= clients <= 8, clients
    assert {l["state"] for n, l, _ in second.samples
            if n == "pgrouter_pool_client_connections" and l.get("database") == "benchdb"} == \
        {"active", "waiting", "idle"}
    assert second.get("pgrouter_pool_clients_waiting", database="benchdb") >= 0
    assert second.get("pgrouter_pool_max_wait_seconds", database="benchdb") >= 0
    assert second.get("pgrouter_client_connections") >= 1
    assert second.get("pgrouter_up") == 1
    assert second.get("pgrouter_open_fds") > 5
    assert second.get("pgrouter_resident_memory_bytes") > 1_000_000

    # The load is over: the pool is stable; its servers as SHOW POOLS counts them.
    end = time.monotonic() + 10
    while True:
        m = scrape(port)
        rows = [r for r in show(p, "SHOW POOLS") if r["database"] == "benchdb" and r["user"] == helpers.DEFAULT_USER]
        assert len(rows) == 1, rows
        shown = rows[0]["sv_active"] + rows[0]["sv_idle"] + rows[0]["sv_used"]
        active = m.get("pgrouter_pool_server_connections", database="benchdb", state="active")
        idle = m.get("pgrouter_pool_server_connections", database="benchdb", state="idle")
        if active + idle == shown and shown > 0:
            break
        assert time.monotonic() < end, f"metrics active={active} idle={idle}, SHOW POOLS {rows[0]}"
        time.sleep(0.2)


def test_metrics_histogram_and_counters_exact(pgrouter):
    """Transactions run one by one: the counters and the histogram count them exactly."""
    p, port = metrics_pooler(pgrouter)
    c = p.connect(dbname="testdb")
    try:
        with c.cursor() as cur:
            for _ in range(10):
                cur.execute("SELECT 1")
            c.autocommit = False
            for _ in range(3):
                cur.execute("SELECT 1")
                cur.execute("SELECT 2")
                c.commit()
    finally:
        c.close()
    m = wait_for(lambda: (lambda m: m if m.get("pgrouter_transactions_total", database="testdb") >= 13 else None)(
        scrape(port)), 10, "13 transactions counted")
    assert m.get("pgrouter_transactions_total", database="testdb") == 13
    assert m.get("pgrouter_queries_total", database="testdb") >= 10 + 3 * 3  # BEGIN, 2 selects, COMMIT
    assert m.get("pgrouter_transaction_duration_seconds_count", database="testdb") == 13
    inf = m.get("pgrouter_transaction_duration_seconds_bucket", database="testdb", le="+Inf")
    assert inf == 13
    assert m.types["pgrouter_transaction_duration_seconds"] == "histogram"
    assert m.types["pgrouter_server_wait_duration_seconds"] == "histogram"
    assert m.types["pgrouter_transactions_total"] == "counter"
    assert m.types["pgrouter_pool_server_connections"] == "gauge"


def test_metrics_http_behaviour(pgrouter):
    p, port = metrics_pooler(pgrouter)
    status, _, _ = http_get(port, "/")
    assert status == 404
    status, _, _ = http_get(port, "/metricsx")
    assert status == 404
    status, headers, _ = http_get(port, "/metrics", method="POST")
    assert status == 405 and headers.get("allow") == "GET"
    status, _, body = http_get(port, "/metrics?name[]=pgrouter_up")
    assert status == 200 and "pgrouter_up 1" in body

    # keep-alive: several requests over one connection
    c = http.client.HTTPConnection(helpers.HOST, port, timeout=10)
    try:
        for path, want in (("/metrics", 200), ("/other", 404), ("/metrics", 200)):
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            assert r.status == want
            assert not r.will_close
    finally:
        c.close()

    # bounded request size: an oversized header closes the connection without an answer
    s = socket.create_connection((helpers.HOST, port), timeout=10)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n")
        got = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        assert not got.startswith(b"HTTP/1.1 200"), got[:200]
    finally:
        s.close()

    # read deadline: a client that never finishes its request is dropped
    s = socket.create_connection((helpers.HOST, port), timeout=30)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        start = time.monotonic()
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - start < 25
    finally:
        s.close()

    # and it still serves
    scrape(port)


def test_bad_metrics_listen_exits_2(pgrouter):
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        busy.bind((helpers.HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        p = pgrouter({"metrics_listen": f"{helpers.HOST}:{port}"}, start=False)
        r = subprocess.run(p.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30,
                           cwd=p.dir)
    finally:
        busy.close()
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "metrics_listen" in r.stderr and str(port) in r.stderr, r.stderr


# --------------------------------------------------------------------------- logs

def raw_startup(p, params):
    """Sends a startup packet made of raw bytes and reads until the pooler closes."""
    body = struct.pack("!I", 196608)
    for k, v in params.items():
        body += k + b"\0" + v + b"\0"
    body += b"\0"
    c = p.raw()
    try:
        c.send(struct.pack("!I", len(body) + 4) + body)
        try:
            c.wait_closed(timeout=10)
        except Exception:
            pass
    finally:
        c.close()


def test_log_format_json(pgrouter):
    p = pgrouter({"log_format": "json", "stats_period": 1})
    c = p.connect()
    c.cursor().execute("SELECT 1")
    c.close()
    # A user name with quotes, a backslash, control characters and invalid UTF-8 goes to the log.
    weird = b'we"ird\\us\ter\x01\xff\xc3'
    raw_startup(p, {b"user": weird, b"database": b"testdb"})
    wait_for(lambda: "stats: " in p.log() and "ird" in p.log(), 10, "a stats line and the weird login in the log")
    lines = [l for l in p.log().split("\n") if l.strip()]
    assert lines
    objs = []
    for line in lines:
        try:
            o = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"not a JSON line: {line!r}: {e}") from None
        assert set(o) >= {"time", "level", "pid", "msg"}, o
        assert o["pid"] == p.proc.pid
        assert o["level"] in ("trace", "debug", "info", "warning", "error", "critical")
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$", o["time"]), o["time"]
        objs.append(o)
    msgs = [o["msg"] for o in objs]
    assert any('we"ird\\us\ter\x01\ufffd\ufffd' in m for m in msgs), msgs
    stats = [m for m in msgs if m.startswith("stats: ")]
    assert stats and re.match(r"^stats: \d+ xacts/s, \d+ queries/s, in \d+ B/s, out \d+ B/s, xact \d+ us, "
                              r"query \d+ us, wait \d+ us$", stats[0]), stats


def test_text_log_has_stats_line(pgrouter):
    p = pgrouter({"stats_period": 1})
    wait_for(lambda: re.search(r"\[\d+\] info stats: \d+ xacts/s", p.log()), 10, "a stats line")


def test_sighup_reopens_logfile(pgrouter):
    p = pgrouter(start=False)
    logfile = p.dir / "pgrouter.log"
    p.settings["logfile"] = str(logfile)
    p.write_config(None)
    p.start()
    c = p.connect()
    c.close()
    wait_for(lambda: logfile.exists() and "login attempt" in logfile.read_text(), 10, "a login line in the logfile")
    rotated = p.dir / "pgrouter.log.1"
    logfile.rename(rotated)
    p.signal(1)  # SIGHUP
    wait_for(logfile.exists, 10, "a new logfile after SIGHUP")
    c = p.connect()
    c.close()
    wait_for(lambda: "login attempt" in logfile.read_text(), 10, "new lines in the new logfile")
    old = rotated.read_text()
    assert "login attempt" in old and "SIGHUP" in old
    # Nothing after the reopen goes to the moved file.
    n_old = old.count("login attempt")
    c = p.connect()
    c.close()
    wait_for(lambda: logfile.read_text().count("login attempt") >= 2, 10, "a second login in the new logfile")
    assert rotated.read_text().count("login attempt") == n_old


def test_unopenable_logfile_exits_2(pgrouter):
    p = pgrouter({"logfile": "/nonexistent-pgrouter-dir/pgrouter.log"}, start=False)
    r = subprocess.run(p.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30, cwd=p.dir)
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "cannot open logfile /nonexistent-pgrouter-dir/pgrouter.log" in r.stderr, r.stderr
