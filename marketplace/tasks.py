import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="marketplace.health_check")
def health_check_task() -> str:
    """Beat sends it every minute; the worker that runs it records a heartbeat that /healthz reports."""
    from marketplace.services.health import worker_heartbeat_record

    return worker_heartbeat_record().isoformat()


@shared_task(name="marketplace.idempotency_purge")
def idempotency_purge_task() -> int:
    from marketplace.core.idempotency import idempotency_purge

    return idempotency_purge()
