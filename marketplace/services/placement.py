"""Placement (算力调度): match a request to published offerings, price it, and say why the rest do not fit.

Rentals take whole nodes: a request for N accelerators on nodes of K takes ceil(N / K) nodes and pays
for every accelerator on them. Quotes rank by total price, then by reliability, then by peak TFLOPS per yuan.
"""

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Case, CharField, Count, ExpressionWrapper, F, IntegerField, Q, QuerySet, Value, When
from django.db.models.lookups import GreaterThan, LessThan
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from marketplace.core.errors import DomainError
from marketplace.models import AcceleratorModel, Offering

SECONDS_PER_HOUR = 3600
QUOTE_LIMIT = 20
EXAMPLES_PER_REASON = 5
TRAINING_FLOPS_PER_PARAMETER_TOKEN = 6  # forward + backward pass of a dense transformer (Kaplan et al. 2020)


@dataclass(frozen=True)
class PlacementRequest:
    accelerators: int
    hours: int
    accelerator_slug: str = ""
    precision: str = "bf16"
    min_tflops: Decimal | None = None
    region: str = ""
    residency_zone: str = ""
    domestic_only: bool = False
    max_price_per_accelerator_hour: Decimal | None = None
    interruptible_allowed: bool = False


@dataclass(frozen=True)
class Quote:
    offering: Offering
    mode: str  # "on_demand" or "interruptible"
    nodes: int
    accelerators: int
    price_per_accelerator_hour: Decimal
    total_price: Decimal
    peak_tflops_per_yuan_hour: Decimal | None


@dataclass
class PlacementResult:
    quotes: list[Quote] = field(default_factory=list)
    excluded: list[tuple[Offering, str]] = field(default_factory=list)  # a few examples per reason
    excluded_counts: dict[str, int] = field(default_factory=dict)  # reason → how many offerings it excluded


EXCLUSION_REASONS = {
    "wrong_zone": gettext_lazy("Outside the requested data-residency zone"),
    "wrong_region": gettext_lazy("Outside the requested region"),
    "not_domestic": gettext_lazy("Not a domestic (信创) accelerator"),
    "wrong_accelerator": gettext_lazy("A different accelerator model"),
    "too_slow": gettext_lazy("Below the requested TFLOPS at that precision"),
    "too_expensive": gettext_lazy("Above the maximum price"),
    "no_capacity": gettext_lazy("Not enough free nodes"),
    "duration_out_of_range": gettext_lazy("The duration is outside the offering's minimum and maximum"),
}


class PricingMode:
    ON_DEMAND, INTERRUPTIBLE = "on_demand", "interruptible"
    RESERVED = {f"reserved_{term}": term for term in Offering.RESERVED_TERMS}  # reserved_1w, reserved_1m, reserved_3m


@dataclass(frozen=True)
class PriceEstimate:
    mode: str
    nodes: int
    accelerators: int
    hours: int
    price_per_accelerator_hour: Decimal
    total_price: Decimal


def offering_price(*, offering: Offering, accelerators: int, hours: int, mode: str) -> PriceEstimate:
    """What a rental would cost: whole nodes, the mode's price per accelerator-hour; a reserved term fixes the hours."""
    if accelerators < 1 or hours < 1:
        raise DomainError(_("Ask for at least one accelerator for at least one hour."), code="invalid_request")
    if mode == PricingMode.ON_DEMAND:
        price = offering.on_demand_price
    elif mode == PricingMode.INTERRUPTIBLE and offering.interruptible_price is not None:
        price = offering.interruptible_price
    elif mode in PricingMode.RESERVED and offering.reserved_discounts()[PricingMode.RESERVED[mode]] is not None:
        discount = offering.reserved_discounts()[PricingMode.RESERVED[mode]]
        price = offering.on_demand_price * (100 - discount) / 100
        hours = Offering.RESERVED_TERMS[PricingMode.RESERVED[mode]]
    else:
        raise DomainError(_("This offering is not sold in that mode."), code="mode_unavailable", mode=mode)
    nodes = math.ceil(accelerators / offering.accelerators_per_node)
    allocated = nodes * offering.accelerators_per_node
    return PriceEstimate(
        mode=mode,
        nodes=nodes,
        accelerators=allocated,
        hours=hours,
        price_per_accelerator_hour=price,
        total_price=price * allocated * hours,
    )


def _exclusion_reason(request: PlacementRequest, nodes_needed, unit_price) -> Case:
    """The first rule an offering breaks, as SQL: the hardest constraint first, the softest last; '' fits."""
    rules = []
    if request.residency_zone:
        rules.append(When(~Q(site__residency_zone=request.residency_zone), then=Value("wrong_zone")))
    if request.region:
        rules.append(When(~Q(site__region=request.region), then=Value("wrong_region")))
    if request.domestic_only:
        rules.append(When(accelerator__is_domestic=False, then=Value("not_domestic")))
    if request.accelerator_slug:
        rules.append(When(~Q(accelerator__slug=request.accelerator_slug), then=Value("wrong_accelerator")))
    if request.min_tflops is not None:
        peak = f"accelerator__tflops_{request.precision}"
        rules.append(
            When(Q(**{f"{peak}__isnull": True}) | Q(**{f"{peak}__lt": request.min_tflops}), then=Value("too_slow"))
        )
    if request.max_price_per_accelerator_hour is not None:
        rules.append(When(GreaterThan(unit_price, request.max_price_per_accelerator_hour), then=Value("too_expensive")))
    rules.append(
        When(
            Q(min_rental_hours__gt=request.hours) | Q(max_rental_hours__lt=request.hours),
            then=Value("duration_out_of_range"),
        )
    )
    rules.append(When(LessThan(F("capacity_nodes") - F("rented_nodes"), nodes_needed), then=Value("no_capacity")))
    return Case(*rules, default=Value(""), output_field=CharField())


