"""Reads of model calls through the gateway: every selector for pages and the API takes the organization."""

from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils.timezone import get_current_timezone, localdate

from accounts.models import Organization
from billing.money import amount_sum, quantize_amount
from billing.services.statements import day_start
from marketplace.models import ModelCall

ZERO = Decimal(0)


def model_call_list(*, organization: Organization) -> QuerySet[ModelCall]:
    return (
        ModelCall.objects.filter(organization=organization)
        .select_related("model_service__provider")
        .order_by("-created_at", "-pk")
    )


def model_call_spend(*, organization_id: int, start: datetime, end: datetime, api_key_id: int | None = None) -> Decimal:
    """What the organization's calls cost in [start, end), captured or not (the monthly cap counts them)."""
    calls = ModelCall.objects.filter(organization_id=organization_id, created_at__gte=start, created_at__lt=end)
    if api_key_id is not None:
        calls = calls.filter(api_key_id=api_key_id)
    return quantize_amount(calls.aggregate(total=amount_sum("cost", default=Decimal(0)))["total"])


def model_calls_uncaptured_cost(*, organization_id: int) -> Decimal:
    """What the organization's written calls cost that no capture has taken yet."""
    calls = ModelCall.objects.filter(organization_id=organization_id, ledger_transaction__isnull=True, cost__gt=0)
    return quantize_amount(calls.aggregate(total=amount_sum("cost", default=Decimal(0)))["total"])


def provider_model_call_list(*, provider: Organization) -> QuerySet[ModelCall]:
    """Calls on the provider's model services, without who made them."""
    return (
        ModelCall.objects.filter(model_service__provider=provider)
        .select_related("model_service__provider")
        .order_by("-created_at", "-pk")
    )


def _calls_since(calls: QuerySet[ModelCall], days: int) -> QuerySet[ModelCall]:
    return calls.filter(created_at__gte=day_start(localdate() - timedelta(days=days - 1)))


def _by_day(calls: QuerySet[ModelCall], days: int, amount) -> list[tuple[date, int, Decimal]]:
    """(day, calls, amount) for each of the last `days` days, zero-filled."""
    since = localdate() - timedelta(days=days - 1)
    rows = (
        _calls_since(calls, days)
        .annotate(day=TruncDate("created_at", tzinfo=get_current_timezone()))
        .values("day")
        .annotate(calls=Count("pk"), amount=amount_sum(amount))
    )
    by_day = {row["day"]: (row["calls"], row["amount"]) for row in rows}
    days_listed = (since + timedelta(days=offset) for offset in range(days))
    return [(day, by_day.get(day, (0, ZERO))[0], quantize_amount(by_day.get(day, (0, ZERO))[1])) for day in days_listed]


MODEL_COST = F("cost") - F("application_amount")  # what the provider's model took of a call (the rest: the app's)


def _by_service(calls: QuerySet[ModelCall], days: int, spend=None) -> list[dict]:
    rows = (
        _calls_since(calls, days)
        .values("model_service_id", "model_service__slug", "model_service__provider__slug", "model_service__name")
        .annotate(
            calls=Count("pk"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            spend=amount_sum(spend or F("cost")),
            earned=amount_sum(MODEL_COST - F("fee"), filter=Q(fee__isnull=False)),
        )
        .order_by("-spend", "model_service_id")
    )
    return [
        {
            "model_service_id": row["model_service_id"],
            "model": f"{row['model_service__provider__slug']}/{row['model_service__slug']}",
            "name": row["model_service__name"],
            "calls": row["calls"],
            "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "cost": quantize_amount(row["spend"]),
            "earned": quantize_amount(row["earned"] or ZERO),
        }
        for row in rows
    ]


def model_usage_by_day(*, organization: Organization, days: int = 30) -> list[tuple[date, int, Decimal]]:
    """(day, calls, spend) of the organization's model calls for each of the last `days` days."""
    return _by_day(ModelCall.objects.filter(organization=organization), days, "cost")


def model_usage_by_service(*, organization: Organization, days: int = 30) -> list[dict]:
    """Calls, tokens and spend per model service over the last `days` days, largest spend first."""
    return _by_service(ModelCall.objects.filter(organization=organization), days)


def provider_model_usage_by_day(*, provider: Organization, days: int = 30) -> list[tuple[date, int, Decimal]]:
    """(day, calls, what callers paid for the model) on the provider's services for each of the last `days` days."""
    return _by_day(ModelCall.objects.filter(model_service__provider=provider), days, MODEL_COST)


def provider_model_usage_by_service(*, provider: Organization, days: int = 30) -> list[dict]:
    """Per service of the provider: calls, tokens, what callers paid and what it earned (captured calls less the
    platform fee; a call earns once captured, seconds after it)."""
    return _by_service(ModelCall.objects.filter(model_service__provider=provider), days, MODEL_COST)
