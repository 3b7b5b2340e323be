"""Usage ingestion benchmark (BENCHMARKS.md §2.3): the batch endpoint `POST /api/v1/usage-events/` against a raw
psycopg COPY of the same rows (the ceiling), a textbook `bulk_create(ignore_conflicts=True)` endpoint (the peer)
and one autocommit INSERT per event (the floor, printed for context).

    python -m bench.ingest [--events 1000000] [--rounds 3] [--batches 500,100] [--clients 4] [--workers 4]

Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/bench_ingest; dropped and
rebuilt). Data: 5,000 buyer organizations with one running rental each, metered by reports, on 200 offerings of
one provider. The event stream: one-minute periods of 60 accelerator-seconds over every rental in turn; 1 % of
events replay an earlier event (same key and body), 0.1 % are invalid (a quantity of zero). Every variant starts
from an empty usage-event table with its production indexes (primary key, unique (source, key), (organization,
period start), (rental, id)). The endpoints run under gunicorn (sync workers) and are fed by
`--clients` threads, each with its own share of the batches.

After a warm-up, the ceiling, the peer and the product at the first batch size run interleaved for `--rounds`
rounds over the whole stream each; then, once, binary COPY, the floor and the other batch sizes (context). Prints
one line per run (the endpoints with their workers' CPU per event), the checks that replays were counted once and
invalid events rejected, then the medians and the ratios the targets are judged on (of the medians). Exits 0.
"""

import argparse
import http.client
import json
import os
import statistics
import threading
import time
from datetime import timedelta
from decimal import Decimal

