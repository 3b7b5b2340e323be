"""Every error the gateway answers, in OpenAI's error shape with the documented status and code."""

import http.client
import json
import socket
import time
from decimal import Decimal

import openai
import pytest
from django.utils.timezone import now

from accounts.services import api_key_revoke
from billing.services.quotas import month_spend, quota_get
from marketplace.models import ApplicationVersion, GatewayPolicy, ResidencyZone
from marketplace.services.applications import application_subscribe
from tests.factories.accounts import MembershipFactory, OrganizationFactory, api_key_for
from tests.factories.applications import published_application
from tests.factories.billing import fund
from tests.factories.gateway import written_calls
from tests.factories.marketplace import ModelServiceFactory

MESSAGES = [{"role": "user", "content": "hello"}]


def raw_call(gateway, path: str, body: bytes | None, headers: dict) -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    connection.request("POST" if body is not None else "GET", path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), json.loads(response.read())


def error_of(raised: pytest.ExceptionInfo) -> tuple[int, str, str]:
    error = raised.value.body if isinstance(raised.value.body, dict) else {}
    return raised.value.status_code, raised.value.code or error.get("code"), error.get("type")


def client_for(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)


def call_outcomes(client: openai.OpenAI, count: int) -> list:
    """200, or (status, code), for each of `count` calls of two short messages in turn."""
    outcomes = []
    for _ in range(count):
        try:
            client.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES * 2, max_tokens=12)
            outcomes.append(200)
        except openai.APIStatusError as error:
            outcomes.append((error.status_code, error.code))
    return outcomes


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_key_and_a_bad_key_are_401(gateway):
    # when
    status, _headers, body = raw_call(gateway, "/v1/models", None, {})
    # then
    assert (status, body["error"]["code"], body["error"]["type"]) == (401, "missing_api_key", "authentication_error")
    with pytest.raises(openai.AuthenticationError) as raised:
        client_for(gateway, "mk_live_nothere_secret").models.list()
    assert error_of(raised) == (401, "invalid_api_key", "authentication_error")


def test_a_revoked_key_is_refused(gateway, buyer, chat_service):
    # given
    key, secret = api_key_for(buyer, scopes=["gateway"])
    api_key_revoke(api_key=key, actor=key.created_by)
    # when / then
    with pytest.raises(openai.AuthenticationError):
        client_for(gateway, secret).models.list()


def test_a_key_without_the_gateway_scope_is_403(gateway, buyer):
    # given
    secret = api_key_for(buyer, scopes=["read", "rent"])[1]
    # when
    with pytest.raises(openai.PermissionDeniedError) as raised:
        client_for(gateway, secret).models.list()
    # then
    assert error_of(raised) == (403, "insufficient_scope", "permission_error")


def test_an_unknown_model_is_404_and_an_embeddings_model_does_not_chat(gateway, buyer_key, embeddings_service):
    client = client_for(gateway, buyer_key)
    # when
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError) as wrong_kind:
        client.chat.completions.create(model="bge-m3", messages=MESSAGES)
    # then
    assert error_of(unknown) == (404, "model_not_found", "invalid_request_error")
    assert unknown.value.body["param"] == "model"
    assert error_of(wrong_kind)[1] == "model_not_found"


def test_bad_requests_are_400_with_the_parameter(gateway, buyer_key, chat_service):
    headers = {"Authorization": f"Bearer {buyer_key}", "Content-Type": "application/json"}
    # when
    not_json = raw_call(gateway, "/v1/chat/completions", b"{nope", headers)
    no_messages = raw_call(gateway, "/v1/chat/completions", json.dumps({"model": "qwen2-5-72b-instruct"}).encode(),
                           headers)  # fmt: skip
    bad_max = raw_call(gateway, "/v1/chat/completions", json.dumps(
        {"model": "qwen2-5-72b-instruct", "messages": MESSAGES, "max_tokens": 0}).encode(), headers)  # fmt: skip
    # then
    assert (not_json[0], not_json[2]["error"]["code"]) == (400, "invalid_request")
    assert (no_messages[0], no_messages[2]["error"]["param"]) == (400, "messages")
    assert (bad_max[0], bad_max[2]["error"]["param"]) == (400, "max_tokens")


@pytest.mark.parametrize(
    "content",
    [[{"type": "text", "text": 123}], [{"type": "text", "text": None}], [{"type": "text"}], ["hello"], 123,
     {"text": "hello"}, [{"type": "text", "text": ["a"]}]],
)  # fmt: skip
def test_a_message_content_of_the_wrong_shape_is_400_on_messages(gateway, buyer_key, chat_service, content):
    # given
    headers = {"Authorization": f"Bearer {buyer_key}", "Content-Type": "application/json"}
    body = {"model": "qwen2-5-72b-instruct", "messages": [{"role": "user", "content": content}]}
    # when
    status, _headers, answer = raw_call(gateway, "/v1/chat/completions", json.dumps(body).encode(), headers)
    # then
    assert (status, answer["error"]["code"], answer["error"]["param"]) == (400, "invalid_request", "messages")
    assert answer["error"]["type"] == "invalid_request_error"
    assert written_calls(gateway) == []


