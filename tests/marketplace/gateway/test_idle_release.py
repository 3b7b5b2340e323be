"""An organization that stops calling gets its gateway hold back, never while a call has funds reserved from it."""

import asyncio
from decimal import Decimal

import openai

from billing.models import Hold
from billing.selectors import wallet_get
from marketplace.gateway.counters import DatabaseCounters, RedisCounters
from marketplace.gateway.directory import caller_load
from marketplace.services.model_calls import gateway_holds_release_idle, model_calls_capture
from tests.factories.gateway import written_calls

MESSAGES = [{"role": "user", "content": "hello"}]


def call(gateway, key: str) -> None:
    client = openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)
    client.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES, max_tokens=12)


def test_an_idle_organizations_hold_goes_back_and_its_next_call_holds_again(
    gateway, buyer, buyer_key, chat_service, settings
):
    # given one call, captured: ¥20 held for calls, its cost taken
    call(gateway, buyer_key)
    (first,) = written_calls(gateway)
    model_calls_capture()
    assert wallet_get(organization=buyer).held == Decimal("20.00") - first.cost
    # when it has called recently, nothing is released; once idle, the hold goes back
    assert gateway_holds_release_idle() == 0
    settings.GATEWAY_HOLD_IDLE_SECONDS = 0
    released = gateway_holds_release_idle()
    # then
    wallet = wallet_get(organization=buyer)
    assert released == 1 and wallet.held == 0 and wallet.available == Decimal("100.00") - first.cost
    assert Hold.objects.get().status == Hold.Status.RELEASED
    # and the next call holds again and is captured from the new hold
    call(gateway, buyer_key)
    second = written_calls(gateway)[1]
    model_calls_capture()
    assert wallet_get(organization=buyer).available == Decimal("80.00") - first.cost
    assert wallet_get(organization=buyer).held == Decimal("20.00") - second.cost


def test_a_hold_with_funds_reserved_by_a_call_in_flight_is_kept(gateway, buyer, buyer_key, settings, counters):
    # given a call's worst case reserved and not settled yet
    settings.GATEWAY_HOLD_IDLE_SECONDS = 0
    caller = caller_load(prefix=buyer_key.split("_")[2])

    async def reserve() -> None:
        store = RedisCounters(settings.GATEWAY_REDIS_URL) if counters == "redis" else DatabaseCounters()
        try:
            await store.admit(caller=caller, units=500_000, tokens=10)  # ¥0.005
        finally:
            await store.close()

    asyncio.run(reserve())
    # when / then: kept while reserved
    assert gateway_holds_release_idle() == 0
    assert wallet_get(organization=buyer).held == Decimal("20.00")
    assert Hold.objects.get().status == Hold.Status.ACTIVE
