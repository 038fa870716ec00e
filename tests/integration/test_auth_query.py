"""auth_user / auth_query: users missing from the auth_file are looked up in PostgreSQL.

The pooler logs in to the server as auth_user (which must be in the userlist), runs
auth_query with the client's user name, and authenticates the client against the
secret it got back: an md5 hash (md5 challenge) or a SCRAM verifier (SCRAM exchange,
whose ClientKey then lets the pooler log in to the server as that user).
"""

import threading
import time

import psycopg2
import pytest

import helpers
import pgwire
from helpers import PASSWORDS, sqlstate

AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL = 0, 3, 5, 10

# Roles that exist only in PostgreSQL, never in the pooler's userlist.
AQ_PASSWORDS = {
    "aq_md5": "aq-md5-secret",        # stored as an md5 hash
    "aq_scram": "aq-scram-secret",    # stored as a SCRAM-SHA-256 verifier
    "aq_lookup": "aq-lookup-secret",  # a non-superuser auth_user (SECURITY DEFINER lookup function)
}
LOOKUP_QUERY = "SELECT usename, passwd FROM public.aq_lookup_user($1)"


def userlist(**extra):
    """The default userlist plus the auth_user; none of the aq_* roles but aq_lookup."""
    ul = dict(PASSWORDS)
    ul["postgres"] = "postgres-unused"  # the server trusts postgres from 127.0.0.1
    ul.update(extra)
    return ul


@pytest.fixture(scope="module")
def aq_roles(pg):
    c = pg.connect()
    try:
        cur = c.cursor()
        for role in ("aq_md5", "aq_scram", "aq_nopass", "aq_lookup"):
            cur.execute(f"DROP ROLE IF EXISTS {role}")
        cur.execute("SET password_encryption = 'md5'")
        cur.execute("CREATE ROLE aq_md5 LOGIN PASSWORD %s", (AQ_PASSWORDS["aq_md5"],))
        cur.execute("SET password_encryption = 'scram-sha-256'")
        cur.execute("CREATE ROLE aq_scram LOGIN PASSWORD %s", (AQ_PASSWORDS["aq_scram"],))
        cur.execute("CREATE ROLE aq_lookup LOGIN PASSWORD %s", (AQ_PASSWORDS["aq_lookup"],))
        cur.execute("CREATE ROLE aq_nopass LOGIN")  # exists, but has no password
    finally:
        c.close()
    # PgBouncer's recommended setup for a non-superuser auth_user.
    pg.sql("""
        CREATE OR REPLACE FUNCTION public.aq_lookup_user(p_usename text, OUT usename name, OUT passwd text)
        RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS
        $$ SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = p_usename $$;
        REVOKE ALL ON FUNCTION public.aq_lookup_user(text) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION public.aq_lookup_user(text) TO aq_lookup;
    """, dbname="testdb")
    assert pg.rolpassword("aq_md5").startswith("md5")
    assert pg.rolpassword("aq_scram").startswith("SCRAM-SHA-256$")
    yield
    pg.sql("DROP FUNCTION IF EXISTS public.aq_lookup_user(text)", dbname="testdb")
    c = pg.connect()
    try:
        cur = c.cursor()
        for role in ("aq_md5", "aq_scram", "aq_nopass", "aq_lookup"):
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        for role in ("aq_md5", "aq_scram", "aq_nopass", "aq_lookup"):
            cur.execute(f"DROP ROLE IF EXISTS {role}")
    finally:
        c.close()


@pytest.fixture(autouse=True)
def server_hba(aq_roles, pg_hba, pg):
    """The server's catch-all line is scram-sha-256, which an md5-hashed password cannot
    pass: let aq_md5 in with md5 (the pooler proves it has the hash)."""
    lines = [l for l in pg.hba if not l.startswith("host all all ")]
    lines += ["host all aq_md5 127.0.0.1/32 md5"] + [l for l in pg.hba if l.startswith("host all all ")]
    pg_hba(lines)


def login(p, user, password, dbname="testdb"):
    return pgwire.connect(p.host, p.port, user, dbname, password, timeout=30)


def login_error(p, user, password, dbname="testdb"):
    with pytest.raises(pgwire.PgError) as e:
        c = login(p, user, password, dbname)
        c.terminate()
    return e.value


def assert_login(p, user, expect_method, dbname="testdb"):
    c = login(p, user, AQ_PASSWORDS[user], dbname)
    try:
        assert c.auth_requests[0] == expect_method and c.auth_requests[-1] == AUTH_OK, c.auth_requests
        assert c.scalar("SELECT current_user") == user
    finally:
        c.terminate()


