#!/usr/bin/env bash
# Write gap and client errors across a primary failover through pgrouter.
#   bench/failover.sh            through pgrouter (Consul discovery, route = "primary")
#   bench/failover.sh direct     baseline without a pooler: each client reconnects straight
#                                to the primary the Consul double announces
#   bench/failover.sh both       direct, then pgrouter (two fresh clusters)
#
# What happens (bench/failover_driver.py): a 3-node PostgreSQL 15 cluster (primary node0,
# streaming replicas node1 and node2; tests/integration/pgcluster.py), a Consul double
# (tests/integration/consul_double.py) announcing node0 as "primary" and the others as
# "replica" in service postgresql-ha, and pgrouter with
#   [clusters.main.discovery] type = "consul" ...   [databases.bench] cluster = "main", route = "primary"
# CLIENTS writers each run single-row INSERT transactions (BEGIN; INSERT ... RETURNING
# inet_server_port(), pg_is_in_recovery(); COMMIT) in a loop for DURATION seconds, on
# one connection, reconnecting 50 ms after a broken one. At FAIL_AT seconds node0 is
# stopped (pg_ctl -m STOP_MODE), the double marks its check critical, node1 is promoted
# (pg_ctl promote -w, after PROMOTE_DELAY), the double tags node1 "primary", node2 is
# re-pointed at node1. Then every commit a client saw acknowledged is looked for on node1.
#
# Reported (a markdown block for bench/RESULTS.md; all times from the writers' start):
#   write gap           last commit acknowledged by node0 -> first acknowledged by node1
#   from the double     first commit on node1 - when the double named node1 the primary
#   per-client pause    each writer's longest pause between two of its own commits
#   client errors       by SQLSTATE (login refusals carry none in libpq: inferred from the
#                       message, and said so), with the phase (connect/insert/commit)
#   lost writes         acknowledged commits missing on the new primary (possible with
#                       STOP_MODE=immediate: replication is asynchronous)
#   in recovery         commits whose own transaction saw pg_is_in_recovery() = true (must be 0)
#
# Environment: CLIENTS (8), DURATION (20 s), FAIL_AT (5 s), STOP_MODE (fast|immediate),
# PROMOTE_DELAY (0 s), SYNCHRONOUS_COMMIT (on|local|off, for the benchmark database),
# THINK (0 s between a writer's transactions), POOL_SIZE (20), PGROUTER_WORKERS (0 = one
# per CPU), HEALTH_CHECK_PERIOD (0.5 s), FAILOVER_TIMEOUT (15 s), CONSUL_WAIT (10 s),
# BENCH_TIMEOUT (per run, s), BENCH_OUT (copy of the summary), BENCH_JSON (raw figures,
# one file per target: $BENCH_JSON.<target>.json), KEEP=1 (keep pgrouter's work dir),
# SEED=1 (also write node0 / node1,node2 as primary / replicas in [clusters.main], a
# starting point until discovery answers).
# Everything started is stopped by the driver (pg_ctl -D, pids), also on INT/TERM.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

MODE=${1:-pgrouter}
case "$MODE" in
  pgrouter | direct) TARGETS=$MODE ;;
  both) TARGETS="direct pgrouter" ;;
  *) die "usage: bench/failover.sh [pgrouter|direct|both]" ;;
esac
CLIENTS=${CLIENTS:-8}
DURATION=${DURATION:-20}
FAIL_AT=${FAIL_AT:-5}
STOP_MODE=${STOP_MODE:-fast}
PROMOTE_DELAY=${PROMOTE_DELAY:-0}
THINK=${THINK:-0}
POOL_SIZE=${POOL_SIZE:-20}
PGROUTER_WORKERS=${PGROUTER_WORKERS:-0}
HEALTH_CHECK_PERIOD=${HEALTH_CHECK_PERIOD:-0.5}
FAILOVER_TIMEOUT=${FAILOVER_TIMEOUT:-15}
CONSUL_WAIT=${CONSUL_WAIT:-10}
# Per run: cluster setup, readiness, the run, writers blocked up to FAILOVER_TIMEOUT, teardown.
BENCH_TIMEOUT=${BENCH_TIMEOUT:-$(awk -v d="$DURATION" -v f="$FAILOVER_TIMEOUT" -v p="$PROMOTE_DELAY" \
  'BEGIN { printf "%d", d + f + p + 150 }')}

ensure_packages postgresql-15 postgresql-client-15 python3 python3-psycopg2
if [[ " $TARGETS " == *" pgrouter "* ]] && [ ! -x "$PGROUTER_BIN" ]; then
  ensure_packages "${REQUIRED_PACKAGES[@]}"
  build_pgrouter || die "build failed"
fi
for f in tests/integration/pgcluster.py tests/integration/consul_double.py; do
  [ -f "$f" ] || die "$f is missing"
done

WORK=$(mktemp -d /tmp/pgrouter-failover-bench.XXXXXX)
CHILD=
stop_child() {
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true # timeout passes it on; the driver cleans up
    wait "$CHILD" 2>/dev/null || true
  fi
  CHILD=
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_child
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'warn interrupted; stop_child; exit 130' INT
trap 'warn stopped; stop_child; exit 143' TERM

FAILED=0
: >"$WORK/summary.md"
for target in $TARGETS; do
  log "failover run: $target, $CLIENTS writers, ${DURATION}s, primary stopped ($STOP_MODE) at ${FAIL_AT}s (limit ${BENCH_TIMEOUT}s)"
  args=(--target "$target" --clients "$CLIENTS" --duration "$DURATION" --fail-at "$FAIL_AT"
    --stop-mode "$STOP_MODE" --promote-delay "$PROMOTE_DELAY" --synchronous-commit "${SYNCHRONOUS_COMMIT:-on}" --think "$THINK" --pool-size "$POOL_SIZE"
    --workers "$PGROUTER_WORKERS" --health-check-period "$HEALTH_CHECK_PERIOD"
    --failover-timeout "$FAILOVER_TIMEOUT" --consul-wait "$CONSUL_WAIT" --pgrouter-bin "$PGROUTER_BIN")
  [ -n "${BENCH_JSON:-}" ] && args+=(--json "$BENCH_JSON.$target.json")
  [ "${KEEP:-0}" = 1 ] && args+=(--keep)
  [ "${SEED:-0}" = 1 ] && args+=(--seed)
  rc=0
  # In the background + wait, so that INT/TERM reach the trap at once.
  timeout -k 15 "$BENCH_TIMEOUT" /usr/bin/python3 bench/failover_driver.py "${args[@]}" >"$WORK/$target.md" &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    printf '### Failover through %s: FAILED\n\nno result within BENCH_TIMEOUT=%ss\n' "$target" "$BENCH_TIMEOUT" \
      >>"$WORK/$target.md"
  fi
  [ "$rc" -eq 0 ] || { FAILED=1; warn "$target run failed (exit $rc)"; }
  cat "$WORK/$target.md"
  { cat "$WORK/$target.md"; echo; } >>"$WORK/summary.md"
done

if [ -n "${BENCH_OUT:-}" ]; then cp "$WORK/summary.md" "$BENCH_OUT"; fi
exit "$FAILED"
