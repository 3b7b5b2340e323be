"""The rating run: every rental's new usage charged once at its snapshotted price, through both of its paths (in
sets on PostgreSQL, rental by rental elsewhere), and on PostgreSQL against parallel ingestion and parallel runs."""

import collections
import re
import threading
import time
from decimal import Decimal
from fractions import Fraction

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import translation

from billing.models import (
    AccountKind,
    Hold,
    LedgerAccount,
    LedgerTransaction,
    Posting,
    ProviderBilling,
    UsageCharge,
    UsageEvent,
)
from billing.selectors import transaction_list
from billing.services.payouts import charge_refund, usage_charge_refund
from billing.services.rating import usage_cost, usage_rate_pending
from marketplace.core.errors import Conflict
from marketplace.models import Rental
from marketplace.services import rentals as services
from tests.concurrency import race
from tests.factories.accounts import OrganizationFactory
from tests.factories.marketplace import OfferingFactory
from tests.factories.rentals import PRICE, report, reported_rental


def total(rows, field: str):
    """A column's sum, added in Python: SQLite sums decimals as floats."""
    return sum(rows.values_list(field, flat=True))


def exact_cost(seconds: Decimal, price: Decimal) -> Decimal:
    """The rounding rule computed with fractions: half-up to 8 places of seconds × price / 3600."""
    units = Fraction(seconds) * Fraction(price) / 3600 * 10**8
    return Decimal(int(units + Fraction(1, 2))).scaleb(-8)


def test_the_rounding_rule_is_exact_where_a_decimal_context_would_round():
    # given: a product of 33 digits, past the 28 of Python's default Decimal context
    seconds, price = Decimal("999999999999.99999999"), Decimal("12345.67891234")
    # then
    assert usage_cost(accelerator_seconds=seconds, price_per_accelerator_hour=price) == exact_cost(seconds, price)
    # half a unit of the last place rounds up; less than half rounds down
    assert usage_cost(accelerator_seconds=Decimal(1), price_per_accelerator_hour=Decimal("0.000018")) == Decimal(
        "0.00000001"
    )
    assert usage_cost(accelerator_seconds=Decimal(1), price_per_accelerator_hour=Decimal("0.00001799")) == 0


