"""Self-test of the test LDAP server (ldap_server.py), not of the pooler.

Checks the directory the LDAP-authentication tests rely on: simple binds of the
users with their plain-text passwords, anonymous and bound (cn=reader) searches
that never show userPassword, a search+bind done on one connection (search as
the reader, then bind as the user found: what a search+bind client does),
runtime changes as the rootdn, ldaps and StartTLS, and that stop() ends slapd.
"""

import os
import re
import socket
import subprocess

import pytest

import helpers
from helpers import PASSWORDS
from ldap_server import LdapServer, ldap_server  # noqa: F401 (fixture)
from test_tls import _make_ca, _make_leaf

pytestmark = pytest.mark.pgrouter_only("tests the test LDAP server")

INVALID_CREDENTIALS = 49


def dn_lines(out):
    return [line[len("dn: "):] for line in out.splitlines() if line.startswith("dn: ")]


# --------------------------------------------------------------------------- a minimal LDAPv3 client

def _ber(tag, payload):
    n = len(payload)
    if n < 0x80:
        length = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + length + payload


def _int(tag, v):
    return _ber(tag, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big"))


def _str(v, tag=0x04):
    return _ber(tag, v.encode())


def _tlv(buf, pos):
    """(tag, value, next position) of the BER element at buf[pos:]."""
    tag, n = buf[pos], buf[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(buf[pos:pos + k], "big")
        pos += k
    return tag, buf[pos:pos + n], pos + n


class MiniLdap:
    """Simple bind and equality search over one TCP connection (no TLS)."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection((helpers.HOST, port), timeout=timeout)
        self.msgid = 0
        self.buf = b""

    def close(self):
        self.sock.close()

    def _send(self, op):
        self.msgid += 1
        self.sock.sendall(_ber(0x30, _int(0x02, self.msgid) + op))
        return self.msgid

    def _recv(self):
        """The protocolOp (tag, value) of the next LDAPMessage."""
        while True:
            if len(self.buf) >= 2:
                try:
                    _, msg, end = _tlv(self.buf, 0)
                except IndexError:
                    end = len(self.buf) + 1
                if end <= len(self.buf):
                    self.buf = self.buf[end:]
                    _, _, pos = _tlv(msg, 0)  # messageID
                    tag, value, _ = _tlv(msg, pos)
                    return tag, value
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the LDAP server closed the connection")
            self.buf += chunk

    def bind(self, dn, password):
        """Simple bind; returns the LDAP resultCode."""
        self._send(_ber(0x60, _int(0x02, 3) + _str(dn) + _str(password, 0x80)))
        tag, value = self._recv()
        assert tag == 0x61, f"expected a BindResponse, got tag {tag:#x}"
        return int.from_bytes(_tlv(value, 0)[1], "big")

    def search(self, base, attr, value, attrs=()):
        """Subtree search (attr=value); returns (resultCode, {dn: {attribute: [values]}})."""
        filt = _ber(0xA3, _str(attr) + _str(value))
        req = (_str(base) + _int(0x0A, 2) + _int(0x0A, 0) + _int(0x02, 0) + _int(0x02, 0) + _ber(0x01, b"\x00")
               + filt + _ber(0x30, b"".join(_str(a) for a in attrs)))
        self._send(_ber(0x63, req))
        entries = {}
        while True:
            tag, body = self._recv()
            if tag == 0x64:  # SearchResultEntry
                _, dn, pos = _tlv(body, 0)
                _, attrlist, _ = _tlv(body, pos)
                got, p = {}, 0
                while p < len(attrlist):
                    _, pa, p = _tlv(attrlist, p)
                    _, name, q = _tlv(pa, 0)
                    _, vals, _ = _tlv(pa, q)
                    vs, r = [], 0
                    while r < len(vals):
                        _, v, r = _tlv(vals, r)
                        vs.append(v.decode())
                    got[name.decode()] = vs
                entries[dn.decode()] = got
            elif tag == 0x65:  # SearchResultDone
                return int.from_bytes(_tlv(body, 0)[1], "big"), entries


# --------------------------------------------------------------------------- tests

def test_user_simple_bind(ldap_server):
    dn = ldap_server.user_dn("app_plain")
    assert dn == "uid=app_plain,ou=people,dc=example,dc=net"
    ok = ldap_server.whoami(dn=dn, password=PASSWORDS["app_plain"])
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"dn:{dn}"
    bad = ldap_server.whoami(dn=dn, password=PASSWORDS["app_plain"] + "x")
    assert bad.returncode == INVALID_CREDENTIALS, (bad.returncode, bad.stdout, bad.stderr)
    # Every fixture user has its own password, and only that one works.
    for user in ("app_scram", "app_md5"):
        udn = ldap_server.user_dn(user)
        assert ldap_server.whoami(dn=udn, password=PASSWORDS[user]).returncode == 0, user
        assert ldap_server.whoami(dn=udn, password=PASSWORDS["app_plain"]).returncode == INVALID_CREDENTIALS, user


def test_anonymous_search_hides_password(ldap_server):
    p = ldap_server.search("(uid=app_md5)", "dn")
    assert p.returncode == 0, p.stderr
    assert dn_lines(p.stdout) == ["uid=app_md5,ou=people,dc=example,dc=net"], p.stdout

    p = ldap_server.search("(uid=app_md5)", "userPassword", "mail")
    assert p.returncode == 0, p.stderr
    assert dn_lines(p.stdout) == ["uid=app_md5,ou=people,dc=example,dc=net"], p.stdout
    assert "mail: app_md5@example.net" in p.stdout.splitlines(), p.stdout  # other attributes are readable
    assert "userpassword" not in p.stdout.lower(), p.stdout

    # The attribute is there (the rootdn sees it): hidden, not missing.
    p = ldap_server.search("(uid=app_md5)", "userPassword", dn=LdapServer.ADMIN_DN, password=LdapServer.ADMIN_PW)
    assert p.returncode == 0, p.stderr
    assert "userpassword:" in p.stdout.lower(), p.stdout


def test_reader_bound_search(ldap_server):
    p = ldap_server.search("(uid=app_scram)", "uid", "userPassword", dn=LdapServer.READER_DN,
                           password=LdapServer.READER_PW)
    assert p.returncode == 0, p.stderr
    assert dn_lines(p.stdout) == ["uid=app_scram,ou=people,dc=example,dc=net"], p.stdout
    assert "uid: app_scram" in p.stdout.splitlines(), p.stdout
    assert "userpassword" not in p.stdout.lower(), p.stdout
    who = ldap_server.whoami(dn=LdapServer.READER_DN, password=LdapServer.READER_PW)
    assert who.stdout.strip() == f"dn:{LdapServer.READER_DN}", (who.stdout, who.stderr)
    bad = ldap_server.search("(uid=app_scram)", "dn", dn=LdapServer.READER_DN, password="not-the-reader-pw")
    assert bad.returncode == INVALID_CREDENTIALS, (bad.returncode, bad.stdout, bad.stderr)
    assert dn_lines(bad.stdout) == []


def test_search_then_bind_on_one_connection(ldap_server):
    """Bind as the reader, search the user, then bind as the user on the same
    connection, as search+bind clients do: the userPassword ACL (auth for
    anonymous) must let that second bind through although the connection is bound."""
    c = MiniLdap(ldap_server.port)
    try:
        assert c.bind(LdapServer.READER_DN, LdapServer.READER_PW) == 0
        rc, entries = c.search(LdapServer.BASE, "uid", "app_scram", ["uid", "userPassword"])
        assert rc == 0
        assert list(entries) == ["uid=app_scram,ou=people,dc=example,dc=net"], entries
        assert entries["uid=app_scram,ou=people,dc=example,dc=net"] == {"uid": ["app_scram"]}, entries
        dn = next(iter(entries))
        assert c.bind(dn, "wrong-password") == INVALID_CREDENTIALS
        assert c.bind(LdapServer.READER_DN, LdapServer.READER_PW) == 0
        assert c.bind(dn, PASSWORDS["app_scram"]) == 0
        # anonymous again, then search + bind once more
        assert c.bind("", "") == 0
        rc, entries = c.search(LdapServer.BASE, "uid", "app_plain")
        assert (rc, list(entries)) == (0, ["uid=app_plain,ou=people,dc=example,dc=net"])
        assert c.bind(next(iter(entries)), PASSWORDS["app_plain"]) == 0
        rc, entries = c.search(LdapServer.BASE, "uid", "nobody-like-this")
        assert (rc, entries) == (0, {})
    finally:
        c.close()


def test_runtime_changes(ldap_server):
    dn = ldap_server.user_dn("app_md5")
    ldap_server.set_password("app_md5", "changed-at-runtime")
    assert ldap_server.whoami(dn=dn, password="changed-at-runtime").returncode == 0
    assert ldap_server.whoami(dn=dn, password=PASSWORDS["app_md5"]).returncode == INVALID_CREDENTIALS

    ldap_server.add_user("ldap_only", "ldap-only-secret")
    p = ldap_server.search("(uid=ldap_only)", "mail")
    assert dn_lines(p.stdout) == ["uid=ldap_only,ou=people,dc=example,dc=net"], p.stdout
    assert "mail: ldap_only@example.net" in p.stdout.splitlines(), p.stdout
    ok = ldap_server.whoami(dn=ldap_server.user_dn("ldap_only"), password="ldap-only-secret")
    assert ok.returncode == 0, ok.stderr
    with pytest.raises(RuntimeError, match="ldapadd"):
        ldap_server.add_user("ldap_only", "again")  # already exists


def test_tls_ldaps_and_starttls(tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    try:
        _make_ca(pki, "ca", "ldap test CA")
        _make_ca(pki, "other_ca", "some other CA")
        _make_leaf(pki, "server", "127.0.0.1", "ca", san="IP:127.0.0.1,DNS:localhost")
    except helpers.Missing as e:
        pytest.fail(f"missing dependency: {e}", pytrace=False)
    ca, other_ca = pki / "ca.crt", pki / "other_ca.crt"
    dn, pw = LdapServer.user_dn("app_plain"), PASSWORDS["app_plain"]
    with LdapServer(tmp_path / "ldap", {"app_plain": pw}, tls=(pki / "server.crt", pki / "server.key")) as srv:
        assert srv.tls_port and srv.tls_port != srv.port and srv.tls_port < 32768
        assert srv.ldaps_url == f"ldaps://127.0.0.1:{srv.tls_port}"
        ldaps = subprocess.run(["ldapwhoami", "-x", "-H", srv.ldaps_url, "-D", dn, "-w", pw],
                               env=dict(srv.client_env(), LDAPTLS_CACERT=str(ca)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
        assert ldaps.returncode == 0, ldaps.stderr
        assert ldaps.stdout.strip() == f"dn:{dn}"
        starttls = srv.whoami(dn=dn, password=pw, starttls=True, cacert=ca)
        assert starttls.returncode == 0, starttls.stderr
        assert starttls.stdout.strip() == f"dn:{dn}"
        # The certificate is really checked: another CA does not verify it.
        assert srv.whoami(srv.ldaps_url, dn, pw, cacert=other_ca).returncode != 0
        assert srv.whoami(dn=dn, password=pw, starttls=True, cacert=other_ca).returncode != 0
        # Both user binds that succeeded went over TLS (slapd logs the connection's ssf).
        ssfs = re.findall(r'BIND dn="uid=app_plain,ou=people,dc=example,dc=net" mech=SIMPLE bind_ssf=\d+ ssf=(\d+)',
                          srv.log())
        assert len(ssfs) >= 2 and all(int(s) > 0 for s in ssfs), ssfs


def test_no_tls_without_certificate(ldap_server):
    assert ldap_server.tls_port is None and ldap_server.ldaps_url is None
    p = ldap_server.whoami(dn=ldap_server.user_dn("app_plain"), password=PASSWORDS["app_plain"], starttls=True)
    assert p.returncode != 0, p.stdout


def test_stop_ends_slapd(tmp_path):
    srv = LdapServer(tmp_path / "ldap", {"app_plain": PASSWORDS["app_plain"]})
    srv.start()
    try:
        pid, port = srv.pid, srv.port
        assert srv.running()
        assert open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0] == b"/usr/sbin/slapd"
        # In the foreground: the process we started is slapd itself, not a parent that forked it.
        assert int(srv.pid_file.read_text().strip()) == pid
    finally:
        code = srv.stop()
    assert code == 0, f"slapd exit code {code}\n{srv.log()[-3000:]}"
    assert not srv.running()
    assert not os.path.exists(f"/proc/{pid}")
    with pytest.raises(OSError):
        socket.create_connection((helpers.HOST, port), timeout=2).close()
    # It starts again on the same database (and keeps what it holds).
    srv.start()
    try:
        assert srv.whoami(dn=srv.user_dn("app_plain"), password=PASSWORDS["app_plain"]).returncode == 0
    finally:
        srv.stop()
