"""The gateway's one-connection Redis client: replies in order under concurrency, scripts Redis forgot, a dropped
connection, and a Redis that is not there (the call is then still billed from the database)."""

import asyncio
import socket
import uuid
from decimal import Decimal

import pytest
import redis
from asgiref.sync import sync_to_async
from django.db import connections

from marketplace.gateway.counters import RedisCounters, Reservation
from marketplace.gateway.redis_pipe import RedisPipe, RedisPipeError, Script
from marketplace.models import ModelCall
from tests.conftest import skip_or_fail
from tests.factories.marketplace import ModelServiceFactory

from .conftest import TEST_REDIS_URL


@pytest.fixture
def redis_url():
    try:
        redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    except redis.ConnectionError:
        skip_or_fail("redis", f"needs Redis at {TEST_REDIS_URL}")
    return TEST_REDIS_URL


def test_many_calls_in_flight_each_get_their_own_reply(redis_url):
    async def scenario():
        pipe = RedisPipe(redis_url)
        replies = await asyncio.gather(*(pipe.execute("INCRBY", "pipe:n", n) for n in range(1, 201)))
        total = await pipe.execute("GET", "pipe:n")
        await pipe.close()
        return replies, total

    replies, total = asyncio.run(scenario())
    # then: the running sums come back in the order sent, each to its caller
    assert replies == [n * (n + 1) // 2 for n in range(1, 201)]
    assert total == b"20100"


def test_a_script_redis_forgot_is_loaded_again(redis_url):
    async def scenario():
        pipe = RedisPipe(redis_url)
        script = Script(pipe, "return tonumber(ARGV[1]) * 2")
        first = await script(keys=[], args=[21])
        await pipe.execute("SCRIPT", "FLUSH")
        again = await script(keys=[], args=[4])
        await pipe.close()
        return first, again

    assert asyncio.run(scenario()) == (42, 8)


def test_a_dropped_connection_is_made_again_on_the_next_call(redis_url):
    async def scenario():
        pipe = RedisPipe(redis_url)
        await pipe.execute("CLIENT", "SETNAME", "gateway-pipe-test")
        redis.Redis.from_url(redis_url).client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.1)
        answer = await pipe.execute("PING")
        await pipe.close()
        return answer

    assert asyncio.run(scenario()) == b"PONG"


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{probe.getsockname()[1]}/0"


def test_without_redis_a_call_fails_cleanly_and_a_settled_call_is_recorded_in_the_database(transactional_db):
    # given: a call that was served, and a Redis that is gone
    service = ModelServiceFactory()
    record = {
        "call_id": str(uuid.uuid4()), "organization_id": service.provider_id, "api_key_id": None,
        "model_service_id": service.pk, "requested_model": service.slug, "residency_zone": service.residency_zone,
        "endpoint": "chat", "stream": False, "status_code": 200, "error_code": "", "prompt_tokens": 10,
        "completion_tokens": 5, "tokens_estimated": False, "cost_units": 5000, "latency_ms": 3,
        "first_token_ms": None, "created_at": "2026-11-24T10:00:00+08:00",
    }  # fmt: skip

    async def scenario():
        counters = RedisCounters(closed_port_url())
        with pytest.raises(RedisPipeError):
            await counters.pipe.execute("PING")
        await counters.settle(Reservation(service.provider_id, 9000, "epoch"), cost_units=5000, record=record)
        await counters.close()
        # as the gateway does when it stops: the database connection of asgiref's worker thread is not left open
        await sync_to_async(connections.close_all)()

    # when
    asyncio.run(scenario())
    # then
    call = ModelCall.objects.get()
    assert (str(call.call_id), call.cost) == (record["call_id"], Decimal("0.00005"))
