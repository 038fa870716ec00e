"""Everything at once: honest clients committing transactions while others vanish at the
worst moments and server backends are terminated under the pooler, for a bounded time.

What must hold afterwards: nothing an abandoned client sent was ever committed (a server
left inside its transaction and handed to an honest client would commit it with that
client's COMMIT), no honest transaction is half there, no honest client ever started on a
server inside someone else's transaction, every error an honest client saw says its
server went away (an ErrorResponse before the connection closes), a cancel only ever
reaches the query it was sent for, and the pool settles clean (no client or server left
active, every server connection idle and outside a transaction)."""

import os
import random
import threading
import time
import uuid

import pytest

import pgwire
from pgwire import PgError, WireError, bind_msg, copy_data_msg, execute_msg, parse_msg, query_msg, sync_msg

# PGROUTER_CHAOS_SECONDS runs it longer, as a soak (pytest --timeout must allow it).
LOAD_SECONDS = float(os.environ.get("PGROUTER_CHAOS_SECONDS", "12"))
POOL_SIZE = 4
HONEST = 6
VANDALS = 3

# What an honest client may see when the server under it is terminated: PostgreSQL's
# own FATAL (forwarded), or the pooler's "server connection lost".
SERVER_GONE = {"57P01", "08006", "08003", "08000"}
ZONES = ["UTC", "Europe/Paris", "America/New_York"]


class Closed(Exception):
    """The connection ended before ReadyForQuery; `errors` are the ErrorResponses before it."""

    def __init__(self, errors):
        super().__init__(f"closed after {[e.sqlstate for e in errors]}")
        self.errors = errors


def result(c):
    """What one query returned up to ReadyForQuery; Closed if the connection ended first."""
    r = pgwire.Result()
    while True:
        m = c.read_message(timeout=20)
        if m is None:
            raise Closed(r.errors)
        t, payload = m
        r.messages.append(m)
        if t == b"C":
            r.tags.append(payload.rstrip(b"\0").decode())
        elif t == b"D":
            r.rows.append(pgwire.parse_data_row(payload))
        elif t == b"E":
            r.errors.append(PgError(pgwire.parse_fields(payload)))
        elif t == b"N":
            r.notices.append(pgwire.parse_fields(payload))
        elif t == b"Z":
            r.status = payload[:1].decode()
            return r


@pytest.fixture
def table(pg):
    name = "chaos_" + uuid.uuid4().hex[:12]
    pg.sql(f"CREATE TABLE {name} (who int, n int, tag text)", dbname="testdb")
    pg.sql(f"GRANT ALL ON {name} TO PUBLIC", dbname="testdb")
    yield name
    pg.sql(f"DROP TABLE IF EXISTS {name}", dbname="testdb")


