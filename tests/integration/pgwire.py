"""A tiny raw PostgreSQL v3 wire client for the integration tests.

psycopg2 speaks only the simple query protocol and hides the SQLSTATE of login
errors; this client lets a test send exactly the bytes it wants (startup
packets, SSLRequest, Parse/Bind/Execute pipelines, half a COPY) and read
exactly what comes back. Every socket operation has a deadline.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct
import time

PROTOCOL_3_0 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


class WireError(Exception):
    """The peer closed the connection, timed out, or sent something unexpected."""


class PgError(Exception):
    """An ErrorResponse: fields maps the one-letter field code to its text."""

    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('S', 'ERROR')} {fields.get('C', '?????')}: {fields.get('M', '')}")

    @property
    def sqlstate(self):
        return self.fields.get("C")

    @property
    def message(self):
        return self.fields.get("M", "")


def parse_fields(payload):
    fields = {}
    i = 0
    while i < len(payload) and payload[i] != 0:
        code = chr(payload[i])
        end = payload.index(b"\0", i + 1)
        fields[code] = payload[i + 1:end].decode("utf-8", "replace")
        i = end + 1
    return fields


def cstr(s):
    return s.encode() + b"\0"


def message(type_byte, payload=b""):
    return type_byte + struct.pack("!I", len(payload) + 4) + payload


def startup_packet(params, version=PROTOCOL_3_0):
    body = struct.pack("!I", version)
    for k, v in params.items():
        body += cstr(k) + cstr(v)
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def parse_msg(sql, name="", param_types=()):
    return message(b"P", cstr(name) + cstr(sql) + struct.pack("!H", len(param_types))
                   + b"".join(struct.pack("!I", t) for t in param_types))


def bind_msg(params=(), portal="", stmt="", result_formats=()):
    body = cstr(portal) + cstr(stmt) + struct.pack("!H", 0) + struct.pack("!H", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            data = p if isinstance(p, bytes) else str(p).encode()
            body += struct.pack("!I", len(data)) + data
    body += struct.pack("!H", len(result_formats)) + b"".join(struct.pack("!H", f) for f in result_formats)
    return message(b"B", body)


def describe_msg(kind="P", name=""):
    return message(b"D", kind.encode() + cstr(name))


def execute_msg(portal="", max_rows=0):
    return message(b"E", cstr(portal) + struct.pack("!I", max_rows))


def close_msg(kind="S", name=""):
    return message(b"C", kind.encode() + cstr(name))


def sync_msg():
    return message(b"S")


def flush_msg():
    return message(b"H")


def query_msg(sql):
    return message(b"Q", cstr(sql))


def terminate_msg():
    return message(b"X")


def copy_data_msg(data):
    return message(b"d", data)


def copy_done_msg():
    return message(b"c")


def cancel_request(pid, key):
    return struct.pack("!IIII", 16, CANCEL_REQUEST_CODE, pid, key)


def md5_password(user, password, salt):
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


def parse_data_row(payload):
    (n,) = struct.unpack_from("!H", payload, 0)
    pos = 2
    row = []
    for _ in range(n):
        (ln,) = struct.unpack_from("!i", payload, pos)
        pos += 4
        if ln < 0:
            row.append(None)
        else:
            row.append(payload[pos:pos + ln].decode("utf-8", "replace"))
            pos += ln
    return row


class Result:
    """What one simple query (or one Sync-terminated pipeline) returned."""

    def __init__(self):
        self.rows = []
        self.tags = []
        self.notices = []
        self.errors = []
        self.messages = []   # (type, payload) in arrival order
        self.status = None   # transaction status from ReadyForQuery

    @property
    def error(self):
        return self.errors[0] if self.errors else None

    def types(self):
        return "".join(t.decode() for t, _ in self.messages)


class WireClient:
    def __init__(self, host, port, timeout=10.0):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.params = {}
        self.backend_key = None
        self.negotiate = None
        self.auth_requests = []   # authentication request codes seen during login
        self.login_notices = []   # NoticeResponse fields seen during login

    # -- raw I/O -------------------------------------------------------------

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WireError(f"timed out waiting for data ({len(self.buf)}/{n} bytes)")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buf)))
            except socket.timeout:
                raise WireError(f"timed out waiting for data ({len(self.buf)}/{n} bytes)") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return False
            self.buf += chunk
        return True

    def read_byte(self, timeout=None):
        """One raw byte (the answer to SSLRequest/GSSENCRequest); None on EOF."""
        deadline = time.monotonic() + (timeout or self.timeout)
        if not self._fill(1, deadline):
            return None
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def read_message(self, timeout=None):
        """(type, payload), or None when the peer closed the connection."""
        deadline = time.monotonic() + (timeout or self.timeout)
        if not self._fill(5, deadline):
            if self.buf:
                raise WireError(f"connection closed inside a message header: {self.buf!r}")
            return None
        t = self.buf[:1]
        (ln,) = struct.unpack_from("!I", self.buf, 1)
        if ln < 4:
            raise WireError(f"bad message length {ln} for type {t!r}")
        if not self._fill(1 + ln, deadline):
            raise WireError(f"connection closed inside message {t!r} ({len(self.buf)}/{1 + ln} bytes)")
        payload = self.buf[5:1 + ln]
        self.buf = self.buf[1 + ln:]
        return t, payload

    def wait_closed(self, timeout=None):
        """Read until EOF; return the messages seen. Raises WireError on timeout."""
        msgs = []
        while True:
            m = self.read_message(timeout)
            if m is None:
                return msgs
            msgs.append(m)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def terminate(self):
        try:
            self.send(terminate_msg())
        except OSError:
            pass
        self.close()

    def abort(self):
        """Close with a TCP RST, as a killed client process would look to a peer that still sends."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    # -- login ---------------------------------------------------------------

    def login(self, user, database, password=None, params=None, version=PROTOCOL_3_0, timeout=None):
        """Run startup + authentication until ReadyForQuery; raise PgError on ErrorResponse."""
        p = {"user": user, "database": database}
        p.update(params or {})
        self.send(startup_packet(p, version))
        scram = None
        while True:
            m = self.read_message(timeout)
            if m is None:
                raise WireError("connection closed during login")
            t, payload = m
            if t == b"E":
                raise PgError(parse_fields(payload))
            if t == b"v":
                minor, n = struct.unpack_from("!II", payload, 0)
                self.negotiate = (minor, [x.decode() for x in payload[8:].split(b"\0")[:n]])
            elif t == b"R":
                (code,) = struct.unpack_from("!I", payload, 0)
                self.auth_requests.append(code)
                if code == 0:
                    pass
                elif code == 3:
                    if password is None:
                        raise WireError("server asked for a cleartext password; none given")
                    self.send(message(b"p", cstr(password)))
                elif code == 5:
                    if password is None:
                        raise WireError("server asked for an md5 password; none given")
                    self.send(message(b"p", cstr(md5_password(user, password, payload[4:8]))))
                elif code == 10:
                    mechs = [x.decode() for x in payload[4:].split(b"\0") if x]
                    if "SCRAM-SHA-256" not in mechs:
                        raise WireError(f"no supported SASL mechanism in {mechs}")
                    if password is None:
                        raise WireError("server asked for SCRAM; no password given")
                    scram = _Scram(password)
                    first = scram.client_first().encode()
                    self.send(message(b"p", cstr("SCRAM-SHA-256") + struct.pack("!I", len(first)) + first))
                elif code == 11:
                    self.scram_server_first = payload[4:].decode()
                    self.send(message(b"p", scram.client_final(payload[4:].decode()).encode()))
                elif code == 12:
                    scram.verify_server_final(payload[4:].decode())
                else:
                    raise WireError(f"unsupported authentication request {code}")
            elif t == b"S":
                k, v = payload.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
            elif t == b"K":
                self.backend_key = struct.unpack("!II", payload[:8])
            elif t == b"N":
                self.login_notices.append(parse_fields(payload))
            elif t == b"Z":
                return self
            else:
                raise WireError(f"unexpected message {t!r} during login")

    # -- queries -------------------------------------------------------------

    def read_until_ready(self, timeout=None):
        """Collect messages up to and including ReadyForQuery."""
        r = Result()
        while True:
            m = self.read_message(timeout)
            if m is None:
                raise WireError(f"connection closed before ReadyForQuery (got {r.types()!r})")
            t, payload = m
            r.messages.append(m)
            if t == b"D":
                r.rows.append(parse_data_row(payload))
            elif t == b"C":
                r.tags.append(payload.rstrip(b"\0").decode())
            elif t == b"E":
                r.errors.append(PgError(parse_fields(payload)))
            elif t == b"N":
                r.notices.append(parse_fields(payload))
            elif t == b"S":
                k, v = payload.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
            elif t == b"Z":
                r.status = payload[:1].decode()
                return r

    def query(self, sql, timeout=None):
        self.send(query_msg(sql))
        return self.read_until_ready(timeout)

    def scalar(self, sql, timeout=None):
        r = self.query(sql, timeout)
        if r.error:
            raise r.error
        return r.rows[0][0]


def connect(host, port, user, database, password=None, params=None, timeout=10.0):
    c = WireClient(host, port, timeout)
    try:
        c.login(user, database, password, params)
    except BaseException:
        c.close()
        raise
    return c


class _Scram:
    """Client side of SCRAM-SHA-256 (RFC 5802/7677), without channel binding."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def client_first(self):
        return "n,," + self.first_bare

    def client_final(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise WireError("SCRAM server nonce does not extend ours")
        salt = base64.b64decode(attrs["s"])
        iters = int(attrs["i"])
        self.salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iters)
        client_key = hmac.new(self.salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        self.auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        sig = hmac.new(stored_key, self.auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def verify_server_final(self, server_final):
        attrs = dict(kv.split("=", 1) for kv in server_final.split(","))
        if "e" in attrs:
            raise WireError(f"SCRAM server error: {attrs['e']}")
        server_key = hmac.new(self.salted, b"Server Key", hashlib.sha256).digest()
        expected = hmac.new(server_key, self.auth_message, hashlib.sha256).digest()
        if base64.b64decode(attrs["v"]) != expected:
            raise WireError("SCRAM server signature mismatch")
