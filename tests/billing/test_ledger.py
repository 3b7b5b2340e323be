from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction

from billing.models import AccountKind, LedgerAccount, LedgerTransaction, Posting, TransactionKind
from billing.services.ledger import (
    InsufficientFunds,
    UnbalancedTransaction,
    credit_line_set,
    ledger_post,
    ledger_reconcile,
    organization_account,
    platform_account,
)
from marketplace.core.errors import DomainError
from tests.factories.accounts import OrganizationFactory
from tests.factories.billing import fund


def _accounts(organization):
    return (
        organization_account(organization_id=organization.pk, kind=AccountKind.AVAILABLE),
        platform_account(kind=AccountKind.PAYMENT_CLEARING),
    )


def test_ledger_post_moves_balances_and_sums_to_zero(organization):
    # given
    available, clearing = _accounts(organization)
    # when
    txn, posted = ledger_post(
        idempotency_key="test:1",
        kind=TransactionKind.TOP_UP,
        lines=[(clearing, Decimal("-100.00")), (available, Decimal("100.00"))],
        memo="top-up",
        organization=organization,
    )
    # then
    assert posted is True
    assert sorted(txn.postings.values_list("amount", flat=True)) == [Decimal("-100.00"), Decimal("100.00")]
    available.refresh_from_db()
    clearing.refresh_from_db()
    assert (available.balance, clearing.balance) == (Decimal("100.00"), Decimal("-100.00"))


def test_ledger_post_replayed_key_posts_once(organization):
    # given
    available, clearing = _accounts(organization)
    lines = [(clearing, Decimal("-5")), (available, Decimal("5"))]
    first, _posted = ledger_post(idempotency_key="replay:1", kind=TransactionKind.TOP_UP, lines=lines, memo="x")
    # when
    again, posted = ledger_post(idempotency_key="replay:1", kind=TransactionKind.TOP_UP, lines=lines, memo="x")
    # then
    assert (again.pk, posted) == (first.pk, False)
    available.refresh_from_db()
    assert available.balance == Decimal("5")
    assert Posting.objects.filter(transaction=first).count() == 2


def test_ledger_post_refuses_unbalanced_lines(organization):
    available, clearing = _accounts(organization)
    with pytest.raises(UnbalancedTransaction):
        ledger_post(
            idempotency_key="bad:1",
            kind=TransactionKind.ADJUSTMENT,
            lines=[(clearing, Decimal("-1.00")), (available, Decimal("1.01"))],
            memo="x",
        )
    assert not LedgerTransaction.objects.filter(idempotency_key="bad:1").exists()


def test_debit_past_the_floor_is_refused_with_the_missing_amount_and_nothing_written(organization):
    # given
    fund(organization, "30.00")
    available, clearing = _accounts(organization)
    # when
    with pytest.raises(InsufficientFunds) as refused:
        ledger_post(
            idempotency_key="spend:1",
            kind=TransactionKind.ADJUSTMENT,
            lines=[(available, Decimal("-50.00")), (clearing, Decimal("50.00"))],
            memo="x",
        )
    # then
    assert refused.value.status_code == 402
    assert refused.value.extra["missing"] == "20.00000000"
    available.refresh_from_db()
    assert available.balance == Decimal("30.00")
    assert not LedgerTransaction.objects.filter(idempotency_key="spend:1").exists()


def test_credit_line_lets_available_funds_go_negative_down_to_the_limit(organization):
    # given
    credit_line_set(organization=organization, limit=Decimal("100"))
    available, clearing = _accounts(organization)

    def spend(key: str, amount: str):
        lines = [(available, -Decimal(amount)), (clearing, Decimal(amount))]
        return ledger_post(idempotency_key=key, kind=TransactionKind.ADJUSTMENT, lines=lines, memo="x")

    # when
    spend("credit:1", "100")
    # then
    with pytest.raises(InsufficientFunds):
        spend("credit:2", "0.01")
    available.refresh_from_db()
    assert available.balance == Decimal("-100")


def test_credit_line_cannot_be_lowered_below_the_current_debt(organization):
    credit_line_set(organization=organization, limit=Decimal("100"))
    available, clearing = _accounts(organization)
    ledger_post(
        idempotency_key="debt:1",
        kind=TransactionKind.ADJUSTMENT,
        lines=[(available, Decimal("-60")), (clearing, Decimal("60"))],
        memo="x",
    )
    with pytest.raises(DomainError) as refused:
        credit_line_set(organization=organization, limit=Decimal("50"))
    assert refused.value.code == "credit_line_below_balance"
    available.refresh_from_db()
    assert available.credit_limit == Decimal("100")


def test_reconcile_reports_a_cached_balance_that_differs_from_its_postings(organization):
    # given
    fund(organization, "10.00")
    available = organization_account(organization_id=organization.pk, kind=AccountKind.AVAILABLE)
    LedgerAccount.objects.filter(pk=available.pk).update(balance=Decimal("11.00"))  # a bug elsewhere, simulated
    # when
    mismatches = ledger_reconcile()
    # then
    assert mismatches == [
        {
            "account_id": available.pk,
            "organization_id": organization.pk,
            "kind": "available",
            "cached": Decimal("11.00"),
            "derived": Decimal("10.00"),
        }
    ]


def test_reconcile_is_quiet_when_every_balance_matches(organization):
    fund(organization, "10.00")
    fund(OrganizationFactory(), "0.01")
    assert ledger_reconcile() == []


@pytest.mark.parametrize("statement", ["UPDATE billing_posting SET amount = amount + 1", "DELETE FROM billing_posting"])
def test_postings_cannot_be_changed_or_deleted_with_raw_sql(require_postgres, organization, statement):
    # given
    fund(organization, "10.00")
    # when / then
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert sorted(Posting.objects.values_list("amount", flat=True)) == [Decimal("-10.00"), Decimal("10.00")]


def test_transactions_cannot_be_changed_with_raw_sql(require_postgres, organization):
    fund(organization, "10.00")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE billing_ledgertransaction SET memo = 'rewritten'")


@pytest.mark.parametrize(
    "lines",
    [[5, -4], [5]],  # unbalanced; or balanced only by a later statement: each INSERT must leave them balanced
    ids=["unbalanced", "half_of_a_transaction"],
)
def test_unbalanced_postings_written_with_raw_sql_are_refused(require_postgres, organization, lines):
    # given
    available, clearing = _accounts(organization)
    txn = LedgerTransaction.objects.create(idempotency_key="raw:1", kind=TransactionKind.ADJUSTMENT, memo="raw")
    rows = [(txn.pk, account.pk, amount) for account, amount in zip([available, clearing], lines, strict=False)]
    # when / then: the database checks the transactions of every INSERT statement
    with (
        pytest.raises(DatabaseError, match="does not sum to zero"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "INSERT INTO billing_posting (transaction_id, account_id, amount) VALUES "
            + ", ".join(["(%s, %s, %s)"] * len(rows)),
            [value for row in rows for value in row],
        )
    assert not Posting.objects.filter(transaction=txn).exists()
