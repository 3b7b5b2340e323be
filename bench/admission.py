"""Rental admission benchmark (BENCHMARKS.md §2.2): the admission service and the REST endpoint against a
single-statement pgbench ceiling doing the same writes, and a textbook ORM `select_for_update` peer.

    python -m bench.admission [--duration 10] [--rounds 3] [--clients 16,64]

Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/bench_admission; dropped and
rebuilt), Redis (BENCH_BROKER_URL, default redis://127.0.0.1:6379/13: the admission enqueues provisioning
there, as in production; flushed at the end), `pgbench` and `wrk`. Prints the correctness cell, one line per
cell and variant, then the ratios the targets are judged on (medians of interleaved rounds). Exits 0.

Scenarios: H, every admission on one hot offering (capacity 10^6 nodes); S, admissions spread uniformly over
1,000 offerings. Each client is a thread with its own connection and its own buyer organization (pgbench: one
buyer per client too), so the offering row is the only contended one in H. Every admission is one
accelerator on demand: the nodes, the quota, a rental with its first transition, a hold of one hour's price
and its two ledger postings.
"""

import argparse
import itertools
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from bench.harness import (
    OFFERING_COLUMNS,
    bench_site_and_accelerator,
    copy_rows,
    fresh_database,
    log,
    log_checks,
    run_wrk,
    start_server,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_admission"
DEFAULT_BROKER = "redis://127.0.0.1:6379/13"
OFFERINGS, BUYERS, PRICE = 1000, 64, Decimal("10.00")
HOT_CAPACITY, CORRECTNESS_CAPACITY, CORRECTNESS_ATTEMPTS, CORRECTNESS_CLIENTS = 10**6, 5000, 20000, 64
TARGETS = {"service_vs_ceiling_H16": 0.5, "service_vs_peer_H": 1.5, "service_vs_peer_S": 1.5, "rest_vs_ceiling": 0.3}

# The ceiling: the same writes as one admission, in one statement, with the same durability.
CEILING_SQL = """
\\set b (:client_id % {buyers}) + 1
\\set o random(:lo, :hi)
WITH buyer AS (SELECT org_id, available_id, held_id FROM bench_buyer WHERE n = :b),
cap AS (UPDATE marketplace_offering SET rented_nodes = rented_nodes + 1
        WHERE id = :o AND rented_nodes <= capacity_nodes - 1 RETURNING id, provider_id, on_demand_price AS price),
quota AS (UPDATE billing_organizationquota q SET accelerators_in_use = accelerators_in_use + 1 FROM buyer, cap
          WHERE q.organization_id = buyer.org_id AND q.accelerators_in_use <= q.max_concurrent_accelerators - 1
          RETURNING q.id),
hold AS (INSERT INTO billing_hold (idempotency_key, reference, description, amount, captured_amount, status,
                                   created_at, organization_id)
         SELECT 'ceiling:' || gen_random_uuid(), 'rental', 'ceiling', cap.price, 0, 'active', now(), buyer.org_id
         FROM cap, buyer, quota RETURNING id, amount, organization_id),
rental AS (INSERT INTO marketplace_rental (created_at, updated_at, mode, nodes, accelerators,
                                          price_per_accelerator_hour, specs, residency_zone, metering, starts_at,
                                          status, status_changed_at, suspension_reason, charged_amount,
                                          uncollected_amount, hold_id, offering_id, organization_id, provider_id,
                                          usage_rated_through)
           SELECT now(), now(), 'on_demand', 1, 1, cap.price, '{{}}', 'cn-east', 'lifecycle', now(), 'pending',
                  now(), '', 0, 0, hold.id, cap.id, hold.organization_id, cap.provider_id, 0
           FROM cap, hold RETURNING id),
transition AS (INSERT INTO marketplace_rentaltransition (from_status, to_status, reason, at, rental_id)
               SELECT '', 'pending', 'Ordered', now(), id FROM rental),
txn AS (INSERT INTO billing_ledgertransaction (idempotency_key, kind, memo, reference, created_at, organization_id)
        SELECT 'hold:' || hold.id, 'hold', 'ceiling', 'rental', now(), hold.organization_id FROM hold RETURNING id),
debit AS (UPDATE billing_ledgeraccount a SET balance = a.balance - hold.amount FROM hold, buyer
          WHERE a.id = buyer.available_id
            AND (a.minimum_balance IS NULL OR a.balance - hold.amount >= a.minimum_balance)
          RETURNING a.id),
credit AS (UPDATE billing_ledgeraccount a SET balance = a.balance + hold.amount FROM hold, buyer, debit
           WHERE a.id = buyer.held_id RETURNING a.id)
INSERT INTO billing_posting (amount, account_id, transaction_id)
SELECT -hold.amount, buyer.available_id, txn.id FROM hold, buyer, txn, debit
UNION ALL SELECT hold.amount, buyer.held_id, txn.id FROM hold, buyer, txn, credit;
"""


def build_data() -> dict:
    """1,000 offerings (capacity 10^6 nodes of one accelerator), one for the correctness cell (5,000), 64 funded
    buyers with API keys and quotas that do not bind."""
    from django.db import connection
    from django.utils.timezone import now

    from accounts import services as account_services
    from accounts.models import Organization
    from billing.models import AccountKind, OrganizationQuota
    from billing.services.ledger import organization_account
    from billing.services.quotas import quota_get
    from billing.services.topups import topup_test_credit

    started, moment = time.perf_counter(), now()
    owner = account_services.user_sign_up(email="bench-provider@example.cn", password="bench-pass-2026-x")
    provider = account_services.organization_create(name="Bench provider", owner=owner)
    site, accelerator = bench_site_and_accelerator()

    def offering(name: str, capacity: int) -> tuple:
        return (moment, moment, provider.pk, site.pk, accelerator.pk, name, "", 1, 16, 128, 1000, 100, capacity, 0,
                PRICE, 1, "published", moment, "{}", "lifecycle")  # fmt: skip

    copy_rows(
        "marketplace_offering",
        OFFERING_COLUMNS,
        (offering(f"Bench offering {i}", HOT_CAPACITY) for i in range(OFFERINGS)),
    )
    copy_rows("marketplace_offering", OFFERING_COLUMNS, [offering("Correctness offering", CORRECTNESS_CAPACITY)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM marketplace_offering ORDER BY id")
        offering_ids = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "CREATE TABLE bench_buyer (n int PRIMARY KEY, org_id bigint, available_id bigint, held_id bigint)"
        )
    buyers, secrets = [], []
    for n in range(1, BUYERS + 1):
        user = account_services.user_sign_up(email=f"bench-buyer-{n}@example.cn", password="bench-pass-2026-x")
        organization = Organization.objects.get(memberships__user=user)
        topup_test_credit(organization=organization, amount=Decimal("1000000000.00"))
        available = organization_account(organization_id=organization.pk, kind=AccountKind.AVAILABLE)
        held = organization_account(organization_id=organization.pk, kind=AccountKind.HELD)
        OrganizationQuota.objects.filter(pk=quota_get(organization_id=organization.pk).pk).update(
            max_concurrent_accelerators=10**9
        )
        _key, secret = account_services.api_key_create(
            organization=organization, created_by=user, name="bench", scopes=["read", "rent"]
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO bench_buyer VALUES (%s, %s, %s, %s)", [n, organization.pk, available.pk, held.pk]
            )
        buyers.append(organization)
        secrets.append(secret)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    log(f"data: {OFFERINGS} offerings + 1 of capacity {CORRECTNESS_CAPACITY}, {BUYERS} funded buyers with API keys "
        f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
    return {"offerings": offering_ids[:OFFERINGS], "correctness": offering_ids[-1], "buyers": buyers,
            "secrets": secrets}  # fmt: skip


# --- The variants ---


def service_admit(organization, offering_id: int) -> None:
    from marketplace.services.rentals import RentalRequest, rental_create

    rental_create(organization=organization, request=RentalRequest(offering_id=offering_id, accelerators=1))


def peer_admit(organization, offering_id: int) -> None:
    """The textbook version: lock the offering row, check in Python, F() updates and inserts, in one transaction."""
    from django.db import transaction
    from django.db.models import F
    from django.utils.timezone import now

    from billing.models import OrganizationQuota
    from billing.services.holds import hold_place
    from marketplace.models import Offering, Rental, RentalTransition
    from marketplace.services.rentals import CapacityExhausted
    from marketplace.tasks import rentals_provision_due_task

    with transaction.atomic():
        offering = Offering.objects.select_for_update().get(pk=offering_id, status=Offering.Status.PUBLISHED)
        if offering.capacity_nodes - offering.rented_nodes < 1:
            raise CapacityExhausted("no free node")
        Offering.objects.filter(pk=offering.pk).update(rented_nodes=F("rented_nodes") + 1)
        quota = OrganizationQuota.objects.select_for_update().get(organization=organization)
        if quota.accelerators_in_use + 1 > quota.max_concurrent_accelerators:
            raise CapacityExhausted("quota")
        OrganizationQuota.objects.filter(pk=quota.pk).update(accelerators_in_use=F("accelerators_in_use") + 1)
        moment = now()
        rental = Rental.objects.create(
            organization=organization, offering=offering, provider_id=offering.provider_id, mode="on_demand", nodes=1,
            accelerators=1, price_per_accelerator_hour=offering.on_demand_price, specs={"offering_name": offering.name},
            residency_zone="cn-east", metering=offering.metering, starts_at=moment, status="pending",
            status_changed_at=moment,
        )  # fmt: skip
        RentalTransition.objects.create(rental=rental, from_status="", to_status="pending", reason="Ordered", at=moment)
        rental.hold = hold_place(organization=organization, amount=offering.on_demand_price,
                                 idempotency_key=f"rental-hold:{rental.pk}", reference=f"rental:{rental.pk}",
                                 description=f"Rental #{rental.pk}")  # fmt: skip
        rental.save(update_fields=["hold"])
        transaction.on_commit(rentals_provision_due_task.delay)  # one task per admission


def run_threads(admit, clients: int, duration: float, buyers: list, offering_for, attempts=None) -> dict:
    """`clients` threads, each with its own connection and buyer, admitting for `duration` seconds (or until
    `attempts` admissions were tried in all). Returns granted, refused, errors and tps."""
    from django.db import connection

    from marketplace.services.rentals import CapacityExhausted

    counts = {"granted": 0, "refused": 0, "errors": []}
    lock, barrier = threading.Lock(), threading.Barrier(clients + 1)
    tickets = itertools.count() if attempts else None
    deadline = [0.0]

    def client(index: int) -> None:
        buyer, granted, refused = buyers[index % len(buyers)], 0, 0
        try:
            barrier.wait()
            while time.monotonic() < deadline[0]:
                if tickets is not None and next(tickets) >= attempts:
                    break
                try:
                    admit(buyer, offering_for())
                    granted += 1
                except CapacityExhausted:
                    refused += 1
                except Exception as error:  # noqa: BLE001 - every other error is a finding, counted and shown
                    with lock:
                        counts["errors"].append(repr(error))
        finally:
            with lock:
                counts["granted"] += granted
                counts["refused"] += refused
            connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + (duration if not attempts else 3600)
    started = time.monotonic()
    barrier.wait()
    for thread in threads:
        thread.join()
    counts["tps"] = counts["granted"] / (time.monotonic() - started)
    return counts


def run_pgbench(url: str, clients: int, duration: float, lo: int, hi: int, script: Path) -> float:
    command = ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(max(1, round(duration))),
               "-D", f"lo={lo}", "-D", f"hi={hi}", "-f", str(script), url]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"tps = ([\d.]+)", output).group(1))


