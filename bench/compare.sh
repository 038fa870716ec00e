#!/usr/bin/env bash
# pgrouter vs PgBouncer 1.18 on the same machine, same PostgreSQL 15, same pool.
#   bench/compare.sh        pgbench -S and TPC-B, -M simple/extended, 10/100/1000 clients
#   bench/compare.sh idle   RSS per idle client, 10,000 idle clients
# Environment: DURATION (15 s per measured run), WARMUP (2 s), CLIENTS ("10 100 1000"),
# SCALE (10), POOL_SIZE (20), IDLE_CLIENTS (10000), IDLE_QUERY (0; 1 = each idle client runs one query first),
# POOLERS ("pgbouncer pgrouter"),
# PGROUTER_WORKERS (0 = one per CPU), BENCH_TIMEOUT (whole run, s), BENCH_OUT (copy of the table).
# See bench/README.md. Every process started here is stopped by pid at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

MODE=${1:-tps}
case "$MODE" in tps | idle) ;; *) die "usage: bench/compare.sh [tps|idle]" ;; esac
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-2}
CLIENTS=${CLIENTS:-"10 100 1000"}
SCRIPTS=${SCRIPTS:-"select-only tpcb"}
PROTOCOLS=${PROTOCOLS:-"simple extended"}
SCALE=${SCALE:-10}
POOL_SIZE=${POOL_SIZE:-20}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
POOLERS=${POOLERS:-"pgbouncer pgrouter"}
PGROUTER_WORKERS=${PGROUTER_WORKERS:-0}
# A/B of two pgrouter builds: POOLERS="pgrouter pgrouter-b" PGROUTER_BIN_B=/path/to/other/pgrouter.
PGROUTER_BIN_B=${PGROUTER_BIN_B:-}
# ROUNDS=N measures each point N times (the poolers' order alternating); tables give medians.
ROUNDS=${ROUNDS:-1}
# SYSCALLS=1: also count each pooler's system calls per transaction (perf, as root).
SYSCALLS=${SYSCALLS:-0}
# PROFILE=DIR: also record each measured run's profile of each pooler, user and kernel
# (perf record -g, as root) into DIR/<pooler>-<clients>-<script>-<protocol>.data.
PROFILE=${PROFILE:-}
# PROFILE_CALLGRAPH: perf's call-graph option for PROFILE (default: frame pointers, -g; for
# exact user-space callers, "--call-graph=dwarf,16384", which costs much more while recording).
PROFILE_CALLGRAPH=${PROFILE_CALLGRAPH:--g}
SYSCALL_EVENTS=$(for s in recvfrom sendto read write readv writev recvmsg sendmsg epoll_wait epoll_ctl futex \
  ioctl accept4 close timerfd_settime; do printf 'syscalls:sys_enter_%s,' "$s"; done)
SYSCALL_EVENTS=${SYSCALL_EVENTS%,}
MAX_CLIENT_CONN=$((IDLE_CLIENTS + 1100))
if [ -z "${BENCH_TIMEOUT:-}" ]; then
  nclients=$(wc -w <<<"$CLIENTS")
  BENCH_TIMEOUT=$((600 + nclients * 8 * ROUNDS * (DURATION + WARMUP + 30)))
fi

ensure_packages postgresql-15 postgresql-client-15 pgbouncer python3
if [[ " $POOLERS " == *" pgrouter "* ]] && [ ! -x "$PGROUTER_BIN" ]; then
  ensure_packages "${REQUIRED_PACKAGES[@]}"
  build_pgrouter || warn "build failed: pgrouter will be reported as failed"
fi

# File descriptors: 1000 pgbench clients, or 10,000 idle clients, on both sides.
hard=$(ulimit -Hn)
want=$((MAX_CLIENT_CONN * 2 + 1000))
[ "$want" -lt 10000 ] && want=10000
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want=$hard; fi
ulimit -n "$want" || warn "could not raise the fd limit to $want"
if [ "$MODE" = idle ] && [ "$(ulimit -n)" -lt $((IDLE_CLIENTS + 200)) ]; then
  IDLE_CLIENTS=$(($(ulimit -n) - 200))
  warn "fd limit $(ulimit -n): only $IDLE_CLIENTS idle clients"
fi

