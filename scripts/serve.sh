#!/usr/bin/env bash
# Scale-out profile: uvicorn workers (ASGI: the gateway at /v1/ is async) and Celery workers, configured only by the
# environment.
#   DATABASE_URL=postgres://…  CELERY_BROKER_URL=redis://… (or amqp://…)  CACHE_URL=redis://…  SECRET_KEY=…
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8000}"
WEB_WORKERS="${WEB_WORKERS:-4}"
CELERY_CONCURRENCY="${CELERY_CONCURRENCY:-4}"
: "${DATABASE_URL:?set DATABASE_URL to PostgreSQL}"
: "${CELERY_BROKER_URL:?set CELERY_BROKER_URL to Redis or RabbitMQ}"
BIN=.venv/bin

$BIN/python manage.py migrate --noinput -v 0
pids=()
stop() { trap - INT TERM EXIT; kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
trap stop INT TERM EXIT
$BIN/celery -A marketplace worker --concurrency="$CELERY_CONCURRENCY" --loglevel=INFO &
pids+=($!)
$BIN/celery -A marketplace beat --loglevel=INFO --pidfile= &
pids+=($!)
$BIN/uvicorn marketplace.asgi:application --host 0.0.0.0 --port "${PORT}" --workers "$WEB_WORKERS" --lifespan on \
  --no-server-header &
pids+=($!)
echo "Serving on :${PORT} with ${WEB_WORKERS} web workers and ${CELERY_CONCURRENCY} Celery processes."
wait -n "${pids[@]}"
