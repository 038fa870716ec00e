"""SPEC §1: a CONFIG ending in .ini is read as a PgBouncer pgbouncer.ini."""

import helpers


def test_basic_query_through_toml(pgrouter):
    p = pgrouter()
    with p.connect() as c, c.cursor() as cur:
        cur.execute("SELECT 40 + 2, current_user, current_database()")
        assert cur.fetchone() == (42, "app_md5", "testdb")


def test_basic_query_through_pgbouncer_ini(pgrouter):
    p = pgrouter(fmt="ini")
    assert p.config_path.name == "pgbouncer.ini"
    text = p.config_path.read_text()
    assert "[databases]" in text and "[pgbouncer]" in text
    with p.connect() as c, c.cursor() as cur:
        cur.execute("SELECT 40 + 2, current_user, current_database()")
        assert cur.fetchone() == (42, "app_md5", "testdb")


def test_ini_include_users_and_database_options(pgrouter, pg):
    """%include, a [users] section and per-database pool_mode/pool_size, as PgBouncer reads them."""
    p = pgrouter(fmt="ini", databases={"testdb": {}, "sessdb": {"dbname": "testdb", "pool_mode": "session",
                                                                  "pool_size": 1}},
                 users={"app_scram": {"pool_mode": "session"}}, start=False)
    # Move [databases] into an included file, as packaged pgbouncer.ini files often do.
    text = p.config_path.read_text()
    dbs, rest = text.split("\n\n", 1)
    inc = p.dir / "databases.ini"
    inc.write_text(dbs + "\n")
    p.config_path.write_text(f"%include {inc}\n\n" + rest)
    if p.kind == "pgbouncer":   # PgBouncer runs as the postgres OS user
        helpers.chown_pg(inc)
    p.start()
    # sessdb: session mode, one server: a client keeps its backend across transactions.
    with p.connect(dbname="sessdb") as c, c.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        cur.execute("SELECT pg_backend_pid(), current_database()")
        assert cur.fetchone() == (pid, "testdb")
    with p.connect(user="app_scram") as c, c.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "app_scram"
