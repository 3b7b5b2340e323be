"""Reads of the catalogue. Buyers see published items only; providers see their own, whatever the status."""

from collections import OrderedDict
from collections.abc import Mapping

from django.core.exceptions import EmptyResultSet, ValidationError
from django.db import connection
from django.db.models import QuerySet
from django.db.models.sql.compiler import SQLCompiler
from django.http import QueryDict

from accounts.models import Organization
from marketplace.core.queries import MAX_OFFSET
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
    return qs if filters is None else OfferingFilterSet(filters, queryset=qs).qs


OFFERING_ROW_FIELDS = (
    "id", "name", "description", "accelerators_per_node", "vcpu_per_node", "ram_gb_per_node", "disk_gb_per_node",
    "network_gbps", "capacity_nodes", "rented_nodes", "on_demand_price", "interruptible_price",
    "reserved_1w_discount_percent", "reserved_1m_discount_percent", "reserved_3m_discount_percent",
    "min_rental_hours", "max_rental_hours", "status", "published_at", "verified_at", "verified_tflops",
    "reliability", "metering", "provider__id", "provider__name",
    "site__id", "site__name", "site__slug", "site__region", "site__tier", "site__residency_zone", "site__operator",
    "site__pue",
    "accelerator__id", "accelerator__slug", "accelerator__vendor", "accelerator__name", "accelerator__memory_gb",
    "accelerator__memory_bandwidth_gbps", "accelerator__interconnect", "accelerator__is_domestic",
    "accelerator__tflops_fp64", "accelerator__tflops_fp32", "accelerator__tflops_tf32", "accelerator__tflops_bf16",
    "accelerator__tflops_fp16", "accelerator__tflops_fp8", "accelerator__tflops_int8", "accelerator__datasheet_note",
)  # fmt: skip


def offering_rows(queryset: QuerySet[Offering]) -> QuerySet:
    """The same offerings as flat rows: one query, no model instances (the catalogue's hot path)."""
    return queryset.values(*OFFERING_ROW_FIELDS)


PAGE_PARAMETERS = frozenset({"page", "page_size"})
COMPILED_PAGES_MAX = 512
_compiled_pages: OrderedDict[tuple, SQLCompiler] = OrderedDict()


def offering_rows_page(*, filters: QueryDict, offset: int, limit: int, strict: bool = True) -> list[dict]:
    """One window of `offering_rows` for the storefront's facets: the catalogue's hot path.

    Validating the facets and compiling the 45-column query cost several times what the database spends on it,
    so each process keeps the compiled query of the last COMPILED_PAGES_MAX distinct facet sets and windows
    (compiled SQL, never results: every call runs the query). Invalid facets raise ValidationError, or with
    `strict=False` are ignored (the pages say so) and their query is not kept.
    """
    if offset > MAX_OFFSET:  # a page past any table's rows (`?page=99999999999999999999`): empty, not an overflow
        return []
    key = (
        connection.alias,
        tuple(sorted((name, tuple(filters.getlist(name))) for name in filters if name not in PAGE_PARAMETERS)),
        offset,
        limit,
    )
    compiler = _compiled_pages.get(key)
    if compiler is None:
        filterset = OfferingFilterSet(filters, queryset=offering_list())
        valid = filterset.is_valid()
        if not valid and strict:
            raise ValidationError(filterset.errors)
        compiler = offering_rows(filterset.qs)[offset : offset + limit].query.get_compiler(connection.alias)
        try:
            compiler.compiled_sql = compiler.as_sql()
        except EmptyResultSet:  # a facet no row can match (a number past its column's range): no query to run
            compiler.compiled_sql = None
        if valid:
            _compiled_pages[key] = compiler
            if len(_compiled_pages) > COMPILED_PAGES_MAX:
                _compiled_pages.popitem(last=False)
    else:
        _compiled_pages.move_to_end(key)
    if compiler.compiled_sql is None:
        return []
    sql, params = compiler.compiled_sql
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [dict(zip(OFFERING_ROW_FIELDS, row, strict=True)) for row in compiler.results_iter(results=[rows])]


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
