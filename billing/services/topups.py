"""Top-ups: money paid in through Stripe Checkout, credited exactly once whichever signal arrives first.

A Checkout Session is credited by `topup_credit`, reached from the webhook (`checkout.session.completed`,
`checkout.session.async_payment_succeeded`) and from the buyer's success redirect alike; the top-up row lock
and the ledger's idempotency key `topup:<id>` make every path after the first a no-op.
"""

import logging
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils.timezone import now
from django.utils.translation import gettext as _

from accounts.models import Organization, User
from billing import stripe_client
from billing.models import AccountKind, TopUp, TransactionKind
from billing.money import from_minor_units, round_to_minor_unit, to_minor_units
from billing.services.ledger import ledger_post, organization_account, platform_account
from billing.services.wallets import billing_manager_require
from marketplace.core.errors import DomainError, NotFound

logger = logging.getLogger(__name__)

PAID_STATUSES = {"paid", "no_payment_required"}


class PaymentsUnavailable(DomainError):
    status_code, code = 503, "payments_unavailable"


def topup_test_mode() -> bool:
    """Without Stripe keys, top-ups credit at once and say "test mode"; never unless DEBUG or explicitly allowed."""
    return not stripe_client.stripe_configured() and settings.BILLING_TEST_TOPUPS


def topup_amount_validate(raw: object) -> Decimal:
    """A top-up amount in whole minor units (fen), within the configured minimum and maximum."""
    try:
        amount = Decimal(str(raw).strip())
    except (InvalidOperation, ValueError):
        raise DomainError(_("Enter the amount as a number, e.g. 100.00."), code="invalid_amount") from None
    if not amount.is_finite():
        raise DomainError(_("Enter the amount as a number, e.g. 100.00."), code="invalid_amount")
    low, high = settings.TOPUP_MIN_AMOUNT, settings.TOPUP_MAX_AMOUNT
    # The range first: rounding a number of more digits than the decimal context holds (1e30) is not possible.
    if not low <= amount <= high:
        raise DomainError(
            _("A top-up must be between %(low)s and %(high)s %(currency)s.")
            % {"low": low, "high": high, "currency": settings.PLATFORM_CURRENCY},
            code="amount_out_of_range",
            minimum=str(low),
            maximum=str(high),
        )
    if amount != round_to_minor_unit(amount):
        raise DomainError(_("Enter the amount with at most two decimal places."), code="invalid_amount")
    return amount


def _absolute(path: str) -> str:
    return settings.SITE_URL.rstrip("/") + path


def topup_start(*, organization: Organization, amount: object, created_by: User) -> TopUp:
    """Start a top-up: a Stripe Checkout Session to pay (its URL is `checkout_url`), or in test mode a top-up
    credited at once. Raises PermissionDenied unless `created_by` may manage the organization's billing,
    DomainError for a bad amount, PaymentsUnavailable when neither is possible, and
    the Stripe seam's errors when Stripe fails (the top-up is then marked failed). Stripe sends the buyer back
    to the top-up's return page, which credits it if the webhook has not yet.
    """
    billing_manager_require(user=created_by, organization=organization)
    amount = topup_amount_validate(amount)
    if topup_test_mode():
        return topup_test_credit(organization=organization, amount=amount, created_by=created_by)
    if not stripe_client.stripe_configured():
        raise PaymentsUnavailable(_("Online payment is not configured on this platform; contact support to pay in."))
    top_up = TopUp.objects.create(
        organization=organization, amount=amount, mode=TopUp.Mode.STRIPE, created_by=created_by
    )
    # Outside any transaction: the row exists before Stripe is asked, so a webhook that races the reply finds it.
    try:
        session = stripe_client.checkout_session_create(
            top_up_id=top_up.pk,
            amount_minor=to_minor_units(amount),
            product_name=_("算力商城 wallet top-up (%(org)s)") % {"org": organization.name},
            success_url=_absolute(reverse("billing:top-up-return", args=[top_up.pk])),
            cancel_url=_absolute(reverse("billing:wallet")),
            customer_email=created_by.email,
        )
    except DomainError:
        TopUp.objects.filter(pk=top_up.pk, status=TopUp.Status.PENDING).update(status=TopUp.Status.FAILED)
        raise
    TopUp.objects.filter(pk=top_up.pk).update(stripe_checkout_session_id=session["id"], checkout_url=session["url"])
    top_up.refresh_from_db()
    return top_up


