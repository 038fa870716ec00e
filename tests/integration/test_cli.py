"""SPEC §1: the command line, --check and exit codes (pgrouter only)."""

import re
import socket
import subprocess
import time

import pytest

import helpers

pytestmark = pytest.mark.pgrouter_only("pgrouter's own command line")


def pgrouter_cmd(*args, timeout=20, cwd=None):
    binary = helpers.require_binary(helpers.PGROUTER_BIN, "build it first: cmake --build build")
    return subprocess.run([str(binary), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd)


def write_config(tmp_path, body):
    (tmp_path / "userlist.txt").write_text('"app_md5" "md5-secret"\n')
    path = tmp_path / "pgrouter.toml"
    path.write_text(body)
    return path


def good_config(tmp_path, port=6432):
    return f"""\
[pgrouter]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = ""
auth_type = "md5"
auth_file = "{tmp_path}/userlist.txt"
admin_users = ["pgbouncer"]
pool_mode = "transaction"
default_pool_size = 5
server_idle_timeout = 60.5
max_prepared_statements = 100
workers = 2

[databases.testdb]
host = "127.0.0.1"
port = 5432
dbname = "testdb"
pool_size = 3
pool_mode = "session"
"""


def test_version():
    r = pgrouter_cmd("--version")
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0] if r.stdout else ""
    assert re.fullmatch(r"pgrouter \d+\.\d+\.\d+\S*", first.strip()), r.stdout


