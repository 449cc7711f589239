#!/usr/bin/env bash
# Start PostgreSQL and Redis in a temporary directory, run "$@" against them, stop them.
#   scripts/with-services.sh .venv/bin/python -m pytest
# PostgreSQL: the server binaries of the machine (initdb/pg_ctl), run as the postgres
# user when we are root. Redis: redis-server, installed with apt-get when missing.
set -euo pipefail

log() { echo "[services] $*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pg_bin=""
for dir in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
  [ -x "$dir/initdb" ] && pg_bin="$dir"
done
if [ -z "$pg_bin" ] && command -v initdb >/dev/null; then pg_bin=$(dirname "$(command -v initdb)"); fi
if [ -z "$pg_bin" ]; then
  log "PostgreSQL server binaries not found; installing postgresql with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/initdb" ] && pg_bin="$dir"; done
fi
if ! command -v redis-server >/dev/null; then
  log "redis-server not found; installing it with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

tmp=$(mktemp -d /tmp/gateway-services.XXXXXX)
chmod 755 "$tmp"
pg_port=$(free_port)
redis_port=$(free_port)
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$tmp" 2>/dev/null || { useradd -r postgres && chown postgres "$tmp"; }
  as_pg=(runuser -u postgres --)
fi

cleanup() {
  code=$?
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$tmp/pg" -m fast stop >/dev/null 2>&1 || true
  [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null || true
  # a server a fault test started again on the same port
  command -v redis-cli >/dev/null && redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
  log "stopped PostgreSQL and Redis"
  exit $code
}
trap cleanup EXIT INT TERM

log "initdb in $tmp/pg (PostgreSQL from $pg_bin)"
"${as_pg[@]}" "$pg_bin/initdb" -D "$tmp/pg" -U gateway --auth=trust -E UTF8 >/dev/null
# the server's options go into its configuration file, so a plain "pg_ctl start" (the
# fault-injection tests stop and start the server) brings it back exactly as it was
cat >>"$tmp/pg/postgresql.conf" <<EOF
port = $pg_port
unix_socket_directories = '$tmp'
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
max_connections = 200
EOF
pg_ctl=("${as_pg[@]}" "$pg_bin/pg_ctl" -D "$tmp/pg" -l "$tmp/pg.log" -w)
"${pg_ctl[@]}" start >/dev/null
"${as_pg[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U gateway gateway

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --dir "$tmp" >"$tmp/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do
  (echo PING >/dev/tcp/127.0.0.1/"$redis_port") 2>/dev/null && break
  sleep 0.1
done
log "PostgreSQL on 127.0.0.1:$pg_port, Redis on 127.0.0.1:$redis_port"

export DATABASE_URL="postgres://gateway@127.0.0.1:${pg_port}/gateway"
export REDIS_URL="redis://127.0.0.1:${redis_port}/0"
# for tests/test_faults.py: append "stop -m fast", "start" or "restart" to control the server
export GATEWAY_TEST_PG_CTL="${pg_ctl[*]}"
"$@"
