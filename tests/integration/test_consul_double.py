"""Quick tests of the Consul and Patroni test doubles themselves (no pgrouter,
no PostgreSQL): ServiceEntry shape, headers, blocking-query semantics, index
reset, filters, modes, request recording, the /_test/ HTTP controls and the
script mode. A few seconds in total."""

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from consul_double import ConsulDouble, parse_go_duration
from patroni_double import PatroniDouble

HERE = Path(__file__).resolve().parent

PRIMARY = {"node": "pg1", "address": "10.0.0.1", "port": 5432, "tags": ["primary", "master"]}
REPLICA = {"node": "pg2", "address": "10.0.0.2", "service_address": "", "port": 5433, "tags": ["replica"]}


def get(url, timeout=5.0, headers=None):
    """(status, headers dict with lower-case names, body bytes); HTTP errors are answers too."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def call(url, method="POST", body=None, timeout=5.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Background:
    """Runs get() in a thread; .result / .error / .elapsed when joined."""

    def __init__(self, url, timeout=10.0):
        self.result = self.error = None
        self.start = time.monotonic()
        self.elapsed = None

        def run():
            try:
                self.result = get(url, timeout=timeout)
            except Exception as e:  # noqa: BLE001 - the test inspects it
                self.error = e
            self.elapsed = time.monotonic() - self.start

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout=5.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "request still blocked"
        return self


@pytest.fixture
def consul():
    d = ConsulDouble().start()
    d.set_instances("pg", [PRIMARY, REPLICA])
    yield d
    d.stop()


@pytest.fixture
def patroni():
    d = PatroniDouble().start()
    yield d
    d.stop()


def health(d, query=""):
    return f"{d.url}/v1/health/service/pg{('?' + query) if query else ''}"


def test_go_durations():
    assert parse_go_duration("60s") == 60
    assert parse_go_duration("5m") == 300
    assert parse_go_duration("100ms") == pytest.approx(0.1)
    assert parse_go_duration("1m30s") == 90
    assert parse_go_duration("1.5s") == 1.5
    for bad in ("60", "", "s", "5x"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)


def test_service_entry_shape_and_headers(consul):
    status, h, body = get(health(consul))
    assert status == 200
    assert h["content-type"] == "application/json"
    assert h["x-consul-knownleader"] == "true"
    assert h["x-consul-lastcontact"] == "0"
    assert int(h["x-consul-index"]) == consul.index("pg") >= 1
    entries = json.loads(body)
    assert [e["Node"]["Node"] for e in entries] == ["pg1", "pg2"]
    e = entries[0]
    assert set(e) == {"Node", "Service", "Checks"}
    assert {"ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta", "CreateIndex",
            "ModifyIndex"} <= set(e["Node"])
    assert {"ID", "Service", "Tags", "Address", "TaggedAddresses", "Meta", "Port", "Weights",
            "EnableTagOverride", "CreateIndex", "ModifyIndex"} <= set(e["Service"])
    assert e["Service"]["ID"] == "pg/pg1" and e["Service"]["Service"] == "pg"
    assert e["Service"]["Tags"] == ["primary", "master"] and e["Service"]["Port"] == 5432
    assert e["Service"]["Address"] == "10.0.0.1" and e["Node"]["Address"] == "10.0.0.1"
    assert e["Node"]["Datacenter"] == "dc1"
    serf, svc = e["Checks"]
    assert serf["CheckID"] == "serfHealth" and serf["ServiceID"] == "" and serf["Status"] == "passing"
    assert svc["CheckID"] == "service:pg/pg1" and svc["ServiceID"] == "pg/pg1" and svc["Status"] == "passing"
    # an empty Service.Address stays empty: clients fall back to Node.Address
    assert entries[1]["Service"]["Address"] == "" and entries[1]["Node"]["Address"] == "10.0.0.2"


def test_unknown_service_is_an_empty_array_with_an_index(consul):
    status, h, body = get(f"{consul.url}/v1/health/service/nope")
    assert status == 200 and json.loads(body) == [] and int(h["x-consul-index"]) >= 1


def test_blocking_query_times_out_with_the_same_index(consul):
    idx = consul.index("pg")
    t0 = time.monotonic()
    status, h, _ = get(health(consul, f"index={idx}&wait=300ms"))
    elapsed = time.monotonic() - t0
    assert status == 200 and int(h["x-consul-index"]) == idx
    assert 0.29 <= elapsed < 0.3 + 0.3 / 16 + 0.25


def test_blocking_query_wakes_on_change(consul):
    idx = consul.index("pg")
    bg = Background(health(consul, f"index={idx}&wait=10s"))
    consul.wait_for_requests(1)
    time.sleep(0.2)
    assert bg.thread.is_alive()
    consul.set_instances("pg", [dict(PRIMARY, tags=["replica"]), REPLICA])
    bg.join()
    status, h, body = bg.result
    assert status == 200 and int(h["x-consul-index"]) > idx
    assert json.loads(body)[0]["Service"]["Tags"] == ["replica"]
    assert bg.elapsed < 1.0


def test_lower_or_no_index_answers_at_once(consul):
    idx = consul.index("pg")
    for q in (f"index={idx - 1}&wait=10s", "wait=10s", "index=0&wait=10s"):
        t0 = time.monotonic()
        status, h, _ = get(health(consul, q))
        assert status == 200 and int(h["x-consul-index"]) == idx
        assert time.monotonic() - t0 < 0.5, q


def test_change_to_another_service_does_not_wake(consul):
    idx = consul.index("pg")
    bg = Background(health(consul, f"index={idx}&wait=400ms"))
    consul.wait_for_requests(1)
    consul.set_instances("other", [PRIMARY])
    bg.join()
    assert bg.elapsed >= 0.39 and int(bg.result[1]["x-consul-index"]) == idx


def test_bump_raises_the_index_without_a_change(consul):
    _, h1, b1 = get(health(consul))
    consul.bump("pg")
    _, h2, b2 = get(health(consul))
    assert int(h2["x-consul-index"]) > int(h1["x-consul-index"]) and json.loads(b1) == json.loads(b2)


def test_index_reset_answers_blocked_queries_with_a_lower_index(consul):
    idx = consul.index("pg")
    bg = Background(health(consul, f"index={idx}&wait=10s"))
    consul.wait_for_requests(1)
    consul.reset_index("pg", to=1)
    bg.join()
    assert bg.elapsed < 1.0 and int(bg.result[1]["x-consul-index"]) == 1 < idx
    consul.set_instances("pg", [PRIMARY])
    assert consul.index("pg") > 1
    consul.set_mode("reset_index")  # the same, as a "mode" for bench scripts
    assert consul.index("pg") == 1 and consul.mode == "ok"


def test_passing_filter(consul):
    consul.set_instances("pg", [PRIMARY, dict(REPLICA, check="warning"), {"node": "pg3", "serf": "critical"}])
    _, _, body = get(health(consul))
    assert len(json.loads(body)) == 3
    for q in ("passing", "passing=true", "passing=1"):
        _, _, body = get(health(consul, q))
        assert [e["Node"]["Node"] for e in json.loads(body)] == ["pg1"], q
    _, _, body = get(health(consul, "passing=false"))
    assert len(json.loads(body)) == 3
    assert get(health(consul, "passing=maybe"))[0] == 400


def test_tag_filter_needs_every_tag(consul):
    _, _, body = get(health(consul, "tag=primary"))
    assert [e["Node"]["Node"] for e in json.loads(body)] == ["pg1"]
    _, _, body = get(health(consul, "tag=primary&tag=MASTER"))
    assert [e["Node"]["Node"] for e in json.loads(body)] == ["pg1"]
    _, _, body = get(health(consul, "tag=primary&tag=replica"))
    assert json.loads(body) == []


def test_dc_and_bad_parameters(consul):
    assert get(health(consul, "dc=dc1"))[0] == 200
    assert get(health(consul, "dc=elsewhere"))[0] == 200
    consul.strict_dc = True
    assert get(health(consul, "dc=dc1"))[0] == 200
    status, _, body = get(health(consul, "dc=elsewhere"))
    assert status == 500 and b"No path to datacenter" in body
    assert get(health(consul, "index=abc"))[0] == 400
    assert get(health(consul, "index=1&wait=60"))[0] == 400


def test_maintenance_check_is_an_extra_critical_check(consul):
    consul.set_instances("pg", [dict(PRIMARY, extra_checks=[
        {"CheckID": "_service_maintenance:pg/pg1", "Status": "critical", "ServiceID": "pg/pg1"}])])
    _, _, body = get(health(consul))
    checks = json.loads(body)[0]["Checks"]
    assert [c["CheckID"] for c in checks] == ["serfHealth", "service:pg/pg1", "_service_maintenance:pg/pg1"]
    assert json.loads(get(health(consul, "passing"))[2]) == []


def test_error_and_garbage_modes(consul):
    consul.set_mode("error")
    status, _, body = get(health(consul))
    assert status == 500 and body == b"No cluster leader"
    consul.set_mode("garbage")
    status, h, body = get(health(consul))
    assert status == 200 and h["content-type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(body)
    consul.set_mode("ok")
    assert get(health(consul))[0] == 200


def test_hang_mode_answers_after_the_mode_changes(consul):
    consul.set_mode("hang")
    with pytest.raises((socket.timeout, urllib.error.URLError, TimeoutError)):
        get(health(consul), timeout=0.3)
    bg = Background(health(consul))
    consul.wait_for_requests(2)
    time.sleep(0.1)
    assert bg.thread.is_alive()
    consul.set_mode("ok")
    bg.join()
    assert bg.result[0] == 200


def test_mode_change_wakes_a_blocked_query(consul):
    bg = Background(health(consul, f"index={consul.index('pg')}&wait=10s"))
    consul.wait_for_requests(1)
    consul.set_mode("error")
    bg.join()
    assert bg.result[0] == 500 and bg.elapsed < 1.0


def test_refuse_and_reset_modes(consul):
    consul.set_mode("refuse")
    with pytest.raises(urllib.error.URLError) as e:
        get(health(consul), timeout=2)
    assert isinstance(e.value.reason, ConnectionRefusedError)
    consul.set_mode("ok")
    assert get(health(consul))[0] == 200
    consul.set_mode("reset")
    with pytest.raises((ConnectionResetError, urllib.error.URLError, http_remote_disconnected())):
        get(health(consul), timeout=2)
    consul.set_mode("ok")
    assert get(health(consul))[0] == 200


def http_remote_disconnected():
    import http.client
    return http.client.RemoteDisconnected


def test_stop_wakes_blocked_and_hung_requests():
    d = ConsulDouble().start()
    blocked = Background(f"{d.url}/v1/health/service/x?index={d.index('x')}&wait=10m")
    d.wait_for_requests(1)
    d.set_mode("hang")
    hung = Background(f"{d.url}/v1/health/service/x")
    d.wait_for_requests(2)
    t0 = time.monotonic()
    d.stop()
    blocked.join(3)
    hung.join(3)
    assert time.monotonic() - t0 < 3
    assert blocked.error is not None and hung.error is not None


def test_requests_are_recorded_with_headers(consul):
    consul.clear_requests()
    get(health(consul, "index=1&wait=1s&dc=dc1"), headers={"X-Consul-Token": "s3cret"})
    (r,) = consul.requests("/v1/health/service/")
    assert r.method == "GET" and r.path == "/v1/health/service/pg"
    assert r.headers["x-consul-token"] == "s3cret"
    assert r.param("index") == "1" and r.param("wait") == "1s" and r.param("dc") == "dc1"
    assert r.status == 200 and r.answered is not None


def test_http_controls():
    d = ConsulDouble(control_port=0).start()
    try:
        c = d.control_url
        assert c != d.url
        out = call(f"{c}/_test/services/pg", "PUT", [PRIMARY])
        assert out["index"] == d.index("pg")
        assert [e["Node"]["Node"] for e in json.loads(get(f"{d.url}/v1/health/service/pg")[2])] == ["pg1"]
        idx = d.index("pg")
        assert call(f"{d.url}/_test/bump/pg")["index"] > idx
        call(f"{c}/_test/check?service=pg&node=pg1&status=critical")
        assert d.instances("pg")[0]["check"] == "critical"
        call(f"{c}/_test/serf?node=pg1&status=critical")
        assert d.instances("pg")[0]["serf"] == "critical"
        call(f"{c}/_test/reset_index?service=pg&to=2")
        assert d.index("pg") == 2
        call(f"{c}/_test/mode?mode=refuse")
        with pytest.raises(urllib.error.URLError):
            get(f"{d.url}/v1/health/service/pg", timeout=2)
        assert call(f"{c}/_test/mode", "GET")["mode"] == "refuse"
        call(f"{c}/_test/mode", "POST", {"mode": "ok"})
        assert get(f"{d.url}/v1/health/service/pg")[0] == 200
        reqs = call(f"{c}/_test/requests", "GET")
        assert all(r["path"].startswith("/v1/") for r in reqs) and reqs
        call(f"{c}/_test/requests", "DELETE")
        assert call(f"{c}/_test/requests", "GET") == []
        assert call(f"{c}/_test/state", "GET")["services"]["pg"]["index"] == d.index("pg")
        with pytest.raises(urllib.error.HTTPError):
            call(f"{c}/_test/mode?mode=sideways")
    finally:
        d.stop()


def test_script_mode():
    p = subprocess.Popen([sys.executable, str(HERE / "consul_double.py"), "--port", "0", "--service", "pg",
                          "--instances", json.dumps([PRIMARY])], stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("listening on http://"), line
        url = line.split()[2]
        status, _, body = get(f"{url}/v1/health/service/pg")
        assert status == 200 and json.loads(body)[0]["Service"]["Port"] == 5432
    finally:
        p.terminate()
        assert p.wait(5) == 0


def test_patroni_cluster(patroni):
    patroni.set_members([{"name": "pg1", "role": "leader", "host": "10.0.0.1", "timeline": 5},
                         {"name": "pg2", "role": "sync_standby", "host": "10.0.0.2", "port": 5433, "lag": 100},
                         {"name": "pg3", "host": "10.0.0.3", "lag": "unknown", "tags": {"nofailover": True}}])
    status, h, body = get(f"{patroni.url}/cluster")
    assert status == 200 and h["content-type"] == "application/json"
    c = json.loads(body)
    assert c["scope"] == "demo"
    m1, m2, m3 = c["members"]
    assert m1 == {"name": "pg1", "role": "leader", "state": "running", "api_url": "http://10.0.0.1:8008/patroni",
                  "host": "10.0.0.1", "port": 5432, "timeline": 5}
    assert m2["role"] == "sync_standby" and m2["state"] == "streaming" and m2["lag"] == 100 and m2["port"] == 5433
    assert m3["role"] == "replica" and m3["lag"] == "unknown" and m3["tags"] == {"nofailover": True}
    assert get(f"{patroni.url}/nothing")[0] == 404
    assert patroni.requests("/cluster")[0].status == 200


def test_patroni_modes(patroni):
    patroni.set_members([{"name": "pg1", "role": "leader"}])
    patroni.set_mode("error")
    assert get(f"{patroni.url}/cluster")[0] == 503
    patroni.set_mode("garbage")
    status, _, body = get(f"{patroni.url}/cluster")
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)
    patroni.set_mode("hang")
    with pytest.raises((socket.timeout, urllib.error.URLError, TimeoutError)):
        get(f"{patroni.url}/cluster", timeout=0.3)
    patroni.set_mode("refuse")
    with pytest.raises(urllib.error.URLError):
        get(f"{patroni.url}/cluster", timeout=2)
    patroni.set_mode("ok")
    assert get(f"{patroni.url}/cluster")[0] == 200
    call(f"{patroni.url}/_test/members", "PUT", [{"name": "x", "role": "leader", "host": "10.9.9.9"}])
    assert json.loads(get(f"{patroni.url}/cluster")[2])["members"][0]["host"] == "10.9.9.9"
