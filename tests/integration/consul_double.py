#!/usr/bin/python3
"""A Consul HTTP API test double (Python 3 stdlib only).

Serves what pgrouter's Consul discovery reads (consul-patroni.md §1.2, §1.3):

  GET /v1/health/service/<name>   JSON array of ServiceEntry {Node, Service, Checks}
      headers  X-Consul-Index (per service), X-Consul-KnownLeader: true,
               X-Consul-LastContact: 0, Content-Type: application/json
      params   index + wait  blocking query: index >= current waits until the
                             service's index exceeds it or `wait` (Go duration,
                             default 5m, max 10m, plus up to wait/16 jitter) elapses;
                             a lower index (or 0 / none) answers at once
               passing       only instances whose every check is passing
               tag           repeatable; every one must be on the instance (case-insensitive)
               dc            accepted (recorded); with strict_dc=True anything but the
                             double's datacenter ("dc1") gets 500 "No path to datacenter"
      unknown service -> 200 [] with an index
  GET /v1/status/leader            "127.0.0.1:8300"
  GET /v1/agent/self               a minimal agent description

Python use:

    d = ConsulDouble().start()               # port=0: a free port; d.url = "http://127.0.0.1:N"
    d.set_instances("pg", [{"node": "n1", "address": "10.0.0.1", "port": 5432, "tags": ["primary"]}])
    d.set_mode("error")                      # ok | error | garbage | hang | refuse | reset | reset_index
    d.reset_index("pg", to=1)                # the index goes backwards (snapshot restore)
    d.requests()                             # what clients sent (headers lower-cased)
    d.stop()

Instance dicts: node (required), address ("127.0.0.1"), service_address (None =
same as address; "" = empty, clients must use Node.Address), port (5432),
tags ([]), serf ("passing": the node's serfHealth status), check ("passing":
the service check `service:<ID>` status; None = no service check),
service_id ("<service>/<node>", Patroni style), meta ({}), node_meta ({}),
extra_checks ([{"CheckID", "Status", "ServiceID"?}]: e.g. a maintenance check).

Modes: ok; error (HTTP 500 "No cluster leader"); garbage (200, non-JSON body);
reset_index (not a lasting mode: every index goes back to 1, as reset_index());
hang (accept, read the request, answer nothing until the mode changes or stop());
refuse (the listening socket is closed: connection refused; in-flight requests
are reset); reset (connections are accepted and reset after the request is read).
Requests waiting in a blocking query or in `hang` wake on every mode change and
are answered per the new mode.

Test controls over HTTP (for shell bench scripts), served on the main port and,
with control_port / --control-port, on a second port that stays open in `refuse`:

    PUT  /_test/services/<name>     body: JSON list of instance dicts
    POST /_test/bump/<name>         raise the index without changing the content
    POST /_test/check?service=S&node=N&status=critical   service check status
    POST /_test/serf?node=N&status=critical              node check status
    POST /_test/mode?mode=M         (or body {"mode": M} or the bare word)
    POST /_test/reset_index?service=S&to=1   (service omitted: every service)
    GET  /_test/requests            recorded requests (JSON); DELETE clears them
    GET  /_test/state               mode, services, indexes

Script: consul_double.py --port N [--host H] [--control-port M]
        [--service NAME --instances JSON]; runs until SIGINT/SIGTERM.
"""

import argparse
import json
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

MODES = ("ok", "error", "garbage", "hang", "refuse", "reset")
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
HANG_LIMIT = 900.0  # a hung request is dropped after this long, whatever the mode
GARBAGE_BODY = b"<html><body>502 Bad Gateway</body></html>{\"not\": json"

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text):
    """Go's time.ParseDuration ("60s", "5m", "100ms", "1m30s", "1.5s"); seconds as float."""
    s = text.strip()
    sign = 1.0
    if s and s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_bool_param(values):
    """Consul's boolean query flags: present and empty means true."""
    v = values[-1]
    if v == "":
        return True
    if v in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if v in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(v)


