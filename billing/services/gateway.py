"""Gateway funds: one standing hold per organization that model calls reserve from, captured in batches.

A call cannot wait for a ledger transaction of its own (the gateway answers in about a millisecond), so funds are
held ahead in steps of GATEWAY_HOLD_STEP; each call reserves its worst case from what the hold still has free and
gives back what it did not cost, and a Celery task captures the real costs of many calls in one transaction.
"""

import uuid
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils.timezone import now
from django.utils.translation import gettext as _

from billing.models import AccountKind, GatewayFunds, Hold, LedgerTransaction, TransactionKind
from billing.money import quantize_amount
from billing.selectors import wallet_get
from billing.services.holds import hold_increase, hold_increase_what_can_be, hold_place, hold_release
from billing.services.ledger import ZERO, InsufficientFunds, ledger_post, organization_account, platform_account
from billing.services.quotas import month_spend, quota_get
from marketplace.core.errors import DomainError


class SpendCapReached(DomainError):
    status_code, code = 402, "budget_exceeded"


@dataclass(frozen=True)
class CallCharge:
    """What one model call costs its caller and how it splits: the model's part (`amount` less
    `application_amount`) to the provider less the platform's `fee`; an application's part to its seller less the
    platform's `application_fee`."""

    organization_id: int
    provider_id: int
    amount: Decimal
    fee: Decimal
    seller_id: int | None = None
    application_amount: Decimal = Decimal(0)
    application_fee: Decimal = Decimal(0)


def _funds_locked(organization_id: int) -> GatewayFunds:
    GatewayFunds.objects.get_or_create(organization_id=organization_id)
    return (
        GatewayFunds.objects.select_for_update(of=("self",))
        .select_related("hold", "organization")
        .get(pk=organization_id)
    )


@transaction.atomic
def gateway_funds_grow(*, organization_id: int, needed: Decimal, count_available_here: bool) -> Decimal:
    """Hold more for model calls: a step of GATEWAY_HOLD_STEP (at least `needed`), or what the organization can
    still spend if that is less, and never more than the monthly spend cap still allows (SpendCapReached when that
    is less than `needed`). Returns what was added, zero when not even `needed` can be held. With
    `count_available_here` the addition is also counted in `GatewayFunds.available` (no Redis)."""
    funds = _funds_locked(organization_id)
    spendable = quantize_amount(wallet_get(organization=funds.organization).spendable)
    budget_left = _budget_left(funds)
    amount = min(max(needed, settings.GATEWAY_HOLD_STEP), spendable, budget_left)
    if amount <= 0 or amount < needed:
        if budget_left < needed:
            raise SpendCapReached(_("This month's spend cap is reached; staff can raise it, or wait for the month."))
        return ZERO
    try:
        if funds.hold is not None and funds.hold.status == Hold.Status.ACTIVE:
            hold_increase(hold_id=funds.hold_id, amount=amount, idempotency_key=f"gateway-funds:{uuid.uuid4()}")
        else:
            funds.hold = hold_place(
                organization=funds.organization,
                amount=amount,
                idempotency_key=f"gateway-funds:{uuid.uuid4()}",
                reference=f"gateway:{organization_id}",
                description=_("Model API calls"),
            )
    except InsufficientFunds:  # spent elsewhere since the wallet was read
        return ZERO
    if count_available_here:
        funds.available += amount
    funds.save(update_fields=["hold", "available"])
    return amount


def _budget_left(funds: GatewayFunds) -> Decimal:
    """What the monthly cap still allows the hold to grow by: the cap less the month's spend and less what the hold
    keeps free for calls (what it holds beyond the costs of calls not captured yet). Calls only spend held funds,
    so they cannot pass the cap. Unlimited (the spendable funds bound it) without a cap."""
    from marketplace.selectors.model_calls import model_calls_uncaptured_cost

    cap = quota_get(organization_id=funds.pk).monthly_spend_cap
    if cap is None:
        return Decimal("Infinity")
    free = ZERO
    if funds.hold is not None and funds.hold.status == Hold.Status.ACTIVE:
        free = funds.hold.remaining - model_calls_uncaptured_cost(organization_id=funds.pk)
    return cap - month_spend(organization_id=funds.pk, moment=now()) - max(free, ZERO)


