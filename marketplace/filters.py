"""FilterSets shared by the storefront pages and the REST API: the same facets, the same SQL."""

import copy
import time

import django_filters
from django import forms
from django.db.models import ExpressionWrapper, F, FloatField, Q, QuerySet
from django.db.models.functions import Cast
from django.http import QueryDict
from django.utils.translation import gettext_lazy as _
from django_filters.filters import FilterMethod

from marketplace.core.regions import Region
from marketplace.models import AcceleratorModel, ModelService, Precision, ResidencyZone, SiteTier

DEFAULT_PRECISION = Precision.BF16
CHECKBOXES = forms.CheckboxSelectMultiple
# The facets filter through forward foreign keys only, so no row repeats: DISTINCT would only add a sort of
# every column (django-filter turns it on for multiple choices by default).


ACCELERATOR_CHOICES_TTL_SECONDS = 60
_accelerator_choices_cache: dict[str, tuple[float, list]] = {}


def _reference_choices(name: str, load) -> list:
    """Accelerator models are reference data that staff change rarely: validating a facet must not cost a
    query per request, so each process keeps the choices for a minute."""
    cached = _accelerator_choices_cache.get(name)
    if cached is None or cached[0] < time.monotonic():
        cached = (time.monotonic() + ACCELERATOR_CHOICES_TTL_SECONDS, load())
        _accelerator_choices_cache[name] = cached
    return cached[1]


def _vendor_choices():
    return _reference_choices(
        "vendor",
        lambda: [
            (v, v) for v in AcceleratorModel.objects.order_by("vendor").values_list("vendor", flat=True).distinct()
        ],
    )


def _accelerator_choices():
    return _reference_choices(
        "accelerator", lambda: list(AcceleratorModel.objects.order_by("vendor", "name").values_list("slug", "name"))
    )


class LeanFilterSet(django_filters.FilterSet):
    """A FilterSet that is built once per class, not once per request.

    django-filter deep-copies every filter (and with it the form field and widget) and creates a new form class
    on each instantiation; on the catalogue's hot path that cost more than the query. Filters are configuration
    that no request changes, so each request gets shallow copies (their own `parent`) sharing one set of form
    fields, and one form class per FilterSet class. Django's form still copies its fields per bound form.
    """

    def __init__(self, data=None, queryset=None, *, request=None, prefix=None):
        if queryset is None:
            queryset = self._meta.model._default_manager.all()
        self.is_bound = data is not None
        self.data = data or QueryDict()
        self.queryset, self.request, self.form_prefix = queryset, request, prefix
        self.filters = {}
        for name, shared in self.base_filters.items():
            shared.field  # noqa: B018 - built once on the class's filter, then shared by every copy
            filter_ = copy.copy(shared)
            filter_.model, filter_.parent = queryset.model, self
            if shared.method is not None:  # a method filter's proxy must resolve on this copy's parent
                filter_.filter = FilterMethod(filter_)
            self.filters[name] = filter_

    def get_form_class(self):
        cls = type(self)
        if "_form_class" not in cls.__dict__:
            cls._form_class = super().get_form_class()
        return cls._form_class


