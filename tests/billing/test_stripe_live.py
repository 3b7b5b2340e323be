"""Opt-in: the Stripe seam against Stripe's real test mode. Runs only with STRIPE_LIVE_TEST_KEY=sk_test_… set
(and a network that reaches Stripe); CI has neither, so it skips there."""

import os

import pytest

from billing import stripe_client
from billing.money import to_minor_units

LIVE_KEY = os.environ.get("STRIPE_LIVE_TEST_KEY", "")

pytestmark = pytest.mark.skipif(not LIVE_KEY.startswith("sk_test_"), reason="set STRIPE_LIVE_TEST_KEY=sk_test_…")


def test_checkout_session_is_created_once_per_top_up_in_stripe_test_mode(settings):
    # given
    from decimal import Decimal

    settings.STRIPE_SECRET_KEY = LIVE_KEY
    top_up_id = int.from_bytes(os.urandom(4), "big")  # a fresh idempotency key per run
    request = {
        "top_up_id": top_up_id, "amount_minor": to_minor_units(Decimal("12.34")), "product_name": "live test",
        "success_url": "https://example.com/ok", "cancel_url": "https://example.com/cancel",
        "customer_email": "live-test@example.com",
    }  # fmt: skip
    # when
    first = stripe_client.checkout_session_create(**request)
    again = stripe_client.checkout_session_create(**request)
    # then: the same idempotency key returns the same session
    assert first["id"] == again["id"]
    assert (first["amount_total"], first["currency"]) == (1234, "cny")
    assert stripe_client.checkout_session_retrieve(session_id=first["id"])["payment_status"] == "unpaid"