def test_a_body_over_the_gateways_limit_is_413_request_too_large(gateway, buyer_key):
    # given
    headers = {"Authorization": f"Bearer {buyer_key}", "Content-Type": "application/json"}
    body = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"x" * (9 * 1024 * 1024) + b'"}]}'
    # when
    status, _headers, answer = raw_call(gateway, "/v1/chat/completions", body, headers)
    # then
    assert (status, answer["error"]["code"], answer["error"]["type"]) == (
        413,
        "request_too_large",
        "invalid_request_error",
    )


def test_the_upstreams_own_400_passes_through(gateway, buyer_key, chat_service):
    # when: the demo model answers one choice only
    with pytest.raises(openai.BadRequestError) as raised:
        client_for(gateway, buyer_key).chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES, n=2)
    # then
    assert raised.value.status_code == 400 and raised.value.body["param"] == "n"
    [call] = written_calls(gateway)
    assert (call.status_code, call.error_code, call.cost) == (400, "upstream_rejected", 0)


def test_out_of_funds_is_402_and_nothing_is_charged(gateway, chat_service):
    # given: a buyer with 0.01, and a call that may cost up to 1.00 (max_tokens at 0.006 per 1K, beyond 166K)
    poor = OrganizationFactory()
    fund(poor, Decimal("0.01"))
    client = client_for(gateway, api_key_for(poor, scopes=["gateway"])[1])
    chat_service.max_output_tokens = 200_000
    chat_service.save()
    # when
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES, max_tokens=200_000)
    # then
    assert error_of(raised) == (402, "insufficient_funds", "insufficient_quota")
    assert "top up" in raised.value.body["message"].lower() or "充值" in raised.value.body["message"]


def test_over_the_rate_limit_is_429_with_retry_after(gateway, buyer, buyer_key, chat_service, one_minute):
    # given: two requests a minute for the organization
    GatewayPolicy.objects.create(organization=buyer, requests_per_minute=2)
    client = client_for(gateway, buyer_key)
    for _ in range(2):
        client.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES, max_tokens=1)
    # when
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES, max_tokens=1)
    # then
    assert error_of(raised) == (429, "rate_limit_exceeded", "rate_limit_error")
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 60


def test_an_upstream_that_is_down_is_502(gateway, buyer_key):
    # given
    ModelServiceFactory(slug="down-model", upstream_base_url=f"http://127.0.0.1:{closed_port()}/v1")
    # when
    with pytest.raises(openai.APIStatusError) as raised:
        client_for(gateway, buyer_key).chat.completions.create(model="down-model", messages=MESSAGES)
    # then
    assert error_of(raised) == (502, "upstream_unavailable", "api_error")
    [call] = written_calls(gateway)
    assert (call.status_code, call.cost) == (502, 0)


def test_an_alias_falls_back_to_the_next_service_when_the_cheapest_is_down(gateway, buyer_key, chat_service):
    # given: a cheaper service of the same model whose upstream refuses connections
    ModelServiceFactory(
        slug="qwen2-5-72b-instruct",
        input_price_per_1k_tokens=Decimal("0.001"),
        upstream_base_url=f"http://127.0.0.1:{closed_port()}/v1",
    )
    client = client_for(gateway, buyer_key)
    # when
    completion = client.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES, max_tokens=3)
    # then: served by the other one, and billed at its price
    assert completion.model == f"{chat_service.provider.slug}/qwen2-5-72b-instruct"
    [call] = written_calls(gateway)
    assert (call.model_service_id, call.status_code) == (chat_service.pk, 200)


def test_a_caller_that_refuses_fallbacks_gets_502_from_the_cheapest(gateway, buyer_key, chat_service):
    # given
    ModelServiceFactory(slug="qwen2-5-72b-instruct", input_price_per_1k_tokens=Decimal("0.001"),
                        upstream_base_url=f"http://127.0.0.1:{closed_port()}/v1")  # fmt: skip
    # when
    with pytest.raises(openai.APIStatusError) as raised:
        client_for(gateway, buyer_key).chat.completions.create(
            model="qwen2-5-72b-instruct", messages=MESSAGES, extra_body={"provider": {"allow_fallbacks": False}}
        )
    # then
    assert raised.value.status_code == 502


