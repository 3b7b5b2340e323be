"""Provider earnings and payouts.

Requesting a payout moves the amount from the provider's earnings to the platform's payouts-in-transit
account at once (so it cannot be requested twice); settling moves it on to payment clearing (the cash left),
and a failed or rejected payout returns it to earnings. Stripe Connect transfers carry the idempotency key
`payout:<id>`; without Connect, staff settle by hand, two different people above the threshold.
"""

import logging
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils.timezone import now
from django.utils.translation import gettext as _

from accounts.models import Organization, User
from billing import stripe_client
from billing.models import (
    AccountKind,
    LedgerAccount,
    LedgerTransaction,
    Payout,
    Posting,
    ProviderBilling,
    TransactionKind,
    UsageCharge,
)
from billing.money import amount_sum, quantize_amount, round_to_minor_unit, to_minor_units
from billing.selectors import organization_earns
from billing.services.ledger import ledger_post, organization_account, platform_account
from billing.services.wallets import billing_manager_require
from marketplace.core.errors import Conflict, DomainError, PermissionDenied

logger = logging.getLogger(__name__)


@transaction.atomic
def payout_request(*, provider: Organization, amount: Decimal, requested_by: User) -> Payout:
    """Request a payout of earnings. Raises DomainError (amount), PermissionDenied (not an approved provider or
    no billing role), InsufficientFunds (more than the earnings). Settlement is enqueued after commit."""
    if not organization_earns(organization=provider):
        raise PermissionDenied(
            _("Only approved providers and sellers of applications have earnings to pay out."),
            code="provider_required",
        )
    billing_manager_require(user=requested_by, organization=provider)
    if amount != round_to_minor_unit(amount) or amount < settings.PAYOUT_MIN_AMOUNT:
        raise DomainError(
            _("A payout is at least %(n)s, in whole fen.") % {"n": settings.PAYOUT_MIN_AMOUNT},
            code="invalid_amount",
            minimum=str(settings.PAYOUT_MIN_AMOUNT),
        )
    payout = Payout.objects.create(organization=provider, amount=amount, requested_by=requested_by)
    ledger_post(
        idempotency_key=f"payout:{payout.pk}",
        kind=TransactionKind.PAYOUT,
        lines=[
            (organization_account(organization_id=provider.pk, kind=AccountKind.EARNINGS), -amount),
            (platform_account(kind=AccountKind.PAYOUTS_IN_TRANSIT), amount),
        ],
        memo=_("Payout"),
        organization=provider,
        reference=f"payout:{payout.pk}",
    )
    from billing.tasks import payout_settle_task  # tasks import services: break the cycle

    payout_settle_task.delay_on_commit(payout.pk)
    return payout


def payout_settle(*, payout_id: int) -> Payout:
    """Pay a requested payout: a Stripe Connect transfer when the provider has a connected account, else
    hand it to staff. Idempotent; transient Stripe failures raise (the task retries with the same key)."""
    payout = Payout.objects.get(pk=payout_id)
    if payout.status != Payout.Status.REQUESTED:
        return payout
    destination = (
        ProviderBilling.objects.filter(organization_id=payout.organization_id)
        .values_list("stripe_connect_account_id", flat=True)
        .first()
    )
    if not (stripe_client.stripe_configured() and destination):
        Payout.objects.filter(pk=payout.pk, status=Payout.Status.REQUESTED).update(
            status=Payout.Status.AWAITING_APPROVAL, method=Payout.Method.MANUAL
        )
        payout.refresh_from_db()
        return payout
    try:
        transfer = stripe_client.transfer_create(
            amount_minor=to_minor_units(payout.amount), destination=destination, payout_id=payout.pk
        )
    except stripe_client.PaymentProviderRefused as refused:
        return payout_fail(payout_id=payout.pk, message=refused.detail)
    return _payout_mark_paid(payout_id=payout.pk, method=Payout.Method.STRIPE_CONNECT, transfer_id=transfer["id"])


