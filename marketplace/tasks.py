from celery import shared_task


@shared_task(name="marketplace.health_check")
def health_check_task() -> str:
    """Beat sends it every minute; the worker that runs it records a heartbeat that /healthz reports."""
    from marketplace.services.health import worker_heartbeat_record

    return worker_heartbeat_record().isoformat()


@shared_task(name="marketplace.idempotency_purge")
def idempotency_purge_task() -> int:
    from marketplace.core.idempotency import idempotency_purge

    return idempotency_purge()


SETTLE_BATCH_SIZE = 200  # rentals per settle task: a tick of 10k running rentals is 50 tasks


@shared_task(name="marketplace.rentals_provision_due")
def rentals_provision_due_task() -> int:
    """Admissions ask for this (one run serves a burst of them): bring up every rental that is due."""
    from marketplace.services.rentals import rentals_provision_due

    return rentals_provision_due()


@shared_task(name="marketplace.rental_complete")
def rental_complete_task(rental_id: int) -> str:
    from django.utils.translation import gettext_lazy

    from marketplace.services.rentals import rental_complete

    return rental_complete(rental_id=rental_id, reason=gettext_lazy("Term ended")).status


@shared_task(name="marketplace.rental_lifecycle_tick")
def rental_lifecycle_tick_task() -> tuple[int, int]:
    """Every minute: start the scheduled rentals that are due (the provisioning run admissions ask for, which also
    catches any request that was lost), complete those whose term is over."""
    from marketplace.services.rentals import provisioning_request, rental_lifecycle_due

    due, over = rental_lifecycle_due()
    if due:
        provisioning_request()
    for rental_id in over:
        rental_complete_task.delay(rental_id)
    return len(due), len(over)


@shared_task(name="marketplace.metering_tick")
def metering_tick_task() -> int:
    """Every METERING_TICK_SECONDS: fan the rentals to settle out in batches, all up to the tick's moment. (Beat
    sends the rating run, `billing.usage_rate`, on the same schedule; it skips rentals being settled, which rate
    themselves.)"""
    from django.utils.timezone import now

    from marketplace.services.rentals import metering_tick

    moment = now()
    rental_ids = metering_tick(moment=moment)
    for start in range(0, len(rental_ids), SETTLE_BATCH_SIZE):
        rental_settle_batch_task.delay(rental_ids[start : start + SETTLE_BATCH_SIZE], moment.isoformat())
    return len(rental_ids)


@shared_task(name="marketplace.rental_settle_batch")
def rental_settle_batch_task(rental_ids: list[int], moment: str | None = None) -> int:
    """Settle each rental in its own transaction: one failing rental does not hold the others back.

    The tick's moment travels with the batch, so a batch redelivered after a crash settles to the same moment
    and leaves the ledger one clean run would have left.
    """
    from django.utils.dateparse import parse_datetime

    from marketplace.services.rentals import rentals_settle

    return rentals_settle(rental_ids=rental_ids, moment=parse_datetime(moment) if moment else None)


@shared_task(name="marketplace.model_calls_capture")
def model_calls_capture_task() -> int:
    """Beat sends it every GATEWAY_CAPTURE_SECONDS: write the calls the gateway buffered, capture their costs."""
    from marketplace.services.model_calls import model_calls_capture, model_calls_flush

    model_calls_flush()
    return model_calls_capture()


@shared_task(name="marketplace.application_subscriptions_renew")
def application_subscriptions_renew_task() -> int:
    """Beat sends it every few minutes: renew (or end) the application subscriptions whose period is over."""
    from marketplace.services.applications import application_subscriptions_renew

    return application_subscriptions_renew()


@shared_task(name="marketplace.gateway_holds_release_idle")
def gateway_holds_release_idle_task() -> int:
    """Beat sends it every five minutes: give back the gateway holds of organizations that stopped calling."""
    from marketplace.services.model_calls import gateway_holds_release_idle, model_calls_capture, model_calls_flush

    model_calls_flush()
    model_calls_capture()  # a hold is only released once every call on it is captured
    return gateway_holds_release_idle()


@shared_task(name="marketplace.nodes_sweep")
def nodes_sweep_task() -> int:
    """Every NODE_SWEEP_SECONDS: nodes whose agent went quiet go offline; their rentals move or fail, with credit."""
    from marketplace.services.nodes import nodes_sweep

    return nodes_sweep()


@shared_task(name="marketplace.offerings_reliability_refresh")
def offerings_reliability_refresh_task() -> int:
    """Hourly: node-backed offerings' reliability as the window moves on (status changes refresh it at once)."""
    from marketplace.services.nodes import offerings_reliability_refresh

    return offerings_reliability_refresh()
