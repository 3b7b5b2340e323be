from decimal import Decimal

import pytest

from billing.models import AccountKind, LedgerAccount, Refund
from billing.selectors import wallet_get
from tests.factories.accounts import UserFactory
from tests.factories.billing import fund


@pytest.fixture
def staff_client(client, db):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_staff_refund_part_of_a_top_up_in_the_admin(staff_client, organization):
    # given
    top_up = fund(organization, "100.00")
    # when
    response = staff_client.post(f"/admin/billing/topup/{top_up.pk}/refund/", {"amount": "30.00", "reason": "unused"})
    # then
    assert response.status_code == 302
    assert list(Refund.objects.values_list("amount", "status")) == [(Decimal("30.00"), "succeeded")]
    assert wallet_get(organization=organization).available == Decimal("70.00")


def test_admin_refund_refusal_is_shown_on_the_form(staff_client, organization):
    top_up = fund(organization, "100.00")
    response = staff_client.post(
        f"/admin/billing/topup/{top_up.pk}/refund/", {"amount": "100.01", "reason": "x"}, HTTP_ACCEPT_LANGUAGE="en"
    )
    assert response.status_code == 200
    assert "At most 100.00" in response.content.decode()
    assert not Refund.objects.exists()


def test_staff_set_a_credit_line_in_the_admin(staff_client, organization):
    fund(organization, "1.00")
    account = LedgerAccount.objects.get(organization=organization, kind=AccountKind.AVAILABLE)
    response = staff_client.post(f"/admin/billing/ledgeraccount/{account.pk}/credit-line/", {"limit": "500"})
    assert response.status_code == 302
    assert wallet_get(organization=organization).credit_limit == Decimal("500")


def test_ledger_rows_cannot_be_edited_in_the_admin(staff_client, organization):
    fund(organization, "1.00")
    account = LedgerAccount.objects.get(organization=organization, kind=AccountKind.AVAILABLE)
    response = staff_client.post(f"/admin/billing/ledgeraccount/{account.pk}/change/", {"balance": "999"})
    assert response.status_code == 403
    assert wallet_get(organization=organization).available == Decimal("1.00")
