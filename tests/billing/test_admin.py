from decimal import Decimal

import pytest

from billing.models import AccountKind, LedgerAccount, LedgerTransaction, Refund, StaffMoneyAction, UsageCharge
from billing.selectors import wallet_get
from billing.services.payouts import payout_request
from billing.services.rating import usage_rate_pending
from billing.services.staff import staff_credit_line_set, staff_top_up_refund
from billing.tasks import payout_settle_task
from marketplace.core.errors import DomainError, PermissionDenied
from tests.factories.accounts import MembershipFactory, OrganizationFactory, UserFactory, staff_login
from tests.factories.billing import earn, fund
from tests.factories.marketplace import ProviderOrganizationFactory
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


# --- Money actions need their own permission and leave an audit row ---


def staff_with(client, *permissions: str):
    """A staff member (not superuser) holding exactly `permissions` ("billing.<codename>"), signed in."""
    from django.contrib.auth.models import Permission

    user = UserFactory(is_staff=True)
    codenames = [permission.split(".", 1)[1] for permission in permissions]
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="billing", codename__in=codenames))
    staff_login(client, user)
    return user


def payout_awaiting(amount: str):
    """A provider's payout request waiting for staff to confirm the bank transfer (no Stripe Connect)."""
    provider = ProviderOrganizationFactory()
    earn(provider, "1000.00")
    payout = payout_request(
        provider=provider, amount=Decimal(amount), requested_by=MembershipFactory(organization=provider).user
    )
    payout_settle_task.apply(args=[payout.pk])
    payout.refresh_from_db()
    assert payout.status == "awaiting_approval"
    return payout


@pytest.mark.parametrize("limit", ["-1000000", "1000000"])
def test_staff_without_the_permission_cannot_set_a_credit_line(db, client, organization, limit):
    # given
    staff_with(client)
    fund(organization, "1.00")
    account = LedgerAccount.objects.get(organization=organization, kind=AccountKind.AVAILABLE)
    # when
    response = client.post(f"/admin/billing/ledgeraccount/{account.pk}/credit-line/", {"limit": limit})
    # then
    assert response.status_code == 403
    assert wallet_get(organization=organization).credit_limit == Decimal("0")
    assert not StaffMoneyAction.objects.exists()


def test_a_negative_credit_line_is_refused_even_with_the_permission(db, client, organization):
    # given
    staff_with(client, "billing.set_credit_line")
    fund(organization, "1.00")
    account = LedgerAccount.objects.get(organization=organization, kind=AccountKind.AVAILABLE)
    # when
    response = client.post(f"/admin/billing/ledgeraccount/{account.pk}/credit-line/", {"limit": "-1000000"})
    # then
    assert response.status_code == 200
    account.refresh_from_db()
    assert account.minimum_balance == Decimal("0")
    assert not StaffMoneyAction.objects.exists()


def test_a_negative_credit_line_is_refused_by_the_service(organization):
    staff = UserFactory(is_staff=True, is_superuser=True)
    with pytest.raises(DomainError) as refused:
        staff_credit_line_set(actor=staff, organization=organization, limit=Decimal("-1000000"))
    assert refused.value.code == "invalid"
    assert wallet_get(organization=organization).credit_limit == Decimal("0")
    assert not StaffMoneyAction.objects.exists()


def test_a_credit_line_set_with_the_permission_is_recorded_with_who_when_and_what(db, client, organization):
    # given
    staff = staff_with(client, "billing.set_credit_line")
    fund(organization, "1.00")
    account = LedgerAccount.objects.get(organization=organization, kind=AccountKind.AVAILABLE)
    client.post(f"/admin/billing/ledgeraccount/{account.pk}/credit-line/", {"limit": "200"})
    # when
    response = client.post(f"/admin/billing/ledgeraccount/{account.pk}/credit-line/", {"limit": "500.50"})
    # then
    assert response.status_code == 302
    assert wallet_get(organization=organization).credit_limit == Decimal("500.50")
    rows = list(
        StaffMoneyAction.objects.order_by("pk").values_list(
            "actor", "action", "organization", "reference", "amount", "previous_amount"
        )
    )
    assert rows == [
        (staff.pk, "credit_line_set", organization.pk, f"ledger-account:{account.pk}", Decimal("200"), Decimal("0")),
        (
            staff.pk,
            "credit_line_set",
            organization.pk,
            f"ledger-account:{account.pk}",
            Decimal("500.50"),
            Decimal("200"),
        ),
    ]
    assert StaffMoneyAction.objects.filter(created_at__isnull=False).count() == 2


def test_staff_without_the_permission_cannot_refund_a_top_up(db, client, organization):
    # given
    staff_with(client, "billing.set_credit_line")
    top_up = fund(organization, "100.00")
    # when
    response = client.post(f"/admin/billing/topup/{top_up.pk}/refund/", {"amount": "30.00", "reason": "x"})
    # then
    assert response.status_code == 403
    assert not Refund.objects.exists()
    assert wallet_get(organization=organization).available == Decimal("100.00")


