#!/usr/bin/env bash
# A local playground: PostgreSQL 15 primary (15432) + two streaming replicas
# (15433, 15434) and pgrouter on 127.0.0.1:6432 in front of them.
# Ctrl-C (or SIGTERM) stops everything and removes the temp dir.
#   scripts/demo.sh              build, start, wait
#   DEMO_SMOKE=1 scripts/demo.sh start, run one query through pgrouter, stop (used to check the script)
#   DEMO_NO_BUILD=1              use the existing build/pgrouter
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

PRIMARY_PORT=15432
REPLICA_PORTS=(15433 15434)
LISTEN_PORT=${DEMO_PORT:-6432}
DEMO_USER=demo
DEMO_PASSWORD=demo-password
DEMO_DB=demo

ensure_packages "${REQUIRED_PACKAGES[@]}"
if [ -z "${DEMO_NO_BUILD:-}" ]; then build_pgrouter; fi
[ -x "$PGROUTER_BIN" ] || die "$PGROUTER_BIN missing: the build did not produce it"

for port in "$PRIMARY_PORT" "${REPLICA_PORTS[@]}" "$LISTEN_PORT"; do
  port_in_use "$port" && die "port $port is already in use on 127.0.0.1"
done

DIR=$(mktemp -d /tmp/pgrouter-demo.XXXXXX)
chmod 755 "$DIR"
[ "$(id -u)" -eq 0 ] && chown "$PG_OS_USER:$PG_OS_USER" "$DIR"
PGROUTER_PID=
DATADIRS=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  echo
  log "stopping"
  stop_pid "$PGROUTER_PID" 10
  local i
  for ((i = ${#DATADIRS[@]} - 1; i >= 0; i--)); do pg_stop "${DATADIRS[i]}"; done
  rm -rf "$DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "primary on $PRIMARY_PORT"
pg_init "$DIR/primary" "$PRIMARY_PORT" "$DIR" "max_connections = 100" "wal_level = replica" \
  "max_wal_senders = 10" "hot_standby = on" "fsync = off"
{
  echo "local all all trust"
  echo "host replication postgres 127.0.0.1/32 trust"
  echo "host all postgres 127.0.0.1/32 trust"
  echo "host all all 127.0.0.1/32 scram-sha-256"
} | as_postgres tee "$DIR/primary/pg_hba.conf" >/dev/null
DATADIRS+=("$DIR/primary")
pg_start "$DIR/primary" "$DIR/primary.log"

as_postgres "$PG_BINDIR/psql" -X -q -h "$DIR" -p "$PRIMARY_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 <<SQL
CREATE ROLE $DEMO_USER LOGIN PASSWORD '$DEMO_PASSWORD';
CREATE DATABASE $DEMO_DB OWNER $DEMO_USER;
SQL

for i in 0 1; do
  port=${REPLICA_PORTS[i]}
  data="$DIR/replica$((i + 1))"
  log "replica $((i + 1)) on $port (pg_basebackup -R -c fast)"
  as_postgres "$PG_BINDIR/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$data" \
    -R -c fast -X stream
  echo "port = $port" | as_postgres tee -a "$data/postgresql.conf" >/dev/null
  DATADIRS+=("$data")
  pg_start "$data" "$DIR/replica$((i + 1)).log"
done

printf '"%s" "%s"\n"pgbouncer" "%s"\n' "$DEMO_USER" "$DEMO_PASSWORD" "$DEMO_PASSWORD" >"$DIR/userlist.txt"
cat >"$DIR/pgrouter.toml" <<EOF
# Written by scripts/demo.sh (see conf/pgrouter.toml for every key).
[pgrouter]
listen_addr = "127.0.0.1"
listen_port = $LISTEN_PORT
unix_socket_dir = "$DIR"
auth_type = "md5"
auth_file = "$DIR/userlist.txt"
admin_users = ["pgbouncer"]
pool_mode = "transaction"
default_pool_size = 10
logfile = ""

[clusters.demo]
primary = "127.0.0.1:$PRIMARY_PORT"
replicas = ["127.0.0.1:${REPLICA_PORTS[0]}", "127.0.0.1:${REPLICA_PORTS[1]}"]
health_check_period = 1.0

# The primary, directly, like a PgBouncer [databases] line.
[databases.$DEMO_DB]
host = "127.0.0.1"
port = $PRIMARY_PORT
dbname = "$DEMO_DB"

# Through the cluster: reads of read-only sessions go to the replicas.
[databases.${DEMO_DB}_auto]
cluster = "demo"
dbname = "$DEMO_DB"
route = "auto"

[databases.${DEMO_DB}_ro]
cluster = "demo"
dbname = "$DEMO_DB"
route = "replica"
EOF

log "pgrouter on 127.0.0.1:$LISTEN_PORT"
"$PGROUTER_BIN" "$DIR/pgrouter.toml" >"$DIR/pgrouter.log" 2>&1 &
PGROUTER_PID=$!
if ! wait_port "$LISTEN_PORT" 15 "$PGROUTER_PID"; then
  cat "$DIR/pgrouter.log" >&2
  die "pgrouter did not start (config: $DIR/pgrouter.toml)"
fi

cat <<EOF

pgrouter is up (pid $PGROUTER_PID; log: $DIR/pgrouter.log). Password: $DEMO_PASSWORD

  psql "host=127.0.0.1 port=$LISTEN_PORT dbname=$DEMO_DB user=$DEMO_USER"
  psql "host=127.0.0.1 port=$LISTEN_PORT dbname=${DEMO_DB}_ro user=$DEMO_USER"     # replicas
  psql "host=127.0.0.1 port=$LISTEN_PORT dbname=pgbouncer user=pgbouncer"   # admin console: SHOW CLUSTERS;

Servers: primary 127.0.0.1:$PRIMARY_PORT, replicas 127.0.0.1:${REPLICA_PORTS[0]} and :${REPLICA_PORTS[1]} (data in $DIR).
Press Ctrl-C to stop everything.
EOF

if [ -n "${DEMO_SMOKE:-}" ]; then
  PGPASSWORD=$DEMO_PASSWORD PGCONNECT_TIMEOUT=10 timeout 30 "$PG_BINDIR/psql" -X -At \
    "host=127.0.0.1 port=$LISTEN_PORT dbname=$DEMO_DB user=$DEMO_USER" \
    -c "SELECT 'smoke ok: ' || current_user || '@' || current_database() || ' in_recovery=' || pg_is_in_recovery()"
  sleep 2   # one health-check round (health_check_period = 1.0) to see the replicas
  PGPASSWORD=$DEMO_PASSWORD PGCONNECT_TIMEOUT=10 timeout 30 "$PG_BINDIR/psql" -X -At \
    "host=127.0.0.1 port=$LISTEN_PORT dbname=${DEMO_DB}_ro user=$DEMO_USER" \
    -c "SELECT 'replica route: port ' || current_setting('port') || ' in_recovery=' || pg_is_in_recovery()" ||
    warn "the ${DEMO_DB}_ro route (replicas) did not answer"
  exit 0
fi

set +e
wait "$PGROUTER_PID"
rc=$?
set -e
PGROUTER_PID=
log "pgrouter exited with code $rc"
exit "$rc"
