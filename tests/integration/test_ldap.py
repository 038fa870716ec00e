"""LDAP authentication (PgBouncer 1.25's auth_type = ldap with auth_ldap_options, and
`ldap` lines of auth_hba_file), with PostgreSQL's options, modes and messages, against
a real OpenLDAP slapd (ldap_server.py). The password LDAP accepted is the one the
pooler logs in to PostgreSQL with, so the test users have the same password in LDAP
and in the database, and auth_file does not name them."""

import os
import re

import pytest

import helpers
import pgwire
from helpers import PASSWORDS
from ldap_server import LdapServer, ldap_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.pgrouter_only("LDAP authentication is newer than PgBouncer 1.18 (1.25+)")

AUTH_OK, AUTH_CLEARTEXT = 0, 3
PEOPLE = "ou=people,dc=example,dc=net"


def simple_bind_options(srv, **extra):
    opts = f'ldapserver=127.0.0.1 ldapport={srv.port} ldapprefix="uid=" ldapsuffix=",{PEOPLE}"'
    return " ".join([opts] + [f"{k}={v}" for k, v in extra.items()])


def start(pgrouter, settings=None, hba=None, start=True):
    s = {"auth_type": "ldap"} if hba is None else {"auth_type": "hba"}
    s.update(settings or {})
    # auth_file holds only the console user: LDAP alone decides who the clients are.
    return pgrouter(s, userlist={"pgbouncer": PASSWORDS["pgbouncer"]}, hba=hba, start=start)


def refused(p, user, password, dbname="testdb"):
    with pytest.raises(pgwire.PgError) as e:
        p.wire(user=user, password=password, dbname=dbname).terminate()
    return e.value


def assert_login(p, user, password=None):
    c = p.wire(user=user, password=PASSWORDS[user] if password is None else password)
    try:
        assert c.auth_requests == [AUTH_CLEARTEXT, AUTH_OK], c.auth_requests
        assert c.scalar("SELECT current_user") == user
    finally:
        c.terminate()


def test_simple_bind_with_auth_ldap_options(pgrouter, ldap_server):
    p = start(pgrouter, {"auth_ldap_options": simple_bind_options(ldap_server)})
    # app_plain's server login is cleartext, app_scram's SCRAM: both from the password
    # LDAP accepted (auth_file does not name them).
    assert_login(p, "app_plain")
    assert_login(p, "app_scram")
    for user, password in (("app_plain", "wrong"), ("nobody_here", "x"), ("app_plain", "")):
        err = refused(p, user, password)
        assert err.sqlstate == "28000", err  # PostgreSQL's code and message for ldap
        assert f'LDAP authentication failed for user "{user}"' in str(err), err
    log = p.log()
    assert 'LDAP login failed for user "uid=app_plain,ou=people,dc=example,dc=net"' in log, log[-3000:]
    assert "Invalid credentials" in log
    assert 'failed for user "app_plain": empty password' in log
    # A password changed in the directory counts at once: the old one is refused.
    ldap_server.set_password("app_plain", "changed-in-ldap")
    err = refused(p, "app_plain", PASSWORDS["app_plain"])
    assert err.sqlstate == "28000", err
    assert PASSWORDS["app_plain"] not in p.log() and "changed-in-ldap" not in p.log()


