"""Refunds of top-ups: staff refund in the admin (ledger first, then Stripe), Stripe reports dashboard refunds.

A staff refund takes the money out of available funds at once (so it cannot be spent meanwhile) and a task
asks Stripe with the idempotency key `refund:<id>`: a retry after a dropped response refunds once. If Stripe
refuses, a reversing transaction puts the money back.
"""

import logging
from decimal import Decimal

from django.db import transaction
from django.utils.timezone import now
from django.utils.translation import gettext as _

from accounts.models import User
from billing import stripe_client
from billing.models import AccountKind, LedgerAccount, Refund, TopUp, TransactionKind
from billing.money import from_minor_units, round_to_minor_unit, to_minor_units
from billing.services.ledger import InsufficientFunds, ledger_post, organization_account, platform_account
from marketplace.core.errors import Conflict, DomainError

logger = logging.getLogger(__name__)


def _refund_lines(top_up: TopUp, amount: Decimal) -> list[tuple[LedgerAccount, Decimal]]:
    return [
        (organization_account(organization_id=top_up.organization_id, kind=AccountKind.AVAILABLE), -amount),
        (platform_account(kind=AccountKind.PAYMENT_CLEARING), amount),
    ]


@transaction.atomic
def refund_request(*, top_up_id: int, amount: Decimal, reason: str, requested_by: User) -> Refund:
    """Refund part or all of a paid top-up. Atomic: the refund row, the top-up's refunded amount and the
    ledger move are written together; Stripe is asked after commit (test-mode top-ups complete at once).

    Raises DomainError for a bad amount, Conflict past what is refundable, InsufficientFunds when the
    organization has already spent the money (a credit line does not fund refunds).
    """
    top_up = TopUp.objects.select_for_update().get(pk=top_up_id)
    if amount <= 0 or amount != round_to_minor_unit(amount):
        raise DomainError(_("Enter a positive amount with at most two decimal places."), code="invalid_amount")
    if amount > top_up.refundable_amount:
        raise Conflict(
            _("At most %(n)s of this top-up can be refunded.") % {"n": f"{top_up.refundable_amount:.2f}"},
            code="refund_exceeds_top_up",
            refundable=f"{top_up.refundable_amount:.2f}",
        )
    available = organization_account(organization_id=top_up.organization_id, kind=AccountKind.AVAILABLE)
    available = LedgerAccount.objects.select_for_update().get(pk=available.pk)
    if available.balance < amount:
        raise InsufficientFunds(
            _("Only %(n)s of available funds is left to refund.") % {"n": f"{available.balance:.2f}"},
            missing=str(amount - available.balance),
        )
    refund = Refund.objects.create(top_up=top_up, amount=amount, reason=reason[:255], requested_by=requested_by)
    ledger_post(
        idempotency_key=f"refund:{refund.pk}",
        kind=TransactionKind.REFUND,
        lines=_refund_lines(top_up, amount),
        memo=_("Refund of a top-up"),
        organization=top_up.organization,
        reference=f"top-up:{top_up.pk}",
    )
    top_up.refunded_amount += amount
    top_up.save(update_fields=["refunded_amount"])
    if top_up.mode == TopUp.Mode.TEST:
        Refund.objects.filter(pk=refund.pk).update(status=Refund.Status.SUCCEEDED, completed_at=now())
        refund.refresh_from_db()
    else:
        from billing.tasks import refund_submit_task  # tasks import services: break the cycle

        refund_submit_task.delay_on_commit(refund.pk)
    return refund


def refund_submit(*, refund_id: int) -> Refund:
    """Ask Stripe for a pending refund. Idempotent: Stripe sees the same key on every retry, and a refund that
    is no longer pending is left alone. Transient failures raise PaymentProviderUnavailable (the task retries);
    a refusal fails the refund and returns the money to the wallet."""
    refund = Refund.objects.select_related("top_up").get(pk=refund_id)
    if refund.status != Refund.Status.PENDING:
        return refund
    try:
        stripe_refund = stripe_client.refund_create(
            payment_intent_id=refund.top_up.stripe_payment_intent_id,
            amount_minor=to_minor_units(refund.amount),
            refund_id=refund.pk,
        )
    except stripe_client.PaymentProviderRefused as error:
        return refund_fail(refund_id=refund.pk, message=error.detail)
    return refund_mark_succeeded(refund_id=refund.pk, stripe_refund_id=stripe_refund["id"])


