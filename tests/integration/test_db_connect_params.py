"""What a [databases] entry asks of each new server connection (PgBouncer's
connection-string keys): `client_encoding`, `datestyle`, `timezone` and
`application_name` go into the server's StartupMessage, so a client that names
none of its own gets the database's values (in its ParameterStatus and in its
queries, also after another client used the same server with its own values);
`connect_query` runs once on each new server connection before any client gets
it, and its errors are logged and ignored."""

import time

import pytest

import helpers
import pgwire

SETTINGS_SQL = ("SELECT pg_backend_pid(), current_setting('DateStyle'), current_setting('TimeZone'), "
                "current_setting('client_encoding'), current_setting('application_name')")

DB_PARAMS = {"datestyle": "SQL, DMY", "timezone": "Asia/Tokyo", "client_encoding": "LATIN1",
             "application_name": "from_db"}


@pytest.mark.parametrize("fmt", ["toml", "ini"])
def test_database_startup_parameters_are_every_clients_defaults(pgrouter, fmt):
    if helpers.is_pgbouncer() and fmt == "toml":
        pytest.skip("TOML is pgrouter's own format")
    p = pgrouter({"default_pool_size": 1}, databases={"testdb": dict(DB_PARAMS)}, fmt=fmt)
    plain = p.wire()  # names no parameter of its own
    own = p.wire(params={"TimeZone": "UTC", "DateStyle": "ISO, YMD", "application_name": "mine",
                         "client_encoding": "UTF8"})
    try:
        assert plain.params.get("DateStyle") == "SQL, DMY", plain.params
        assert plain.params.get("TimeZone") == "Asia/Tokyo", plain.params
        assert plain.params.get("client_encoding") == "LATIN1", plain.params
        assert plain.params.get("application_name") == "from_db", plain.params
        assert own.params.get("TimeZone") == "UTC", own.params
        pids = set()
        for _ in range(3):
            r = plain.query(SETTINGS_SQL)
            assert r.error is None, r.error
            pids.add(r.rows[0][0])
            assert r.rows[0][1:] == ["SQL, DMY", "Asia/Tokyo", "LATIN1", "from_db"], r.rows
            r = own.query(SETTINGS_SQL)
            assert r.error is None, r.error
            pids.add(r.rows[0][0])
            assert r.rows[0][1:] == ["ISO, YMD", "UTC", "UTF8", "mine"], r.rows
        assert len(pids) == 1, "pool_size 1: both clients shared one server"
    finally:
        plain.close()
        own.close()


@pytest.mark.pgrouter_only("PgBouncer 1.18 keeps showing new clients the values of the pool's first server login")
def test_reload_changing_a_database_parameter_reaches_new_clients(pgrouter):
    p = pgrouter({"default_pool_size": 2}, databases={"testdb": {"datestyle": "SQL, DMY"}})
    before = p.wire()
    try:
        assert before.query("SHOW DateStyle").rows == [["SQL, DMY"]]
        p.databases["testdb"]["datestyle"] = "German, DMY"
        p.write_config(None)
        p.admin("RELOAD")
        after = p.wire()
        try:
            assert after.params.get("DateStyle") == "German, DMY", after.params
            assert after.query("SHOW DateStyle").rows == [["German, DMY"]]
            # A client from before keeps the values it was given at its login.
            assert before.query("SHOW DateStyle").rows == [["SQL, DMY"]]
        finally:
            after.close()
    finally:
        before.close()


def test_connect_query_runs_once_on_each_new_server(pgrouter, pg):
    tag = f"cq{time.time_ns()}"
    p = pgrouter({"default_pool_size": 2},
                 databases={"testdb": {"connect_query": f"SET application_name = {tag}_setup; "
                                                        f"SET pgrouter_test.tag = {tag}"}})
    a = p.wire()
    b = p.wire()
    try:
        assert a.query("BEGIN").status == "T"
        assert b.query("BEGIN").status == "T"  # two servers
        for c in (a, b):
            r = c.query("SELECT current_setting('pgrouter_test.tag')")
            assert r.rows == [[tag]], r.rows
            assert c.query("COMMIT").status == "I"
        # The application_name it SET is what clients without their own are shown.
        assert a.params.get("application_name") == f"{tag}_setup", a.params
        admin = pg.connect()
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (f"{tag}_setup",))
                assert cur.fetchone()[0] == 2, "one run per server connection"
        finally:
            admin.close()
    finally:
        a.close()
        b.close()


