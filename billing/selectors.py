"""Reads of billing. Everything of a tenant is selected through its organization."""

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils.timezone import localdate, now

from accounts.models import Organization
from accounts.selectors import provider_is_approved
from billing.models import (
    AccountKind,
    Hold,
    LedgerAccount,
    LedgerTransaction,
    Payout,
    Posting,
    Statement,
    TopUp,
    TransactionKind,
)
from billing.money import amount_sum, quantize_amount

ZERO = Decimal(0)


@dataclass(frozen=True)
class Wallet:
    currency: str
    available: Decimal
    held: Decimal
    credit_limit: Decimal
    earnings: Decimal

    @property
    def spendable(self) -> Decimal:
        """What a new hold may take: available funds plus the unused credit line."""
        return self.available + self.credit_limit


def wallet_get(*, organization: Organization) -> Wallet:
    """The organization's balances in one query; accounts not opened yet read as zero."""
    accounts = {
        account.kind: account
        for account in LedgerAccount.objects.filter(organization=organization, currency=settings.PLATFORM_CURRENCY)
    }
    available = accounts.get(AccountKind.AVAILABLE)

    def balance(kind: str) -> Decimal:
        return accounts[kind].balance if kind in accounts else ZERO

    return Wallet(
        currency=settings.PLATFORM_CURRENCY,
        available=balance(AccountKind.AVAILABLE),
        held=balance(AccountKind.HELD),
        credit_limit=(available.credit_limit or ZERO) if available else ZERO,
        earnings=balance(AccountKind.EARNINGS),
    )


def transaction_list(*, organization: Organization) -> QuerySet[LedgerTransaction]:
    """Transactions that moved the organization's money, newest first, each with what it did to the
    organization's available funds, held funds and earnings (`*_change`)."""
    mine = Q(postings__account__organization=organization)

    def change(kind: str):
        return amount_sum("postings__amount", filter=Q(postings__account__kind=kind), default=ZERO)

    return (
        LedgerTransaction.objects.filter(mine)
        .annotate(
            available_change=change(AccountKind.AVAILABLE),
            held_change=change(AccountKind.HELD),
            earnings_change=change(AccountKind.EARNINGS),
        )
        .order_by("-created_at", "-pk")
    )


def top_up_list(*, organization: Organization) -> QuerySet[TopUp]:
    return TopUp.objects.filter(organization=organization).order_by("-created_at", "-pk")


def _daily_series(*, organization: Organization, account_kind: str, kinds: list[str], sign: int, days: int):
    """Per day over the last `days` days (every day present, zero where nothing moved): the sum of the
    organization's postings on one account kind from transactions of the given kinds, times `sign`."""
    first_day = localdate() - timedelta(days=days - 1)
    rows = (
        Posting.objects.filter(
            account__organization=organization,
            account__kind=account_kind,
            transaction__kind__in=kinds,
            transaction__created_at__gte=now() - timedelta(days=days),
        )
        .annotate(day=TruncDate("transaction__created_at"))
        .values("day")
        .annotate(total=amount_sum("amount"))
    )
    by_day = {row["day"]: sign * quantize_amount(row["total"]) for row in rows}
    return [(day, by_day.get(day, ZERO)) for day in (first_day + timedelta(n) for n in range(days))]


def spend_by_day(*, organization: Organization, days: int = 30) -> list[tuple[date, Decimal]]:
    """Charges per day: what captures took from held funds."""
    kinds = [TransactionKind.CAPTURE]
    return _daily_series(organization=organization, account_kind=AccountKind.HELD, kinds=kinds, sign=-1, days=days)


def earnings_by_day(*, provider: Organization, days: int = 30) -> list[tuple[date, Decimal]]:
    """A provider's earnings per day: captured charges less the platform fee, less charges refunded."""
    kinds = [TransactionKind.CAPTURE, TransactionKind.CHARGE_REFUND]
    return _daily_series(organization=provider, account_kind=AccountKind.EARNINGS, kinds=kinds, sign=1, days=days)


def payout_list(*, provider: Organization) -> QuerySet[Payout]:
    return Payout.objects.filter(organization=provider).order_by("-created_at", "-pk")


def hold_ids_due_to_expire(*, limit: int = 1000) -> list[int]:
    return list(
        Hold.objects.filter(status=Hold.Status.ACTIVE, expires_at__lte=now())
        .order_by("expires_at")
        .values_list("pk", flat=True)[:limit]
    )


def organization_ids_with_funds() -> list[int]:
    """Organizations that ever had money here: the ones that get monthly statements."""
    return list(
        LedgerAccount.objects.filter(kind=AccountKind.AVAILABLE, organization__isnull=False)
        .order_by("organization_id")
        .values_list("organization_id", flat=True)
    )


def statement_list(*, organization: Organization) -> QuerySet[Statement]:
    return Statement.objects.filter(organization=organization).order_by("-number")


def organization_earns(*, organization: Organization) -> bool:
    """Approved providers and organizations that sell applications have earnings to see and to pay out."""
    return provider_is_approved(organization=organization) or organization.applications.exists()
