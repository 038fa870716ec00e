"""Client authentication at the pooler, and the pooler's own authentication to PostgreSQL."""

import hashlib
import time

import psycopg2
import pytest

import helpers
import pgwire
from helpers import PASSWORDS, sqlstate

AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL = 0, 3, 5, 10


def login_error(p, **kw):
    with pytest.raises(pgwire.PgError) as e:
        c = p.wire(**kw)
        c.terminate()
    return e.value


def assert_login(p, user, password, expect_methods, dbname="testdb"):
    c = p.wire(user=user, password=password, dbname=dbname)
    try:
        assert c.auth_requests[0] in expect_methods and c.auth_requests[-1] == AUTH_OK, c.auth_requests
        assert c.backend_key is not None, "no BackendKeyData"
        assert c.scalar("SELECT current_user") == user
    finally:
        c.terminate()


# --------------------------------------------------------------------------- md5

def test_md5_right_password(pgrouter):
    p = pgrouter({"auth_type": "md5"})
    assert_login(p, "app_md5", PASSWORDS["app_md5"], {AUTH_MD5})
    with p.connect() as c, c.cursor() as cur:
        cur.execute("SELECT 1")


def test_md5_wrong_password(pgrouter):
    p = pgrouter({"auth_type": "md5"})
    err = login_error(p, password="wrong")
    assert err.sqlstate == sqlstate("28P01"), err
    with pytest.raises(psycopg2.OperationalError):
        p.connect(password="wrong")


def test_md5_unknown_user(pgrouter):
    p = pgrouter({"auth_type": "md5"})
    err = login_error(p, user="nobody_here", password="x")
    assert err.sqlstate == sqlstate("28P01"), err


def test_md5_with_md5_hash_in_userlist(pgrouter):
    hashed = "md5" + hashlib.md5((PASSWORDS["app_md5"] + "app_md5").encode()).hexdigest()
    p = pgrouter({"auth_type": "md5"}, userlist={"app_md5": hashed})
    assert_login(p, "app_md5", PASSWORDS["app_md5"], {AUTH_MD5})
    err = login_error(p, password="wrong")
    assert err.sqlstate == sqlstate("28P01")


# --------------------------------------------------------------------------- scram

def test_scram_with_plaintext_userlist(pgrouter):
    p = pgrouter({"auth_type": "scram-sha-256"})
    for user in ("app_scram", "app_md5", "app_plain"):
        assert_login(p, user, PASSWORDS[user], {AUTH_SASL})
    err = login_error(p, user="app_scram", password="wrong")
    assert err.sqlstate == sqlstate("28P01"), err
    # libpq's SCRAM client, end to end.
    with p.connect(user="app_scram") as c, c.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app_scram"


@pytest.mark.parametrize("iterations", [
    None, pytest.param(10000, marks=pytest.mark.pgrouter_only("scram_iterations is newer than PgBouncer 1.18"))])
def test_scram_iterations_for_plaintext_passwords(pgrouter, iterations):
    """A SCRAM login against a plain-text auth_file password uses scram_iterations
    rounds (default 4096, as PostgreSQL and PgBouncer), seen in server-first-message."""
    p = pgrouter({"auth_type": "scram-sha-256", **({"scram_iterations": iterations} if iterations else {})},
                 fmt="ini")
    c = p.wire(user="app_plain")
    try:
        attrs = dict(kv.split("=", 1) for kv in c.scram_server_first.split(","))
        assert int(attrs["i"]) == (iterations or 4096), c.scram_server_first
        assert c.scalar("SELECT current_user") == "app_plain"
    finally:
        c.terminate()


def test_scram_with_secret_from_pg_authid(pgrouter, pg):
    """The userlist holds the SCRAM verifier, not the password: the pooler must also log in
    to the server (hba scram-sha-256) with the keys the client proved it has."""
    secret = pg.rolpassword("app_scram")
    assert secret.startswith("SCRAM-SHA-256$")
    p = pgrouter({"auth_type": "scram-sha-256"}, userlist={"app_scram": secret, "pgbouncer": PASSWORDS["pgbouncer"]})
    assert_login(p, "app_scram", PASSWORDS["app_scram"], {AUTH_SASL})
    err = login_error(p, user="app_scram", password="wrong")
    assert err.sqlstate == sqlstate("28P01"), err


