#!/usr/bin/env bash
# Read routing overhead: pooler CPU per transaction, plain pooling vs routed databases.
#   bench/routing.sh
# One PostgreSQL 15 primary, one streaming replica (pg_basebackup -R), pgbench -i -s 1,
# and one pgrouter (workers = 1, transaction pooling, pool size 8) serving three
# databases over the same pgbench database:
#   plain            host/port = the replica itself (a PgBouncer-style line, no cluster)
#   routed_replica   cluster "main", route = "replica" (the same replica, chosen by the router)
#   routed_primary   cluster "main", route = "primary" (the primary)
# For each database in turn, interleaved, ROUNDS times: pgbench -S -n -c 8 -j 8 -T DURATION
# -M simple, then EXT_ROUNDS times with -M extended (the order of the databases reversed
# from one round to the next). Reported per run: tps and pgrouter's CPU
# (utime + stime of the whole process from /proc/PID/stat, all threads, health checker
# included) divided by the transactions of the run, and the ratio to plain's figure for
# the same round and protocol.
# SYSCALLS=1 also counts pgrouter's system calls per transaction (perf stat on the
# raw_syscalls:sys_enter tracepoint; deterministic where the CPU figure is noisy, but the
# tracing itself adds CPU, so compare CPU figures only between runs with the same setting).
# Environment: DURATION (15 s), ROUNDS (2), EXT_ROUNDS (1), CLIENTS (8), POOL_SIZE (8), SYSCALLS (0), PGROUTER_BIN
# (copied to the work directory first, so a concurrent rebuild does not disturb the run),
# BENCH_TIMEOUT (whole run, s; default from the above), BENCH_OUT (copy of the table).
# Every process started here is stopped by pid (PostgreSQL by pg_ctl -D) at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-2}
EXT_ROUNDS=${EXT_ROUNDS:-1}
SYSCALLS=${SYSCALLS:-0}
CLIENTS=${CLIENTS:-8}
POOL_SIZE=${POOL_SIZE:-8}
DBS="plain routed_replica routed_primary"
[ "$DURATION" -ge 4 ] || die "DURATION must be at least 4 (seconds)"
# 3 databases x (ROUNDS + EXT_ROUNDS) runs, plus setup, warm-up and teardown.
BENCH_TIMEOUT=${BENCH_TIMEOUT:-$((3 * (ROUNDS + EXT_ROUNDS) * (DURATION + 2) + 75))}

ensure_packages postgresql-15 postgresql-client-15 python3
[ -x "$PGROUTER_BIN" ] || die "$PGROUTER_BIN missing (build it first: cmake --build build)"
if [ "$SYSCALLS" = 1 ] && ! perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
  warn "perf cannot count raw_syscalls:sys_enter here (install linux-perf, run as root): SYSCALLS=0"
  SYSCALLS=0
fi

