#!/usr/bin/env bash
# The whole platform on one machine: SQLite, the SQLite-backed Celery broker, a worker, beat and the web server.
# Ctrl-C stops all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8000}"
export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
PY=.venv/bin/python
CELERY=.venv/bin/celery

echo "==> Migrating the database"
$PY manage.py migrate --noinput -v 0
echo "==> Loading demo data"
$PY manage.py seed_demo

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "==> Stopping web server, worker and beat"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "==> Stopped."
}
trap stop INT TERM EXIT

echo "==> Starting Celery worker and beat (embedded broker)"
$CELERY -A marketplace worker --pool=solo --loglevel=WARNING --hostname="worker@%h" &
pids+=($!)
$CELERY -A marketplace beat --loglevel=WARNING --pidfile= &
pids+=($!)

$PY manage.py runserver "127.0.0.1:${PORT}" --noreload &
pids+=($!)

sleep 2
cat <<MSG

  算力商城 is running at http://127.0.0.1:${PORT}/
  API docs: http://127.0.0.1:${PORT}/api/docs/   health: http://127.0.0.1:${PORT}/healthz
  Demo logins (password demo-pass-2026): buyer@demo.local, provider@demo.local, staff@demo.local (admin)
  Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}"