def test_md5_auth_type_with_scram_secret_uses_scram(pgrouter, pg):
    """As PgBouncer: auth_type md5 with a SCRAM secret in the userlist authenticates with SCRAM."""
    secret = pg.rolpassword("app_scram")
    p = pgrouter({"auth_type": "md5"}, userlist={"app_scram": secret})
    assert_login(p, "app_scram", PASSWORDS["app_scram"], {AUTH_SASL})


# --------------------------------------------------------------------------- trust

def test_trust(pgrouter):
    p = pgrouter({"auth_type": "trust"})
    c = p.raw()
    try:
        c.login("app_md5", "testdb", password=None)
        assert c.auth_requests == [AUTH_OK]
        assert c.scalar("SELECT current_user") == "app_md5"
    finally:
        c.terminate()
    with p.connect(password="") as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")


# --------------------------------------------------------------------------- hba

HBA = [
    "# pooler hba file",
    "host all app_trust 127.0.0.1/32 trust",
    "host all app_md5 127.0.0.1/32 md5",
    "host all app_scram 127.0.0.1/32 scram-sha-256",
    "hostssl all app_plain 127.0.0.1/32 md5",
    "host all app_plain 127.0.0.1/32 reject",
]


def test_hba(pgrouter):
    p = pgrouter({"auth_type": "hba"}, hba=HBA)
    c = p.raw()
    try:
        c.login("app_trust", "testdb", password=None)
        assert c.auth_requests == [AUTH_OK]
    finally:
        c.terminate()
    assert_login(p, "app_md5", PASSWORDS["app_md5"], {AUTH_MD5})
    assert_login(p, "app_scram", PASSWORDS["app_scram"], {AUTH_SASL})
    # No TLS, so the hostssl line does not match and the reject line does.
    with pytest.raises(pgwire.PgError):
        c = p.wire(user="app_plain")
        c.terminate()
    err = login_error(p, user="app_md5", password="wrong")
    assert err.sqlstate == sqlstate("28P01"), err


def test_hba_no_matching_line(pgrouter):
    p = pgrouter({"auth_type": "hba"}, hba=["host all app_md5 127.0.0.1/32 md5"])
    with pytest.raises(pgwire.PgError):
        c = p.wire(user="app_scram")
        c.terminate()
    assert_login(p, "app_md5", PASSWORDS["app_md5"], {AUTH_MD5})


# --------------------------------------------------------------------------- databases

def test_unknown_database(pgrouter):
    p = pgrouter()
    err = login_error(p, dbname="no_such_db")
    assert err.sqlstate == sqlstate("3D000"), err
    assert "no_such_db" in err.message


# --------------------------------------------------------------------------- server-side auth

@pytest.mark.parametrize("user,method", [
    ("app_trust", "trust"), ("app_plain", "password"), ("app_md5", "md5"), ("app_scram", "scram-sha-256")])
def test_server_auth_methods(pgrouter, pg, user, method):
    assert f"host all {user} 127.0.0.1/32 {method}" in pg.hba
    p = pgrouter({"auth_type": "md5"})
    with p.connect(user=user) as c, c.cursor() as cur:
        cur.execute("SELECT current_user, pg_backend_pid()")
        assert cur.fetchone()[0] == user


def test_server_auth_with_md5_hash_in_userlist(pgrouter):
    """An md5 hash in the userlist is enough to log in to a server that asks for md5."""
    hashed = "md5" + hashlib.md5((PASSWORDS["app_md5"] + "app_md5").encode()).hexdigest()
    p = pgrouter({"auth_type": "md5"}, userlist={"app_md5": hashed})
    with p.connect() as c, c.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app_md5"


def test_server_rejects_pooler_password(pgrouter):
    """The userlist password is wrong for the server: the client gets an error, promptly."""
    p = pgrouter({"auth_type": "md5", "server_login_retry": 1, "query_wait_timeout": 10},
                 userlist={"app_scram": "not-the-server-password"})
    with pytest.raises(pgwire.PgError):
        c = p.wire(user="app_scram", password="not-the-server-password", timeout=30)
        try:
            c.scalar("SELECT 1", timeout=30)
        finally:
            c.terminate()


