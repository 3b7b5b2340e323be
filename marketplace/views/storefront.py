"""Storefront pages: selectors out, templates; htmx asks for the fragments."""

import math
from dataclasses import dataclass

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.functional import cached_property
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _

from marketplace.core.errors import DomainError
from marketplace.core.regions import Region
from marketplace.filters import DEFAULT_PRECISION, ModelServiceFilterSet, OfferingFilterSet
from marketplace.forms import EstimatorForm, PlacementForm, PriceCalculatorForm
from marketplace.models import Precision
from marketplace.selectors import catalogue
from marketplace.services.placement import (
    EXCLUSION_REASONS,
    PlacementRequest,
    offering_price,
    placement_quote,
    training_estimate,
)

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

    @classmethod
    def of(cls, queryset, raw_number: str | None, size: int = PAGE_SIZE) -> "RowsPage":
        number = int(raw_number) if raw_number and raw_number.isdigit() and int(raw_number) > 0 else 1
        rows = list(queryset[(number - 1) * size : number * size + 1])
        return cls(object_list=rows[:size], number=number, has_next=len(rows) > size)


def _offering_filterset(request: HttpRequest) -> OfferingFilterSet:
    facets = request.GET.copy()
    facets.setdefault("precision", DEFAULT_PRECISION)  # so the form shows the precision the table uses
    return OfferingFilterSet(facets, queryset=catalogue.offering_list())


def offering_count(request: HttpRequest) -> HttpResponse:
    """The number of matches, fetched by the list after it has shown its rows: counting every match can cost
    more than the page itself, so the page does not wait for it."""
    paginator = CappedPaginator(_offering_filterset(request).qs, PAGE_SIZE)
    return render(request, "marketplace/partials/_offering_count.html", {"paginator": paginator})


def offering_list(request: HttpRequest) -> HttpResponse:
    filterset = _offering_filterset(request)
    page = RowsPage.of(filterset.qs, request.GET.get("page"))
    precision = (filterset.form.cleaned_data.get("precision") if filterset.is_valid() else None) or DEFAULT_PRECISION
    for offering in page:
        offering.peak_at_precision = offering.accelerator.peak_tflops(precision)
    context = {
        "filterset": filterset,
        "checkbox_facets": _checkbox_facets(filterset.form),
        "page": page,
        "precision": precision,
        "query": _query_without_page(request),
        "compare_limit": MAX_COMPARED,
    }
    template = "marketplace/partials/_offering_results.html" if _is_htmx(request) else "marketplace/offering_list.html"
    return render(request, template, context)


def offering_detail(request: HttpRequest, pk: int) -> HttpResponse:
    offering = get_object_or_404(catalogue.offering_list(), pk=pk)
    history = list(catalogue.offering_price_history(offering=offering)[:50])
    context = {
        "offering": offering,
        "calculator": PriceCalculatorForm(offering=offering),
        "history": history,
        "chart": {
            "labels": [change.effective_at.strftime("%Y-%m-%d") for change in reversed(history)],
            "on_demand": [str(change.on_demand_price) for change in reversed(history)],
        },
        "peaks": [
            (p, offering.accelerator.peak_tflops(p)) for p in ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")
        ],
    }
    return render(request, "marketplace/offering_detail.html", context)


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
    return render(request, "marketplace/model_service_detail.html", {"service": service})


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
