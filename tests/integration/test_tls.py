"""TLS on both sides of the pooler ([tls] in SPEC section 2), and the TLS-only auth methods.

Client side: the pooler answers SSLRequest with 'S' and does the handshake with
client_tls_cert_file/key_file; client_tls_sslmode decides whether plain clients are
accepted (PgBouncer's documented semantics: allow/prefer accept them, require and
the verify modes refuse them, the verify modes also need a client certificate signed
by client_tls_ca_file). auth_type "cert" logs in a client whose certificate CN is its
user name; auth_type "hba" honours hostssl/hostnossl lines and the cert method.

Server side: a second PostgreSQL, module-scoped, with ssl=on and a pg_hba that only
accepts TLS connections (hostssl trust, hostnossl reject), exercised with every
server_tls_sslmode and with server_tls_ca_file of the right and of a foreign CA.

All certificates come from a throwaway CA made with the openssl CLI (EC P-256).
"""

import random
import re
import shutil
import ssl
import struct
import subprocess

import psycopg2
import pytest

import helpers
import pgwire
from helpers import PASSWORDS, sqlstate
from test_chaos import run_chaos

AUTH_OK, AUTH_MD5 = 0, 5

# Pooler knobs that keep a failing server login short (for PgBouncer too, whose waiting
# clients otherwise sit until query_wait_timeout).
FAST_FAIL = {"server_login_retry": 1, "query_wait_timeout": 8, "server_connect_timeout": 5}


# --------------------------------------------------------------------------- certificates

class Certs:
    """Paths of the throwaway PKI. Keys given to libpq are 0600 (it insists); the
    pooler's copies are world-readable so PgBouncer (run as postgres) can read them."""

    def __init__(self, d):
        self.dir = d

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return str(self.dir / name.replace("_crt", ".crt").replace("_key", ".key"))


def _openssl(args, cwd):
    exe = shutil.which("openssl")
    if not exe:
        raise helpers.Missing("openssl CLI not found (install the openssl package)")
    helpers.run([exe] + list(args), timeout=60, cwd=cwd)


def _make_ca(d, name, cn):
    _openssl(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3", "-subj", f"/CN={cn}",
              "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
             cwd=d)


