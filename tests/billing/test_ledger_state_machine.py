"""Random sequences of money moves (top-up, hold, capture, release, refund, charge refund, payout, credit
line); after every step the ledger's invariants hold, checked in SQL."""

from decimal import Decimal

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, precondition, rule

from billing.models import Hold, LedgerAccount, LedgerTransaction, Payout, Posting
from billing.money import quantize_amount
from billing.services.holds import fee_split, hold_capture, hold_place, hold_release
from billing.services.ledger import InsufficientFunds, credit_line_set
from billing.services.payouts import charge_refund, payout_approve, payout_fail, payout_request, payout_settle
from billing.services.refunds import refund_request
from billing.services.topups import topup_test_credit
from marketplace.core.errors import Conflict, DomainError
from tests.factories.accounts import MembershipFactory, OrganizationFactory, UserFactory
from tests.factories.marketplace import ProviderOrganizationFactory

FEE = Decimal("12.5")
cents = st.integers(min_value=1, max_value=50_000).map(lambda n: Decimal(n) / 100)


def scalar(sql: str) -> object:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


# Exact on PostgreSQL; on SQLite, whose SUM adds floats, anything below half the ledger's 8th place is zero.
HALF_QUANTUM = "0.000000005"


def amount(value: object) -> Decimal:
    """A SUM read by raw SQL at the ledger's scale (SQLite adds decimals as floats)."""
    return quantize_amount(Decimal(str(value)))


