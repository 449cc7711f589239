#!/usr/bin/env bash
# `make run`: migrate, bootstrap against the bundled fake upstream, start both.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8000}"
FAKE_UPSTREAM_PORT="${FAKE_UPSTREAM_PORT:-9100}"
FAKE_MJ_PORT="${FAKE_MJ_PORT:-9200}"
BIN=.venv/bin

port_busy() { "$BIN/python" -c "import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', int(sys.argv[1]))) != 0)" "$1"; }
for port in "$PORT" "$FAKE_UPSTREAM_PORT" "$FAKE_MJ_PORT"; do
  if port_busy "$port"; then
    echo "make run: port $port is in use (another make run?); stop it or choose PORT=... FAKE_UPSTREAM_PORT=... FAKE_MJ_PORT=..." >&2
    exit 1
  fi
done

mkdir -p "${DATA_DIR:-var}/static"  # whitenoise serves app files from their finders; the root must exist
"$BIN/python" manage.py migrate --noinput --verbosity 0
# the fake midjourney-proxy's secret: made once, kept beside the database
mj_secret_file="${DATA_DIR:-var}/fake-mj-secret"
[ -s "$mj_secret_file" ] || "$BIN/python" -c "import secrets; print(secrets.token_urlsafe(24))" > "$mj_secret_file"
mj_secret=$(cat "$mj_secret_file")
out=$("$BIN/python" manage.py bootstrap --demo --upstream-url "http://127.0.0.1:${FAKE_UPSTREAM_PORT}/v1" \
  --mj-upstream-url "http://127.0.0.1:${FAKE_MJ_PORT}" --mj-secret "$mj_secret")
echo "$out" | grep -v '^DEMO_'
key=$(echo "$out" | sed -n 's/^DEMO_API_KEY=//p')
password=$(echo "$out" | sed -n 's/^DEMO_PASSWORD=//p')
admin_user="${ADMIN_USERNAME:-admin}"

"$BIN/python" -m tests.fakes.upstream --host 127.0.0.1 --port "$FAKE_UPSTREAM_PORT" &
fake_pid=$!
"$BIN/python" -m tests.fakes.midjourney --host 127.0.0.1 --port "$FAKE_MJ_PORT" --secret "$mj_secret" &
fake_mj_pid=$!
trap 'kill $fake_pid $fake_mj_pid 2>/dev/null || true' EXIT INT TERM

cat <<INFO

  Relay:          http://127.0.0.1:${PORT}/v1
  Console:        http://127.0.0.1:${PORT}/admin/      (operator '${admin_user}': password printed when it was created)
  Dashboard:      http://127.0.0.1:${PORT}/dashboard/  (log in as 'demo', password ${password}; new on every run)
  API docs:       http://127.0.0.1:${PORT}/api/docs/   (also http://127.0.0.1:${PORT}/api/redoc/)
  Health:         http://127.0.0.1:${PORT}/health/ready
  Demo API key:   ${key}  (replaces the previous run's demo key)
  Try it:
    curl http://127.0.0.1:${PORT}/v1/chat/completions \\
      -H "Authorization: Bearer ${key}" -H "Content-Type: application/json" \\
      -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}'
    curl http://127.0.0.1:${PORT}/mj/submit/imagine -H "mj-api-secret: ${key}" \\
      -H "Content-Type: application/json" -d '{"prompt": "a lighthouse at dusk"}'
    curl http://127.0.0.1:${PORT}/mj/task/<result>/fetch -H "mj-api-secret: ${key}"

INFO
"$BIN/uvicorn" gateway_project.asgi:application --host 127.0.0.1 --port "$PORT" \
  --loop uvloop --http gateway_project.server:HttpProtocol --no-access-log --no-proxy-headers
