from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils.timezone import now

from billing.models import AccountKind, Hold, LedgerTransaction, ProviderBilling, TransactionKind
from billing.selectors import wallet_get
from billing.services.holds import (
    CaptureExceedsHold,
    HoldResolved,
    fee_split,
    hold_capture,
    hold_increase,
    hold_place,
    hold_release,
)
from billing.services.ledger import InsufficientFunds, organization_account, platform_account
from billing.tasks import hold_expire_due_task, hold_expire_task
from tests.factories.accounts import OrganizationFactory
from tests.factories.billing import fund


@pytest.fixture
def provider(db):
    return OrganizationFactory(name="Provider")


def _place(organization, amount: str, key: str = "rental-hold:1", **kwargs) -> Hold:
    return hold_place(
        organization=organization,
        amount=Decimal(amount),
        idempotency_key=key,
        reference="rental:1",
        description="Rental #1",
        **kwargs,
    )


def test_hold_moves_funds_from_available_to_held(organization):
    # given
    fund(organization, "100.00")
    # when
    hold = _place(organization, "40.00")
    # then
    wallet = wallet_get(organization=organization)
    assert (wallet.available, wallet.held) == (Decimal("60.00"), Decimal("40.00"))
    assert hold.remaining == Decimal("40.00")


def test_hold_replayed_key_returns_the_same_hold_and_holds_once(organization):
    fund(organization, "100.00")
    first = _place(organization, "40.00")
    again = _place(organization, "40.00")
    assert again.pk == first.pk
    assert wallet_get(organization=organization).held == Decimal("40.00")


def test_hold_beyond_funds_is_refused_and_writes_nothing(organization):
    fund(organization, "10.00")
    with pytest.raises(InsufficientFunds) as refused:
        _place(organization, "10.01")
    assert refused.value.extra["missing"] == "0.01000000"
    assert not Hold.objects.exists()
    assert wallet_get(organization=organization).available == Decimal("10.00")


def test_capture_pays_the_provider_less_the_platform_fee(organization, provider, settings):
    # given
    settings.PLATFORM_FEE_PERCENT = Decimal("10")
    fund(organization, "100.00")
    hold = _place(organization, "50.00")
    # when
    hold_capture(hold_id=hold.pk, amount=Decimal("12.34"), provider=provider, idempotency_key="usage:1", memo="1 h")
    # then
    hold.refresh_from_db()
    assert hold.captured_amount == Decimal("12.34")
    assert wallet_get(organization=organization).held == Decimal("37.66")
    assert wallet_get(organization=provider).earnings == Decimal("11.106")
    assert platform_account(kind=AccountKind.PLATFORM_REVENUE).balance == Decimal("1.234")


def test_provider_fee_override_applies_to_its_captures(organization, provider):
    ProviderBilling.objects.create(organization=provider, platform_fee_percent=Decimal("2.5"))
    fund(organization, "100.00")
    hold = _place(organization, "40.00")
    hold_capture(hold_id=hold.pk, amount=Decimal("40.00"), provider=provider, idempotency_key="usage:1", memo="x")
    assert wallet_get(organization=provider).earnings == Decimal("39.00")


@pytest.mark.parametrize(
    ("amount", "percent", "earnings", "fee"),
    [
        (Decimal("0.00000003"), Decimal("10"), Decimal("0.00000003"), Decimal("0")),  # fee rounds to nothing
        (Decimal("0.00000005"), Decimal("10"), Decimal("0.00000004"), Decimal("0.00000001")),  # 0.5e-8 rounds up
        (Decimal("1"), Decimal("33.33"), Decimal("0.6667"), Decimal("0.3333")),
    ],
)
def test_fee_split_adds_up_to_the_charge(amount, percent, earnings, fee):
    assert fee_split(amount=amount, fee_percent=percent) == (earnings, fee)


def test_capture_replayed_key_charges_once(organization, provider):
    fund(organization, "100.00")
    hold = _place(organization, "50.00")
    first = hold_capture(hold_id=hold.pk, amount=Decimal("5"), provider=provider, idempotency_key="usage:7", memo="x")
    again = hold_capture(hold_id=hold.pk, amount=Decimal("5"), provider=provider, idempotency_key="usage:7", memo="x")
    assert again.pk == first.pk
    hold.refresh_from_db()
    assert hold.captured_amount == Decimal("5")


def test_capture_never_exceeds_what_is_held(organization, provider):
    fund(organization, "100.00")
    hold = _place(organization, "10.00")
    hold_capture(hold_id=hold.pk, amount=Decimal("6"), provider=provider, idempotency_key="usage:1", memo="x")
    with pytest.raises(CaptureExceedsHold) as refused:
        hold_capture(hold_id=hold.pk, amount=Decimal("4.01"), provider=provider, idempotency_key="usage:2", memo="x")
    assert refused.value.extra["held"] == "4.00000000"
    assert not LedgerTransaction.objects.filter(idempotency_key="usage:2").exists()


def test_release_returns_the_remainder_once(organization, provider):
    # given
    fund(organization, "100.00")
    hold = _place(organization, "30.00")
    hold_capture(hold_id=hold.pk, amount=Decimal("10"), provider=provider, idempotency_key="usage:1", memo="x")
    # when
    hold_release(hold_id=hold.pk)
    hold_release(hold_id=hold.pk)
    # then
    wallet = wallet_get(organization=organization)
    assert (wallet.available, wallet.held) == (Decimal("90.00"), Decimal("0"))
    assert LedgerTransaction.objects.filter(kind=TransactionKind.RELEASE).count() == 1
    hold.refresh_from_db()
    assert hold.status == Hold.Status.RELEASED


def test_resolved_hold_takes_no_more_captures_or_increases(organization, provider):
    fund(organization, "100.00")
    hold = _place(organization, "30.00")
    hold_release(hold_id=hold.pk)
    with pytest.raises(HoldResolved):
        hold_capture(hold_id=hold.pk, amount=Decimal("1"), provider=provider, idempotency_key="usage:9", memo="x")
    with pytest.raises(HoldResolved):
        hold_increase(hold_id=hold.pk, amount=Decimal("1"), idempotency_key="rental-hold:1:2")


def test_hold_increase_holds_more_once_per_key(organization):
    fund(organization, "100.00")
    hold = _place(organization, "30.00")
    hold_increase(hold_id=hold.pk, amount=Decimal("20"), idempotency_key="rental-hold:1:runway:2")
    hold = hold_increase(hold_id=hold.pk, amount=Decimal("20"), idempotency_key="rental-hold:1:runway:2")
    assert hold.amount == Decimal("50.00")
    assert wallet_get(organization=organization).held == Decimal("50.00")


def test_expiry_sweep_releases_holds_past_their_expiry(organization, monkeypatch):
    # given
    fund(organization, "100.00")
    due = _place(organization, "30.00", key="h:due", expires_at=now() - timedelta(seconds=1))
    later = _place(organization, "20.00", key="h:later", expires_at=now() + timedelta(hours=1))
    sent = []
    monkeypatch.setattr(hold_expire_task, "delay", sent.append)  # the sweep's fan-out, captured
    # when: the sweep fans out one task per due hold; run them as the worker would
    assert hold_expire_due_task() == 1
    for hold_id in sent:
        hold_expire_task(hold_id)
    # then
    due.refresh_from_db()
    later.refresh_from_db()
    assert (due.status, later.status) == (Hold.Status.EXPIRED, Hold.Status.ACTIVE)
    assert organization_account(organization_id=organization.pk, kind=AccountKind.HELD).balance == Decimal("20.00")
