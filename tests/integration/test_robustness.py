"""Clients that vanish at the worst moment, connection churn, and sustained load."""

import re
import struct
import threading
import time
import uuid

import pytest

import helpers
import pgwire
from pgwire import bind_msg, copy_data_msg, execute_msg, parse_msg, query_msg, sync_msg


@pytest.fixture
def table(pg):
    name = "r_" + uuid.uuid4().hex[:12]
    pg.sql(f"CREATE TABLE {name} (id int)", dbname="testdb")
    pg.sql(f"GRANT ALL ON {name} TO PUBLIC", dbname="testdb")
    yield name
    pg.sql(f"DROP TABLE IF EXISTS {name}", dbname="testdb")


def assert_clean_server(p, table=None, expect_pid=None):
    """The next client on the (single) server is not inside anyone's transaction."""
    c = p.wire(timeout=20)
    try:
        r = c.query("SELECT pg_backend_pid(), txid_current_if_assigned() IS NULL, now() = statement_timestamp()",
                    timeout=20)
        assert r.error is None, r.error
        pid, no_xid, fresh = r.rows[0]
        assert no_xid == "t" and fresh == "t", "inherited another client's transaction"
        assert r.status == "I"
        if table:
            assert c.scalar(f"SELECT count(*) FROM {table}") == "0", "uncommitted rows of a dead client are visible"
        return int(pid)
    finally:
        c.terminate()


@pytest.mark.parametrize("how", ["abort", "close"])
def test_client_killed_mid_transaction(pgrouter, table, how):
    p = pgrouter({"default_pool_size": 1})
    c = p.wire()
    assert c.query("BEGIN").status == "T"
    r = c.query(f"INSERT INTO {table} VALUES (1)")
    assert r.tags == ["INSERT 0 1"] and r.status == "T"
    c.abort() if how == "abort" else c.close()
    assert_clean_server(p, table)
    assert_clean_server(p, table)


def test_client_killed_mid_failed_transaction(pgrouter, table):
    p = pgrouter({"default_pool_size": 1})
    c = p.wire()
    c.query("BEGIN")
    c.query(f"INSERT INTO {table} VALUES (1)")
    assert c.query("SELECT 1/0").status == "E"
    c.abort()
    assert_clean_server(p, table)


def test_client_killed_mid_copy_in(pgrouter, table):
    p = pgrouter({"default_pool_size": 1})
    c = p.wire()
    c.send(query_msg(f"COPY {table} FROM STDIN"))
    t, _ = c.read_message()
    assert t == b"G", t
    c.send(b"".join(copy_data_msg(f"{i}\n".encode()) for i in range(1000)))
    c.abort()
    assert_clean_server(p, table)


@pytest.mark.parametrize("how", ["abort", "close"])
@pytest.mark.parametrize("where", ["between transactions", "in a transaction"])
def test_client_gone_right_after_part_of_a_message(pgrouter, table, how, where):
    """The last bytes a client sends and its FIN (or RST) reach the pooler together, and
    those bytes are only part of a message, so the pooler has nothing to answer and no
    reason to write. Reading them must not hide the end of the connection: the session
    ends at once and a held server goes back clean. (An edge-triggered reader that takes
    a short read as "nothing more will come" waits forever here; one was tried.)"""
    p = pgrouter({"default_pool_size": 1})
    c = p.wire()
    if where == "in a transaction":
        assert c.query("BEGIN").status == "T"
        assert c.query(f"INSERT INTO {table} VALUES (1)").status == "T"
    c.send(query_msg("SELECT 'never complete'")[:9])
    c.abort() if how == "abort" else c.close()
    helpers.wait_until(lambda: not [r for r in p.admin("SHOW CLIENTS") if r[2] == "testdb"], 5,
                       "the client's session to end")
    assert_clean_server(p, table)