from bench.harness import (
    OFFERING_COLUMNS,
    bench_site_and_accelerator,
    copy_rows,
    fresh_database,
    log,
    log_checks,
    start_server,
    worker_cpu_seconds,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_ingest"
ORGANIZATIONS, OFFERINGS = 5000, 200
REPLAY_EVERY, INVALID_EVERY = 100, 1000  # event i replays event i - 50 when i % 100 == 99; i % 1000 == 500 is invalid
FLOOR_EVENTS = 20000
TARGETS = {"batch_vs_copy": 0.5, "batch_vs_peer": 2.0}
COLUMNS = ("organization_id", "rental_id", "source", "idempotency_key", "dimension", "quantity", "period_start",
           "period_end", "received_at")  # fmt: skip


class EventStream:
    """Event i as the reporter sends it (a dict), deterministic, generated on demand (2M dicts do not fit well)."""

    def __init__(self, rentals: list[tuple[int, int]], started, n: int) -> None:
        self.rentals = rentals  # (rental id, organization id)
        slots = n // len(rentals) + 2
        self.times = [(started + timedelta(minutes=slot)).isoformat() for slot in range(slots + 1)]

    def event(self, i: int) -> dict:
        if i % REPLAY_EVERY == REPLAY_EVERY - 1:
            i -= 50
        rental, _organization = self.rentals[i % len(self.rentals)]
        slot = i // len(self.rentals)
        return {
            "rental": rental,
            "dimension": "accelerator_seconds",
            "quantity": "0" if i % INVALID_EVERY == INVALID_EVERY // 2 else "60",
            "period_start": self.times[slot],
            "period_end": self.times[slot + 1],
            "idempotency_key": f"node-{rental}:{slot}",
        }

    def expected(self, n: int) -> dict:
        replays = sum(1 for i in range(n) if i % REPLAY_EVERY == REPLAY_EVERY - 1)
        invalid = sum(1 for i in range(n) if i % INVALID_EVERY == INVALID_EVERY // 2)
        return {"accepted": n - replays - invalid, "duplicates": replays, "rejected": invalid}

    def rows(self, n: int, source: str, received_at):
        """The unique valid events as table rows, in stream order: what the ceiling copies."""
        organization_of = dict(self.rentals)
        for i in range(n):
            if i % REPLAY_EVERY == REPLAY_EVERY - 1 or i % INVALID_EVERY == INVALID_EVERY // 2:
                continue
            e = self.event(i)
            yield (organization_of[e["rental"]], e["rental"], source, e["idempotency_key"], e["dimension"],
                   e["quantity"], e["period_start"], e["period_end"], received_at)  # fmt: skip


def build_data(n: int) -> dict:
    from django.db import connection
    from django.utils.timezone import now

    from accounts import services as account_services
    from accounts.models import ProviderProfile, User

    started, moment = time.perf_counter(), now()
    staff = User.objects.create_user(email="bench-staff@example.cn", password="bench-pass-2026-x", is_staff=True)
    owner = account_services.user_sign_up(email="bench-provider@example.cn", password="bench-pass-2026-x")
    provider = account_services.organization_create(name="Bench provider", owner=owner)
    profile = account_services.provider_apply(
        organization=provider, actor=owner, legal_name="Bench Compute Ltd", contact_name="Bench",
        contact_email="bench-provider@example.cn", regions=["yangtze-delta"],
    )  # fmt: skip
    account_services.provider_approve(profile_id=profile.pk, reviewer=staff)
    assert ProviderProfile.objects.get(pk=profile.pk).status == ProviderProfile.Status.APPROVED
    _key, secret = account_services.api_key_create(
        organization=provider, created_by=owner, name="bench agent", scopes=["read", "provider"]
    )
    site, accelerator = bench_site_and_accelerator()
    copy_rows(
        "marketplace_offering",
        OFFERING_COLUMNS,
        ((moment, moment, provider.pk, site.pk, accelerator.pk, f"Bench offering {i}", "", 1, 16, 128, 1000, 100,
          10**6, 0, Decimal("10.00"), 1, "published", moment, "{}", "reported") for i in range(OFFERINGS)),
    )  # fmt: skip
    copy_rows(
        "accounts_organization", ["created_at", "updated_at", "name", "slug", "is_personal"],
        ((moment, moment, f"Bench buyer {i}", f"bench-buyer-{i}", False) for i in range(ORGANIZATIONS)),
    )  # fmt: skip
    rental_started = moment - timedelta(hours=48)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM marketplace_offering WHERE provider_id = %s ORDER BY id", [provider.pk])
        offerings = [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT id FROM accounts_organization WHERE slug LIKE 'bench-buyer-%%' ORDER BY id")
        buyers = [row[0] for row in cursor.fetchall()]
    copy_rows(
        "marketplace_rental",
        ["created_at", "updated_at", "mode", "nodes", "accelerators", "price_per_accelerator_hour", "specs",
         "residency_zone", "metering", "starts_at", "status", "status_changed_at", "started_at", "suspension_reason",
         "charged_amount", "uncollected_amount", "offering_id", "organization_id", "provider_id",
         "usage_rated_through"],
        ((moment, moment, "on_demand", 1, 1, Decimal("10.00"), "{}", "cn-east", "reported", rental_started, "running",
          rental_started, rental_started, "", 0, 0, offerings[n % OFFERINGS], buyer, provider.pk, 0)
         for n, buyer in enumerate(buyers)),
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, organization_id FROM marketplace_rental WHERE provider_id = %s ORDER BY id",
                       [provider.pk])  # fmt: skip
        rentals = cursor.fetchall()
        cursor.execute("ANALYZE")
    log(f"data: {len(rentals)} running rentals of {ORGANIZATIONS} organizations on {OFFERINGS} offerings in "
        f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    stream = EventStream(rentals, rental_started + timedelta(minutes=1), n)
    return {"stream": stream, "source": f"provider:{provider.pk}", "secret": secret}


def truncate_events() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE billing_usageevent")
        cursor.execute("CHECKPOINT")  # every variant starts from the same clean slate


def stored_events() -> int:
    from billing.models import UsageEvent

    return UsageEvent.objects.count()


# --- The variants ---


def run_copy(data: dict, n: int, binary: bool) -> float:
    """The ceiling: the unique valid rows, COPY'd by one connection in commits of 100k rows, prepared beforehand
    (the endpoints' clients build their JSON while they are timed). Rows per second."""
    from django.db import connection
    from django.utils.dateparse import parse_datetime
    from django.utils.timezone import now

    truncate_events()
    rows = list(data["stream"].rows(n, data["source"], now()))
    if binary:
        rows = [(*row[:5], Decimal(row[5]), parse_datetime(row[6]), parse_datetime(row[7]), row[8]) for row in rows]
    statement = f"COPY billing_usageevent ({', '.join(COLUMNS)}) FROM STDIN" + (" (FORMAT BINARY)" if binary else "")
    started = time.perf_counter()
    for start in range(0, len(rows), 100_000):
        with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
            if binary:
                copy.set_types(["int8", "int8", "varchar", "varchar", "varchar", "numeric", "timestamptz",
                                "timestamptz", "timestamptz"])  # fmt: skip
            for row in rows[start : start + 100_000]:
                copy.write_row(row)
    elapsed = time.perf_counter() - started
    assert stored_events() == len(rows)
    return len(rows) / elapsed


def run_floor(data: dict) -> float:
    """One autocommit INSERT per event, on the first FLOOR_EVENTS unique valid events. Events per second."""
    from django.db import connection
    from django.utils.timezone import now

    truncate_events()
    rows = list(data["stream"].rows(FLOOR_EVENTS, data["source"], now()))
    statement = f"INSERT INTO billing_usageevent ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for row in rows:
            cursor.execute(statement, row)
    return len(rows) / (time.perf_counter() - started)


def post_batches(port: int, path: str, secret: str, stream: EventStream, n: int, batch: int, clients: int) -> dict:
    """`clients` threads post the stream in batches of `batch`, batch k to thread k % clients. Sums the answers."""
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0, "errors": []}
    lock = threading.Lock()
    batches = range(0, n, batch)

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
        mine = {"accepted": 0, "duplicates": 0, "rejected": 0}
        for start in batches[index::clients]:
            body = json.dumps({"events": [stream.event(i) for i in range(start, min(start + batch, n))]})
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                with lock:
                    totals["errors"].append(f"{response.status}: {answer[:200]!r}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                continue
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            answer = json.loads(answer)
            for name in mine:
                mine[name] += answer.get(name, 0)
        with lock:
            for name in mine:
                totals[name] += mine[name]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    totals["rate"] = n / (time.perf_counter() - started)
    return totals


def run_endpoint(server, port: int, path: str, data: dict, n: int, batch: int, clients: int) -> dict:
    """Post the stream to an endpoint from an empty table; the answers' totals, events per second and the server's
    CPU per event (its workers' user and system time)."""
    truncate_events()
    cpu = worker_cpu_seconds(server.pid)
    totals = post_batches(port, path, data["secret"], data["stream"], n, batch, clients)
    totals["cpu_us"] = (worker_cpu_seconds(server.pid) - cpu) / n * 1e6
    return totals


def product_checks(product: dict, expected: dict) -> bool:
    stored = stored_events()
    checks = {
        f"accepted {product['accepted']} = unique valid {expected['accepted']} = stored {stored}":
            product["accepted"] == expected["accepted"] == stored,
        f"replays counted once: {product['duplicates']} duplicates": product["duplicates"] == expected["duplicates"],
        f"invalid rejected with a reason: {product['rejected']}": product["rejected"] == expected["rejected"],
        f"failed requests: {len(product['errors'])}": not product["errors"],
    }  # fmt: skip
    return log_checks("  check", checks, product["errors"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds after the warm-up")
    parser.add_argument("--batches", default="500,100", help="events per request, comma-separated; the first is judged")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of the endpoints")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    fresh_database(url)
    data = build_data(args.events)
    n, (batch, *other_batches) = args.events, [int(b) for b in args.batches.split(",")]
    expected = data["stream"].expected(n)
    log(f"stream: {n} events = {expected['accepted']} unique valid + {expected['duplicates']} replays + "
        f"{expected['rejected']} invalid")  # fmt: skip

    server, port = start_server(url, args.workers)
    peer_path, product_path = "/bench/peer/usage-events/", "/api/v1/usage-events/"
    rates: dict[str, list[float]] = {"copy": [], "peer": [], "product": []}
    ok = True
    try:
        warm_up = min(n, 20 * batch)
        run_copy(data, warm_up, binary=False)
        for path in (peer_path, product_path):
            run_endpoint(server, port, path, data, warm_up, batch, args.clients)
        for round_number in range(1, args.rounds + 1):
            rates["copy"].append(run_copy(data, n, binary=False))
            log(f"round {round_number}  ceiling  COPY text        {rates['copy'][-1]:10.0f} events/s")
            peer = run_endpoint(server, port, peer_path, data, n, batch, args.clients)
            rates["peer"].append(peer["rate"])
            log(f"round {round_number}  peer     bulk_create × {batch:<4} {peer['rate']:8.0f} events/s  "
                f"{peer['cpu_us']:5.1f} µs server CPU/event")  # fmt: skip
            ok &= not peer["errors"] and stored_events() == expected["accepted"]
            product = run_endpoint(server, port, product_path, data, n, batch, args.clients)
            rates["product"].append(product["rate"])
            log(f"round {round_number}  product  batch × {batch:<10} {product['rate']:8.0f} events/s  "
                f"{product['cpu_us']:5.1f} µs server CPU/event  {product['rate'] / rates['copy'][-1]:.2f} × COPY  "
                f"{product['rate'] / peer['rate']:.2f} × peer")  # fmt: skip
            ok &= product_checks(product, expected)

        log(f"once     COPY binary               {run_copy(data, n, binary=True):10.0f} events/s (context)")
        floor = run_floor(data)
        log(f"once     floor: INSERT per event   {floor:10.0f} events/s ({FLOOR_EVENTS} events, autocommit)")
        for size in other_batches:
            product = run_endpoint(server, port, product_path, data, n, size, args.clients)
            log(f"once     product  batch × {size:<8} {product['rate']:10.0f} events/s  "
                f"{product['cpu_us']:5.1f} µs server CPU/event (context)")  # fmt: skip
            ok &= product_checks(product, expected)
    finally:
        server.terminate()
        server.wait(timeout=30)

    medians = {name: statistics.median(values) for name, values in rates.items()}
    log(f"medians of {args.rounds} rounds: " + ", ".join(f"{k} {v:.0f} events/s" for k, v in medians.items()))
    figures = {
        "batch_vs_copy": medians["product"] / medians["copy"],
        "batch_vs_peer": medians["product"] / medians["peer"],
    }
    for name, value in figures.items():
        verdict = "meets" if value >= TARGETS[name] else "MISSES"
        log(f"ratio {name:<16} {value:5.2f} (target ≥ {TARGETS[name]}: {verdict})")
    log(f"ratio batch_vs_floor   {medians['product'] / floor:5.1f} (printed)")
    log(f"ratio checks           {'exact' if ok else 'FAILED'}")


if __name__ == "__main__":
    main()