def test_a_top_up_refund_with_the_permission_is_recorded(db, client, organization):
    # given
    staff = staff_with(client, "billing.issue_refund")
    top_up = fund(organization, "100.00")
    # when
    response = client.post(f"/admin/billing/topup/{top_up.pk}/refund/", {"amount": "30.00", "reason": "unused"})
    # then
    assert response.status_code == 302
    action = StaffMoneyAction.objects.get()
    assert (action.actor, action.action, action.organization, action.reference, action.amount, action.reason) == (
        staff,
        "top_up_refund",
        organization,
        f"top-up:{top_up.pk}",
        Decimal("30.00"),
        "unused",
    )
    assert action.ledger_transaction == LedgerTransaction.objects.get(
        idempotency_key=f"refund:{Refund.objects.get().pk}"
    )


def test_staff_without_the_permission_cannot_refund_a_charge(db, client):
    # given
    staff_with(client, "billing.set_credit_line", "billing.approve_payout")
    capture = earn(OrganizationFactory(), "200.00")
    # when
    response = client.post(
        f"/admin/billing/ledgertransaction/{capture.pk}/refund-charge/", {"amount": "20.00", "reason": "dispute"}
    )
    # then
    assert response.status_code == 403
    assert not LedgerTransaction.objects.filter(reference=f"capture:{capture.pk}").exists()


def test_a_charge_refund_with_the_permission_is_recorded(db, client):
    # given
    staff = staff_with(client, "billing.issue_refund")
    capture = earn(OrganizationFactory(), "200.00")
    # when
    client.post(f"/admin/billing/ledgertransaction/{capture.pk}/refund-charge/", {"amount": "20.00", "reason": "x"})
    # then
    refund = LedgerTransaction.objects.get(reference=f"capture:{capture.pk}")
    assert list(
        StaffMoneyAction.objects.values_list("actor", "action", "reference", "amount", "ledger_transaction")
    ) == [(staff.pk, "charge_refund", f"capture:{capture.pk}", Decimal("20.00"), refund.pk)]


def test_staff_without_the_permission_cannot_approve_a_payout(db, client):
    # given
    staff_with(client, "billing.issue_refund")
    payout = payout_awaiting("150.00")
    # when
    client.post("/admin/billing/payout/", {"action": "approve", "_selected_action": [payout.pk]})
    # then
    payout.refresh_from_db()
    assert payout.status == "awaiting_approval"
    assert payout.first_approved_by is None
    assert not StaffMoneyAction.objects.exists()


def test_a_payout_approval_with_the_permission_is_recorded(db, client):
    # given
    staff = staff_with(client, "billing.approve_payout")
    payout = payout_awaiting("150.00")
    # when
    client.post("/admin/billing/payout/", {"action": "approve", "_selected_action": [payout.pk]})
    # then
    payout.refresh_from_db()
    assert payout.status == "paid"
    assert list(
        StaffMoneyAction.objects.values_list("actor", "action", "organization", "reference", "amount", "result")
    ) == [(staff.pk, "payout_approve", payout.organization_id, f"payout:{payout.pk}", Decimal("150.00"), "paid")]


def test_staff_money_actions_are_shown_read_only_in_the_admin(db, client, organization):
    # given
    staff_with(client, "billing.set_credit_line", "billing.view_staffmoneyaction")
    staff_credit_line_set(
        actor=UserFactory(is_staff=True, is_superuser=True), organization=organization, limit=Decimal("7")
    )
    action = StaffMoneyAction.objects.get()
    # when
    listed = client.get("/admin/billing/staffmoneyaction/")
    changed = client.post(f"/admin/billing/staffmoneyaction/{action.pk}/change/", {"amount": "999"})
    # then
    assert listed.status_code == 200
    assert "ledger-account:" in listed.content.decode()
    assert changed.status_code == 403
    action.refresh_from_db()
    assert action.amount == Decimal("7")


def test_the_services_refuse_staff_without_the_permission_whatever_calls_them(organization):
    # given: staff holding every permission but the one each action needs
    from django.contrib.auth.models import Permission

    staff = UserFactory(is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__in=["issue_refund", "approve_payout"]))
    top_up = fund(organization, "100.00")
    # when / then
    with pytest.raises(PermissionDenied) as refused:
        staff_credit_line_set(actor=staff, organization=organization, limit=Decimal("1000000"))
    assert refused.value.code == "staff_permission_required"
    assert wallet_get(organization=organization).credit_limit == Decimal("0")
    assert staff_top_up_refund(actor=staff, top_up_id=top_up.pk, amount=Decimal("1.00"), reason="x").amount == Decimal(
        "1.00"
    )


def test_a_payout_rejection_returns_the_amount_and_is_recorded(db, client):
    # given
    staff = staff_with(client, "billing.approve_payout")
    payout = payout_awaiting("150.00")
    # when
    client.post("/admin/billing/payout/", {"action": "reject", "_selected_action": [payout.pk]})
    # then
    payout.refresh_from_db()
    assert payout.status == "failed"
    assert wallet_get(organization=payout.organization).earnings == Decimal("900.00")
    assert list(StaffMoneyAction.objects.values_list("actor", "action", "reference", "amount", "result")) == [
        (staff.pk, "payout_reject", f"payout:{payout.pk}", Decimal("150.00"), "failed")
    ]
