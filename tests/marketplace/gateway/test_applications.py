"""Applications called through the gateway as `app:<slug>`: their version applied, their price charged as sold (per
call, per 1K tokens, in a free trial, under a subscription), and each call's capture split four ways."""

import http.client
from decimal import Decimal

import openai
import pytest

from billing.models import AccountKind, LedgerTransaction
from billing.services.holds import fee_split
from marketplace.gateway.directory import try_it_token
from marketplace.models import Application, ApplicationVersion, GatewayPolicy, ResidencyZone
from marketplace.services.applications import application_status_set, application_subscribe
from marketplace.services.model_calls import model_calls_capture
from tests.factories.accounts import MembershipFactory, api_key_for
from tests.factories.applications import published_application
from tests.factories.billing import fund
from tests.factories.gateway import written_calls

MESSAGES = [{"role": "user", "content": "Clause 7: the supplier may end the contract at any time."}]
FEE_PERCENT = Decimal(10)


def client_for(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)


def call_app(gateway, key: str, slug: str = "contract-reviewer", **options):
    return client_for(gateway, key).chat.completions.create(model=f"app:{slug}", messages=MESSAGES, **options)


def postings_by_account(transaction: LedgerTransaction) -> dict[tuple[int | None, str], Decimal]:
    return {
        (p.account.organization_id, p.account.kind): p.amount for p in transaction.postings.select_related("account")
    }


def test_a_per_call_application_runs_its_version_and_each_call_is_one_ledger_transaction_split_four_ways(
    gateway, buyer, buyer_key, chat_service
):
    # given an application sold at 0.05 a call on the chat service, with a system prompt
    application = published_application(model_service=chat_service, price="0.05")
    # when the buyer calls it twice, and the model directly once with the same messages
    answers = [call_app(gateway, buyer_key), call_app(gateway, buyer_key, stream=False)]
    client_for(gateway, buyer_key).chat.completions.create(model=chat_service.slug, messages=MESSAGES)
    app_calls, direct = written_calls(gateway)[:2], written_calls(gateway)[2]
    captured = model_calls_capture()
    # then the answers name the application, the upstream got its system prompt first (more input tokens)
    assert {answer.model for answer in answers} == {"app:contract-reviewer"}
    assert all(call.prompt_tokens > direct.prompt_tokens for call in app_calls)
    assert captured == 3
    for call in app_calls:
        call.refresh_from_db()
        model_cost = chat_service.input_price_per_1k_tokens * call.prompt_tokens / 1000 + (
            chat_service.output_price_per_1k_tokens * call.completion_tokens / 1000
        )
        assert (call.application_id, call.requested_model) == (application.pk, "app:contract-reviewer")
        assert call.application_amount == Decimal("0.05")
        assert call.cost == Decimal("0.05") + model_cost.quantize(Decimal("1e-8"))
        # each call its own transaction: caller pays all, provider earns the model's part, seller the app's part,
        # each less the platform's fee, and the postings sum to zero
        postings = postings_by_account(call.ledger_transaction)
        provider_earned, model_fee = fee_split(amount=call.model_cost, fee_percent=FEE_PERCENT)
        seller_earned, app_fee = fee_split(amount=Decimal("0.05"), fee_percent=FEE_PERCENT)
        assert postings == {
            (buyer.pk, AccountKind.HELD): -call.cost,
            (chat_service.provider_id, AccountKind.EARNINGS): provider_earned,
            (application.seller_id, AccountKind.EARNINGS): seller_earned,
            (None, AccountKind.PLATFORM_REVENUE): model_fee + app_fee,
        }
        assert sum(postings.values()) == 0
        assert (call.fee, call.application_fee) == (model_fee, app_fee)
    assert app_calls[0].ledger_transaction_id != app_calls[1].ledger_transaction_id
    assert direct.ledger_transaction_id not in {call.ledger_transaction_id for call in app_calls}


def test_per_1k_tokens_the_free_trial_and_the_sellers_own_calls(gateway, buyer, buyer_key, chat_service):
    # given an application at 0.01 per 1K tokens with 2 free trial calls
    application = published_application(
        model_service=chat_service, pricing=ApplicationVersion.Pricing.PER_1K_TOKENS, price="0.01", free_trial_calls=2
    )
    seller_key = api_key_for(application.seller, scopes=["gateway"])[1]
    fund(application.seller, "10.00")
    # when the buyer calls it three times and the seller once
    for _ in range(3):
        call_app(gateway, buyer_key)
    call_app(gateway, seller_key)
    calls = written_calls(gateway)
    # then two trial calls pay only the model; the third pays the tokens at the app's price; the seller pays no app
    by_buyer = [call for call in calls if call.organization_id == buyer.pk]
    assert [call.application_amount for call in by_buyer[:2]] == [0, 0]
    tokens = by_buyer[2].prompt_tokens + by_buyer[2].completion_tokens
    assert by_buyer[2].application_amount == (Decimal("0.01") * tokens / 1000).quantize(Decimal("1e-8"))
    own = next(call for call in calls if call.organization_id == application.seller_id)
    assert own.application_amount == 0 and own.cost == own.model_cost > 0


