"""Storefront pages: selectors out, templates; htmx asks for the fragments."""

import math
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from billing.money import round_to_minor_unit
from marketplace.core.errors import DomainError
from marketplace.core.regions import Region
from marketplace.filters import DEFAULT_PRECISION, ModelServiceFilterSet, OfferingFilterSet
from marketplace.forms import EstimatorForm, PlacementForm, PriceCalculatorForm, RentalOrderForm
from marketplace.models import Precision, ResidencyZone, SiteTier
from marketplace.selectors import catalogue
from marketplace.services.placement import (
    EXCLUSION_REASONS,
    PlacementRequest,
    offering_price,
    placement_quote,
    training_estimate,
)
from marketplace.views.applications import gateway_url, try_it

PAGE_SIZE = 20
RESERVED_TERM_LABELS = [_("Reserved 1 week"), _("Reserved 1 month"), _("Reserved 3 months")]
MAX_COMPARED = 4
ESTIMATE_QUOTE_ACCELERATORS = 8  # the estimator's "quote it" link asks for one 8-accelerator node


class CappedPaginator(Paginator):
    """Counts at most COUNT_CAP + 1 matches: past that the page says "1000+", and counting stays cheap."""

    COUNT_CAP = 1000

    @cached_property
    def count(self) -> int:
        # No ordering and one column: the database may stop at the cap instead of sorting every match.
        return self.object_list.order_by().values("pk")[: self.COUNT_CAP + 1].count()

    @property
    def count_is_capped(self) -> bool:
        return self.count > self.COUNT_CAP


CHECKBOX_FACETS = ("vendor", "accelerator", "region", "tier", "zone")


def _checkbox_facets(form) -> list[tuple[object, str]]:
    """(bound field, its checkboxes as HTML) for the facets shown as checkbox lists.

    Built with format_html_join rather than template loops: some 80 checkboxes per page cost more
    in the template engine than the page's query.
    """
    facets = []
    for name in CHECKBOX_FACETS:
        field = form[name]
        choices = field.field.choices
        chosen = {str(value) for value in field.value() or []}
        boxes = format_html_join(
            "",
            '<div class="form-check"><input class="form-check-input" type="checkbox" name="{}" value="{}" '
            'id="id_{}_{}"{}><label class="form-check-label" for="id_{}_{}">{}</label></div>',
            (
                (name, value, name, index, mark_safe(" checked") if str(value) in chosen else "", name, index, label)
                for index, (value, label) in enumerate(choices() if callable(choices) else choices)
            ),
        )
        facets.append((field, boxes))
    return facets


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _query_without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def home(request: HttpRequest) -> HttpResponse:
    context = {"regions": Region.choices, "cheapest": catalogue.offering_list()[:6]}
    return render(request, "marketplace/home.html", context)


@dataclass
class RowsPage:
    """A page found without counting: one extra row tells whether a next page exists."""

    object_list: list
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_other_pages(self) -> bool:
        return self.has_previous or self.has_next

    def next_page_number(self) -> int:
        return self.number + 1

    def previous_page_number(self) -> int:
        return self.number - 1

    def __iter__(self):
        return iter(self.object_list)

    @staticmethod
    def number_of(raw_number: str | None) -> int:
        return int(raw_number) if raw_number and raw_number.isdigit() and int(raw_number) > 0 else 1

    @classmethod
    def of_window(cls, window: list, number: int, size: int = PAGE_SIZE) -> "RowsPage":
        return cls(object_list=window[:size], number=number, has_next=len(window) > size)


def _offering_facets(request: HttpRequest) -> QueryDict:
    facets = request.GET.copy()
    facets.setdefault("precision", DEFAULT_PRECISION)  # so the form shows the precision the table uses
    return facets


def _offering_filterset(request: HttpRequest) -> OfferingFilterSet:
    return OfferingFilterSet(_offering_facets(request), queryset=catalogue.offering_list())


def offering_count(request: HttpRequest) -> HttpResponse:
    """The number of matches, fetched by the list after it has shown its rows: counting every match can cost
    more than the page itself, so the page does not wait for it."""
    paginator = CappedPaginator(_offering_filterset(request).qs, PAGE_SIZE)
    return render(request, "marketplace/partials/_offering_count.html", {"paginator": paginator})


URL_ID_SENTINEL = 987_654_321_123
OFFERING_ROW_HTML = (
    '<tr><td><input class="form-check-input" type="checkbox" name="ids" value="{}" aria-label="{} {}"></td>'
    '<td><a href="{}">{}</a><div class="small text-muted">{}</div></td>'
    "<td>{} {} × {}{} {}</td>"
    '<td class="text-end">{} GB</td><td class="text-end">{}</td>'
    '<td>{} · {}<div class="small text-muted">{}</div></td>'
    '<td class="text-end fw-semibold">¥{}{}</td><td>{}</td></tr>'
)


