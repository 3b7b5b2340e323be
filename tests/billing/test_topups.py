import time
from decimal import Decimal

import pytest

from billing.models import LedgerTransaction, StripeEvent, TopUp
from billing.selectors import wallet_get
from billing.services.topups import topup_confirm_return, topup_start
from billing.stripe_client import PaymentProviderUnavailable
from marketplace.core.errors import NotFound
from tests.billing.conftest import WEBHOOK_SECRET
from tests.concurrency import race
from tests.factories.accounts import MembershipFactory, OrganizationFactory
from tests.fakes.stripe import FakeStripe, signed_event

WEBHOOK = "/billing/stripe/webhook/"


def _post_event(client, payload: bytes, signature: str):
    return client.post(WEBHOOK, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature)


def _start(organization, owner, amount="100.00") -> TopUp:
    return topup_start(organization=organization, amount=amount, created_by=owner)


def test_api_top_up_in_test_mode_credits_at_once_and_says_so(organization, owner, api_client_for, test_mode_top_ups):
    # when
    response = api_client_for(organization).post("/api/v1/top-ups/", {"amount": "250.50"}, format="json")
    # then
    assert response.status_code == 201
    body = response.json()
    assert (body["amount"], body["mode"], body["status"], body["checkout_url"]) == (
        "250.50000000", "test", "succeeded", None,
    )  # fmt: skip
    wallet = api_client_for(organization).get("/api/v1/wallet/").json()
    assert (wallet["available"], wallet["test_mode_top_ups"]) == ("250.50000000", True)


