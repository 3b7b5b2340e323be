from decimal import Decimal

import pytest

from billing.models import AccountKind, Payout, ProviderBilling
from billing.selectors import wallet_get
from billing.services.ledger import InsufficientFunds, platform_account
from billing.services.payouts import charge_refund, payout_approve, payout_request
from billing.tasks import payout_settle_task
from marketplace.core.errors import Conflict, DomainError, PermissionDenied
from tests.factories.accounts import MembershipFactory, OrganizationFactory, UserFactory
from tests.factories.billing import earn
from tests.factories.marketplace import ProviderOrganizationFactory


@pytest.fixture
def provider(db, settings):
    settings.PLATFORM_FEE_PERCENT = Decimal("10")
    return ProviderOrganizationFactory(name="Provider")


@pytest.fixture
def provider_owner(provider):
    return MembershipFactory(organization=provider).user


def test_payout_request_takes_the_amount_out_of_earnings_at_once(
    provider, provider_owner, django_capture_on_commit_callbacks
):
    # given
    earn(provider, "1000.00")
    # when
    with django_capture_on_commit_callbacks() as callbacks:
        payout = payout_request(provider=provider, amount=Decimal("500.00"), requested_by=provider_owner)
    # then
    assert payout.status == Payout.Status.REQUESTED
    assert len(callbacks) == 1
    assert wallet_get(organization=provider).earnings == Decimal("400.00")
    assert platform_account(kind=AccountKind.PAYOUTS_IN_TRANSIT).balance == Decimal("500.00")


@pytest.mark.parametrize(
    ("amount", "error"), [("99.99", DomainError), ("100.001", DomainError), ("900.01", InsufficientFunds)]
)
def test_payout_request_outside_the_rules_is_refused(provider, provider_owner, amount, error):
    earn(provider, "1000.00")
    with pytest.raises(error):
        payout_request(provider=provider, amount=Decimal(amount), requested_by=provider_owner)
    assert not Payout.objects.exists()
    assert wallet_get(organization=provider).earnings == Decimal("900.00")


def test_payout_without_connect_waits_for_staff(provider, provider_owner):
    earn(provider, "1000.00")
    payout = payout_request(provider=provider, amount=Decimal("500.00"), requested_by=provider_owner)
    payout_settle_task.apply(args=[payout.pk])
    payout.refresh_from_db()
    assert (payout.status, payout.method) == (Payout.Status.AWAITING_APPROVAL, Payout.Method.MANUAL)
    payout = payout_approve(payout_id=payout.pk, staff=UserFactory(is_staff=True))
    assert payout.status == Payout.Status.PAID
    assert platform_account(kind=AccountKind.PAYOUTS_IN_TRANSIT).balance == Decimal("0")


def test_large_manual_payout_needs_two_different_staff_members(provider, provider_owner, settings):
    # given
    settings.PAYOUT_TWO_PERSON_THRESHOLD = Decimal("500.00")
    earn(provider, "1000.00")
    payout = payout_request(provider=provider, amount=Decimal("500.00"), requested_by=provider_owner)
    payout_settle_task.apply(args=[payout.pk])
    first, second = UserFactory(is_staff=True), UserFactory(is_staff=True)
    # when / then
    assert payout_approve(payout_id=payout.pk, staff=first).status == Payout.Status.AWAITING_APPROVAL
    with pytest.raises(PermissionDenied) as refused:
        payout_approve(payout_id=payout.pk, staff=first)
    assert refused.value.code == "second_approver_required"
    paid = payout_approve(payout_id=payout.pk, staff=second)
    assert (paid.status, paid.first_approved_by, paid.second_approved_by) == (Payout.Status.PAID, first, second)