def correctness_cell(data: dict) -> bool:
    """K = 5,000 free nodes, 64 threads try 20,000 admissions: exactly K granted, never oversold, holds balanced."""
    from django.db.models import Sum

    from billing.models import Hold, Posting
    from marketplace.models import Offering, Rental

    offering_id = data["correctness"]
    result = run_threads(service_admit, CORRECTNESS_CLIENTS, 0, data["buyers"], lambda: offering_id,
                         attempts=CORRECTNESS_ATTEMPTS)  # fmt: skip
    offering = Offering.objects.get(pk=offering_id)
    rentals = Rental.objects.filter(offering_id=offering_id)
    holds = Hold.objects.filter(rental__in=rentals)
    keys = [f"hold:{pk}" for pk in holds.values_list("pk", flat=True)]
    postings = Posting.objects.filter(transaction__idempotency_key__in=keys)
    posted = postings.aggregate(total=Sum("amount"))["total"]
    refused_expected = CORRECTNESS_ATTEMPTS - CORRECTNESS_CAPACITY
    checks = {
        f"granted {result['granted']} of {CORRECTNESS_ATTEMPTS} (K = {CORRECTNESS_CAPACITY})":
            result["granted"] == CORRECTNESS_CAPACITY == rentals.count(),
        f"refused {result['refused']} with capacity_exhausted": result["refused"] == refused_expected,
        f"rented nodes {offering.rented_nodes} ≤ capacity {offering.capacity_nodes}":
            offering.rented_nodes == offering.capacity_nodes,
        f"hold postings sum to {posted} over {postings.count()} postings":
            posted == 0 and postings.count() == 2 * len(keys),
        f"other errors (deadlocks included): {len(result['errors'])}": not result["errors"],
    }  # fmt: skip
    return log_checks("correctness", checks, result["errors"])


