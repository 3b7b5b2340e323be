"""Capturing model calls (one organization's failing calls never hold back another's), and the gateway funds
counter reconciled daily."""

import os
from decimal import Decimal

import pytest

from billing.models import GatewayFunds
from billing.services.gateway import gateway_funds_grow
from billing.tasks import ledger_reconcile_task
from marketplace.gateway.directory import UNITS
from marketplace.models import ModelCall
from marketplace.services.model_calls import model_calls_capture
from tests.conftest import skip_or_fail
from tests.factories.accounts import OrganizationFactory
from tests.factories.billing import fund
from tests.factories.marketplace import ModelCallFactory, ModelServiceFactory

TEST_REDIS_URL = os.environ.get("TEST_GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/13")


def buyer_with_funds(amount: str):
    buyer = OrganizationFactory()
    fund(buyer, amount)
    gateway_funds_grow(organization_id=buyer.pk, needed=Decimal("1"), count_available_here=True)
    return buyer


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_call_that_cannot_be_captured_does_not_stop_another_organizations_calls():
    # given: one organization's call costs more than it could ever hold (a record from before usage was clamped),
    # another's is ordinary, and the bad one is first in the batch
    service = ModelServiceFactory()
    broke, honest = buyer_with_funds("10.00"), buyer_with_funds("10.00")
    bad = ModelCallFactory(organization=broke, model_service=service, cost=Decimal("400.00"))
    good = ModelCallFactory(organization=honest, model_service=service)
    # when
    captured = model_calls_capture()
    # then: the good call is captured, the bad one waits alone (and is retried by later runs)
    bad.refresh_from_db()
    good.refresh_from_db()
    assert (captured, good.ledger_transaction_id is not None, bad.ledger_transaction_id) == (1, True, None)
    assert ModelCall.objects.filter(ledger_transaction__isnull=True).count() == 1
    # and a later run still captures nothing of it and nothing twice
    assert model_calls_capture() == 0


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_daily_reconcile_sets_a_drifted_gateway_funds_counter_right_on_the_database(settings):
    # given: the embedded default's counter left at −19,900 by a call that cost more than it reserved
    settings.GATEWAY_REDIS_URL = ""
    service = ModelServiceFactory()
    buyer = buyer_with_funds("10.00")
    ModelCallFactory(organization=buyer, model_service=service, cost=Decimal("1.00"))  # written, not captured
    GatewayFunds.objects.filter(pk=buyer.pk).update(available=Decimal("-19900"))
    # when
    mismatches = ledger_reconcile_task()
    # then: what the hold has free beyond the uncaptured call, and reported
    assert mismatches == 1
    assert GatewayFunds.objects.get(pk=buyer.pk).available == Decimal("9.00")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_daily_reconcile_sets_a_drifted_gateway_funds_counter_right_in_redis(settings):
    # given: the Redis counter showing more free than the hold holds
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.flushdb()
    except redis.ConnectionError:
        skip_or_fail("redis", f"needs Redis at {TEST_REDIS_URL}")
    settings.GATEWAY_REDIS_URL = TEST_REDIS_URL
    buyer = buyer_with_funds("10.00")
    client.hset(f"gw:funds:{buyer.pk}", mapping={"available": 500 * UNITS, "epoch": "old"})
    # when
    mismatches = ledger_reconcile_task()
    # then: set to the hold's remainder under a new epoch (calls in flight take only their cost)
    available, epoch = client.hmget(f"gw:funds:{buyer.pk}", "available", "epoch")
    assert (mismatches, int(available), epoch != b"old") == (1, 10 * UNITS, True)
    # and a counter within its hold is left as it is
    assert ledger_reconcile_task() == 0
    client.flushdb()