WORK=$(mktemp -d /tmp/pgrouter-routing-bench.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" -eq 0 ] && chown "$PG_OS_USER:$PG_OS_USER" "$WORK"
ROUTER_PID=
BG=
PERF_PID=
NAP=
WATCHDOG=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$BG" ] && stop_pid "$BG" 5
  [ -n "$PERF_PID" ] && stop_pid "$PERF_PID" 5
  [ -n "$NAP" ] && kill "$NAP" 2>/dev/null || true
  [ -n "$ROUTER_PID" ] && stop_pid "$ROUTER_PID" 10
  pg_stop "$WORK/replica"
  pg_stop "$WORK/primary"
  [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'warn "stopped (signal or BENCH_TIMEOUT=${BENCH_TIMEOUT}s)"; exit 143' TERM
# The watchdog takes its sleep with it when cleanup stops it.
(
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$BENCH_TIMEOUT" &
  s=$!
  wait "$s" && kill -TERM $$
) >/dev/null 2>&1 &
WATCHDOG=$!
# nap SECONDS: a sleep that a signal interrupts at once (the trap runs during wait).
nap() {
  sleep "$1" &
  NAP=$!
  wait "$NAP" || true
  NAP=
}

# --------------------------------------------------------------------------- PostgreSQL
PRIMARY_PORT=$(free_port 20000 30000)
log "PostgreSQL 15 primary on $PRIMARY_PORT, pgbench -i -s 1"
mkdir -p "$WORK/sock"
[ "$(id -u)" -eq 0 ] && chown "$PG_OS_USER:$PG_OS_USER" "$WORK/sock"
pg_init "$WORK/primary" "$PRIMARY_PORT" "$WORK/sock" "max_connections = 100" "shared_buffers = '128MB'" \
  "fsync = off" "synchronous_commit = off" "full_page_writes = off" "wal_level = replica" \
  "max_wal_senders = 4" "hot_standby = on"
printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n' |
  as_postgres tee "$WORK/primary/pg_hba.conf" >/dev/null
pg_start "$WORK/primary" "$WORK/primary.log"
as_postgres "$PG_BINDIR/createdb" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres bench
as_postgres "$PG_BINDIR/pgbench" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -i -q -s 1 bench >/dev/null 2>&1

REPLICA_PORT=$(free_port 20000 30000)
while [ "$REPLICA_PORT" = "$PRIMARY_PORT" ]; do REPLICA_PORT=$(free_port 20000 30000); done
log "streaming replica on $REPLICA_PORT (pg_basebackup -c fast -R)"
as_postgres "$PG_BINDIR/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$WORK/replica" \
  -c fast -R -X stream >/dev/null
echo "port = $REPLICA_PORT" | as_postgres tee -a "$WORK/replica/postgresql.conf" >/dev/null
pg_start "$WORK/replica" "$WORK/replica.log"
for ((i = 0; i < 100; i++)); do
  r=$(as_postgres "$PG_BINDIR/psql" -X -At -h 127.0.0.1 -p "$REPLICA_PORT" -U postgres -d bench \
    -c 'SELECT pg_is_in_recovery() AND count(*) = 100000 FROM pgbench_accounts' 2>/dev/null || true)
  [ "$r" = t ] && break
  sleep 0.2
done
[ "$r" = t ] || die "the replica is not serving the pgbench tables"

# --------------------------------------------------------------------------- pgrouter
cp "$PGROUTER_BIN" "$WORK/pgrouter"
ROUTER_PORT=$(free_port 20000 30000)
while [ "$ROUTER_PORT" = "$PRIMARY_PORT" ] || [ "$ROUTER_PORT" = "$REPLICA_PORT" ]; do
  ROUTER_PORT=$(free_port 20000 30000)
done
printf '"postgres" ""\n' >"$WORK/userlist.txt"
cat >"$WORK/pgrouter.toml" <<EOF
[pgrouter]
listen_addr = "127.0.0.1"
listen_port = $ROUTER_PORT
unix_socket_dir = ""
auth_type = "trust"
auth_file = "$WORK/userlist.txt"
pool_mode = "transaction"
default_pool_size = $POOL_SIZE
max_client_conn = 200
log_connections = false
log_disconnections = false
workers = 1

[tls]
server_tls_sslmode = "disable"

[clusters.main]
primary = "127.0.0.1:$PRIMARY_PORT"
replicas = ["127.0.0.1:$REPLICA_PORT"]
health_check_period = 1.0

[databases.plain]
host = "127.0.0.1"
port = $REPLICA_PORT
dbname = "bench"

[databases.routed_replica]
cluster = "main"
route = "replica"
dbname = "bench"

[databases.routed_primary]
cluster = "main"
route = "primary"
dbname = "bench"
EOF
"$WORK/pgrouter" --check "$WORK/pgrouter.toml" >/dev/null || die "pgrouter --check rejected the configuration"
"$WORK/pgrouter" "$WORK/pgrouter.toml" >"$WORK/pgrouter.log" 2>&1 &
ROUTER_PID=$!
wait_port "$ROUTER_PORT" 15 "$ROUTER_PID" || { tail -n 20 "$WORK/pgrouter.log" >&2; die "pgrouter did not start"; }
log "pgrouter up on $ROUTER_PORT (pid $ROUTER_PID, workers = 1)"

# Each database must reach the backend it is meant to (the cluster's once the health
# check has classified both backends).
where() {
  PGCONNECT_TIMEOUT=5 timeout 10 "$PG_BINDIR/psql" -X -At -h 127.0.0.1 -p "$ROUTER_PORT" -U postgres -d "$1" \
    -c 'SELECT inet_server_port() || CASE WHEN pg_is_in_recovery() THEN $$ replica$$ ELSE $$ primary$$ END' \
    2>/dev/null || true
}
declare -A WANT=([plain]="$REPLICA_PORT replica" [routed_replica]="$REPLICA_PORT replica"
  [routed_primary]="$PRIMARY_PORT primary")
for db in $DBS; do
  for ((i = 0; i < 50; i++)); do
    got=$(where "$db")
    [ "$got" = "${WANT[$db]}" ] && break
    sleep 0.3
  done
  [ "$got" = "${WANT[$db]}" ] || die "$db reaches '${got:-nothing}', expected '${WANT[$db]}'"
  log "$db -> $got"
done

# --------------------------------------------------------------------------- runs
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# Context switches of all of pgrouter's threads (each one a sleep or a preemption): per
# transaction, how well the event loop batches; it moves with the CPU figure.
ctx_switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/_ctxt_switches:/ { n += $2 } END { print n + 0 }'; }

# A noise indicator ("other load"): CPU the rest of the machine used during the run,
# in % of all CPUs: user + nice + system from /proc/stat minus the live processes of
# this benchmark (pgrouter, both PostgreSQL instances and their children, pgbench),
# sampled from 1 s after the start of each run to 1 s before its end.
cat >"$WORK/others.py" <<'PYEOF'
import os, sys
ours_pids = {int(a) for a in sys.argv[1:]}
f = open("/proc/stat").readline().split()
total = int(f[1]) + int(f[2]) + int(f[3])
procs = {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        st = open(f"/proc/{d}/stat").read()
        cmd = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    rest = st[st.rindex(")") + 2:].split()
    procs[int(d)] = (int(rest[1]), int(rest[11]) + int(rest[12]), cmd)
def ours(pid, depth=0):
    if pid in ours_pids:
        return True
    p = procs.get(pid)
    return p is not None and depth < 2 and p[0] > 1 and ours(p[0], depth + 1)
pgbench = os.environ["PG_BINDIR"].encode() + b"/pgbench"
port = os.environ["ROUTER_PORT"].encode()
mine = sum(t for pid, (_, t, cmd) in procs.items() if ours(pid) or (cmd[0] == pgbench and port in cmd))
print(total, mine)
PYEOF
others() {
  ROUTER_PORT=$ROUTER_PORT PG_BINDIR=$PG_BINDIR /usr/bin/python3 "$WORK/others.py" "$ROUTER_PID" \
    "$(head -n 1 "$WORK/primary/postmaster.pid")" "$(head -n 1 "$WORK/replica/postmaster.pid")"
}

pgb_start() {  # db proto seconds outfile: pgbench in the background, its pid in BG
  PGCONNECT_TIMEOUT=10 timeout -k 5 $(($3 + 30)) "$PG_BINDIR/pgbench" -h 127.0.0.1 -p "$ROUTER_PORT" -U postgres \
    -S -n -c "$CLIENTS" -j "$CLIENTS" -T "$3" -M "$2" "$1" >"$4" 2>&1 &
  BG=$!
}
pgb_wait() {  # the exit status of the pgbench started last
  local rc=0
  wait "$BG" || rc=$?
  BG=
  return "$rc"
}

# Fill every pool once (8 server connections each), so no run pays for server logins.
for db in $DBS; do
  pgb_start "$db" simple 2 "$WORK/warmup.out"
  pgb_wait || die "warm-up on $db failed: $(tail -n 3 "$WORK/warmup.out")"
done

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
measure() {  # round db proto
  local round=$1 db=$2 proto=$3 out="$WORK/pgbench.out" t0 t1 c0 c1 rc=0
  kill -0 "$ROUTER_PID" 2>/dev/null || die "pgrouter died; its log: $(tail -n 5 "$WORK/pgrouter.log")"
  t0=$(cpu_ticks "$ROUTER_PID") c0=$(ctx_switches "$ROUTER_PID")
  if [ "$SYSCALLS" = 1 ]; then
    rm -f "$WORK/perf.out"
    perf stat -x, -e raw_syscalls:sys_enter -p "$ROUTER_PID" -o "$WORK/perf.out" &
    PERF_PID=$!
  fi
  pgb_start "$db" "$proto" "$DURATION" "$out"
  local o0 o1 w0 w1 load
  nap 1
  o0=$(others) w0=$(date +%s.%N)
  nap $((DURATION - 2))
  o1=$(others) w1=$(date +%s.%N)
  pgb_wait || rc=$?
  if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" || true
    PERF_PID=
  fi
  t1=$(cpu_ticks "$ROUTER_PID" 2>/dev/null || echo "$t0") c1=$(ctx_switches "$ROUTER_PID")
  load=$(awk -v a="$o0" -v b="$o1" -v w0="$w0" -v w1="$w1" -v hz="$CLK_TCK" -v n="$NCPU" 'BEGIN {
    split(a, x, " "); split(b, y, " "); v = ((y[1] - x[1]) - (y[2] - x[2])) * 100 / ((w1 - w0) * hz * n)
    printf "%.0f", v < 0 ? 0 : v }')
  local tx tps failed
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
  if [ "$rc" -ne 0 ] || [ -z "$tx" ] || [ "$tx" -eq 0 ]; then
    warn "$db $proto: pgbench exit $rc: $(tail -n 2 "$out" | tr '\n' ' ')"
    printf '%s\t%s\t%s\tFAILED\t\t\t\n' "$round" "$db" "$proto" >>"$RESULTS"
    return 0
  fi
  local us cs sc=-
  us=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$tx" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
  cs=$(awk -v d=$((c1 - c0)) -v n="$tx" 'BEGIN { printf "%.2f", d / n }')
  if [ "$SYSCALLS" = 1 ] && [ -s "$WORK/perf.out" ]; then
    sc=$(awk -F, -v n="$tx" '$3 == "raw_syscalls:sys_enter" && $1 ~ /^[0-9]+$/ { printf "%.2f", $1 / n }' "$WORK/perf.out")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$db" "$proto" "$tps" "$us" "$tx" "${failed:-0}" "$load" \
    "$cs" "${sc:--}" >>"$RESULTS"
  log "round $round $db $proto: tps $tps, $us us pgrouter CPU/tx ($((t1 - t0)) ticks, $tx tx), $cs context switches/tx, ${sc:--} syscalls/tx, other load $load %"
}

order=$DBS
reverse() { tr ' ' '\n' <<<"$1" | tac | tr '\n' ' '; }
for ((r = 1; r <= ROUNDS; r++)); do
  for db in $order; do measure "$r" "$db" simple; done
  order=$(reverse "$order")  # alternate the order between rounds
done
for ((r = 1; r <= EXT_ROUNDS; r++)); do
  for db in $order; do measure "x$r" "$db" extended; done
  order=$(reverse "$order")
done
kill -0 "$ROUTER_PID" 2>/dev/null || die "pgrouter died; its log: $(tail -n 5 "$WORK/pgrouter.log")"

/usr/bin/python3 - "$RESULTS" "$DURATION" "$CLIENTS" "$POOL_SIZE" <<'EOF' | tee "$WORK/table.md"
import sys, collections
path, duration, clients, pool = sys.argv[1:5]
rows = [l.rstrip("\n").split("\t") for l in open(path)]
plain = {(r[0], r[2]): r for r in rows if r[1] == "plain" and r[3] != "FAILED"}
print(f"\npgbench -S -n -c {clients} -j {clients} -T {duration} through pgrouter (workers = 1, transaction "
      f"pooling, pool size {pool}); CPU = pgrouter's utime + stime / transactions; ratio = database / plain "
      f"(same round and protocol); ctx sw/tx, syscalls/tx = pgrouter's context switches and system calls (SYSCALLS=1) per transaction; other load = CPU used "
      f"by the rest of the machine during the run, % of all CPUs\n")
print("| round | database | backend | protocol | tps | pooler us/tx | tps ratio | us/tx ratio | ctx sw/tx | syscalls/tx | other load % |")
print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
backend = {"plain": "replica", "routed_replica": "replica", "routed_primary": "primary"}
sums = collections.defaultdict(list)
for r in rows:
    rnd, db, proto = r[:3]
    if r[3] == "FAILED":
        print(f"| {rnd} | {db} | {backend[db]} | {proto} | FAILED | | | | | | |")
        continue
    tps, us = float(r[3]), float(r[4])
    p = plain.get((rnd, proto))
    tr = f"{tps / float(p[3]):.2f}" if p else "-"
    ur = f"{us / float(p[4]):.2f}" if p else "-"
    print(f"| {rnd} | {db} | {backend[db]} | {proto} | {tps:.0f} | {us:.1f} | {tr} | {ur} | {r[8]} | {r[9]} | {r[7]} |")
    sums[(proto, db)].append((tps, us))
print("\nMeans per protocol (all rounds):\n")
print("| protocol | database | runs | tps | pooler us/tx | us/tx sd | us/tx ratio vs plain |")
print("|---|---|---:|---:|---:|---:|---:|")
for (proto, db), v in sorted(sums.items(), key=lambda kv: (kv[0][0] != "simple", kv[0][0], list(backend).index(kv[0][1]))):
    t = sum(x for x, _ in v) / len(v)
    u = sum(x for _, x in v) / len(v)
    sd = (sum((x - u) ** 2 for _, x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else None
    pv = sums.get((proto, "plain"))
    pu = sum(x for _, x in pv) / len(pv) if pv else None
    print(f"| {proto} | {db} | {len(v)} | {t:.0f} | {u:.1f} | {'-' if sd is None else f'{sd:.1f}'} | {'-' if not pu else f'{u / pu:.2f}'} |")
EOF
if [ -n "${BENCH_OUT:-}" ]; then cp "$WORK/table.md" "$BENCH_OUT"; fi
