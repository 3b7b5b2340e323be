"""Reported usage is bounded by what could have been delivered: the period's length × the accelerators, only while
the rental ran, and never twice for the same time (per node). Each refusal has its own code, per event, and the rest
of the batch is kept."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import translation
from rest_framework.test import APIClient

from billing.models import OrganizationQuota, UsageEvent
from billing.selectors import wallet_get
from billing.services.metering import usage_events_record
from billing.services.rating import usage_rate_pending
from marketplace.models import RentalNode
from marketplace.services import rentals as services
from tests.concurrency import race
from tests.factories.marketplace import OfferingFactory
from tests.factories.nodes import live_node, rental_on_node_running_an_hour
from tests.factories.rentals import reported_rental


def event(rental, key: str, quantity: str, start_offset: timedelta, length: timedelta = timedelta(minutes=1)) -> dict:
    start = rental.started_at + start_offset
    return {
        "rental": rental.pk, "dimension": "accelerator_seconds", "quantity": quantity, "idempotency_key": key,
        "period_start": start.isoformat(), "period_end": (start + length).isoformat(),
    }  # fmt: skip


def agent_reports(token: str, *events: dict) -> dict:
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post("/api/v1/agent/usage-events", {"events": list(events)}, format="json").json()


def outcomes(results) -> list[tuple[str, str]]:
    return [(result.status, result.code) for result in results]


def test_an_impossible_quantity_is_refused_and_the_rest_of_the_batch_is_charged(db):
    # given: one accelerator rented; the attack of the issue: 100,000,000 accelerator-seconds in one second
    rental = reported_rental(funds="1000.00")
    attack = event(rental, "attack", "100000000", timedelta(minutes=1), timedelta(seconds=1))
    honest = event(rental, "honest", "60", timedelta(minutes=2))

    # when
    results = usage_events_record(provider=rental.provider, events=[attack, honest])
    usage_rate_pending()

    # then: only the honest minute is stored and charged (60 s at ¥36/h)
    assert outcomes(results) == [("rejected", "usage_exceeds_capacity"), ("accepted", "")]
    assert list(UsageEvent.objects.filter(rental=rental).values_list("idempotency_key", flat=True)) == ["honest"]
    rental.refresh_from_db()
    assert rental.charged_amount == Decimal("0.60")
    assert rental.uncollected_amount == Decimal("0")
    assert wallet_get(organization=rental.organization).available + rental.hold.remaining == Decimal("999.40")


@pytest.mark.parametrize(
    ("quantity", "outcome"),
    [("120", ("accepted", "")), ("120.00000001", ("rejected", "usage_exceeds_capacity"))],
)
def test_the_bound_is_the_periods_length_times_the_rentals_accelerators(db, quantity, outcome):
    rental = reported_rental(accelerators=2)

    results = usage_events_record(provider=rental.provider, events=[event(rental, "e", quantity, timedelta(0))])

    assert outcomes(results) == [outcome]


def test_overlapping_periods_of_a_rental_are_refused_and_replays_stay_duplicates(db):
    # given: a stored minute [10 min, 11 min)
    rental = reported_rental()
    first = event(rental, "first", "60", timedelta(minutes=10))
    usage_events_record(provider=rental.provider, events=[first])

    # when: the same event again, one overlapping it, one touching it, and two of the batch overlapping each other
    results = usage_events_record(
        provider=rental.provider,
        events=[
            first,
            event(rental, "over-stored", "1", timedelta(minutes=10, seconds=59)),
            event(rental, "adjacent", "60", timedelta(minutes=11)),
            event(rental, "batch-a", "60", timedelta(minutes=20)),
            event(rental, "batch-b", "30", timedelta(minutes=20, seconds=30), timedelta(seconds=30)),
        ],
    )

    # then
    assert outcomes(results) == [
        ("duplicate", ""),
        ("rejected", "usage_overlaps"),
        ("accepted", ""),
        ("accepted", ""),
        ("rejected", "usage_overlaps"),
    ]
    assert UsageEvent.objects.filter(rental=rental).count() == 3


def test_a_period_refused_for_capacity_does_not_block_an_honest_one_over_the_same_time(db):
    rental = reported_rental()

    results = usage_events_record(
        provider=rental.provider,
        events=[
            event(rental, "a-inflated", "600", timedelta(minutes=5)),
            event(rental, "b", "60", timedelta(minutes=5)),
        ],
    )

    assert outcomes(results) == [("rejected", "usage_exceeds_capacity"), ("accepted", "")]


def test_periods_outside_the_rentals_running_time_are_refused(db):
    # given: ran from its start for an hour, suspended for an hour (its spend cap reached), resumed
    # (a stopped rental is settled: nothing more is charged to it at all)
    rental = reported_rental(funds="1000.00")
    start = rental.started_at
    OrganizationQuota.objects.filter(organization=rental.organization).update(monthly_spend_cap=Decimal("0"))
    services.rental_settle(rental_id=rental.pk, moment=start + timedelta(hours=1))
    OrganizationQuota.objects.filter(organization=rental.organization).update(monthly_spend_cap=None)
    services.rental_resume(rental_id=rental.pk, moment=start + timedelta(hours=2))
    rental.refresh_from_db()
    assert [t.to_status for t in rental.transitions.all()][-2:] == ["suspended", "running"]

    # when
    with translation.override("en"):
        results = usage_events_record(
            provider=rental.provider,
            events=[
                event(rental, "before-start", "60", -timedelta(minutes=1)),
                event(rental, "clock-tolerance", "60", -timedelta(seconds=3)),
                event(rental, "into-suspension", "60", timedelta(minutes=59, seconds=30)),
                event(rental, "suspended", "60", timedelta(minutes=90)),
                event(rental, "over-resume", "60", timedelta(hours=1, minutes=59, seconds=30)),
                event(rental, "after-resume", "60", timedelta(hours=2, minutes=1)),
            ],
        )

    # then
    assert outcomes(results) == [
        ("rejected", "usage_outside_running"),
        ("accepted", ""),
        ("rejected", "usage_outside_running"),
        ("rejected", "usage_outside_running"),
        ("rejected", "usage_outside_running"),
        ("accepted", ""),
    ]
    assert results[0].message == "The period is outside the time the rental was running."


def test_the_api_refuses_the_issues_attack_per_event(db, api_client_for):
    rental = reported_rental(funds="1000.00")
    attack = event(rental, "attack", "100000000", timedelta(minutes=1), timedelta(seconds=1))

    body = api_client_for(rental.provider).post("/api/v1/usage-events/", {"events": [attack]}, format="json").json()

    assert (body["accepted"], body["rejected"]) == (0, 1)
    assert body["results"][0]["code"] == "usage_exceeds_capacity"
    assert not UsageEvent.objects.filter(rental=rental).exists()


def test_each_node_of_a_rental_reports_its_own_share_of_the_same_time(db):
    # given: a rental running on a live node, and a second node of the rental's offering placed for it too
    rental, node, token = rental_on_node_running_an_hour()
    second, second_token = live_node(rental.offering, name="second")
    RentalNode.objects.create(rental=rental, node=second, accelerator_indices=[0], assigned_at=rental.started_at)
    minute = event(rental, "n1:0", "60", timedelta(seconds=5))

    # when: both nodes' agents report the same minute; the first node reports it twice under another key
    first = agent_reports(token, minute)
    twice = agent_reports(token, {**minute, "idempotency_key": "n1:again"})
    other = agent_reports(second_token, {**minute, "idempotency_key": "n2:0"})
    # and the provider's own API may not report it once more for the whole rental
    whole = {**minute, "idempotency_key": "api:0"}
    results = usage_events_record(provider=rental.provider, events=[whole])

    # then
    assert first["accepted"] == 1
    assert twice["results"][0]["code"] == "usage_overlaps"
    assert other["accepted"] == 1
    assert outcomes(results) == [("rejected", "usage_overlaps")]
    assert set(UsageEvent.objects.filter(rental=rental).values_list("node_id", flat=True)) == {node.pk, second.pk}


def test_a_node_reports_at_most_its_share_of_the_rental(db):
    rental, node, token = rental_on_node_running_an_hour()
    RentalNode.objects.filter(rental=rental, node=node).update(accelerator_indices=[0])
    too_much = event(rental, "n1:0", "61", timedelta(seconds=5))

    body = agent_reports(token, too_much)

    assert body["results"][0]["code"] == "usage_exceeds_capacity"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_parallel_batches_cannot_both_store_the_same_time(require_postgres):
    # given: a rental; eight reporters each send a different key for the same minute at once
    rental = reported_rental(provider=OfferingFactory().provider)

    def send(index: int) -> str:
        with transaction.atomic():
            results = usage_events_record(
                provider=rental.provider, events=[event(rental, f"r{index}", "60", timedelta(minutes=3))]
            )
        return results[0].code

    # when
    codes = race(8, send)

    # then: exactly one is stored, the others are told why
    assert sorted(codes) == [""] + ["usage_overlaps"] * 7
    assert UsageEvent.objects.filter(rental=rental).count() == 1


def test_a_node_that_no_longer_holds_the_rental_reports_nothing_of_it(db):
    # given: the rental moved off the node (it went quiet); its agent's token still works
    rental, node, token = rental_on_node_running_an_hour()
    RentalNode.objects.filter(rental=rental, node=node).update(released_at=rental.started_at + timedelta(minutes=2))

    # when: it reports the minutes after the move, which the new node bills
    body = agent_reports(token, event(rental, "n1:late", "60", timedelta(minutes=3)))

    # then
    assert body["results"][0]["code"] == "rental_not_found"
    assert not UsageEvent.objects.filter(rental=rental).exists()


def test_a_node_reports_only_the_time_it_held_the_rental(db):
    # given: a second node took the rental up half an hour after it started
    rental, _node, _token = rental_on_node_running_an_hour()
    second, _second_token = live_node(rental.offering, name="second")
    RentalNode.objects.create(
        rental=rental, node=second, accelerator_indices=[0], assigned_at=rental.started_at + timedelta(minutes=30)
    )

    # when: it reports a minute before that, and one after
    results = usage_events_record(
        provider=rental.provider,
        events=[event(rental, "early", "60", timedelta(minutes=5)), event(rental, "held", "60", timedelta(minutes=31))],
        rental_ids={rental.pk},
        node_id=second.pk,
    )

    # then
    assert outcomes(results) == [("rejected", "usage_outside_running"), ("accepted", "")]


def test_a_period_reported_ahead_of_now_is_refused(db):
    # given: a rental running now; a provider reports the coming minute in advance
    rental = reported_rental()
    moment = rental.started_at + timedelta(hours=1)
    ahead = event(rental, "ahead", "60", timedelta(minutes=59, seconds=30))
    on_time = event(rental, "on-time", "60", timedelta(minutes=58, seconds=59))

    # when
    results = usage_events_record(provider=rental.provider, events=[ahead, on_time], moment=moment)

    # then: only what ends by now (give or take the clocks' tolerance) is taken
    assert outcomes(results) == [("rejected", "period_in_future"), ("accepted", "")]