def test_a_run_charges_each_rental_its_new_usage_at_its_price_and_posts_balanced_captures(rating_path):
    # given: rentals of two providers, one with a fee of its own, at prices that do not divide evenly
    special = OfferingFactory().provider
    ProviderBilling.objects.create(organization=special, platform_fee_percent=Decimal("12.50"))
    rentals = [
        reported_rental(price=Decimal("36.00")),
        reported_rental(price=Decimal("29.99"), provider=special),
        reported_rental(price=Decimal("7.12345678"), accelerators=3),
    ]
    report(rentals[0], "60", "60", "180")
    report(rentals[1], "37.5")
    report(rentals[2], "0.00000001", "59.99999999")

    # when
    with translation.override("en"):  # the memo is written in the active language
        run = usage_rate_pending()

    # then: one charge per rental, at the rule, through the hold, split by its provider's fee
    assert (run.events, run.charges) == (6, 3)
    charges = []
    for rental, seconds in zip(rentals, ["300", "37.5", "60"], strict=True):
        rental.refresh_from_db()
        charge = UsageCharge.objects.get(rental=rental)
        cost = exact_cost(Decimal(seconds), rental.price_per_accelerator_hour)
        assert (charge.quantity, charge.rated_amount, charge.amount) == (Decimal(seconds), cost, cost)
        assert charge.event_count == UsageEvent.objects.filter(rental=rental).count()
        assert charge.events_through == UsageEvent.objects.filter(rental=rental).latest("pk").pk
        assert rental.usage_rated_through >= charge.events_through  # in sets: the newest event id of the run
        assert rental.charged_amount == cost
        assert Hold.objects.get(pk=rental.hold_id).captured_amount == cost
        fee_percent = Decimal("12.50") if rental.provider_id == special.pk else Decimal(10)
        assert charge.fee == (cost * fee_percent / 100).quantize(Decimal("0.00000001"))
        charges.append(charge)
    # and the captures post exactly those charges: each buyer's held funds out, each provider's earnings and the
    # platform's fees in
    captures = LedgerTransaction.objects.filter(kind="capture").order_by("pk")
    if rating_path == "in_sets":  # one capture for the run, one line per account
        run_capture = captures.get()
        assert {charge.ledger_transaction_id for charge in charges} == {run_capture.pk}
        assert (run_capture.idempotency_key, run_capture.memo) == (f"usage-rating:{run_capture.pk}", "Usage charges")
    else:  # one capture per charge, named after its rental
        assert [charge.ledger_transaction_id for charge in charges] == [capture.pk for capture in captures]
        for charge, capture in zip(charges, captures, strict=True):
            assert capture.idempotency_key == f"usage-charge:{charge.pk}"
            assert capture.memo == f"Rental #{charge.rental_id}: {charge.quantity:f} accelerator-seconds"
    expected = collections.Counter()
    for charge in charges:
        rental = charge.rental
        expected[(rental.organization_id, AccountKind.HELD)] -= charge.amount
        expected[(rental.provider_id, AccountKind.EARNINGS)] += charge.amount - charge.fee
        expected[(None, AccountKind.PLATFORM_REVENUE)] += charge.fee
    lines = Posting.objects.filter(transaction__in=captures).values_list(
        "account__organization_id", "account__kind", "amount"
    )
    posted = collections.Counter()
    for org, kind, amount in lines:
        posted[(org, kind)] += amount
    assert posted == expected
    if rating_path == "in_sets":
        assert len(lines) == len(expected)  # one line per account
    assert total(Posting.objects.all(), "amount") == 0
    for account in LedgerAccount.objects.all():  # cached balances equal their postings
        assert account.balance == total(account.postings.all(), "amount")


def test_a_usage_charge_is_refunded_as_it_was_split_and_never_beyond_it(rating_path):
    # given: a charge of 10.00 from a provider whose fee is 12.5 %
    special = OfferingFactory().provider
    ProviderBilling.objects.create(organization=special, platform_fee_percent=Decimal("12.50"))
    rental = reported_rental(provider=special)
    report(rental, "1000")
    usage_rate_pending()
    charge = UsageCharge.objects.get(rental=rental)
    assert (charge.amount, charge.fee) == (Decimal("10.00"), Decimal("1.25"))

    def balance(organization_id, kind):
        return LedgerAccount.objects.get(organization_id=organization_id, kind=kind).balance

    available, earnings = balance(rental.organization_id, "available"), balance(special.pk, "earnings")
    revenue = LedgerAccount.objects.get(kind=AccountKind.PLATFORM_REVENUE).balance
    # when: 4.00 back by the charge (twice with one key), then 6.00 by its capture where the capture is its own
    for _ in range(2):
        usage_charge_refund(charge_id=charge.pk, amount=Decimal("4.00"), idempotency_key="credit:1", reason="fault")
    by_capture = {"capture_transaction_id": charge.ledger_transaction_id, "amount": Decimal("6.00"),
                  "idempotency_key": "dispute:1", "reason": "dispute"}  # fmt: skip
    if rating_path == "in_sets":  # the run's capture: refunded by its charges only
        with pytest.raises(Conflict) as whole_run:
            charge_refund(**by_capture)
        assert whole_run.value.code == "refund_by_usage_charge"
        usage_charge_refund(charge_id=charge.pk, amount=Decimal("6.00"), idempotency_key="dispute:1", reason="x")
    else:
        charge_refund(**by_capture)
    # then: the buyer has all 10.00 back, taken from the provider and the platform as the charge was split
    assert balance(rental.organization_id, "available") - available == Decimal("10.00")
    assert earnings - balance(special.pk, "earnings") == Decimal("8.75")
    assert revenue - LedgerAccount.objects.get(kind=AccountKind.PLATFORM_REVENUE).balance == Decimal("1.25")
    # and nothing more, whichever way it is asked for
    with pytest.raises(Conflict) as by_charge:
        usage_charge_refund(charge_id=charge.pk, amount=Decimal("0.01"), idempotency_key="credit:2", reason="x")
    assert by_charge.value.code == "refund_exceeds_charge"
    if rating_path == "rental_by_rental":
        with pytest.raises(Conflict) as again_by_capture:
            charge_refund(**{**by_capture, "amount": Decimal("0.01"), "idempotency_key": "dispute:2"})
        assert again_by_capture.value.code == "refund_exceeds_charge"
    assert total(Posting.objects.all(), "amount") == 0


