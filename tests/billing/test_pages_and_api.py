"""Wallet pages and endpoints through Django's test client (the browser flow lives in tests/browser/)."""

import csv
import io
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import TopUp
from billing.services.holds import hold_capture, hold_place
from tests.factories.accounts import MembershipFactory, OrganizationFactory
from tests.factories.billing import fund


def _spend(organization, provider, amount: str, key: str) -> None:
    hold = hold_place(
        organization=organization, amount=Decimal(amount), idempotency_key=key, reference="r", description="d"
    )
    hold_capture(
        hold_id=hold.pk, amount=Decimal(amount), provider=provider, idempotency_key=f"{key}:use", memo="GPU time"
    )


@pytest.fixture
def signed_in(client, organization, owner):
    client.force_login(owner)
    return client


def test_wallet_page_shows_balances_transactions_and_the_test_mode_banner(signed_in, organization, test_mode_top_ups):
    # given
    fund(organization, "300.00")
    _spend(organization, OrganizationFactory(), "40.00", "h1")
    # when
    page = signed_in.get("/billing/wallet/").content.decode()
    # then
    assert 'data-testid="balance-available">260.00<' in page
    assert 'data-testid="test-mode"' in page
    assert "GPU time" in page
    assert '"values": [' in page and '"40.00000000"' in page


def test_wallet_top_up_form_in_test_mode_credits_and_says_so(signed_in, organization, test_mode_top_ups):
    response = signed_in.post("/billing/wallet/top-up/", {"amount": "88.80"}, follow=True)
    assert "88.80" in response.content.decode()
    assert list(TopUp.objects.values_list("amount", "mode", "status")) == [(Decimal("88.80"), "test", "succeeded")]


def test_wallet_top_up_with_stripe_redirects_to_checkout(signed_in, organization, fake_stripe):
    response = signed_in.post("/billing/wallet/top-up/", {"amount": "100"})
    assert response.status_code == 302
    assert response["Location"].startswith("https://checkout.stripe.test/pay/cs_test_")


def test_wallet_top_up_error_is_shown_and_nothing_written(signed_in, test_mode_top_ups):
    response = signed_in.post("/billing/wallet/top-up/", {"amount": "1"}, follow=True, HTTP_ACCEPT_LANGUAGE="en")
    assert "A top-up must be between 10.00 and 50000.00 CNY." in response.content.decode()
    assert not TopUp.objects.exists()


def test_member_sees_the_wallet_but_cannot_top_up(client, organization, test_mode_top_ups):
    member = MembershipFactory(organization=organization, role="member").user
    client.force_login(member)
    assert "wallet-top-up" not in client.get("/billing/wallet/").content.decode()
    client.post("/billing/wallet/top-up/", {"amount": "100"})
    assert not TopUp.objects.exists()


def test_transaction_filters_narrow_the_page_and_the_csv(signed_in, organization):
    # given
    fund(organization, "300.00")
    _spend(organization, OrganizationFactory(), "40.00", "h1")
    # when
    page = signed_in.get("/billing/wallet/?kind=top_up").content.decode()
    export = signed_in.get("/billing/wallet/transactions.csv?kind=capture")
    # then
    assert "GPU time" not in page
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert export["Content-Type"] == "text/csv; charset=utf-8"
    assert [(r["kind"], r["memo"], r["held_change"], r["available_change"]) for r in rows] == [
        ("capture", "GPU time", "-40.00000000", "0.00000000")
    ]


def test_wallet_page_query_count_does_not_grow_with_transactions(signed_in, organization):
    # given
    fund(organization, "1000.00")
    signed_in.get("/billing/wallet/")
    with CaptureQueriesContext(connection) as few:
        signed_in.get("/billing/wallet/")
    # when
    provider = OrganizationFactory()
    for n in range(25):
        _spend(organization, provider, "1.00", f"h{n}")
    # then
    with CaptureQueriesContext(connection) as many:
        assert signed_in.get("/billing/wallet/").status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)


@pytest.mark.parametrize("path", ["/api/v1/transactions/", "/api/v1/top-ups/"])
def test_billing_lists_query_count_does_not_grow_with_rows(organization, owner, api_client_for, path):
    client = api_client_for(organization, user=owner)
    fund(organization, "10.00")
    client.get(path)
    with CaptureQueriesContext(connection) as few:
        client.get(path)
    for n in range(15):
        fund(organization, "10.00")
        _spend(organization, OrganizationFactory(), "1.00", f"h{n}")
    with CaptureQueriesContext(connection) as many:
        assert client.get(path).status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)


def test_transactions_api_shows_each_move_from_the_organizations_side(organization, api_client_for):
    # given
    fund(organization, "100.00")
    _spend(organization, OrganizationFactory(), "40.00", "h1")
    # when
    body = api_client_for(organization).get("/api/v1/transactions/").json()
    # then
    moves = [(r["kind"], r["available_change"], r["held_change"]) for r in body["results"]]
    assert moves == [
        ("capture", "0.00000000", "-40.00000000"),
        ("hold", "-40.00000000", "40.00000000"),
        ("top_up", "100.00000000", "0.00000000"),
    ]


def test_wallet_api_reports_balances_and_credit(organization, api_client_for):
    fund(organization, "100.00")
    hold_place(organization=organization, amount=Decimal("30"), idempotency_key="h", reference="r", description="d")
    body = api_client_for(organization).get("/api/v1/wallet/").json()
    assert {k: body[k] for k in ("currency", "available", "held", "credit_limit", "spendable")} == {
        "currency": "CNY",
        "available": "70.00000000",
        "held": "30.00000000",
        "credit_limit": "0.00000000",
        "spendable": "70.00000000",
    }