class OfferingFilterSet(LeanFilterSet):
    SORTS = [
        ("price", _("Price: low to high")),
        ("-price", _("Price: high to low")),
        ("price_per_tflops", _("Price per TFLOPS at the chosen precision")),
        ("-memory", _("Memory: most first")),
        ("-reliability", _("Reliability: most first")),
    ]

    q = django_filters.CharFilter(method="filter_text", label=_("Search"))
    vendor = django_filters.MultipleChoiceFilter(
        field_name="accelerator__vendor", choices=_vendor_choices, label=_("Vendor"), widget=CHECKBOXES, distinct=False
    )
    accelerator = django_filters.MultipleChoiceFilter(
        field_name="accelerator__slug",
        choices=_accelerator_choices,
        label=_("Accelerator"),
        widget=CHECKBOXES,
        distinct=False,
    )
    min_accelerators_per_node = django_filters.NumberFilter(
        field_name="accelerators_per_node", lookup_expr="gte", label=_("Accelerators per node, at least")
    )
    min_memory_gb = django_filters.NumberFilter(
        field_name="accelerator__memory_gb", lookup_expr="gte", label=_("Accelerator memory (GB), at least")
    )
    precision = django_filters.ChoiceFilter(
        choices=Precision.choices, method="filter_nothing", label=_("Precision"), empty_label=None
    )
    min_tflops = django_filters.NumberFilter(
        method="filter_min_tflops", label=_("Peak TFLOPS at that precision, at least")
    )
    region = django_filters.MultipleChoiceFilter(
        field_name="site__region", choices=Region.choices, label=_("Region"), widget=CHECKBOXES, distinct=False
    )
    tier = django_filters.MultipleChoiceFilter(
        field_name="site__tier", choices=SiteTier.choices, label=_("Tier"), widget=CHECKBOXES, distinct=False
    )
    zone = django_filters.MultipleChoiceFilter(
        field_name="site__residency_zone",
        choices=ResidencyZone.choices,
        label=_("Data-residency zone"),
        widget=CHECKBOXES,
        distinct=False,
    )
    # Ticked narrows the list; unticked (or false) leaves it alone: "only" facets, not "exclude" facets.
    domestic = django_filters.BooleanFilter(
        method="filter_domestic", label=_("Domestic (信创) only"), widget=forms.CheckboxInput
    )
    min_price = django_filters.NumberFilter(field_name="on_demand_price", lookup_expr="gte", label=_("Price from"))
    max_price = django_filters.NumberFilter(field_name="on_demand_price", lookup_expr="lte", label=_("Price up to"))
    available = django_filters.BooleanFilter(
        method="filter_available", label=_("Available now"), widget=forms.CheckboxInput
    )
    # Declared last: django-filter applies filters in declaration order, and sorting comes after narrowing.
    sort = django_filters.ChoiceFilter(choices=SORTS, method="filter_sort", label=_("Sort"), empty_label=None)

    def _precision(self) -> str:
        return self.form.cleaned_data.get("precision") or DEFAULT_PRECISION

    def filter_nothing(self, queryset: QuerySet, name: str, value) -> QuerySet:
        return queryset  # precision only qualifies min_tflops and sort

    def filter_text(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        for word in value.split():
            queryset = queryset.filter(
                Q(name__icontains=word)
                | Q(accelerator__name__icontains=word)
                | Q(accelerator__vendor__icontains=word)
                | Q(site__name__icontains=word)
                | Q(provider__name__icontains=word)
            )
        return queryset

    def filter_min_tflops(self, queryset: QuerySet, name: str, value) -> QuerySet:
        return queryset.filter(**{f"accelerator__tflops_{self._precision()}__gte": value})

    def filter_domestic(self, queryset: QuerySet, name: str, value: bool) -> QuerySet:
        return queryset.filter(accelerator__is_domestic=True) if value else queryset

    def filter_available(self, queryset: QuerySet, name: str, value: bool) -> QuerySet:
        return queryset.filter(capacity_nodes__gt=F("rented_nodes")) if value else queryset

    def filter_sort(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        if value == "-price":
            return queryset.order_by("-on_demand_price", "-pk")
        if value == "-reliability":
            return queryset.order_by(F("reliability").desc(nulls_last=True), "on_demand_price", "pk")
        if value == "-memory":
            return queryset.order_by("-accelerator__memory_gb", "on_demand_price", "pk")
        if value == "price_per_tflops":
            # A ranking key, not money (no amount is ever computed from it): the float cast keeps SQLite, which
            # stores 9.00 as 9, from integer-dividing; PostgreSQL ranks the same either way.
            peak = Cast(F(f"accelerator__tflops_{self._precision()}"), FloatField())
            ratio = ExpressionWrapper(F("on_demand_price") / peak, output_field=FloatField())
            return queryset.annotate(price_per_tflops=ratio).order_by(F("price_per_tflops").asc(nulls_last=True), "pk")
        return queryset.order_by("on_demand_price", "pk")


class ModelServiceFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_text", label=_("Search"))
    modality = django_filters.ChoiceFilter(choices=ModelService.Modality.choices, label=_("Modality"))
    model_family = django_filters.CharFilter(field_name="model_family", lookup_expr="iexact", label=_("Model family"))
    zone = django_filters.MultipleChoiceFilter(
        field_name="residency_zone", choices=ResidencyZone.choices, label=_("Data-residency zone")
    )
    min_context_length = django_filters.NumberFilter(
        field_name="context_length", lookup_expr="gte", label=_("Context length, at least")
    )
    max_input_price = django_filters.NumberFilter(
        field_name="input_price_per_1k_tokens", lookup_expr="lte", label=_("Input price per 1K tokens, up to")
    )

    def filter_text(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        for word in value.split():
            queryset = queryset.filter(
                Q(name__icontains=word) | Q(model_family__icontains=word) | Q(provider__name__icontains=word)
            )
        return queryset
