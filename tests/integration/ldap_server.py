"""A throwaway OpenLDAP slapd for the LDAP-authentication tests.

Everything lives in one work directory (slapd.conf, the mdb database, the log,
pid/args files): nothing under /etc/ldap is read or changed except the stock
schema files, and no system service is involved. slapd runs in the foreground
(-d) as a child of the test process and listens on 127.0.0.1 only.

Directory (base dc=example,dc=net):

    dc=example,dc=net                         dcObject + organization
    ou=people,dc=example,dc=net               organizationalUnit
    uid=<user>,ou=people,dc=example,dc=net    inetOrgPerson: uid, cn, sn,
                                              mail <user>@example.net,
                                              userPassword in plain text
    cn=reader,dc=example,dc=net               service account for search+bind
                                              (password READER_PW)
    rootdn cn=admin,dc=example,dc=net         (password ADMIN_PW; not an entry)

ACLs: userPassword can be used by anonymous to authenticate (a simple bind)
and read by nobody; everything else is readable by anonymous and by any bound
identity, so both anonymous and bound search+bind work. The rootdn bypasses
the ACLs (add_user / set_password use it).

Python use:

    with LdapServer(tmp_path / "ldap", {"alice": "secret"}) as srv:
        srv.url                      # "ldap://127.0.0.1:N"
        srv.user_dn("alice")         # "uid=alice,ou=people,dc=example,dc=net"
        srv.set_password("alice", "new")

    LdapServer(d, users, tls=(cert_file, key_file))   # + ldaps on srv.tls_port
                                                       #   (srv.ldaps_url) and
                                                       #   StartTLS on srv.port

Pytest: `from ldap_server import ldap_server  # noqa: F401 (fixture)`, then a
test taking `ldap_server` gets a started LdapServer holding app_plain,
app_scram and app_md5 with their helpers.PASSWORDS; it is stopped afterwards.
"""

import atexit
import base64
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import helpers
from helpers import PASSWORDS

SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

START_TIMEOUT = 20.0
STOP_GRACE = 10.0

_live = []  # servers to stop at interpreter exit, whatever happened


def _stop_all():
    for srv in list(_live):
        try:
            srv.stop()
        except Exception:
            pass


atexit.register(_stop_all)


# --------------------------------------------------------------------------- LDIF / DN text

_SAFE_LDIF = re.compile(r"[\x01-\x09\x0b\x0c\x0e-\x1f\x21-\x39\x3b\x3d-\x7f][\x01-\x09\x0b\x0c\x0e-\x7f]*")


def ldif_attr(name, value):
    """One `name: value` LDIF line, base64 (`name:: ...`) when the value is not a
    SAFE-STRING of RFC 2849 (leading space/colon/<, trailing space, non-ASCII...)."""
    value = str(value)
    if value == "" or (_SAFE_LDIF.fullmatch(value) and not value.endswith(" ")):
        return f"{name}: {value}"
    return f"{name}:: {base64.b64encode(value.encode()).decode()}"


def dn_escape(value):
    """An RFC 4514 attribute value for a DN."""
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;=' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        elif ch == "\0":
            out.append("\\00")
        else:
            out.append(ch)
    return "".join(out)


def _conf_quote(path):
    s = str(path)
    if '"' in s or "\\" in s:
        raise ValueError(f"slapd.conf cannot take this path: {s!r}")
    return f'"{s}"'


# --------------------------------------------------------------------------- the server

class LdapStartError(Exception):
    pass


