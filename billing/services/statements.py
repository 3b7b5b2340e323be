"""Monthly statements: an organization's funds (available plus held) over one calendar month.

Closing is idempotent and serialised per organization (its row is locked), so numbers run 1, 2, 3 … without
gaps and a period closed twice, even concurrently, has one statement.
"""

import logging
from datetime import date, datetime, time
from decimal import Decimal

from django.db import transaction
from django.db.models import Q
from django.utils.timezone import get_current_timezone, localdate
from django.utils.translation import gettext as _

from accounts.models import Organization
from billing.models import AccountKind, Posting, Statement, TransactionKind
from billing.money import amount_sum, quantize_amount
from marketplace.core.errors import Conflict, DomainError

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
FUNDS = (AccountKind.AVAILABLE, AccountKind.HELD)
# Where each kind of transaction lands on a statement; holds and releases move funds between available and
# held, so they net to zero on the organization's funds and need no line.
STATEMENT_FIELD_OF_KIND = {
    TransactionKind.TOP_UP: "top_ups",
    TransactionKind.CAPTURE: "charges",
    TransactionKind.CHARGE_REFUND: "charges",
    TransactionKind.REFUND: "refunds",
    TransactionKind.REFUND_REVERSAL: "refunds",
    TransactionKind.ADJUSTMENT: "adjustments",
}


def month_after(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def month_before(day: date) -> date:
    return date(day.year - (day.month == 1), (day.month - 2) % 12 + 1, 1)


def day_start(day: date) -> datetime:
    """Midnight at the start of `day` in the platform's time zone."""
    return datetime.combine(day, time.min, tzinfo=get_current_timezone())


@transaction.atomic
def statement_close(*, organization_id: int, period_start: date) -> Statement:
    """Close the calendar month starting on `period_start` (a first day, in the platform's time zone).

    Idempotent: a closed period returns its statement. Raises DomainError for a date that is not a first day,
    Conflict for a month not over yet or one older than the latest statement.
    """
    if period_start.day != 1:
        raise DomainError(_("A statement period starts on the first day of a month."), code="invalid_period")
    period_end = month_after(period_start)
    if period_end > localdate():
        raise Conflict(_("That month is not over yet."), code="period_open")
    # The organization row is the lock that serialises closes: numbers are taken and used in one transaction.
    Organization.objects.select_for_update().filter(pk=organization_id).first()
    existing = Statement.objects.filter(organization_id=organization_id, period_start=period_start).first()
    if existing is not None:
        return existing
    latest = Statement.objects.filter(organization_id=organization_id).order_by("-number").first()
    if latest is not None and latest.period_start > period_start:
        raise Conflict(_("A later month is already closed."), code="period_closed")
    start, end = day_start(period_start), day_start(period_end)
    funds = Posting.objects.filter(account__organization_id=organization_id, account__kind__in=FUNDS)
    before = funds.filter(transaction__created_at__lt=start)
    opening = quantize_amount(before.aggregate(total=amount_sum("amount", default=ZERO))["total"])
    in_period = funds.filter(transaction__created_at__gte=start, transaction__created_at__lt=end)
    totals = dict.fromkeys(set(STATEMENT_FIELD_OF_KIND.values()), ZERO)
    for row in in_period.values("transaction__kind").annotate(total=amount_sum("amount")):
        field = STATEMENT_FIELD_OF_KIND.get(row["transaction__kind"])
        total = quantize_amount(row["total"])
        if field is not None:
            totals[field] += total
        elif total != 0:  # a kind that moves the organization's funds must have a line
            raise ValueError(f"transaction kind {row['transaction__kind']} has no statement line")
    charged = Q(transaction__kind=TransactionKind.CAPTURE)  # from held funds, or available (subscriptions)
    charge_refunded = Q(transaction__kind=TransactionKind.CHARGE_REFUND, account__kind=AccountKind.AVAILABLE)
    charge_lines = [
        {
            "reference": row["transaction__reference"],
            "description": row["transaction__memo"],
            "amount": str(-quantize_amount(row["total"])),
        }
        for row in in_period.filter(charged | charge_refunded)
        .values("transaction__reference", "transaction__memo")
        .annotate(total=amount_sum("amount"))
        .order_by("total", "transaction__reference")
    ]
    statement = Statement.objects.create(
        organization_id=organization_id,
        number=(latest.number if latest else 0) + 1,
        period_start=period_start,
        period_end=period_end,
        opening_balance=opening,
        top_ups=totals["top_ups"],
        charges=-totals["charges"],
        refunds=-totals["refunds"],
        adjustments=totals["adjustments"],
        closing_balance=opening + sum(totals.values(), ZERO),
        charge_lines=charge_lines,
    )
    logger.info("statement closed", extra={"organization_id": organization_id, "number": statement.number})
    return statement
