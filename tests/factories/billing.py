from decimal import Decimal

from accounts.models import Organization
from billing.models import TopUp
from billing.services.topups import topup_test_credit


def fund(organization: Organization, amount: Decimal | str) -> TopUp:
    """Credit the organization through a real (test-mode) top-up: the ledger path, not a balance write."""
    return topup_test_credit(organization=organization, amount=Decimal(amount))
