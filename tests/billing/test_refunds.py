from decimal import Decimal

import pytest

from billing.models import LedgerTransaction, Refund, TopUp
from billing.selectors import wallet_get
from billing.services.holds import hold_place
from billing.services.ledger import InsufficientFunds
from billing.services.refunds import refund_request
from billing.services.topups import topup_apply_checkout_session, topup_start
from billing.stripe_client import PaymentProviderUnavailable
from billing.tasks import refund_submit_task
from marketplace.core.errors import Conflict
from tests.billing.conftest import WEBHOOK_SECRET
from tests.factories.accounts import UserFactory
from tests.factories.billing import fund
from tests.fakes.stripe import signed_event


@pytest.fixture
def staff(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def paid_stripe_top_up(organization, owner, fake_stripe) -> TopUp:
    top_up = topup_start(organization=organization, amount="100.00", created_by=owner)
    return topup_apply_checkout_session(session=fake_stripe.pay(top_up.stripe_checkout_session_id))


def test_test_mode_refund_completes_at_once(organization, staff):
    # given
    top_up = fund(organization, "100.00")
    # when
    refund = refund_request(top_up_id=top_up.pk, amount=Decimal("40.00"), reason="unused", requested_by=staff)
    # then
    assert refund.status == Refund.Status.SUCCEEDED
    top_up.refresh_from_db()
    assert top_up.refunded_amount == Decimal("40.00")
    assert wallet_get(organization=organization).available == Decimal("60.00")


def test_refund_past_the_refundable_amount_is_refused(organization, staff):
    top_up = fund(organization, "100.00")
    refund_request(top_up_id=top_up.pk, amount=Decimal("60.00"), reason="x", requested_by=staff)
    with pytest.raises(Conflict) as refused:
        refund_request(top_up_id=top_up.pk, amount=Decimal("40.01"), reason="x", requested_by=staff)
    assert (refused.value.code, refused.value.extra["refundable"]) == ("refund_exceeds_top_up", "40.00")
    assert Refund.objects.count() == 1


def test_money_already_held_cannot_be_refunded(organization, staff):
    top_up = fund(organization, "100.00")
    hold_place(organization=organization, amount=Decimal("80"), idempotency_key="h", reference="r", description="d")
    with pytest.raises(InsufficientFunds):
        refund_request(top_up_id=top_up.pk, amount=Decimal("30.00"), reason="x", requested_by=staff)
    assert not Refund.objects.exists()
    assert wallet_get(organization=organization).available == Decimal("20.00")


def test_stripe_refund_leaves_the_wallet_at_once_and_is_submitted_after_commit(
    paid_stripe_top_up, staff, fake_stripe, django_capture_on_commit_callbacks
):
    # when
    with django_capture_on_commit_callbacks() as callbacks:
        refund = refund_request(
            top_up_id=paid_stripe_top_up.pk, amount=Decimal("25.00"), reason="x", requested_by=staff
        )
    # then
    assert refund.status == Refund.Status.PENDING
    assert len(callbacks) == 1
    assert wallet_get(organization=paid_stripe_top_up.organization).available == Decimal("75.00")
    assert fake_stripe.posts("/v1/refunds") == []


def test_refund_task_retried_after_a_dropped_response_refunds_once(paid_stripe_top_up, staff, fake_stripe):
    # given
    refund = refund_request(top_up_id=paid_stripe_top_up.pk, amount=Decimal("25.00"), reason="x", requested_by=staff)
    fake_stripe.fail_next("drop")  # Stripe refunds, then the response is lost
    # when: the task retries (eagerly here) with the same idempotency key
    refund_submit_task.apply(args=[refund.pk])
    # then
    calls = fake_stripe.posts("/v1/refunds")
    assert [call["idempotency_key"] for call in calls] == [f"refund:{refund.pk}"] * 2
    assert len(fake_stripe.refunds) == 1
    (stripe_refund,) = fake_stripe.refunds.values()
    assert (stripe_refund["amount"], stripe_refund["payment_intent"]) == (
        2500,
        paid_stripe_top_up.stripe_payment_intent_id,
    )
    refund.refresh_from_db()
    assert (refund.status, refund.stripe_refund_id) == (Refund.Status.SUCCEEDED, stripe_refund["id"])


def test_refund_refused_by_stripe_puts_the_money_back(paid_stripe_top_up, staff, fake_stripe):
    # given
    refund = refund_request(top_up_id=paid_stripe_top_up.pk, amount=Decimal("25.00"), reason="x", requested_by=staff)
    fake_stripe.fail_next("invalid400")
    # when
    refund_submit_task.apply(args=[refund.pk])
    # then
    refund.refresh_from_db()
    assert refund.status == Refund.Status.FAILED
    paid_stripe_top_up.refresh_from_db()
    assert paid_stripe_top_up.refunded_amount == Decimal("0")
    assert wallet_get(organization=paid_stripe_top_up.organization).available == Decimal("100.00")
    assert LedgerTransaction.objects.filter(kind="refund_reversal").count() == 1


def test_charge_refunded_event_for_our_refund_completes_it_without_posting_again(
    paid_stripe_top_up, staff, fake_stripe, client
):
    # given: the task's response was lost and not yet retried; Stripe tells us by webhook
    refund = refund_request(top_up_id=paid_stripe_top_up.pk, amount=Decimal("25.00"), reason="x", requested_by=staff)
    fake_stripe.fail_next("drop")
    with pytest.raises(PaymentProviderUnavailable):
        refund_submit_task.run(refund.pk)
    (stripe_refund,) = fake_stripe.refunds.values()
    charge = {"id": "ch_1", "payment_intent": paid_stripe_top_up.stripe_payment_intent_id,
              "refunds": {"data": [stripe_refund]}}  # fmt: skip
    # when
    payload, signature = signed_event("charge.refunded", charge, secret=WEBHOOK_SECRET)
    client.post(
        "/billing/stripe/webhook/", data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )
    # then
    refund.refresh_from_db()
    assert (refund.status, refund.stripe_refund_id) == (Refund.Status.SUCCEEDED, stripe_refund["id"])
    assert LedgerTransaction.objects.filter(kind="refund").count() == 1
    assert wallet_get(organization=paid_stripe_top_up.organization).available == Decimal("75.00")


def test_refund_made_in_the_stripe_dashboard_is_recorded_even_past_the_balance(paid_stripe_top_up, client):
    # given: the buyer has spent most of the money
    organization = paid_stripe_top_up.organization
    hold_place(organization=organization, amount=Decimal("90"), idempotency_key="h", reference="r", description="d")
    dashboard_refund = {"id": "re_dashboard", "amount": 3000, "status": "succeeded", "metadata": {}}
    charge = {"id": "ch_1", "payment_intent": paid_stripe_top_up.stripe_payment_intent_id,
              "refunds": {"data": [dashboard_refund]}}  # fmt: skip
    # when
    payload, signature = signed_event("charge.refunded", charge, secret=WEBHOOK_SECRET)
    client.post(
        "/billing/stripe/webhook/", data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )
    # then
    refund = Refund.objects.get(stripe_refund_id="re_dashboard")
    assert (refund.amount, refund.status) == (Decimal("30.00"), Refund.Status.SUCCEEDED)
    assert wallet_get(organization=organization).available == Decimal("-20.00")
