"""Real parallel connections on PostgreSQL: the ledger's floor holds when debits race."""

from decimal import Decimal

import pytest

from billing.models import Hold, LedgerAccount, Posting
from billing.selectors import wallet_get
from billing.services.holds import hold_place
from billing.services.ledger import InsufficientFunds, ledger_reconcile
from tests.concurrency import race
from tests.factories.accounts import OrganizationFactory
from tests.factories.billing import fund

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_fifty_concurrent_holds_grant_exactly_what_the_balance_covers(require_postgres):
    # given: B = 1,000.00 and a = 70.00, so ⌊B/a⌋ = 14
    organization = OrganizationFactory()
    fund(organization, "1000.00")

    def place(index: int) -> str:
        try:
            hold_place(
                organization=organization,
                amount=Decimal("70.00"),
                idempotency_key=f"race:{index}",
                reference=f"rental:{index}",
                description="race",
            )
        except InsufficientFunds:
            return "refused"
        return "held"

    # when
    outcomes = race(50, place)
    # then
    assert outcomes.count("held") == 14
    assert outcomes.count("refused") == 36
    assert Hold.objects.count() == 14
    wallet = wallet_get(organization=organization)
    assert (wallet.available, wallet.held) == (Decimal("20.00"), Decimal("980.00"))
    assert ledger_reconcile() == []
    assert sum(Posting.objects.values_list("amount", flat=True)) == 0
    assert LedgerAccount.objects.filter(balance__lt=0, organization__isnull=False).count() == 0