def test_help():
    r = pgrouter_cmd("--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert re.search(r"usage", out, re.I), out
    for opt in ("--check", "--version", "--daemon"):
        assert opt in out, f"--help does not mention {opt}:\n{out}"


def test_check_good_config(tmp_path):
    path = write_config(tmp_path, good_config(tmp_path))
    r = pgrouter_cmd("--check", path)
    assert r.returncode == 0, f"stdout: {r.stdout}\nstderr: {r.stderr}"


def test_check_bad_config_names_each_key_with_its_line(tmp_path):
    body = good_config(tmp_path)
    body = body.replace('pool_mode = "transaction"', 'pool_mode = "sometimes"')        # bad value
    body = body.replace("default_pool_size = 5", 'default_pool_size = "five"')        # bad type
    body = body.replace("workers = 2", "workers = 2\nno_such_key = 1")                # unknown key
    path = write_config(tmp_path, body)
    lines = body.splitlines()
    expect = {
        "pool_mode": lines.index('pool_mode = "sometimes"') + 1,
        "default_pool_size": lines.index('default_pool_size = "five"') + 1,
        "no_such_key": lines.index("no_such_key = 1") + 1,
    }
    r = pgrouter_cmd("--check", path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, f"exit {r.returncode}\n{out}"
    problems = {}
    for line in out.splitlines():
        m = re.match(r"^(.+?):(\d+): ([\w.\[\]]+): (.+)$", line.strip())
        if m:
            problems.setdefault(m.group(3).split(".")[-1], []).append((m.group(1), int(m.group(2))))
    for key, lineno in expect.items():
        assert key in problems, f"no `file:line: {key}: reason` line in:\n{out}"
        files = [f for f, _ in problems[key]]
        assert any(f.endswith("pgrouter.toml") for f in files), out
        assert lineno in [n for _, n in problems[key]], f"{key}: expected line {lineno}:\n{out}"


def test_check_ini_warnings_are_one_line_each_in_the_same_form(tmp_path):
    """Keys pgrouter does not implement are warnings (exit 0), printed as
    `file:line: key: warning: reason`, like the errors."""
    (tmp_path / "userlist.txt").write_text('"app_md5" "md5-secret"\n')
    path = tmp_path / "pgbouncer.ini"
    path.write_text("[databases]\ntestdb = host=127.0.0.1 port=5432\n[pgbouncer]\nlisten_port = 6432\n"
                    f"auth_file = {tmp_path}/userlist.txt\nservice_name = x\ntcp_keepidle = 30\n")
    r = pgrouter_cmd("--check", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.splitlines() == [f"{path}:6: pgbouncer.service_name: warning: not supported by pgrouter, "
                                     "ignored"], r.stderr


def test_check_missing_auth_file(tmp_path):
    body = good_config(tmp_path).replace(f'{tmp_path}/userlist.txt', f'{tmp_path}/nope.txt')
    path = write_config(tmp_path, body)
    r = pgrouter_cmd("--check", path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    # The key may be qualified by its table (pgrouter.auth_file).
    assert re.search(r"^.+:\d+: (?:[\w.]+\.)?auth_file: .+$", out, re.M), out


def test_unknown_argument():
    r = pgrouter_cmd("--no-such-option")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "--no-such-option" in r.stdout + r.stderr


def test_missing_config_file(tmp_path):
    r = pgrouter_cmd(tmp_path / "absent.toml")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "absent.toml" in r.stdout + r.stderr


def test_cannot_bind_exits_2(tmp_path):
    port = helpers.free_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        path = write_config(tmp_path, good_config(tmp_path, port))
        r = pgrouter_cmd(path, timeout=30)
        assert r.returncode == 2, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        assert str(port) in r.stdout + r.stderr, "the message should name the port"
    finally:
        blocker.close()


def test_sigterm_safe_shutdown(pgrouter):
    """SPEC §1: SIGTERM stops accepting, lets the transaction in flight finish, exits 0."""
    import signal
    import time

    import psycopg2

    p = pgrouter({"shutdown_timeout": 20})
    c = p.connect()
    try:
        with c.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT 1")
            p.signal(signal.SIGTERM)
            time.sleep(0.5)
            assert p.proc.poll() is None, "exited with a transaction in flight"
            with pytest.raises(psycopg2.OperationalError):
                p.connect().close()
            cur.execute("SELECT 2")
            assert cur.fetchone()[0] == 2
            cur.execute("COMMIT")
    finally:
        c.close()
    assert p.proc.wait(timeout=15) == 0


@pytest.mark.pgrouter_only("SIGUSR1/SIGUSR2 as PAUSE/RESUME (SPEC §1)")
def test_sigusr1_pauses_sigusr2_resumes(pgrouter):
    import signal
    import threading
    import time

    p = pgrouter({"query_wait_timeout": 30})
    c = p.connect()
    try:
        p.signal(signal.SIGUSR1)
        time.sleep(0.5)
        done = threading.Event()
        result = []

        def run():
            with c.cursor() as cur:
                cur.execute("SELECT 42")
                result.append(cur.fetchone()[0])
            done.set()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        assert not done.wait(1.5), "a query ran while paused"
        p.signal(signal.SIGUSR2)
        assert done.wait(10), "the query did not run after SIGUSR2"
        assert result == [42]
    finally:
        c.close()


@pytest.mark.pgrouter_only("the log lines are pgrouter's")
def test_verbose_setting_and_set_verbose(pgrouter):
    """`verbose = 1` in pgbouncer.ini logs at debug level (each server connection
    opened and closed); SET verbose = 0 on the console goes back to info."""
    p = pgrouter({"verbose": 1, "default_pool_size": 1}, fmt="ini")
    c = p.connect()
    c.cursor().execute("SELECT 1")
    helpers.wait_until(lambda: "new server connection to" in p.log(), 5, "a debug line for the new server")
    p.admin("SET verbose = 0")
    p.admin("RECONNECT")
    before = p.log().count("new server connection to")
    c.cursor().execute("SELECT 2")  # a new server: not logged at info level
    c.close()
    time.sleep(0.5)
    assert p.log().count("new server connection to") == before
    quiet = pgrouter({"default_pool_size": 1})
    with quiet.connect() as q:
        q.cursor().execute("SELECT 1")
    assert "new server connection to" not in quiet.log()


def test_check_ini_track_extra_parameters(tmp_path):
    """PgBouncer's track_extra_parameters: names pgrouter tracks anyway are accepted,
    others are a warning naming the parameter (PgBouncer would track any name the
    server reports; PostgreSQL 15 reports no other settable one)."""
    (tmp_path / "userlist.txt").write_text('"app_md5" "md5-secret"\n')
    path = tmp_path / "pgbouncer.ini"
    path.write_text("[databases]\ntestdb = host=127.0.0.1 port=5432\n[pgbouncer]\nlisten_port = 6432\n"
                    f"auth_file = {tmp_path}/userlist.txt\n"
                    "track_extra_parameters = IntervalStyle, search_path\n")
    r = pgrouter_cmd("--check", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.splitlines() == [
        f"{path}:6: pgbouncer.track_extra_parameters: warning: \"search_path\" is not tracked: pgrouter keeps "
        "client_encoding, DateStyle, IntervalStyle, TimeZone, standard_conforming_strings, application_name and "
        "default_transaction_read_only in step for every client; PostgreSQL 15 reports no other parameter a "
        "session sets; ignored"], r.stderr
    path.write_text(path.read_text().replace(", search_path", ""))
    r = pgrouter_cmd("--check", path)
    assert r.returncode == 0 and r.stderr == "", r.stdout + r.stderr
