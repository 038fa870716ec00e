#!/usr/bin/python3
"""A Patroni REST API test double (Python 3 stdlib only): GET /cluster in the
shape of consul-patroni.md §5.2.

    d = PatroniDouble().start()
    d.set_members([{"name": "pg1", "role": "leader", "host": "10.0.0.1", "port": 5432},
                   {"name": "pg2", "role": "replica", "host": "10.0.0.2", "port": 5432, "lag": 1024}])
    d.set_mode("error")      # ok | error (503) | garbage | hang | refuse | reset (see consul_double.py)
    d.requests("/cluster")
    d.stop()

Member dicts: name (required), role ("replica"; leader | standby_leader |
sync_standby | quorum_standby | replica), state ("running" for a leader, else
"streaming"), host ("127.0.0.1"), port (5432), api_url
("http://<host>:8008/patroni"), timeline (1), lag (0 for non-leaders; an int or
"unknown"; key absent from a leader), tags ({} = omitted); other keys are passed through.

HTTP controls: PUT /_test/members (JSON list), POST /_test/mode?mode=M,
GET|DELETE /_test/requests, GET /_test/state.
Script: patroni_double.py --port N [--control-port M] [--members JSON].
"""

import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from consul_double import HttpDouble, run_script  # noqa: E402


class PatroniDouble(HttpDouble):
    ERROR_STATUS = 503
    ERROR_BODY = b"Service Unavailable"

    def __init__(self, port=0, host="127.0.0.1", control_port=None, scope="demo"):
        super().__init__(port, host, control_port)
        self.scope = scope
        self._members = []
        self._pause = False
        self._lock = threading.Lock()

    def set_members(self, members):
        norm = [self._normalize(dict(m)) for m in members]
        with self._lock:
            self._members = norm

    def members(self):
        with self._lock:
            return [dict(m) for m in self._members]

    def set_pause(self, pause):
        with self._lock:
            self._pause = bool(pause)

    def cluster(self):
        with self._lock:
            out = {"members": [dict(m) for m in self._members], "scope": self.scope}
            if self._pause:
                out["pause"] = True
            return out

    def state(self):
        s = super().state()
        s.update(self.cluster())
        return s

    @staticmethod
    def _normalize(m):
        if "name" not in m:
            raise ValueError("a member needs a name")
        role = m.setdefault("role", "replica")
        leader = role in ("leader", "standby_leader")
        m.setdefault("state", "running" if leader else "streaming")
        m.setdefault("host", "127.0.0.1")
        m["port"] = int(m.get("port", 5432))
        m.setdefault("api_url", f"http://{m['host']}:8008/patroni")
        m.setdefault("timeline", 1)
        if not leader:
            m.setdefault("lag", 0)
        if not m.get("tags"):
            m.pop("tags", None)
        # the key order of patroni/utils.py::cluster_as_json
        order = ["name", "role", "state", "api_url", "host", "port", "timeline", "tags",
                 "receive_lag", "receive_lsn", "replay_lag", "replay_lsn", "lag", "lsn"]
        return {k: m[k] for k in order + [k for k in m if k not in order] if k in m}

    def _serve(self, h, req, gen):
        if req.path.rstrip("/") == "/cluster" and req.method in ("GET", "HEAD"):
            return self._send_json(h, 200, self.cluster(), req=req)
        return self._send(h, 404, b"", "text/html", req=req)

    def _control(self, method, what, q, body):
        if what == "members" and method in ("PUT", "POST"):
            if not isinstance(body, list):
                raise ValueError("body must be a JSON list of members")
            self.set_members(body)
            return {"members": len(body)}
        if what == "members" and method == "GET":
            return self.members()
        if what == "pause" and method in ("PUT", "POST"):
            self.set_pause(q.get("pause", "true") in ("1", "true", "on"))
            return {"pause": self._pause}
        return super()._control(method, what, q, body)


def main(argv=None):
    def extra(p):
        p.add_argument("--scope", default="demo")
        p.add_argument("--members", default="[]", help="JSON list of member dicts")

    return run_script(lambda a: PatroniDouble(a.port, a.host, a.control_port, a.scope),
                      "Patroni REST API test double", extra,
                      lambda d, a: d.set_members(json.loads(a.members)), argv)


if __name__ == "__main__":
    sys.exit(main())