@transaction.atomic
def _payout_mark_paid(*, payout_id: int, method: str, transfer_id: str | None = None) -> Payout:
    payout = Payout.objects.select_for_update().get(pk=payout_id)
    if payout.status == Payout.Status.PAID:
        return payout
    ledger_post(
        idempotency_key=f"payout-paid:{payout.pk}",
        kind=TransactionKind.PAYOUT,
        lines=[
            (platform_account(kind=AccountKind.PAYOUTS_IN_TRANSIT), -payout.amount),
            (platform_account(kind=AccountKind.PAYMENT_CLEARING), payout.amount),
        ],
        memo=_("Payout sent"),
        organization=payout.organization,
        reference=f"payout:{payout.pk}",
    )
    payout.status, payout.method, payout.settled_at = Payout.Status.PAID, method, now()
    payout.stripe_transfer_id = transfer_id
    payout.save(update_fields=["status", "method", "settled_at", "stripe_transfer_id"])
    logger.info("payout paid", extra={"payout_id": payout.pk, "method": method})
    return payout


@transaction.atomic
def payout_fail(*, payout_id: int, message: str) -> Payout:
    """The payout did not go out: the amount returns to the provider's earnings. Idempotent."""
    payout = Payout.objects.select_for_update().get(pk=payout_id)
    if payout.status in {Payout.Status.PAID, Payout.Status.FAILED}:
        return payout
    ledger_post(
        idempotency_key=f"payout-return:{payout.pk}",
        kind=TransactionKind.PAYOUT_RETURN,
        lines=[
            (platform_account(kind=AccountKind.PAYOUTS_IN_TRANSIT), -payout.amount),
            (organization_account(organization_id=payout.organization_id, kind=AccountKind.EARNINGS), payout.amount),
        ],
        memo=_("Payout returned: %(reason)s") % {"reason": message},
        organization=payout.organization,
        reference=f"payout:{payout.pk}",
    )
    payout.status, payout.failure_message, payout.settled_at = Payout.Status.FAILED, message[:255], now()
    payout.save(update_fields=["status", "failure_message", "settled_at"])
    return payout


@transaction.atomic
def payout_approve(*, payout_id: int, staff: User) -> Payout:
    """A staff member confirms a manual payout was sent. At or above the threshold a second, different staff
    member must confirm too; the payout is paid on the last approval."""
    payout = Payout.objects.select_for_update().get(pk=payout_id)
    if payout.status != Payout.Status.AWAITING_APPROVAL:
        raise Conflict(_("Only payouts awaiting manual settlement can be approved."), code="payout_not_awaiting")
    if not staff.is_staff:
        raise PermissionDenied(_("Only staff settle payouts."), code="staff_required")
    needs_two = payout.amount >= settings.PAYOUT_TWO_PERSON_THRESHOLD
    if needs_two and payout.first_approved_by_id is None:
        payout.first_approved_by = staff
        payout.save(update_fields=["first_approved_by"])
        return payout
    if needs_two and payout.first_approved_by_id == staff.pk:
        raise PermissionDenied(
            _("A second, different staff member must approve a payout this large."), code="second_approver_required"
        )
    field = "second_approved_by" if needs_two else "first_approved_by"
    setattr(payout, field, staff)
    payout.save(update_fields=[field])
    return _payout_mark_paid(payout_id=payout.pk, method=Payout.Method.MANUAL)


@transaction.atomic
def charge_refund(
    *, capture_transaction_id: int, amount: Decimal, idempotency_key: str, reason: str
) -> LedgerTransaction:
    """Give a buyer back part or all of a charge (a dispute, compensation): the provider's earnings and the
    platform fee are reversed in the charge's own proportion. The provider may go below zero (owing it to the
    platform until later earnings cover it). Idempotent per key; never more than was charged. A rating run's
    capture, which took many buyers' usage at once, is refused: its usage charges are refunded one by one."""
    capture = LedgerTransaction.objects.select_for_update().get(pk=capture_transaction_id, kind=TransactionKind.CAPTURE)
    replay = LedgerTransaction.objects.filter(idempotency_key=idempotency_key).first()
    if replay is not None:
        return replay
    if capture.organization_id is None:
        raise Conflict(
            _("This capture took the usage of many rentals at once: refund its usage charges one by one."),
            code="refund_by_usage_charge",
        )
    postings = {posting.account.kind: posting for posting in capture.postings.select_related("account")}
    earnings, fee = postings.get(AccountKind.EARNINGS), postings.get(AccountKind.PLATFORM_REVENUE)
    usage_charges = UsageCharge.objects.filter(ledger_transaction=capture).values_list("pk", flat=True)
    return _refund_post(
        charged=-postings[AccountKind.HELD].amount,
        fee=fee.amount if fee else Decimal(0),
        refunded=_refunded(capture_id=capture.pk, usage_charge_ids=list(usage_charges)),
        earnings_account=earnings.account if earnings else None,
        amount=amount, buyer=capture.organization, idempotency_key=idempotency_key, reason=reason,
        reference=f"capture:{capture.pk}",
    )  # fmt: skip