def test_forced_server_user(pgrouter):
    """A database entry with user= logs in to the server as that user, whoever the client is."""
    p = pgrouter(databases={"testdb": {}, "forced": {"dbname": "testdb", "user": "app_scram"}})
    with p.connect(user="app_md5", dbname="forced") as c, c.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app_scram"


def test_forced_server_user_means_one_pool(pgrouter, pg):
    """With user= every client of the database shares one pool (as PgBouncer): pool_size
    bounds the servers of all its client users together, and a second client waits
    for the one server instead of opening its own."""
    p = pgrouter({"default_pool_size": 1},
                 databases={"testdb": {}, "forced": {"dbname": "testdb", "user": "app_scram"}})
    a = p.wire(user="app_md5", dbname="forced")
    b = p.wire(user="app_plain", dbname="forced")
    try:
        assert a.query("BEGIN").status == "T"
        b.send(pgwire.query_msg("SELECT current_user"))  # must wait for a's server
        helpers.wait_until(lambda: any(r[0] == "forced" and r[1] == "app_scram" and r[3] == 1
                                       for r in p.admin("SHOW POOLS")), 10, "the second client queued")
        pools = [(r[0], r[1]) for r in p.admin("SHOW POOLS") if r[0] == "forced"]
        assert pools == [("forced", "app_scram")], pools
        helpers.wait_until(lambda: pg.backends("app_scram", "testdb") == 1, 10, "one server for both clients")
        assert a.query("COMMIT").status == "I"
        r = b.read_until_ready()
        assert r.error is None and r.rows == [["app_scram"]], (r.types(), r.error)
    finally:
        a.close()
        b.close()


def test_auth_type_any_logs_every_client_in_as_the_forced_user(pgrouter, pg):
    """PgBouncer's auth_type = any: no password is asked and the user name given is
    ignored; the client becomes the database's forced user. A database without user=
    is refused with a message naming it, and anyone may open the console as admin."""
    forced = {"dbname": "testdb", "user": "app_scram", "password": PASSWORDS["app_scram"]}
    p = pgrouter({"auth_type": "any", "admin_users": ["ops"]}, databases={"testdb": {}, "forced": forced})
    c = p.wire(user="nobody_here", dbname="forced", password="")
    try:
        assert c.auth_requests == [AUTH_OK], c.auth_requests
        assert c.scalar("SELECT current_user") == "app_scram"
        clients = p.admin("SHOW CLIENTS")
        assert [r[1] for r in clients if r[2] == "forced"] == ["app_scram"], clients
        assert [(r[0], r[1]) for r in p.admin("SHOW POOLS") if r[0] == "forced"] == [("forced", "app_scram")]
    finally:
        c.terminate()
    err = login_error(p, user="app_md5", dbname="testdb", password="")
    assert err.sqlstate == sqlstate("28000"), err
    if not helpers.is_pgbouncer():
        assert 'requires a forced user, and database "testdb" has none' in str(err), err
    err = login_error(p, user="nobody_here", dbname="no_such_db", password="")
    assert err.sqlstate == sqlstate("3D000"), err
    # The console: any name and no password, shown as pgbouncer; only a name in
    # admin_users may run more than SHOW.
    for name, admin_rights in (("somebody", False), ("ops", True)):
        admin = p.wire(user=name, dbname="pgbouncer", password="")
        try:
            assert admin.auth_requests == [AUTH_OK], admin.auth_requests
            r = admin.query("SHOW CLIENTS")
            assert r.error is None and [row[1] for row in r.rows] == ["pgbouncer"], (r.rows, r.error)
            r = admin.query("RELOAD")
            assert (r.error is None) == admin_rights, (name, r.error)
        finally:
            admin.terminate()


@pytest.mark.pgrouter_only("PgBouncer's auth_type any takes the forced user's password only from the database line")
def test_auth_type_any_in_pgbouncer_ini(pgrouter, pg):
    """auth_type = any in pgbouncer.ini; the forced user's password comes from auth_file."""
    p = pgrouter({"auth_type": "any"}, databases={"forced": {"dbname": "testdb", "user": "app_md5"}}, fmt="ini")
    r = p.psql("-A", "-t", "-c", "SELECT current_user", user="whoever", dbname="forced", password="")
    assert r.returncode == 0 and r.stdout.strip() == "app_md5", r.stderr


