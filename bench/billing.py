"""Rating benchmark (BENCHMARKS.md §2.4): the product's rating run, as a Celery task on a real worker (Redis, then
RabbitMQ), against one SQL GROUP BY over the same events (the ceiling) and a Python aggregation over a named cursor
(the peer).

    python -m bench.billing [--events 10000000] [--incremental 100000] [--rounds 3]

Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/bench_billing; dropped and
rebuilt), Redis and RabbitMQ (BENCH_REDIS_URL, BENCH_RABBITMQ_URL). Data: 5,000 buyer organizations with 1 to 3
running rentals each (about 10,000) on 200 offerings of 20 providers, picked with a Zipf skew; prices with 8 decimal
places; each rental's hold covers a month at its price, and its events report half of its accelerator time over
the last 30 days, in equal periods: `--events` in all, COPY'd with the table's indexes and foreign keys rebuilt
afterwards. Each round times, interleaved:

- ceiling: `INSERT INTO rollup SELECT organization, rental, day, sum(quantity), count(*) … GROUP BY` over all
  events (about 300k groups of about 30, as designed), and the same grouped by rental only; the faster is the
  ceiling (the stricter target);
- peer: the events streamed through a named cursor and summed per rental in Python, then priced;
- product: the `billing.usage_rate` task sent to a worker, until its charges are committed: the full run over all
  events, then `--incremental` new events COPY'd and rated by the next run. The ratings are undone between rounds;
- floor of the incremental run: before the product rates the new events, the least that any design capturing each
  minute's usage from each rental's hold must write for them, run and rolled back: the new events summed per rental
  (an index range), every touched rental's hold moved, one posting and one balance per buyer's held funds, and the
  foreign-key checks a commit would run. No charge rows, watermarks or locks: a floor, not a design.

Checks after each product run: every rental's charges equal an independent SQL recomputation to the fen (and to the
ledger's 8 places), each ledger transaction's postings sum to zero, every balance equals its postings, every hold
captured what its charges say, and the worker ran at most one task per 10,000 events. Exits 0.
"""

import argparse
import os
import random
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from statistics import median