WORK=$(mktemp -d /tmp/pgrouter-bench.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" -eq 0 ] && chown "$PG_OS_USER:$PG_OS_USER" "$WORK"
declare -A PID PORT STATUS FAILS
WATCHDOG=
BG=

bench_traps "$BENCH_TIMEOUT"

# --------------------------------------------------------------------------- PostgreSQL
PGPORT=$(free_port 20000 30000)
log "PostgreSQL 15 on $PGPORT (max_connections 300), pgbench -i -s $SCALE"
pg_init "$WORK/pg" "$PGPORT" "$WORK" "max_connections = 300" "shared_buffers = '256MB'" "fsync = off" \
  "synchronous_commit = off" "full_page_writes = off" "max_wal_size = '2GB'" "checkpoint_timeout = '30min'"
printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' | as_postgres tee "$WORK/pg/pg_hba.conf" >/dev/null
pg_start "$WORK/pg" "$WORK/postgresql.log"
as_postgres "$PG_BINDIR/createdb" -h "$WORK" -p "$PGPORT" -U postgres bench
as_postgres "$PG_BINDIR/pgbench" -h "$WORK" -p "$PGPORT" -U postgres -i -q -s "$SCALE" bench >/dev/null 2>&1

# --------------------------------------------------------------------------- poolers
printf '"postgres" ""\n' >"$WORK/userlist.txt"

write_pgbouncer_ini() {
  bench_pgbouncer_ini "${PORT[pgbouncer]}" "$PGPORT" "$WORK/userlist.txt" "$POOL_SIZE" "$MAX_CLIENT_CONN" \
    >"$WORK/pgbouncer.ini"
}

write_pgrouter_toml() {  # name
  bench_pgrouter_toml "${PORT[$1]}" "$PGPORT" "$WORK/userlist.txt" "$POOL_SIZE" "$MAX_CLIENT_CONN" \
    "$PGROUTER_WORKERS" >"$WORK/$1.toml"
}

start_pooler() {
  local name=$1
  PORT[$name]=$(free_port 20000 30000)
  case "$name" in
    pgbouncer)
      write_pgbouncer_ini
      [ "$(id -u)" -eq 0 ] && chown "$PG_OS_USER" "$WORK/pgbouncer.ini" "$WORK/userlist.txt"
      "${AS_PG_EXEC[@]}" "$PGBOUNCER_BIN" "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.log" 2>&1 &
      ;;
    pgrouter | pgrouter-b)
      local bin=$PGROUTER_BIN
      [ "$name" = pgrouter-b ] && bin=$PGROUTER_BIN_B
      if [ ! -x "$bin" ]; then
        STATUS[$name]="failed: ${bin:-PGROUTER_BIN_B} missing"
        warn "${STATUS[$name]}"
        return 0
      fi
      write_pgrouter_toml "$name"
      "$bin" "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
      ;;
    *) die "unknown pooler $name" ;;
  esac
  PID[$name]=$!
  if wait_port "${PORT[$name]}" 15 "${PID[$name]}"; then
    STATUS[$name]=ok
    log "$name up on ${PORT[$name]} (pid ${PID[$name]})"
  else
    STATUS[$name]="failed: did not start"
    warn "$name did not start; its log:"
    tail -n 20 "$WORK/$name.log" >&2 || true
    stop_pid "${PID[$name]}" 5
    unset "PID[$name]"
  fi
}

alive() { [ "${STATUS[$1]}" = ok ] && kill -0 "${PID[$1]}" 2>/dev/null; }

cpu_ticks() {  # "utime stime" of the whole process (all threads)
  awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$1/stat"
}

ctx_switches() {  # "voluntary involuntary" context switches, summed over the process's threads
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^voluntary_ctxt_switches:/ { v += $2 } /^nonvoluntary_ctxt_switches:/ { n += $2 } END { print v + 0, n + 0 }'
}

rss_kb() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

for p in $POOLERS; do start_pooler "$p"; done
CLK_TCK=$(getconf CLK_TCK)

# --------------------------------------------------------------------------- tps mode
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

run_pgbench() {  # pooler clients script proto seconds outfile
  local name=$1 c=$2 script=$3 proto=$4 secs=$5 out=$6 flags=()
  [ "$script" = select-only ] && flags+=(-S)
  PGCONNECT_TIMEOUT=10 timeout -k 5 $((secs + 60)) "$PG_BINDIR/pgbench" -h 127.0.0.1 -p "${PORT[$name]}" -U postgres -n \
    -c "$c" -j 2 -T "$secs" -M "$proto" "${flags[@]}" bench >"$out" 2>&1
}

