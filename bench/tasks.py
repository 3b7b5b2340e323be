"""Tasks of the broker micro-benchmark (bench/broker.py), loaded into its worker only (`--include bench.tasks`)."""

from functools import cache

import redis
from celery import shared_task

from accounts.models import Organization
from billing.services.metering import usage_events_record


@cache
def _replies(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def _reply(reply: tuple[str, str] | None) -> None:
    """Say "done" on a Redis list, whatever the broker: the sender's clock stops when it reads it."""
    if reply:
        url, key = reply
        _replies(url).rpush(key, 1)


@shared_task(name="bench.noop")
def noop_task(reply: tuple[str, str] | None = None) -> None:
    _reply(reply)


@shared_task(name="bench.usage_record")
def usage_record_task(provider_id: int, events: list, reply: tuple[str, str] | None = None) -> int:
    """What a task that records reported usage does: the ingestion service on the events it carries."""
    results = usage_events_record(provider=Organization.objects.get(pk=provider_id), events=events)
    _reply(reply)
    return sum(1 for result in results if result.status == "accepted")