def test_admin_console_login(pgrouter):
    p = pgrouter()
    rows = p.admin("SHOW VERSION")
    assert rows and rows[0][0], rows
    if not helpers.is_pgbouncer():
        assert rows[0][0].startswith("pgrouter ")


def test_no_password_or_secret_in_the_log(pgrouter, pg):
    """Issue 2: no password or secret ever appears in a log line, whatever happens:
    logins right and wrong by each method, a server refusing the pooler's password,
    a database entry carrying a password, the admin console, a RELOAD."""
    scram_secret = pg.rolpassword("app_scram")
    md5_hash = "md5" + hashlib.md5((PASSWORDS["app_md5"] + "app_md5").encode()).hexdigest()
    wrong = ["wrong-pw-7731", "another-wrong-pw-9942"]
    db_password = "db-entry-pw-5521"
    p = pgrouter({"auth_type": "md5", "server_login_retry": 1, "query_wait_timeout": 10,
                  "log_connections": True, "log_disconnections": True},
                 databases={"testdb": {}, "withpw": {"dbname": "testdb", "user": "app_plain",
                                                      "password": db_password}},
                 userlist={"app_md5": md5_hash, "app_scram": scram_secret, "app_plain": PASSWORDS["app_plain"],
                           "app_trust": "not-the-server-password-3317", "pgbouncer": PASSWORDS["pgbouncer"]})
    assert_login(p, "app_md5", PASSWORDS["app_md5"], {AUTH_MD5})
    assert_login(p, "app_scram", PASSWORDS["app_scram"], {AUTH_SASL})
    assert_login(p, "app_plain", PASSWORDS["app_plain"], {AUTH_MD5})
    for user in ("app_md5", "app_scram", "app_plain"):
        for pw in wrong:
            login_error(p, user=user, password=pw)
    login_error(p, user="nobody_here", password=wrong[0])
    # The database entry's password is the server's: wrong for app_plain, refused.
    with pytest.raises(pgwire.PgError):
        c = p.wire(user="app_md5", dbname="withpw", timeout=30)
        try:
            c.scalar("SELECT 1", timeout=30)
        finally:
            c.terminate()
    # app_trust's userlist password is not the server's either (hba trust lets it in anyway).
    c = p.wire(user="app_trust", password="not-the-server-password-3317")
    c.terminate()
    p.admin("SHOW CONFIG")
    p.admin("RELOAD")
    time.sleep(0.5)
    log = p.log()
    # The log did record the logins, the failed ones with their reason.
    assert "app_md5@127.0.0.1" in log, log[-2000:]
    failures = [l for l in log.splitlines() if "authentication failed" in l]
    assert any("app_scram@" in l for l in failures) and any("nobody_here@" in l for l in failures), log[-3000:]
    for secret in [PASSWORDS["app_md5"], PASSWORDS["app_scram"], PASSWORDS["app_plain"], PASSWORDS["pgbouncer"],
                   md5_hash, md5_hash[3:], scram_secret, scram_secret.split("$")[-1], db_password,
                   "not-the-server-password-3317"] + wrong:
        assert secret not in log, f"{secret!r} appears in the log"


@pytest.mark.parametrize("log_pooler_errors", [True, False])
def test_log_pooler_errors(pgrouter, log_pooler_errors):
    """A refused login is a pooler error: logged as such unless log_pooler_errors is off;
    the disconnection line (log_disconnections) names the reason either way."""
    p = pgrouter({"auth_type": "md5", "log_pooler_errors": log_pooler_errors, "log_disconnections": True})
    login_error(p, user="app_md5", password="wrong-pw-4410")
    deadline = time.monotonic() + 5
    while "password authentication failed" not in p.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    log = p.log()
    pooler_error = "pooler error" if p.kind == "pgbouncer" else "login failed"
    assert (pooler_error in log) == log_pooler_errors, log[-2000:]
    if not log_pooler_errors:
        assert "closing because: password authentication failed" in log, log[-2000:]
