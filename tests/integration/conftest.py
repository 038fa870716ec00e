"""Fixtures for pgrouter's integration tests.

- `pg`: one PostgreSQL 15 for the whole session (roles app_md5, app_scram,
  app_plain, app_trust; databases testdb and benchdb).
- `pgrouter`: a factory; each call writes a config + userlist into a temp dir,
  starts the pooler and returns a helpers.Pooler. With POOLER=pgbouncer the same
  call writes a pgbouncer.ini and starts PgBouncer 1.18, to validate the tests.

Tests marked `pgrouter_only` check behaviour PgBouncer 1.18 does not have (or has
differently); a POOLER=pgbouncer run deselects them and says so in its summary.
Nothing is ever skipped: a missing dependency fails the test with a message.
"""

import atexit
import os
import shutil
import signal
import threading
import time

import pytest

import helpers

helpers.install_bounded_wait()

DEFAULT_TEST_TIMEOUT = float(os.environ.get("PGROUTER_IT_TIMEOUT", "120"))
MAX_START_FAILURES = int(os.environ.get("PGROUTER_IT_MAX_START_FAILURES", "3"))
# Tests in a row that failed on a timeout talking to the pooler (it listens but
# does not answer): past this many, the rest fail at once instead of each waiting.
MAX_UNRESPONSIVE = int(os.environ.get("PGROUTER_IT_MAX_UNRESPONSIVE", "5"))
UNRESPONSIVE_MARKERS = ("timeout expired", "timed out waiting for data", "no answer from the server")

_live = []            # poolers and clusters to stop at exit, whatever happens
_deselected = []
_start_failures = {"count": 0, "first": None}
_unresponsive = {"count": 0, "last": None}


def _stop_all():
    for obj in reversed(_live):
        try:
            obj.stop()
        except Exception:
            pass


atexit.register(_stop_all)


def _on_sigterm(signum, frame):
    # `timeout` (scripts/test.sh) sends SIGTERM: unwind through pytest so the
    # fixtures stop PostgreSQL and the poolers they started.
    raise KeyboardInterrupt("SIGTERM")


class HarnessTimeout(Exception):
    pass


# --------------------------------------------------------------------------- hooks

def pytest_configure(config):
    config.addinivalue_line("markers", "pgrouter_only(reason): behaviour PgBouncer 1.18 lacks or does differently; "
                                       "deselected (with a notice) when POOLER=pgbouncer")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def pytest_report_header(config):
    binary = helpers.PGBOUNCER_BIN if helpers.is_pgbouncer() else helpers.PGROUTER_BIN
    return [f"pooler under test: {helpers.POOLER} ({binary})", f"PostgreSQL binaries: {helpers.PG_BINDIR}"]


def pytest_collection_modifyitems(config, items):
    # PGROUTER_IT_RUN_ALL=1 runs them against PgBouncer too: they should fail there,
    # which shows they detect the behaviour they are about.
    if not helpers.is_pgbouncer() or os.environ.get("PGROUTER_IT_RUN_ALL"):
        return
    keep = []
    for item in items:
        if item.get_closest_marker("pgrouter_only"):
            _deselected.append(item)
        else:
            keep.append(item)
    if _deselected:
        config.hook.pytest_deselected(items=_deselected)
        items[:] = keep


def pytest_terminal_summary(terminalreporter):
    if _deselected:
        terminalreporter.write_line(
            f"POOLER=pgbouncer: {len(_deselected)} pgrouter-only tests deselected (not run, not skipped):")
        for item in _deselected:
            m = item.get_closest_marker("pgrouter_only")
            why = (m.args[0] if m.args else m.kwargs.get("reason", "")) if m else ""
            terminalreporter.write_line(f"  {item.nodeid}  -- {why}")


def _timeout_plugin_active(config):
    if not config.pluginmanager.hasplugin("timeout"):
        return False
    try:
        return bool(config.getoption("timeout"))
    except ValueError:
        return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Per-test deadline when pytest-timeout is absent (or not enabled)."""
    use_alarm = (not _timeout_plugin_active(item.config)
                 and threading.current_thread() is threading.main_thread()
                 and DEFAULT_TEST_TIMEOUT > 0)
    if use_alarm:
        def on_alarm(signum, frame):
            raise HarnessTimeout(f"test exceeded {DEFAULT_TEST_TIMEOUT:.0f}s (harness per-test timeout)")
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, DEFAULT_TEST_TIMEOUT)
    try:
        yield
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and getattr(item, "_poolers", None):
        text = str(call.excinfo.value) if call.excinfo else ""
        if rep.failed and any(m in text for m in UNRESPONSIVE_MARKERS):
            _unresponsive["count"] += 1
            _unresponsive["last"] = f"{item.nodeid}: {text[:500]}"
        elif rep.passed:
            _unresponsive["count"] = 0
    if rep.failed:
        for p in getattr(item, "_poolers", []):
            rep.sections.append((f"{p.kind} log ({p.log_path})", p.log()[-4000:]))


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def pg():
    failure = None
    try:
        cluster = helpers.PgCluster()
        cluster.init()
        _live.append(cluster)
        cluster.start()
        cluster.setup_roles()
    except helpers.Missing as e:
        failure = f"missing dependency: {e}"
    if failure:
        pytest.fail(failure, pytrace=False)
    yield cluster
    cluster.cleanup()


@pytest.fixture
def pg_hba(pg):
    """Lets a test replace the server's pg_hba.conf; the original comes back afterwards."""
    original = list(pg.hba)

    def set_hba(lines):
        pg.write_hba(lines)
        pg.reload()

    yield set_hba
    if pg.hba != original:
        pg.write_hba(original)
        pg.reload()