def _offering_rows_html(rows: list[dict], precision: str) -> str:
    """The storefront table's rows from flat rows, in one pass.

    The catalogue's hottest page: the template engine spent more on twenty rows (lookups, escaping, lazy labels
    resolved per cell) than the database on the query, so labels are resolved once per request and the rows
    are written by format_html_join, which escapes every value.
    """
    regions, tiers, zones = (
        {value: str(label) for value, label in choices}
        for choices in (Region.choices, SiteTier.choices, ResidencyZone.choices)
    )
    compare, verified, unverified = gettext("Compare"), gettext("verified"), gettext("unverified")
    domestic = mark_safe(' <span class="badge text-bg-danger">信创</span>')  # noqa: S308 - a constant
    verified_badge = format_html('<span class="badge text-bg-success">{}</span>', verified)
    unverified_badge = format_html('<span class="badge text-bg-light border">{}</span>', unverified)
    sold_out = format_html('<span class="text-danger">{}</span>', gettext("sold out"))
    interruptible = gettext("interruptible")
    reliability_title = gettext("Reliability: the share of time its nodes were online")
    # One reverse() for the whole table: resolving the URL per row cost more than writing the row.
    detail_prefix, detail_suffix = reverse("storefront:offering-detail", args=[URL_ID_SENTINEL]).split(
        str(URL_ID_SENTINEL)
    )

    def cells(row: dict) -> tuple:
        free = row["capacity_nodes"] - row["rented_nodes"]
        peak = row[f"accelerator__tflops_{precision}"]
        spot = row["interruptible_price"]
        return (
            row["id"], compare, row["name"],
            f"{detail_prefix}{row['id']}{detail_suffix}", row["name"], row["provider__name"],
            row["accelerator__vendor"], row["accelerator__name"], row["accelerators_per_node"],
            domestic if row["accelerator__is_domestic"] else "",
            format_html(
                '{}<span class="small text-muted" title="{}"> {}%</span>',
                verified_badge if row["verified_at"] else unverified_badge,
                reliability_title,
                (row["reliability"] * 100).quantize(Decimal("0.1")),
            )
            if row["reliability"] is not None
            else (verified_badge if row["verified_at"] else unverified_badge),
            row["accelerator__memory_gb"], "—" if peak is None else peak,
            regions.get(row["site__region"], row["site__region"]), tiers.get(row["site__tier"], row["site__tier"]),
            zones.get(row["site__residency_zone"], row["site__residency_zone"]),
            round_to_minor_unit(row["on_demand_price"]),
            format_html('<div class="small text-muted">{} ¥{}</div>', interruptible, round_to_minor_unit(spot))
            if spot
            else "",
            format_html('<span class="text-success">{}/{}</span>', free, row["capacity_nodes"])
            if free > 0
            else sold_out,
        )  # fmt: skip

    return format_html_join("\n", OFFERING_ROW_HTML, (cells(row) for row in rows))


def offering_list(request: HttpRequest) -> HttpResponse:
    facets = _offering_facets(request)
    number = RowsPage.number_of(request.GET.get("page"))
    window_at = {"filters": facets, "offset": (number - 1) * PAGE_SIZE, "limit": PAGE_SIZE + 1}
    filter_errors = None
    try:
        window = catalogue.offering_rows_page(**window_at)
    except ValidationError as invalid:  # shown above the list; the other facets still apply
        filter_errors = invalid.message_dict
        window = catalogue.offering_rows_page(**window_at, strict=False)
    page = RowsPage.of_window(window, number)
    precision = facets.get("precision") if facets.get("precision") in Precision.values else DEFAULT_PRECISION
    context = {
        "page": page,
        "rows_html": _offering_rows_html(page.object_list, precision),
        "precision": precision,
        "query": _query_without_page(request),
        "compare_limit": MAX_COMPARED,
        "filter_errors": filter_errors,
    }
    if _is_htmx(request):
        return render(request, "marketplace/partials/_offering_results.html", context)
    # The facet form is rendered only when its cached fragment (keyed by language and facets) has expired.
    filterset = OfferingFilterSet(facets, queryset=catalogue.offering_list())
    context.update(filterset=filterset, checkbox_facets=lambda: _checkbox_facets(filterset.form))
    return render(request, "marketplace/offering_list.html", context)


def offering_detail(request: HttpRequest, pk: int) -> HttpResponse:
    offering = get_object_or_404(catalogue.offering_list(), pk=pk)
    history = list(catalogue.offering_price_history(offering=offering)[:50])
    context = {
        "offering": offering,
        "calculator": PriceCalculatorForm(offering=offering),
        "order_form": RentalOrderForm(offering=offering, auto_id="order-%s"),
        "runway_hours": settings.RENTAL_RUNWAY_HOURS,
        "history": history,
        "chart": {
            "labels": [change.effective_at.strftime("%Y-%m-%d") for change in reversed(history)],
            "on_demand": [str(change.on_demand_price) for change in reversed(history)],
        },
        "peaks": [
            (p, offering.accelerator.peak_tflops(p)) for p in ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")
        ],
        "verified": _verified_rows(offering),
        "reliability_percent": (offering.reliability * 100).quantize(Decimal("0.1")) if offering.reliability else None,
        "reliability_window_days": settings.NODE_RELIABILITY_WINDOW_DAYS,
    }
    return render(request, "marketplace/offering_detail.html", context)


