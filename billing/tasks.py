"""Thin Celery tasks of billing: ids in, one service call each; the services make them idempotent."""

from datetime import date

from celery import shared_task
from django.utils.timezone import localdate

from billing.selectors import hold_ids_due_to_expire, organization_ids_with_funds
from billing.services.holds import hold_expire
from billing.services.ledger import ledger_reconcile
from billing.services.payouts import payout_settle
from billing.services.rating import usage_rate_pending
from billing.services.refunds import refund_submit
from billing.services.statements import month_before, statement_close
from billing.stripe_client import PaymentProviderUnavailable
from marketplace.core.tasks import TRANSIENT_ERRORS


@shared_task(name="billing.refund_submit", autoretry_for=(*TRANSIENT_ERRORS, PaymentProviderUnavailable))
def refund_submit_task(refund_id: int) -> str:
    """Ask Stripe for the refund; a dropped response is retried with the same idempotency key."""
    return refund_submit(refund_id=refund_id).status


@shared_task(name="billing.hold_expire_due")
def hold_expire_due_task() -> int:
    """Every minute: fan out one expiry task per hold past its expiry."""
    due = hold_ids_due_to_expire()
    for hold_id in due:
        hold_expire_task.delay(hold_id)
    return len(due)


@shared_task(name="billing.hold_expire")
def hold_expire_task(hold_id: int) -> None:
    hold_expire(hold_id=hold_id)


@shared_task(name="billing.usage_rate")
def usage_rate_task() -> dict:
    """Every METERING_TICK_SECONDS (beat): rate every rental's new usage in one run (sets of rows on PostgreSQL,
    not a task per rental or per event)."""
    run = usage_rate_pending()
    return {"events": run.events, "charges": run.charges}


@shared_task(name="billing.ledger_reconcile")
def ledger_reconcile_task() -> int:
    """Daily: cached balances against the sum of their postings, and the gateway funds counters against their holds;
    mismatches are logged as errors (a gateway funds counter is also set right)."""
    from marketplace.services.model_calls import gateway_funds_reconcile

    return len(ledger_reconcile()) + len(gateway_funds_reconcile())


@shared_task(name="billing.statement_close_due")
def statement_close_due_task() -> int:
    """On the 1st of each month: fan out one close per organization for the month that just ended."""
    period_start = month_before(localdate().replace(day=1))
    organization_ids = organization_ids_with_funds()
    for organization_id in organization_ids:
        statement_close_task.delay(organization_id, period_start.isoformat())
    return len(organization_ids)


@shared_task(name="billing.statement_close")
def statement_close_task(organization_id: int, period_start: str) -> int:
    return statement_close(organization_id=organization_id, period_start=date.fromisoformat(period_start)).number


@shared_task(name="billing.payout_settle", autoretry_for=(*TRANSIENT_ERRORS, PaymentProviderUnavailable))
def payout_settle_task(payout_id: int) -> str:
    """Transfer the payout through Stripe Connect (same idempotency key on every retry) or hand it to staff."""
    return payout_settle(payout_id=payout_id).status