def gateway_funds_reserve(*, organization_id: int, amount: Decimal, dry_run: bool = False) -> bool:
    """Take `amount` from what the hold has free for calls (no Redis); False when it has less. `dry_run` only
    tells whether it could."""
    free = GatewayFunds.objects.filter(pk=organization_id, available__gte=amount)
    return free.exists() if dry_run else bool(free.update(available=F("available") - amount))


def gateway_funds_give_back(*, organization_id: int, amount: Decimal) -> None:
    GatewayFunds.objects.filter(pk=organization_id).update(available=F("available") + amount)


@transaction.atomic
def gateway_funds_release(*, organization_id: int, expected_remaining: Decimal | None = None) -> Decimal:
    """Give the organization's gateway hold back to its available funds when no call has anything reserved from it
    and no written call waits for capture; returns what was released (zero when it was not).

    On the embedded default nothing reserved means `available` is the whole remainder (the row lock keeps calls out
    meanwhile). With Redis the caller has already zeroed the Redis funds, having seen nothing reserved there, and
    passes the remainder it saw: a hold grown since then is kept."""
    from marketplace.selectors.model_calls import model_calls_uncaptured_cost

    funds = _funds_locked(organization_id)
    hold = funds.hold
    if hold is None or hold.status != Hold.Status.ACTIVE:
        return ZERO
    remaining = hold.remaining
    if remaining != (funds.available if expected_remaining is None else expected_remaining):
        return ZERO
    if model_calls_uncaptured_cost(organization_id=organization_id) > 0:
        return ZERO
    hold_release(hold_id=hold.pk)
    funds.hold, funds.available = None, ZERO
    funds.save(update_fields=["hold", "available"])
    return remaining


def gateway_funds_held(*, organization_id: int) -> Decimal:
    """What the organization's gateway hold still holds (captured costs excluded)."""
    funds = GatewayFunds.objects.select_related("hold").filter(pk=organization_id).first()
    return funds.hold.remaining if funds is not None and funds.hold is not None else ZERO


@transaction.atomic
def gateway_calls_capture(*, charges: list[CallCharge], idempotency_key: str) -> LedgerTransaction:
    """Capture many calls' costs in one ledger transaction: one line per account (each caller's held funds out,
    each provider's and seller's earnings and the platform's fees in), and each caller's gateway hold marked
    captured. Like a
    rating run's capture it names no organization: each one sees its own part. Idempotent per key."""
    replay = LedgerTransaction.objects.filter(idempotency_key=idempotency_key).first()
    if replay is not None:
        return replay
    by_caller: dict[int, Decimal] = defaultdict(Decimal)
    by_earner: dict[int, Decimal] = defaultdict(Decimal)  # providers and sellers
    fees = ZERO
    for charge in charges:
        by_caller[charge.organization_id] += charge.amount
        by_earner[charge.provider_id] += charge.amount - charge.application_amount - charge.fee
        if charge.seller_id is not None:
            by_earner[charge.seller_id] += charge.application_amount - charge.application_fee
        fees += charge.fee + charge.application_fee
    lines = []
    for organization_id in sorted(by_caller):
        funds = _funds_locked(organization_id)
        amount = by_caller[organization_id]
        if funds.hold.remaining < amount:  # usage beyond the worst case a call reserved: hold it first
            hold_increase_what_can_be(
                hold_id=funds.hold_id, amount=amount - funds.hold.remaining, idempotency_key=f"{idempotency_key}:more"
            )
        Hold.objects.filter(pk=funds.hold_id).update(captured_amount=F("captured_amount") + amount)
        lines.append((organization_account(organization_id=organization_id, kind=AccountKind.HELD), -amount))
    lines += [
        (organization_account(organization_id=provider_id, kind=AccountKind.EARNINGS), earned)
        for provider_id, earned in sorted(by_earner.items())
    ]
    lines.append((platform_account(kind=AccountKind.PLATFORM_REVENUE), fees))
    capture, _posted = ledger_post(
        idempotency_key=idempotency_key,
        kind=TransactionKind.CAPTURE,
        lines=lines,
        memo=_("Model API calls"),
        reference="gateway",
    )
    return capture