@pytest.fixture(scope="session")
def bench_db(pg):
    """benchdb initialised by pgbench -i -s 1 (directly on the server)."""
    tool = helpers.client_tool("pgbench")
    helpers.run([tool, "-i", "-q", "-s", "1", "-h", str(pg.dir), "-p", str(pg.port), "-U", "postgres", "benchdb"],
                timeout=120)
    pg.sql("GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC", dbname="benchdb")
    return "benchdb"


@pytest.fixture
def pooler_kind():
    return helpers.POOLER


@pytest.fixture
def pgrouter(pg, request):
    """Factory: pgrouter(overrides=None, databases=None, users=None, tls=None,
    userlist=None, hba=None, fmt="toml", start=True) -> helpers.Pooler.

    Keys of overrides go to [pgrouter] (SPEC section 2 names); database entries
    are merged over {host, port, dbname}. Teardown: SIGTERM, SIGKILL after 10 s."""
    started = []
    request.node._poolers = started

    def factory(overrides=None, databases=None, users=None, tls=None, userlist=None, hba=None, fmt="toml",
                start=True, kind=None, clusters=None):
        try:
            p = helpers.build_pooler(pg, overrides, databases, users, tls, userlist, hba, fmt, kind, clusters)
        except helpers.Missing as e:
            failure = f"missing dependency: {e}"
        else:
            failure = None
        if failure:
            pytest.fail(failure, pytrace=False)
        started.append(p)
        _live.append(p)
        if not start:
            return p
        if _unresponsive["count"] >= MAX_UNRESPONSIVE:
            pytest.fail(f"the pooler timed out in {_unresponsive['count']} tests in a row; not trying again "
                        f"(last: {_unresponsive['last']})", pytrace=False)
        if _start_failures["count"] >= MAX_START_FAILURES:
            pytest.fail(f"{p.kind} failed to start {_start_failures['count']} times in a row in this session; "
                        f"not trying again (first failure below)\n{_start_failures['first']}", pytrace=False)
        failure = None
        try:
            p.start()
        except helpers.Missing as e:
            failure = f"missing dependency: {e}"
        except helpers.StartError as e:
            _start_failures["count"] += 1
            _start_failures["first"] = _start_failures["first"] or str(e)
            failure = str(e)
        if failure:
            pytest.fail(failure, pytrace=False)
        _start_failures["count"] = 0
        return p

    yield factory
    for p in started:
        p.stop()
        if p in _live:
            _live.remove(p)
    if not os.environ.get("PGROUTER_IT_KEEP"):
        for p in started:
            shutil.rmtree(p.dir, ignore_errors=True)


@pytest.fixture
def deadline():
    """deadline(seconds) -> a function returning the time left (raises when none)."""
    def make(seconds):
        end = time.monotonic() + seconds

        def left():
            t = end - time.monotonic()
            if t <= 0:
                raise HarnessTimeout(f"deadline of {seconds}s passed")
            return t
        return left
    return make


@pytest.fixture
def pg_cluster(request):
    """Factory: pg_cluster(n_replicas=2) -> pgcluster.PgCluster, a started PostgreSQL 15
    primary (nodes[0]) + n_replicas streaming replicas, all with the roles and
    databases of the `pg` fixture. Every cluster made is torn down at the end of the
    test (each node stopped by pg_ctl / its own postmaster pid, data removed)."""
    import pgcluster

    made = []

    def factory(n_replicas=2, **kw):
        failure = None
        try:
            c = pgcluster.PgCluster(n_replicas=n_replicas, start=False, **kw)
            made.append(c)
            _live.append(c)
            c.create()
        except helpers.Missing as e:
            failure = f"missing dependency: {e}"
        if failure:
            pytest.fail(failure, pytrace=False)
        return c

    yield factory
    for c in made:
        c.cleanup()
        if c in _live:
            _live.remove(c)
