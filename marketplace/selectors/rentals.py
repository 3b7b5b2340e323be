"""Reads of rentals and their usage: every selector takes the organization it reads for."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, QuerySet
from django.db.models.functions import TruncDate
from django.utils.timezone import get_current_timezone, localdate, now

from accounts.models import Organization
from billing.models import UsageCharge, UsageEvent
from billing.money import amount_sum, quantize_amount
from billing.services.quotas import month_spend, period_bounds
from billing.services.statements import day_start
from marketplace.models import Offering, Rental, RentalTransition

ZERO = Decimal(0)


def rental_list(*, organization: Organization) -> QuerySet[Rental]:
    return Rental.objects.filter(organization=organization).order_by("-created_at", "-pk")


def rental_get(*, organization: Organization, pk: int) -> Rental | None:
    return rental_list(organization=organization).select_related("hold").filter(pk=pk).first()


def provider_rental_list(*, provider: Organization) -> QuerySet[Rental]:
    return Rental.objects.filter(provider=provider).select_related("organization").order_by("-created_at", "-pk")


def rental_timeline(*, rental: Rental) -> QuerySet[RentalTransition]:
    return rental.transitions.select_related("actor").order_by("at", "pk")


def rental_charge_series(*, rental: Rental) -> list[tuple[datetime, Decimal, Decimal]]:
    """(time, accelerator-hours so far, charged so far) after each rating: the rental's usage chart."""
    series, hours, charged = [], ZERO, ZERO
    for charge in (
        UsageCharge.objects.filter(rental=rental).order_by("period_end", "pk").only("period_end", "quantity", "amount")
    ):
        hours += charge.quantity / 3600
        charged += charge.amount
        series.append((charge.period_end, quantize_amount(hours), charged))
    return series


def _charges(organization: Organization, since: date) -> QuerySet[UsageCharge]:
    return UsageCharge.objects.filter(organization=organization, created_at__gte=day_start(since))


def usage_by_day(*, organization: Organization, days: int = 30) -> list[tuple[date, Decimal, Decimal]]:
    """(day, accelerator-hours, spend) for each of the last `days` days, zero-filled."""
    since = localdate() - timedelta(days=days - 1)
    rows = (
        _charges(organization, since)
        .annotate(day=TruncDate("created_at", tzinfo=get_current_timezone()))
        .values("day")
        .annotate(quantity=amount_sum("quantity"), amount=amount_sum("amount"))
    )
    by_day = {row["day"]: (row["quantity"], row["amount"]) for row in rows}
    series = []
    for day in (since + timedelta(days=offset) for offset in range(days)):
        quantity, amount = by_day.get(day, (ZERO, ZERO))
        series.append((day, quantize_amount(quantity / 3600), quantize_amount(amount)))
    return series


def usage_by_offering(*, organization: Organization, days: int = 30) -> list[dict]:
    """Spend and accelerator-hours per offering over the last `days` days, largest first."""
    since = localdate() - timedelta(days=days - 1)
    rows = (
        _charges(organization, since)
        .values("rental__offering_id", "rental__offering__name")
        .annotate(quantity=amount_sum("quantity"), amount=amount_sum("amount"), rentals=Count("rental", distinct=True))
        .order_by("-amount")
    )
    return [
        {"offering_id": row["rental__offering_id"], "offering": row["rental__offering__name"],
         "accelerator_hours": quantize_amount(row["quantity"] / 3600), "amount": quantize_amount(row["amount"]),
         "rentals": row["rentals"]}
        for row in rows
    ]  # fmt: skip


def usage_by_rental(*, organization: Organization, days: int = 30) -> list[dict]:
    since = localdate() - timedelta(days=days - 1)
    rows = (
        _charges(organization, since)
        .values("rental_id")
        .annotate(quantity=amount_sum("quantity"), amount=amount_sum("amount"))
        .order_by("-amount")
    )
    return [
        {"rental_id": row["rental_id"], "accelerator_hours": quantize_amount(row["quantity"] / 3600),
         "amount": quantize_amount(row["amount"])}
        for row in rows
    ]  # fmt: skip


def usage_charge_list(*, organization: Organization) -> QuerySet[UsageCharge]:
    return (
        UsageCharge.objects.filter(organization=organization)
        .select_related("rental__offering")
        .order_by("-created_at", "-pk")
    )


@dataclass(frozen=True)
class StillBilling:
    """Everything that costs money right now, and where the month ends up if it all keeps running."""

    rentals: list[Rental]
    per_hour: Decimal
    month_to_date: Decimal
    projected_month_total: Decimal
    month_ends_at: datetime


def still_billing(*, organization: Organization, moment: datetime | None = None) -> StillBilling:
    moment = moment or now()
    rentals = list(
        Rental.objects.filter(organization=organization, status__in=Rental.BILLED_STATUSES).order_by("started_at")
    )
    per_hour = sum((rental.price_per_hour for rental in rentals), ZERO)
    month_end = period_bounds(moment)[1]
    month_to_date = month_spend(organization_id=organization.pk, moment=moment)
    remaining_hours = Decimal((month_end - moment).total_seconds()) / 3600
    ahead = (
        rental.price_per_hour * _billable_hours_left(rental, moment, month_end, remaining_hours) for rental in rentals
    )
    projected = month_to_date + sum(ahead, ZERO)
    return StillBilling(rentals, per_hour, month_to_date, quantize_amount(projected), month_end)


def _billable_hours_left(rental: Rental, moment: datetime, month_end: datetime, remaining_hours: Decimal) -> Decimal:
    if rental.ends_at is None or rental.ends_at >= month_end:
        return remaining_hours
    return max(Decimal((rental.ends_at - moment).total_seconds()) / 3600, ZERO)


def offering_utilisation(*, provider: Organization, days: int = 14) -> list[dict]:
    """Per offering: nodes rented now, and the share of its accelerator-time sold per day (0–100 %)."""
    since = localdate() - timedelta(days=days - 1)
    offerings = Offering.objects.filter(provider=provider).exclude(status=Offering.Status.RETIRED).order_by("name")
    rows = (
        UsageEvent.objects.filter(rental__provider=provider, period_start__gte=day_start(since))
        .annotate(day=TruncDate("period_start", tzinfo=get_current_timezone()))
        .values("rental__offering_id", "day")
        .annotate(quantity=amount_sum("quantity"))
    )
    used = {(row["rental__offering_id"], row["day"]): row["quantity"] for row in rows}
    day_list = [since + timedelta(days=offset) for offset in range(days)]
    result = []
    for offering in offerings:
        capacity_seconds = Decimal(offering.capacity_nodes * offering.accelerators_per_node * 86400) or Decimal(1)
        percents = [round(used.get((offering.pk, day), ZERO) * 100 / capacity_seconds, 1) for day in day_list]
        result.append(
            {
                "offering": offering,
                "labels": [day.isoformat() for day in day_list],
                "values": [str(p) for p in percents],
            }
        )
    return result