def test_search_bind_hba_lines(pgrouter, ldap_server):
    """Search+bind as PostgreSQL does it: bound as ldapbinddn (or anonymously, from an
    ldapurl), the user's entry is searched for and bound as; a name with filter
    characters is refused before any search."""
    srv = ldap_server
    reader = (f'ldapserver=127.0.0.1 ldapport={srv.port} ldapbasedn="dc=example,dc=net" '
              f'ldapbinddn="cn=reader,dc=example,dc=net" ldapbindpasswd={LdapServer.READER_PW} '
              f'ldapsearchattribute=uid')
    hba = [
        "host pgbouncer pgbouncer 127.0.0.1/32 md5",
        f"host testdb app_plain 127.0.0.1/32 ldap {reader}",
        # anonymous search, from a URL, with PostgreSQL's $username filter
        f'host testdb all 127.0.0.1/32 ldap ldapurl="ldap://127.0.0.1:{srv.port}/dc=example,dc=net??sub" '
        f'ldapsearchfilter="(mail=$username@example.net)"',
    ]
    p = start(pgrouter, hba=hba)
    assert_login(p, "app_plain")
    assert_login(p, "app_md5")  # found by mail=app_md5@example.net
    err = refused(p, "app_md5", "wrong")
    assert err.sqlstate == "28000" and 'LDAP authentication failed for user "app_md5"' in str(err), err
    err = refused(p, "nobody_here", "x")
    assert err.sqlstate == "28000", err
    assert 'LDAP user "nobody_here" does not exist (filter "(mail=nobody_here@example.net)")' in p.log()
    err = refused(p, "app*", "x")
    assert err.sqlstate == "28000", err
    assert "invalid character in user name for LDAP authentication" in p.log()
    # The console shows auth_hba_file, and no bind password anywhere in the log.
    assert LdapServer.READER_PW not in p.log()


def console_and_ldap(options):
    """hba lines: the console user with md5, everyone else with LDAP."""
    return ["host pgbouncer pgbouncer 127.0.0.1/32 md5", f"host all all 127.0.0.1/32 ldap {options}"]


def test_search_bind_with_a_wrong_bind_password_names_the_cause(pgrouter, ldap_server):
    options = (f'ldapserver=127.0.0.1 ldapport={ldap_server.port} ldapbasedn="{PEOPLE}" '
               f'ldapbinddn="cn=reader,dc=example,dc=net" ldapbindpasswd=not-the-reader-password')
    p = start(pgrouter, {"auth_ldap_options": options}, hba=console_and_ldap(options))
    err = refused(p, "app_plain", PASSWORDS["app_plain"])
    assert err.sqlstate == "28000", err
    assert 'could not perform initial LDAP bind for ldapbinddn "cn=reader,dc=example,dc=net"' in p.log()
    # SHOW CONFIG does not show the bind password.
    shown = {r[0]: r[1] for r in p.admin("SHOW CONFIG")}["auth_ldap_options"]
    assert "not-the-reader-password" not in shown and "ldapbindpasswd=********" in shown, shown
    assert f"ldapport={ldap_server.port}" in shown, shown
    assert "not-the-reader-password" not in p.log()


def test_unreachable_ldap_server(pgrouter, ldap_server):
    port = ldap_server.port
    ldap_server.stop()
    p = start(pgrouter, hba=console_and_ldap(f'ldapserver=127.0.0.1 ldapport={port} ldapprefix="uid=" '
                                             f'ldapsuffix=",{PEOPLE}"'))
    err = refused(p, "app_plain", PASSWORDS["app_plain"])
    assert err.sqlstate == "28000", err
    assert "Can't contact LDAP server" in p.log(), p.log()[-2000:]
    # The pooler is fine: the console answers.
    assert p.admin("SHOW VERSION")