def test_a_pinned_organization_is_only_routed_inside_its_zone(gateway, buyer, buyer_key, chat_service):
    # given: the buyer is pinned to the south; the only service of the model is in the east
    GatewayPolicy.objects.create(organization=buyer, residency_zone=ResidencyZone.CN_SOUTH)
    client = client_for(gateway, buyer_key)
    # when
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES)
    # then
    assert error_of(raised)[1] == "model_not_in_zone"
    assert client.models.list().data == []


def test_a_key_pinned_to_a_zone_is_served_there(gateway, buyer, chat_service, demo_upstream):
    # given: the same model in the south, and a key pinned there
    south = ModelServiceFactory(
        slug="qwen2-5-72b-instruct", residency_zone=ResidencyZone.CN_SOUTH, input_price_per_1k_tokens=Decimal("0.01"),
        upstream_base_url=f"http://127.0.0.1:{demo_upstream.server_port}/v1", upstream_api_key="sk-demo",
    )  # fmt: skip
    key, secret = api_key_for(buyer, scopes=["gateway"])
    GatewayPolicy.objects.create(api_key=key, residency_zone=ResidencyZone.CN_SOUTH)
    # when: the alias would pick the cheaper east service for anyone else
    completion = client_for(gateway, secret).chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES)
    # then
    assert completion.model == f"{south.provider.slug}/qwen2-5-72b-instruct"
    [call] = written_calls(gateway)
    assert call.residency_zone == ResidencyZone.CN_SOUTH


def test_errors_speak_the_callers_language(gateway):
    # when
    status, _headers, english = raw_call(gateway, "/v1/models", None, {"Accept-Language": "en"})
    _status, _headers, chinese = raw_call(gateway, "/v1/models", None, {"Accept-Language": "zh-CN"})
    # then
    assert status == 401
    assert english["error"]["message"].startswith("Send a platform API key")
    assert english["error"]["message"] != chinese["error"]["message"]


def test_over_the_monthly_spend_cap_is_402_budget_exceeded(gateway, buyer, buyer_key, chat_service):
    # given: a monthly cap of 0.0003; a call of two short messages costs 11 × 0.002/1K + 12 × 0.006/1K = 0.000094
    # and may cost up to 19 × 0.002/1K + 12 × 0.006/1K = 0.00011
    quota = quota_get(organization_id=buyer.pk)
    quota.monthly_spend_cap = Decimal("0.0003")
    quota.save()
    client = client_for(gateway, buyer_key)
    # when
    outcomes = call_outcomes(client, 4)
    # then: the gateway hold grew only as far as the cap allows, so the calls stop before passing it
    assert outcomes == [200, 200, 200, (402, "budget_exceeded")]
    assert sum(call.cost for call in written_calls(gateway)) == Decimal("0.000282")


def test_once_other_spend_reaches_the_monthly_cap_calls_on_a_standing_hold_are_402_within_seconds(
    gateway, buyer, buyer_key, chat_service, settings
):
    # given: a cap of 1.0002; one call (0.000094) grows the standing hold to what the cap then allowed
    settings.GATEWAY_SPEND_CAP_RECOUNT_SECONDS = 1
    quota = quota_get(organization_id=buyer.pk)
    quota.monthly_spend_cap = Decimal("1.0002")
    quota.save()
    client = client_for(gateway, buyer_key)
    assert call_outcomes(client, 1) == [200]
    # when: the organization spends 1.00 elsewhere (compute and subscriptions count toward the same cap), leaving
    # 0.000106 of room, less than a call's worst case of 0.00011
    owner = MembershipFactory(organization=buyer, role="owner").user
    application = published_application(pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price="1.00", slug="tutor")
    application_subscribe(application=application, organization=buyer, user=owner)
    time.sleep(1.2)  # the gateway recounts the month's spend within GATEWAY_SPEND_CAP_RECOUNT_SECONDS
    # then: the held funds left do not let calls pass the cap
    assert call_outcomes(client, 2) == [(402, "budget_exceeded")] * 2
    written_calls(gateway)
    assert month_spend(organization_id=buyer.pk, moment=now()) == Decimal("1.000094")


def test_over_the_keys_monthly_spend_limit_is_402_budget_exceeded(gateway, buyer, chat_service):
    # given: a key that may spend 0.00025 a month; a call of two short messages costs 0.000094 and may cost 0.00011
    key, secret = api_key_for(buyer, scopes=["gateway"])
    key.monthly_spend_limit = Decimal("0.00025")
    key.save()
    client = client_for(gateway, secret)
    # when
    outcomes = call_outcomes(client, 3)
    # then: 0.000094 × 2 spent, and a third call's worst case would pass the limit
    assert outcomes == [200, 200, (402, "budget_exceeded")]
    # and another key of the same organization is not held back by it
    other = client_for(gateway, api_key_for(buyer, scopes=["gateway"])[1])
    assert other.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES, max_tokens=1).usage