def test_connect_query_error_is_logged_and_the_server_used(pgrouter):
    p = pgrouter({}, databases={"testdb": {"connect_query": "SELECT 1/0"}})
    c = p.wire()
    try:
        r = c.query("SELECT 41 + 1")
        assert r.error is None and r.rows == [["42"]], (r.error, r.rows)
    finally:
        c.close()
    if not helpers.is_pgbouncer():
        assert "connect_query failed" in p.log() and "division by zero" in p.log()


@pytest.mark.pgrouter_only("PgBouncer 1.18 hands out a server that connect_query left inside a transaction")
def test_connect_query_leaving_a_transaction_open_is_refused(pgrouter):
    p = pgrouter({}, databases={"testdb": {"connect_query": "BEGIN"}})
    with pytest.raises(Exception) as e:
        p.wire()
    assert "08006" in str(e.value) or "inside a transaction" in str(e.value), e.value
    assert "connect_query left the server connection inside a transaction" in p.log()


@pytest.mark.parametrize("fmt", ["toml", "ini"])
def test_application_name_add_host(pgrouter, fmt):
    """PgBouncer's "<name or app> - <address>:<port>", set once at login: shown to the
    client and given to every server it uses; a later SET replaces it."""
    if helpers.is_pgbouncer() and fmt == "toml":
        pytest.skip("TOML is pgrouter's own format")
    p = pgrouter({"default_pool_size": 1, "application_name_add_host": True}, fmt=fmt)
    named = p.wire(params={"application_name": "billing"})
    unnamed = p.wire()
    try:
        for c, name in ((named, "billing"), (unnamed, "app")):
            ip, port = c.sock.getsockname()[:2]
            want = f"{name} - {ip}:{port}"
            assert c.params.get("application_name") == want, c.params
            for _ in range(2):  # one server for both: each gets its own name back
                assert c.query("SELECT current_setting('application_name')").rows == [[want]]
        assert named.query("SET application_name = 'renamed'").error is None
        assert unnamed.query("SELECT 1").rows == [["1"]]
        assert named.query("SELECT current_setting('application_name')").rows == [["renamed"]]
    finally:
        named.close()
        unnamed.close()


def test_application_name_add_host_off_by_default(pgrouter):
    p = pgrouter({})
    c = p.wire(params={"application_name": "billing"})
    try:
        assert c.query("SELECT current_setting('application_name')").rows == [["billing"]]
    finally:
        c.close()


def leaks_between_clients(p):
    """Session state one transaction-mode client leaves on the only server, as the next client sees it."""
    a = p.wire()
    b = p.wire()
    try:
        assert a.query("SET pgrouter_test.leak = 'from-a'").error is None
        assert a.query("PREPARE leaky AS SELECT 7").error is None
        assert a.query("CREATE TEMP TABLE leak_tmp (x int)").error is None
        seen = b.query("SELECT current_setting('pgrouter_test.leak', true), "
                       "(SELECT count(*) FROM pg_prepared_statements WHERE name = 'leaky'), "
                       "to_regclass('pg_temp.leak_tmp') IS NOT NULL")
        assert seen.error is None, seen.error
        return seen.rows[0]
    finally:
        a.close()
        b.close()


def test_server_reset_query_always_resets_after_each_transaction(pgrouter):
    base = {"default_pool_size": 1, "pool_mode": "transaction", "server_reset_query": "DISCARD ALL"}
    assert leaks_between_clients(pgrouter(dict(base))) == ["from-a", "1", "t"], "without it, state leaks"
    reset = leaks_between_clients(pgrouter(dict(base, server_reset_query_always=True)))
    assert reset[0] in (None, "") and reset[1:] == ["0", "f"], reset


