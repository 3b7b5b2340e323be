"""Rentals metered by their provider's usage reports, running and ready to be rated."""

import itertools
from datetime import timedelta
from decimal import Decimal

from django.utils.timezone import now

from billing.services.metering import usage_events_record
from marketplace.models import Metering, Rental
from marketplace.services import rentals as services
from tests.factories.accounts import OrganizationFactory
from tests.factories.billing import fund
from tests.factories.marketplace import OfferingFactory

PRICE = Decimal("36.00")  # per accelerator-hour: 100 accelerator-seconds cost 1.00
keys = itertools.count()  # unique event keys


def reported_rental(*, price: Decimal = PRICE, funds: str = "1000.00", provider=None, accelerators: int = 1) -> Rental:
    """A running on-demand rental metered by the provider's reports, started ten minutes ago."""
    extra = {"provider": provider} if provider is not None else {}
    offering = OfferingFactory(accelerators_per_node=1, on_demand_price=price, metering=Metering.REPORTED, **extra)
    buyer = OrganizationFactory()
    fund(buyer, funds)
    started = now() - timedelta(minutes=10)
    order = services.RentalRequest(offering_id=offering.pk, accelerators=accelerators)
    rental = services.rental_create(organization=buyer, request=order, moment=started)
    return services.rental_provision(rental_id=rental.pk, moment=started)


def report(rental: Rental, *quantities: str) -> None:
    """The provider reports one event per quantity, each over a minute of the rental's run."""
    events = []
    for quantity in quantities:
        minute = next(keys) % 8
        start = rental.started_at + timedelta(minutes=minute)
        events.append({
            "rental": rental.pk, "dimension": "accelerator_seconds", "quantity": quantity,
            "period_start": start.isoformat(), "period_end": (start + timedelta(minutes=1)).isoformat(),
            "idempotency_key": f"node:{next(keys)}",
        })  # fmt: skip
    results = usage_events_record(provider=rental.provider, events=events)
    assert {r.status for r in results} == {"accepted"}