class LedgerMachine(RuleBasedStateMachine):
    holds = Bundle("holds")
    top_ups = Bundle("top_ups")
    captures = Bundle("captures")
    payouts = Bundle("payouts")

    def __init__(self) -> None:
        super().__init__()
        # Each run is one savepoint, rolled back at teardown: runs never see each other's rows.
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.expected_earnings = Decimal(0)  # Σ captures × (1 − fee) − charge refunds' share − payouts out
        self.hold_ids: list[int] = []

    @initialize()
    def organizations(self) -> None:
        self.buyers = [OrganizationFactory(), OrganizationFactory()]
        self.provider = ProviderOrganizationFactory()
        self.provider_owner = MembershipFactory(organization=self.provider).user
        self.staff = UserFactory(is_staff=True)

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    @rule(target=top_ups, buyer=st.integers(0, 1), amount=cents)
    def top_up(self, buyer, amount):
        return topup_test_credit(organization=self.buyers[buyer], amount=amount).pk

    @rule(buyer=st.integers(0, 1), limit=st.integers(0, 200).map(Decimal))
    def credit_line(self, buyer, limit):
        try:
            credit_line_set(organization=self.buyers[buyer], limit=limit)
        except DomainError as refused:
            assert refused.code == "credit_line_below_balance"

    @rule(target=holds, buyer=st.integers(0, 1), amount=cents)
    def hold(self, buyer, amount):
        organization = self.buyers[buyer]
        available = LedgerAccount.objects.filter(organization=organization, kind="available").first()
        spendable = available.balance - available.minimum_balance if available else Decimal(0)
        try:
            hold = hold_place(
                organization=organization,
                amount=amount,
                idempotency_key=f"sm-hold:{len(self.hold_ids)}:{organization.pk}",
                reference="rental:x",
                description="state machine",
            )
        except InsufficientFunds:
            assert amount > spendable
            return None
        assert amount <= spendable
        self.hold_ids.append(hold.pk)
        return hold.pk

    @precondition(lambda self: self.hold_ids)
    @rule(target=captures, hold_id=holds, share=st.integers(1, 100))
    def capture(self, hold_id, share):
        if hold_id is None:
            return None
        hold = Hold.objects.get(pk=hold_id)
        amount = (hold.remaining * share / 100).quantize(Decimal("0.00000001"))
        if hold.status != Hold.Status.ACTIVE or amount <= 0:
            return None
        txn = hold_capture(
            hold_id=hold_id,
            amount=amount,
            provider=self.provider,
            idempotency_key=f"sm-use:{hold_id}:{hold.captured_amount}",
            memo="x",
        )
        self.expected_earnings += fee_split(amount=amount, fee_percent=FEE)[0]
        return txn.pk

    @rule(capture_id=captures, share=st.integers(1, 100), key=st.integers(0, 3))
    def refund_charge(self, capture_id, share, key):
        if capture_id is None:
            return
        postings = dict(Posting.objects.filter(transaction_id=capture_id).values_list("account__kind", "amount"))
        charged, fee = -postings["held"], postings.get("platform_revenue", Decimal(0))
        amount = (charged * share / 100).quantize(Decimal("0.01")) or Decimal("0.01")
        idempotency_key = f"sm-charge-refund:{capture_id}:{key}"
        replay = LedgerTransaction.objects.filter(idempotency_key=idempotency_key).exists()
        try:
            charge_refund(capture_transaction_id=capture_id, amount=amount, idempotency_key=idempotency_key, reason="x")
        except Conflict as refused:
            assert refused.code == "refund_exceeds_charge"
            return
        if not replay:
            self.expected_earnings -= amount - (amount * fee / charged).quantize(Decimal("0.00000001"))

    @rule(target=payouts, amount=cents)
    def payout(self, amount):
        earnings = LedgerAccount.objects.filter(organization=self.provider, kind="earnings").first()
        try:
            payout = payout_request(provider=self.provider, amount=amount, requested_by=self.provider_owner)
        except InsufficientFunds:
            assert earnings is None or amount > earnings.balance
            return None
        self.expected_earnings -= amount
        payout_settle(payout_id=payout.pk)  # no Connect account: staff settle it
        return payout.pk

    @rule(payout_id=payouts, sent=st.booleans())
    def settle_payout(self, payout_id, sent):
        if payout_id is None or Payout.objects.get(pk=payout_id).status != Payout.Status.AWAITING_APPROVAL:
            return
        if sent:
            payout_approve(payout_id=payout_id, staff=self.staff)
        else:
            payout_fail(payout_id=payout_id, message="bank details wrong")
            self.expected_earnings += Payout.objects.get(pk=payout_id).amount

    @rule(hold_id=holds)
    def release(self, hold_id):
        if hold_id is not None:
            hold_release(hold_id=hold_id)

    @rule(top_up_id=top_ups, amount=cents)
    def refund(self, top_up_id, amount):
        try:
            refund_request(top_up_id=top_up_id, amount=amount, reason="x", requested_by=self.staff)
        except DomainError as refused:
            assert refused.code in {"refund_exceeds_top_up", "insufficient_funds"}

    @invariant()
    def every_transaction_sums_to_zero(self):
        unbalanced = (
            "SELECT transaction_id FROM billing_posting GROUP BY transaction_id "
            f"HAVING ABS(SUM(amount)) >= {HALF_QUANTUM}"
        )
        assert scalar(f"SELECT COUNT(*) FROM ({unbalanced}) unbalanced") == 0

    @invariant()
    def cached_balances_equal_their_postings(self):
        derived = "SELECT COALESCE(SUM(p.amount), 0) FROM billing_posting p WHERE p.account_id = a.id"
        assert (
            scalar(f"SELECT COUNT(*) FROM billing_ledgeraccount a WHERE ABS(a.balance - ({derived})) >= {HALF_QUANTUM}")
            == 0
        )

    @invariant()
    def funds_never_below_their_floor(self):
        # Available ≥ −credit line and held ≥ 0. Earnings are left out on purpose: a charge refunded after the
        # provider was paid out leaves the provider owing (negative earnings), as Stripe Connect balances do.
        assert scalar("SELECT COUNT(*) FROM billing_ledgeraccount WHERE kind IN ('available', 'held') "
                      f"AND balance < minimum_balance - {HALF_QUANTUM}") == 0  # fmt: skip

    @invariant()
    def provider_earnings_are_captures_less_the_fee_less_reversals_and_payouts(self):
        earned = scalar("SELECT COALESCE(SUM(balance), 0) FROM billing_ledgeraccount WHERE kind = 'earnings'")
        assert amount(earned) == self.expected_earnings

    @invariant()
    def holds_match_held_funds(self):
        held = scalar("SELECT COALESCE(SUM(balance), 0) FROM billing_ledgeraccount WHERE kind = 'held'")
        open_holds = scalar(
            "SELECT COALESCE(SUM(amount - captured_amount), 0) FROM billing_hold WHERE status = 'active'"
        )
        assert amount(held) == amount(open_holds)


@pytest.mark.django_db
def test_ledger_invariants_hold_over_random_money_moves(settings_fee):
    LedgerMachine.TestCase.settings = settings(
        max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    LedgerMachine.TestCase().runTest()


@pytest.fixture
def settings_fee(settings):
    settings.PLATFORM_FEE_PERCENT = FEE
    settings.PAYOUT_MIN_AMOUNT = Decimal("0.01")
    settings.PAYOUT_TWO_PERSON_THRESHOLD = Decimal("1000000")
    settings.PLATFORM_CURRENCY = "CNY"
