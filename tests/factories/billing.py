from decimal import Decimal

from accounts.models import Organization
from billing.models import TopUp
from billing.services.topups import topup_credit


def fund(organization: Organization, amount: Decimal | str) -> TopUp:
    """Credit the organization through a real (test-mode) top-up: the ledger path, not a balance write."""
    top_up = TopUp.objects.create(organization=organization, amount=Decimal(amount), mode=TopUp.Mode.TEST)
    return topup_credit(top_up_id=top_up.pk)
