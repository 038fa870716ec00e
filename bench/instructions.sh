#!/usr/bin/env bash
# User-space instructions per transaction of each pooler, counted by valgrind's
# callgrind: unlike CPU time on a shared 2-vCPU machine (which moves by 10-20 % from
# one run to the next), the count barely moves, so a change of a few percent shows.
# It counts the pooler's own instructions (its code, libc, Asio), not the kernel's work.
#
#   bench/instructions.sh
#   CLIENTS="10 100" TX=300 PROTOCOLS="simple extended" bench/instructions.sh
#   POOLERS="pgrouter pgrouter-b" PGROUTER_BIN_B=/tmp/pgrouter-old bench/instructions.sh   # A/B
#
# Each point is two runs of the pooler under callgrind, each from its start to its exit,
# each with the same two pgbench runs (so the same logins): a warm-up (WARMUP_TX
# transactions per client), then BASE_TX per client in one and BASE_TX + TX in the other.
# The difference of the two counts, divided by clients * TX, is the cost of a
# transaction with start-up, logins and shut-down taken out.
# CALLGRIND_KEEP=DIR keeps the measured runs' profiles there (callgrind_annotate reads them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

CLIENTS=${CLIENTS:-"10 100"}
TX=${TX:-300}
WARMUP_TX=${WARMUP_TX:-20}
BASE_TX=${BASE_TX:-10}
SCRIPT=${SCRIPT:-select-only}
PROTOCOLS=${PROTOCOLS:-"simple extended"}
POOLERS=${POOLERS:-"pgbouncer pgrouter"}
POOL_SIZE=${POOL_SIZE:-20}
PGROUTER_WORKERS=${PGROUTER_WORKERS:-0}
PGROUTER_BIN_B=${PGROUTER_BIN_B:-}
CALLGRIND_KEEP=${CALLGRIND_KEEP:-}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-1800}

ensure_packages postgresql-15 postgresql-client-15 pgbouncer python3 valgrind
if [[ " $POOLERS " == *" pgrouter "* ]] && [ ! -x "$PGROUTER_BIN" ]; then
  ensure_packages "${REQUIRED_PACKAGES[@]}"
  build_pgrouter || die "build failed"
fi

WORK=$(mktemp -d /tmp/pgrouter-instr.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" -eq 0 ] && chown "$PG_OS_USER:$PG_OS_USER" "$WORK"
declare -A PID PORT
WATCHDOG=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${!PID[@]}"; do stop_pid "${PID[$p]}" 20; done
  pg_stop "$WORK/pg"
  stop_watchdog
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'warn "stopped (signal or BENCH_TIMEOUT=${BENCH_TIMEOUT}s)"; exit 143' TERM
start_watchdog "$BENCH_TIMEOUT"

PGPORT=$(free_port 20000 30000)
log "PostgreSQL 15 on $PGPORT, pgbench -i -s 1"
pg_init "$WORK/pg" "$PGPORT" "$WORK" "max_connections = 300" "fsync = off" "synchronous_commit = off"
printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' | as_postgres tee "$WORK/pg/pg_hba.conf" >/dev/null
pg_start "$WORK/pg" "$WORK/postgresql.log"
as_postgres "$PG_BINDIR/createdb" -h "$WORK" -p "$PGPORT" -U postgres bench
as_postgres "$PG_BINDIR/pgbench" -h "$WORK" -p "$PGPORT" -U postgres -i -q -s 1 bench >/dev/null 2>&1
printf '"postgres" ""\n' >"$WORK/userlist.txt"
[ "$(id -u)" -eq 0 ] && chown "$PG_OS_USER" "$WORK/userlist.txt"

start_pooler() {  # name
  local name=$1 port
  port=$(free_port 20000 30000)
  PORT[$name]=$port
  local vg=(valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$name.%p")
  case "$name" in
    pgbouncer)
      bench_pgbouncer_ini "$port" "$PGPORT" "$WORK/userlist.txt" "$POOL_SIZE" 2000 >"$WORK/pgbouncer.ini"
      [ "$(id -u)" -eq 0 ] && chown "$PG_OS_USER" "$WORK/pgbouncer.ini"
      "${AS_PG_EXEC[@]}" "${vg[@]}" "$PGBOUNCER_BIN" "$WORK/pgbouncer.ini" >"$WORK/$name.log" 2>&1 &
      ;;
    pgrouter | pgrouter-b)
      local bin=$PGROUTER_BIN
      [ "$name" = pgrouter-b ] && bin=$PGROUTER_BIN_B
      [ -x "$bin" ] || die "$name: ${bin:-PGROUTER_BIN_B} missing"
      bench_pgrouter_toml "$port" "$PGPORT" "$WORK/userlist.txt" "$POOL_SIZE" 2000 "$PGROUTER_WORKERS" \
        >"$WORK/$name.toml"
      "${vg[@]}" "$bin" "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
      ;;
    *) die "unknown pooler $name" ;;
  esac
  PID[$name]=$!
  wait_port "$port" 120 "${PID[$name]}" || { tail -n 20 "$WORK/$name.log" >&2; die "$name did not start"; }
  log "$name up on $port under callgrind (pid ${PID[$name]})"
}

