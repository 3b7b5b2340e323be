"""The rating run killed with SIGKILL mid-run on a real broker, then a restarted worker: the ledger of one clean run.

Two sets of rentals with the same prices, funds and usage: one is rated once, cleanly, in-process; the other by a
real worker process (PostgreSQL, Redis or RabbitMQ) that is killed while its run's transaction is open: the test
holds one of the set's holds locked, so the run stops there, past its rollup and before any write.
"""

import math
import signal
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from celery import Celery
from django.db import connection
from django.utils.timezone import now
from kombu import Connection

from billing.models import Posting, UsageCharge
from billing.selectors import wallet_get
from billing.services.metering import usage_events_record
from billing.services.rating import usage_rate_pending
from marketplace.models import Metering, Rental
from marketplace.services import rentals as services
from tests.factories.accounts import OrganizationFactory
from tests.factories.billing import fund
from tests.factories.marketplace import OfferingFactory
from tests.workers import wait_for, worker_start

# (price per accelerator-hour, funds, seconds reported): the last outgrows its hour of runway, so its rating holds
# more from funds after the run's transaction, in one of its own.
RENTALS = [
    ("36.00", "1000.00", ["60", "60", "180"]),
    ("29.99", "500.00", ["37.5"]),
    ("7.12345678", "1000.00", ["0.00000001", "59.99999999"]),
    ("36.00", "1000.00", ["5000"]),
]


def rentals_with_usage(label: str) -> list[int]:
    """One rental per RENTALS row, each of its own buyer, with its usage reported and not yet rated."""
    started = now() - timedelta(hours=3)
    ids = []
    for index, (price, funds, seconds) in enumerate(RENTALS):
        offering = OfferingFactory(accelerators_per_node=1, on_demand_price=Decimal(price), metering=Metering.REPORTED)
        buyer = OrganizationFactory(name=f"{label}-{index}")
        fund(buyer, funds)
        order = services.RentalRequest(offering_id=offering.pk, accelerators=1)
        rental = services.rental_create(organization=buyer, request=order, moment=started)
        rental = services.rental_provision(rental_id=rental.pk, moment=started)
        events, start = [], started
        for number, quantity in enumerate(seconds):  # each over whole minutes that could have delivered it
            end = start + timedelta(minutes=max(1, math.ceil(Decimal(quantity) / 60)))
            events.append({
                "rental": rental.pk, "dimension": "accelerator_seconds", "quantity": quantity,
                "period_start": start.isoformat(), "period_end": end.isoformat(),
                "idempotency_key": f"{label}:{index}:{number}",
            })  # fmt: skip
            start = end
        assert {result.status for result in usage_events_record(provider=offering.provider, events=events)} == {
            "accepted"
        }
        ids.append(rental.pk)
    return ids


def ledger_of(rental_ids: list[int]) -> list[tuple]:
    """Everything money-related about each rental and its buyer, in order, without ids or times."""
    rows = []
    for rental in Rental.objects.filter(pk__in=rental_ids).select_related("hold").order_by("pk"):
        charges = UsageCharge.objects.filter(rental=rental).order_by("pk")
        postings = Posting.objects.filter(transaction__in=charges.values("ledger_transaction"))
        wallet = wallet_get(organization=rental.organization)
        rows.append((
            rental.charged_amount, rental.uncollected_amount,
            rental.hold.amount, rental.hold.captured_amount, rental.hold.status,
            tuple(charges.values_list("quantity", "rated_amount", "amount", "event_count")),
            tuple(sorted(postings.values_list("amount", flat=True))),
            wallet.available, wallet.held,
        ))  # fmt: skip
    return rows


def backends_waiting_on_holds() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'SELECT id FROM billing_hold%%'"
        )
        return [pid for (pid,) in cursor.fetchall()]


def backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone() is not None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_rating_killed_mid_run_then_restarted_leaves_the_ledger_of_one_clean_run(
    require_postgres, broker_url, tmp_path
):
    # given: one set rated cleanly, its twin's usage not yet rated
    clean_ids = rentals_with_usage("clean")
    assert usage_rate_pending().charges == len(RENTALS)
    killed_ids = rentals_with_usage("killed")
    queue = f"rating-crash-{uuid.uuid4().hex[:8]}"
    sender = Celery(broker=broker_url, set_as_current=False)  # the project's app stays the current one
    log = tmp_path / "worker.log"
    database = connection.settings_dict
    blocker = psycopg.connect(
        host=database["HOST"], port=database["PORT"], user=database["USER"], dbname=database["NAME"]
    )
    held_back = Rental.objects.get(pk=killed_ids[0]).hold_id
    blocker.execute("SELECT id FROM billing_hold WHERE id = %s FOR UPDATE", [held_back])

    # when: the run goes to a real worker, which is killed with SIGKILL while its transaction waits on that hold
    worker = worker_start(broker_url, queue, log)
    try:
        # An explicit connection: Celery prefers a CELERY_BROKER_URL in the environment (CI sets one) to its argument.
        with Connection(broker_url) as broker:
            sender.send_task("billing.usage_rate", queue=queue, connection=broker)
        wait_for(backends_waiting_on_holds, 60, "the run to reach the holds", log)
        [run_backend] = backends_waiting_on_holds()
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        blocker.rollback()  # the dead worker's transaction goes on to its next statement, finds no client, rolls back
        wait_for(lambda: not backend_alive(run_backend), 30, "the dead worker's transaction to end", log)
        # nothing is half-written
        assert not UsageCharge.objects.filter(rental_id__in=killed_ids).exists()
        assert set(Rental.objects.filter(pk__in=killed_ids).values_list("usage_rated_through", flat=True)) == {0}

        # then: a restarted worker gets the task back and rates the set
        worker = worker_start(broker_url, queue, log)
        wait_for(
            lambda: UsageCharge.objects.filter(rental_id__in=killed_ids).values("rental").distinct().count()
            == len(RENTALS),
            120, "the restarted worker to rate the set", log,
        )  # fmt: skip
        time.sleep(1)  # a duplicate delivery, if any, would land now
    finally:
        blocker.close()
        worker.kill()
        worker.wait(10)
        with Connection(broker_url) as cleanup:
            cleanup.default_channel.queue_delete(queue)
        connection.close()  # start the checks on a fresh connection

    assert ledger_of(killed_ids) == ledger_of(clean_ids), log.read_text()[-4000:]
    # the outgrown rental's hold was raised from funds to its usage
    assert ledger_of(killed_ids)[-1][2:4] == (Decimal("50.00"), Decimal("50.00"))