def _make_leaf(d, name, cn, ca, san=None, client=False, rsa=False):
    key = ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    _openssl(["req", "-new"] + key + ["-nodes",
              "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}"], cwd=d)
    ext = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
           "extendedKeyUsage=" + ("clientAuth" if client else "serverAuth")]
    if san:
        ext.append("subjectAltName=" + san)
    (d / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _openssl(["x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
              "-set_serial", str(random.randrange(1, 2 ** 62)), "-days", "3", "-out", f"{name}.crt",
              "-extfile", f"{name}.ext"], cwd=d)


@pytest.fixture(scope="module")
def certs():
    d = helpers.make_tmpdir("pgrouter-it-tls-")
    try:
        _make_ca(d, "ca", "pgrouter test CA")
        _make_ca(d, "other_ca", "some other CA")
        # The server certificate of the pooler and of the TLS PostgreSQL.
        _make_leaf(d, "server", "127.0.0.1", "ca", san="IP:127.0.0.1,DNS:localhost")
        # An RSA one: finite-field DHE key exchange needs an RSA (or DSA) certificate.
        _make_leaf(d, "server_rsa", "127.0.0.1", "ca", san="IP:127.0.0.1,DNS:localhost", rsa=True)
        # Signed by the right CA but naming another host: verify-ca accepts it, verify-full must not.
        _make_leaf(d, "misnamed", "db.example.invalid", "ca", san="DNS:db.example.invalid")
        # Client certificates: CN = the user name.
        _make_leaf(d, "client_md5", "app_md5", "ca", client=True)
        _make_leaf(d, "client_md5_foreign", "app_md5", "other_ca", client=True)
        for f in d.iterdir():
            f.chmod(0o644)
        for name in ("client_md5", "client_md5_foreign"):
            (d / f"{name}.key").chmod(0o600)
    except helpers.Missing as e:
        shutil.rmtree(d, ignore_errors=True)
        pytest.fail(f"missing dependency: {e}", pytrace=False)
    yield Certs(d)
    shutil.rmtree(d, ignore_errors=True)


# auth_type cert needs a verified client certificate: verify-ca or verify-full. PgBouncer
# 1.18 refuses to start with auth_type=cert unless client_tls_sslmode=verify-full.
CERT_MODES = [
    pytest.param("verify-ca", marks=pytest.mark.pgrouter_only("PgBouncer 1.18: auth_type=cert requires verify-full")),
    "verify-full",
]


def client_tls(certs, mode="require", ca=True):
    t = {"client_tls_sslmode": mode, "client_tls_cert_file": certs.server_crt, "client_tls_key_file": certs.server_key}
    if ca:
        t["client_tls_ca_file"] = certs.ca_crt
    return t


# --------------------------------------------------------------------------- clients

def ssl_request(p, timeout=10.0):
    """Sends SSLRequest on a fresh connection; returns (client, answer byte)."""
    c = p.raw(timeout)
    c.send(struct.pack("!II", 8, pgwire.SSL_REQUEST_CODE))
    return c, c.read_byte()


def tls_wire(p, cert=None, key=None, ca=None, timeout=10.0, tweak=None):
    """A raw-protocol client that negotiated TLS (SSLRequest, 'S', handshake), not logged in.

    ca: verify the pooler's certificate against it (and its name, 127.0.0.1);
    tweak: called with the client's SSLContext before the handshake."""
    c, answer = ssl_request(p, timeout)
    if answer != b"S":
        c.close()
        raise AssertionError(f"SSLRequest answered {answer!r}, expected b'S'")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    if tweak:
        tweak(ctx)
    try:
        c.sock = ctx.wrap_socket(c.sock, server_hostname=p.host)
    except BaseException:
        c.close()
        raise
    return c


def tls_login(p, user, password=None, dbname="testdb", cert=None, key=None, ca=None):
    c = tls_wire(p, cert, key, ca)
    try:
        c.login(user, dbname, password)
    except BaseException:
        c.close()
        raise
    return c


def refused(fn):
    """Runs a login that must fail; returns the PgError, or the TLS/socket error when
    the pooler refused during the handshake (a verify mode without a client certificate)."""
    try:
        c = fn()
    except pgwire.PgError as e:
        return e
    except (pgwire.WireError, OSError) as e:  # ssl.SSLError is an OSError
        return e
    c.terminate()
    raise AssertionError("login succeeded but should have been refused")


def assert_refused_28000(err):
    assert isinstance(err, pgwire.PgError), f"expected an ErrorResponse, got {type(err).__name__}: {err}"
    assert err.sqlstate == sqlstate("28000"), err


def psql_sslmode(p, mode, sql, user="app_md5"):
    env = p.client_env(user)
    env["PGSSLMODE"] = mode
    cmd = [helpers.client_tool("psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", p.host, "-p", str(p.port),
           "-U", user, "-d", "testdb", "-c", sql]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60, env=env)


def ssl_in_use(conn):
    return conn.info.ssl_in_use


# --------------------------------------------------------------------------- client side

def test_ssl_request_answered_s(pgrouter, certs):
    p = pgrouter(tls=client_tls(certs, "prefer", ca=False))
    c, answer = ssl_request(p)
    c.close()
    assert answer == b"S"
    # And the handshake presents our certificate, which verifies against the CA for 127.0.0.1.
    c = tls_login(p, "app_md5", PASSWORDS["app_md5"], ca=certs.ca_crt)
    try:
        assert c.scalar("SELECT current_user") == "app_md5"
        peer = c.sock.getpeercert()
        assert ("IP Address", "127.0.0.1") in peer.get("subjectAltName", ()), peer
    finally:
        c.terminate()


def test_client_tls_require(pgrouter, certs):
    p = pgrouter({"auth_type": "md5"}, tls=client_tls(certs, "require", ca=False))
    with p.connect(sslmode="require") as conn, conn.cursor() as cur:
        assert ssl_in_use(conn) is True
        cur.execute("SELECT current_user, 42")
        assert cur.fetchone() == ("app_md5", 42)
    # libpq verifying the pooler's certificate and host name.
    with p.connect(sslmode="verify-full", sslrootcert=certs.ca_crt) as conn, conn.cursor() as cur:
        assert ssl_in_use(conn) is True
        cur.execute("SELECT 1")
    # psql too.
    r = psql_sslmode(p, "require", "\\conninfo")
    assert r.returncode == 0, r.stderr
    assert "SSL connection" in r.stdout, r.stdout
    # A wrong password over TLS is still a password failure.
    err = refused(lambda: tls_login(p, "app_md5", "wrong"))
    assert isinstance(err, pgwire.PgError) and err.sqlstate == sqlstate("28P01"), err


def test_client_tls_require_refuses_plain_clients(pgrouter, certs):
    """PgBouncer: client_tls_sslmode = require -- "Client must use TLS. If not, the client
    connection is rejected." (PostgreSQL's own wording for this case is SQLSTATE 28000.)"""
    p = pgrouter({"auth_type": "md5"}, tls=client_tls(certs, "require", ca=False))
    err = refused(lambda: p.wire(user="app_md5"))
    assert_refused_28000(err)
    with pytest.raises(psycopg2.OperationalError):
        p.connect(sslmode="disable")
    # TLS clients still get in.
    with p.connect(sslmode="require") as conn:
        assert ssl_in_use(conn) is True


@pytest.mark.parametrize("mode", ["allow", "prefer"])
def test_client_tls_optional_accepts_plain_and_tls(pgrouter, certs, mode):
    p = pgrouter({"auth_type": "md5"}, tls=client_tls(certs, mode, ca=False))
    with p.connect(sslmode="disable") as conn, conn.cursor() as cur:
        assert ssl_in_use(conn) is False
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app_md5"
    with p.connect(sslmode="require") as conn, conn.cursor() as cur:
        assert ssl_in_use(conn) is True
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app_md5"
    # libpq's default (prefer) picks TLS when offered.
    with p.connect(sslmode="prefer") as conn:
        assert ssl_in_use(conn) is True
    c = tls_login(p, "app_scram", PASSWORDS["app_scram"])
    try:
        assert c.scalar("SELECT current_user") == "app_scram"
    finally:
        c.terminate()


@pytest.mark.pgrouter_only("PgBouncer 1.18 logs the failed handshake but leaves the socket open until "
                           "client_login_timeout")
def test_client_tls_handshake_garbage_is_dropped(pgrouter, certs):
    """A client that gets 'S' and then sends no TLS ClientHello is disconnected, and the
    pooler keeps serving."""
    p = pgrouter(tls=client_tls(certs, "prefer", ca=False))
    c, answer = ssl_request(p)
    try:
        assert answer == b"S"
        c.send(pgwire.startup_packet({"user": "app_md5", "database": "testdb"}))
        # The pooler must close the connection (perhaps after a TLS alert), not wait, and
        # never start a login.
        try:
            while True:
                m = c.read_message(timeout=10)
                if m is None:
                    break
                assert m[0] not in (b"R", b"Z"), m
        except pgwire.WireError as e:
            assert "timed out" not in str(e), f"the pooler kept the connection open: {e}"
        except OSError:
            pass
    finally:
        c.close()
    with p.connect(sslmode="require") as conn:
        assert ssl_in_use(conn) is True


# --------------------------------------------------------------------------- auth_type cert

@pytest.mark.parametrize("mode", CERT_MODES)
def test_cert_auth(pgrouter, certs, mode):
    p = pgrouter({"auth_type": "cert"}, tls=client_tls(certs, mode))
    # The CN (app_md5) is the user: in without a password.
    c = tls_login(p, "app_md5", None, cert=certs.client_md5_crt, key=certs.client_md5_key)
    try:
        assert c.auth_requests == [AUTH_OK], c.auth_requests
        assert c.scalar("SELECT current_user") == "app_md5"
    finally:
        c.terminate()
    # libpq end to end.
    with p.connect(user="app_md5", password="", sslmode="require", sslcert=certs.client_md5_crt,
                   sslkey=certs.client_md5_key) as conn, conn.cursor() as cur:
        assert ssl_in_use(conn) is True
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app_md5"


@pytest.mark.pgrouter_only("auth_ident_file is PgBouncer 1.23+ (the Debian PgBouncer is 1.18)")
def test_cert_auth_with_an_ident_map(pgrouter, certs):
    """`cert map=NAME`: the certificate's CN may log in as the users map NAME lists for it."""
    hba = ["hostssl all all 127.0.0.1/32 cert map=certs"]
    p = pgrouter({"auth_type": "hba"}, tls=client_tls(certs, "verify-full"), hba=hba, start=False)
    (p.dir / "ident.conf").write_text("certs app_md5 app_scram\n")
    p.settings["auth_ident_file"] = str(p.dir / "ident.conf")
    p.write_config(hba)
    p.start()
    c = tls_login(p, "app_scram", None, cert=certs.client_md5_crt, key=certs.client_md5_key)
    try:
        assert c.auth_requests == [AUTH_OK], c.auth_requests
        assert c.scalar("SELECT current_user") == "app_scram"
    finally:
        c.terminate()
    # The map does not list the CN's own name: with a map, it is not implied.
    err = refused(lambda: tls_login(p, "app_md5", None, cert=certs.client_md5_crt, key=certs.client_md5_key))
    assert_refused_28000(err)


@pytest.mark.parametrize("mode", CERT_MODES)
def test_cert_auth_wrong_cn(pgrouter, certs, mode):
    p = pgrouter({"auth_type": "cert"}, tls=client_tls(certs, mode))
    # A valid certificate, but its CN names another user.
    err = refused(lambda: tls_login(p, "app_scram", PASSWORDS["app_scram"], cert=certs.client_md5_crt,
                                    key=certs.client_md5_key))
    assert_refused_28000(err)
    with pytest.raises(psycopg2.OperationalError):
        p.connect(user="app_scram", sslmode="require", sslcert=certs.client_md5_crt, sslkey=certs.client_md5_key)


@pytest.mark.parametrize("mode", CERT_MODES)
def test_cert_auth_without_certificate(pgrouter, certs, mode):
    p = pgrouter({"auth_type": "cert"}, tls=client_tls(certs, mode))
    err = refused(lambda: tls_login(p, "app_md5", PASSWORDS["app_md5"]))
    # verify-ca/verify-full demand a client certificate in the handshake (as PgBouncer
    # does); a refusal that gets as far as the login must be a clear 28000.
    if isinstance(err, pgwire.PgError):
        assert_refused_28000(err)
    # A plain (non-TLS) client cannot use cert authentication either.
    err = refused(lambda: p.wire(user="app_md5"))
    assert_refused_28000(err)


@pytest.mark.parametrize("mode", CERT_MODES)
def test_cert_auth_foreign_ca(pgrouter, certs, mode):
    """A certificate with the right CN from a CA the pooler does not trust is refused
    (in the handshake or at login), never logged in."""
    p = pgrouter({"auth_type": "cert"}, tls=client_tls(certs, mode))
    err = refused(lambda: tls_login(p, "app_md5", None, cert=certs.client_md5_foreign_crt,
                                    key=certs.client_md5_foreign_key))
    if isinstance(err, pgwire.PgError):
        assert err.sqlstate == sqlstate("28000"), err
    with pytest.raises(psycopg2.OperationalError):
        p.connect(user="app_md5", password="", sslmode="require", sslcert=certs.client_md5_foreign_crt,
                  sslkey=certs.client_md5_foreign_key)
    # The pooler still serves a good certificate afterwards.
    c = tls_login(p, "app_md5", None, cert=certs.client_md5_crt, key=certs.client_md5_key)
    c.terminate()


def test_verify_ca_requires_client_certificate(pgrouter, certs):
    """PgBouncer: client_tls_sslmode = verify-ca -- "Client must use TLS with valid client
    certificate", whatever auth_type is: here md5, so a password alone is not enough."""
    p = pgrouter({"auth_type": "md5"}, tls=client_tls(certs, "verify-ca"))
    c = tls_login(p, "app_md5", PASSWORDS["app_md5"], cert=certs.client_md5_crt, key=certs.client_md5_key)
    try:
        assert c.auth_requests[0] == AUTH_MD5, c.auth_requests
        assert c.scalar("SELECT current_user") == "app_md5"
    finally:
        c.terminate()
    # TLS with the right password but no certificate.
    refused(lambda: tls_login(p, "app_md5", PASSWORDS["app_md5"]))
    # No TLS at all.
    err = refused(lambda: p.wire(user="app_md5"))
    assert_refused_28000(err)


# --------------------------------------------------------------------------- auth_type hba

def test_hba_hostssl(pgrouter, certs):
    hba = [
        "hostssl all all 127.0.0.1/32 md5",
        "host all all 127.0.0.1/32 reject",
    ]
    p = pgrouter({"auth_type": "hba"}, tls=client_tls(certs, "prefer", ca=False), hba=hba)
    c = tls_login(p, "app_md5", PASSWORDS["app_md5"])
    try:
        assert c.auth_requests[0] == AUTH_MD5, c.auth_requests
        assert c.scalar("SELECT current_user") == "app_md5"
    finally:
        c.terminate()
    with p.connect(user="app_scram", sslmode="require") as conn, conn.cursor() as cur:
        assert ssl_in_use(conn) is True
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app_scram"
    err = refused(lambda: tls_login(p, "app_md5", "wrong"))
    assert isinstance(err, pgwire.PgError) and err.sqlstate == sqlstate("28P01"), err
    # Without TLS the hostssl line does not match and the reject line does.
    err = refused(lambda: p.wire(user="app_md5"))
    assert_refused_28000(err)
    with pytest.raises(psycopg2.OperationalError):
        p.connect(sslmode="disable")


def test_hba_hostnossl(pgrouter, certs):
    hba = [
        "hostnossl all app_trust 127.0.0.1/32 trust",
        "hostssl all app_trust 127.0.0.1/32 reject",
        "host all all 127.0.0.1/32 md5",
    ]
    p = pgrouter({"auth_type": "hba"}, tls=client_tls(certs, "prefer", ca=False), hba=hba)
    c = p.raw()
    try:
        c.login("app_trust", "testdb", password=None)
        assert c.auth_requests == [AUTH_OK]
    finally:
        c.terminate()
    err = refused(lambda: tls_login(p, "app_trust", None))
    assert_refused_28000(err)
    c = tls_login(p, "app_md5", PASSWORDS["app_md5"])
    c.terminate()


def test_hba_cert_method(pgrouter, certs):
    hba = [
        "hostssl all app_md5 127.0.0.1/32 cert",
        "hostssl all all 127.0.0.1/32 md5",
        "host all all 127.0.0.1/32 reject",
    ]
    p = pgrouter({"auth_type": "hba"}, tls=client_tls(certs, "verify-ca"), hba=hba)
    c = tls_login(p, "app_md5", None, cert=certs.client_md5_crt, key=certs.client_md5_key)
    try:
        assert c.auth_requests == [AUTH_OK], c.auth_requests
        assert c.scalar("SELECT current_user") == "app_md5"
    finally:
        c.terminate()
    # Another user with the same certificate goes through the md5 line.
    c = tls_login(p, "app_scram", PASSWORDS["app_scram"], cert=certs.client_md5_crt, key=certs.client_md5_key)
    try:
        assert c.auth_requests[0] == AUTH_MD5, c.auth_requests
        assert c.scalar("SELECT current_user") == "app_scram"
    finally:
        c.terminate()


# --------------------------------------------------------------------------- server side

@pytest.fixture(scope="module")
def tls_pg(certs):
    """A second PostgreSQL 15 that accepts only TLS connections over TCP."""
    base = helpers.make_tmpdir("pgrouter-it-tlspg-", for_postgres=True)
    for name in ("server", "misnamed"):
        for ext in ("crt", "key"):
            dst = base / f"{name}.{ext}"
            shutil.copy(certs.dir / f"{name}.{ext}", dst)
            dst.chmod(0o600 if ext == "key" else 0o644)
            helpers.chown_pg(dst)
    hba = [
        "local all all trust",
        f"hostssl all all {helpers.HOST}/32 trust",
        f"hostnossl all all {helpers.HOST}/32 reject",
    ]
    failure = None
    cluster = None
    try:
        cluster = helpers.PgCluster(base=base, max_connections=50, hba=hba, extra_conf={
            "ssl": "on",
            "ssl_cert_file": f"'{base / 'server.crt'}'",
            "ssl_key_file": f"'{base / 'server.key'}'",
        })
        cluster.init()
        cluster.start()
        cluster.setup_roles()
    except helpers.Missing as e:
        failure = f"missing dependency: {e}"
    except BaseException:
        if cluster is not None:
            cluster.cleanup()
        else:
            shutil.rmtree(base, ignore_errors=True)
        raise
    if failure:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(failure, pytrace=False)
    try:
        yield cluster
    finally:
        cluster.cleanup()


def tls_pg_db(tls_pg, host=None):
    return {"testdb": {"host": host or tls_pg.host, "port": tls_pg.port}}


def backend_ssl(p, user="app_md5"):
    with p.connect(user=user) as conn, conn.cursor() as cur:
        cur.execute("SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        return cur.fetchone()


def server_login_error(p, user="app_md5"):
    """A client login that must fail because the pooler cannot log in to the server."""
    err = refused(lambda: p.wire(user=user, timeout=30))
    assert isinstance(err, pgwire.PgError), f"expected an ErrorResponse, got {type(err).__name__}: {err}"
    return err


def test_tls_pg_refuses_plain_connections(tls_pg):
    """The fixture itself: a non-TLS login is refused by the server, a TLS one works."""
    with pytest.raises(psycopg2.OperationalError) as e:
        psycopg2.connect(host=tls_pg.host, port=tls_pg.port, user="app_md5", dbname="testdb", sslmode="disable",
                         connect_timeout=10)
    assert "no encryption" in str(e.value)
    c = psycopg2.connect(host=tls_pg.host, port=tls_pg.port, user="app_md5", dbname="testdb", sslmode="require",
                         connect_timeout=10)
    try:
        assert c.info.ssl_in_use
    finally:
        c.close()


@pytest.mark.parametrize("mode", ["require", "prefer", "allow"])
def test_server_tls(pgrouter, tls_pg, mode):
    p = pgrouter({"auth_type": "md5"}, databases=tls_pg_db(tls_pg), tls={"server_tls_sslmode": mode})
    assert backend_ssl(p) == (True, "app_md5")
    assert backend_ssl(p, "app_scram") == (True, "app_scram")
    # Several queries on pooled TLS server connections (transaction pooling: reuse).
    with p.connect() as conn, conn.cursor() as cur:
        for i in range(20):
            cur.execute("SELECT %s::int, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", (i,))
            assert cur.fetchone() == (i, True)
        cur.execute("SELECT repeat('x', 200000)")
        assert len(cur.fetchone()[0]) == 200000


def test_server_tls_default_is_prefer(pgrouter, tls_pg):
    """No [tls] at all: server_tls_sslmode defaults to prefer, so a TLS-only server works."""
    if helpers.is_pgbouncer():
        # PgBouncer's own default is disable; the test pins pgrouter's SPEC default.
        p = pgrouter({"auth_type": "md5"}, databases=tls_pg_db(tls_pg), tls={"server_tls_sslmode": "prefer"})
    else:
        p = pgrouter({"auth_type": "md5"}, databases=tls_pg_db(tls_pg))
    assert backend_ssl(p) == (True, "app_md5")


def test_server_tls_disable_refused_by_server(pgrouter, tls_pg):
    p = pgrouter(dict(FAST_FAIL, auth_type="md5"), databases=tls_pg_db(tls_pg),
                 tls={"server_tls_sslmode": "disable"})
    err = server_login_error(p)
    if not helpers.is_pgbouncer():
        # The server's own refusal (hostnossl reject) reaches the client.
        assert err.sqlstate == "28000", err
        assert "no encryption" in err.message or "pg_hba.conf" in err.message, err


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_server_tls_verify_with_ca(pgrouter, tls_pg, certs, mode):
    p = pgrouter({"auth_type": "md5"}, databases=tls_pg_db(tls_pg),
                 tls={"server_tls_sslmode": mode, "server_tls_ca_file": certs.ca_crt})
    assert backend_ssl(p) == (True, "app_md5")


def test_server_tls_verify_full_by_host_name(pgrouter, tls_pg, certs):
    """The certificate's DNS SAN (localhost) matches a database configured by name."""
    p = pgrouter({"auth_type": "md5"}, databases=tls_pg_db(tls_pg, host="localhost"),
                 tls={"server_tls_sslmode": "verify-full", "server_tls_ca_file": certs.ca_crt})
    assert backend_ssl(p) == (True, "app_md5")


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_server_tls_verify_foreign_ca_fails(pgrouter, tls_pg, certs, mode):
    p = pgrouter(dict(FAST_FAIL, auth_type="md5"), databases=tls_pg_db(tls_pg),
                 tls={"server_tls_sslmode": mode, "server_tls_ca_file": certs.other_ca_crt})
    err = server_login_error(p)
    if not helpers.is_pgbouncer():
        assert err.sqlstate == "08006", err
        assert "certificate" in err.message.lower() or "tls" in err.message.lower(), err
    # The pooler never logged in: the server has no backend for this user.
    assert tls_pg.backends("app_md5") == 0


def test_server_tls_verify_full_checks_the_name(pgrouter, tls_pg, certs):
    """The server presents a certificate from the right CA for another host name:
    verify-ca accepts it, verify-full refuses it."""
    tls_pg.sql(f"ALTER SYSTEM SET ssl_cert_file = '{tls_pg.dir / 'misnamed.crt'}'")
    tls_pg.sql(f"ALTER SYSTEM SET ssl_key_file = '{tls_pg.dir / 'misnamed.key'}'")
    tls_pg.reload()
    try:
        c = psycopg2.connect(host=tls_pg.host, port=tls_pg.port, user="app_md5", dbname="testdb",
                             sslmode="verify-ca", sslrootcert=certs.ca_crt, connect_timeout=10)
        c.close()
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(host=tls_pg.host, port=tls_pg.port, user="app_md5", dbname="testdb",
                             sslmode="verify-full", sslrootcert=certs.ca_crt, connect_timeout=10)

        p = pgrouter({"auth_type": "md5"}, databases=tls_pg_db(tls_pg),
                     tls={"server_tls_sslmode": "verify-ca", "server_tls_ca_file": certs.ca_crt})
        assert backend_ssl(p) == (True, "app_md5")
        p.stop()

        p = pgrouter(dict(FAST_FAIL, auth_type="md5"), databases=tls_pg_db(tls_pg),
                     tls={"server_tls_sslmode": "verify-full", "server_tls_ca_file": certs.ca_crt})
        err = server_login_error(p)
        if not helpers.is_pgbouncer():
            assert err.sqlstate == "08006", err
            assert "127.0.0.1" in err.message, err
    finally:
        tls_pg.sql("ALTER SYSTEM RESET ssl_cert_file")
        tls_pg.sql("ALTER SYSTEM RESET ssl_key_file")
        tls_pg.reload()


def test_tls_on_both_sides(pgrouter, tls_pg, certs):
    """Client TLS to the pooler, pooler TLS to the server, with verify-full on both hops."""
    tls = client_tls(certs, "require", ca=False)
    tls.update({"server_tls_sslmode": "verify-full", "server_tls_ca_file": certs.ca_crt})
    p = pgrouter({"auth_type": "scram-sha-256"}, databases=tls_pg_db(tls_pg), tls=tls)
    with p.connect(user="app_scram", sslmode="verify-full", sslrootcert=certs.ca_crt) as conn, \
            conn.cursor() as cur:
        assert ssl_in_use(conn) is True
        cur.execute("SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == (True, "app_scram")


@pytest.mark.pgrouter_only("PgBouncer 1.18 exits under this load (see test_chaos.py)")
def test_chaos_with_tls_on_both_sides(pgrouter, tls_pg, certs):
    """test_chaos's mix of honest, vanishing and self-cancelling clients and terminated
    servers, with TLS from the clients and to the server: a TLS server connection stays
    on its worker, and a TLS client's parked read is not the plain one."""
    tls = client_tls(certs, "require", ca=False)
    tls.update({"server_tls_sslmode": "require"})
    p = pgrouter({"auth_type": "md5", "default_pool_size": 4, "max_client_conn": 200, "query_wait_timeout": 60},
                 databases=tls_pg_db(tls_pg), tls=tls)
    table = "chaos_tls_" + str(random.randrange(10**9))
    tls_pg.sql(f"CREATE TABLE {table} (who int, n int, tag text)", dbname="testdb")
    tls_pg.sql(f"GRANT ALL ON {table} TO PUBLIC", dbname="testdb")
    try:
        run_chaos(p, tls_pg, table,
                  connect=lambda params=None: tls_wire(p, timeout=20).login("app_md5", "testdb", PASSWORDS["app_md5"],
                                                                            params))
        assert backend_ssl(p) == (True, "app_md5")
    finally:
        tls_pg.sql(f"DROP TABLE IF EXISTS {table}", dbname="testdb")


# --------------------------------------------------------------------------- protocols and ciphers

def capped(version):
    def tweak(ctx):
        ctx.maximum_version = version
    return tweak


def negotiated(p, tweak=None):
    """(protocol, cipher) of a TLS login to the pooler."""
    c = tls_wire(p, tweak=tweak)
    try:
        c.login("app_md5", "testdb", PASSWORDS["app_md5"])
        assert c.scalar("SELECT 1") == "1"
        return c.sock.version(), c.sock.cipher()[0]
    finally:
        c.terminate()


def test_client_tls_protocols_limit_the_versions_clients_may_use(pgrouter, certs):
    only13 = pgrouter(tls=dict(client_tls(certs, "require", ca=False), client_tls_protocols="tlsv1.3"))
    assert negotiated(only13)[0] == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        negotiated(only13, capped(ssl.TLSVersion.TLSv1_2))
    only12 = pgrouter(tls=dict(client_tls(certs, "require", ca=False), client_tls_protocols="tlsv1.2"))
    assert negotiated(only12)[0] == "TLSv1.2"
    # The default ("secure"): TLS 1.2 and 1.3, nothing older.
    default = pgrouter(tls=client_tls(certs, "require", ca=False))
    assert negotiated(default)[0] == "TLSv1.3"
    assert negotiated(default, capped(ssl.TLSVersion.TLSv1_2))[0] == "TLSv1.2"

    def tls11(ctx):
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        negotiated(default, tls11)


def test_client_tls_ciphers_choose_the_tls12_cipher(pgrouter, certs):
    p = pgrouter(tls=dict(client_tls(certs, "require", ca=False), client_tls_protocols="tlsv1.2",
                          client_tls_ciphers="ECDHE-ECDSA-CHACHA20-POLY1305"))
    assert negotiated(p) == ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305")

    def other_cipher(ctx):
        ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    with pytest.raises(ssl.SSLError):
        negotiated(p, other_cipher)


@pytest.mark.pgrouter_only("client_tls13_ciphers is newer than PgBouncer 1.18")
def test_client_tls13_ciphers_choose_the_tls13_suite(pgrouter, certs):
    p = pgrouter(tls=dict(client_tls(certs, "require", ca=False), client_tls13_ciphers="TLS_CHACHA20_POLY1305_SHA256"))
    assert negotiated(p) == ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")


def assert_start_refused(pgrouter, tls, why):
    """pgrouter started with these [tls] keys exits 1, saying `why` on stderr."""
    bad = pgrouter(tls=tls, start=False)
    bad.write_config(None)
    r = subprocess.run([str(helpers.PGROUTER_BIN), str(bad.config_path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert why in r.stderr, r.stderr


@pytest.mark.pgrouter_only("pgrouter refuses a cipher list that matches nothing; PgBouncer 1.18 only logs it")
def test_bad_cipher_list_is_refused_at_start_and_on_reload(pgrouter, certs):
    assert_start_refused(pgrouter, dict(client_tls(certs, "require", ca=False), client_tls_ciphers="NO-SUCH-CIPHER"),
                         'tls.client_tls_ciphers: no cipher matches "NO-SUCH-CIPHER"')
    p = pgrouter(tls=client_tls(certs, "require", ca=False))
    p.tls["client_tls_ciphers"] = "NO-SUCH-CIPHER"
    p.write_config(None)
    with pytest.raises(psycopg2.Error) as err:
        p.admin("RELOAD")
    assert "client_tls_ciphers" in str(err.value)
    assert negotiated(p)[0] == "TLSv1.3"  # the running configuration stays
    assert ("client_tls_ciphers", "default") in [(k, v) for k, v, *_ in p.admin("SHOW CONFIG")]


def s_client(p, *args):
    """openssl s_client through PostgreSQL's SSLRequest: (handshake done, its report)."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"{p.host}:{p.port}", "-starttls", "postgres", *args],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    return r.returncode == 0 and "Cipher is (NONE)" not in out, out


def temp_key(out):
    m = re.search(r"Server Temp Key: (.*)", out)
    return m.group(1).strip() if m else None


def test_client_tls_ecdhcurve(pgrouter, certs):
    """client_tls_ecdhcurve names the groups offered for the (EC)DHE key exchange: a
    client offering only another curve fails the handshake; "auto" (the default)
    takes OpenSSL's list."""
    p = pgrouter(tls=dict(client_tls(certs, "require", ca=False), client_tls_ecdhcurve="secp384r1"))
    for version in ("-tls1_2", "-tls1_3"):
        ok, out = s_client(p, version, "-groups", "P-384:P-256")
        assert ok, out
        assert "secp384r1" in temp_key(out), out
        ok, out = s_client(p, version, "-groups", "P-256:X25519")
        assert not ok, out
    default = pgrouter(tls=client_tls(certs, "require", ca=False))
    ok, out = s_client(default, "-groups", "X25519")
    assert ok and "X25519" in temp_key(out), out


@pytest.mark.pgrouter_only("PgBouncer 1.18 with OpenSSL 3 still negotiates ECDHE under client_tls_ecdhcurve=none")
def test_client_tls_ecdhcurve_none(pgrouter, certs):
    none = pgrouter(tls=dict(client_tls(certs, "require", ca=False), client_tls_ecdhcurve="none"))
    assert not s_client(none, "-tls1_2")[0]  # an EC certificate has nothing left in TLS 1.2
    assert s_client(none, "-tls1_3")[0]


@pytest.mark.pgrouter_only("pgrouter refuses an unknown curve; PgBouncer 1.18 only logs it")
def test_unknown_ecdh_curve_is_refused(pgrouter, certs):
    assert_start_refused(pgrouter, dict(client_tls(certs, "require", ca=False), client_tls_ecdhcurve="no-such-curve"),
                         'tls.client_tls_ecdhcurve: no curve (group) named "no-such-curve"')


def test_client_tls_dheparams(pgrouter, certs):
    """client_tls_dheparams: "auto" (the default) serves DHE cipher suites with 2048-bit
    or larger parameters; "none" refuses a client that offers only DHE; "legacy" uses
    1024-bit parameters, which need a lowered OpenSSL security level on both ends."""
    rsa = dict(client_tls(certs, "require", ca=False), client_tls_cert_file=certs.server_rsa_crt,
               client_tls_key_file=certs.server_rsa_key)
    dhe = ["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"]
    ok, out = s_client(pgrouter(tls=rsa), *dhe)
    assert ok, out
    bits = int(re.search(r"DH, (\d+) bits", temp_key(out)).group(1))
    assert bits >= 2048, out
    assert not s_client(pgrouter(tls=dict(rsa, client_tls_dheparams="none")), *dhe)[0]
    legacy = pgrouter(tls=dict(rsa, client_tls_dheparams="legacy", client_tls_ciphers="DEFAULT:@SECLEVEL=0"))
    ok, out = s_client(legacy, "-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0")
    assert ok and temp_key(out) == "DH, 1024 bits", out


@pytest.mark.pgrouter_only("pgrouter checks the value and the security level at start")
def test_bad_dheparams_are_refused(pgrouter, certs):
    rsa = dict(client_tls(certs, "require", ca=False), client_tls_cert_file=certs.server_rsa_crt,
               client_tls_key_file=certs.server_rsa_key)
    for value, why in (("huge", 'tls.client_tls_dheparams: expected auto, none or legacy, got "huge"'),
                       ("legacy", "tls.client_tls_dheparams: OpenSSL refuses 1024-bit DH at this security level")):
        assert_start_refused(pgrouter, dict(rsa, client_tls_dheparams=value), why)


def pgrouter_backend_tls(p):
    """(version, cipher) of the TLS connection the pooler uses to the server."""
    with p.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        return cur.fetchone()


def test_server_tls_protocols_and_ciphers(pgrouter, tls_pg):
    db = tls_pg_db(tls_pg)
    assert pgrouter_backend_tls(pgrouter({"auth_type": "md5"}, databases=db,
                                         tls={"server_tls_sslmode": "require"}))[0] == "TLSv1.3"
    p = pgrouter({"auth_type": "md5"}, databases=db,
                 tls={"server_tls_sslmode": "require", "server_tls_protocols": "tlsv1.2",
                      "server_tls_ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384"})
    assert pgrouter_backend_tls(p) == ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384")
