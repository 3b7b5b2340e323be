"""The ledger: the one way any balance changes. Every other billing service posts through `ledger_post`."""

import logging
from collections.abc import Sequence
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils.translation import gettext as _

from accounts.models import Organization
from billing.models import AccountKind, LedgerAccount, LedgerTransaction, Posting, TransactionKind
from billing.money import AMOUNT_QUANTUM, amount_sum, quantize_amount
from marketplace.core.errors import DomainError

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
HALF_QUANTUM = AMOUNT_QUANTUM / 2


class InsufficientFunds(DomainError):
    status_code, code = 402, "insufficient_funds"


class UnbalancedTransaction(ValueError):
    """A programming error: the lines of a transaction must sum to zero."""


def organization_account(*, organization_id: int, kind: AccountKind) -> LedgerAccount:
    """The organization's account of that kind, opened on first use with a floor of zero."""
    account, _created = LedgerAccount.objects.get_or_create(
        organization_id=organization_id,
        kind=kind,
        currency=settings.PLATFORM_CURRENCY,
        defaults={"minimum_balance": ZERO},
    )
    return account


def platform_account(*, kind: AccountKind) -> LedgerAccount:
    account, _created = LedgerAccount.objects.get_or_create(
        organization=None, kind=kind, currency=settings.PLATFORM_CURRENCY
    )
    return account


def insufficient_funds(*, account: LedgerAccount, debit: Decimal) -> InsufficientFunds:
    """The error for a debit (negative) that would take the account below its floor, with how much is missing."""
    missing = (account.minimum_balance or ZERO) - (account.balance + debit)
    return InsufficientFunds(
        _("Insufficient funds: %(missing)s %(currency)s more is needed.")
        % {"missing": f"{missing:.2f}", "currency": settings.PLATFORM_CURRENCY},
        missing=str(missing),
        currency=settings.PLATFORM_CURRENCY,
    )


@transaction.atomic
def ledger_post(
    *,
    idempotency_key: str,
    kind: TransactionKind,
    lines: Sequence[tuple[LedgerAccount, Decimal]],
    memo: str,
    organization: Organization | None = None,
    reference: str = "",
    enforce_minimum: bool = True,
) -> tuple[LedgerTransaction, bool]:
    """Post a balanced transaction once per `idempotency_key`; returns it and whether this call posted it.

    Atomic. Accounts are updated in primary-key order (so concurrent posts never deadlock), each with a
    conditional UPDATE that refuses to take a balance below its floor: the check and the write are one
    statement, so parallel debits cannot overspend. Raises InsufficientFunds (nothing written) when a debit
    would cross a floor; `enforce_minimum=False` records a move that already happened outside the platform.
    """
    by_account: dict[int, Decimal] = {}
    for account, amount in lines:
        by_account[account.pk] = by_account.get(account.pk, ZERO) + amount
    if sum(by_account.values(), ZERO) != 0:
        raise UnbalancedTransaction(f"{idempotency_key}: lines sum to {sum(by_account.values(), ZERO)}")
    by_account = {pk: amount for pk, amount in by_account.items() if amount != 0}
    if not by_account:
        raise UnbalancedTransaction(f"{idempotency_key}: nothing to post")
    try:
        with transaction.atomic():  # savepoint: a replayed key leaves the caller's transaction usable
            txn = LedgerTransaction.objects.create(
                idempotency_key=idempotency_key,
                kind=kind,
                memo=memo[:255],
                organization=organization,
                reference=reference,
            )
    except IntegrityError:
        return LedgerTransaction.objects.get(idempotency_key=idempotency_key), False
    for account_id in sorted(by_account):
        amount = by_account[account_id]
        target = LedgerAccount.objects.filter(pk=account_id)
        if amount < 0 and enforce_minimum:
            # Half a quantum of slack changes nothing where amounts are exact (every amount is a multiple of
            # 1e-8), and absorbs the float noise of SQLite, which does decimal arithmetic in floats.
            floor = F("minimum_balance") - amount - HALF_QUANTUM
            target = target.filter(Q(minimum_balance__isnull=True) | Q(balance__gte=floor))
        if not target.update(balance=F("balance") + amount):
            raise insufficient_funds(account=LedgerAccount.objects.get(pk=account_id), debit=amount)
    Posting.objects.bulk_create(
        Posting(transaction=txn, account_id=account_id, amount=amount) for account_id, amount in by_account.items()
    )
    return txn, True


@transaction.atomic
def credit_line_set(*, organization: Organization, limit: Decimal) -> LedgerAccount:
    """Approve a credit line: available funds may then go down to minus `limit`. Staff only (admin)."""
    if limit < 0:
        raise DomainError(_("A credit line cannot be negative."), code="invalid")
    account = organization_account(organization_id=organization.pk, kind=AccountKind.AVAILABLE)
    lowered = LedgerAccount.objects.filter(pk=account.pk, balance__gte=-limit).update(minimum_balance=-limit)
    if not lowered:
        raise DomainError(
            _("The balance is already below minus that limit; settle it before lowering the credit line."),
            code="credit_line_below_balance",
        )
    account.refresh_from_db()
    return account


def ledger_reconcile() -> list[dict]:
    """Compare every cached balance with the sum of its postings; log and return the mismatches."""
    accounts = LedgerAccount.objects.annotate(derived=amount_sum("postings__amount", default=ZERO)).order_by("pk")
    mismatches = [
        {"account_id": a.pk, "organization_id": a.organization_id, "kind": a.kind, "cached": a.balance,
         "derived": quantize_amount(a.derived)}
        for a in accounts.iterator(chunk_size=2000)
        if a.balance != quantize_amount(a.derived)
    ]  # fmt: skip
    for mismatch in mismatches:
        logger.error("ledger balance mismatch", extra={k: str(v) for k, v in mismatch.items()})
    logger.info("ledger reconciled", extra={"mismatches": len(mismatches)})
    return mismatches