@pytest.mark.pgrouter_only("max_prepared_statements is PgBouncer 1.21+ (the Debian PgBouncer is 1.18)")
def test_server_reset_query_always_with_protocol_prepared_statements(pgrouter):
    """A named statement the pooler renamed is gone from the server after DISCARD ALL:
    the pooler must prepare it again on the next use, not assume it is still there."""
    p = pgrouter({"default_pool_size": 1, "pool_mode": "transaction", "server_reset_query": "DISCARD ALL",
                  "server_reset_query_always": True, "max_prepared_statements": 10})
    c = p.wire()
    other = p.wire()
    try:
        c.send(pgwire.parse_msg("SELECT $1::int * 2", name="dbl") + pgwire.sync_msg())
        assert c.read_until_ready().error is None
        for v in (3, 4):
            c.send(pgwire.bind_msg((str(v),), stmt="dbl") + pgwire.execute_msg() + pgwire.sync_msg())
            r = c.read_until_ready()
            assert r.error is None and r.rows == [[str(v * 2)]], (r.error, r.rows)
            assert other.query("SELECT 1").rows == [["1"]]  # the server goes through a reset in between
    finally:
        c.close()
        other.close()


@pytest.mark.pgrouter_only("login_notify_message is PgBouncer 1.24+ (the Debian PgBouncer is 1.18)")
@pytest.mark.parametrize("fmt", ["toml", "ini"])
def test_login_notify_message(pgrouter, fmt):
    text = "You are connected through pgrouter, not PostgreSQL directly"
    p = pgrouter({"login_notify_message": text}, fmt=fmt)
    c = p.wire()
    try:
        assert [(n.get("S"), n.get("C"), n.get("M")) for n in c.login_notices] == [("NOTICE", "00000", text)]
        assert c.query("SELECT 1").notices == []  # once, at login
    finally:
        c.close()
    r = p.psql("-c", "SELECT 1")  # libpq shows it to the user
    assert r.returncode == 0 and f"NOTICE:  {text}" in r.stderr, r.stderr
    quiet = pgrouter({})
    c = quiet.wire()
    try:
        assert c.login_notices == []
    finally:
        c.close()


def test_server_reset_query_always_under_load(pgrouter, tmp_path):
    """Many clients over two servers, each release reset before the next client gets the
    server: pgbench (simple and extended) finishes every transaction without an error, and
    a SET one client leaves behind is never seen by another."""
    p = pgrouter({"default_pool_size": 2, "pool_mode": "transaction", "server_reset_query": "DISCARD ALL",
                  "server_reset_query_always": True})
    script = tmp_path / "leak.sql"
    # Each statement is a transaction of its own: the first fails (division by zero) if
    # the server still holds what the second left there for any client.
    script.write_text("SELECT 1/(CASE WHEN coalesce(current_setting('pgrouter_test.who', true), '') = '' "
                      "THEN 1 ELSE 0 END);\n"
                      "SELECT set_config('pgrouter_test.who', :client_id::text, false);\n")
    for mode in ("simple", "extended"):
        r = p.pgbench("-n", "-M", mode, "-c", "8", "-j", "2", "-t", "100", "-f", str(script), timeout=120)
        assert r.returncode == 0, f"pgbench -M {mode}:\n{r.stdout}\n{r.stderr}"
        assert "number of transactions actually processed: 800/800" in r.stdout, r.stdout
    # Without the reset the same script trips over what clients leave behind.
    q = pgrouter({"default_pool_size": 2, "pool_mode": "transaction", "server_reset_query": "DISCARD ALL"})
    r = q.pgbench("-n", "-c", "8", "-j", "2", "-t", "100", "-f", str(script), timeout=120)
    assert r.returncode != 0 and "division by zero" in r.stderr, (r.returncode, r.stderr[-500:])
    # The reset ran between clients: a fresh client finds nothing another one SET.
    c = p.wire()
    try:
        r = c.query("SELECT coalesce(current_setting('pgrouter_test.who', true), '')")
        assert r.rows == [[""]], r.rows
    finally:
        c.close()
