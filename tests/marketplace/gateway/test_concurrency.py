"""Many calls at once: a budget is never overspent, and a rate limit never admits more than its window allows."""

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import openai
import pytest

from billing.selectors import wallet_get
from marketplace.models import GatewayPolicy
from marketplace.services.model_calls import model_calls_capture
from tests.factories.accounts import OrganizationFactory, api_key_for
from tests.factories.billing import fund
from tests.factories.gateway import written_calls
from tests.factories.marketplace import ModelServiceFactory

MESSAGES = [{"role": "user", "content": "hello"}]


def call_status(client: openai.OpenAI, model: str) -> int:
    try:
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=20)
    except openai.APIStatusError as error:
        return error.status_code
    return 200


def test_100_parallel_calls_never_spend_past_the_funds(gateway, demo_upstream):
    # given: a call costs 7 × 0.5/1K + 20 × 1/1K = 0.0235 and may cost up to 11 × 0.5/1K + 20 × 1/1K = 0.0255;
    # 0.75 pays for 31 of them
    service = ModelServiceFactory(
        slug="pricey", input_price_per_1k_tokens=Decimal("0.5"), output_price_per_1k_tokens=Decimal("1"),
        upstream_base_url=f"http://127.0.0.1:{demo_upstream.server_port}/v1", upstream_api_key="sk-demo",
        upstream_model="qwen2-5-72b-instruct",
    )  # fmt: skip
    buyer = OrganizationFactory()
    fund(buyer, Decimal("0.75"))
    client = openai.OpenAI(base_url=gateway.url, api_key=api_key_for(buyer, scopes=["gateway"])[1], max_retries=0)
    # when
    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(lambda _n: call_status(client, f"{service.provider.slug}/pricey"), range(100)))
    # then: about 30 answered, every other call refused with 402
    answered = statuses.count(200)
    assert statuses.count(402) == 100 - answered
    assert 29 <= answered <= 31
    calls = [call for call in written_calls(gateway) if call.status_code == 200]
    assert len(calls) == answered and {call.cost for call in calls} == {Decimal("0.0235")}
    settled = sum(call.cost for call in calls)
    assert settled <= Decimal("0.75")
    # and the capture takes exactly that; the wallet never went below zero
    model_calls_capture()
    wallet = wallet_get(organization=buyer)
    assert wallet.available >= 0 and wallet.held >= 0
    assert wallet.available + wallet.held == Decimal("0.75") - settled


def test_a_burst_of_three_times_the_rate_limit_admits_the_limit(gateway, buyer, buyer_key, chat_service, one_minute):
    # given: ten requests a minute
    GatewayPolicy.objects.create(organization=buyer, requests_per_minute=10)
    client = openai.OpenAI(base_url=gateway.url, api_key=buyer_key, max_retries=0)
    # when: 30 requests from 6 threads
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(lambda _n: call_status(client, "qwen2-5-72b-instruct"), range(30)))
    # then
    assert (statuses.count(200), statuses.count(429)) == (10, 20)


@pytest.mark.parametrize("limit", ["requests_per_minute", "tokens_per_minute"])
def test_a_keys_own_limit_applies_on_top_of_its_organizations(gateway, buyer, chat_service, limit, one_minute):
    # given: a key allowed 2 requests, or 60 tokens (each call counts 7 prompt + 20 max_tokens = 27)
    key, secret = api_key_for(buyer, scopes=["gateway"])
    GatewayPolicy.objects.create(api_key=key, **{limit: 2 if limit == "requests_per_minute" else 60})
    client = openai.OpenAI(base_url=gateway.url, api_key=secret, max_retries=0)
    # when
    statuses = [call_status(client, "qwen2-5-72b-instruct") for _ in range(3)]
    # then
    assert statuses == [200, 200, 429]
