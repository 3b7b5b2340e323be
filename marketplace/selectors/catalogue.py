"""Reads of the catalogue. Buyers see published items only; providers see their own, whatever the status."""

from collections.abc import Mapping

from django.db.models import QuerySet

from accounts.models import Organization
from marketplace.filters import ModelServiceFilterSet, OfferingFilterSet
from marketplace.models import AcceleratorModel, ModelService, Offering, OfferingPriceChange, Site


def site_list() -> QuerySet[Site]:
    return Site.objects.order_by("region", "name", "pk")


def accelerator_list() -> QuerySet[AcceleratorModel]:
    return AcceleratorModel.objects.order_by("vendor", "name", "pk")


def _offering_base() -> QuerySet[Offering]:
    return Offering.objects.select_related("site", "accelerator", "provider")


def offering_list(*, filters: Mapping[str, object] | None = None) -> QuerySet[Offering]:
    """Published offerings, narrowed and sorted by the storefront's facets (price first by default)."""
    qs = _offering_base().filter(status=Offering.Status.PUBLISHED).order_by("on_demand_price", "pk")
    return OfferingFilterSet(filters or {}, queryset=qs).qs


def offering_list_for_provider(*, provider: Organization) -> QuerySet[Offering]:
    return _offering_base().filter(provider=provider).order_by("-updated_at", "-pk")


def offering_price_history(*, offering: Offering) -> QuerySet[OfferingPriceChange]:
    return offering.price_changes.order_by("-effective_at", "-pk")


def model_service_list(*, filters: Mapping[str, object] | None = None) -> QuerySet[ModelService]:
    qs = (
        ModelService.objects.select_related("provider")
        .filter(status=ModelService.Status.PUBLISHED)
        .order_by("input_price_per_1k_tokens", "pk")
    )
    return ModelServiceFilterSet(filters or {}, queryset=qs).qs


def model_service_list_for_provider(*, provider: Organization) -> QuerySet[ModelService]:
    return ModelService.objects.select_related("provider").filter(provider=provider).order_by("-updated_at", "-pk")
