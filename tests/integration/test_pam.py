"""auth_type = "pam" (PgBouncer's): the client's cleartext password is checked by PAM
(pam_authenticate, then pam_acct_mgmt), auth_file is not consulted, and the password
PAM accepted is the one the pooler logs in to the server with.

The PAM stack is real: a service file in /etc/pam.d (a name of the test's own, given
by auth_pam_service) runs pam_exec with the password on stdin, so no OS account is
needed. Writing /etc/pam.d needs root, which the test run has (scripts/test.sh)."""

import os
from contextlib import closing
import secrets
import threading
from pathlib import Path

import pytest

import helpers
import pgwire
from helpers import PASSWORDS

pytestmark = pytest.mark.pgrouter_only("auth_pam_service is pgrouter's; PgBouncer always uses the service "
                                       "\"pgbouncer\", a system file the tests do not overwrite")

AUTH_OK, AUTH_CLEARTEXT = 0, 3

# pam_exec gives the script PAM_USER and PAM_RHOST, and with expose_authtok the
# password on stdin (NUL-terminated). Accepted: the users of passwords.txt with their
# password; a user named in slow.txt waits until the file `go` exists.
CHECK = """#!/bin/sh
dir=$(dirname "$0")
pw=$(tr -d '\\000')
echo "auth $PAM_USER $PAM_RHOST" >> "$dir/calls.log"
if grep -qx "$PAM_USER" "$dir/slow.txt" 2>/dev/null; then
    echo "waiting $PAM_USER" >> "$dir/calls.log"
    while [ ! -e "$dir/go" ]; do sleep 0.05; done
fi
grep -qxF "$PAM_USER:$pw" "$dir/passwords.txt"
"""
# The account phase: users listed in locked.txt are refused.
ACCOUNT = """#!/bin/sh
dir=$(dirname "$0")
echo "account $PAM_USER" >> "$dir/calls.log"
! grep -qx "$PAM_USER" "$dir/locked.txt" 2>/dev/null
"""


@pytest.fixture
def pam_service(tmp_path):
    """A PAM service of this test's own: (name, directory of its scripts and files)."""
    pam_dir = Path("/etc/pam.d")
    if not os.access(pam_dir, os.W_OK):
        raise helpers.Missing("/etc/pam.d is not writable: the PAM tests need root (scripts/test.sh runs as root)")
    d = tmp_path / "pam"
    d.mkdir()
    d.chmod(0o755)
    tmp_path.chmod(0o755)
    for name, text in (("check.sh", CHECK), ("account.sh", ACCOUNT)):
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    (d / "passwords.txt").write_text("".join(f"{u}:{PASSWORDS[u]}\n" for u in ("app_plain", "app_scram", "app_md5")))
    name = "pgrouter-it-" + secrets.token_hex(4)
    service = pam_dir / name
    service.write_text(f"auth required pam_exec.so expose_authtok quiet {d}/check.sh\n"
                       f"account required pam_exec.so quiet {d}/account.sh\n")
    try:
        yield name, d
    finally:
        service.unlink()


def calls(d):
    f = d / "calls.log"
    return f.read_text().splitlines() if f.exists() else []


def start(pgrouter, service, **settings):
    # auth_file holds only the console user: PAM alone decides who the clients are.
    return pgrouter({"auth_type": "pam", "auth_pam_service": service, **settings},
                    userlist={"pgbouncer": PASSWORDS["pgbouncer"]})


def test_pam_password_is_checked_and_reused_for_the_server(pgrouter, pam_service):
    name, d = pam_service
    p = start(pgrouter, name)
    # app_plain's server login is cleartext, app_scram's SCRAM: both with the password
    # PAM accepted, since auth_file does not name them.
    for user in ("app_plain", "app_scram"):
        c = p.wire(user=user, password=PASSWORDS[user])
        try:
            assert c.auth_requests == [AUTH_CLEARTEXT, AUTH_OK], c.auth_requests
            assert c.scalar("SELECT current_user") == user
        finally:
            c.terminate()
    assert f"auth app_plain {helpers.HOST}" in calls(d), calls(d)
    assert "account app_scram" in calls(d), calls(d)
    r = p.psql("-A", "-t", "-c", "SELECT 1", user="app_plain", password=PASSWORDS["app_plain"])
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr


def test_pam_refusals(pgrouter, pam_service):
    name, d = pam_service
    (d / "locked.txt").write_text("app_md5\n")
    p = start(pgrouter, name)
    for user, password in (("app_plain", "wrong"), ("nobody_here", "x"), ("app_md5", PASSWORDS["app_md5"])):
        with pytest.raises(pgwire.PgError) as e:
            p.wire(user=user, password=password).terminate()
        # PostgreSQL's message and SQLSTATE for its pam method.
        assert e.value.sqlstate == "28000", (user, e.value)
        assert f'PAM authentication failed for user "{user}"' in str(e.value), e.value
    log = calls(d)
    # app_md5's password was right: PAM's account phase refused it.
    assert "account app_md5" in log and "account app_plain" not in log, log
    # An empty password never reaches PAM (as PostgreSQL).
    before = len(calls(d))
    with pytest.raises(pgwire.PgError) as e:
        p.wire(user="app_plain", password="").terminate()
    assert e.value.sqlstate == "28000", e.value
    assert len(calls(d)) == before, calls(d)[before:]
    # The log names PAM's reason (pam_exec reports a failing program as a system error).
    assert 'PAM authentication failed for user "app_plain": System error' in p.log()
    assert 'PAM authentication failed for user "app_plain": empty password' in p.log()
    assert PASSWORDS["app_plain"] not in p.log() and "wrong" not in p.log()