class Honest:
    """One client committing two-row transactions; records what it knows of each."""

    def __init__(self, p, connect, table, who, stop, session=False):
        self.p, self.connect, self.table, self.who, self.stop = p, connect, table, who, stop
        # Session pooling: a new connection every few transactions, each checked for
        # anything a previous client of its server left behind.
        self.session = session
        # Every other client uses a named prepared statement, parsed once per connection,
        # which pgrouter must have on whatever server each transaction gets.
        self.prepared = who % 2 == 1
        # Parameters of its own, which every server it gets must be set to (re-synced).
        self.params = {"application_name": f"honest{who}", "TimeZone": ZONES[who % len(ZONES)]}
        self.committed = set()    # n of the transactions whose COMMIT was answered
        self.unknown = set()      # n of those cut off between the INSERTs and the answer
        self.errors = {}          # SQLSTATE -> count
        self.problems = []        # what must never happen
        self.n = 0

    def note(self, key):
        self.errors[key] = self.errors.get(key, 0) + 1

    def one(self, c):
        self.n += 1
        n = self.n
        # Simple protocol: BEGIN and a look at the transaction it started.
        c.send(query_msg("BEGIN; SELECT txid_current_if_assigned() IS NULL, now() = statement_timestamp(), "
                         "current_setting('application_name'), current_setting('TimeZone')"))
        r = result(c)
        if r.error:
            raise r.error
        for f in r.notices:
            if f.get("C") == "25001":
                self.problems.append(f"BEGIN inside another client's transaction: {f.get('M')}")
        if r.rows and r.rows[0][:2] != ["t", "t"]:
            self.problems.append(f"started inside another client's transaction: {r.rows[0]}")
        if r.rows and r.rows[0][2:] != [self.params["application_name"], self.params["TimeZone"]]:
            self.problems.append(f"server not set to this client's parameters: {r.rows[0][2:]}")
        if r.status != "T":
            self.problems.append(f"BEGIN left status {r.status!r}")
        self.unknown.add(n)
        # Extended protocol: the two rows, one Sync.
        args = [str(self.who), str(n)]
        if self.prepared:
            c.send(bind_msg(args, stmt="ins") + execute_msg() + bind_msg(args, stmt="ins") + execute_msg()
                   + sync_msg())
        else:
            ins = f"INSERT INTO {self.table} VALUES ($1, $2, 'honest')"
            c.send(parse_msg(ins) + bind_msg(args) + execute_msg() + bind_msg(args) + execute_msg() + sync_msg())
        r = result(c)
        if r.error:
            raise r.error
        if r.tags != ["INSERT 0 1", "INSERT 0 1"] or r.status != "T":
            self.problems.append(f"inserts answered {r.tags} {r.status!r}")
        c.send(query_msg("COMMIT"))
        r = result(c)
        if r.error:
            raise r.error
        if r.tags != ["COMMIT"] or r.status != "I":
            self.problems.append(f"COMMIT answered {r.tags} {r.status!r}")
            return
        self.unknown.discard(n)
        self.committed.add(n)

    def check_fresh_session(self, c):
        c.send(query_msg("SELECT current_setting('search_path'), current_setting('statement_timeout'), "
                         "(SELECT count(*) FROM pg_prepared_statements), "
                         "(SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())"))
        r = result(c)
        if r.error:
            raise r.error
        if r.rows != [['"$user", public', "0", "0", "0"]]:
            self.problems.append(f"a new session inherited a previous client's state: {r.rows}")

    def run(self):
        c = None
        used = 0
        while not self.stop.is_set():
            try:
                if c is not None and self.session and used >= 3:
                    c.terminate()
                    c = None
                if c is None:
                    c = self.connect(self.params)
                    used = 0
                    if self.session:
                        self.check_fresh_session(c)
                    if self.prepared:
                        c.send(parse_msg(f"INSERT INTO {self.table} VALUES ($1, $2, 'honest')", name="ins")
                               + sync_msg())
                        r = result(c)
                        if r.error:
                            raise r.error
                        if r.types() != "1Z":
                            self.problems.append(f"Parse answered {r.types()!r}")
                used += 1
                self.one(c)
            except PgError as e:
                self.note(e.sqlstate)
                if c:
                    c.close()
                c = None
            except Closed as e:
                # Closed under a query: only after saying why, as an ErrorResponse.
                if not e.errors:
                    self.problems.append("connection closed under a query without an ErrorResponse")
                for err in e.errors:
                    self.note(err.sqlstate)
                c.close()
                c = None
            except (WireError, OSError) as e:
                self.problems.append(f"{type(e).__name__}: {e}")
                if c:
                    c.close()
                c = None
            except Exception as e:  # noqa: BLE001 - reported, not hidden
                self.problems.append(f"{type(e).__name__}: {e}")
                break
        if c:
            c.terminate()


