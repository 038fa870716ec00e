"""pgrouter's Consul and Patroni discovery clients (src/discovery/), driven
through tests/tools/discovery_probe against the test doubles: the first answer
is published, a change is published within a second (the blocking query wakes),
an unchanged answer is not republished, the ACL token / dc / index / wait are
sent, an index that goes backwards is handled, error / garbage / hang / refused
connections give status lines and no publish, and discovery recovers after.

No PostgreSQL, no pgrouter process; the probe binary is build/discovery_probe
(DISCOVERY_PROBE_BIN overrides it). Bounded: well under 30 s in total."""

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from consul_double import ConsulDouble
from patroni_double import PatroniDouble

REPO = Path(__file__).resolve().parents[2]
PROBE_BIN = Path(os.environ.get("DISCOVERY_PROBE_BIN", str(REPO / "build" / "discovery_probe")))

PRIMARY = {"node": "pg1", "address": "10.0.0.1", "port": 5432, "tags": ["primary", "master"]}
REPLICA = {"node": "pg2", "address": "10.0.0.2", "service_address": "", "port": 5433, "tags": ["replica"]}
REPLICA3 = {"node": "pg3", "address": "10.0.0.3", "port": 5432, "tags": ["replica"]}

LINE_RE = re.compile(r"^\[\s*(\d+\.\d+)\] (publish|status|stopped)\s?(.*)$")