def test_connect_payout_retried_after_a_dropped_response_transfers_once(provider, provider_owner, fake_stripe):
    # given
    ProviderBilling.objects.create(organization=provider, stripe_connect_account_id="acct_provider")
    earn(provider, "1000.00")
    payout = payout_request(provider=provider, amount=Decimal("300.00"), requested_by=provider_owner)
    fake_stripe.fail_next("drop")
    # when
    payout_settle_task.apply(args=[payout.pk])
    # then
    calls = fake_stripe.posts("/v1/transfers")
    assert [(c["idempotency_key"], c["params"]["amount"], c["params"]["destination"]) for c in calls] == [
        (f"payout:{payout.pk}", "30000", "acct_provider")
    ] * 2
    assert len(fake_stripe.transfers) == 1
    payout.refresh_from_db()
    assert (payout.status, payout.method) == (Payout.Status.PAID, Payout.Method.STRIPE_CONNECT)


def test_connect_payout_refused_returns_the_amount_to_earnings(provider, provider_owner, fake_stripe):
    ProviderBilling.objects.create(organization=provider, stripe_connect_account_id="acct_provider")
    earn(provider, "1000.00")
    payout = payout_request(provider=provider, amount=Decimal("300.00"), requested_by=provider_owner)
    fake_stripe.fail_next("invalid400")
    payout_settle_task.apply(args=[payout.pk])
    payout.refresh_from_db()
    assert payout.status == Payout.Status.FAILED
    assert wallet_get(organization=provider).earnings == Decimal("900.00")


def test_refunded_charge_reverses_the_providers_earnings_and_the_fee(provider):
    # given
    capture = earn(provider, "200.00")
    buyer = capture.organization
    # when
    charge_refund(capture_transaction_id=capture.pk, amount=Decimal("50.00"), idempotency_key="cr:1", reason="dispute")
    charge_refund(capture_transaction_id=capture.pk, amount=Decimal("50.00"), idempotency_key="cr:1", reason="dispute")
    # then
    assert wallet_get(organization=buyer).available == Decimal("50.00")
    assert wallet_get(organization=provider).earnings == Decimal("135.00")
    assert platform_account(kind=AccountKind.PLATFORM_REVENUE).balance == Decimal("15.00")
    with pytest.raises(Conflict) as refused:
        charge_refund(capture_transaction_id=capture.pk, amount=Decimal("150.01"), idempotency_key="cr:2", reason="x")
    assert refused.value.extra["refundable"] == "150.00000000"


def test_earnings_page_and_api_show_balance_chart_and_payouts(provider, provider_owner, client, api_client_for):
    # given
    earn(provider, "1000.00")
    payout_request(provider=provider, amount=Decimal("200.00"), requested_by=provider_owner)
    client.force_login(provider_owner)
    # when
    page = client.get("/billing/earnings/").content.decode()
    body = api_client_for(provider, user=provider_owner).get("/api/v1/provider/earnings/").json()
    payouts = api_client_for(provider, user=provider_owner).get("/api/v1/provider/payouts/").json()
    # then
    assert 'data-testid="earnings-balance">700.00<' in page
    assert (body["balance"], body["platform_fee_percent"], body["by_day"][-1]["earned"]) == (
        "700.00000000", "10.00", "900.00000000",
    )  # fmt: skip
    assert [(p["amount"], p["status"]) for p in payouts["results"]] == [("200.00000000", "requested")]


def test_payout_api_create_and_refusals(provider, provider_owner, api_client_for):
    earn(provider, "1000.00")
    client = api_client_for(provider, user=provider_owner)
    assert client.post("/api/v1/provider/payouts/", {"amount": "150.00"}, format="json").status_code == 201
    too_much = client.post("/api/v1/provider/payouts/", {"amount": "800.00"}, format="json")
    assert (too_much.status_code, too_much.json()["error"]["code"]) == (402, "insufficient_funds")
    buyer_key = api_client_for(OrganizationFactory()).get("/api/v1/provider/earnings/")
    assert (buyer_key.status_code, buyer_key.json()["error"]["code"]) == (403, "provider_required")