@transaction.atomic
def topup_test_credit(*, organization: Organization, amount: Decimal, created_by: User | None = None) -> TopUp:
    """A top-up marked "test mode", credited at once: development, the embedded demo and tests, never real money."""
    top_up = TopUp.objects.create(organization=organization, amount=amount, mode=TopUp.Mode.TEST, created_by=created_by)
    return topup_credit(top_up_id=top_up.pk)


@transaction.atomic
def topup_credit(*, top_up_id: int, payment_intent_id: str = "") -> TopUp:
    """Credit a paid top-up to available funds. Idempotent: only the first call posts."""
    top_up = TopUp.objects.select_for_update().get(pk=top_up_id)
    if top_up.status == TopUp.Status.SUCCEEDED:
        return top_up
    ledger_post(
        idempotency_key=f"topup:{top_up.pk}",
        kind=TransactionKind.TOP_UP,
        lines=[
            (platform_account(kind=AccountKind.PAYMENT_CLEARING), -top_up.amount),
            (organization_account(organization_id=top_up.organization_id, kind=AccountKind.AVAILABLE), top_up.amount),
        ],
        memo=_("Top-up (test mode)") if top_up.mode == TopUp.Mode.TEST else _("Top-up"),
        organization=top_up.organization,
        reference=f"top-up:{top_up.pk}",
    )
    top_up.status, top_up.credited_at = TopUp.Status.SUCCEEDED, now()
    top_up.stripe_payment_intent_id = payment_intent_id or top_up.stripe_payment_intent_id
    top_up.save(update_fields=["status", "credited_at", "stripe_payment_intent_id"])
    logger.info("top-up credited", extra={"top_up_id": top_up.pk, "organization_id": top_up.organization_id})
    return top_up


def _top_up_of_session(session: dict) -> TopUp | None:
    top_up = TopUp.objects.filter(stripe_checkout_session_id=session.get("id")).first()
    if top_up is None:
        logger.warning("checkout session of no top-up", extra={"session_id": session.get("id")})
    return top_up


def topup_apply_checkout_session(*, session: dict) -> TopUp | None:
    """Credit the top-up of a Checkout Session once it is paid; an unpaid (async) session waits for its event."""
    top_up = _top_up_of_session(session)
    if top_up is None or session.get("payment_status") not in PAID_STATUSES:
        return top_up
    paid = from_minor_units(session.get("amount_total") or 0)
    if paid != top_up.amount or str(session.get("currency", "")).upper() != settings.PLATFORM_CURRENCY:
        logger.error(
            "checkout session amount differs from its top-up",
            extra={"top_up_id": top_up.pk, "paid": str(paid), "currency": session.get("currency")},
        )
        return top_up
    return topup_credit(top_up_id=top_up.pk, payment_intent_id=session.get("payment_intent") or "")


def topup_fail_checkout_session(*, session: dict) -> TopUp | None:
    top_up = _top_up_of_session(session)
    if top_up is not None:
        TopUp.objects.filter(pk=top_up.pk, status=TopUp.Status.PENDING).update(status=TopUp.Status.FAILED)
        top_up.refresh_from_db()
    return top_up


def topup_confirm_return(*, organization: Organization, top_up_id: int) -> TopUp:
    """The buyer's success redirect: ask Stripe about the session and credit it if paid (the webhook may be late)."""
    top_up = TopUp.objects.filter(pk=top_up_id, organization=organization).first()
    if top_up is None:
        raise NotFound(_("No such top-up."))
    if top_up.status != TopUp.Status.PENDING or not top_up.stripe_checkout_session_id:
        return top_up
    session = stripe_client.checkout_session_retrieve(session_id=top_up.stripe_checkout_session_id)
    return topup_apply_checkout_session(session=session) or top_up