# A failed run is reported and the next one tried; after two failures in a row
# the pooler is given up for the rest of the run, so a hung pooler costs minutes, not hours.
record_failure() {  # pooler clients script proto why
  local name=$1
  warn "$name c=$2 $3 $4: $5"
  FAILS[$name]=$((${FAILS[$name]:-0} + 1))
  if ! kill -0 "${PID[$name]:-0}" 2>/dev/null; then
    STATUS[$name]="failed: process died"
  elif [ "${FAILS[$name]}" -ge 2 ]; then
    STATUS[$name]="failed: two runs in a row failed (last: $5)"
  fi
  printf '%s\t%s\t%s\t%s\tFAILED\t\t\t\t%s\n' "$name" "$2" "$3" "$4" "$5" >>"$RESULTS"
}

measure() {  # pooler clients script proto
  local name=$1 c=$2 script=$3 proto=$4 out="$WORK/pgbench.out" rc=0
  if ! alive "$name"; then
    [ "${STATUS[$name]}" = ok ] && STATUS[$name]="failed: process died"
    printf '%s\t%s\t%s\t%s\tFAILED\t\t\t\t%s\n' "$name" "$c" "$script" "$proto" "${STATUS[$name]}" >>"$RESULTS"
    return 0
  fi
  if ! run_pgbench "$name" "$c" "$script" "$proto" "$WARMUP" "$WORK/warmup.out"; then
    record_failure "$name" "$c" "$script" "$proto" "warm-up failed: $(tail -n 2 "$WORK/warmup.out" | tr '\n' ' ')"
    return 0
  fi
  local pid=${PID[$name]} t0 t1 rss
  t0=$(cpu_ticks "$pid")
  local cs0 cs1
  cs0=$(ctx_switches "$pid")
  local perf_pid=
  if [ "$SYSCALLS" = 1 ]; then
    perf stat -x, -e "$SYSCALL_EVENTS" -p "$pid" -o "$WORK/perf.$name.out" &
    perf_pid=$!
  fi
  local prof_pid=
  if [ -n "$PROFILE" ]; then
    mkdir -p "$PROFILE"
    perf record -q $PROFILE_CALLGRAPH -F 2000 -p "$pid" -o "$PROFILE/$name-$c-$script-$proto.data" >/dev/null 2>&1 &
    prof_pid=$!
  fi
  run_pgbench "$name" "$c" "$script" "$proto" "$DURATION" "$out" &
  BG=$!
  sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')"
  rss=$(rss_kb "$pid" 2>/dev/null || echo 0)   # under load, all clients connected
  wait "$BG" || rc=$?
  BG=
  t1=$(cpu_ticks "$pid" 2>/dev/null || echo "$t0")
  cs1=$(ctx_switches "$pid")
  local u0=${t0% *} s0=${t0#* } u1=${t1% *} s1=${t1#* }
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" || true
  fi
  if [ -n "$prof_pid" ]; then
    kill -INT "$prof_pid" 2>/dev/null || true
    wait "$prof_pid" || true
  fi
  local tx tps lat failed
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out")
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
  if [ "$rc" -ne 0 ] || [ -z "$tx" ] || [ "$tx" -eq 0 ] || [ -z "$tps" ]; then
    record_failure "$name" "$c" "$script" "$proto" "pgbench exit $rc: $(tail -n 2 "$out" | tr '\n' ' ')"
    return 0
  fi
  FAILS[$name]=0
  local cpu_us user_us sys_us
  per_tx() { awk -v d="$1" -v hz="$CLK_TCK" -v n="$tx" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }'; }
  cpu_us=$(per_tx $((u1 - u0 + s1 - s0)))
  user_us=$(per_tx $((u1 - u0)))
  sys_us=$(per_tx $((s1 - s0)))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$c" "$script" "$proto" "$tps" "$lat" "$cpu_us" \
    "$rss" "failed=${failed:-0}" "$user_us" "$sys_us" >>"$RESULTS"
  log "$name c=$c $script $proto: tps $tps, latency $lat ms, $cpu_us us CPU/tx (user $user_us, system $sys_us), RSS $((rss / 1024)) MB," \
    "context switches/tx $(awk -v a="$cs0" -v b="$cs1" -v n="$tx" 'BEGIN { split(a, x, " "); split(b, y, " ")
      printf "voluntary %.2f, involuntary %.2f", (y[1] - x[1]) / n, (y[2] - x[2]) / n }')"
  if [ -n "$perf_pid" ] && [ -s "$WORK/perf.$name.out" ]; then
    log "$name c=$c $script $proto system calls per transaction: $(awk -F, -v n="$tx" '$1 ~ /^[0-9]+$/ && $1 > 0 {
      sub(/^syscalls:sys_enter_/, "", $3); printf "%s %.2f  ", $3, $1 / n }' "$WORK/perf.$name.out")"
  fi
}

