"""Broker micro-benchmark (BENCHMARKS.md §2.4, informational): Redis and RabbitMQ side by side, each through a real
worker of the project (prefork, one process, as bench.billing runs it).

    python -m bench.broker [--tasks 5000] [--round-trips 200] [--events 1000] [--rounds 3]

Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/bench_broker; dropped and
rebuilt, with bench.ingest's provider and 5,000 running rentals metered by reports), Redis and RabbitMQ
(BENCH_REDIS_URL, BENCH_RABBITMQ_URL). Replies travel on a Redis list whatever the broker. Each round, per broker:

- `--tasks` no-op tasks sent one after another (enqueue rate), then the time until the worker ran the last of them
  (process rate: tasks are run in the order sent);
- `--round-trips` no-op tasks one at a time, each waited for: the round trip's median;
- `--events` reported usage events recorded by the ingestion service in one task (a batch) and in one task per
  event: events per second of each, and how many were stored. Target: batching ≥ 20 × the events/s.
Exits 0.
"""

import argparse
import os
import time
import uuid
from pathlib import Path
from statistics import median

import redis

from bench.harness import BROKERS, fresh_database, log, log_checks, start_worker
from bench.ingest import build_data

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_broker"
REPLIES = BROKERS["redis"]
QUEUE = "bench-broker"
TARGET_BATCHING = 20.0  # at least, × events/s


class Sender:
    """Sends the bench's tasks to one broker and waits for their replies."""

    def __init__(self, broker: str) -> None:
        from celery import Celery

        self.app = Celery(broker=BROKERS[broker], set_as_current=False)
        self.connection = self.app.connection_for_write()  # explicit: the environment's broker would win otherwise
        self.replies = redis.Redis.from_url(REPLIES, socket_timeout=600)  # longer than any wait below
        self.key = f"bench-broker:{uuid.uuid4().hex}"

    def send(self, name: str, *args, reply: bool = False) -> None:
        kwargs = {"reply": (REPLIES, self.key)} if reply else {}
        self.app.send_task(name, args=args, kwargs=kwargs, queue=QUEUE, connection=self.connection)

    def wait(self, timeout: float = 300) -> None:
        if self.replies.blpop([self.key], timeout=timeout) is None:
            raise RuntimeError(f"no reply within {timeout} s: is the worker running?")

    def close(self) -> None:
        self.connection.release()


def run_noop(sender: Sender, tasks: int) -> tuple[float, float]:
    """(sends per second, tasks run per second from the first send)."""
    started = time.perf_counter()
    for _ in range(tasks - 1):
        sender.send("bench.noop")
    sender.send("bench.noop", reply=True)
    sent = time.perf_counter()
    sender.wait()
    done = time.perf_counter()
    return tasks / (sent - started), tasks / (done - started)


def run_round_trips(sender: Sender, count: int) -> float:
    """The median milliseconds from sending a no-op task to reading its reply."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        sender.send("bench.noop", reply=True)
        sender.wait()
        times.append((time.perf_counter() - started) * 1000)
    return median(times)


def run_events(sender: Sender, provider_id: int, events: list[dict], *, batched: bool) -> float:
    """Events per second recorded through the worker, in one task or one task per event."""
    started = time.perf_counter()
    if batched:
        sender.send("bench.usage_record", provider_id, events, reply=True)
    else:
        for event in events[:-1]:
            sender.send("bench.usage_record", provider_id, [event])
        sender.send("bench.usage_record", provider_id, events[-1:], reply=True)
    sender.wait()
    return len(events) / (time.perf_counter() - started)


def stored_events() -> int:
    from billing.models import UsageEvent

    return UsageEvent.objects.count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000, help="no-op tasks per measure")
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--events", type=int, default=1000, help="events per batching measure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--brokers", default="redis,rabbitmq")
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    fresh_database(url)
    brokers = args.brokers.split(",")
    rounds = args.rounds
    # Fresh events for every measure: each variant of each round records its own slice of the stream.
    data = build_data(args.events * 2 * len(brokers) * rounds)
    stream, provider_id = data["stream"], int(data["source"].split(":")[1])
    slices = iter(range(0, args.events * 2 * len(brokers) * rounds, args.events))
    logs = {broker: Path(f"/tmp/bench-broker-{broker}.log") for broker in brokers}
    workers = {
        broker: start_worker(url, BROKERS[broker], QUEUE, logs[broker], include=["bench.tasks"]) for broker in brokers
    }
    results: dict[str, list[float]] = {}
    expected = 0
    try:
        for round_number in range(1, rounds + 1):
            log(f"round {round_number}")
            for broker in brokers:
                sender = Sender(broker)
                try:
                    sender.send("bench.noop", reply=True)
                    sender.wait(60)  # the worker is up and consuming
                    enqueue, process = run_noop(sender, args.tasks)
                    trip = run_round_trips(sender, args.round_trips)
                    rates = {}
                    for batched in (False, True):
                        first = next(slices)
                        events = [stream.event(i) for i in range(first, first + args.events)]
                        rates[batched] = run_events(sender, provider_id, events, batched=batched)
                        expected += (
                            stream.expected(first + args.events)["accepted"] - stream.expected(first)["accepted"]
                        )
                finally:
                    sender.close()
                log(f"{broker:<8} no-op × {args.tasks}: enqueue {enqueue:7.0f} /s, processed {process:7.0f} /s; "
                    f"round trip p50 {trip:5.2f} ms")  # fmt: skip
                log(f"{broker:<8} {args.events} events: one task per event {rates[False]:7.0f} events/s, one batch "
                    f"task {rates[True]:7.0f} events/s ({rates[True] / rates[False]:.1f} ×)")  # fmt: skip
                for name, value in {"enqueue": enqueue, "process": process, "round_trip_ms": trip,
                                    "single": rates[False], "batch": rates[True]}.items():  # fmt: skip
                    results.setdefault(f"{broker}_{name}", []).append(value)
    finally:
        for worker in workers.values():
            worker.terminate()
            worker.wait(timeout=30)

    stored = stored_events()
    ok = log_checks("check", {f"events stored {stored:,} = accepted {expected:,}": stored == expected}, [])
    log(f"medians of {rounds} rounds:")
    for broker in brokers:
        figures = {name: median(results[f"{broker}_{name}"]) for name in
                   ("enqueue", "process", "round_trip_ms", "single", "batch")}  # fmt: skip
        batching = figures["batch"] / figures["single"]
        verdict = "meets" if batching >= TARGET_BATCHING else "MISSES"
        log(f"{broker:<8} no-op enqueue {figures['enqueue']:7.0f} /s, processed {figures['process']:7.0f} /s, "
            f"round trip p50 {figures['round_trip_ms']:5.2f} ms")  # fmt: skip
        log(f"ratio {broker:<8} batching {batching:6.1f} × events/s (target ≥ {TARGET_BATCHING:.0f}: {verdict})")
    log(f"ratio checks {'exact' if ok else 'FAILED'}")


if __name__ == "__main__":
    main()
