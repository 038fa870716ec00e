"""The listening sockets: unix_socket_mode, unix_socket_group, listen_backlog; and the
log_stats switch for the periodic stats line."""

import grp
import os
import pwd
import stat
import subprocess
import time

import pytest

import helpers


def socket_path(p):
    return os.path.join(p.settings["unix_socket_dir"], f".s.PGSQL.{p.port}")


def psql_as(os_user, p):
    """SELECT 1 through the pooler's unix socket, run as an OS user; (returncode, stderr)."""
    cmd = [helpers.client_tool("psql"), "-X", "-At", "-h", p.settings["unix_socket_dir"], "-p", str(p.port),
           "-U", helpers.DEFAULT_USER, "-d", helpers.DEFAULT_DB, "-c", "SELECT 1"]
    env = p.client_env()
    r = subprocess.run(["runuser", "-u", os_user, "--"] + cmd, capture_output=True, text=True, timeout=60, env=env)
    return r.returncode, r.stdout.strip(), r.stderr


@pytest.fixture
def os_user():
    """An OS user that is neither root nor in the postgres group, and can enter the test dirs."""
    if not helpers.running_as_root():
        pytest.skip("needs root to run a client as another OS user")
    name = "nobody"
    try:
        pwd.getpwnam(name)
    except KeyError:
        pytest.fail("OS user nobody missing", pytrace=False)
    return name


def test_unix_socket_mode_and_group_decide_who_may_connect(pgrouter, os_user):
    group = helpers.PG_OS_USER  # exists wherever postgresql-15 is installed
    p = pgrouter({"unix_socket_mode": "0660", "unix_socket_group": group})
    os.chmod(p.settings["unix_socket_dir"], 0o755)  # let others reach the socket file itself
    st = os.stat(socket_path(p))
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert st.st_gid == grp.getgrnam(group).gr_gid
    # Neither owner nor in the group: refused by the kernel.
    code, out, err = psql_as(os_user, p)
    assert code != 0 and "Permission denied" in err, (code, out, err)
    # In the group: allowed.
    code, out, err = psql_as(helpers.PG_OS_USER, p)
    assert (code, out) == (0, "1"), err

    open_to_all = pgrouter({})  # the default, 0777, as PgBouncer
    os.chmod(open_to_all.settings["unix_socket_dir"], 0o755)
    assert stat.S_IMODE(os.stat(socket_path(open_to_all)).st_mode) == 0o777
    code, out, err = psql_as(os_user, open_to_all)
    assert (code, out) == (0, "1"), err


@pytest.mark.pgrouter_only("pgrouter's own start-up check")
def test_unknown_unix_socket_group_is_a_config_error(pgrouter):
    p = pgrouter({"unix_socket_group": "no-such-group-pgrouter"}, start=False)
    p.write_config(None)
    r = subprocess.run([str(helpers.PGROUTER_BIN), "--check", str(p.config_path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1, r
    assert 'unix_socket_group: no group named "no-such-group-pgrouter"' in r.stderr, r.stderr


def listen_queues(port):
    """Send-Q (the backlog) of each TCP socket listening on `port`."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=30).stdout
    return [int(line.split()[2]) for line in out.splitlines() if line.strip()]


def test_listen_backlog(pgrouter):
    p = pgrouter({"listen_backlog": 77})
    queues = listen_queues(p.port)
    assert queues and set(queues) == {77}, queues
    q = pgrouter({})
    default = 1024 if q.kind == "pgrouter" else 128
    assert set(listen_queues(q.port)) == {default}


def test_log_stats_switches_the_stats_line(pgrouter):
    on = pgrouter({"stats_period": 1})
    off = pgrouter({"stats_period": 1, "log_stats": False})
    for p in (on, off):
        with p.connect() as c, c.cursor() as cur:
            cur.execute("SELECT 1")
    time.sleep(3.5)
    assert "stats:" in on.log(), on.log()[-2000:]
    assert "stats:" not in off.log(), off.log()[-2000:]