def test_a_second_run_changes_nothing_and_a_later_one_rates_only_what_is_new(rating_path):
    rental = reported_rental()
    report(rental, "100", "200")
    usage_rate_pending()
    ledger = LedgerTransaction.objects.count()

    # when: again, with nothing new
    assert usage_rate_pending().charges == 0
    # then
    assert LedgerTransaction.objects.count() == ledger

    # when: new usage arrives
    report(rental, "50")
    run = usage_rate_pending()
    # then: a second charge for that event alone
    assert (run.events, run.charges) == (1, 1)
    charges = UsageCharge.objects.filter(rental=rental).order_by("pk")
    assert [(c.quantity, c.amount, c.event_count) for c in charges] == [
        (Decimal(300), Decimal("3.00"), 2),
        (Decimal(50), Decimal("0.50"), 1),
    ]


def test_usage_rounding_to_nothing_is_recorded_without_a_capture(rating_path):
    rental = reported_rental()
    report(rental, "0.00000001")

    usage_rate_pending()

    charge = UsageCharge.objects.get(rental=rental)
    assert (charge.rated_amount, charge.amount, charge.fee, charge.ledger_transaction_id) == (0, 0, 0, None)
    assert not LedgerTransaction.objects.filter(kind="capture").exists()
    rental.refresh_from_db()
    assert rental.usage_rated_through >= charge.events_through
    with pytest.raises(Conflict) as refused:  # nothing was taken, so nothing can be given back
        usage_charge_refund(charge_id=charge.pk, amount=Decimal("0.01"), idempotency_key="credit:0", reason="x")
    assert (refused.value.code, refused.value.extra["refundable"]) == ("refund_exceeds_charge", "0.00000000")


def test_each_buyer_sees_only_its_own_part_of_a_runs_capture(require_postgres, api_client_for):
    # given: two buyers' usage rated in one run, captured by one transaction
    first, second = reported_rental(), reported_rental()
    report(first, "100")
    report(second, "250")
    usage_rate_pending()
    capture = LedgerTransaction.objects.get(kind="capture")
    # then: each buyer's history lists the capture with what it took from that buyer's held funds, nothing more
    for rental, taken in [(first, Decimal("-1.00")), (second, Decimal("-2.50"))]:
        listed = transaction_list(organization=rental.organization).get(pk=capture.pk)
        assert (listed.held_change, listed.available_change, listed.earnings_change) == (taken, 0, 0)
        response = api_client_for(rental.organization).get(f"/api/v1/transactions/{capture.pk}/")
        assert (response.status_code, response.json()["held_change"]) == (200, f"{taken:.8f}")
    # and an organization with no part in it does not see it
    outsider = api_client_for(OrganizationFactory()).get(f"/api/v1/transactions/{capture.pk}/")
    assert outsider.status_code == 404


def test_usage_beyond_the_hold_is_held_from_funds_then_left_uncollected(rating_path):
    # given: a one-hour runway of 36.00 held, 10.00 more in funds, and 60.00 of usage reported
    rental = reported_rental(funds="46.00")
    report(rental, "3600", "2400")

    # when
    usage_rate_pending()

    # then: the hold grew by what funds allowed, the rest is uncollected
    rental.refresh_from_db()
    assert rental.charged_amount == Decimal("46.00")
    assert rental.uncollected_amount == Decimal("14.00")
    assert UsageCharge.objects.get(rental=rental).rated_amount == Decimal("60.00")
    assert total(Posting.objects.all(), "amount") == 0