if [ "$MODE" = tps ]; then
  i=0
  for c in $CLIENTS; do
    for script in $SCRIPTS; do
      for proto in $PROTOCOLS; do
        for ((round = 0; round < ROUNDS; round++)); do
          order=$POOLERS
          # Alternate which pooler goes first, so drift (checkpoints, caches) hits both alike.
          if [ $((i % 2)) -eq 1 ]; then order=$(tr ' ' '\n' <<<"$POOLERS" | tac | tr '\n' ' '); fi
          for p in $order; do measure "$p" "$c" "$script" "$proto"; done
          i=$((i + 1))
        done
      done
    done
  done
  /usr/bin/python3 - "$RESULTS" "$DURATION" "$POOL_SIZE" "$PGROUTER_WORKERS" <<'EOF' | tee "$WORK/table.md"
import sys, collections, statistics
path, duration, pool, workers = sys.argv[1:5]
runs = collections.OrderedDict()
for line in open(path):
    f = line.rstrip("\n").split("\t")
    name, c, script, proto = f[:4]
    runs.setdefault((c, script, proto), {}).setdefault(name, []).append(f[4:])
def median_row(rs):
    # One row per pooler and point: the median of each column over the rounds that
    # did not fail (a failure is shown only if every round failed).
    ok = [r for r in rs if r and r[0] != "FAILED"]
    if not ok:
        return rs[-1]
    out = list(ok[0])
    for i in (0, 1, 2, 3, 5, 6):
        try:
            out[i] = str(statistics.median(float(r[i]) for r in ok))
        except (ValueError, IndexError):
            pass
    return out
rows = collections.OrderedDict((k, {n: median_row(rs) for n, rs in by.items()}) for k, by in runs.items())
rounds = max((len(rs) for by in runs.values() for rs in by.values()), default=1)
def num(r, i):
    try:
        return float(r[i])
    except (TypeError, ValueError, IndexError):
        return None
def cell(v, fmt):
    return "FAILED" if v is None else fmt.format(v)