def test_a_subscription_application_wants_a_subscription_then_charges_only_the_model(
    gateway, buyer, buyer_key, chat_service
):
    # given an application sold at 29.90 a month with no trial
    application = published_application(
        model_service=chat_service, pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price="29.90"
    )
    # when the buyer calls it without a subscription
    with pytest.raises(openai.APIStatusError) as refused:
        call_app(gateway, buyer_key)
    # then 402 subscription_required
    assert (refused.value.status_code, refused.value.code) == (402, "subscription_required")
    # when it subscribes and calls
    owner = MembershipFactory(organization=buyer, role="owner").user
    subscription = application_subscribe(application=application, organization=buyer, user=owner)
    call_app(gateway, buyer_key)
    # then the call pays only the model, and the month's payment split buyer → seller and platform, summing to zero
    (call,) = written_calls(gateway)
    assert call.application_amount == 0 and call.cost > 0
    payment = subscription.payments.get()
    postings = postings_by_account(payment.ledger_transaction)
    assert postings == {
        (buyer.pk, AccountKind.AVAILABLE): Decimal("-29.90"),
        (application.seller_id, AccountKind.EARNINGS): Decimal("26.91"),
        (None, AccountKind.PLATFORM_REVENUE): Decimal("2.99"),
    }


def test_an_unpublished_or_out_of_zone_application_is_not_found_and_models_lists_published_ones(
    gateway, buyer, buyer_key, chat_service, settings
):
    # given a published application, listed by /v1/models
    settings.GATEWAY_DIRECTORY_SECONDS = 0
    application = published_application(model_service=chat_service)
    listed = {model.id for model in client_for(gateway, buyer_key).models.list()}
    assert "app:contract-reviewer" in listed
    # when the buyer is pinned to a zone the model service is not in
    GatewayPolicy.objects.create(organization=buyer, residency_zone=ResidencyZone.CN_NORTH)
    with pytest.raises(openai.NotFoundError) as out_of_zone:
        call_app(gateway, buyer_key)
    # then 404 model_not_in_zone; and once unpublished, 404 model_not_found
    assert out_of_zone.value.code == "model_not_in_zone"
    GatewayPolicy.objects.filter(organization=buyer).delete()
    application_status_set(application=application, user=application.owner, status=Application.Status.UNPUBLISHED)
    with pytest.raises(openai.NotFoundError) as unpublished:
        call_app(gateway, buyer_key)
    assert unpublished.value.code == "model_not_found"
    assert written_calls(gateway) == []


def test_a_try_it_token_calls_as_the_signed_in_member_and_browsers_may_call_from_any_origin(
    gateway, buyer, chat_service
):
    # given a member's try-it token and a billing member's
    member = MembershipFactory(organization=buyer, role="member").user
    billing = MembershipFactory(organization=buyer, role="billing").user
    token = try_it_token(user_id=member.pk, organization_id=buyer.pk)
    # when the page calls the gateway with it (after the browser's preflight)
    preflight = http_request(gateway, "OPTIONS", "/v1/chat/completions", headers={"Origin": "https://shop.example"})
    answer = client_for(gateway, token).chat.completions.create(model=chat_service.slug, messages=MESSAGES)
    # then the call is the organization's, made with no API key
    assert preflight[0] == 204 and preflight[1]["access-control-allow-origin"] == "*"
    assert "authorization" in preflight[1]["access-control-allow-headers"]
    (call,) = written_calls(gateway)
    assert answer.choices[0].message.content and (call.organization_id, call.api_key_id) == (buyer.pk, None)
    # and a tampered token, or a billing member's, is refused
    for refused in (token[:-2] + "xx", try_it_token(user_id=billing.pk, organization_id=buyer.pk)):
        with pytest.raises(openai.AuthenticationError) as error:
            client_for(gateway, refused).models.list()
        assert error.value.code == "invalid_api_key"


def http_request(gateway, method: str, path: str, headers: dict) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    connection.request(method, path, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status, {name.lower(): value for name, value in response.getheaders()}
