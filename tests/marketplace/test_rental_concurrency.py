"""Real parallel connections on PostgreSQL: admission never oversells, funds never overspend, usage counts once."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils.timezone import now
from rest_framework.test import APIClient

from billing.models import Hold, LedgerTransaction, Posting, UsageCharge, UsageEvent
from billing.selectors import wallet_get
from billing.services.ledger import InsufficientFunds, credit_line_set
from billing.services.metering import usage_events_record
from billing.services.quotas import quota_get
from marketplace.models import Offering, Rental
from marketplace.services import rentals as services
from tests.concurrency import race
from tests.factories import rentals as rental_factories
from tests.factories.accounts import OrganizationFactory, api_key_for
from tests.factories.billing import fund
from tests.factories.marketplace import OfferingFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

PRICE = Decimal("36.00")


def test_twenty_concurrent_requests_for_three_free_accelerators_admit_exactly_three(require_postgres, admission_path):
    # given: nodes of one accelerator, 3 of 5 free
    offering = OfferingFactory(accelerators_per_node=1, capacity_nodes=5, rented_nodes=2, on_demand_price=PRICE)
    buyer = OrganizationFactory()
    fund(buyer, "10000.00")
    _key, secret = api_key_for(buyer)

    def order(index: int) -> int:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        response = client.post(
            "/api/v1/rentals/", {"offering": offering.pk, "accelerators": 1}, format="json",
            HTTP_IDEMPOTENCY_KEY=f"order-{index}",
        )  # fmt: skip
        if response.status_code == 409:
            assert response.json()["error"]["code"] == "capacity_exhausted"
        return response.status_code

    # when
    outcomes = race(20, order)
    # then
    assert sorted(outcomes) == [201] * 3 + [409] * 17
    offering.refresh_from_db()
    assert offering.rented_nodes == 5
    assert Rental.objects.filter(offering=offering).count() == 3
    assert quota_get(organization_id=buyer.pk).accelerators_in_use == 3
    assert sorted(Hold.objects.values_list("amount", flat=True)) == [PRICE] * 3
    assert wallet_get(organization=buyer).held == PRICE * 3
    assert wallet_get(organization=buyer).available == Decimal("10000.00") - PRICE * 3


def test_concurrent_rentals_never_spend_past_funds_plus_credit_line(require_postgres, admission_path):
    # given: ¥100 and a ¥10 credit line cover three one-hour runways of ¥36
    offering = OfferingFactory(accelerators_per_node=1, capacity_nodes=50, on_demand_price=PRICE)
    buyer = OrganizationFactory()
    fund(buyer, "100.00")
    credit_line_set(organization=buyer, limit=Decimal("10"))

    def order(index: int) -> str:
        try:
            services.rental_create(
                organization=buyer, request=services.RentalRequest(offering_id=offering.pk, accelerators=1)
            )
        except InsufficientFunds:
            return "refused"
        return "admitted"

    # when
    outcomes = race(12, order)
    # then
    assert outcomes.count("admitted") == 3
    assert wallet_get(organization=buyer).available == Decimal("-8.00")
    offering.refresh_from_db()
    assert offering.rented_nodes == 3  # refused admissions gave their nodes back with everything else
    assert quota_get(organization_id=buyer.pk).accelerators_in_use == 3


def test_admissions_and_stops_racing_on_one_offering_and_one_wallet_never_deadlock(require_postgres, admission_path):
    # given: one buyer with 6 running rentals on an offering; both paths lock quota, wallet and offering rows
    offering = OfferingFactory(accelerators_per_node=1, capacity_nodes=20, on_demand_price=PRICE)
    buyer = OrganizationFactory()
    fund(buyer, "10000.00")
    started = now() - timedelta(minutes=5)
    running = []
    for _ in range(6):
        rental = services.rental_create(
            organization=buyer, request=services.RentalRequest(offering_id=offering.pk, accelerators=1), moment=started
        )
        running.append(services.rental_provision(rental_id=rental.pk, moment=started).pk)

    def admit_or_stop(index: int) -> str:
        if index % 2:
            services.rental_stop(rental_id=running[index // 2])
            return "stopped"
        order = services.RentalRequest(offering_id=offering.pk, accelerators=1)
        services.rental_create(organization=buyer, request=order)
        return "admitted"

    # when: 6 admissions and 6 stops at once (a deadlock would surface as an error in a thread)
    outcomes = race(12, admit_or_stop)
    # then
    assert sorted(outcomes) == ["admitted"] * 6 + ["stopped"] * 6
    offering.refresh_from_db()
    assert offering.rented_nodes == 6
    assert quota_get(organization_id=buyer.pk).accelerators_in_use == 6
    assert sum(Posting.objects.values_list("amount", flat=True)) == 0


@pytest.fixture
def reported_rental(require_postgres):
    return rental_factories.reported_rental(price=PRICE)


def test_the_same_usage_event_sent_five_times_concurrently_is_rated_once(reported_rental):
    rental = reported_rental
    event = {
        "rental": rental.pk,
        "dimension": "accelerator_seconds",
        "quantity": "300",
        "period_start": (rental.started_at + timedelta(minutes=1)).isoformat(),
        "period_end": (rental.started_at + timedelta(minutes=6)).isoformat(),
        "idempotency_key": "node-7:minute-1",
    }

    # when
    race(5, lambda _index: usage_events_record(provider=rental.provider, events=[event]))
    race(2, lambda _index: services.rental_settle(rental_id=rental.pk))
    # then
    assert UsageEvent.objects.filter(rental=rental).count() == 1
    charge = UsageCharge.objects.get(rental=rental)
    assert (charge.quantity, charge.amount) == (Decimal("300"), Decimal("3.00"))


def test_two_metering_runs_in_parallel_leave_the_ledger_of_one_clean_run(require_postgres):
    offering = OfferingFactory(accelerators_per_node=1, capacity_nodes=10, on_demand_price=PRICE)
    buyer = OrganizationFactory()
    fund(buyer, "1000.00")
    started = now().replace(microsecond=0) - timedelta(minutes=30)
    rental_ids = []
    for _ in range(4):
        rental = services.rental_create(
            organization=buyer, request=services.RentalRequest(offering_id=offering.pk, accelerators=1), moment=started
        )
        rental_ids.append(services.rental_provision(rental_id=rental.pk, moment=started).pk)
    moment = started + timedelta(minutes=30)

    # when: two ticks of the same moment race over the same rentals
    race(2, lambda _index: [services.rental_settle(rental_id=pk, moment=moment) for pk in rental_ids])
    # then: one charge of 30 minutes each, and the ledger balances
    charges = UsageCharge.objects.filter(rental_id__in=rental_ids)
    assert sorted(charges.values_list("amount", flat=True)) == [Decimal("18.00")] * 4
    assert LedgerTransaction.objects.filter(kind="capture").count() == 4
    assert sum(Posting.objects.values_list("amount", flat=True)) == 0
    assert Offering.objects.get(pk=offering.pk).rented_nodes == 4


def test_batches_recorded_in_one_transaction_count_each_event_once(reported_rental):
    # given: the staging table lives as long as the transaction: the second batch must not see the first's rows
    rental = reported_rental
    event = {
        "rental": rental.pk, "dimension": "accelerator_seconds", "quantity": "60",
        "period_start": (rental.started_at + timedelta(minutes=1)).isoformat(),
        "period_end": (rental.started_at + timedelta(minutes=2)).isoformat(), "idempotency_key": "node-1:minute-1",
    }  # fmt: skip
    fresh = dict(event, idempotency_key="node-1:minute-2", period_start=event["period_end"],
                 period_end=(rental.started_at + timedelta(minutes=3)).isoformat())  # fmt: skip

    # when
    with transaction.atomic():
        first = usage_events_record(provider=rental.provider, events=[event])
        second = usage_events_record(provider=rental.provider, events=[event, fresh])

    # then
    assert [r.status for r in first + second] == ["accepted", "duplicate", "accepted"]
    assert sorted(UsageEvent.objects.filter(rental=rental).values_list("idempotency_key", flat=True)) == [
        "node-1:minute-1", "node-1:minute-2",
    ]  # fmt: skip
