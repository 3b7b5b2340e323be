"""A metering run killed with SIGKILL mid-run on a real broker, then a restarted worker: the same ledger as one
clean run. A real worker process (PostgreSQL, Redis or RabbitMQ) settles one set of rentals and is killed
after it has settled some of them; a twin set, identical in every figure, is settled once, cleanly, in-process.
"""

import signal
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from celery import Celery
from django.db import connection
from django.db.models import Count, Sum
from django.utils.timezone import now
from kombu import Connection

from billing.models import Hold, LedgerTransaction, Posting, UsageCharge, UsageEvent
from billing.selectors import wallet_get
from marketplace.models import Rental
from marketplace.services import rentals as services
from tests.factories.accounts import OrganizationFactory
from tests.factories.billing import fund
from tests.factories.marketplace import OfferingFactory
from tests.workers import wait_for, worker_start

ORGANIZATIONS, RENTALS_EACH, BATCH = 4, 12, 6
# Funds per organization: three can keep every runway topped up; the last covers only the first hour's holds,
# so after nearly an hour its rentals cannot pay for the next tick and are suspended.
FUNDS = ["5000.00", "5000.00", "5000.00", "360.00"]
PRICE = Decimal("29.99")


def rentals_running_since(start, label: str) -> list[int]:
    """ORGANIZATIONS × RENTALS_EACH on-demand rentals of one accelerator, all running since `start`."""
    offering = OfferingFactory(accelerators_per_node=1, capacity_nodes=100, on_demand_price=PRICE)
    ids = []
    for index, funds in enumerate(FUNDS):
        buyer = OrganizationFactory(name=f"{label}-{index}")
        fund(buyer, funds)
        for _ in range(RENTALS_EACH):
            order = services.RentalRequest(offering_id=offering.pk, accelerators=1)
            rental = services.rental_create(organization=buyer, request=order, moment=start)
            services.rental_provision(rental_id=rental.pk, moment=start)
            ids.append(rental.pk)
    return ids


def ledger_of(rental_ids: list[int]) -> list[tuple]:
    """Everything money-related about each rental and its organization, in order, without ids."""
    rows = []
    for rental in Rental.objects.filter(pk__in=rental_ids).select_related("hold").order_by("pk"):
        charges = UsageCharge.objects.filter(rental=rental)
        transactions = LedgerTransaction.objects.filter(pk__in=charges.values("ledger_transaction"))
        wallet = wallet_get(organization=rental.organization)
        rows.append((
            rental.status, rental.metered_until, rental.charged_amount, rental.uncollected_amount,
            rental.hold.amount, rental.hold.captured_amount, rental.hold.status,
            tuple(charges.order_by("pk").values_list("quantity", "rated_amount", "amount")),
            UsageEvent.objects.filter(rental=rental).count(), transactions.count(),
            rental.transitions.count(), wallet.available, wallet.held,
        ))  # fmt: skip
    return rows


def settled(rental_ids: list[int], moment) -> int:
    return Rental.objects.filter(pk__in=rental_ids, metered_until=moment).count()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_metering_killed_mid_run_then_restarted_leaves_the_ledger_of_one_clean_run(
    require_postgres, broker_url, tmp_path
):
    # given: two identical sets of rentals, running for nearly an hour
    moment = now().replace(microsecond=0)
    start = moment - timedelta(minutes=59, seconds=45)
    killed_ids = rentals_running_since(start, "killed")
    clean_ids = rentals_running_since(start, "clean")
    total = len(killed_ids)
    queue = f"metering-crash-{uuid.uuid4().hex[:8]}"
    sender = Celery(broker=broker_url, set_as_current=False)  # the project's app stays the current one
    log = tmp_path / "worker.log"

    # the clean run: one settlement of every twin up to the tick's moment
    for rental_id in clean_ids:
        services.rental_settle(rental_id=rental_id, moment=moment)

    # when: the tick's batches go to a real worker, which is killed with SIGKILL once it has settled some
    worker = worker_start(broker_url, queue, log)
    try:
        # An explicit connection: Celery prefers a CELERY_BROKER_URL in the environment (CI sets one) to its argument.
        with Connection(broker_url) as broker:
            for first in range(0, total, BATCH):
                sender.send_task(
                    "marketplace.rental_settle_batch", args=[killed_ids[first : first + BATCH], moment.isoformat()],
                    queue=queue, connection=broker,
                )  # fmt: skip
        wait_for(lambda: settled(killed_ids, moment) >= BATCH + 2, 90, "the worker to settle some rentals", log)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        at_kill = settled(killed_ids, moment)
        assert 0 < at_kill < total, f"the worker was not killed mid-run ({at_kill} of {total} settled)"
        # nothing is half-written: every settled rental has its charge, no other has one
        charged = set(UsageCharge.objects.filter(rental_id__in=killed_ids).values_list("rental_id", flat=True))
        assert charged == set(
            Rental.objects.filter(pk__in=killed_ids, metered_until=moment).values_list("pk", flat=True)
        )

        # then: a restarted worker gets the interrupted batch back and finishes the run
        worker = worker_start(broker_url, queue, log)
        wait_for(lambda: settled(killed_ids, moment) == total, 120, "the restarted worker to finish the run", log)
        time.sleep(1)  # a duplicate delivery, if any, would land now
    finally:
        worker.kill()
        worker.wait(10)
        with Connection(broker_url) as cleanup:
            cleanup.default_channel.queue_delete(queue)
        connection.close()  # the worker's connections are gone; start the checks on a fresh one

    assert ledger_of(killed_ids) == ledger_of(clean_ids), log.read_text()[-4000:]
    assert {row[0] for row in ledger_of(killed_ids)} == {Rental.Status.RUNNING, Rental.Status.SUSPENDED}
    # one rating per rental, one lifecycle event per rental, and every transaction balances
    assert UsageCharge.objects.filter(rental_id__in=killed_ids).count() == total
    unbalanced = Posting.objects.values("transaction").annotate(total=Sum("amount"), n=Count("pk")).exclude(total=0)
    assert not unbalanced.exists()
    holds = Hold.objects.filter(rental__in=killed_ids)
    assert holds.count() == total


def test_the_tick_sends_its_moment_with_every_batch(db, monkeypatch):
    # given: more running rentals than one batch holds
    monkeypatch.setattr("marketplace.tasks.SETTLE_BATCH_SIZE", 2)
    monkeypatch.setattr("marketplace.services.rentals.metering_tick", lambda moment: [3, 1, 4, 5, 9])
    sent = []
    monkeypatch.setattr("marketplace.tasks.rental_settle_batch_task.delay", lambda *args: sent.append(args))
    # when
    from marketplace.tasks import metering_tick_task

    metering_tick_task()
    # then: every batch settles up to the same moment, so a redelivered one repeats the same work
    assert [ids for ids, _moment in sent] == [[3, 1], [4, 5], [9]]
    assert len({moment for _ids, moment in sent}) == 1
