"""Holds: reserve funds before work (a rental, a gateway call), capture what the work cost, return the rest.

Lock order everywhere: the hold row first, then ledger accounts in primary-key order (inside ledger_post).
"""

import logging
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.timezone import now
from django.utils.translation import gettext as _

from accounts.models import Organization
from billing.models import AccountKind, Hold, LedgerTransaction, Posting, ProviderBilling, TransactionKind
from billing.money import quantize_amount
from billing.selectors import wallet_get
from billing.services.ledger import (
    ZERO,
    InsufficientFunds,
    insufficient_funds,
    ledger_post,
    organization_account,
    platform_account,
)
from marketplace.core.errors import Conflict, DomainError
from marketplace.core.guarded import Expression, GuardedStatement

logger = logging.getLogger(__name__)


class HoldResolved(Conflict):
    code = "hold_resolved"


class CaptureExceedsHold(Conflict):
    code = "capture_exceeds_hold"


def platform_fee_percent(*, provider: Organization) -> Decimal:
    """The platform's share of a provider's charges: the provider's own rate where staff set one, else global."""
    override = ProviderBilling.objects.filter(organization=provider).values_list("platform_fee_percent", flat=True)
    override = next(iter(override), None)
    return override if override is not None else settings.PLATFORM_FEE_PERCENT


def fee_split(*, amount: Decimal, fee_percent: Decimal) -> tuple[Decimal, Decimal]:
    """(provider earnings, platform fee) of a charge. The fee is rounded half-up to 8 places and the provider
    gets exactly the rest, so the two always add up to the charge."""
    fee = quantize_amount(amount * fee_percent / 100)
    return amount - fee, fee


def _positive(amount: Decimal, what: str) -> None:
    if amount <= 0:
        raise DomainError(_("The %(what)s must be positive.") % {"what": what}, code="invalid_amount")


def _hold_move(*, hold: Hold, amount: Decimal, idempotency_key: str, kind: TransactionKind) -> None:
    """Move `amount` from the hold's organization's available funds to its held funds (negative: back)."""
    ledger_post(
        idempotency_key=idempotency_key,
        kind=kind,
        lines=[
            (organization_account(organization_id=hold.organization_id, kind=AccountKind.AVAILABLE), -amount),
            (organization_account(organization_id=hold.organization_id, kind=AccountKind.HELD), amount),
        ],
        memo=hold.description,
        organization=hold.organization,
        reference=hold.reference,
    )


@transaction.atomic
def hold_place(
    *,
    organization: Organization,
    amount: Decimal,
    idempotency_key: str,
    reference: str,
    description: str,
    expires_at: datetime | None = None,
) -> Hold:
    """Move `amount` from available to held funds. Idempotent per key (a replay returns the same hold).

    Raises InsufficientFunds (with how much is missing) when available funds plus the credit line fall short.
    """
    _positive(amount, _("amount to hold"))
    try:
        with transaction.atomic():
            hold = Hold.objects.create(
                organization=organization,
                idempotency_key=idempotency_key,
                reference=reference,
                description=description[:255],
                amount=amount,
                expires_at=expires_at,
            )
    except IntegrityError:
        return Hold.objects.get(idempotency_key=idempotency_key, organization=organization)
    _hold_move(hold=hold, amount=amount, idempotency_key=f"hold:{hold.pk}", kind=TransactionKind.HOLD)
    return hold


def hold_place_in(statement: GuardedStatement, *, hold: Hold, expressions: dict[str, Expression] | None = None) -> str:
    """Add placing `hold` (unsaved) to a guarded statement: the hold, its ledger transaction, both balance updates
    and both postings that `hold_place` writes, in the statement's one round trip. Returns SQL for the new hold's
    key. Its check locks the organization's available and held accounts in key order and fails when the debit
    would take available funds below their floor, or when an account is missing (see `hold_refusal`).
    `expressions` gives SQL for some of the hold's columns (its texts may name a key the statement draws)."""
    _positive(hold.amount, _("amount to hold"))
    statement.check(
        "funds",
        """SELECT id, kind FROM billing_ledgeraccount
           WHERE organization_id = %s AND currency = %s AND kind IN (%s, %s) AND {guard}
             AND (kind = %s OR minimum_balance IS NULL OR balance - %s >= minimum_balance)
           ORDER BY id FOR UPDATE""",
        [hold.organization_id, settings.PLATFORM_CURRENCY, AccountKind.AVAILABLE, AccountKind.HELD, AccountKind.HELD,
         hold.amount],
        passed="(SELECT count(*) FROM funds) = 2",
    )  # fmt: skip
    statement.insert("hold", hold, expressions=expressions, returning="id, description, reference")
    move = LedgerTransaction(kind=TransactionKind.HOLD, organization_id=hold.organization_id)
    statement.insert(
        "hold_transaction",
        move,
        expressions={
            "idempotency_key": "(SELECT 'hold:' || id FROM hold)",
            "memo": "(SELECT description FROM hold)",
            "reference": "(SELECT reference FROM hold)",
        },
        returning="id",
    )
    moved = [AccountKind.AVAILABLE, hold.amount, hold.amount]  # available funds go down, held funds up
    statement.write(
        "hold_balances",
        """UPDATE billing_ledgeraccount SET balance = balance + CASE kind WHEN %s THEN -%s ELSE %s::numeric END
           WHERE id IN (SELECT id FROM funds) AND {guard}""",
        moved,
    )
    statement.write(
        "hold_postings",
        """INSERT INTO billing_posting (transaction_id, account_id, amount)
           SELECT hold_transaction.id, funds.id, CASE funds.kind WHEN %s THEN -%s ELSE %s::numeric END
           FROM hold_transaction, funds WHERE {guard}""",
        moved,
    )
    return "(SELECT id FROM hold)"