class Probe:
    """The discovery_probe process; lines are collected by a reader thread."""

    def __init__(self, *args):
        if not PROBE_BIN.exists():
            pytest.fail(f"{PROBE_BIN} is missing: build it with `ninja -C build discovery_probe`", pytrace=False)
        self.proc = subprocess.Popen([str(PROBE_BIN), *args, "--until-eof", "--seconds", "60"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines = []  # (monotonic time seen, kind, text)
        self.cond = threading.Condition()
        self.stderr = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            m = LINE_RE.match(raw.rstrip("\n"))
            with self.cond:
                self.lines.append((time.monotonic(), m.group(2) if m else "?", m.group(3) if m else raw))
                self.cond.notify_all()

    def _read_err(self):
        for raw in self.proc.stderr:
            self.stderr.append(raw)

    def of(self, kind, since=0.0):
        with self.cond:
            return [text for t, k, text in self.lines if k == kind and t >= since]

    def publishes(self, since=0.0):
        return self.of("publish", since)

    def wait_for(self, kind, pattern, since=0.0, timeout=3.0):
        """The first `kind` line matching `pattern` seen at or after `since`: (time, text)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, k, text in self.lines:
                    if k == kind and t >= since and rx.search(text):
                        return t, text
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no {kind} line matching {pattern!r} within {timeout}s; lines:\n"
                                         + "\n".join(f"  {k} {x}" for _, k, x in self.lines)
                                         + "\nstderr:\n" + "".join(self.stderr[-20:]))
                self.cond.wait(min(left, 0.1))

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError("discovery_probe did not stop within 5 s of stop()")
        # The process has exited; its last lines may still be on their way through the reader.
        self.reader.join(5)
        with self.cond:
            assert self.lines and self.lines[-1][1] == "stopped", self.lines[-3:]
        assert self.proc.returncode == 0


@pytest.fixture
def consul():
    d = ConsulDouble().start()
    d.set_instances("pg", [PRIMARY, REPLICA])
    yield d
    d.stop()


@pytest.fixture
def probes():
    started = []

    def start(*args):
        p = Probe(*args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def consul_probe(probes, consul, *extra, wait="1"):
    return probes("consul", consul.url, "--service", "pg", "--wait", wait, *extra)


def test_first_answer_published_then_blocking_queries(consul, probes):
    p = consul_probe(probes, consul, "--token", "s3cret", "--dc", "dc1")
    # The first answer includes the probe's start-up: generous on a loaded machine.
    p.wait_for("publish", r"^source=consul primaries=10\.0\.0\.1:5432 replicas=10\.0\.0\.2:5433 lag=-$",
               timeout=10.0)
    idx = consul.index("pg")
    p.wait_for("status", rf"^consul ok index={idx}$")
    reqs = consul.wait_for_requests(2, "/v1/health/service/pg")
    first, second = reqs[0], reqs[1]
    assert "index" not in first.query and "wait" not in first.query
    assert second.param("index") == str(idx) and second.param("wait") == "1s"
    for r in reqs:
        assert r.headers.get("x-consul-token") == "s3cret"
        assert r.param("dc") == "dc1"
        assert "passing" not in r.query and "tag" not in r.query and "filter" not in r.query
    assert len(p.publishes()) == 1


def test_no_token_no_dc_header(consul, probes):
    p = consul_probe(probes, consul)
    p.wait_for("publish", "primaries=10.0.0.1:5432")
    (r, *_) = consul.wait_for_requests(1, "/v1/health/service/pg")
    assert "x-consul-token" not in r.headers and "dc" not in r.query


def test_change_published_within_a_second(consul, probes):
    p = consul_probe(probes, consul, wait="30")
    p.wait_for("publish", "primaries=10.0.0.1:5432")
    consul.wait_for_requests(2, "/v1/health/service/pg")  # the blocking query is waiting
    time.sleep(0.2)
    t0 = time.monotonic()
    # switchover: pg2 becomes the primary, pg1 a replica
    consul.set_instances("pg", [dict(PRIMARY, tags=["replica"]), dict(REPLICA, tags=["primary", "master"]), REPLICA3])
    t, text = p.wait_for("publish", r"primaries=10\.0\.0\.2:5433 ", since=t0, timeout=2)
    assert t - t0 < 1.0, f"published {t - t0:.2f}s after the change"
    assert "replicas=10.0.0.1:5432,10.0.0.3:5432" in text
    # a failing primary service check: no primary, the others stay
    t1 = time.monotonic()
    consul.set_check("pg", "pg2", "critical")
    t, text = p.wait_for("publish", r"primaries=- ", since=t1, timeout=2)
    assert t - t1 < 1.0


def test_unchanged_answers_are_not_republished(consul, probes):
    p = consul_probe(probes, consul, wait="30")
    p.wait_for("publish", "primaries=10.0.0.1:5432")
    for _ in range(3):
        idx = consul.bump("pg")
        p.wait_for("status", rf"^consul ok index={idx}$")
    # blocking-query timeouts (same index) are not changes either
    consul.set_instances("pg", [REPLICA, PRIMARY])  # same members, another order
    p.wait_for("status", rf"^consul ok index={consul.index('pg')}$")
    assert len(p.publishes()) == 1, p.publishes()


def test_wait_timeouts_do_not_republish(consul, probes):
    p = consul_probe(probes, consul, wait="0.2")
    p.wait_for("publish", "primaries=10.0.0.1:5432")
    consul.wait_for_requests(5, "/v1/health/service/pg", timeout=3)
    reqs = consul.requests("/v1/health/service/pg")
    assert all(r.param("wait") == "200ms" for r in reqs[1:])
    assert len(p.publishes()) == 1


def test_index_reset(consul, probes):
    p = consul_probe(probes, consul, wait="30")
    p.wait_for("publish", "primaries=10.0.0.1:5432")
    consul.wait_for_requests(2, "/v1/health/service/pg")
    consul.clear_requests()
    consul.reset_index("pg", to=3)
    p.wait_for("status", r"^consul ok index=3$")
    reqs = consul.wait_for_requests(2, "/v1/health/service/pg")
    assert reqs[0].param("index") is None, "after the index went backwards, start over without an index"
    assert reqs[1].param("index") == "3"
    assert len(p.publishes()) == 1
    t0 = time.monotonic()
    consul.set_instances("pg", [PRIMARY])
    p.wait_for("publish", r"replicas=- ", since=t0, timeout=2)


def test_error_mode_keeps_topology_and_backs_off(consul, probes):
    p = consul_probe(probes, consul, wait="30")
    p.wait_for("publish", "primaries=10.0.0.1:5432")
    consul.wait_for_requests(2, "/v1/health/service/pg")
    consul.clear_requests()
    t0 = time.monotonic()
    consul.set_mode("error")  # wakes the blocked query with a 500
    _, text = p.wait_for("status", r"^consul error: HTTP 500: No cluster leader \(retry in \d+\.\ds\)$", since=t0)
    time.sleep(2.0)
    n = len(consul.requests("/v1/health/service/pg"))
    assert 3 <= n <= 8, f"{n} requests in ~2 s of errors: backoff from 250 ms expected"
    consul.set_instances("pg", [dict(PRIMARY, address="10.0.0.9")])  # changed during the outage
    assert len(p.publishes()) == 1, "an error must never publish"
    t1 = time.monotonic()
    consul.set_mode("ok")
    p.wait_for("publish", r"primaries=10\.0\.0\.9:5432 ", since=t1, timeout=4)
    p.wait_for("status", r"^consul ok index=", since=t1)
    # the first request after the error is not a blocking one
    after = [r for r in consul.requests("/v1/health/service/pg") if r.status == 200]
    assert after and after[0].param("index") is None


def test_garbage_mode(consul, probes):
    p = consul_probe(probes, consul, wait="30")
    p.wait_for("publish", "primaries=10.0.0.1:5432")
    consul.wait_for_requests(2, "/v1/health/service/pg")
    consul.set_mode("garbage")
    p.wait_for("status", r"^consul error: invalid answer: invalid JSON")
    time.sleep(0.5)
    consul.set_mode("ok")
    p.wait_for("status", r"^consul ok index=")
    assert len(p.publishes()) == 1


def test_refused_then_recovered(consul, probes):
    consul.set_mode("refuse")
    p = consul_probe(probes, consul)
    p.wait_for("status", r"^consul error: cannot connect to 127\.0\.0\.1:\d+: Connection refused")
    assert p.publishes() == []
    consul.set_mode("reset")
    p.wait_for("status", r"^consul error: (reading the answer|sending the request).*reset", timeout=7)
    consul.set_mode("ok")
    p.wait_for("publish", "primaries=10.0.0.1:5432", timeout=7)


def test_hang_times_out(consul, probes):
    consul.set_mode("hang")
    t0 = time.monotonic()
    p = consul_probe(probes, consul, wait="0.5")
    t, _ = p.wait_for("status", r"^consul error: no answer within 5\.\ds from 127\.0\.0\.1", timeout=8)
    assert 4.5 <= t - t0 <= 7.5
    assert p.publishes() == []
    consul.set_mode("ok")
    p.wait_for("publish", "primaries=10.0.0.1:5432", timeout=3)


def test_stop_interrupts_a_blocking_query(consul, probes):
    p = consul_probe(probes, consul, wait="300")
    p.wait_for("publish", "primaries=10.0.0.1:5432")
    consul.wait_for_requests(2, "/v1/health/service/pg")
    t0 = time.monotonic()
    p.stop()
    assert time.monotonic() - t0 < 2


def test_churn_is_rate_limited(consul, probes):
    p = consul_probe(probes, consul, wait="30")
    p.wait_for("publish", "primaries=10.0.0.1:5432")
    consul.clear_requests()
    stop = time.monotonic() + 1.5
    while time.monotonic() < stop:
        consul.bump("pg")
        time.sleep(0.01)
    n = len(consul.requests("/v1/health/service/pg"))
    assert 5 <= n <= 20, f"{n} requests in 1.5 s of churn (at most ~10/s expected)"


def test_no_primary_tags_and_node_address_fallback(consul, probes):
    consul.set_instances("pg", [dict(PRIMARY, tags=[]), dict(REPLICA, tags=[], check="warning")])
    p = consul_probe(probes, consul, "--primary-tags", "", "--replica-tags", "")
    p.wait_for("publish", r"^source=consul primaries=10\.0\.0\.1:5432 replicas=10\.0\.0\.2:5433 ")


# --------------------------------------------------------------------------- Patroni

MEMBERS = [{"name": "pg1", "role": "leader", "host": "10.0.0.1", "port": 5432},
           {"name": "pg2", "role": "replica", "host": "10.0.0.2", "port": 5433, "lag": 100},
           {"name": "pg3", "role": "sync_standby", "host": "10.0.0.3", "lag": "unknown"}]


@pytest.fixture
def patronis():
    ds = [PatroniDouble().start(), PatroniDouble().start()]
    for d in ds:
        d.set_members(MEMBERS)
    yield ds
    for d in ds:
        d.stop()


def test_patroni(patronis, probes):
    a, b = patronis
    p = probes("patroni", f"{a.url},{b.url}", "--period", "0.2")
    p.wait_for("publish", r"^source=patroni primaries=10\.0\.0\.1:5432 "
                          r"replicas=10\.0\.0\.2:5433,10\.0\.0\.3:5432 lag=100,-$")
    p.wait_for("status", rf"^patroni ok {re.escape(a.url)}$")
    a.wait_for_requests(3, "/cluster")
    assert b.requests() == [], "the second URL is asked only when the first fails"
    assert len(p.publishes()) == 1
    # failover: the first URL fails, the second answers with a new leader
    t0 = time.monotonic()
    a.set_mode("error")
    b.set_members([dict(MEMBERS[0], role="replica", state="streaming", lag=0), dict(MEMBERS[1], role="leader")])
    t, _ = p.wait_for("publish", r"primaries=10\.0\.0\.2:5433 replicas=10\.0\.0\.1:5432 lag=0$", since=t0)
    assert t - t0 < 1.0
    p.wait_for("status", rf"^patroni ok {re.escape(b.url)}$", since=t0)
    # both fail: status, no publish
    b.set_mode("garbage")
    n = len(p.publishes())
    _, text = p.wait_for("status", r"^patroni error: ", since=time.monotonic())
    assert "HTTP 503" in text and "invalid answer" in text
    time.sleep(0.5)
    assert len(p.publishes()) == n
    a.set_mode("refuse")
    p.wait_for("status", r"Connection refused", since=time.monotonic())
    b.set_mode("ok")
    p.wait_for("status", rf"^patroni ok {re.escape(b.url)}$", since=time.monotonic(), timeout=7)
    assert len(p.publishes()) == n


def test_patroni_hang_falls_over_to_the_next_url(patronis, probes):
    a, b = patronis
    a.set_mode("hang")
    t0 = time.monotonic()
    p = probes("patroni", f"{a.url},{b.url}", "--period", "0.5")
    t, _ = p.wait_for("publish", r"^source=patroni primaries=10\.0\.0\.1:5432 ", timeout=6)
    assert 2.5 <= t - t0 <= 5, "a hung URL is given up after its 3 s deadline"
    p.wait_for("status", rf"^patroni ok {re.escape(b.url)}$")