def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"
if any("pgbouncer" in by for by in rows.values()):
    print(f"\npgbench, transaction pooling, pool_size {pool}, {duration} s per run, -j 2; "
          f"pgrouter workers = {workers} (0 = one per CPU); ratio = pgrouter / PgBouncer\n")
    print("| clients | script | protocol | tps PgBouncer | tps pgrouter | ratio | latency ms PgBouncer | latency ms pgrouter "
          "| ratio | CPU us/tx PgBouncer | CPU us/tx pgrouter | ratio | RSS MB PgBouncer | RSS MB pgrouter | ratio |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (c, script, proto), by in rows.items():
        b, r = by.get("pgbouncer"), by.get("pgrouter")
        vals = []
        for i, fmt in ((0, "{:.0f}"), (1, "{:.2f}"), (2, "{:.1f}"), (3, "{:.1f}")):
            vb = num(b, i) if b else None
            vr = num(r, i) if r else None
            if i == 3:
                vb = vb / 1024 if vb is not None else None
                vr = vr / 1024 if vr is not None else None
            vals += [cell(vb, fmt), cell(vr, fmt), ratio(vr, vb)]
        print(f"| {c} | {script} | {proto} | " + " | ".join(vals) + " |")
    print("\nCPU per transaction split into user and system (kernel) time, us/tx. The last column is the floor\n"
          "of the CPU ratio: what pgrouter / PgBouncer would be if pgrouter spent no user time at all.\n")
    print("| clients | script | protocol | PgBouncer user | PgBouncer system | pgrouter user | pgrouter system "
          "| pgrouter user / PgBouncer user | pgrouter system / PgBouncer user+system |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for (c, script, proto), by in rows.items():
        b, r = by.get("pgbouncer"), by.get("pgrouter")
        bu, bs = (num(b, 5), num(b, 6)) if b else (None, None)
        ru, rs = (num(r, 5), num(r, 6)) if r else (None, None)
        floor = ratio(rs, bu + bs) if bu is not None and bs is not None else "-"
        print(f"| {c} | {script} | {proto} | {cell(bu, '{:.1f}')} | {cell(bs, '{:.1f}')} | {cell(ru, '{:.1f}')} "
              f"| {cell(rs, '{:.1f}')} | {ratio(ru, bu)} | {floor} |")
if any("pgrouter-b" in by for by in rows.values()):
    print(f"\nA/B of two pgrouter builds (A = PGROUTER_BIN, B = PGROUTER_BIN_B); "
          f"{'medians of ' + str(rounds) + ' rounds' if rounds > 1 else 'one round'}; ratio = B / A\n")
    print("| clients | script | protocol | tps A | tps B | ratio | CPU us/tx A | CPU us/tx B | ratio "
          "| user A | user B | system A | system B | B cheaper in rounds |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (c, script, proto), by in rows.items():
        a, b = by.get("pgrouter"), by.get("pgrouter-b")
        va = [num(a, i) if a else None for i in (0, 2, 5, 6)]
        vb = [num(b, i) if b else None for i in (0, 2, 5, 6)]
        pairs = list(zip(runs[(c, script, proto)].get("pgrouter", []), runs[(c, script, proto)].get("pgrouter-b", [])))
        wins = sum(1 for x, y in pairs if num(x, 2) is not None and num(y, 2) is not None and num(y, 2) < num(x, 2))
        print(f"| {c} | {script} | {proto} | {cell(va[0], '{:.0f}')} | {cell(vb[0], '{:.0f}')} | {ratio(vb[0], va[0])} "
              f"| {cell(va[1], '{:.1f}')} | {cell(vb[1], '{:.1f}')} | {ratio(vb[1], va[1])} "
              f"| {cell(va[2], '{:.1f}')} | {cell(vb[2], '{:.1f}')} | {cell(va[3], '{:.1f}')} | {cell(vb[3], '{:.1f}')} "
              f"| {wins} of {len(pairs)} |")
notes = [f"{n} c={c} {s} {p}: {v[-1]}" for (c, s, p), by in runs.items() for n, vs in by.items() for v in vs
         if v and v[0] == "FAILED"]
if notes:
    print("\nFailures:\n" + "\n".join(f"- {n}" for n in notes))
EOF
fi

# --------------------------------------------------------------------------- idle mode
if [ "$MODE" = idle ]; then
  cat >"$WORK/idle_clients.py" <<'EOF'
# Open N client connections without blocking, complete the trust login of each
# (startup packet -> AuthenticationOk ... ReadyForQuery), hold them, then close.
import errno, selectors, socket, struct, sys, time
host, port, n, user, db, status_path, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], float(sys.argv[7])
# IDLE_QUERY=1: each client runs one query (SELECT 1) after its login, then idles.
query = sys.argv[8] == "1" if len(sys.argv) > 8 else False
qmsg = b"Q" + struct.pack("!I", 4 + 9) + b"SELECT 1\0"
body = struct.pack("!I", 196608) + b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
startup = struct.pack("!I", len(body) + 4) + body
sel = selectors.DefaultSelector()
ready, failed, inflight, started, errors = [], 0, 0, 0, {}
deadline = time.monotonic() + 120
def fail(s, why):
    global failed, inflight
    failed += 1; inflight -= 1
    errors[why] = errors.get(why, 0) + 1
    try: sel.unregister(s)
    except (KeyError, ValueError): pass
    s.close()
while len(ready) + failed < n and time.monotonic() < deadline:
    while started < n and inflight < 128:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        started += 1; inflight += 1
        err = s.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            fail(s, errno.errorcode.get(err, str(err))); continue
        sel.register(s, selectors.EVENT_WRITE, {"phase": "connect", "buf": b""})
    for key, _ in sel.select(timeout=1.0):
        s, st = key.fileobj, key.data
        if st["phase"] == "connect":
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                fail(s, errno.errorcode.get(err, str(err))); continue
            s.send(startup)
            st["phase"] = "login"
            sel.modify(s, selectors.EVENT_READ, st)
            continue
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError as e:
            fail(s, type(e).__name__); continue
        if not data:
            fail(s, "closed"); continue
        buf = st["buf"] + data
        while len(buf) >= 5:
            t, ln = buf[:1], struct.unpack("!I", buf[1:5])[0]
            if len(buf) < 1 + ln: break
            payload, buf = buf[5:1 + ln], buf[1 + ln:]
            if t == b"E":
                fail(s, "ErrorResponse " + payload[:80].decode(errors="replace")); break
            if t == b"R" and struct.unpack("!I", payload[:4])[0] != 0:
                fail(s, "auth requested (not trust)"); break
            if t == b"Z":
                if query and not st.get("queried"):
                    st["queried"] = True
                    s.send(qmsg)
                    continue
                sel.unregister(s); ready.append(s); inflight -= 1; break
        else:
            st["buf"] = buf
            continue
        st["buf"] = buf
if len(ready) + failed < n:
    errors["timeout"] = n - len(ready) - failed
    failed = n - len(ready)
with open(status_path, "w") as f:
    f.write(f"{len(ready)} {failed} {' '.join(f'{k}:{v}' for k, v in errors.items())}\n")
time.sleep(hold)
for s in ready: s.close()
EOF
  IDLE_RESULTS="$WORK/idle.tsv"
  : >"$IDLE_RESULTS"
  for p in $POOLERS; do
    if ! alive "$p"; then
      printf '%s\tFAILED\t%s\n' "$p" "${STATUS[$p]}" >>"$IDLE_RESULTS"
      continue
    fi
    pid=${PID[$p]}
    # One login first, so that a pooler's first-server-connection setup is not counted.
    PGCONNECT_TIMEOUT=10 timeout 20 "$PG_BINDIR/psql" -X -At -h 127.0.0.1 -p "${PORT[$p]}" -U postgres -d bench -c 'SELECT 1' >/dev/null || true
    sleep 1
    rss0=$(rss_kb "$pid")
    rm -f "$WORK/idle.status"
    log "$p: opening $IDLE_CLIENTS idle clients"
    /usr/bin/python3 "$WORK/idle_clients.py" 127.0.0.1 "${PORT[$p]}" "$IDLE_CLIENTS" postgres bench \
      "$WORK/idle.status" 8 "${IDLE_QUERY:-0}" &
    BG=$!
    for ((t = 0; t < 1500; t++)); do
      [ -s "$WORK/idle.status" ] && break
      kill -0 "$BG" 2>/dev/null || break
      sleep 0.1
    done
    sleep 2
    rss1=$(rss_kb "$pid" 2>/dev/null || echo 0)
    read -r ok bad why <"$WORK/idle.status" || { ok=0; bad=$IDLE_CLIENTS; why="no status"; }
    wait "$BG" || true
    BG=
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$ok" "$bad" "$rss0" "$rss1" "${why:-}" >>"$IDLE_RESULTS"
    log "$p: $ok connected, $bad failed ${why:-}; RSS $rss0 kB -> $rss1 kB"
    sleep 2
  done
  /usr/bin/python3 - "$IDLE_RESULTS" <<'EOF' | tee "$WORK/table.md"
import sys
print("\n| pooler | idle clients | failed | RSS before MB | RSS with clients MB | KB per idle client |")
print("|---|---:|---:|---:|---:|---:|")
per = {}
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if f[1] == "FAILED":
        print(f"| {f[0]} | FAILED | | | | {f[2]} |")
        continue
    name, ok, bad, r0, r1 = f[0], int(f[1]), int(f[2]), int(f[3]), int(f[4])
    kb = (r1 - r0) / ok if ok else None
    per[name] = kb
    print(f"| {name} | {ok} | {bad} | {r0 / 1024:.1f} | {r1 / 1024:.1f} | {'-' if kb is None else f'{kb:.2f}'} |")
if per.get("pgrouter") and per.get("pgbouncer"):
    print(f"\npgrouter / PgBouncer, memory per idle client: {per['pgrouter'] / per['pgbouncer']:.2f}")
EOF
fi

if [ -n "${BENCH_OUT:-}" ]; then cp "$WORK/table.md" "$BENCH_OUT"; fi