def test_client_killed_mid_copy_out(pgrouter):
    p = pgrouter({"default_pool_size": 1})
    c = p.wire()
    c.send(query_msg("COPY (SELECT g, repeat('z', 500) FROM generate_series(1, 200000) g) TO STDOUT"))
    t, _ = c.read_message()
    assert t == b"H", t
    c.read_message()
    c.abort()
    assert_clean_server(p)


def test_client_killed_mid_large_result(pgrouter):
    p = pgrouter({"default_pool_size": 1})
    c = p.wire()
    c.send(query_msg("SELECT g, repeat('x', 1000) FROM generate_series(1, 100000) g"))
    assert c.read_message()[0] == b"T"
    c.read_message()
    c.abort()
    t0 = time.monotonic()
    assert_clean_server(p)
    assert time.monotonic() - t0 < 15


def test_client_killed_with_unsent_pipeline(pgrouter):
    """A client that sends half a message and dies."""
    p = pgrouter({"default_pool_size": 1})
    c = p.wire()
    msg = pgwire.query_msg("SELECT 1")
    c.send(msg[:3])
    time.sleep(0.2)
    c.abort()
    c = p.wire()
    c.send(pgwire.parse_msg("SELECT 1") + pgwire.bind_msg())   # no Execute, no Sync
    time.sleep(0.2)
    c.abort()
    assert_clean_server(p)


def test_connection_churn(pgrouter, pg):
    p = pgrouter({"default_pool_size": 3})
    errors = []

    def worker(n):
        for i in range(40):
            try:
                c = p.wire()
                if i % 2:
                    assert c.scalar("SELECT 1") == "1"
                if i % 3 == 0:
                    c.abort()
                else:
                    c.terminate()
            except Exception as e:
                errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:5]
    assert pg.backends("app_md5", "testdb") <= 3
    assert_clean_server(p)


def test_many_idle_clients(pgrouter):
    p = pgrouter({"default_pool_size": 2, "max_client_conn": 1000})
    clients = [p.wire() for _ in range(150)]
    try:
        for c in clients[::15]:
            assert c.scalar("SELECT 1") == "1"
    finally:
        for c in clients:
            c.terminate()


def test_pgbench_transaction_mode_no_failures(pgrouter, bench_db):
    p = pgrouter({"default_pool_size": 5, "pool_mode": "transaction"},
                 databases={"benchdb": {}})
    r = p.pgbench("-n", "-c", "20", "-j", "2", "-T", "5", dbname="benchdb", timeout=60)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    m = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    assert m and int(m.group(1)) > 0, r.stdout
    m = re.search(r"number of failed transactions: (\d+)", r.stdout)
    assert m and int(m.group(1)) == 0, r.stdout


def test_pooler_survives_server_restart_of_connection(pgrouter, pg):
    """A server backend killed under the pooler (pg_terminate_backend): the next transaction works."""
    p = pgrouter({"default_pool_size": 1})
    c = p.connect()
    try:
        with c.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        pg.sql("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                with c.cursor() as cur:
                    cur.execute("SELECT pg_backend_pid()")
                    assert cur.fetchone()[0] != pid
                break
            except Exception:
                # PgBouncer may report the dead server to the client once; a new client must work.
                c.close()
                c = p.connect()
                if time.monotonic() > deadline:
                    raise
    finally:
        c.close()


def _wait_backend_gone(pg, pid, limit=10.0):
    end = time.monotonic() + limit
    while pg.sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))[0][0]:
        assert time.monotonic() < end, f"backend {pid} did not exit"
        time.sleep(0.005)


def test_server_closed_while_idle_is_not_handed_out(pgrouter, pg):
    """A server terminated just after its transaction (well under the 500 ms after which
    servers used to be looked at before reuse): the client's next transaction runs on a
    new server, with no error. The pooler notices through the read it keeps pending on
    every idle server."""
    p = pgrouter({"default_pool_size": 1, "workers": 1})
    c = p.wire()
    try:
        for _ in range(3):
            r = c.query("SELECT pg_backend_pid()")
            assert r.error is None, r.error
            pid = int(r.rows[0][0])
            pg.sql("SELECT pg_terminate_backend(%s)", (pid,))
            _wait_backend_gone(pg, pid)
            r = c.query("SELECT pg_backend_pid()")
            assert r.error is None, f"the dead server was handed out: {r.error}"
            assert int(r.rows[0][0]) != pid
    finally:
        c.terminate()