REST_SCRIPT = """
local keys = {{{keys}}}
local counter = 0
local body = '{{"offering": {offering}, "accelerators": 1}}'
request = function()
  counter = counter + 1
  local headers = {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. keys[(counter % #keys) + 1],
                   ["Idempotency-Key"] = "{prefix}-" .. counter}}
  return wrk.format("POST", "/api/v1/rentals/", headers, body)
end
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds after the warm-up")
    parser.add_argument("--clients", default="16,64", help="client counts, comma-separated")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers for the REST variant")
    args = parser.parse_args()
    for tool in ("pgbench", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed (apt-get install postgresql-client / wrk)")

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    broker = os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER)
    os.environ["CELERY_BROKER_URL"] = broker
    fresh_database(url)
    import random

    import redis

    data = build_data()
    hot, spread = data["offerings"][0], data["offerings"]
    rng = random.Random(7)
    workdir = Path(tempfile.mkdtemp(prefix="bench-admission-"))
    ceiling_script = workdir / "ceiling.sql"
    ceiling_script.write_text(CEILING_SQL.format(buyers=BUYERS))

    ok = correctness_cell(data)
    clients = [int(c) for c in args.clients.split(",")]
    scenarios = {"H": (hot, hot, lambda: hot), "S": (spread[0], spread[-1], lambda: rng.choice(spread))}
    results: dict[tuple[str, int, str], list[float]] = {}
    for scenario, (lo, hi, pick) in scenarios.items():
        for n in clients:
            variants = {
                "ceiling": lambda d, n=n, lo=lo, hi=hi: run_pgbench(url, n, d, lo, hi, ceiling_script),
                "peer": lambda d, n=n, pick=pick: run_threads(peer_admit, n, d, data["buyers"], pick)["tps"],
                "service": lambda d, n=n, pick=pick: run_threads(service_admit, n, d, data["buyers"], pick)["tps"],
            }
            for measure in variants.values():  # warm-up
                measure(1)
            for _round in range(args.rounds):
                for name, measure in variants.items():
                    results.setdefault((scenario, n, name), []).append(measure(args.duration))
            ceiling = statistics.median(results[(scenario, n, "ceiling")])
            for name in variants:
                tps = statistics.median(results[(scenario, n, name)])
                log(f"{scenario}{n:<3} {name:<8} {tps:9.1f} tps  {tps / ceiling:5.2f} × ceiling")

    # The REST endpoint on the hot offering at 16 clients, interleaved with its own ceiling runs.
    server, port = start_server(url, args.workers)
    rest_n = clients[0]
    try:
        keys = ", ".join(f'"{s}"' for s in data["secrets"][:rest_n])
        for _round in range(args.rounds + 1):
            script = workdir / f"rest-{_round}.lua"
            script.write_text(REST_SCRIPT.format(keys=keys, offering=hot, prefix=f"bench-{_round}-{time.time_ns()}"))
            duration = 1 if _round == 0 else args.duration
            ceiling = run_pgbench(url, rest_n, duration, hot, hot, ceiling_script)
            time.sleep(1)  # the server finishes what the last run left queued before the next one starts
            rps, cpu = run_wrk(f"http://127.0.0.1:{port}/api/v1/rentals/", duration, {}, server.pid,
                               connections=rest_n, script=str(script))  # fmt: skip
            time.sleep(1)
            if _round:
                results.setdefault(("H", rest_n, "rest_ceiling"), []).append(ceiling)
                results.setdefault(("H", rest_n, "rest"), []).append(rps)
                results.setdefault(("H", rest_n, "rest_cpu"), []).append(cpu)
    finally:
        server.terminate()
        server.wait(timeout=30)
        redis.Redis.from_url(broker).flushdb()
    rest = statistics.median(results[("H", rest_n, "rest")])
    rest_ceiling = statistics.median(results[("H", rest_n, "rest_ceiling")])
    log(f"H{rest_n:<3} rest     {rest:9.1f} rps  {rest / rest_ceiling:5.2f} × ceiling ({rest_ceiling:.1f} tps)  "
        f"{statistics.median(results[('H', rest_n, 'rest_cpu')]):.2f} ms server CPU/request")  # fmt: skip

    def ratio(scenario: str, n: int, variant: str, versus: str) -> float:
        return statistics.median(results[(scenario, n, variant)]) / statistics.median(results[(scenario, n, versus)])

    figures = {
        "service_vs_ceiling_H16": ratio("H", clients[0], "service", "ceiling"),
        "service_vs_peer_H": min(ratio("H", n, "service", "peer") for n in clients),
        "service_vs_peer_S": min(ratio("S", n, "service", "peer") for n in clients),
        "rest_vs_ceiling": rest / rest_ceiling,
    }
    for name, value in figures.items():
        verdict = "meets" if value >= TARGETS[name] else "MISSES"
        log(f"ratio {name:<24} {value:5.2f} (target ≥ {TARGETS[name]}: {verdict})")
    log(f"ratio correctness              {'exact' if ok else 'FAILED'}")


if __name__ == "__main__":
    main()
