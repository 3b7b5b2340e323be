"""Capturing model calls: one organization's failing calls never hold back another's."""

from decimal import Decimal

import pytest

from billing.services.gateway import gateway_funds_grow
from marketplace.models import ModelCall
from marketplace.services.model_calls import model_calls_capture
from tests.factories.accounts import OrganizationFactory
from tests.factories.billing import fund
from tests.factories.marketplace import ModelCallFactory, ModelServiceFactory


def buyer_with_funds(amount: str):
    buyer = OrganizationFactory()
    fund(buyer, amount)
    gateway_funds_grow(organization_id=buyer.pk, needed=Decimal("1"), count_available_here=True)
    return buyer


@pytest.mark.django_db(transaction=True)
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