def _verified_rows(offering) -> list[tuple[str, Decimal, Decimal | None, Decimal]]:
    """(precision, verified TFLOPS per accelerator, share of the datasheet, yuan per verified TFLOPS-hour)."""
    rows = []
    for precision in Precision.values:
        measured = offering.verified_tflops.get(precision)
        if not measured:
            continue
        measured = Decimal(str(measured))
        peak = offering.accelerator.peak_tflops(precision)
        share = (measured / peak * 100).quantize(Decimal("1")) if peak else None
        rows.append((precision, measured, share, (offering.on_demand_price / measured).quantize(Decimal("0.0001"))))
    return rows


def offering_price_calculator(request: HttpRequest, pk: int) -> HttpResponse:
    offering = get_object_or_404(catalogue.offering_list(), pk=pk)
    form = PriceCalculatorForm(request.GET, offering=offering)
    estimate, error = None, None
    if form.is_valid():
        try:
            estimate = offering_price(offering=offering, **form.cleaned_data)
        except DomainError as exc:
            error = exc.detail
    return render(
        request, "marketplace/partials/_price_estimate.html", {"form": form, "estimate": estimate, "error": error}
    )


def offering_compare(request: HttpRequest) -> HttpResponse:
    ids = [int(i) for i in request.GET.getlist("ids") if i.isdigit()][:MAX_COMPARED]
    offerings = list(catalogue.offering_list().filter(pk__in=ids))
    context = {
        "offerings": offerings,
        "too_many": len(request.GET.getlist("ids")) > MAX_COMPARED,
        "peak_rows": [(p.label, [o.accelerator.peak_tflops(p.value) for o in offerings]) for p in Precision],
    }
    return render(request, "marketplace/offering_compare.html", context)


def model_service_list(request: HttpRequest) -> HttpResponse:
    filterset = ModelServiceFilterSet(request.GET, queryset=catalogue.model_service_list())
    page = CappedPaginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"filterset": filterset, "page": page, "query": _query_without_page(request)}
    template = (
        "marketplace/partials/_model_results.html" if _is_htmx(request) else "marketplace/model_service_list.html"
    )
    return render(request, template, context)


def model_service_detail(request: HttpRequest, pk: int) -> HttpResponse:
    service = get_object_or_404(catalogue.model_service_list(), pk=pk)
    context = {
        "service": service,
        "gateway_url": gateway_url(request),
        "try_it": try_it(request, model=f"{service.provider.slug}/{service.slug}", modality=service.modality),
    }
    return render(request, "marketplace/model_service_detail.html", context)


def placement(request: HttpRequest) -> HttpResponse:
    """The 算力调度 form: requirements in, ranked quotes and the reasons for the rest out."""
    form = PlacementForm(request.GET or None)
    result = None
    if form.is_valid():
        data = dict(form.cleaned_data)
        accelerator = data.pop("accelerator")
        placement_request = PlacementRequest(accelerator_slug=accelerator.slug if accelerator else "", **data)
        result = placement_quote(request=placement_request, offerings=catalogue.offering_list())
    exclusions = []
    if result is not None:
        for reason, count in sorted(result.excluded_counts.items(), key=lambda item: -item[1]):
            examples = [offering.name for offering, r in result.excluded if r == reason]
            exclusions.append((EXCLUSION_REASONS[reason], count, examples))
    context = {"form": form, "result": result, "exclusions": exclusions}
    template = "marketplace/partials/_placement_results.html" if _is_htmx(request) else "marketplace/placement.html"
    return render(request, template, context)


def estimator(request: HttpRequest) -> HttpResponse:
    form = EstimatorForm(request.GET or None)
    estimate, rows = None, []
    if form.is_valid():
        accelerators = list(catalogue.accelerator_list())
        try:
            estimate = training_estimate(accelerators=accelerators, **form.cleaned_data)
        except DomainError as error:
            form.add_error(None, error.detail)
        else:
            hours = estimate.accelerator_hours
            rows = sorted(
                (
                    (a, hours[a.slug], math.ceil(hours[a.slug] / ESTIMATE_QUOTE_ACCELERATORS))
                    for a in accelerators
                    if a.slug in hours
                ),
                key=lambda row: row[1],
            )
    context = {"form": form, "estimate": estimate, "rows": rows, "quote_accelerators": ESTIMATE_QUOTE_ACCELERATORS}
    return render(request, "marketplace/estimator.html", context)