def test_server_closed_while_idle_leaves_the_pool_without_a_client(pgrouter, pg):
    """With no client around, a server that closes while idle leaves the pool (SHOW SERVERS)
    within the janitor's second, instead of waiting for the next client to find it."""
    p = pgrouter({"default_pool_size": 2, "workers": 1})
    c = p.wire()
    r = c.query("SELECT pg_backend_pid()")
    pid = int(r.rows[0][0])
    c.terminate()
    assert len(p.admin("SHOW SERVERS")) == 1
    pg.sql("SELECT pg_terminate_backend(%s)", (pid,))
    end = time.monotonic() + 10
    while p.admin("SHOW SERVERS"):
        assert time.monotonic() < end, "the closed server is still listed"
        time.sleep(0.1)


def test_transactions_over_the_unix_socket(pgrouter, table):
    """Clients on pgrouter's unix socket take turns on one server: each transaction
    ends with the client's session parked until its next message, and nothing of one
    client's transaction is seen by another."""
    p = pgrouter({"default_pool_size": 1, "workers": 1})
    clients = [p.connect(host=str(p.dir), autocommit=False) for _ in range(3)]
    try:
        on_unix = [r for r in p.admin("SHOW CLIENTS") if "unix" in r]
        assert len(on_unix) >= 3, p.admin("SHOW CLIENTS")
        for rnd in range(5):
            for i, c in enumerate(clients):
                with c.cursor() as cur:
                    cur.execute(f"INSERT INTO {table} VALUES (%s)", (rnd * 10 + i,))
                    cur.execute(f"SELECT count(*) FROM {table}")
                    assert cur.fetchone()[0] == rnd * 3 + i + 1
                c.commit()
            time.sleep(0.05)  # every client idle (parked) at once
        with clients[0].cursor() as cur:
            cur.execute(f"SELECT sum(id) FROM {table}")
            assert cur.fetchone()[0] == sum(r * 10 + i for r in range(5) for i in range(3))
        clients[0].commit()
    finally:
        for c in clients:
            c.close()
    assert_clean_server(p, None)


def active_states(p):
    """SHOW MEM's count of clients holding their serving state (buffer, scanners)."""
    rows = {r[0]: r for r in p.admin("SHOW MEM")}
    return int(rows["client_active_cache"][2])


def wait_all_shrunk(p, within=15):
    end = time.monotonic() + within
    while (n := active_states(p)) > 0:
        assert time.monotonic() < end, f"{n} idle clients still hold their serving state: {p.admin('SHOW MEM')}"
        time.sleep(0.2)