def assert_libpq_login(p, user, queries=3):
    with psycopg2.connect(p.dsn(user=user, password=AQ_PASSWORDS[user])) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            for i in range(queries):
                cur.execute("SELECT current_user, %s::int", (i,))
                assert cur.fetchone() == (user, i)
    conn.close()


# --------------------------------------------------------------------------- logins

@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256"])
def test_scram_secret_from_auth_query(pgrouter, auth_type):
    """A SCRAM verifier from pg_shadow: the client does SCRAM (also under auth_type md5,
    as PgBouncer), and the pooler reaches the server with the client's proven keys."""
    p = pgrouter({"auth_type": auth_type, "auth_user": "postgres"}, userlist=userlist())
    assert_login(p, "aq_scram", AUTH_SASL)
    assert_libpq_login(p, "aq_scram")
    # Several clients at once: the pool opens more than one server connection with those keys.
    clients = [login(p, "aq_scram", AQ_PASSWORDS["aq_scram"]) for _ in range(3)]
    try:
        for c in clients:
            c.send(pgwire.query_msg("BEGIN"))
            assert c.read_until_ready().status == "T"
        pids = {c.scalar("SELECT pg_backend_pid()") for c in clients}
        assert len(pids) == 3, pids
        for c in clients:
            r = c.query("COMMIT")
            assert r.error is None, r.error
    finally:
        for c in clients:
            c.terminate()


def test_md5_secret_from_auth_query(pgrouter):
    p = pgrouter({"auth_type": "md5", "auth_user": "postgres"}, userlist=userlist())
    assert_login(p, "aq_md5", AUTH_MD5)
    assert_libpq_login(p, "aq_md5")


def test_md5_secret_refused_under_scram_auth_type(pgrouter):
    """auth_type scram-sha-256 means SCRAM: a user whose only secret is an md5 hash cannot
    do it and is refused, never offered a weaker md5 challenge instead. (PostgreSQL's
    scram-sha-256 method refuses md5-hashed passwords; PgBouncer 1.18 logs "SCRAM
    authentication failed: user has MD5 secret".)"""
    p = pgrouter({"auth_type": "scram-sha-256", "auth_user": "postgres"}, userlist=userlist())
    c = pgwire.WireClient(p.host, p.port, timeout=30)
    try:
        with pytest.raises(pgwire.PgError) as e:
            c.login("aq_md5", "testdb", AQ_PASSWORDS["aq_md5"])
        assert AUTH_MD5 not in c.auth_requests, c.auth_requests
    finally:
        c.close()
    assert e.value.sqlstate == sqlstate("28P01"), e.value
    # A SCRAM secret from the same query is fine under the same settings.
    assert_login(p, "aq_scram", AUTH_SASL)


@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256"])
def test_userlist_users_unaffected(pgrouter, auth_type):
    """Users in the auth_file keep authenticating from it with auth_user set."""
    p = pgrouter({"auth_type": auth_type, "auth_user": "postgres"}, userlist=userlist())
    for user in ("app_md5", "app_scram"):
        c = login(p, user, PASSWORDS[user])
        try:
            assert c.scalar("SELECT current_user") == user
        finally:
            c.terminate()
    err = login_error(p, "app_md5", "wrong")
    assert err.sqlstate == sqlstate("28P01"), err


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256"])
@pytest.mark.parametrize("user", ["aq_md5", "aq_scram"])
def test_wrong_password(pgrouter, auth_type, user):
    p = pgrouter({"auth_type": auth_type, "auth_user": "postgres"}, userlist=userlist())
    err = login_error(p, user, "not-the-password")
    assert err.sqlstate == sqlstate("28P01"), err
    with pytest.raises(psycopg2.OperationalError) as e:
        psycopg2.connect(p.dsn(user=user, password="not-the-password"))
    assert helpers.is_pgbouncer() or "password authentication failed" in str(e.value), e.value
    # And the right one still works afterwards (nothing cached wrongly).
    c = login(p, "aq_scram", AQ_PASSWORDS["aq_scram"])
    c.terminate()


@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256"])
def test_user_unknown_to_postgres(pgrouter, auth_type):
    p = pgrouter({"auth_type": auth_type, "auth_user": "postgres"}, userlist=userlist())
    err = login_error(p, "aq_nobody", "whatever")
    assert err.sqlstate == sqlstate("28P01"), err
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(p.dsn(user="aq_nobody", password="whatever"))


def test_role_without_password(pgrouter):
    """auth_query returns a row whose password is NULL: no password can match."""
    p = pgrouter({"auth_type": "md5", "auth_user": "postgres"}, userlist=userlist())
    err = login_error(p, "aq_nopass", "")
    assert err.sqlstate == sqlstate("28P01"), err
    err = login_error(p, "aq_nopass", "anything")
    assert err.sqlstate == sqlstate("28P01"), err


