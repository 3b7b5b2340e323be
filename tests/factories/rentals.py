"""Rentals metered by their provider's usage reports, running and ready to be rated."""

import itertools
import math
from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Max
from django.utils.timezone import now

from billing.models import UsageEvent
from billing.services.metering import usage_events_record
from marketplace.models import Metering, Rental
from marketplace.services import rentals as services
from tests.factories.accounts import OrganizationFactory
from tests.factories.billing import fund
from tests.factories.marketplace import OfferingFactory

PRICE = Decimal("36.00")  # per accelerator-hour: 100 accelerator-seconds cost 1.00
keys = itertools.count()  # unique event keys


def reported_rental(*, price: Decimal = PRICE, funds: str = "1000.00", provider=None, accelerators: int = 1) -> Rental:
    """A running on-demand rental metered by the provider's reports, started six hours ago."""
    extra = {"provider": provider} if provider is not None else {}
    offering = OfferingFactory(accelerators_per_node=1, on_demand_price=price, metering=Metering.REPORTED, **extra)
    buyer = OrganizationFactory()
    fund(buyer, funds)
    started = now() - timedelta(hours=6)
    order = services.RentalRequest(offering_id=offering.pk, accelerators=accelerators)
    rental = services.rental_create(organization=buyer, request=order, moment=started)
    return services.rental_provision(rental_id=rental.pk, moment=started)


@transaction.atomic
def report(rental: Rental, *quantities: str) -> None:
    """The provider reports one event per quantity, each over the next period of the rental's run that could have
    delivered it (a minute, or longer for more than a minute's accelerator-seconds)."""
    events = []
    # Batches of one rental take turns (as the service's lock makes them), so that each starts where the last ended.
    Rental.objects.select_for_update(no_key=True).filter(pk=rental.pk).exists()
    start = UsageEvent.objects.filter(rental=rental).aggregate(end=Max("period_end"))["end"] or rental.started_at
    for quantity in quantities:
        seconds = max(60, math.ceil(Decimal(quantity) / rental.accelerators))
        end = start + timedelta(seconds=seconds)
        events.append({
            "rental": rental.pk, "dimension": "accelerator_seconds", "quantity": quantity,
            "period_start": start.isoformat(), "period_end": end.isoformat(), "idempotency_key": f"node:{next(keys)}",
        })  # fmt: skip
        start = end
    results = usage_events_record(provider=rental.provider, events=events)
    assert {r.status for r in results} == {"accepted"}
