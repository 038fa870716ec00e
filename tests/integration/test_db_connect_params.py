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
