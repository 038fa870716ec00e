"""docker/: the image's recipe and its configuration. No Docker engine runs in CI, so
the image itself is not built here; what can be checked without one is: every file the
Dockerfile copies exists, its build packages are the project's, its runtime packages
provide every shared library the built binary needs, and the container's configuration,
users and init script work as they are against a real PostgreSQL."""

import re
import shutil
import subprocess
import tomllib

import psycopg2
import pytest

import helpers

pytestmark = pytest.mark.pgrouter_only("pgrouter's own container files")

DOCKER = helpers.REPO / "docker"


def stages():
    """The Dockerfile's stages: list of lists of (instruction, arguments), line
    continuations joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            out.append([])
        out[-1].append((word.upper(), rest.strip()))
    return out


def apt_packages(stage):
    pkgs = []
    for word, rest in stage:
        if word == "RUN" and "apt-get install" in rest:
            cmd = rest.split("apt-get install", 1)[1].split("&&", 1)[0]
            pkgs += [w for w in cmd.split() if not w.startswith("-")]
    return pkgs


def test_dockerfile_copies_files_that_exist():
    build, runtime = stages()
    copies = [rest for word, rest in build + runtime if word == "COPY" and "--from" not in rest]
    assert copies, "no COPY in the Dockerfile"
    for rest in copies:
        *sources, _dest = rest.split()
        for src in sources:
            assert (helpers.REPO / src).exists(), f"COPY {src}: not in the repository"


def test_build_stage_installs_the_projects_build_packages():
    build, _ = stages()
    lib = (helpers.REPO / "scripts" / "lib.sh").read_text()
    required = set(re.search(r"REQUIRED_PACKAGES=\((.*?)\)", lib, re.S).group(1).split())
    wanted = set(apt_packages(build))
    assert wanted, "the build stage installs nothing"
    assert wanted <= required, f"not in scripts/lib.sh REQUIRED_PACKAGES: {sorted(wanted - required)}"
    for pkg in ("libboost1.81-dev", "libboost-json1.81-dev", "libssl-dev", "libpq-dev", "libspdlog-dev",
                "libtomlplusplus-dev"):
        assert pkg in wanted, f"{pkg} missing from the build stage"


def test_runtime_stage_provides_every_linked_library():
    binary = helpers.require_binary(helpers.PGROUTER_BIN, "build it first: cmake --build build")
    if not shutil.which("dpkg"):
        pytest.skip("dpkg not available to map libraries to packages")
    _, runtime = stages()
    installed = set(apt_packages(runtime))
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = [m.group(1) for m in re.finditer(r"=>\s+(/\S+)", ldd)]
    assert libs, ldd
    needed = set()
    for lib in libs:
        r = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True)
        if r.returncode != 0:  # /lib -> /usr/lib on merged-/usr systems
            r = subprocess.run(["dpkg", "-S", lib.replace("/lib/", "/usr/lib/", 1)], capture_output=True, text=True)
        assert r.returncode == 0, f"no Debian package owns {lib}"
        needed.add(r.stdout.split(":")[0])
    base = {"libc6", "libgcc-s1", "libstdc++6"}  # in debian:12-slim already
    missing = needed - base - installed
    assert not missing, f"the runtime stage lacks {sorted(missing)} (the binary links against them)"


def test_compose_builds_this_dockerfile():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    svc = compose["services"]["pgrouter"]
    assert (DOCKER / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == (DOCKER / "Dockerfile")
    for vol in compose["services"]["postgres"].get("volumes", []):
        assert (DOCKER / vol.split(":")[0]).exists(), vol


def test_container_configuration_passes_check():
    binary = helpers.require_binary(helpers.PGROUTER_BIN, "build it first: cmake --build build")
    r = subprocess.run([str(binary), "--check", str(DOCKER / "pgrouter.toml")], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr


def test_container_users_log_in_as_configured(pgrouter, pg):
    """The container's settings, users and init script, against the test PostgreSQL:
    the app user logs in with SCRAM and its password from docker/userlist.txt, a
    wrong password is refused, and the admin user reaches the console."""
    conf = tomllib.loads((DOCKER / "pgrouter.toml").read_text())
    settings = {k: v for k, v in conf["pgrouter"].items()
                if k not in ("listen_addr", "listen_port", "unix_socket_dir", "auth_file")}
    users = dict(re.findall(r'^"([^"]+)"\s+"([^"]*)"', (DOCKER / "userlist.txt").read_text(), re.M))
    assert users.get("app") and users.get("pgbouncer")
    if not pg.sql("SELECT 1 FROM pg_database WHERE datname = 'appdb'"):
        pg.sql("CREATE DATABASE appdb")
    if not pg.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app'"):
        # The init script as the postgres image runs it: in the database POSTGRES_DB names.
        pg.sql((DOCKER / "initdb" / "10-app.sql").read_text(), dbname="appdb")
    [(dbname,)] = [(d.get("dbname", name),) for name, d in conf["databases"].items()]
    p = pgrouter(settings, databases={"appdb": {"dbname": dbname}}, userlist=users)
    r = p.psql("-tAc", "SELECT current_user", user="app", dbname="appdb", password=users["app"])
    assert r.returncode == 0 and r.stdout.strip() == "app", r.stderr
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        p.connect(user="app", dbname="appdb", password="wrong")
    c = p.connect(user="pgbouncer", dbname="pgbouncer", password=users["pgbouncer"])
    try:
        with c.cursor() as cur:
            cur.execute("SHOW DATABASES")
            assert any(r[0] == "appdb" for r in cur.fetchall())
    finally:
        c.close()