@pytest.mark.pgrouter_only("SHOW MEM client_active_cache is pgrouter's own")
def test_idle_clients_give_back_their_serving_state(pgrouter):
    """A client idle at the janitor's round gives back its read buffer and scanners; its next
    message, a named prepared statement made before, a message larger than the small
    buffer, a cancel and a vanishing client all work on a client that gave it back."""
    p = pgrouter({"pool_mode": "transaction", "default_pool_size": 2, "workers": 1})
    clients = [p.wire() for _ in range(6)]
    try:
        # Parked straight after login: a client that never spoke never had it.
        assert active_states(p) == 0, p.admin("SHOW MEM")
        for c in clients:
            c.send(parse_msg("SELECT $1::int * 2", name="st") + sync_msg())
            assert c.read_until_ready().types() == "1Z"
        assert active_states(p) >= 1
        for rnd in range(2):
            wait_all_shrunk(p)
            for i, c in enumerate(clients):
                c.send(bind_msg((str(i + rnd),), stmt="st") + execute_msg() + sync_msg())
                r = c.read_until_ready()
                assert r.error is None and r.rows == [[str(2 * (i + rnd))]], (r.types(), r.error)
            wait_all_shrunk(p)
            big = "x" * 20000
            for c in clients:
                assert c.scalar(f"SELECT length('{big}')") == "20000"
        wait_all_shrunk(p)
        # A cancel for a client with no server reaches nothing; the client goes on.
        pid, key = clients[0].backend_key
        raw = p.raw()
        raw.send(pgwire.cancel_request(pid, key))
        raw.wait_closed(5)
        assert clients[0].scalar("SELECT 41 + 1") == "42"
        # A message split across a pause longer than the shrink delay: the client
        # keeps its state while a message is half read.
        wait_all_shrunk(p)
        q = query_msg("SELECT 'split'")
        clients[3].send(q[:3])
        time.sleep(2.5)
        assert active_states(p) == 1, p.admin("SHOW MEM")
        clients[3].send(q[3:])
        r = clients[3].read_until_ready()
        assert r.rows == [["split"]], (r.types(), r.error)
        # Shrunk clients that vanish (RST, FIN without Terminate) are noticed.
        wait_all_shrunk(p)
        clients[1].abort()
        clients[2].close()
        end = time.monotonic() + 10
        while len([r for r in p.admin("SHOW CLIENTS") if r[0] == "C" and r[2] == "testdb"]) != 4:
            assert time.monotonic() < end, p.admin("SHOW CLIENTS")
            time.sleep(0.1)
        for c in clients[3:]:
            assert c.scalar("SELECT 1") == "1"
    finally:
        for c in clients:
            c.terminate()
    assert_clean_server(p)


def _read_login(c):
    """Messages up to the login's ReadyForQuery; returns the authentication codes seen."""
    codes = []
    while True:
        m = c.read_message(10)
        assert m is not None, "connection closed during login"
        t, payload = m
        assert t != b"E", pgwire.PgError(pgwire.parse_fields(payload)).message
        if t == b"R":
            codes.append(struct.unpack_from("!I", payload, 0)[0])
        if t == b"Z":
            return codes


def test_messages_sent_behind_the_login_are_answered(pgrouter):
    """As PostgreSQL and PgBouncer do: a query in the same packet as the startup
    message (trust) or as the password (md5) is answered after the login, and a
    Terminate there closes the session."""
    p = pgrouter({"auth_type": "trust", "default_pool_size": 1})
    startup = pgwire.startup_packet({"user": helpers.DEFAULT_USER, "database": helpers.DEFAULT_DB})
    c = p.raw()
    c.send(startup + query_msg("SELECT 41 + 1") + query_msg("SELECT 'two'"))
    assert _read_login(c) == [0]
    assert c.read_until_ready().rows == [["42"]]
    assert c.read_until_ready().rows == [["two"]]
    assert c.query("SELECT 3").rows == [["3"]]
    c.terminate()

    c = p.raw()
    c.send(startup + pgwire.terminate_msg())
    assert _read_login(c) == [0]
    assert c.wait_closed(10) == []
    assert_clean_server(p)

    p = pgrouter({"auth_type": "md5"})
    c = p.raw()
    c.send(startup)
    t, payload = c.read_message(10)
    assert t == b"R" and struct.unpack_from("!I", payload, 0)[0] == 5
    user = helpers.DEFAULT_USER
    pw = pgwire.md5_password(user, p.password(user), payload[4:8])
    c.send(pgwire.message(b"p", pgwire.cstr(pw)) + query_msg("SELECT 'after md5'"))
    assert _read_login(c) == [0]
    assert c.read_until_ready().rows == [["after md5"]]
    c.terminate()


