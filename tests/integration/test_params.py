"""Client parameters (client_encoding, TimeZone, application_name, DateStyle...)
follow each client across a shared server, as PgBouncer's tracked parameters do."""

import pytest

import pgwire


def settings(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid(), current_setting('client_encoding'), current_setting('TimeZone'), "
                    "current_setting('application_name')")
        return cur.fetchone()


def test_parameters_set_at_startup_and_by_set(pgrouter):
    p = pgrouter({"pool_mode": "transaction", "default_pool_size": 1})
    a = p.connect(client_encoding="LATIN1", application_name="a")
    b = p.connect(client_encoding="UTF8", application_name="b")
    try:
        with a.cursor() as cur:
            cur.execute("SET TimeZone = 'Asia/Tokyo'")
        with b.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'")
        pids = set()
        for _ in range(4):
            pid, enc, tz, app = settings(a)
            pids.add(pid)
            assert (enc, tz, app) == ("LATIN1", "Asia/Tokyo", "a")
            pid, enc, tz, app = settings(b)
            pids.add(pid)
            assert (enc, tz, app) == ("UTF8", "UTC", "b")
        assert len(pids) == 1, "pool_size=1: both clients must have used the same server"
        with a.cursor() as cur:
            cur.execute("SHOW timezone")
            assert cur.fetchone()[0] == "Asia/Tokyo"
            cur.execute("SELECT 'caf\u00e9'")
            assert cur.fetchone()[0] == "caf\u00e9"   # LATIN1 conversion by the server
    finally:
        a.close()
        b.close()


def test_parameters_in_startup_packet_only(pgrouter):
    """TimeZone / DateStyle sent only in the startup packet (raw client), never by SET."""
    p = pgrouter({"pool_mode": "transaction", "default_pool_size": 1})
    a = p.wire(params={"TimeZone": "Asia/Tokyo", "application_name": "wa", "DateStyle": "SQL, DMY",
                       "client_encoding": "LATIN1"})
    b = p.wire(params={"TimeZone": "UTC", "application_name": "wb", "client_encoding": "UTF8"})
    try:
        assert a.params.get("TimeZone") == "Asia/Tokyo", a.params
        assert a.params.get("client_encoding") == "LATIN1", a.params
        assert b.params.get("TimeZone") == "UTC", b.params
        for _ in range(3):
            r = a.query("SELECT pg_backend_pid(), current_setting('TimeZone'), current_setting('application_name'), "
                        "current_setting('DateStyle'), current_setting('client_encoding')")
            assert r.rows[0][1:] == ["Asia/Tokyo", "wa", "SQL, DMY", "LATIN1"], r.rows
            r2 = b.query("SELECT pg_backend_pid(), current_setting('TimeZone'), current_setting('application_name'), "
                         "current_setting('DateStyle'), current_setting('client_encoding')")
            assert r2.rows[0][1:] == ["UTC", "wb", "ISO, MDY", "UTF8"], r2.rows
            assert r.rows[0][0] == r2.rows[0][0]
    finally:
        a.terminate()
        b.terminate()


def test_parameter_status_reported_after_set(pgrouter):
    """A SET of a reported parameter reaches the client as ParameterStatus."""
    p = pgrouter({"default_pool_size": 1})
    a = p.wire(params={"application_name": "before"})
    try:
        a.query("SET application_name = 'after'")
        assert a.params.get("application_name") == "after"
        r = a.query("SHOW application_name")
        assert r.rows == [["after"]]
    finally:
        a.terminate()


def test_reset_parameter_to_default_is_tracked(pgrouter):
    p = pgrouter({"default_pool_size": 1})
    a = p.connect(application_name="a")
    b = p.connect(application_name="b")
    try:
        with a.cursor() as cur:
            cur.execute("SET TimeZone = 'Asia/Tokyo'")
            cur.execute("RESET TimeZone")
            cur.execute("SHOW TimeZone")
            default_tz = cur.fetchone()[0]
        with b.cursor() as cur:
            cur.execute("SET TimeZone = 'America/New_York'")
        with a.cursor() as cur:
            cur.execute("SHOW TimeZone")
            assert cur.fetchone()[0] == default_tz
    finally:
        a.close()
        b.close()


def test_set_inside_rolled_back_transaction(pgrouter):
    p = pgrouter({"default_pool_size": 1})
    a = p.connect()
    b = p.connect()
    try:
        with a.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'")
            cur.execute("BEGIN")
            cur.execute("SET TimeZone = 'Asia/Tokyo'")
            cur.execute("ROLLBACK")
        with b.cursor() as cur:
            cur.execute("SET TimeZone = 'Europe/Paris'")
        with a.cursor() as cur:
            cur.execute("SHOW TimeZone")
            assert cur.fetchone()[0] == "UTC"
    finally:
        a.close()
        b.close()


def test_unsupported_startup_parameter_rejected_unless_ignored(pgrouter):
    p = pgrouter({"ignore_startup_parameters": ["extra_float_digits", "search_path"]})
    c = p.wire(params={"extra_float_digits": "3", "search_path": "public"})
    try:
        assert c.scalar("SELECT 1") == "1"
    finally:
        c.terminate()
    with pytest.raises(pgwire.PgError) as e:
        c = p.wire(params={"work_mem": "8MB"})
        c.terminate()
    assert e.value.sqlstate == "08P01", e.value
    assert "work_mem" in e.value.message


@pytest.mark.pgrouter_only("PgBouncer 1.18 refuses IntervalStyle in the startup packet")
def test_interval_style_and_standard_conforming_strings_follow_each_client(pgrouter):
    """The two tracked parameters the other tests do not touch: set at startup by one
    client and by SET by the other, over one shared server."""
    p = pgrouter({"pool_mode": "transaction", "default_pool_size": 1})
    q = ("SELECT pg_backend_pid(), current_setting('IntervalStyle'), current_setting('standard_conforming_strings'), "
         "interval '1 day 2 hours'::text")
    a = p.wire(params={"IntervalStyle": "postgres_verbose", "standard_conforming_strings": "off"})
    b = p.wire()
    try:
        assert a.params.get("IntervalStyle") == "postgres_verbose", a.params
        assert a.params.get("standard_conforming_strings") == "off", a.params
        assert b.params.get("IntervalStyle") == "postgres", b.params
        assert b.params.get("standard_conforming_strings") == "on", b.params
        pids = set()
        for _ in range(2):
            r = a.query(q)
            pids.add(r.rows[0][0])
            assert r.rows[0][1:] == ["postgres_verbose", "off", "@ 1 day 2 hours"], r.rows
            r = b.query(q)
            pids.add(r.rows[0][0])
            assert r.rows[0][1:] == ["postgres", "on", "1 day 02:00:00"], r.rows
        b.query("SET IntervalStyle = 'iso_8601'")
        b.query("SET standard_conforming_strings = off")
        assert b.params.get("IntervalStyle") == "iso_8601" and b.params.get("standard_conforming_strings") == "off"
        a.query("SET standard_conforming_strings = on")
        for _ in range(2):
            assert a.query(q).rows[0][1:] == ["postgres_verbose", "on", "@ 1 day 2 hours"]
            assert b.query(q).rows[0][1:] == ["iso_8601", "off", "P1DT2H"]
        assert len(pids) == 1, "pool_size=1: both clients must have used the same server"
    finally:
        a.terminate()
        b.terminate()