pgbench_run() {  # name clients tx proto
  local flags=()
  [ "$SCRIPT" = select-only ] && flags+=(-S)
  PGCONNECT_TIMEOUT=60 timeout -k 5 900 "$PG_BINDIR/pgbench" -h 127.0.0.1 -p "${PORT[$1]}" -U postgres -n \
    -c "$2" -j 2 -t "$3" -M "$4" "${flags[@]}" bench >"$WORK/pgbench.out" 2>&1 ||
    { tail -n 5 "$WORK/pgbench.out" >&2; die "$1: pgbench failed"; }
}

# count NAME CLIENTS PROTO TX_PER_CLIENT: instructions of one whole run of the pooler.
count() {
  local name=$1 c=$2 proto=$3 tx=$4
  rm -f "$WORK"/cg."$name".*
  start_pooler "$name"
  local pid=${PID[$name]}
  pgbench_run "$name" "$c" "$WARMUP_TX" "$proto"
  pgbench_run "$name" "$c" $((BASE_TX + tx)) "$proto"
  stop_pid "$pid" 60
  unset "PID[$name]"
  local dump
  dump=$(ls "$WORK"/cg."$name".* 2>/dev/null | head -n 1)
  [ -s "$dump" ] || die "$name: no callgrind output"
  if [ "$tx" -gt 0 ] && [ -n "$CALLGRIND_KEEP" ]; then
    mkdir -p "$CALLGRIND_KEEP"
    cp "$dump" "$CALLGRIND_KEEP/$name-$c-$SCRIPT-$proto.callgrind"
  fi
  awk '/^(summary|totals):/ { print $2; exit }' "$dump"
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
for c in $CLIENTS; do
  for proto in $PROTOCOLS; do
    for name in $POOLERS; do
      base=$(count "$name" "$c" "$proto" 0)
      full=$(count "$name" "$c" "$proto" "$TX")
      ir=$((full - base))
      tx=$((c * TX))
      printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$c" "$proto" "$ir" "$tx" >>"$RESULTS"
      log "$name c=$c $SCRIPT $proto: $ir instructions / $tx transactions = $((ir / tx)) per transaction"
    done
  done
done

/usr/bin/python3 - "$RESULTS" "$SCRIPT" "$POOLERS" <<'EOF'
import sys, collections
path, script, poolers = sys.argv[1], sys.argv[2], sys.argv[3].split()
rows = collections.OrderedDict()
for line in open(path):
    name, c, proto, ir, tx = line.split("\t")
    rows.setdefault((c, proto), {})[name] = int(ir) / int(tx)
base = poolers[0]
print(f"\nUser-space instructions per transaction (callgrind), {script}; ratio = each / {base}\n")
print("| clients | protocol | " + " | ".join(poolers) + " | " + " | ".join(f"{p} / {base}" for p in poolers[1:]) + " |")
print("|---:|---|" + "---:|" * (2 * len(poolers) - 1))
for (c, proto), by in rows.items():
    vals = [f"{by[p]:,.0f}" if p in by else "-" for p in poolers]
    ratios = [f"{by[p] / by[base]:.2f}" if p in by and base in by else "-" for p in poolers[1:]]
    print(f"| {c} | {proto} | " + " | ".join(vals + ratios) + " |")
EOF