@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
def test_ldap_over_tls(pgrouter, pg, tmp_path, mode):
    from test_tls import _make_ca, _make_leaf

    d = tmp_path / "certs"
    d.mkdir()
    _make_ca(d, "ca", "LDAP test CA")
    _make_leaf(d, "server", "127.0.0.1", "ca", san="IP:127.0.0.1")
    _make_ca(d, "other", "another CA")
    users = {"app_plain": PASSWORDS["app_plain"]}
    with LdapServer(tmp_path / "ldap", users, tls=(str(d / "server.crt"), str(d / "server.key"))) as srv:
        extra = ({"ldaptls": 1} if mode == "starttls" else {"ldapscheme": "ldaps"})
        port = srv.port if mode == "starttls" else srv.tls_port
        options = (f'ldapserver=127.0.0.1 ldapport={port} ldapprefix="uid=" ldapsuffix=",{PEOPLE}" '
                   + " ".join(f"{k}={v}" for k, v in extra.items()))
        for ca, works in (("ca", True), ("other", False)):
            p = start(pgrouter, {"auth_ldap_options": options}, start=False)
            # libldap takes the CA from the environment (or ldap.conf), as PostgreSQL's.
            p.env = dict(os.environ, LDAPTLS_CACERT=str(d / f"{ca}.crt"), LDAPTLS_REQCERT="demand")
            p.start()
            try:
                if works:
                    assert_login(p, "app_plain")
                else:
                    err = refused(p, "app_plain", PASSWORDS["app_plain"])
                    assert err.sqlstate == "28000", err
                    want = "could not start LDAP TLS session" if mode == "starttls" else "Can't contact LDAP server"
                    assert want in p.log(), p.log()[-2000:]
            finally:
                p.stop()
        # The directory saw the user's binds encrypted only (slapd logs "ssf=<bits>").
        binds = [line for line in srv.log().splitlines() if 'BIND dn="uid=app_plain' in line and "mech=" in line]
        assert binds and all(re.search(r" ssf=[1-9]", line) for line in binds), binds


def test_bad_ldap_options_stop_the_start(pgrouter):
    for options, want in (("ldapserver=127.0.0.1", 'requires argument "ldapbasedn", "ldapprefix", or "ldapsuffix"'),
                          ('ldapserver=h ldapprefix="uid=" ldapbasedn="dc=x"', "cannot mix options"),
                          ("ldapserver=h ldapprefix=x ldapport=none", 'invalid LDAP port number: "none"'),
                          ('ldapserver=h ldapprefix="uid=', "unterminated quoted string")):
        p = start(pgrouter, {"auth_ldap_options": options}, start=False)
        with pytest.raises(helpers.StartError) as e:
            p.start()
        assert "auth_ldap_options" in str(e.value) and want in str(e.value), (options, str(e.value)[-1500:])
    p = start(pgrouter, hba=["host all all 127.0.0.1/32 ldap ldapserver=h"], start=False)
    with pytest.raises(helpers.StartError) as e:
        p.start()
    assert "requires argument \"ldapbasedn\"" in str(e.value), str(e.value)[-1500:]


def test_auth_type_ldap_in_pgbouncer_ini(pgrouter, ldap_server):
    p = pgrouter({"auth_type": "ldap", "auth_ldap_options": simple_bind_options(ldap_server)},
                 userlist={"pgbouncer": PASSWORDS["pgbouncer"]}, fmt="ini")
    r = p.psql("-A", "-t", "-c", "SELECT current_user", user="app_plain", password=PASSWORDS["app_plain"])
    assert r.returncode == 0 and r.stdout.strip() == "app_plain", r.stderr


def test_ldap_logins_under_load(pgrouter, ldap_server, tmp_path):
    """pgbench with a new connection per transaction (-C), 8 clients for 4 s: every login
    goes to LDAP (two check threads, one libldap handle each per login) and none fails."""
    script = tmp_path / "one.sql"
    script.write_text("SELECT 1;\n")
    p = start(pgrouter, {"auth_ldap_options": simple_bind_options(ldap_server)})
    r = p.pgbench("-n", "-C", "-c", "8", "-j", "2", "-T", "4", "-f", str(script), user="app_plain", timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    done = int(next(line.split()[-1].split("/")[0] for line in r.stdout.splitlines()
                    if "number of transactions actually processed" in line))
    assert done > 0 and "aborted" not in r.stdout.split("number of failed")[0], r.stdout
    binds = [line for line in ldap_server.log().splitlines()
             if 'BIND dn="uid=app_plain' in line and "mech=SIMPLE" in line]
    assert len(binds) >= done, (len(binds), done)  # one bind per login at least
    assert "LDAP authentication failed" not in p.log()