class Vandal:
    """A client that leaves at the worst moment, each time a different way."""

    WAYS = ["rst_in_transaction", "fin_in_transaction", "half_a_commit", "mid_copy_in",
            "unread_result", "implicit_transaction_without_sync", "prepared_then_half_a_pipeline",
            "set_parameters_and_vanish"]
    # Session pooling only: a clean goodbye after changing the session, which the
    # server's reset must undo before the next client.
    SESSION_WAYS = ["dirty_session_then_terminate"]

    def __init__(self, p, connect, table, stop, seed, session=False):
        self.p, self.connect, self.table, self.stop = p, connect, table, stop
        self.WAYS = Vandal.WAYS + (Vandal.SESSION_WAYS if session else [])
        self.rng = random.Random(seed)
        self.done = {w: 0 for w in self.WAYS}
        self.problems = []

    def begin_and_insert(self, c):
        r = c.query(f"BEGIN; INSERT INTO {self.table} VALUES (-1, -1, 'abandoned')")
        return r.error is None and r.status == "T"

    def once(self, way):
        c = self.connect()
        try:
            if way == "implicit_transaction_without_sync":
                # An implicit transaction: a Sync (from anyone) would commit it.
                c.send(parse_msg(f"INSERT INTO {self.table} VALUES (-1, -1, 'abandoned')") + bind_msg()
                       + execute_msg())
                time.sleep(self.rng.uniform(0, 0.05))
                c.abort()
                return True
            if way == "prepared_then_half_a_pipeline":
                # The honest clients' statement name, for another statement, then a
                # pipeline cut off before its Sync.
                c.send(parse_msg(f"INSERT INTO {self.table} VALUES (-1, $1, 'abandoned')", name="ins") + sync_msg())
                r = result(c)
                if r.error:
                    c.abort()
                    return False
                m = bind_msg(["1"], stmt="ins") + execute_msg() + sync_msg()
                c.send(m[:self.rng.randint(1, len(m) - 1)])
                time.sleep(self.rng.uniform(0, 0.05))
                c.abort()
                return True
            if way == "set_parameters_and_vanish":
                r = c.query("SET TimeZone = 'Asia/Tokyo'; SET application_name = 'vandal'")
                c.abort()
                return r.error is None
            if way == "dirty_session_then_terminate":
                r = c.query("SET search_path = pg_catalog; SET statement_timeout = '7s'; "
                            "PREPARE vandal AS SELECT 1; CREATE TEMP TABLE vandal_tmp (x int)")
                c.terminate()
                return r.error is None
            if not self.begin_and_insert(c):
                c.abort()
                return False
            if way == "rst_in_transaction":
                c.abort()
            elif way == "fin_in_transaction":
                c.close()
            elif way == "half_a_commit":
                m = query_msg("COMMIT")
                c.send(m[:self.rng.randint(1, len(m) - 1)])
                time.sleep(self.rng.uniform(0, 0.05))
                c.abort() if self.rng.random() < 0.5 else c.close()
            elif way == "mid_copy_in":
                c.send(query_msg(f"COPY {self.table} FROM STDIN"))
                m = c.read_message()
                if m is None or m[0] != b"G":
                    c.abort()
                    return False
                c.send(copy_data_msg(b"-1\t-1\tabandoned\n" * 50))
                time.sleep(self.rng.uniform(0, 0.05))
                c.abort()
            elif way == "unread_result":
                c.send(query_msg("SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g"))
                time.sleep(self.rng.uniform(0, 0.05))
                c.abort()
            return True
        except (PgError, WireError, OSError):
            c.close()
            return False

    def run(self):
        i = 0
        while not self.stop.is_set():
            way = self.WAYS[i % len(self.WAYS)]
            i += 1
            try:
                if self.once(way):
                    self.done[way] += 1
            except (PgError, WireError, OSError):
                pass  # a login refused while the server under it was terminated
            except Exception as e:  # noqa: BLE001
                self.problems.append(f"{way}: {type(e).__name__}: {e}")
                break


class Canceller:
    """A client that cancels its own queries: a cancel must reach that query or nothing,
    never another client's (an honest client never sees 57014)."""

    def __init__(self, p, connect, stop, seed):
        self.p, self.connect, self.stop = p, connect, stop
        self.rng = random.Random(seed)
        self.cancelled = 0
        self.problems = []

    def run(self):
        while not self.stop.is_set():
            try:
                c = self.connect()
            except (PgError, WireError, OSError):
                continue
            try:
                for _ in range(5):
                    c.send(query_msg("SELECT pg_sleep(0.2)"))
                    time.sleep(self.rng.uniform(0, 0.1))
                    raw = self.p.raw()
                    raw.send(pgwire.cancel_request(*c.backend_key))
                    raw.close()
                    r = c.read_until_ready(timeout=20)
                    if r.error and r.error.sqlstate == "57014":
                        self.cancelled += 1
                    elif r.error:
                        raise r.error
                c.terminate()
            except (PgError, WireError, OSError):
                c.close()
            except Exception as e:  # noqa: BLE001
                self.problems.append(f"{type(e).__name__}: {e}")
                c.close()
                break