def test_without_auth_user_unknown_users_are_refused(pgrouter):
    p = pgrouter({"auth_type": "md5"}, userlist=userlist())
    for user in ("aq_md5", "aq_scram"):
        err = login_error(p, user, AQ_PASSWORDS[user])
        assert err.sqlstate == sqlstate("28P01"), err


# --------------------------------------------------------------------------- variants

def test_custom_auth_query_with_unprivileged_auth_user(pgrouter):
    """PgBouncer's recommended setup: a SECURITY DEFINER function, called by a plain role."""
    p = pgrouter({"auth_type": "scram-sha-256", "auth_user": "aq_lookup", "auth_query": LOOKUP_QUERY},
                 userlist=userlist(aq_lookup=AQ_PASSWORDS["aq_lookup"]))
    assert_login(p, "aq_scram", AUTH_SASL)
    assert_libpq_login(p, "aq_scram")
    err = login_error(p, "aq_scram", "wrong")
    assert err.sqlstate == sqlstate("28P01"), err
    err = login_error(p, "aq_nobody", "whatever")
    assert err.sqlstate == sqlstate("28P01"), err


def test_auth_query_pg_authid(pgrouter):
    p = pgrouter({"auth_type": "md5", "auth_user": "postgres",
                  "auth_query": "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1 AND rolcanlogin"},
                 userlist=userlist())
    assert_login(p, "aq_md5", AUTH_MD5)
    assert_login(p, "aq_scram", AUTH_SASL)


def test_auth_user_per_database(pgrouter):
    """auth_user on a database entry (as in a PgBouncer [databases] line) applies to it alone."""
    p = pgrouter({"auth_type": "md5"}, userlist=userlist(),
                 databases={"testdb": {"auth_user": "postgres"}, "plaindb": {"dbname": "testdb"}})
    assert_login(p, "aq_scram", AUTH_SASL, dbname="testdb")
    err = login_error(p, "aq_scram", AQ_PASSWORDS["aq_scram"], dbname="plaindb")
    assert err.sqlstate == sqlstate("28P01"), err


