from datetime import timedelta, timezone
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now

from billing.models import UsageCharge, UsageEvent
from billing.services.quotas import quota_get
from marketplace.models import Rental
from marketplace.services import rentals as services
from tests.factories.accounts import OrganizationFactory
from tests.factories.billing import fund
from tests.factories.marketplace import OfferingFactory
from tests.factories.rentals import reported_rental

PRICE = Decimal("36.00")


@pytest.fixture
def offering(db):
    return OfferingFactory(accelerators_per_node=1, capacity_nodes=4, on_demand_price=PRICE)


@pytest.fixture
def buyer(db):
    organization = OrganizationFactory()
    fund(organization, "500.00")
    return organization


@pytest.fixture
def client(buyer, api_client_for):
    return api_client_for(buyer)


def order(client, offering, **body):
    return client.post("/api/v1/rentals/", {"offering": offering.pk, "accelerators": 1, **body}, format="json")


def test_create_admits_and_returns_the_snapshot_and_timeline(client, offering):
    response = order(client, offering, hours=2)

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert body["price_per_accelerator_hour"] == "36.00000000"
    assert body["held_amount"] == "36.00000000"
    assert body["ends_at"] is not None
    assert [step["to_status"] for step in body["transitions"]] == ["pending"]


def test_idempotency_key_replays_the_admission_once(client, offering):
    first = client.post(
        "/api/v1/rentals/", {"offering": offering.pk, "accelerators": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    second = client.post(
        "/api/v1/rentals/", {"offering": offering.pk, "accelerators": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )

    assert (first.status_code, second.status_code) == (201, 201)
    assert second["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == second.json()["id"]
    assert Rental.objects.count() == 1


def test_specific_errors(client, offering, buyer):
    assert order(client, offering, accelerators=5).json()["error"]["code"] == "capacity_exhausted"
    assert order(client, offering, residency_zone="cn-south").status_code == 422
    assert order(client, offering, mode="reserved_1w").json()["error"]["code"] == "mode_unavailable"
    poor = order(client, OfferingFactory(accelerators_per_node=1, on_demand_price=Decimal("900")))
    assert poor.status_code == 402
    assert poor.json()["error"]["details"]["missing"].startswith("400.00")
    quota = quota_get(organization_id=buyer.pk)
    quota.monthly_spend_cap = Decimal("10")
    quota.save()
    capped = order(client, offering)
    assert capped.status_code == 429
    assert capped.json()["error"]["details"]["limit"] == "monthly_spend_cap"
    assert int(capped["Retry-After"]) > 0


def test_a_key_without_the_rent_scope_cannot_rent(buyer, offering, api_client_for):
    response = order(api_client_for(buyer, scopes=["read"]), offering)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "scope_required"


def test_stop_and_cancel(client, offering):
    running = services.rental_provision(rental_id=order(client, offering).json()["id"])
    scheduled = order(client, offering, starts_at=(now() + timedelta(hours=3)).isoformat()).json()["id"]

    stopped = client.post(f"/api/v1/rentals/{running.pk}/stop/")
    cancelled = client.post(f"/api/v1/rentals/{scheduled}/cancel/")
    again = client.post(f"/api/v1/rentals/{scheduled}/stop/")

    assert stopped.json()["status"] == "completed"
    assert cancelled.json()["status"] == "cancelled"
    assert (again.status_code, again.json()["error"]["code"]) == (409, "rental_invalid_transition")


def test_list_query_count_does_not_grow_with_rows(client, offering, buyer):
    order(client, offering)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/api/v1/rentals/").status_code == 200
        return len(captured)

    few = queries()
    for _ in range(3):
        order(client, offering)
    assert queries() == few


def test_usage_aggregates_and_quotas(client, offering, buyer):
    start = now() - timedelta(minutes=10)
    rental = services.rental_create(
        organization=buyer, request=services.RentalRequest(offering_id=offering.pk, accelerators=1), moment=start
    )
    services.rental_provision(rental_id=rental.pk, moment=start)
    services.rental_settle(rental_id=rental.pk, moment=start + timedelta(minutes=5))

    by_offering = client.get("/api/v1/usage/?group_by=offering").json()
    by_day = client.get("/api/v1/usage/?group_by=day&days=7").json()
    quotas = {row["name"]: row for row in client.get("/api/v1/quotas/").json()}

    assert by_offering == [
        {"key": str(offering.pk), "label": offering.name, "accelerator_hours": "0.08333333", "amount": "3.00000000"}
    ]
    assert len(by_day) == 7 and by_day[-1]["amount"] == "3.00000000"
    assert quotas["max_concurrent_accelerators"]["current"] == "1.00000000"
    assert client.get("/api/v1/usage/?group_by=week").json()["error"]["code"] == "invalid_parameters"


def test_provider_reports_usage_in_batches_with_a_result_per_event(db, api_client_for):
    rental = reported_rental(price=PRICE)
    start = rental.started_at
    provider = api_client_for(rental.provider)
    event = {
        "rental": rental.pk, "dimension": "accelerator_seconds", "quantity": "60",
        "period_start": (start + timedelta(minutes=1)).isoformat(),
        "period_end": (start + timedelta(minutes=2)).isoformat(), "idempotency_key": "gpu0:1",
    }  # fmt: skip
    old = now() - timedelta(days=9)
    too_old = {**event, "idempotency_key": "gpu0:old", "period_start": (old - timedelta(minutes=1)).isoformat(),
               "period_end": old.isoformat()}  # fmt: skip
    not_mine = {**event, "idempotency_key": "gpu0:x", "rental": rental.pk + 1000}

    responses = [provider.post("/api/v1/usage-events/", {"events": [event, too_old, not_mine]}, format="json")]
    responses += [provider.post("/api/v1/usage-events/", {"events": [event]}, format="json") for _ in range(4)]
    services.rental_settle(rental_id=rental.pk)

    first = responses[0].json()
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (1, 0, 2)
    assert [r["code"] for r in first["results"]] == ["", "event_too_old", "rental_not_found"]
    assert all(r.json()["duplicates"] == 1 for r in responses[1:])
    assert UsageCharge.objects.get(rental=rental).amount == Decimal("0.60")
    # the buyer is no provider of it, and another provider cannot report it
    other = api_client_for(OfferingFactory().provider)
    assert other.post("/api/v1/usage-events/", {"events": [event]}, format="json").json()["rejected"] == 1


def test_reported_events_are_stored_exactly_as_sent(db, api_client_for):
    # Keys with COPY's own separators and escapes, non-ASCII, the smallest and a large quantity, a zone other than
    # the server's: each comes back from the table as it was sent.
    rental = reported_rental(price=PRICE)
    start = rental.started_at
    shanghai = timezone(timedelta(hours=8))
    # (a large quantity needs a period long enough to have delivered it: 4 hours of one accelerator)
    sent = [
        ("gpu0\t1\nnext\\N", "0.00000001", start + timedelta(minutes=1), timedelta(seconds=60)),
        ("节点-甲:2 \\.", "12345.12345678", start + timedelta(minutes=2, microseconds=1), timedelta(hours=4)),
    ]
    events = [
        {"rental": rental.pk, "dimension": "accelerator_seconds", "quantity": quantity, "idempotency_key": key,
         "period_start": begin.astimezone(shanghai).isoformat(),
         "period_end": (begin + length).astimezone(shanghai).isoformat()}
        for key, quantity, begin, length in sent
    ]  # fmt: skip

    body = api_client_for(rental.provider).post("/api/v1/usage-events/", {"events": events}, format="json").json()

    assert body["accepted"] == 2, body
    stored = UsageEvent.objects.filter(rental=rental).order_by("period_start")
    buyer = rental.organization_id
    assert [(e.idempotency_key, e.quantity, e.period_start, e.period_end, e.organization_id) for e in stored] == [
        (key, Decimal(quantity), begin, begin + length, buyer) for key, quantity, begin, length in sent
    ]


def test_clock_metered_rentals_refuse_reported_usage(client, offering, api_client_for):
    rental = services.rental_provision(rental_id=order(client, offering).json()["id"])
    end = rental.started_at + timedelta(seconds=1)
    event = {
        "rental": rental.pk, "dimension": "accelerator_seconds", "quantity": "1", "idempotency_key": "a",
        "period_start": rental.started_at.isoformat(), "period_end": end.isoformat(),
    }  # fmt: skip

    body = api_client_for(offering.provider).post("/api/v1/usage-events/", {"events": [event]}, format="json").json()

    assert body["results"][0]["code"] == "metered_by_platform"