class Operator:
    """An operator at the console meanwhile: PAUSE/RESUME, RELOAD with a new pool_size,
    RECONNECT, SUSPEND/RESUME and the SHOW commands, in turn. None of it may cost an
    honest client an error."""

    SIZES = (POOL_SIZE - 1, POOL_SIZE + 1)

    def __init__(self, p, stop):
        self.p, self.stop = p, stop
        self.done = {}
        self.problems = []

    def run(self):
        rng = random.Random(11)
        steps = ["pause", "reload", "reconnect", "suspend", "show"]
        i = 0
        c = self.p.connect(user="pgbouncer", dbname="pgbouncer")
        try:
            cur = c.cursor()
            while not self.stop.wait(rng.uniform(0.2, 0.5)):
                step = steps[i % len(steps)]
                if step == "pause":
                    cur.execute("PAUSE testdb")
                    time.sleep(rng.uniform(0.05, 0.3))
                    cur.execute("RESUME testdb")
                elif step == "reload":
                    self.p.settings["default_pool_size"] = self.SIZES[(i // len(steps)) % 2]
                    self.p.write_config(None)
                    cur.execute("RELOAD")
                elif step == "reconnect":
                    cur.execute("RECONNECT testdb")
                elif step == "suspend":
                    cur.execute("SUSPEND")
                    time.sleep(rng.uniform(0.05, 0.2))
                    cur.execute("RESUME")
                else:
                    for what in ("POOLS", "SERVERS", "CLIENTS", "STATS", "SOCKETS"):
                        cur.execute("SHOW " + what)
                        cur.fetchall()
                self.done[step] = self.done.get(step, 0) + 1
                i += 1
        except Exception as e:  # noqa: BLE001
            self.problems.append(f"operator: {type(e).__name__}: {e}")
        finally:
            c.close()


def run_chaos(p, pg, table, connect=None, operator=False, session=False):
    """The whole check against pooler p in front of PostgreSQL pg (its testdb holds table).
    connect(params=None) makes a logged-in wire client of app_md5 with those startup
    parameters (default: plain TCP); operator: console commands meanwhile (Operator)."""
    connect = connect or (lambda params=None: p.wire(timeout=20, params=params))
    stop = threading.Event()
    ops = [Operator(p, stop)] if operator else []
    honest = [Honest(p, connect, table, who, stop, session) for who in range(HONEST)]
    vandals = [Vandal(p, connect, table, stop, seed, session) for seed in range(VANDALS)]
    cancellers = [Canceller(p, connect, stop, 100 + seed) for seed in range(2)]
    terminated = []

    def terminator():
        rng = random.Random(7)
        while not stop.wait(rng.uniform(0.2, 0.6)):
            pids = pg.backend_pids("app_md5")
            if pids:
                pid = rng.choice(pids)
                pg.sql("SELECT pg_terminate_backend(%s)", (pid,))
                terminated.append(pid)

    threads = [threading.Thread(target=h.run, daemon=True) for h in honest]
    threads += [threading.Thread(target=v.run, daemon=True) for v in vandals]
    threads += [threading.Thread(target=x.run, daemon=True) for x in cancellers]
    threads += [threading.Thread(target=x.run, daemon=True) for x in ops]
    threads.append(threading.Thread(target=terminator, daemon=True))
    for t in threads:
        t.start()
    time.sleep(LOAD_SECONDS)
    stop.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    assert p.proc.poll() is None, "the pooler died"

    problems = [x for who in honest + vandals + cancellers + ops for x in who.problems]
    assert not problems, problems[:10]
    seen = {}
    for h in honest:
        for k, v in h.errors.items():
            seen[k] = seen.get(k, 0) + v
    assert set(seen) - SERVER_GONE == set(), f"honest clients saw errors {seen}"
    assert len(terminated) >= 10, "too few server terminations to mean anything"
    done = {}
    for v in vandals:
        for k, n in v.done.items():
            done[k] = done.get(k, 0) + n
    assert all(n > 0 for n in done.values()), f"some ways of leaving never ran: {done}"
    committed = sum(len(h.committed) for h in honest)
    cancelled = sum(x.cancelled for x in cancellers)
    print(f"committed {committed}, cut off {sum(len(h.unknown) for h in honest)}, honest errors {seen}, "
          f"servers terminated {len(terminated)}, abandoned {done}, own queries cancelled {cancelled}"
          + (f", console {ops[0].done}" if ops else ""))
    if ops:
        assert len(ops[0].done) == 5, f"some console steps never ran: {ops[0].done}"
    assert cancelled >= 10, f"only {cancelled} cancels landed"
    assert committed >= 100, f"only {committed} honest transactions committed"

    # Nothing abandoned was ever committed, and every honest transaction is all or nothing.
    assert pg.sql(f"SELECT count(*) FROM {table} WHERE tag <> 'honest'", dbname="testdb")[0][0] == 0, \
        "rows of an abandoned client were committed"
    counts = {(who, n): k for who, n, k in
              pg.sql(f"SELECT who, n, count(*) FROM {table} GROUP BY who, n", dbname="testdb")}
    assert all(k == 2 for k in counts.values()), "an honest transaction is half there"
    for h in honest:
        have = {n for (who, n) in counts if who == h.who}
        assert h.committed <= have, f"client {h.who}: committed transactions missing: {sorted(h.committed - have)[:5]}"
        assert have <= h.committed | h.unknown, f"client {h.who}: rows of transactions it never committed"

    # The pool settles: no client, no busy server, every server connection idle.
    max_servers = max(Operator.SIZES) if ops else POOL_SIZE
    deadline = time.monotonic() + 15
    while True:
        row = p.pool_row()
        states = pg.sql("SELECT state, count(*) FROM pg_stat_activity WHERE usename = 'app_md5' "
                        "AND backend_type = 'client backend' GROUP BY state", dbname="testdb")
        states = {s: n for s, n in states}
        settled = (row is not None and row["cl_active"] == 0 and row["cl_waiting"] == 0 and row["sv_active"] == 0
                   and set(states) <= {"idle"} and sum(states.values()) <= max_servers)
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert settled, f"pool did not settle: {row}, server states {states}"

    # A server lost before a transaction's first byte reached it (between the pool and
    # the parameter re-sync) is replaced, not reported to the client.
    lost = [line for line in p.log().splitlines() if "closing because: server connection lost" in line]
    assert not lost, lost[:3]

    # And the next client gets a clean server.
    c = connect()
    try:
        r = c.query("SELECT txid_current_if_assigned() IS NULL, now() = statement_timestamp()")
        assert r.error is None and r.rows == [["t", "t"]] and r.status == "I", (r.error, r.rows, r.status)
    finally:
        c.terminate()


@pytest.mark.pgrouter_only("PgBouncer 1.18 exits under this load: FATAL 'bad client state: 0' in disconnect_client() "
                            "when a cancel request's connection closes while its cancel is being sent")
def test_clients_vanishing_and_servers_terminated_under_load(pgrouter, pg, table):
    p = pgrouter({"default_pool_size": POOL_SIZE, "max_client_conn": 200, "query_wait_timeout": 60})
    run_chaos(p, pg, table)


@pytest.mark.pgrouter_only("PgBouncer 1.18 exits under this load (see above)")
def test_chaos_with_an_operator_at_the_console(pgrouter, pg, table):
    p = pgrouter({"default_pool_size": POOL_SIZE, "max_client_conn": 200, "query_wait_timeout": 60})
    run_chaos(p, pg, table, operator=True)


@pytest.mark.pgrouter_only("PgBouncer 1.18 exits under this load (see above)")
def test_chaos_in_session_pooling(pgrouter, pg, table):
    """Session pooling: short sessions, some leaving a changed session behind with a clean
    goodbye; every new session starts as a fresh PostgreSQL session would (server_reset_query)."""
    p = pgrouter({"default_pool_size": POOL_SIZE, "max_client_conn": 200, "query_wait_timeout": 60,
                  "pool_mode": "session"})
    run_chaos(p, pg, table, session=True)
