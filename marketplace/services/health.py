"""Health of the platform's moving parts: database, broker, and the last worker heartbeat."""

import logging
import socket
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils.dateparse import parse_datetime
from django.utils.timezone import now

logger = logging.getLogger(__name__)

HEARTBEAT_CACHE_KEY = "health:worker-heartbeat"


def worker_heartbeat_record() -> datetime:
    moment = now()
    cache.set(HEARTBEAT_CACHE_KEY, {"at": moment.isoformat(), "host": socket.gethostname()}, timeout=None)
    return moment


def _database_status() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # noqa: BLE001 - any failure means "down", and the reason is reported
        return {"ok": False, "error": error.__class__.__name__}
    return {"ok": True, "vendor": connection.vendor}


def _broker_status() -> dict:
    from marketplace.celery import app

    transport = app.conf.broker_url.split(":", 1)[0]
    try:
        with app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=2)
    except Exception as error:  # noqa: BLE001
        return {"ok": False, "transport": transport, "error": error.__class__.__name__}
    return {"ok": True, "transport": transport}


def _worker_status() -> dict:
    beat = cache.get(HEARTBEAT_CACHE_KEY)
    if not beat:
        return {"ok": False, "last_heartbeat": None}
    at = parse_datetime(beat["at"])
    age = (now() - at).total_seconds()
    return {"ok": age <= settings.HEALTH_WORKER_STALE_SECONDS, "last_heartbeat": beat["at"], "age_seconds": int(age)}


def platform_health() -> dict:
    """The web tier is healthy when the database and the broker answer; the worker is reported, not required."""
    database, broker = _database_status(), _broker_status()
    return {"ok": database["ok"] and broker["ok"], "database": database, "broker": broker, "worker": _worker_status()}
