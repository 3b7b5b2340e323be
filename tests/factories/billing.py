from decimal import Decimal

from accounts.models import Organization
from billing.models import LedgerTransaction, TopUp
from billing.services.holds import hold_capture, hold_place
from billing.services.topups import topup_test_credit
from tests.factories.accounts import OrganizationFactory


def fund(organization: Organization, amount: Decimal | str) -> TopUp:
    """Credit the organization through a real (test-mode) top-up: the ledger path, not a balance write."""
    return topup_test_credit(organization=organization, amount=Decimal(amount))


def earn(provider: Organization, amount: str, key: str = "1") -> LedgerTransaction:
    """A new buyer's charge of `amount`, captured from its hold: the provider earns it less the platform fee."""
    buyer = OrganizationFactory()
    fund(buyer, amount)
    hold = hold_place(organization=buyer, amount=Decimal(amount), idempotency_key=f"h{key}", reference=f"rental:{key}",
                      description="GPU time")  # fmt: skip
    return hold_capture(hold_id=hold.pk, amount=Decimal(amount), provider=provider, idempotency_key=f"u{key}", memo="x")