@transaction.atomic
def usage_charge_refund(*, charge_id: int, amount: Decimal, idempotency_key: str, reason: str) -> LedgerTransaction:
    """Give a buyer back part or all of one usage charge, split as the charge was (`UsageCharge.fee`): the same
    as `charge_refund` of its capture, and counted together with refunds made that way."""
    charge = UsageCharge.objects.select_related("organization", "rental").get(pk=charge_id)
    if charge.ledger_transaction_id is not None:  # none: nothing was captured (amount 0), nothing to refund
        # The capture's row is the lock that refunds by charge and by capture both take.
        LedgerTransaction.objects.select_for_update().get(pk=charge.ledger_transaction_id)
    replay = LedgerTransaction.objects.filter(idempotency_key=idempotency_key).first()
    if replay is not None:
        return replay
    earnings = None
    if charge.fee < charge.amount:  # the provider earned part of it: that part comes back from its earnings
        earnings = organization_account(organization_id=charge.rental.provider_id, kind=AccountKind.EARNINGS)
    return _refund_post(
        charged=charge.amount,
        fee=charge.fee,
        refunded=_refunded(capture_id=charge.ledger_transaction_id, usage_charge_ids=[charge.pk]),
        earnings_account=earnings,
        amount=amount, buyer=charge.organization, idempotency_key=idempotency_key, reason=reason,
        reference=f"usage-charge:{charge.pk}",
    )  # fmt: skip


def usage_charge_refundable(*, charge_id: int) -> Decimal:
    """What is left to refund of a usage charge."""
    charge = UsageCharge.objects.get(pk=charge_id)
    if charge.ledger_transaction_id is None:
        return Decimal(0)
    return charge.amount - _refunded(capture_id=charge.ledger_transaction_id, usage_charge_ids=[charge.pk])


def _refunded(*, capture_id: int | None, usage_charge_ids: list[int]) -> Decimal:
    """What was refunded of a charge so far, by its capture or by its usage charge."""
    references = [f"usage-charge:{pk}" for pk in usage_charge_ids]
    references += [f"capture:{capture_id}"] if capture_id is not None else []
    refunded = Posting.objects.filter(
        transaction__kind=TransactionKind.CHARGE_REFUND, transaction__reference__in=references, amount__gt=0
    ).aggregate(total=amount_sum("amount", default=Decimal(0)))["total"]
    return quantize_amount(refunded)


def _refund_post(
    *,
    charged: Decimal,
    fee: Decimal,
    refunded: Decimal,
    earnings_account: LedgerAccount | None,
    amount: Decimal,
    buyer: Organization,
    idempotency_key: str,
    reason: str,
    reference: str,
) -> LedgerTransaction:
    """Post a refund of `amount` of a charge of `charged` of which `fee` was the platform's."""
    if amount <= 0 or amount > charged - refunded:
        refundable = f"{charged - refunded:f}"  # not str(): nothing left would read "0E-8"
        raise Conflict(
            _("At most %(n)s of this charge can be refunded.") % {"n": refundable},
            code="refund_exceeds_charge",
            refundable=refundable,
        )
    fee_part = quantize_amount(amount * fee / charged) if fee else Decimal(0)
    lines = [(organization_account(organization_id=buyer.pk, kind=AccountKind.AVAILABLE), amount)]
    if fee_part:
        lines.append((platform_account(kind=AccountKind.PLATFORM_REVENUE), -fee_part))
    if amount - fee_part:
        lines.append((earnings_account, -(amount - fee_part)))
    txn, _posted = ledger_post(
        idempotency_key=idempotency_key,
        kind=TransactionKind.CHARGE_REFUND,
        lines=lines,
        memo=reason,
        organization=buyer,
        reference=reference,
        enforce_minimum=False,
    )
    return txn