def test_without_stripe_or_test_mode_top_ups_are_unavailable(organization, owner, api_client_for, settings):
    settings.STRIPE_SECRET_KEY, settings.BILLING_TEST_TOPUPS = "", False
    response = api_client_for(organization).post("/api/v1/top-ups/", {"amount": "100"}, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "payments_unavailable"
    assert not TopUp.objects.exists()


@pytest.mark.parametrize(
    ("amount", "code"),
    [("9.99", "amount_out_of_range"), ("50000.01", "amount_out_of_range"), ("10.001", "invalid_amount"),
     ("ten", "invalid_amount"), ("NaN", "invalid_amount")],
)  # fmt: skip
def test_top_up_amount_outside_the_rules_is_refused(
    organization, owner, api_client_for, test_mode_top_ups, amount, code
):
    response = api_client_for(organization).post("/api/v1/top-ups/", {"amount": amount}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert not TopUp.objects.exists()


def test_member_without_a_billing_role_cannot_top_up(organization, owner, api_client_for, test_mode_top_ups):
    member = MembershipFactory(organization=organization, role="member").user
    response = api_client_for(organization, user=member).post("/api/v1/top-ups/", {"amount": "100"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "role_required"


def test_stripe_top_up_opens_a_checkout_session_with_our_idempotency_key(organization, owner, fake_stripe):
    # when
    top_up = _start(organization, owner, "123.45")
    # then
    (call,) = fake_stripe.posts("/v1/checkout/sessions")
    assert call["idempotency_key"] == f"topup-checkout:{top_up.pk}"
    assert call["params"]["line_items[0][price_data][unit_amount]"] == "12345"
    assert call["params"]["line_items[0][price_data][currency]"] == "cny"
    assert call["params"]["success_url"].endswith(f"/billing/top-ups/{top_up.pk}/return/")
    assert (top_up.status, top_up.checkout_url) == (
        TopUp.Status.PENDING,
        fake_stripe.sessions[top_up.stripe_checkout_session_id]["url"],
    )
    assert wallet_get(organization=organization).available == 0


def test_stripe_failure_marks_the_top_up_failed(organization, owner, fake_stripe):
    fake_stripe.fail_next("error500")
    with pytest.raises(PaymentProviderUnavailable):
        _start(organization, owner)
    assert list(TopUp.objects.values_list("status", flat=True)) == [TopUp.Status.FAILED]


def test_completed_checkout_webhook_credits_the_wallet(organization, owner, fake_stripe, client):
    # given
    top_up = _start(organization, owner)
    session = fake_stripe.pay(top_up.stripe_checkout_session_id)
    # when
    response = _post_event(client, *signed_event("checkout.session.completed", session, secret=WEBHOOK_SECRET))
    # then
    assert response.status_code == 200
    top_up.refresh_from_db()
    assert top_up.status == TopUp.Status.SUCCEEDED
    assert top_up.stripe_payment_intent_id == session["payment_intent"]
    assert wallet_get(organization=organization).available == Decimal("100.00")


def test_async_payment_waits_for_its_success_event(organization, owner, fake_stripe, client):
    # given: a bank transfer style payment, completed but not yet paid
    top_up = _start(organization, owner)
    session = fake_stripe.sessions[top_up.stripe_checkout_session_id]
    # when
    _post_event(client, *signed_event("checkout.session.completed", session, secret=WEBHOOK_SECRET))
    # then
    assert wallet_get(organization=organization).available == 0
    session = fake_stripe.pay(top_up.stripe_checkout_session_id)
    _post_event(client, *signed_event("checkout.session.async_payment_succeeded", session, secret=WEBHOOK_SECRET))
    assert wallet_get(organization=organization).available == Decimal("100.00")


def test_async_payment_failure_marks_the_top_up_failed(organization, owner, fake_stripe, client):
    top_up = _start(organization, owner)
    session = fake_stripe.sessions[top_up.stripe_checkout_session_id]
    _post_event(client, *signed_event("checkout.session.async_payment_failed", session, secret=WEBHOOK_SECRET))
    top_up.refresh_from_db()
    assert top_up.status == TopUp.Status.FAILED
    assert wallet_get(organization=organization).available == 0


def test_success_redirect_before_the_webhook_credits_once(organization, owner, fake_stripe, client):
    # given
    top_up = _start(organization, owner)
    session = fake_stripe.pay(top_up.stripe_checkout_session_id)
    client.force_login(owner)
    # when: the buyer comes back first, then the webhook arrives, then the buyer reloads
    assert client.get(f"/billing/top-ups/{top_up.pk}/return/").status_code == 302
    _post_event(client, *signed_event("checkout.session.completed", session, secret=WEBHOOK_SECRET))
    client.get(f"/billing/top-ups/{top_up.pk}/return/")
    # then
    assert wallet_get(organization=organization).available == Decimal("100.00")
    assert LedgerTransaction.objects.filter(kind="top_up").count() == 1


def test_success_redirect_of_another_organization_is_not_found(organization, owner, fake_stripe):
    top_up = _start(organization, owner)
    fake_stripe.pay(top_up.stripe_checkout_session_id)
    with pytest.raises(NotFound):
        topup_confirm_return(organization=OrganizationFactory(), top_up_id=top_up.pk)
    top_up.refresh_from_db()
    assert top_up.status == TopUp.Status.PENDING


@pytest.mark.parametrize("tamper", ["body", "secret", "stale", "missing"])
def test_bad_signatures_get_400_and_write_nothing(organization, owner, fake_stripe, client, tamper):
    # given
    top_up = _start(organization, owner)
    session = fake_stripe.pay(top_up.stripe_checkout_session_id)
    secret = "whsec_someone_else" if tamper == "secret" else WEBHOOK_SECRET
    at = int(time.time()) - 301 if tamper == "stale" else None
    payload, signature = signed_event("checkout.session.completed", session, secret=secret, at=at)
    if tamper == "body":
        payload = payload.replace(b'"amount_total": 10000', b'"amount_total": 99999900')
    if tamper == "missing":
        signature = ""
    # when
    response = _post_event(client, payload, signature)
    # then
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not StripeEvent.objects.exists()
    assert not LedgerTransaction.objects.filter(kind="top_up").exists()


def test_a_replayed_event_is_processed_once(organization, owner, fake_stripe, client):
    top_up = _start(organization, owner)
    session = fake_stripe.pay(top_up.stripe_checkout_session_id)
    delivery = signed_event("checkout.session.completed", session, secret=WEBHOOK_SECRET)
    for _ in range(3):
        assert _post_event(client, *delivery).status_code == 200
    assert StripeEvent.objects.count() == 1
    assert wallet_get(organization=organization).available == Decimal("100.00")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_five_concurrent_deliveries_and_the_redirect_credit_once(require_postgres, settings, monkeypatch):
    # given
    from django.test import Client

    from billing import stripe_client

    settings.STRIPE_SECRET_KEY, settings.STRIPE_WEBHOOK_SECRET = "sk_test_fake", WEBHOOK_SECRET
    fake = FakeStripe()
    monkeypatch.setattr(stripe_client, "HTTP_CLIENT", fake)
    organization = OrganizationFactory()
    owner = MembershipFactory(organization=organization).user
    top_up = _start(organization, owner)
    session = fake.pay(top_up.stripe_checkout_session_id)
    delivery = signed_event("checkout.session.completed", session, secret=WEBHOOK_SECRET)
    buyer = Client()
    buyer.force_login(owner)

    def deliver_or_come_back(index: int) -> int:
        if index == 5:  # the buyer's success redirect, racing the five deliveries
            return buyer.get(f"/billing/top-ups/{top_up.pk}/return/").status_code
        return _post_event(Client(), *delivery).status_code

    # when
    statuses = race(6, deliver_or_come_back)
    # then
    assert sorted(statuses) == [200] * 5 + [302]
    assert LedgerTransaction.objects.filter(kind="top_up").count() == 1
    assert wallet_get(organization=organization).available == Decimal("100.00")
    assert StripeEvent.objects.count() == 1
