"""Rental pages through Django's test client: order, follow, stop; usage, still billing, quotas, console."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now

from marketplace.models import Rental
from marketplace.services import rentals as services
from tests.factories.accounts import MembershipFactory, OrganizationFactory
from tests.factories.billing import fund
from tests.factories.marketplace import OfferingFactory

PRICE = Decimal("36.00")


@pytest.fixture
def offering(db):
    return OfferingFactory(accelerators_per_node=1, capacity_nodes=4, on_demand_price=PRICE)


@pytest.fixture
def signed_in(client, organization, owner):
    fund(organization, "500.00")
    client.force_login(owner)
    return client


def running_rental(organization, offering, minutes=10) -> Rental:
    moment = now()
    start = moment - timedelta(minutes=minutes)
    rental = services.rental_create(
        organization=organization, request=services.RentalRequest(offering_id=offering.pk, accelerators=1), moment=start
    )
    services.rental_provision(rental_id=rental.pk, moment=start)
    return services.rental_settle(rental_id=rental.pk, moment=moment)


def test_order_from_the_offering_page_then_stop_it(signed_in, organization, offering):
    page = signed_in.get(f"/offerings/{offering.pk}/").content.decode()
    assert 'data-testid="rent-form"' in page

    response = signed_in.post(f"/rentals/order/{offering.pk}/", {"accelerators": 1, "mode": "on_demand"})

    rental = Rental.objects.get(organization=organization)
    assert response.url == f"/rentals/{rental.pk}/"
    services.rental_provision(rental_id=rental.pk)
    signed_in.post(f"/rentals/{rental.pk}/stop/")
    rental.refresh_from_db()
    assert rental.status == Rental.Status.COMPLETED


def test_order_refusal_is_shown_on_the_offering_page(signed_in, offering):
    response = signed_in.post(f"/rentals/order/{offering.pk}/", {"accelerators": 9, "mode": "on_demand"}, follow=True)

    assert response.redirect_chain[-1][0] == f"/offerings/{offering.pk}/"
    assert not Rental.objects.exists()
    assert list(response.context["messages"])  # the service's message, translated


def test_detail_live_fragment_and_timeline(signed_in, organization, offering):
    rental = running_rental(organization, offering)

    detail = signed_in.get(f"/rentals/{rental.pk}/").content.decode()
    live = signed_in.get(f"/rentals/{rental.pk}/live/").content.decode()

    assert 'data-testid="timeline"' in detail and "rental-chart" in detail
    assert f'hx-get="/rentals/{rental.pk}/live/"' in live  # polls while it can still change
    assert 'data-testid="rental-charged">¥6.00<' in live


def test_another_organizations_rental_is_404_everywhere(client, offering, db):
    other = OrganizationFactory()
    fund(other, "100.00")
    rental = running_rental(other, offering)
    intruder = OrganizationFactory()
    client.force_login(MembershipFactory(organization=intruder).user)

    for path in (f"/rentals/{rental.pk}/", f"/rentals/{rental.pk}/live/"):
        assert client.get(path).status_code == 404
    assert client.post(f"/rentals/{rental.pk}/stop/").status_code == 404
    assert Rental.objects.get(pk=rental.pk).status == Rental.Status.RUNNING


def test_list_query_count_does_not_grow_with_rows(signed_in, organization, offering):
    running_rental(organization, offering)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert signed_in.get("/rentals/").status_code == 200
        return len(captured)

    few = queries()
    for _ in range(3):
        running_rental(organization, offering)
    assert queries() == few


def test_usage_page_csv_still_billing_and_quotas(signed_in, organization, offering):
    running_rental(organization, offering)

    usage = signed_in.get("/rentals/usage/").content.decode()
    rows = list(csv.reader(io.StringIO(b"".join(signed_in.get("/rentals/usage.csv").streaming_content).decode())))
    billing = signed_in.get("/rentals/still-billing/").content.decode()
    quotas = signed_in.get("/billing/quotas/").content.decode()

    assert 'data-testid="usage-by-offering"' in usage and offering.name in usage
    assert rows[1][5:] == ["600.00000000", "6.00000000", "6.00000000"]
    assert 'data-testid="per-hour">¥36.00<' in billing
    assert 'data-testid="quotas"' in quotas


def test_provider_console_lists_rentals_on_my_offerings_with_utilisation(client, offering, db):
    buyer = OrganizationFactory(name="Buyer Co")
    fund(buyer, "100.00")
    running_rental(buyer, offering)
    client.force_login(MembershipFactory(organization=offering.provider).user)

    page = client.get("/console/rentals/").content.decode()

    assert "Buyer Co" in page and "utilisation-chart" in page