# --------------------------------------------------------------------------- HTTP plumbing shared with PatroniDouble

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, addr, double, control_only=False):
        self.double = double
        self.control_only = control_only
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TestDouble/1.0"
    timeout = 30  # an idle keep-alive connection is closed after this long

    def log_message(self, fmt, *args):  # quiet
        pass

    def _go(self):
        try:
            self.server.double._dispatch(self)
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _go


class Request:
    """One request as the double saw it (in `requests()`): method, path (decoded),
    query (dict name -> list of values), raw_query, headers (lower-case names),
    time (arrival, time.monotonic()), answered (monotonic time or None), status."""

    def __init__(self, method, path, raw_query, headers):
        self.method = method
        self.path = path
        self.raw_query = raw_query
        self.query = parse_qs(raw_query, keep_blank_values=True)
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.time = time.monotonic()
        self.answered = None
        self.status = None

    def param(self, name, default=None):
        v = self.query.get(name)
        return v[-1] if v else default

    def as_dict(self):
        return {"method": self.method, "path": self.path, "raw_query": self.raw_query, "query": self.query,
                "headers": self.headers, "time": self.time, "answered": self.answered, "status": self.status}

    def __repr__(self):
        return f"<{self.method} {self.path}?{self.raw_query} -> {self.status}>"