from bench.harness import (
    BROKERS,
    OFFERING_COLUMNS,
    bench_site_and_accelerator,
    copy_rows,
    fresh_database,
    log,
    log_checks,
    start_worker,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_billing"
QUEUE = "bench-billing"
ORGANIZATIONS, OFFERINGS, PROVIDERS = 5000, 200, 20
DAYS = 30
TARGETS = {"full_vs_ceiling": 2.0, "incremental_vs_full": 0.05}  # at most

# The incremental floor (module docstring), in order; each rental's cost rounded to the ledger's places.
FLOOR_STATEMENTS = [
    """CREATE TEMPORARY TABLE floor_usage ON COMMIT DROP AS
       SELECT r.hold_id, r.organization_id, round(u.quantity * r.price_per_accelerator_hour / 3600, 8) AS cost
       FROM (SELECT rental_id, sum(quantity) AS quantity FROM billing_usageevent WHERE id > %(since)s
             GROUP BY rental_id) u
       JOIN marketplace_rental r ON r.id = u.rental_id""",
    "UPDATE billing_hold h SET captured_amount = h.captured_amount + u.cost FROM floor_usage u WHERE h.id = u.hold_id",
    # Each buyer's held funds out, and all of it in to one account, so that the transaction balances.
    """CREATE TEMPORARY TABLE floor_posting ON COMMIT DROP AS
       SELECT a.id AS account_id, -sum(u.cost) AS amount FROM floor_usage u JOIN billing_ledgeraccount a
         ON a.organization_id = u.organization_id AND a.kind = 'held' GROUP BY a.id
       UNION ALL
       SELECT (SELECT id FROM billing_ledgeraccount WHERE kind = 'platform_revenue'), sum(cost) FROM floor_usage""",
    "UPDATE billing_ledgeraccount a SET balance = a.balance + p.amount FROM floor_posting p WHERE a.id = p.account_id",
    """INSERT INTO billing_ledgertransaction (idempotency_key, kind, memo, organization_id, reference, created_at)
       VALUES ('bench-floor', 'capture', '', NULL, '', now())""",
    """INSERT INTO billing_posting (transaction_id, account_id, amount)
       SELECT currval(pg_get_serial_sequence('billing_ledgertransaction', 'id')), account_id, amount
       FROM floor_posting""",
    "SET CONSTRAINTS ALL IMMEDIATE",  # the deferred foreign-key checks run now, as a commit would run them
]
EVENTS_PER_TASK = 10_000  # at least
EVENT_COLUMNS = ["organization_id", "rental_id", "source", "idempotency_key", "dimension", "quantity", "period_start",
                 "period_end", "received_at"]  # fmt: skip


# --- Data ---


def build_data(n: int) -> dict:
    """Providers, offerings, buyers, rentals, their holds and the ledger that funds them, with COPY."""
    from django.db import connection
    from django.utils.timezone import now

    from billing.services.ledger import platform_account

    started, moment = time.perf_counter(), now().replace(microsecond=0)
    rng = random.Random(2026)
    copy_rows(
        "accounts_organization", ["created_at", "updated_at", "name", "slug", "is_personal"],
        [(moment, moment, f"Bench org {i}", f"bench-org-{i}", False) for i in range(PROVIDERS + ORGANIZATIONS)],
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM accounts_organization WHERE slug LIKE 'bench-org-%%' ORDER BY id")
        organizations = [row[0] for row in cursor.fetchall()]
    providers, buyers = organizations[:PROVIDERS], organizations[PROVIDERS:]
    site, accelerator = bench_site_and_accelerator()
    prices = [Decimal(rng.randrange(150_000_000, 4_000_000_000)).scaleb(-8) for _ in range(OFFERINGS)]
    copy_rows(
        "marketplace_offering",
        OFFERING_COLUMNS,
        [(moment, moment, providers[i % PROVIDERS], site.pk, accelerator.pk, f"Bench offering {i}", "", 8, 128, 1024,
          4000, 400, 10**6, 0, prices[i], 1, "published", moment, "{}", "reported") for i in range(OFFERINGS)],
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, provider_id, on_demand_price FROM marketplace_offering ORDER BY id")
        offerings = cursor.fetchall()
    # Zipf: offering k is picked with weight 1/(k+1); each buyer rents 1 to 3 of them.
    weights = [1 / (k + 1) for k in range(OFFERINGS)]
    rental_started = moment - timedelta(days=DAYS)
    rentals = []  # (buyer, offering id, provider, price, accelerators, hold amount)
    for buyer in buyers:
        count = rng.choices([1, 2, 3], weights=[50, 30, 20])[0]
        for offering_id, provider, price in {offerings[k] for k in rng.choices(range(OFFERINGS), weights, k=count)}:
            accelerators = rng.choice([1, 1, 2, 4, 8])
            rentals.append((buyer, offering_id, provider, price, accelerators, price * accelerators * 24 * DAYS))
    copy_rows(
        "billing_hold",
        ["organization_id", "idempotency_key", "reference", "description", "amount", "captured_amount", "status",
         "created_at"],
        [(r[0], f"bench-hold:{i}", f"bench-rental:{i}", "Bench rental", r[5], 0, "active", moment)
         for i, r in enumerate(rentals)],
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM billing_hold ORDER BY id")
        holds = [row[0] for row in cursor.fetchall()]
    copy_rows(
        "marketplace_rental",
        ["created_at", "updated_at", "mode", "nodes", "accelerators", "price_per_accelerator_hour", "specs",
         "residency_zone", "metering", "starts_at", "status", "status_changed_at", "started_at", "suspension_reason",
         "charged_amount", "uncollected_amount", "offering_id", "organization_id", "provider_id", "hold_id",
         "usage_rated_through"],
        [(moment, moment, "on_demand", 1, r[4], r[3], "{}", "cn-east", "reported", rental_started, "running",
          rental_started, rental_started, "", 0, 0, r[1], r[0], r[2], hold, 0)
         for r, hold in zip(rentals, holds, strict=True)],
    )  # fmt: skip
    _fund_holds(rentals, moment)
    platform_account(kind="platform_revenue")
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, organization_id, accelerators FROM marketplace_rental ORDER BY id")
        rental_rows = cursor.fetchall()
    log(f"data: {len(rental_rows)} running rentals of {ORGANIZATIONS} organizations on {OFFERINGS} offerings of "
        f"{PROVIDERS} providers in {time.perf_counter() - started:.1f} s")  # fmt: skip
    slots = -(-n // len(rental_rows))
    return {"rentals": rental_rows, "started": rental_started, "moment": moment, "period": DAYS * 86400 // slots}


def _fund_holds(rentals: list, moment) -> None:
    """Each buyer's held funds come in as one balanced ledger transaction from the payment clearing account (what a
    top-up and the holds' placing would have posted together)."""
    from django.db import connection

    held: dict[int, Decimal] = {}
    for rental in rentals:
        held[rental[0]] = held.get(rental[0], Decimal(0)) + rental[5]
    copy_rows(
        "billing_ledgeraccount", ["organization_id", "kind", "currency", "balance", "minimum_balance", "created_at"],
        [(None, "payment_clearing", "CNY", -sum(held.values()), None, moment)]
        + [(buyer, kind, "CNY", amount if kind == "held" else 0, 0, moment) for buyer, amount in held.items()
           for kind in ("available", "held")],
    )  # fmt: skip
    copy_rows(
        "billing_ledgertransaction", ["idempotency_key", "kind", "memo", "organization_id", "reference", "created_at"],
        [(f"bench-funding:{buyer}", "adjustment", "Bench funding", buyer, "", moment) for buyer in held],
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO billing_posting (transaction_id, account_id, amount)
               SELECT t.id, a.id, a.balance FROM billing_ledgertransaction t
               JOIN billing_ledgeraccount a ON a.organization_id = t.organization_id AND a.kind = 'held'
               WHERE t.idempotency_key LIKE 'bench-funding:%%'
               UNION ALL
               SELECT t.id, c.id, -a.balance FROM billing_ledgertransaction t
               JOIN billing_ledgeraccount a ON a.organization_id = t.organization_id AND a.kind = 'held'
               CROSS JOIN billing_ledgeraccount c WHERE c.kind = 'payment_clearing' AND c.organization_id IS NULL
                 AND t.idempotency_key LIKE 'bench-funding:%%'"""
        )


def _event_lines(data: dict, count: int, first_slot: int):
    """COPY text lines: event i reports rental i mod R over slot first_slot + i div R (periods of equal length),
    for half of the rental's accelerator time."""
    rentals, period, received = data["rentals"], data["period"], data["moment"].isoformat()
    times: dict[int, str] = {}

    def at(slot: int) -> str:
        if slot not in times:
            times[slot] = (data["started"] + timedelta(seconds=slot * period)).isoformat()
        return times[slot]

    for i in range(count):
        rental_id, organization_id, accelerators = rentals[i % len(rentals)]
        slot = first_slot + i // len(rentals)
        quantity = Decimal(accelerators * period) / 2
        yield (f"{organization_id}\t{rental_id}\tprovider:bench\t{rental_id}:{slot}\taccelerator_seconds\t"
               f"{quantity}\t{at(slot)}\t{at(slot + 1)}\t{received}\n")  # fmt: skip


def load_events(data: dict, n: int, first_slot: int = 0) -> int:
    """COPY `n` events (slots from `first_slot`); the first load drops the table's indexes and foreign keys and
    builds them again afterwards, as a bulk load would."""
    from django.db import connection

    started = time.perf_counter()
    lines = _event_lines(data, n, first_slot)
    with connection.cursor() as cursor:
        rebuild = []
        if first_slot == 0:
            cursor.execute(
                """SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
                   WHERE conrelid = 'billing_usageevent'::regclass AND contype IN ('u', 'f')"""
            )
            constraints = cursor.fetchall()
            cursor.execute(
                """SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'billing_usageevent'
                   AND indexname NOT IN (SELECT conname FROM pg_constraint
                                         WHERE conrelid = 'billing_usageevent'::regclass)"""
            )
            indexes = cursor.fetchall()
            for name, _definition in constraints:
                cursor.execute(f'ALTER TABLE billing_usageevent DROP CONSTRAINT "{name}"')
            for name, _definition in indexes:
                cursor.execute(f'DROP INDEX "{name}"')
            rebuild = [definition for _name, definition in indexes] + [
                f'ALTER TABLE billing_usageevent ADD CONSTRAINT "{name}" {definition}'
                for name, definition in constraints
            ]
        statement = f"COPY billing_usageevent ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
        chunk: list[str] = []
        with cursor.cursor.copy(statement) as copy:
            for index, line in enumerate(lines, 1):
                chunk.append(line)
                if len(chunk) == 10_000:
                    copy.write("".join(chunk))
                    chunk.clear()
                if index % 1_000_000 == 0:
                    log(f"  loaded {index:,} events ({time.perf_counter() - started:.0f} s)")
            copy.write("".join(chunk))
        if rebuild:
            cursor.execute("SET maintenance_work_mem = '512MB'")
            for definition in rebuild:
                cursor.execute(definition)
            cursor.execute("VACUUM ANALYZE billing_usageevent")
    log(f"  {n:,} events loaded in {time.perf_counter() - started:.1f} s")
    return n


# --- The variants ---


def run_ceiling(grouping: str) -> float:
    """One INSERT … SELECT … GROUP BY over every event; seconds."""
    from django.db import connection

    columns = {"day": "organization_id, rental_id, date_trunc('day', period_start)", "rental": "rental_id"}[grouping]
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_rollup")
        cursor.execute(
            "CREATE TABLE bench_rollup (organization_id bigint, rental_id bigint, day timestamptz, "
            "quantity numeric(24, 8), events bigint)"
        )
        target = "organization_id, rental_id, day" if grouping == "day" else "rental_id"
        started = time.perf_counter()
        cursor.execute(
            f"INSERT INTO bench_rollup ({target}, quantity, events) "  # noqa: S608 - constants
            f"SELECT {columns}, sum(quantity), count(*) FROM billing_usageevent GROUP BY {columns}"
        )
        elapsed = time.perf_counter() - started
        groups = cursor.rowcount
    log(f"ceiling  GROUP BY {grouping:<7} {elapsed:7.2f} s  ({groups:,} groups)")
    return elapsed


def run_peer() -> float:
    """Stream (rental, quantity) through a named cursor, sum per rental in Python, price each total; seconds."""
    from django.db import connection, transaction

    from billing.services.rating import usage_cost

    started = time.perf_counter()
    totals: dict[int, Decimal] = {}
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute("SELECT rental_id, quantity FROM billing_usageevent")
        for rental_id, quantity in cursor:
            totals[rental_id] = totals.get(rental_id, 0) + quantity
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, price_per_accelerator_hour FROM marketplace_rental")
        prices = dict(cursor.fetchall())
    charges = {r: usage_cost(accelerator_seconds=q, price_per_accelerator_hour=prices[r]) for r, q in totals.items()}
    elapsed = time.perf_counter() - started
    log(f"peer     named cursor    {elapsed:7.2f} s  ({len(charges):,} rentals priced)")
    return elapsed


def run_incremental_floor(since: int) -> float:
    """The incremental floor's statements over the events past `since`, rolled back; seconds."""
    from django.db import connection, transaction

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in FLOOR_STATEMENTS:
            cursor.execute(statement, {"since": since})
        elapsed = time.perf_counter() - started
        transaction.set_rollback(True)
    log(f"floor    incremental    {elapsed:7.2f} s")
    return elapsed


def tasks_run(log_path: Path) -> int:
    return sum(1 for line in log_path.read_text().splitlines() if "billing.usage_rate[" in line and "succeeded" in line)


def run_product(broker: str, log_path: Path) -> float:
    """Send the rating task to the worker and wait until its charges are committed; seconds."""
    from celery import Celery
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM billing_usagecharge")
        (before,) = cursor.fetchone()
    client = Celery(broker=BROKERS[broker])
    started = time.perf_counter()
    client.send_task("billing.usage_rate", queue=QUEUE)
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT EXISTS (SELECT 1 FROM billing_usagecharge WHERE id > %s)", [before])
            if cursor.fetchone()[0]:
                break
            if time.perf_counter() - started > 600:
                raise RuntimeError(
                    f"no charges after 10 minutes; the worker's log ends:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.005)
    return time.perf_counter() - started


def undo_ratings() -> None:
    """Back to nothing rated: the bench's own data, so the ledger's append-only rule is lifted for this session."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            "DELETE FROM billing_posting WHERE transaction_id IN "
            "(SELECT id FROM billing_ledgertransaction WHERE kind = 'capture')"
        )
        cursor.execute("DELETE FROM billing_usagecharge")
        cursor.execute("DELETE FROM billing_ledgertransaction WHERE kind = 'capture'")
        cursor.execute("DELETE FROM billing_ledgeraccount WHERE kind = 'earnings'")
        cursor.execute("UPDATE billing_ledgeraccount SET balance = 0 WHERE kind = 'platform_revenue'")
        cursor.execute("UPDATE billing_hold SET captured_amount = 0 WHERE captured_amount <> 0")
        cursor.execute(
            "UPDATE marketplace_rental SET charged_amount = 0, usage_rated_through = 0 "
            "WHERE charged_amount <> 0 OR usage_rated_through <> 0"
        )
        cursor.execute(
            """UPDATE billing_ledgeraccount a SET balance = p.total
               FROM (SELECT account_id, sum(amount) AS total FROM billing_posting GROUP BY account_id) p
               WHERE a.id = p.account_id AND a.kind = 'held' AND a.balance <> p.total"""
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE billing_hold, marketplace_rental, billing_ledgeraccount, billing_usagecharge, "
                       "billing_ledgertransaction, billing_posting")  # fmt: skip


def drop_events_after(event_id: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM billing_usageevent WHERE id > %s", [event_id])
        cursor.execute("VACUUM billing_usageevent")


def check_ledger(label: str, tasks: int, events: int) -> bool:
    """The product's results against an independent recomputation in SQL."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """WITH usage AS (SELECT e.rental_id, sum(e.quantity) * r.price_per_accelerator_hour / 3600 AS cost
                              FROM billing_usageevent e JOIN marketplace_rental r ON r.id = e.rental_id
                              GROUP BY e.rental_id, r.price_per_accelerator_hour),
                    charged AS (SELECT rental_id, sum(amount) AS amount, sum(event_count) AS events,
                                       count(*) AS charges
                                FROM billing_usagecharge GROUP BY rental_id)
               SELECT count(*) FILTER (WHERE round(u.cost, 2) <> round(coalesce(c.amount, 0), 2)),
                      count(*) FILTER (WHERE c.amount IS NULL OR abs(u.cost - c.amount) > c.charges * 0.000000005),
                      count(*), sum(c.events), sum(c.amount)
               FROM usage u LEFT JOIN charged c ON c.rental_id = u.rental_id"""
        )
        off_fen, off_rule, rentals, rated_events, charged = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM (SELECT transaction_id FROM billing_posting GROUP BY transaction_id "
            "HAVING sum(amount) <> 0) t"
        )
        (unbalanced,) = cursor.fetchone()
        cursor.execute(
            """SELECT count(*) FROM billing_ledgeraccount a
               LEFT JOIN (SELECT account_id, sum(amount) AS total FROM billing_posting GROUP BY account_id) p
                 ON p.account_id = a.id
               WHERE a.balance <> coalesce(p.total, 0)"""
        )
        (off_balances,) = cursor.fetchone()
        cursor.execute(
            """SELECT count(*) FROM marketplace_rental r JOIN billing_hold h ON h.id = r.hold_id
               WHERE h.captured_amount <> r.charged_amount
                  OR r.charged_amount <> (SELECT coalesce(sum(amount), 0) FROM billing_usagecharge c
                                          WHERE c.rental_id = r.id)"""
        )
        (off_holds,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM billing_usageevent")
        (stored,) = cursor.fetchone()
    checks = {
        f"{rentals:,} rentals' charges = SQL recomputation to the fen (off: {off_fen})": off_fen == 0,
        f"… and within the rounding rule, ½ of the 8th place per charge (off: {off_rule})": off_rule == 0,
        f"events rated {rated_events:,} = stored {stored:,}": rated_events == stored,
        f"ledger transactions not summing to zero: {unbalanced}": unbalanced == 0,
        f"balances not equal to their postings: {off_balances}": off_balances == 0,
        f"holds and rentals not matching their charges: {off_holds}": off_holds == 0,
        f"tasks: {tasks} for {events:,} events (≤ 1 per {EVENTS_PER_TASK:,})": tasks * EVENTS_PER_TASK
        <= max(events, EVENTS_PER_TASK),
    }
    log_checks(f"  check {label}", checks, [])
    log(f"  charged in all: {charged}")
    return all(checks.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000, help="events rated by the full run")
    parser.add_argument("--incremental", type=int, default=100_000, help="new events rated by the incremental run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--brokers", default="redis,rabbitmq")
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    fresh_database(url)
    from django.db import connection

    data = build_data(args.events)
    load_events(data, args.events)
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(id) FROM billing_usageevent")
        (last_full_event,) = cursor.fetchone()
    brokers = args.brokers.split(",")
    logs = {broker: Path(f"/tmp/bench-billing-{broker}.log") for broker in brokers}
    workers = {broker: start_worker(url, BROKERS[broker], QUEUE, logs[broker]) for broker in brokers}
    results: dict[str, list[float]] = {}
    ok = True
    try:
        time.sleep(5)  # the workers connect
        for round_number in range(1, args.rounds + 1):
            log(f"round {round_number}")
            for grouping in ("day", "rental"):
                results.setdefault(f"ceiling_{grouping}", []).append(run_ceiling(grouping))
            results.setdefault("peer", []).append(run_peer())
            for broker in brokers:
                undo_ratings()
                tasks_before = tasks_run(logs[broker])
                full = run_product(broker, logs[broker])
                log(f"product  {broker:<8} full   {full:7.2f} s")
                time.sleep(0.5)  # the worker logs the task's end
                ok &= check_ledger(f"{broker} full", tasks_run(logs[broker]) - tasks_before, args.events)
                load_events(data, args.incremental, first_slot=args.events // len(data["rentals"]) + 2)
                results.setdefault("floor", []).append(run_incremental_floor(since=last_full_event))
                tasks_before = tasks_run(logs[broker])
                incremental = run_product(broker, logs[broker])
                log(f"product  {broker:<8} +{args.incremental // 1000}k  {incremental:7.2f} s  "
                    f"({incremental / full:.3f} × full)")  # fmt: skip
                time.sleep(0.5)
                ok &= check_ledger(f"{broker} incremental", tasks_run(logs[broker]) - tasks_before, args.incremental)
                results.setdefault(f"full_{broker}", []).append(full)
                results.setdefault(f"incremental_{broker}", []).append(incremental)
                drop_events_after(last_full_event)
    finally:
        for worker in workers.values():
            worker.terminate()
            worker.wait(timeout=30)

    medians = {name: median(values) for name, values in results.items()}
    ceiling = min(medians["ceiling_day"], medians["ceiling_rental"])
    log(f"medians of {args.rounds} rounds: " + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items()))
    for broker in brokers:
        figures = {
            "full_vs_ceiling": medians[f"full_{broker}"] / ceiling,
            "incremental_vs_full": medians[f"incremental_{broker}"] / medians[f"full_{broker}"],
        }
        for name, value in figures.items():
            verdict = "meets" if value <= TARGETS[name] else "MISSES"
            log(f"ratio {broker:<8} {name:<20} {value:6.3f} (target ≤ {TARGETS[name]}: {verdict})")
        log(f"ratio {broker:<8} {'peer_vs_full':<20} {medians['peer'] / medians[f'full_{broker}']:6.2f} (printed)")
        floor_vs_full = medians["floor"] / medians[f"full_{broker}"]
        log(
            f"ratio {broker:<8} {'floor_vs_full':<20} {floor_vs_full:6.3f} (printed: the least an incremental run "
            f"could take; target {TARGETS['incremental_vs_full']} "
            f"{'above it' if floor_vs_full < TARGETS['incremental_vs_full'] else 'BELOW it'})"
        )
        log(
            f"ratio {broker:<8} {'incremental_vs_floor':<20} "
            f"{medians[f'incremental_{broker}'] / medians['floor']:6.2f} (printed)"
        )
    log(f"ratio checks {'exact' if ok else 'FAILED'}")


if __name__ == "__main__":
    main()