def test_a_slow_pam_check_does_not_hold_up_the_worker(pgrouter, pam_service):
    """With one worker, a PAM check that does not return (the script waits for a file)
    leaves the worker free: another client logs in (PAM too) and runs queries meanwhile;
    then the slow login completes."""
    name, d = pam_service
    (d / "slow.txt").write_text("app_scram\n")
    p = start(pgrouter, name, workers=1)
    result = {}

    def slow_login():
        try:
            c = p.wire(user="app_scram", password=PASSWORDS["app_scram"], timeout=60)
            result["user"] = c.scalar("SELECT current_user")
            c.terminate()
        except Exception as e:  # reported by the assertion below
            result["error"] = e

    t = threading.Thread(target=slow_login)
    t.start()
    try:
        helpers.wait_until(lambda: "waiting app_scram" in calls(d), 20, "the slow PAM check began")
        c = p.wire(user="app_plain", password=PASSWORDS["app_plain"])
        try:
            for i in range(20):
                assert c.scalar(f"SELECT {i}") == str(i)
        finally:
            c.terminate()
        assert t.is_alive() and not result, "the slow login finished before it was let go"
    finally:
        (d / "go").touch()
        t.join(60)
    assert result == {"user": "app_scram"}, result


def test_pam_needs_a_service_name(pgrouter):
    p = pgrouter({"auth_type": "pam", "auth_pam_service": ""}, start=False)
    with pytest.raises(helpers.StartError) as e:
        p.start()
    assert "auth_pam_service" in str(e.value) and "requires a PAM service name" in str(e.value), e.value


def test_client_login_timeout_bounds_a_pam_check(pgrouter, pam_service):
    """client_login_timeout bounds the wait for PAM too: clients whose checks hang are
    refused (28000) when it passes, and a check still queued then (both PAM threads
    busy with the hanging ones) is dropped without being started."""
    name, d = pam_service
    (d / "slow.txt").write_text("app_scram\n")
    p = start(pgrouter, name, client_login_timeout=2)
    errors = []

    def login():
        try:
            p.wire(user="app_scram", password=PASSWORDS["app_scram"], timeout=30).terminate()
        except pgwire.PgError as e:
            errors.append(e)

    threads = [threading.Thread(target=login) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        helpers.wait_until(lambda: calls(d).count("waiting app_scram") == 2, 20, "two PAM checks hanging")
        for t in threads:
            t.join(30)
        assert len(errors) == 3 and all(e.sqlstate == "28000" for e in errors), errors
        assert p.log().count("no answer before client_login_timeout") == 3, p.log()[-3000:]
    finally:
        (d / "go").touch()
        for t in threads:
            t.join(30)
    # The queue is first in, first out: once a later login has been checked, the
    # queued one has been taken, and it was never handed to PAM.
    c = p.wire(user="app_plain", password=PASSWORDS["app_plain"])
    c.terminate()
    assert sum(line.startswith("auth app_scram ") for line in calls(d)) == 2, calls(d)


def test_a_login_waiting_for_pam_ends_at_once_when_killed(pgrouter, pam_service):
    """KILL_CLIENT ends a login that waits for a hanging PAM check at once (57P01), not
    at client_login_timeout; the check's late answer is dropped and PAM logins go on."""
    name, d = pam_service
    (d / "slow.txt").write_text("app_scram\n")
    with open(d / "passwords.txt", "a") as f:  # the console logs in through PAM too
        f.write(f"pgbouncer:{PASSWORDS['pgbouncer']}\n")
    p = start(pgrouter, name, client_login_timeout=60)
    result = {}

    def login():
        try:
            p.wire(user="app_scram", password=PASSWORDS["app_scram"], timeout=60).terminate()
            result["ok"] = True
        except Exception as e:  # reported by the assertions below
            result["error"] = e

    t = threading.Thread(target=login)
    t.start()
    try:
        helpers.wait_until(lambda: "waiting app_scram" in calls(d), 20, "the slow PAM check began")
        with closing(p.connect(user="pgbouncer", dbname="pgbouncer")) as c, c.cursor() as cur:
            cur.execute("SHOW CLIENTS")
            names = [col[0] for col in cur.description]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
            ids = [r["id"] for r in rows if r["user"] == "app_scram"]
            assert len(ids) == 1, rows
            cur.execute(f"KILL_CLIENT {ids[0]}")
        t.join(10)
        assert not t.is_alive(), "the killed login still waits for its PAM check"
        assert isinstance(result.get("error"), pgwire.PgError) and result["error"].sqlstate == "57P01", result
        assert "login failed: client killed by admin command KILL_CLIENT" in p.log()
    finally:
        (d / "go").touch()
        t.join(30)
    c = p.wire(user="app_plain", password=PASSWORDS["app_plain"])
    assert c.scalar("SELECT current_user") == "app_plain"
    c.terminate()
