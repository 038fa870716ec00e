# Shared shell helpers for scripts/test.sh, scripts/demo.sh and bench/compare.sh.
# Source it from the repository root: `source scripts/lib.sh`.

PGROUTER_REPO=${PGROUTER_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
PGROUTER_BIN=${PGROUTER_BIN:-$PGROUTER_REPO/build/pgrouter}
PGBOUNCER_BIN=${PGBOUNCER_BIN:-/usr/sbin/pgbouncer}
PG_OS_USER=postgres

# Everything the build, the tests, the demo and the benchmark need (Debian 12).
REQUIRED_PACKAGES=(
  build-essential cmake ninja-build g++ pkg-config
  libboost1.81-dev libboost-json1.81-dev libssl-dev libpq-dev libspdlog-dev libfmt-dev libtomlplusplus-dev
  libpam0g-dev libldap-dev  # auth_type = "pam", "ldap"
  slapd ldap-utils  # the LDAP server of the LDAP tests
  googletest libgtest-dev
  postgresql-15 postgresql-client-15 pgbouncer
  python3-psycopg2 python3-pytest python3-yaml openssl procps
  nftables  # tests cut a TCP connection without closing it (dead-peer detection)
  patroni etcd-server
)

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

_APT_UPDATED=0
apt_update_once() {
  if [ "$_APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _APT_UPDATED=1
  fi
}

# apt-get install without starting services (Debian's postgresql and pgbouncer
# packages would start a cluster on 5432 and a pooler on 6432): a policy-rc.d
# that refuses every start, present only for the duration of the install.
apt_install() {
  local policy=/usr/sbin/policy-rc.d added=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    added=1
  fi
  local rc=0
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" || rc=$?
  if [ "$added" -eq 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi
  return "$rc"
}

# ensure_packages PKG...: install the missing ones; no apt at all when none is missing.
ensure_packages() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  log "installing: ${missing[*]}"
  apt_update_once
  apt_install "${missing[@]}"
}

# ensure_optional_package PKG: install it if Debian has it; never fails.
ensure_optional_package() {
  local p=$1
  pkg_installed "$p" && return 0
  apt_update_once || return 0
  if apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt_install "$p" || warn "could not install $p"
  else
    warn "$p is not available from apt; continuing without it"
  fi
}

build_pgrouter() {
  log "configure + build (RelWithDebInfo, Ninja)"
  (cd "$PGROUTER_REPO" &&
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
    cmake --build build)
}

# as_postgres CMD...: run CMD as the postgres OS user (PostgreSQL refuses root).
# setpriv execs in place, so `as_postgres prog &` leaves $! = prog's own pid.
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups --reset-env -- "$@"
  elif [ "$(id -un)" = "$PG_OS_USER" ]; then
    "$@"
  else
    sudo -u "$PG_OS_USER" -- "$@"
  fi
}

# AS_PG_EXEC: a command prefix that execs its command as the postgres OS user
# when we are root (PgBouncer and PostgreSQL refuse root), else nothing. With
# `"${AS_PG_EXEC[@]}" prog &`, $! is prog's own pid.
if [ "$(id -u)" -eq 0 ]; then
  AS_PG_EXEC=(setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups --)
else
  AS_PG_EXEC=()
fi

# free_port LO HI: a TCP port in [LO, HI) that 127.0.0.1 can bind right now
# (below the ephemeral range, unlike a bind to port 0).
free_port() {
  /usr/bin/python3 - "$1" "$2" <<'EOF'
import random, socket, sys
lo, hi = int(sys.argv[1]), int(sys.argv[2])
ports = list(range(lo, hi))
random.shuffle(ports)
for p in ports:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    sys.exit(0)
sys.exit("no free port in %d-%d" % (lo, hi))
EOF
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_port PORT SECONDS [PID]: until 127.0.0.1:PORT accepts; fails early if PID dies.
wait_port() {
  local port=$1 secs=$2 pid=${3:-} end=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$end" ]; do
    if port_in_use "$port"; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

# start_watchdog SECONDS: SIGTERM this script after SECONDS (a whole-run deadline); sets WATCHDOG.
# The subshell does not hold our stdout, which may be a pipe someone waits on.
start_watchdog() {
  (sleep "$1" && kill -TERM $$) >/dev/null 2>&1 &
  WATCHDOG=$!
}

# stop_watchdog: never fails, also when the watchdog has gone already (EXIT traps run
# under set -e, where a failed kill would skip the rest of the cleanup).
stop_watchdog() {
  [ -n "${WATCHDOG:-}" ] || return 0
  pkill -P "$WATCHDOG" 2>/dev/null || true
  kill "$WATCHDOG" 2>/dev/null || true
}

# bench_traps SECONDS: the benchmark scripts' traps. On exit (or INT, TERM, or SECONDS
# elapsed: the watchdog), bench_cleanup stops what the script started (the pids in its
# associative array PID, and BG if set), PostgreSQL in $WORK/pg and the watchdog, removes
# $WORK and exits with the script's status.
bench_traps() {
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'warn "stopped (signal or BENCH_TIMEOUT=${BENCH_TIMEOUT}s)"; exit 143' TERM
  start_watchdog "$1"
}

bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "${BG:-}" ] && stop_pid "$BG" 5
  local p
  for p in "${!PID[@]}"; do stop_pid "${PID[$p]}" 20; done
  pg_stop "$WORK/pg"
  stop_watchdog
  rm -rf "$WORK"
  exit "$rc"
}

# The benchmarks' pooler configs, the same for every script that compares them: database
# "bench" on 127.0.0.1:PGPORT, transaction pooling, trust, no TLS, no connection logging.
# bench_pgbouncer_ini PORT PGPORT AUTH_FILE POOL_SIZE MAX_CLIENT_CONN        (to stdout)
bench_pgbouncer_ini() {
  cat <<EOF
[databases]
bench = host=127.0.0.1 port=$2 dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
auth_type = trust
auth_file = $3
pool_mode = transaction
default_pool_size = $4
max_client_conn = $5
log_connections = 0
log_disconnections = 0
server_tls_sslmode = disable
EOF
}

# bench_pgrouter_toml PORT PGPORT AUTH_FILE POOL_SIZE MAX_CLIENT_CONN WORKERS  (to stdout)
bench_pgrouter_toml() {
  cat <<EOF
[pgrouter]
listen_addr = "127.0.0.1"
listen_port = $1
unix_socket_dir = ""
auth_type = "trust"
auth_file = "$3"
pool_mode = "transaction"
default_pool_size = $4
max_client_conn = $5
log_connections = false
log_disconnections = false
workers = $6

[tls]
server_tls_sslmode = "disable"

[databases.bench]
host = "127.0.0.1"
port = $2
dbname = "bench"
EOF
}

# stop_pid PID [GRACE]: SIGTERM, wait up to GRACE seconds (default 10), then SIGKILL.
stop_pid() {
  local pid=$1 grace=${2:-10} i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# pg_init DATADIR PORT SOCKETDIR [CONF-LINE...]: initdb as postgres + settings.
pg_init() {
  local data=$1 port=$2 sockdir=$3
  shift 3
  as_postgres "$PG_BINDIR/initdb" -D "$data" -U postgres -E UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 --no-sync >/dev/null
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$sockdir'"
    for line in "$@"; do echo "$line"; done
  } | as_postgres tee -a "$data/postgresql.conf" >/dev/null
}

pg_start() {  # pg_start DATADIR LOGFILE
  as_postgres "$PG_BINDIR/pg_ctl" -D "$1" -l "$2" -w -t 60 start >/dev/null
}

pg_stop() {  # pg_stop DATADIR: fast, then immediate; never fails
  [ -f "$1/postmaster.pid" ] || return 0
  as_postgres "$PG_BINDIR/pg_ctl" -D "$1" -m fast -w -t 30 stop >/dev/null 2>&1 ||
    as_postgres "$PG_BINDIR/pg_ctl" -D "$1" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
}