def _quote_rank(quote: Quote) -> tuple:
    """Cheapest first; on a tie, the more reliable offering, then the more performance per yuan."""
    offering = quote.offering
    return (quote.total_price, -(offering.reliability or 0), -(quote.peak_tflops_per_yuan_hour or 0), offering.pk)


def placement_quote(
    *, request: PlacementRequest, offerings: QuerySet[Offering], limit: int = QUOTE_LIMIT
) -> PlacementResult:
    """The `limit` cheapest feasible offerings by total price; for the rest, how many each rule excluded and
    a few examples of each. Classification happens in the database, so it scales with the catalogue."""
    if request.accelerators < 1 or request.hours < 1:
        raise DomainError(_("Ask for at least one accelerator for at least one hour."), code="invalid_request")
    interruptible = Q(interruptible_price__isnull=False) if request.interruptible_allowed else Q(pk__in=[])
    unit_price = Case(When(interruptible, then=F("interruptible_price")), default=F("on_demand_price"))
    # ceil(N / K) in integer arithmetic, the same on PostgreSQL and SQLite
    nodes_needed = ExpressionWrapper(
        (Value(request.accelerators) + F("accelerators_per_node") - 1) / F("accelerators_per_node"),
        output_field=IntegerField(),
    )
    classified = offerings.annotate(
        unit_price=unit_price, nodes_needed=nodes_needed, exclusion=_exclusion_reason(request, nodes_needed, unit_price)
    )
    feasible = classified.filter(exclusion="").order_by(
        F("unit_price") * F("nodes_needed") * F("accelerators_per_node"), "pk"
    )[: limit * 2]  # ties on total price are ranked by performance below, within a window
    result = PlacementResult()
    for offering in feasible:
        interruptible_used = request.interruptible_allowed and offering.interruptible_price is not None
        mode = PricingMode.INTERRUPTIBLE if interruptible_used else PricingMode.ON_DEMAND
        price = offering_price(offering=offering, accelerators=request.accelerators, hours=request.hours, mode=mode)
        peak = offering.accelerator.peak_tflops(request.precision)
        result.quotes.append(
            Quote(
                offering=offering,
                mode=mode,
                nodes=price.nodes,
                accelerators=price.accelerators,
                price_per_accelerator_hour=price.price_per_accelerator_hour,
                total_price=price.total_price,
                peak_tflops_per_yuan_hour=(peak / price.price_per_accelerator_hour).quantize(Decimal("0.0001"))
                if peak
                else None,
            )
        )
    result.quotes.sort(key=_quote_rank)
    result.quotes = result.quotes[:limit]
    excluded = classified.exclude(exclusion="")
    result.excluded_counts = dict(
        excluded.order_by().values_list("exclusion").annotate(n=Count("pk")).values_list("exclusion", "n")
    )
    for reason in result.excluded_counts:
        result.excluded += [
            (o, reason)
            for o in excluded.filter(exclusion=reason).order_by("on_demand_price", "pk")[:EXAMPLES_PER_REASON]
        ]
    return result


@dataclass(frozen=True)
class TrainingEstimate:
    total_flops: int
    petaflop_days: Decimal
    accelerator_hours: dict[str, Decimal]  # accelerator slug → hours at the given utilisation


def training_estimate(
    *, parameters: int, tokens: int, precision: str, mfu: Decimal, accelerators: list[AcceleratorModel]
) -> TrainingEstimate:
    """Total training compute ≈ 6·N·D FLOPs, and the accelerator-hours it takes on each accelerator at `mfu`."""
    if parameters <= 0 or tokens <= 0:
        raise DomainError(_("Parameters and tokens must be positive."), code="invalid_request")
    if not (Decimal("0") < mfu <= Decimal("1")):
        raise DomainError(_("Utilisation (MFU) is a fraction between 0 and 1."), code="invalid_request")
    total_flops = TRAINING_FLOPS_PER_PARAMETER_TOKEN * parameters * tokens
    hours = {}
    for accelerator in accelerators:
        peak = accelerator.peak_tflops(precision)
        if peak:
            effective_flops_per_second = Decimal(peak) * Decimal(10) ** 12 * mfu
            hours[accelerator.slug] = (Decimal(total_flops) / effective_flops_per_second / SECONDS_PER_HOUR).quantize(
                Decimal("0.1"), rounding=ROUND_HALF_UP
            )
    petaflop_days = (Decimal(total_flops) / (Decimal(10) ** 15 * 86400)).quantize(Decimal("0.1"))
    return TrainingEstimate(total_flops=total_flops, petaflop_days=petaflop_days, accelerator_hours=hours)