@pytest.mark.parametrize("encryption", ["md5", "scram-sha-256"])
def test_password_change_is_picked_up(pgrouter, pg, pg_hba, encryption):
    """auth_query runs at every login: after ALTER ROLE ... PASSWORD the new password logs
    in, the old one is refused, and a new server connection opened after the change
    logs in to PostgreSQL with the new secret."""
    role = "aq_rotate"
    pg.sql(f"DROP ROLE IF EXISTS {role}")
    pg.sql(f"SET password_encryption = '{encryption}'; CREATE ROLE {role} LOGIN PASSWORD 'first-secret'")
    pg_hba([f"host all {role} 127.0.0.1/32 md5"] + list(pg.hba))
    clients = []
    try:
        p = pgrouter({"auth_type": "md5", "auth_user": "postgres"}, userlist=userlist())
        c = login(p, role, "first-secret")
        assert c.scalar("SELECT current_user") == role
        c.terminate()
        assert pg.backends(role) == 1  # one server connection, idle in the pool

        pg.sql(f"SET password_encryption = '{encryption}'; ALTER ROLE {role} PASSWORD 'second-secret'")
        err = login_error(p, role, "first-secret")
        assert err.sqlstate == sqlstate("28P01"), err
        # Two clients in a transaction each: the second needs a second server connection,
        # a new server login, which must use the new secret.
        pids = set()
        for _ in range(2):
            c = login(p, role, "second-secret")
            clients.append(c)
            r = c.query("BEGIN")
            assert r.error is None, r.error
            r = c.query("SELECT pg_backend_pid(), current_user")
            assert r.error is None, r.error
            assert r.rows[0][1] == role
            pids.add(r.rows[0][0])
        assert len(pids) == 2, pids
        for c in clients:
            assert c.query("COMMIT").error is None
    finally:
        for c in clients:
            c.terminate()
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        pg.sql(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.pgrouter_only("auth_dbname is newer than PgBouncer 1.18")
@pytest.mark.parametrize("where", ["global", "database"])
def test_auth_dbname_runs_the_lookup_in_another_database(pgrouter, where):
    """The lookup function exists only in testdb. A client of `otherdb` (the server's
    `postgres` database, which lacks it) logs in when auth_dbname points the lookup at
    testdb, globally or on otherdb's entry; without it, its login is refused."""
    settings = {"auth_type": "scram-sha-256", "auth_user": "aq_lookup", "auth_query": LOOKUP_QUERY}
    ul = userlist(aq_lookup=AQ_PASSWORDS["aq_lookup"])
    other = {"dbname": "postgres"}
    without = pgrouter(dict(settings), userlist=ul, databases={"testdb": {}, "otherdb": dict(other)})
    err = login_error(without, "aq_scram", AQ_PASSWORDS["aq_scram"], dbname="otherdb")
    # The lookup failed (no such function there): said as such, not as a wrong password.
    assert err.sqlstate == "28000" and "could not look up user" in err.message, err
    if where == "global":
        p = pgrouter(dict(settings, auth_dbname="testdb"), userlist=ul, databases={"testdb": {}, "otherdb": other})
    else:
        p = pgrouter(dict(settings), userlist=ul, databases={"testdb": {}, "otherdb": dict(other, auth_dbname="testdb")})
    c = login(p, "aq_scram", AQ_PASSWORDS["aq_scram"], dbname="otherdb")
    try:
        assert c.scalar("SELECT current_database()") == "postgres"
        assert c.scalar("SELECT current_user") == "aq_scram"
    finally:
        c.terminate()
    err = login_error(p, "aq_scram", "wrong", dbname="otherdb")
    assert err.sqlstate == sqlstate("28P01"), err


@pytest.mark.pgrouter_only("a per-database auth_query is newer than PgBouncer 1.18")
@pytest.mark.parametrize("fmt", ["toml", "ini"])
def test_auth_query_per_database(pgrouter, fmt):
    """A database's own auth_query wins over the global one for its clients: here the
    global one names a function that does not exist, testdb's the working lookup."""
    broken = "SELECT usename, passwd FROM public.no_such_lookup($1)"
    p = pgrouter({"auth_type": "scram-sha-256", "auth_user": "aq_lookup", "auth_query": broken}, fmt=fmt,
                 userlist=userlist(aq_lookup=AQ_PASSWORDS["aq_lookup"]),
                 databases={"testdb": {"auth_query": LOOKUP_QUERY}, "plaindb": {"dbname": "testdb"}})
    assert_login(p, "aq_scram", AUTH_SASL, dbname="testdb")
    err = login_error(p, "aq_scram", AQ_PASSWORDS["aq_scram"], dbname="plaindb")
    assert err.sqlstate == "28000" and "could not look up user" in err.message, err
    assert "no_such_lookup" in p.log() and "no_such_lookup" not in err.message


@pytest.mark.pgrouter_only("PgBouncer 1.18 drops the client when its auth_query connection fails")
def test_logins_ride_out_terminated_auth_user_connections(pgrouter, pg):
    """The auth_user's server connections are terminated every 50 ms while clients log in
    for 4 s: a lookup cut off that way is run again on another connection, so no login
    fails (it used to fail as a wrong password, 28P01)."""
    p = pgrouter({"auth_type": "md5", "auth_user": "aq_lookup", "auth_query": LOOKUP_QUERY},
                 userlist=userlist(aq_lookup=AQ_PASSWORDS["aq_lookup"]))
    stop = threading.Event()
    killed = []

    def killer():
        while not stop.wait(0.05):
            for (pid,) in pg.sql("SELECT pid FROM pg_stat_activity WHERE usename = 'aq_lookup'"):
                pg.sql("SELECT pg_terminate_backend(%s)", (pid,))
                killed.append(pid)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    errors, ok = [], 0
    try:
        end = time.monotonic() + 4
        while time.monotonic() < end:
            try:
                c = login(p, "aq_md5", AQ_PASSWORDS["aq_md5"])
                assert c.scalar("SELECT current_user") == "aq_md5"
                c.terminate()
                ok += 1
            except pgwire.PgError as e:
                errors.append((e.sqlstate, e.message))
    finally:
        stop.set()
        t.join(10)
    assert len(killed) >= 20, f"only {len(killed)} auth_user connections terminated"
    assert ok > 100 and not errors, (ok, errors[:5])


@pytest.mark.pgrouter_only("PgBouncer 1.18 drops the client when its auth_query connection fails")
def test_a_lookup_that_cannot_reach_the_server_is_not_a_wrong_password(pgrouter):
    """auth_user cannot log in to the server (its password in auth_file is wrong): the
    client is told the lookup failed (08006), not that its password was wrong."""
    p = pgrouter({"auth_type": "md5", "auth_user": "aq_lookup", "auth_query": LOOKUP_QUERY},
                 userlist=userlist(aq_lookup="not-the-password"))
    err = login_error(p, "aq_md5", AQ_PASSWORDS["aq_md5"])
    assert err.sqlstate == "08006" and "could not look up user \"aq_md5\"" in err.message, err
    assert "not-the-password" not in p.log()
