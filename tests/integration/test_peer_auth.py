"""Peer authentication (auth_type = peer, and `peer` lines of auth_hba_file), as
PostgreSQL and PgBouncer do it: on the unix socket, the OS user at the other end
(SO_PEERCRED) must be the user the client asks for; anything else, and any TCP
client, is refused with 28000."""

import os
import pwd
import subprocess

import psycopg2
import pytest

import helpers
import pgwire

pytestmark = pytest.mark.pgrouter_only("PostgreSQL's peer messages and SQLSTATE 28000; PgBouncer 1.18 answers "
                                       "'unix socket login rejected', wants peer users in auth_file and starts "
                                       "with peer on host lines")


def me():
    return pwd.getpwuid(os.getuid()).pw_name


def unix_connect(p, user, dbname="testdb"):
    c = psycopg2.connect(host=str(p.dir), port=p.port, user=user, dbname=dbname, connect_timeout=10)
    c.autocommit = True
    return c


def one(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def test_auth_type_peer(pgrouter):
    # The server-side login is the forced user postgres (trusted by the test server),
    # so any OS user name can be a pooler user here.
    p = pgrouter({"auth_type": "peer"}, databases={"testdb": {"user": "postgres"}})
    c = unix_connect(p, me())
    try:
        assert one(c, "SELECT current_user") == "postgres"
    finally:
        c.close()
    with pytest.raises(psycopg2.OperationalError) as e:
        unix_connect(p, "app_md5")
    assert f'Peer authentication failed for user "app_md5"' in str(e.value), e.value
    assert f'OS user "{me()}" asked for user "app_md5"' in p.log()
    # Over TCP there is no peer to ask.
    with pytest.raises(pgwire.PgError) as e:
        p.wire(user=me(), password="")
    assert e.value.sqlstate == helpers.sqlstate("28000"), e.value


def test_peer_lines_in_hba_file(pgrouter, pg):
    """`local ... peer` next to `host ... md5`: socket clients by OS user, TCP clients by password.
    A real psql run as the postgres OS user logs in as postgres without a password."""
    p = pgrouter({"auth_type": "hba"}, hba=["local all all peer", "host all all 127.0.0.1/32 md5"])
    os.chmod(p.dir, 0o755)  # the postgres OS user must reach the socket
    r = subprocess.run(["runuser", "-u", "postgres", "--", helpers.client_tool("psql"), "-X", "-At",
                        "-h", str(p.dir), "-p", str(p.port), "-U", "postgres", "-d", "testdb",
                        "-c", "SELECT current_user"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30,
                       env=dict(p.client_env("postgres"), PGPASSWORD=""))
    assert r.returncode == 0 and r.stdout.strip() == "postgres", (r.returncode, r.stdout, r.stderr)
    r = subprocess.run(["runuser", "-u", "postgres", "--", helpers.client_tool("psql"), "-X", "-At",
                        "-h", str(p.dir), "-p", str(p.port), "-U", "app_md5", "-d", "testdb", "-c", "SELECT 1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30,
                       env=dict(p.client_env("app_md5"), PGPASSWORD=""))
    assert r.returncode != 0 and 'Peer authentication failed for user "app_md5"' in r.stderr, r.stderr
    c = p.connect()  # TCP: md5 with the password from the userlist
    try:
        assert one(c, "SELECT current_user") == "app_md5"
    finally:
        c.close()


def test_peer_is_refused_on_host_lines(pgrouter):
    """As in PostgreSQL's pg_hba.conf: a `host` line cannot use peer, and pgrouter does not start with one."""
    p = pgrouter({"auth_type": "hba"}, hba=["local all all trust", "host all all 127.0.0.1/32 peer"], start=False)
    with pytest.raises(helpers.StartError) as e:
        p.start()
    assert "peer authentication is only supported on local sockets" in str(e.value), e.value


def with_ident_map(pgrouter, hba, ident_lines):
    p = pgrouter({"auth_type": "hba"}, hba=hba, start=False)
    (p.dir / "ident.conf").write_text("\n".join(ident_lines) + "\n")
    p.settings["auth_ident_file"] = str(p.dir / "ident.conf")
    p.write_config(hba)
    return p


def test_ident_map_lets_an_os_user_log_in_as_listed_users(pgrouter):
    """auth_ident_file (PgBouncer 1.23+): `peer map=NAME` lets the OS user log in as the
    database users its map lists ("all" for any)."""
    p = with_ident_map(pgrouter, ["local all all peer map=apps", "host all all 127.0.0.1/32 md5"],
                       ["# map  system  database", f"apps {me()} app_md5", "apps somebody_else all"]).start()
    c = unix_connect(p, "app_md5")  # the server login uses app_md5's password from auth_file
    try:
        assert one(c, "SELECT current_user") == "app_md5"
    finally:
        c.close()
    with pytest.raises(psycopg2.OperationalError) as e:
        unix_connect(p, "app_scram")  # not in the map for this OS user
    assert 'Peer authentication failed for user "app_scram"' in str(e.value), e.value
    assert 'ident map "apps" has no such line' in p.log()
    with pytest.raises(psycopg2.OperationalError):
        unix_connect(p, me())  # with a map, the OS user's own name is not implied
    assert {r[0]: r[1] for r in p.admin("SHOW CONFIG")}["auth_ident_file"] == str(p.dir / "ident.conf")


def test_unknown_ident_map_stops_the_start_and_a_reload(pgrouter):
    p = with_ident_map(pgrouter, ["local all all peer map=nosuch"], ["apps root app_md5"])
    with pytest.raises(helpers.StartError) as e:
        p.start()
    assert 'ident map "nosuch" is not in auth_ident_file' in str(e.value), e.value
    # A running pgrouter keeps its configuration when a RELOAD brings such a line.
    good = ["local all all peer map=apps", "host all all 127.0.0.1/32 md5"]
    q = with_ident_map(pgrouter, good, [f"apps {me()} app_md5"]).start()
    (q.dir / "hba.conf").write_text("local all all peer map=nosuch\nhost all all 127.0.0.1/32 md5\n")
    with pytest.raises(psycopg2.Error):
        q.admin("RELOAD")
    c = unix_connect(q, "app_md5")
    c.close()