class HttpDouble:
    """Server lifecycle, modes, request recording and the /_test/ control API;
    subclasses implement _serve(handler, request) for their own API."""

    ERROR_STATUS = 500
    ERROR_BODY = b"No cluster leader"

    def __init__(self, port=0, host="127.0.0.1", control_port=None):
        self.host = host
        self.port = port
        self._control_port = control_port
        self._cond = threading.Condition()
        self._listen_lock = threading.Lock()
        self._mode = "ok"
        self._mode_gen = 0
        self._stopped = False
        self._requests = []
        self._httpd = None
        self._control_httpd = None

    # -- lifecycle

    def start(self):
        self._httpd = self._serve_on(self.port)
        self.port = self._httpd.server_address[1]
        if self._control_port is not None:
            self._control_httpd = self._serve_on(self._control_port, control_only=True)
            self._control_port = self._control_httpd.server_address[1]
        return self

    def _serve_on(self, port, control_only=False):
        httpd = _Server((self.host, port), self, control_only)
        t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                             name=f"{type(self).__name__}:{port}")
        t.start()
        return httpd

    def stop(self):
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        with self._listen_lock:
            for srv in (self._httpd, self._control_httpd):
                if srv is not None:
                    srv.shutdown()
                    srv.server_close()
            self._httpd = self._control_httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    @property
    def control_url(self):
        """Where /_test/ answers even in `refuse` mode (needs control_port)."""
        port = self._control_port if self._control_port is not None else self.port
        return f"http://{self.host}:{port}"

    # -- modes

    @property
    def mode(self):
        return self._mode

    def set_mode(self, mode):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        with self._cond:
            self._mode = mode
            self._mode_gen += 1
            self._cond.notify_all()
        with self._listen_lock:
            if self._stopped:
                return
            if mode == "refuse" and self._httpd is not None:
                self._httpd.shutdown()
                self._httpd.server_close()
                self._httpd = None
            elif mode != "refuse" and self._httpd is None:
                self._httpd = self._serve_on(self.port)

    # -- recording

    def requests(self, path_prefix=None):
        with self._cond:
            return [r for r in self._requests if path_prefix is None or r.path.startswith(path_prefix)]

    def clear_requests(self):
        with self._cond:
            self._requests.clear()

    def wait_for_requests(self, n, path_prefix=None, timeout=5.0):
        """Blocks until at least n requests (matching path_prefix) arrived; returns them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self._requests if path_prefix is None or r.path.startswith(path_prefix)]
                left = deadline - time.monotonic()
                if len(got) >= n or left <= 0:
                    return got
                self._cond.wait(min(left, 0.1))

    # -- request handling

    def _dispatch(self, h):
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        if path.startswith("/_test/"):
            return self._control_request(h, path, parts.query)
        if h.server.control_only:
            return self._send(h, 404, b"control port: only /_test/ here\n", "text/plain")
        req = Request(h.command, path, parts.query, h.headers)
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()
        deadline = time.monotonic() + HANG_LIMIT
        while True:
            with self._cond:
                while self._mode == "hang" and not self._stopped and time.monotonic() < deadline:
                    self._cond.wait(0.5)
                mode, stopped, gen = self._mode, self._stopped, self._mode_gen
            if stopped or mode == "hang":
                return self._drop(h, req)
            if mode in ("refuse", "reset"):
                return self._reset(h, req)
            if mode == "error":
                return self._send(h, self.ERROR_STATUS, self.ERROR_BODY, "text/plain; charset=utf-8", req=req,
                                  headers=self._error_headers())
            if mode == "garbage":
                return self._send(h, 200, GARBAGE_BODY, "application/json", req=req, headers=self._garbage_headers())
            if self._serve(h, req, gen) is not False:
                return
            # False: a blocking wait was cut short by a mode change; answer per the new mode

    def _error_headers(self):
        return {}

    def _garbage_headers(self):
        return {}

    def _interrupted(self, gen):
        """Under self._cond: the wait must end (stop, or the mode changed)."""
        return self._stopped or self._mode_gen != gen

    def _send(self, h, status, body, ctype, req=None, headers=None):
        if isinstance(body, str):
            body = body.encode()
        if req is not None:  # before the answer leaves, so a client that got it sees it recorded
            self._answered(req, status)
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            h.send_header(k, str(v))
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _send_json(self, h, status, obj, req=None, headers=None):
        return self._send(h, status, json.dumps(obj, indent=None).encode(), "application/json", req, headers)

    def _answered(self, req, status):
        with self._cond:
            req.answered = time.monotonic()
            req.status = status
            self._cond.notify_all()

    def _drop(self, h, req):
        """Closes without an answer."""
        h.close_connection = True
        self._answered(req, 0)
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _reset(self, h, req):
        """Closes with a TCP RST (SO_LINGER 0)."""
        h.close_connection = True
        self._answered(req, -1)
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.rfile.close()
            h.connection.close()
        except OSError:
            pass

    # -- /_test/ control API

    def _control_request(self, h, path, raw_query):
        q = {k: v[-1] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw.decode(errors="replace").strip()
        try:
            out = self._control(h.command, path[len("/_test/"):], q, body)
        except (ValueError, KeyError, TypeError) as e:
            return self._send_json(h, 400, {"error": str(e)})
        if out is None:
            return self._send_json(h, 404, {"error": f"unknown control {h.command} {path}"})
        return self._send_json(h, 200, out)

    def _control(self, method, what, q, body):
        if what == "mode" and method in ("POST", "PUT"):
            mode = q.get("mode") or (body.get("mode") if isinstance(body, dict) else body)
            self.set_mode(mode)
            return {"mode": self._mode}
        if what == "mode" and method == "GET":
            return {"mode": self._mode}
        if what == "requests" and method == "GET":
            return [r.as_dict() for r in self.requests(q.get("path"))]
        if what == "requests" and method in ("DELETE", "POST"):
            self.clear_requests()
            return {"cleared": True}
        if what == "state" and method == "GET":
            return self.state()
        return None

    def state(self):
        with self._cond:
            return {"mode": self._mode, "url": self.url}


# --------------------------------------------------------------------------- Consul

class _Service:
    def __init__(self, index):
        self.index = index
        self.instances = []  # normalized instance dicts
        self.abandon = 0     # raised by reset_index: blocked queries answer at once


class ConsulDouble(HttpDouble):
    def __init__(self, port=0, host="127.0.0.1", control_port=None, datacenter="dc1", strict_dc=False):
        super().__init__(port, host, control_port)
        self.datacenter = datacenter
        self.strict_dc = strict_dc  # True: a dc other than `datacenter` gets 500 "No path to datacenter"
        self._raft = 10           # the global Raft index; every change takes the next one
        self._services = {}
        self._node_index = {}     # node name -> CreateIndex
        self._service_index = {}  # service ID -> (CreateIndex, ModifyIndex, instance as last set)

    # -- test controls

    def set_instances(self, service, instances):
        """Replaces the instances of `service`; raises its index (even when nothing changed,
        like an idempotent re-registration)."""
        norm = [self._normalize(service, dict(i)) for i in instances]
        with self._cond:
            self._raft += 1
            svc = self._svc(service)
            for inst in norm:
                self._node_index.setdefault(inst["node"], self._raft)
                prev = self._service_index.get(inst["service_id"])
                if prev is None:
                    self._service_index[inst["service_id"]] = (self._raft, self._raft, inst)
                elif prev[2] != inst:
                    self._service_index[inst["service_id"]] = (prev[0], self._raft, inst)
            svc.instances = norm
            svc.index = self._raft
            self._cond.notify_all()
        return self.index(service)

    def instances(self, service):
        with self._cond:
            return [dict(i) for i in self._svc(service).instances]

    def bump(self, service):
        """Raises the index without changing the answer (a return that is not a change)."""
        return self.set_instances(service, self.instances(service))

    def set_check(self, service, node, status):
        """Sets the service check status of `node`'s instance of `service`."""
        insts = self.instances(service)
        hit = [i for i in insts if i["node"] == node]
        if not hit:
            raise KeyError(f"no instance of {service} on node {node}")
        for i in hit:
            i["check"] = status
        return self.set_instances(service, insts)

    def set_serf(self, node, status):
        """Sets the serfHealth status of `node` (every service on it changes)."""
        with self._cond:
            names = [n for n, s in self._services.items() if any(i["node"] == node for i in s.instances)]
        if not names:
            raise KeyError(f"no instance on node {node}")
        for name in names:
            insts = self.instances(name)
            for i in insts:
                if i["node"] == node:
                    i["serf"] = status
            self.set_instances(name, insts)

    def set_mode(self, mode):
        """As HttpDouble.set_mode, plus "reset_index": every service's index goes back
        to 1 (see reset_index); the mode itself does not change."""
        if mode == "reset_index":
            return self.reset_index()
        return super().set_mode(mode)

    def index(self, service):
        with self._cond:
            return self._svc(service).index

    def reset_index(self, service=None, to=1):
        """Makes the index go backwards (snapshot restore): the service's (or every
        service's) index becomes `to`, and blocked queries answer at once with it."""
        to = max(0, int(to))
        with self._cond:
            names = [service] if service is not None else list(self._services)
            for name in names:
                svc = self._svc(name)
                svc.index = to
                svc.abandon += 1
            if service is None:
                self._raft = to
            self._cond.notify_all()

    def state(self):
        with self._cond:
            return {"mode": self._mode, "url": self.url, "datacenter": self.datacenter,
                    "services": {n: {"index": s.index, "instances": s.instances} for n, s in self._services.items()}}

    # -- internals

    def _svc(self, name):
        svc = self._services.get(name)
        if svc is None:
            svc = self._services[name] = _Service(max(1, self._raft))
        return svc

    def _normalize(self, service, i):
        if "node" not in i:
            raise ValueError("an instance needs a node name")
        i.setdefault("address", "127.0.0.1")
        if i.get("service_address") is None:
            i["service_address"] = i["address"]
        i["port"] = int(i.get("port", 5432))
        i["tags"] = list(i.get("tags") or [])
        i.setdefault("serf", "passing")
        i.setdefault("check", "passing")
        i.setdefault("service_id", f"{service}/{i['node']}")
        i["meta"] = dict(i.get("meta") or {})
        i["node_meta"] = dict(i.get("node_meta") or {"consul-network-segment": ""})
        i["extra_checks"] = [dict(c) for c in (i.get("extra_checks") or [])]
        return i

    def _entry(self, service, i):
        node_idx = self._node_index.get(i["node"], 1)
        create, modify, _ = self._service_index.get(i["service_id"], (1, 1, None))
        node = {
            "ID": str(uuid.uuid5(uuid.NAMESPACE_DNS, i["node"])),
            "Node": i["node"],
            "Address": i["address"],
            "Datacenter": self.datacenter,
            "TaggedAddresses": {"lan": i["address"], "lan_ipv4": i["address"],
                                "wan": i["address"], "wan_ipv4": i["address"]},
            "Meta": i["node_meta"],
            "CreateIndex": node_idx, "ModifyIndex": node_idx,
        }
        svc_tagged = {}
        if i["service_address"]:
            svc_tagged = {"lan_ipv4": {"Address": i["service_address"], "Port": i["port"]},
                          "wan_ipv4": {"Address": i["service_address"], "Port": i["port"]}}
        svc = {
            "ID": i["service_id"],
            "Service": service,
            "Tags": list(i["tags"]),
            "Address": i["service_address"],
            "TaggedAddresses": svc_tagged,
            "Meta": i["meta"],
            "Port": i["port"],
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": True,
            "CreateIndex": create, "ModifyIndex": modify,
        }
        checks = [{
            "Node": i["node"], "CheckID": "serfHealth", "Name": "Serf Health Status",
            "Status": i["serf"], "Notes": "",
            "Output": "Agent alive and reachable" if i["serf"] == "passing" else "Agent not live or unreachable",
            "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
            "Definition": {}, "CreateIndex": node_idx, "ModifyIndex": node_idx,
        }]
        if i["check"] is not None:
            checks.append({
                "Node": i["node"], "CheckID": f"service:{i['service_id']}",
                "Name": f"Service '{service}' check", "Status": i["check"], "Notes": "",
                "Output": f"HTTP GET http://{i['address']}:8008/: {'200 OK' if i['check'] == 'passing' else '503'}",
                "ServiceID": i["service_id"], "ServiceName": service, "ServiceTags": list(i["tags"]),
                "Type": "http", "Definition": {}, "CreateIndex": create, "ModifyIndex": modify,
            })
        for c in i["extra_checks"]:
            sid = c.get("ServiceID", "")
            checks.append({
                "Node": i["node"], "CheckID": c.get("CheckID", "_extra"), "Name": c.get("Name", c.get("CheckID", "")),
                "Status": c.get("Status", "critical"), "Notes": c.get("Notes", ""), "Output": c.get("Output", ""),
                "ServiceID": sid, "ServiceName": service if sid else "", "ServiceTags": list(i["tags"]) if sid else [],
                "Type": c.get("Type", ""), "Definition": {}, "CreateIndex": modify, "ModifyIndex": modify,
            })
        return {"Node": node, "Service": svc, "Checks": checks}

    def _consul_headers(self, index):
        return {"X-Consul-Index": index, "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0",
                "X-Consul-Effective-Consistency": "leader", "Vary": "Accept-Encoding"}

    def _serve(self, h, req, gen):
        path = req.path
        if path.startswith("/v1/health/service/"):
            if req.method not in ("GET", "HEAD"):
                return self._send(h, 405, f"method {req.method} not allowed", "text/plain", req=req)
            return self._health_service(h, req, gen, path[len("/v1/health/service/"):])
        if path == "/v1/status/leader" and req.method == "GET":
            return self._send_json(h, 200, "127.0.0.1:8300", req=req)
        if path == "/v1/agent/self" and req.method == "GET":
            return self._send_json(h, 200, {"Config": {"Datacenter": self.datacenter, "NodeName": "consul-double",
                                                       "Version": "1.15.4"}, "Member": {}}, req=req)
        return self._send(h, 404, b"404 page not found\n", "text/plain; charset=utf-8", req=req)

    def _health_service(self, h, req, gen, service):
        if not service:
            return self._send(h, 400, b"Missing service name", "text/plain", req=req)
        try:
            index = int(req.param("index", "0") or "0")
            if index < 0:
                raise ValueError
        except ValueError:
            return self._send(h, 400, b"Invalid index", "text/plain", req=req)
        wait = DEFAULT_WAIT
        if "wait" in req.query:
            try:
                wait = parse_go_duration(req.param("wait"))
            except ValueError:
                return self._send(h, 400, b"Invalid wait time", "text/plain", req=req)
            if wait <= 0:
                wait = DEFAULT_WAIT
        wait = min(wait, MAX_WAIT)
        try:
            passing = parse_bool_param(req.query["passing"]) if "passing" in req.query else False
        except ValueError:
            return self._send(h, 400, b"Invalid value for ?passing", "text/plain", req=req)
        tags = [t.lower() for t in req.query.get("tag", [])]
        dc = req.param("dc", "")
        if dc and dc != self.datacenter and self.strict_dc:
            return self._send(h, 500, b"No path to datacenter", "text/plain", req=req)

        with self._cond:
            svc = self._svc(service)
            if index > 0 and svc.index <= index:
                deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
                abandon = svc.abandon
                while (svc.index <= index and svc.abandon == abandon and not self._interrupted(gen)):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, 1.0))
                if self._stopped:
                    return self._drop(h, req)
                if self._mode_gen != gen:
                    return False
            cur = svc.index
            entries = []
            for inst in svc.instances:
                e = self._entry(service, inst)
                if passing and any(c["Status"] != "passing" for c in e["Checks"]):
                    continue
                have = {t.lower() for t in e["Service"]["Tags"]}
                if any(t not in have for t in tags):
                    continue
                entries.append(e)
        return self._send_json(h, 200, entries, req=req, headers=self._consul_headers(cur))

    def _garbage_headers(self):
        with self._cond:
            return self._consul_headers(self._raft)

    def _control(self, method, what, q, body):
        if what.startswith("services/") and method in ("PUT", "POST"):
            name = what[len("services/"):]
            if not isinstance(body, list):
                raise ValueError("body must be a JSON list of instances")
            return {"service": name, "index": self.set_instances(name, body)}
        if what.startswith("services/") and method == "GET":
            return self.instances(what[len("services/"):])
        if what.startswith("bump/") and method in ("PUT", "POST"):
            name = what[len("bump/"):]
            return {"service": name, "index": self.bump(name)}
        if what == "check" and method in ("PUT", "POST"):
            return {"index": self.set_check(q["service"], q["node"], q["status"])}
        if what == "serf" and method in ("PUT", "POST"):
            self.set_serf(q["node"], q["status"])
            return {"node": q["node"], "status": q["status"]}
        if what == "reset_index" and method in ("PUT", "POST"):
            self.reset_index(q.get("service") or None, int(q.get("to", "1")))
            return {"reset": q.get("service") or "*", "to": int(q.get("to", "1"))}
        return super()._control(method, what, q, body)


# --------------------------------------------------------------------------- script

def run_script(make_double, description, extra_args=None, setup=None, argv=None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--control-port", type=int, default=None,
                   help="also serve /_test/ here (stays open in refuse mode)")
    if extra_args:
        extra_args(p)
    args = p.parse_args(argv)
    d = make_double(args)
    if setup:
        setup(d, args)
    d.start()
    print(f"listening on {d.url} control {d.control_url}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    while not done.wait(0.5):
        pass
    d.stop()
    return 0


def main(argv=None):
    def extra(p):
        p.add_argument("--datacenter", default="dc1")
        p.add_argument("--service", default=None, help="service to preload with --instances")
        p.add_argument("--instances", default="[]", help="JSON list of instance dicts")

    def setup(d, args):
        if args.service:
            d.set_instances(args.service, json.loads(args.instances))

    return run_script(lambda a: ConsulDouble(a.port, a.host, a.control_port, a.datacenter),
                      "Consul HTTP API test double", extra, setup, argv)


if __name__ == "__main__":
    sys.exit(main())
