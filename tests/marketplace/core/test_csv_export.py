"""CSV exports neutralise cells a spreadsheet would run as a formula (OWASP "CSV injection")."""

import csv
import io
import pathlib
from decimal import Decimal

import pytest

from billing.services.holds import hold_capture, hold_place
from marketplace.core.csv_export import csv_cell
from tests.factories.accounts import MembershipFactory, OrganizationFactory
from tests.factories.billing import fund

ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-40.00000000", "-40.00000000"),  # a number stays a number
        ("+12", "+12"),
        ("-7", "-7"),
        ("GPU time", "GPU time"),
        ("", ""),
        (Decimal("-3.50"), Decimal("-3.50")),
        (12, 12),
        (None, None),
    ],
)
def test_csv_cell_prefixes_formula_starts_with_a_quote_and_leaves_numbers(value, written):
    assert csv_cell(value) == written


def test_the_transactions_export_neutralises_a_formula_memo(client, db):
    # given: a provider names a charge's memo as a formula; the buyer downloads its transactions
    buyer, provider = OrganizationFactory(), OrganizationFactory()
    fund(buyer, "100.00")
    hold = hold_place(organization=buyer, amount=Decimal("10"), idempotency_key="h", reference="@r", description="d")
    hold_capture(hold_id=hold.pk, amount=Decimal("10"), provider=provider, idempotency_key="u", memo="=1+2")
    client.force_login(MembershipFactory(organization=buyer).user)
    # when
    export = client.get("/billing/wallet/transactions.csv?kind=capture")
    # then
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert [(r["memo"], r["reference"], r["held_change"]) for r in rows] == [("'=1+2", "'@r", "-10.00000000")]


def test_every_csv_export_writes_through_the_neutralising_writer():
    # given: every module of the project that writes CSV
    sources = [p for d in ("accounts", "billing", "marketplace") for p in (ROOT / d).rglob("*.py")]
    # when
    writers = sorted(
        str(p.relative_to(ROOT))
        for p in sources
        if "csv.writer(" in p.read_text() or "csv.DictWriter(" in p.read_text()
    )
    # then
    assert writers == ["marketplace/core/csv_export.py"]
