from decimal import Decimal

import pytest

from billing.models import AccountKind, LedgerAccount, LedgerTransaction, Refund, UsageCharge
from billing.selectors import wallet_get
from billing.services.rating import usage_rate_pending
from tests.factories.accounts import OrganizationFactory, UserFactory, staff_login
from tests.factories.billing import earn, fund
from tests.factories.rentals import report, reported_rental


@pytest.fixture
def staff_client(client, db):
    staff_login(client, UserFactory(is_staff=True, is_superuser=True))
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


def test_staff_refund_part_of_a_usage_charge_in_the_admin_where_its_capture_took_a_whole_run(
    staff_client, require_postgres
):
    # given: a charge captured by a rating run's transaction
    rental = reported_rental()
    report(rental, "1000")
    usage_rate_pending()
    charge = UsageCharge.objects.get(rental=rental)
    available = wallet_get(organization=rental.organization).available
    # then: the run's capture offers no refund of its own and refuses one with a clear message
    capture_page = staff_client.get(f"/admin/billing/ledgertransaction/{charge.ledger_transaction_id}/change/")
    assert "refund-charge" not in capture_page.content.decode()
    refused = staff_client.post(
        f"/admin/billing/ledgertransaction/{charge.ledger_transaction_id}/refund-charge/",
        {"amount": "1.00", "reason": "x"},
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert "refund its usage charges one by one" in refused.content.decode()
    # when: refunded from the charge's own page, twice
    assert (
        f"/admin/billing/usagecharge/{charge.pk}/refund/"
        in staff_client.get(f"/admin/billing/usagecharge/{charge.pk}/change/").content.decode()
    )
    for amount in ["3.00", "2.50"]:
        response = staff_client.post(
            f"/admin/billing/usagecharge/{charge.pk}/refund/", {"amount": amount, "reason": "dispute"}
        )
        assert response.status_code == 302
    # then
    assert wallet_get(organization=rental.organization).available - available == Decimal("5.50")
    assert LedgerTransaction.objects.filter(reference=f"usage-charge:{charge.pk}").count() == 2


def test_staff_refund_part_of_a_buyers_own_capture_in_the_admin(staff_client):
    # given: a capture of one buyer's hold
    capture = earn(OrganizationFactory(), "200.00")
    page = staff_client.get(f"/admin/billing/ledgertransaction/{capture.pk}/change/").content.decode()
    assert f"/admin/billing/ledgertransaction/{capture.pk}/refund-charge/" in page
    # when: two refunds from its page
    for amount in ["20.00", "30.00"]:
        response = staff_client.post(
            f"/admin/billing/ledgertransaction/{capture.pk}/refund-charge/", {"amount": amount, "reason": "dispute"}
        )
        assert response.status_code == 302
    # then
    assert wallet_get(organization=capture.organization).available == Decimal("50.00")
    assert LedgerTransaction.objects.filter(reference=f"capture:{capture.pk}").count() == 2
