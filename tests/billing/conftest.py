import pytest

from billing import stripe_client
from tests.fakes.stripe import FakeStripe

WEBHOOK_SECRET = "whsec_test_secret"


@pytest.fixture
def fake_stripe(settings, monkeypatch):
    """Stripe configured, talking to the in-process fake."""
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.BILLING_TEST_TOPUPS = False
    fake = FakeStripe()
    monkeypatch.setattr(stripe_client, "HTTP_CLIENT", fake)
    return fake


@pytest.fixture
def test_mode_top_ups(settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.BILLING_TEST_TOPUPS = True