def hold_refusal(*, organization_id: int, amount: Decimal) -> None:
    """Why `hold_place_in`'s check failed: raises InsufficientFunds with how much is missing; returns when the
    accounts were only missing (opened now, so the statement can run again)."""
    available = organization_account(organization_id=organization_id, kind=AccountKind.AVAILABLE)
    organization_account(organization_id=organization_id, kind=AccountKind.HELD)
    if available.minimum_balance is not None and available.balance - amount < available.minimum_balance:
        raise insufficient_funds(account=available, debit=-amount)


@transaction.atomic
def hold_increase(*, hold_id: int, amount: Decimal, idempotency_key: str) -> Hold:
    """Hold more on an active hold (an on-demand rental's runway). Idempotent per key."""
    _positive(amount, _("amount to hold"))
    hold = Hold.objects.select_for_update().get(pk=hold_id)
    if LedgerTransaction.objects.filter(idempotency_key=idempotency_key).exists():
        return hold
    if hold.status != Hold.Status.ACTIVE:
        raise HoldResolved(_("This hold is already settled."))
    _hold_move(hold=hold, amount=amount, idempotency_key=idempotency_key, kind=TransactionKind.HOLD)
    hold.amount += amount
    hold.save(update_fields=["amount"])
    return hold


@transaction.atomic
def hold_increase_what_can_be(*, hold_id: int, amount: Decimal, idempotency_key: str) -> Hold:
    """Hold `amount` more, or as much of it as the organization can still spend (funds plus credit line)."""
    try:
        return hold_increase(hold_id=hold_id, amount=amount, idempotency_key=idempotency_key)
    except InsufficientFunds:
        hold = Hold.objects.select_related("organization").get(pk=hold_id)
        spendable = quantize_amount(wallet_get(organization=hold.organization).spendable)
        if spendable <= 0:
            return hold
        return hold_increase(hold_id=hold_id, amount=min(amount, spendable), idempotency_key=f"{idempotency_key}:part")


@transaction.atomic
def hold_capture(
    *, hold_id: int, amount: Decimal, provider: Organization, idempotency_key: str, memo: str
) -> LedgerTransaction:
    """Charge `amount` of the hold: held funds go to the provider's earnings less the platform fee.

    Idempotent per key: a replay returns the first capture, even after the hold was resolved. Never takes
    more than is still held (CaptureExceedsHold) and never from a resolved hold (HoldResolved).
    """
    _positive(amount, _("charge"))
    hold = Hold.objects.select_for_update().get(pk=hold_id)
    replay = LedgerTransaction.objects.filter(idempotency_key=idempotency_key).first()
    if replay is not None:
        return replay
    if hold.status != Hold.Status.ACTIVE:
        raise HoldResolved(_("This hold is already settled; nothing more can be charged to it."))
    if amount > hold.remaining:
        raise CaptureExceedsHold(
            _("The charge of %(amount)s exceeds the %(remaining)s still held.")
            % {"amount": amount, "remaining": hold.remaining},
            held=str(hold.remaining),
        )
    earnings, fee = fee_split(amount=amount, fee_percent=platform_fee_percent(provider=provider))
    txn, _posted = ledger_post(
        idempotency_key=idempotency_key,
        kind=TransactionKind.CAPTURE,
        lines=[
            (organization_account(organization_id=hold.organization_id, kind=AccountKind.HELD), -amount),
            (organization_account(organization_id=provider.pk, kind=AccountKind.EARNINGS), earnings),
            (platform_account(kind=AccountKind.PLATFORM_REVENUE), fee),
        ],
        memo=memo,
        organization=hold.organization,
        reference=hold.reference,
    )
    hold.captured_amount += amount
    hold.save(update_fields=["captured_amount"])
    return txn


def capture_fee(*, transaction_id: int) -> Decimal:
    """The platform's part of a capture, as `hold_capture` posted it (zero when there was no fee line)."""
    fee = Posting.objects.filter(transaction_id=transaction_id, account__kind=AccountKind.PLATFORM_REVENUE)
    return next(iter(fee.values_list("amount", flat=True)), ZERO)


def _hold_resolve(*, hold_id: int, status: Hold.Status) -> Hold:
    hold = Hold.objects.select_for_update().get(pk=hold_id)
    if hold.status != Hold.Status.ACTIVE:
        return hold  # resolves at most once: a second release or expiry changes nothing
    remaining = hold.remaining
    if remaining > ZERO:
        _hold_move(
            hold=hold, amount=-remaining, idempotency_key=f"hold-release:{hold.pk}", kind=TransactionKind.RELEASE
        )
    hold.status, hold.resolved_at = status, now()
    hold.save(update_fields=["status", "resolved_at"])
    return hold


@transaction.atomic
def hold_release(*, hold_id: int) -> Hold:
    """Return what was not captured to available funds and close the hold. Idempotent."""
    return _hold_resolve(hold_id=hold_id, status=Hold.Status.RELEASED)


@transaction.atomic
def hold_expire(*, hold_id: int) -> Hold:
    hold = _hold_resolve(hold_id=hold_id, status=Hold.Status.EXPIRED)
    logger.info("hold expired", extra={"hold_id": hold.pk, "organization_id": hold.organization_id})
    return hold
