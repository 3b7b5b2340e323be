#!/usr/bin/env bash
# The whole platform on one machine: SQLite, the SQLite-backed Celery broker, a worker, beat and the web server.
# Ctrl-C stops all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8000}"
DEMO_MODEL_PORT=8001  # where the demo model services point (seed_demo)
export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
# The demo model server is on loopback, which the gateway refuses to call unless its network is named here.
export GATEWAY_UPSTREAM_ALLOWED_NETWORKS="${GATEWAY_UPSTREAM_ALLOWED_NETWORKS:-127.0.0.1/32}"
PY=.venv/bin/python
CELERY=.venv/bin/celery

echo "==> Migrating the database"
$PY manage.py migrate --noinput -v 0
echo "==> Loading demo data"
NODE_TOKEN_FILE=var/demo-node-token
$PY manage.py seed_demo --node-token-file "${NODE_TOKEN_FILE}"

pids=()
demo_model_pid=
demo_agent_pid=
stop() {
  trap - INT TERM EXIT
  echo
  echo "==> Stopping web server, worker, beat, the demo model and the demo node's agent"
  kill -TERM "${pids[@]}" ${demo_model_pid} ${demo_agent_pid} 2>/dev/null || true
  wait "${pids[@]}" ${demo_model_pid} ${demo_agent_pid} 2>/dev/null || true
  echo "==> Stopped."
}
trap stop INT TERM EXIT

echo "==> Starting Celery worker and beat (embedded broker)"
$CELERY -A marketplace worker --pool=solo --loglevel=WARNING --hostname="worker@%h" &
pids+=($!)
$CELERY -A marketplace beat --loglevel=WARNING --pidfile= &
pids+=($!)

echo "==> Starting the demo model server (a demo provider's upstream) on port ${DEMO_MODEL_PORT}"
# A demo provider, not the platform: if it cannot start (the port is taken), the platform runs on without it.
$PY manage.py serve_demo_model --port "${DEMO_MODEL_PORT}" &
demo_model_pid=$!

# Under ASGI: the model gateway at /v1/ is async (a call in flight holds no worker); the rest is Django.
.venv/bin/uvicorn marketplace.asgi:application --host 127.0.0.1 --port "${PORT}" --lifespan on &
pids+=($!)

echo "==> Starting the demo node's provider agent (a CPU node on this machine)"
# A demo provider's node, not the platform: it registers, benchmarks with NumPy and runs the jobs rented on it.
$PY -m agent --url "http://127.0.0.1:${PORT}" --token "$(cat "${NODE_TOKEN_FILE}")" --work-dir var/agent-work \
  --benchmark-size 1024 >var/demo-agent.log 2>&1 &
demo_agent_pid=$!

sleep 2
cat <<MSG

  算力商城 is running at http://127.0.0.1:${PORT}/
  API docs: http://127.0.0.1:${PORT}/api/docs/   health: http://127.0.0.1:${PORT}/healthz
  Model gateway (OpenAI-compatible, a key with the gateway scope): http://127.0.0.1:${PORT}/v1
  Demo model (OpenAI-compatible upstream of the demo model services): http://127.0.0.1:${DEMO_MODEL_PORT}/v1
  Demo node: its agent logs to var/demo-agent.log; rent "CPU 演示节点" and run commands from the rental page
  Demo logins (password demo-pass-2026): buyer@demo.local, provider@demo.local, staff@demo.local (admin)
  Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}"