def test_settled_rentals_are_not_rated_again(rating_path):
    rental = reported_rental()
    report(rental, "100")
    services.rental_stop(rental_id=rental.pk)

    assert usage_rate_pending().charges == 0
    assert UsageCharge.objects.filter(rental=rental).count() == 1


# --- PostgreSQL: real parallel connections ---


def test_a_rental_opened_since_the_last_run_does_not_make_the_next_one_read_older_events(require_postgres):
    # given: a rated rental, then a new one (never rated) and usage of both
    rated = reported_rental()
    report(rated, "100", "200")
    usage_rate_pending()
    rated.refresh_from_db()
    opened = reported_rental()
    report(opened, "30")
    report(rated, "50")

    # when
    with CaptureQueriesContext(connection) as queries:
        run = usage_rate_pending()

    # then: the rollup reads events past the rated rental's watermark, not past 0, and rates both rentals
    [rollup] = [q["sql"] for q in queries.captured_queries if "CREATE TEMPORARY TABLE usage_rating ON" in q["sql"]]
    assert re.search(r"WHERE e\.id > (\d+)", rollup).group(1) == str(rated.usage_rated_through)
    assert (run.events, run.charges) == (2, 2)
    assert UsageCharge.objects.get(rental=opened).quantity == Decimal(30)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_rental_locked_by_another_transaction_is_skipped_and_rated_by_the_next_run(require_postgres):
    rental = reported_rental()
    report(rental, "100")
    locked, release = threading.Event(), threading.Event()

    def hold_the_rental_lock() -> None:
        with transaction.atomic():
            Rental.objects.select_for_update().get(pk=rental.pk)
            locked.set()
            release.wait(20)
        connection.close()

    holder = threading.Thread(target=hold_the_rental_lock)
    holder.start()
    locked.wait(20)
    try:
        skipped = usage_rate_pending()  # must not wait for the lock
    finally:
        release.set()
        holder.join(20)
    assert skipped.charges == 0
    assert usage_rate_pending().charges == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_rating_runs_racing_ingestion_and_each_other_rate_every_event_exactly_once(require_postgres):
    # given: rentals of one provider; four threads report batches while two keep running the rating
    provider = OfferingFactory().provider
    rentals = [reported_rental(provider=provider, funds="5000.00") for _ in range(6)]
    batches, reporters_left, counting = 30, [4], threading.Lock()

    def run(index: int) -> None:
        if index >= 4:
            while reporters_left[0]:
                usage_rate_pending()
            return
        try:
            for batch in range(batches):
                # Held open for varying times, so batches commit out of the order they took their ids in,
                # and runs happen while events are in flight.
                with transaction.atomic():
                    report(rentals[(index + batch) % len(rentals)], *["7.5"] * 5, "12.25")
                    time.sleep(0.003 * ((index + batch) % 4))
        finally:
            with counting:
                reporters_left[0] -= 1

    race(6, run)
    usage_rate_pending()  # what the racing runs skipped

    # then: every event rated once, by charges that add up per rental
    for rental in rentals:
        rental.refresh_from_db()
        events = UsageEvent.objects.filter(rental=rental)
        charges = UsageCharge.objects.filter(rental=rental)
        assert total(charges, "event_count") == events.count()
        assert total(charges, "quantity") == total(events, "quantity")
        assert rental.usage_rated_through >= events.latest("pk").pk
        for charge in charges:
            assert charge.amount == usage_cost(accelerator_seconds=charge.quantity, price_per_accelerator_hour=PRICE)
        assert rental.charged_amount == total(charges, "amount")
    assert UsageEvent.objects.count() == 4 * batches * 6
    assert total(Posting.objects.all(), "amount") == 0
