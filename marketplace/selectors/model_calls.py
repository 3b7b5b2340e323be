"""Reads of model calls through the gateway: every selector for pages and the API takes the organization."""

from datetime import datetime
from decimal import Decimal

from django.db.models import QuerySet

from accounts.models import Organization
from billing.money import amount_sum, quantize_amount
from marketplace.models import ModelCall


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