@pytest.mark.pgrouter_only("PgBouncer 1.18 closes at the Terminate and drops the answers")
@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_terminate_behind_queries_in_one_packet_answers_them_first(pgrouter, pool_mode):
    """As PostgreSQL: a packet holding a Query (or an extended-protocol pipeline) and
    then a Terminate gets the answers before the connection closes, and the server
    goes back clean."""
    p = pgrouter({"pool_mode": pool_mode, "default_pool_size": 1})
    c = p.wire()
    c.send(query_msg("SELECT pg_sleep(0.3), 42") + pgwire.terminate_msg())
    msgs = c.wait_closed(10)
    types = [t for t, _ in msgs]
    assert types == [b"T", b"D", b"C", b"Z"], msgs
    assert pgwire.parse_data_row(msgs[1][1]) == ["", "42"]

    c = p.wire()
    c.send(parse_msg("SELECT $1::int * 2", param_types=(23,)) + bind_msg(["21"]) + execute_msg() + sync_msg() +
           query_msg("SELECT 'second'") + pgwire.terminate_msg())
    msgs = c.wait_closed(10)
    assert [t for t, _ in msgs] == [b"1", b"2", b"D", b"C", b"Z", b"T", b"D", b"C", b"Z"], msgs
    assert pgwire.parse_data_row(msgs[2][1]) == ["42"]
    assert pgwire.parse_data_row(msgs[6][1]) == ["second"]
    assert_clean_server(p)


def test_terminate_during_a_copy_from_the_client_closes_promptly(pgrouter, pg):
    """A Terminate where the server waits for COPY data (in the packet that starts the
    COPY, or later): nothing more will come, so the session ends at once, the server is
    closed and no row lands (PostgreSQL aborts the COPY on the Terminate)."""
    pg.sql("CREATE TABLE IF NOT EXISTS copy_term (v int)", dbname="testdb")
    pg.sql("GRANT ALL ON copy_term TO PUBLIC", dbname="testdb")
    pg.sql("TRUNCATE copy_term", dbname="testdb")
    p = pgrouter({"default_pool_size": 1})
    c = p.wire()
    t0 = time.monotonic()
    c.send(query_msg("COPY copy_term FROM STDIN") + copy_data_msg(b"1\n") + pgwire.terminate_msg())
    c.wait_closed(10)
    assert time.monotonic() - t0 < 5
    c = p.wire()
    c.send(query_msg("COPY copy_term FROM STDIN"))
    t, _ = c.read_message(10)
    assert t == b"G", t
    t0 = time.monotonic()
    c.send(copy_data_msg(b"2\n") + pgwire.terminate_msg())
    c.wait_closed(10)
    assert time.monotonic() - t0 < 5
    assert_clean_server(p, table="copy_term")


def closing_error(c):
    """The ErrorResponse a client gets before the pooler closes it."""
    msgs = c.wait_closed(10)
    errors = [pgwire.PgError(pgwire.parse_fields(payload)) for t, payload in msgs if t == b"E"]
    assert errors, f"closed without an ErrorResponse: {msgs}"
    return errors[-1]


@pytest.mark.pgrouter_only("PgBouncer 1.18 says 'bad packet header' (08P01); 54000 for a server's message")
def test_max_packet_size(pgrouter, table):
    """max_packet_size = 1000: a longer client message (an INSERT with a long literal)
    ends that client with 08P01 before any of it reaches the server; a longer server
    message (a wide row) ends it with 54000 and that server is closed, not pooled.
    Messages up to the limit pass both ways."""
    p = pgrouter({"default_pool_size": 1, "max_packet_size": 1000})
    c = p.wire()
    pid = int(c.scalar("SELECT pg_backend_pid()"))
    assert c.scalar("SELECT length(repeat('x', 900))") == "900"  # a row under the limit
    c.send(query_msg(f"INSERT INTO {table} SELECT length('{'y' * 2000}')"))
    e = closing_error(c)
    assert e.sqlstate == "08P01" and "max_packet_size" in str(e), e
    assert assert_clean_server(p, table) == pid, "a client refused before sending anything cost its server"

    c = p.wire()
    assert c.query("BEGIN").status == "T"
    c.send(query_msg("SELECT repeat('z', 5000)"))
    e = closing_error(c)
    assert e.sqlstate == "54000" and "max_packet_size" in str(e), e
    assert assert_clean_server(p) != pid, "the server cut off mid-result went back to the pool"