@transaction.atomic
def refund_mark_succeeded(*, refund_id: int, stripe_refund_id: str) -> Refund:
    refund = Refund.objects.select_for_update().get(pk=refund_id)
    if refund.status == Refund.Status.PENDING:
        refund.status, refund.stripe_refund_id, refund.completed_at = Refund.Status.SUCCEEDED, stripe_refund_id, now()
        refund.save(update_fields=["status", "stripe_refund_id", "completed_at"])
    return refund


@transaction.atomic
def refund_fail(*, refund_id: int, message: str) -> Refund:
    """Stripe refused: the money goes back to available funds by a reversing transaction."""
    refund = Refund.objects.select_for_update().get(pk=refund_id)
    if refund.status != Refund.Status.PENDING:
        return refund
    top_up = TopUp.objects.select_for_update().get(pk=refund.top_up_id)
    ledger_post(
        idempotency_key=f"refund-reversal:{refund.pk}",
        kind=TransactionKind.REFUND_REVERSAL,
        lines=[(account, -amount) for account, amount in _refund_lines(top_up, refund.amount)],
        memo=_("Refund failed; the amount is back in the wallet"),
        organization=top_up.organization,
        reference=f"top-up:{top_up.pk}",
    )
    top_up.refunded_amount -= refund.amount
    top_up.save(update_fields=["refunded_amount"])
    refund.status, refund.failure_message, refund.completed_at = Refund.Status.FAILED, message[:255], now()
    refund.save(update_fields=["status", "failure_message", "completed_at"])
    logger.warning("refund refused by Stripe", extra={"refund_id": refund.pk})
    return refund


@transaction.atomic
def refund_record_from_stripe(*, payment_intent_id: str, stripe_refund: dict) -> Refund | None:
    """A refund Stripe reports (`charge.refunded`): ours is matched by its metadata and completed; one made
    in the Stripe dashboard is recorded and posted as it happened, even if that leaves the wallet owing."""
    if stripe_refund.get("status") not in {"succeeded", "pending"}:
        return None
    existing = Refund.objects.filter(stripe_refund_id=stripe_refund["id"]).first()
    if existing is not None:
        return existing
    ours = (stripe_refund.get("metadata") or {}).get("refund_id")
    if ours and ours.isdigit() and Refund.objects.filter(pk=int(ours)).exists():
        return refund_mark_succeeded(refund_id=int(ours), stripe_refund_id=stripe_refund["id"])
    top_up = TopUp.objects.select_for_update().filter(stripe_payment_intent_id=payment_intent_id).first()
    if top_up is None or top_up.status != TopUp.Status.SUCCEEDED:
        logger.warning("stripe refund of no paid top-up", extra={"payment_intent": payment_intent_id})
        return None
    amount = min(from_minor_units(stripe_refund.get("amount") or 0), top_up.refundable_amount)
    if amount <= 0:
        return None
    refund = Refund.objects.create(
        top_up=top_up,
        amount=amount,
        reason=_("Refunded in Stripe"),
        status=Refund.Status.SUCCEEDED,
        stripe_refund_id=stripe_refund["id"],
        completed_at=now(),
    )
    ledger_post(
        idempotency_key=f"refund:{refund.pk}",
        kind=TransactionKind.REFUND,
        lines=_refund_lines(top_up, amount),
        memo=_("Refund of a top-up (made in Stripe)"),
        organization=top_up.organization,
        reference=f"top-up:{top_up.pk}",
        enforce_minimum=False,  # it already happened at Stripe: record it, even if the wallet now owes
    )
    top_up.refunded_amount += amount
    top_up.save(update_fields=["refunded_amount"])
    logger.warning("refund made in Stripe recorded", extra={"refund_id": refund.pk, "top_up_id": top_up.pk})
    return refund
