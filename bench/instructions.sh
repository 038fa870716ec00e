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
#
# MEASURE=syscalls counts system calls per transaction instead, the same way (two runs,
# the difference), under strace -f -c, by name: what the kernel is asked to do per
# transaction, which instruction counts leave out.
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
MEASURE=${MEASURE:-instructions}
case "$MEASURE" in
  instructions) TOOL_PACKAGE=valgrind ;;
  syscalls) TOOL_PACKAGE=strace ;;
  *) die "MEASURE must be instructions or syscalls, not '$MEASURE'" ;;
esac

ensure_packages postgresql-15 postgresql-client-15 pgbouncer python3 "$TOOL_PACKAGE"
if [[ " $POOLERS " == *" pgrouter "* ]] && [ ! -x "$PGROUTER_BIN" ]; then
  ensure_packages "${REQUIRED_PACKAGES[@]}"
  build_pgrouter || die "build failed"
fi

WORK=$(mktemp -d /tmp/pgrouter-instr.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" -eq 0 ] && chown "$PG_OS_USER:$PG_OS_USER" "$WORK"
declare -A PID PORT
WATCHDOG=

bench_traps "$BENCH_TIMEOUT"

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
  # strace -c writes its table when the traced pooler exits; the pooler is strace's child.
  [ "$MEASURE" = syscalls ] && vg=(strace -f -c -qq -o "$WORK/cg.$name.strace")
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
  log "$name up on $port under ${vg[0]} (pid ${PID[$name]})"
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
  if [ "$MEASURE" = syscalls ]; then
    # Stop the pooler, not strace (which would detach and leave it running).
    local child
    child=$(pgrep -P "$pid" | head -n 1)
    [ -n "$child" ] && stop_pid "$child" 60
    wait "$pid" 2>/dev/null || true
    unset "PID[$name]"
    [ -s "$WORK/cg.$name.strace" ] || die "$name: no strace output"
    syscall_table "$WORK/cg.$name.strace" >"$WORK/sc.$name.$c.$proto.$tx"
    awk '{ n += $2 } END { print n }' "$WORK/sc.$name.$c.$proto.$tx"
    return
  fi
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

# syscall_table FILE: strace -c's table as "name calls errors" lines.
syscall_table() {
  awk '$1 ~ /^[0-9.]+$/ && $NF != "total" {
         if (NF == 6) print $6, $4, $5; else if (NF == 5) print $5, $4, 0 }' "$1"
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
      detail=-
      if [ "$MEASURE" = syscalls ]; then
        # By name, per transaction (failed calls in brackets: EAGAIN from reads that found nothing).
        detail=$(/usr/bin/python3 - "$WORK/sc.$name.$c.$proto.0" "$WORK/sc.$name.$c.$proto.$TX" "$tx" <<'PYEND'
import sys
def load(path):
    return {f[0]: (int(f[1]), int(f[2])) for f in (l.split() for l in open(path)) if len(f) == 3}
a, b, tx = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
out = []
for k in sorted(set(a) | set(b)):
    calls = (b.get(k, (0, 0))[0] - a.get(k, (0, 0))[0]) / tx
    errs = (b.get(k, (0, 0))[1] - a.get(k, (0, 0))[1]) / tx
    if calls >= 0.01:
        out.append(f"{k} {calls:.2f}" + (f" ({errs:.2f} failed)" if errs >= 0.01 else ""))
print(", ".join(out) or "-")
PYEND
)
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$c" "$proto" "$ir" "$tx" "$detail" >>"$RESULTS"
      log "$name c=$c $SCRIPT $proto: $ir $MEASURE / $tx transactions = $(awk -v a="$ir" -v b="$tx" 'BEGIN { printf "%.2f", a / b }') per transaction"
    done
  done
done

/usr/bin/python3 - "$RESULTS" "$SCRIPT" "$POOLERS" "$MEASURE" <<'EOF'
import sys, collections
path, script, poolers, measure = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4]
rows = collections.OrderedDict()
details = []
for line in open(path):
    name, c, proto, ir, tx, detail = line.rstrip("\n").split("\t")
    rows.setdefault((c, proto), {})[name] = int(ir) / int(tx)
    details.append((c, proto, name, detail))
base = poolers[0]
what = ("User-space instructions per transaction (callgrind)" if measure == "instructions"
        else "System calls per transaction (strace -c)")
print(f"\n{what}, {script}; ratio = each / {base}\n")
print("| clients | protocol | " + " | ".join(poolers) + " | " + " | ".join(f"{p} / {base}" for p in poolers[1:]) + " |")
print("|---:|---|" + "---:|" * (2 * len(poolers) - 1))
for (c, proto), by in rows.items():
    vals = [(f"{by[p]:,.0f}" if measure == "instructions" else f"{by[p]:.2f}") if p in by else "-" for p in poolers]
    ratios = [f"{by[p] / by[base]:.2f}" if p in by and base in by else "-" for p in poolers[1:]]
    print(f"| {c} | {proto} | " + " | ".join(vals + ratios) + " |")
if measure == "syscalls":
    print("\n| clients | protocol | pooler | system calls per transaction, by name |")
    print("|---:|---|---|---|")
    for c, proto, name, detail in details:
        print(f"| {c} | {proto} | {name} | {detail} |")
EOF