class LdapServer:
    BASE = "dc=example,dc=net"
    PEOPLE = "ou=people,dc=example,dc=net"
    ADMIN_DN = "cn=admin,dc=example,dc=net"
    ADMIN_PW = "ldap-admin-secret"
    READER_DN = "cn=reader,dc=example,dc=net"
    READER_PW = "reader-secret"
    MAIL_DOMAIN = "example.net"
    # slapd -d: "stats" logs connections, binds (with the DN) and searches, which
    # is what one wants to see when a pooler's LDAP login fails; 0 logs only errors.
    DEBUG_LEVEL = "stats"

    def __init__(self, workdir, users, tls=None):
        self.dir = Path(workdir)
        self.users = dict(users)
        self.tls = tuple(tls) if tls else None
        self.conf_path = self.dir / "slapd.conf"
        self.db_dir = self.dir / "db"
        self.ldif_path = self.dir / "data.ldif"
        self.log_path = self.dir / "slapd.log"
        self.pid_file = self.dir / "slapd.pid"
        self.args_file = self.dir / "slapd.args"
        self.port = None
        self.tls_port = None
        self.url = None
        self.ldaps_url = None
        self.proc = None
        self._log_fh = None
        self._loaded = False

    # -- identities

    @classmethod
    def user_dn(cls, uid):
        return f"uid={dn_escape(uid)},{cls.PEOPLE}"

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    # -- files

    def _user_entry(self, uid, password):
        return "\n".join([
            f"dn: {self.user_dn(uid)}",
            "objectClass: top",
            "objectClass: person",
            "objectClass: organizationalPerson",
            "objectClass: inetOrgPerson",
            ldif_attr("uid", uid),
            ldif_attr("cn", uid),
            ldif_attr("sn", uid),
            ldif_attr("mail", f"{uid}@{self.MAIL_DOMAIN}"),
            ldif_attr("userPassword", password),
        ]) + "\n"

    def _data_ldif(self):
        entries = [
            "\n".join([f"dn: {self.BASE}", "objectClass: top", "objectClass: dcObject",
                       "objectClass: organization", "dc: example", "o: pgrouter tests"]) + "\n",
            "\n".join([f"dn: {self.PEOPLE}", "objectClass: top", "objectClass: organizationalUnit",
                       "ou: people"]) + "\n",
            "\n".join([f"dn: {self.READER_DN}", "objectClass: top", "objectClass: organizationalRole",
                       "objectClass: simpleSecurityObject", "cn: reader",
                       "description: search account for search+bind",
                       ldif_attr("userPassword", self.READER_PW)]) + "\n",
        ]
        entries += [self._user_entry(u, p) for u, p in self.users.items()]
        return "\n".join(entries)

    def _conf(self):
        lines = [
            "# written by tests/integration/ldap_server.py",
            f"include {_conf_quote(SCHEMA_DIR / 'core.schema')}",
            f"include {_conf_quote(SCHEMA_DIR / 'cosine.schema')}",
            f"include {_conf_quote(SCHEMA_DIR / 'inetorgperson.schema')}",
            f"pidfile {_conf_quote(self.pid_file)}",
            f"argsfile {_conf_quote(self.args_file)}",
            f"modulepath {_conf_quote(MODULE_DIR)}",
            "moduleload back_mdb",
            "loglevel stats",
            # the stored passwords are plain text; ldappasswd would store this too
            "password-hash {CLEARTEXT}",
        ]
        if self.tls:
            cert, key = self.tls
            lines += [
                f"TLSCertificateFile {_conf_quote(Path(cert).resolve())}",
                f"TLSCertificateKeyFile {_conf_quote(Path(key).resolve())}",
                "TLSVerifyClient never",
            ]
        lines += [
            "",
            "database mdb",
            f'suffix "{self.BASE}"',
            f'rootdn "{self.ADMIN_DN}"',
            f"rootpw {self.ADMIN_PW}",
            f"directory {_conf_quote(self.db_dir)}",
            "maxsize 104857600",
            "dbnosync",
            "index objectClass eq",
            "index uid eq",
            "",
            "access to attrs=userPassword",
            "    by anonymous auth",
            "    by * none",
            "access to *",
            "    by * read",
            "",
        ]
        return "\n".join(lines)

    def _prepare(self):
        """Writes slapd.conf and data.ldif and loads the data offline (once)."""
        if self._loaded:
            return
        if self.db_dir.exists():
            shutil.rmtree(self.db_dir)
        self.db_dir.mkdir(parents=True, mode=0o700)
        self.conf_path.write_text(self._conf())
        self.ldif_path.write_text(self._data_ldif())
        p = subprocess.run([str(SLAPADD), "-q", "-f", str(self.conf_path), "-l", str(self.ldif_path)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=60, cwd=self.dir)
        if p.returncode != 0:
            raise LdapStartError(f"slapadd exited {p.returncode}\n{p.stdout}\n--- {self.conf_path}:\n"
                                 f"{self.conf_path.read_text()}\n--- {self.ldif_path}:\n"
                                 f"{self.ldif_path.read_text()}")
        self._loaded = True

    # -- lifecycle

    def start(self, timeout=START_TIMEOUT):
        if self.proc is not None and self.proc.poll() is None:
            return self
        for tool, pkg in ((SLAPD, "slapd"), (SLAPADD, "slapd")):
            if not (tool.is_file() and os.access(tool, os.X_OK)):
                raise helpers.Missing(f"{tool.name} (Debian package {pkg}) is not installed")
        for tool in ("ldapwhoami", "ldapadd", "ldapmodify"):
            if not shutil.which(tool):
                raise helpers.Missing(f"{tool} (Debian package ldap-utils) is not installed")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        # A port free when picked may be taken by the time slapd binds: pick again.
        last = None
        for _ in range(3):
            try:
                self._start_once(timeout)
                return self
            except _PortTaken as e:
                last = e
        raise LdapStartError(f"slapd could not bind its ports three times:\n{last}")

    def _start_once(self, timeout):
        self.port = helpers.free_port()
        self.url = f"ldap://{helpers.HOST}:{self.port}"
        urls = [self.url + "/"]
        if self.tls:
            self.tls_port = helpers.free_port()
            self.ldaps_url = f"ldaps://{helpers.HOST}:{self.tls_port}"
            urls.append(self.ldaps_url + "/")
        cmd = [str(SLAPD), "-f", str(self.conf_path), "-h", " ".join(urls), "-d", str(self.DEBUG_LEVEL)]
        self._log_fh = open(self.log_path, "ab")
        log_start = self._log_fh.tell()
        self._log_fh.write(f"=== {' '.join(cmd)}\n".encode())
        self._log_fh.flush()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT,
                                     cwd=self.dir, start_new_session=True)
        _live.append(self)
        try:
            self._wait_ready(timeout, log_start)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout, log_start):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._close_log()
                log = self.log()
                self.proc = None
                if "Address already in use" in self._log_since(log_start):
                    raise _PortTaken(log[-3000:])
                raise LdapStartError(f"slapd exited with code {code} while starting\n--- log {self.log_path}:\n"
                                     f"{log[-6000:]}")
            try:
                p = self.whoami(self.url, self.ADMIN_DN, self.ADMIN_PW, timeout=3)
            except subprocess.TimeoutExpired:
                last = "ldapwhoami timed out after 3s"
            else:
                if p.returncode == 0:
                    return
                last = f"ldapwhoami exited {p.returncode}: {p.stdout.strip()} {p.stderr.strip()}"
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        raise LdapStartError(f"slapd did not answer a bind as {self.ADMIN_DN} within {timeout:.0f}s "
                             f"(last try: {last})\n"
                             f"--- log {self.log_path}:\n{self.log()[-6000:]}")

    def stop(self, grace=STOP_GRACE):
        """SIGTERM to the slapd this object started, SIGKILL after grace seconds.
        Returns its exit code (None if it was not running)."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            code = self.proc.returncode
            self.proc = None
        self._close_log()
        if self in _live:
            _live.remove(self)
        return code

    def _close_log(self):
        if self._log_fh:
            self._log_fh.close()
            self._log_fh = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _log_since(self, offset):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # -- clients (ldap-utils)

    def client_env(self, cacert=None):
        """Environment for ldap-utils: no ~/.ldaprc or $LDAP* from the caller;
        cacert: the CA to verify the server certificate with (LDAPTLS_CACERT)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LDAP")}
        env["LDAPRC"] = str(self.dir / "no-ldaprc")
        if cacert:
            env["LDAPTLS_CACERT"] = str(cacert)
        return env

    def _tool(self, args, input=None, timeout=10, cacert=None):
        return subprocess.run(args, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, env=self.client_env(cacert))

    def whoami(self, url=None, dn=None, password=None, starttls=False, cacert=None, timeout=10):
        """ldapwhoami -x (a simple bind; anonymous when dn is None). Returns the CompletedProcess."""
        args = ["ldapwhoami", "-x", "-H", url or self.url, "-o", "nettimeout=5"]
        if starttls:
            args.append("-ZZ")
        if dn is not None:
            args += ["-D", dn, "-w", password or ""]
        return self._tool(args, timeout=timeout, cacert=cacert)

    def search(self, filt, *attrs, dn=None, password=None, base=None, url=None, cacert=None, timeout=10):
        """ldapsearch -x -LLL (anonymous when dn is None). Returns the CompletedProcess."""
        args = ["ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-o", "nettimeout=5", "-H", url or self.url,
                "-b", base or self.BASE]
        if dn is not None:
            args += ["-D", dn, "-w", password or ""]
        args += [filt] + list(attrs)
        return self._tool(args, timeout=timeout, cacert=cacert)

    def _admin_change(self, tool, ldif):
        if not self.running():
            raise RuntimeError("the LDAP server is not running")
        p = self._tool([tool, "-x", "-H", self.url, "-o", "nettimeout=5", "-D", self.ADMIN_DN,
                        "-w", self.ADMIN_PW], input=ldif, timeout=20)
        if p.returncode != 0:
            raise RuntimeError(f"{tool} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}\n"
                               f"ldif:\n{ldif}")
        return p

    def add_user(self, uid, password):
        """Adds uid=<uid>,ou=people,... (as the rootdn, on the running server)."""
        self._admin_change("ldapadd", self._user_entry(uid, password))
        self.users[uid] = password

    def set_password(self, uid, password):
        """Replaces the user's userPassword (plain text) on the running server."""
        ldif = "\n".join([f"dn: {self.user_dn(uid)}", "changetype: modify", "replace: userPassword",
                          ldif_attr("userPassword", password), "-"]) + "\n"
        self._admin_change("ldapmodify", ldif)
        self.users[uid] = password


class _PortTaken(Exception):
    pass


# --------------------------------------------------------------------------- fixture

FIXTURE_USERS = ("app_plain", "app_scram", "app_md5")


@pytest.fixture
def ldap_server(tmp_path):
    """A started LdapServer (plain LDAP only) with app_plain, app_scram and app_md5,
    each with its helpers.PASSWORDS password; stopped at teardown."""
    srv = LdapServer(tmp_path / "ldap", {u: PASSWORDS[u] for u in FIXTURE_USERS})
    failure = None
    try:
        srv.start()
    except helpers.Missing as e:
        failure = f"missing dependency: {e}"
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield srv
    finally:
        srv.stop()
